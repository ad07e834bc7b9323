"""The GPT-1 model files that travel with a checkpoint as Hugging Face remote code.

The names load their module on first use, so that `gpt1.model.configuration_gpt1` can be imported
without torch and the modeling code (gpt1.registration relies on that).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "GPT1Config": ".configuration_gpt1",
    "GPT1ForCausalLM": ".modeling_gpt1",
    "GPT1ForMultipleChoice": ".modeling_gpt1",
    "GPT1ForQuestionAnswering": ".modeling_gpt1",
    "GPT1ForSequenceClassification": ".modeling_gpt1",
    "GPT1ForTokenClassification": ".modeling_gpt1",
    "GPT1Model": ".modeling_gpt1",
    "GPT1PreTrainedModel": ".modeling_gpt1",
    "LORA_TARGET_MODULES": ".modeling_gpt1",
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
]

if TYPE_CHECKING:
    from .configuration_gpt1 import GPT1Config
    from .modeling_gpt1 import (
        LORA_TARGET_MODULES,
        GPT1ForCausalLM,
        GPT1ForMultipleChoice,
        GPT1ForQuestionAnswering,
        GPT1ForSequenceClassification,
        GPT1ForTokenClassification,
        GPT1Model,
        GPT1PreTrainedModel,
    )


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gpt1.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
