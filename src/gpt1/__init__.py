"""gpt1: the GPT-1 decoder (Radford et al., 2018) as a Hugging Face model package.

Importing the package registers the GPT-1 classes with transformers' Auto classes, so installed
users load gpt1 checkpoints without `trust_remote_code`. The import itself is instant: the names
below load their modules on first use, and registration happens as soon as transformers' Auto
classes are imported (see `gpt1.registration`), so `gpt1 --help` never waits for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .registration import register_when_transformers_loads

__version__ = "0.2.1"

# Each public name and the module it lives in.
_EXPORTS = {
    "GPT1Config": ".model",
    "GPT1ForCausalLM": ".model",
    "GPT1ForMultipleChoice": ".model",
    "GPT1ForQuestionAnswering": ".model",
    "GPT1ForSequenceClassification": ".model",
    "GPT1ForTokenClassification": ".model",
    "GPT1Model": ".model",
    "GPT1PreTrainedModel": ".model",
    "LORA_TARGET_MODULES": ".model",
    "TaskDataCollator": ".tasks",
    "attention_html": ".explorer",
    "add_task_tokens": ".tasks",
    "classification_inputs": ".tasks",
    "entailment_inputs": ".tasks",
    "multiple_choice_inputs": ".tasks",
    "similarity_inputs": ".tasks",
    "convert_openai_gpt": ".convert",
    "pair_tokenizer_with_model": ".tokenization",
    "tokenize_dataset": ".tokenization",
    "train_tokenizer": ".tokenization",
}

__all__ = [
    "LORA_TARGET_MODULES",
    "GPT1Config",
    "GPT1ForCausalLM",
    "GPT1ForMultipleChoice",
    "GPT1ForQuestionAnswering",
    "GPT1ForSequenceClassification",
    "GPT1ForTokenClassification",
    "GPT1Model",
    "GPT1PreTrainedModel",
    "TaskDataCollator",
    "__version__",
    "add_task_tokens",
    "attention_html",
    "classification_inputs",
    "convert_openai_gpt",
    "entailment_inputs",
    "multiple_choice_inputs",
    "pair_tokenizer_with_model",
    "similarity_inputs",
    "tokenize_dataset",
    "train_tokenizer",
]

if TYPE_CHECKING:
    from .convert import convert_openai_gpt
    from .explorer import attention_html
    from .model import (
        LORA_TARGET_MODULES,
        GPT1Config,
        GPT1ForCausalLM,
        GPT1ForMultipleChoice,
        GPT1ForQuestionAnswering,
        GPT1ForSequenceClassification,
        GPT1ForTokenClassification,
        GPT1Model,
        GPT1PreTrainedModel,
    )
    from .tasks import (
        TaskDataCollator,
        add_task_tokens,
        classification_inputs,
        entailment_inputs,
        multiple_choice_inputs,
        similarity_inputs,
    )
    from .tokenization import pair_tokenizer_with_model, tokenize_dataset, train_tokenizer


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gpt1' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


register_when_transformers_loads()
