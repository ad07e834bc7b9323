"""The GPT-1 model files that travel with a checkpoint as Hugging Face remote code."""

from .configuration_gpt1 import GPT1Config
from .modeling_gpt1 import (
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForQuestionAnswering,
    GPT1ForSequenceClassification,
    GPT1ForTokenClassification,
    GPT1Model,
    GPT1PreTrainedModel,
)

__all__ = [
    "GPT1Config",
    "GPT1ForCausalLM",
    "GPT1ForMultipleChoice",
    "GPT1ForQuestionAnswering",
    "GPT1ForSequenceClassification",
    "GPT1ForTokenClassification",
    "GPT1Model",
    "GPT1PreTrainedModel",
]
