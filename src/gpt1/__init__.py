"""gpt1: the GPT-1 decoder (Radford et al., 2018) as a Hugging Face model package.

Importing the package registers the GPT-1 classes with transformers' Auto classes, so installed
users load gpt1 checkpoints without `trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .convert import convert_openai_gpt
from .model import (
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

__version__ = "0.1.0"

AutoConfig.register(GPT1Config.model_type, GPT1Config, exist_ok=True)
AutoModel.register(GPT1Config, GPT1Model, exist_ok=True)
AutoModelForCausalLM.register(GPT1Config, GPT1ForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(GPT1Config, GPT1ForSequenceClassification, exist_ok=True)
AutoModelForMultipleChoice.register(GPT1Config, GPT1ForMultipleChoice, exist_ok=True)
AutoModelForTokenClassification.register(GPT1Config, GPT1ForTokenClassification, exist_ok=True)
AutoModelForQuestionAnswering.register(GPT1Config, GPT1ForQuestionAnswering, exist_ok=True)

__all__ = [
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
    "classification_inputs",
    "convert_openai_gpt",
    "entailment_inputs",
    "multiple_choice_inputs",
    "pair_tokenizer_with_model",
    "similarity_inputs",
    "tokenize_dataset",
    "train_tokenizer",
]
