"""Configuration of a GPT-1 decoder (Radford et al., 2018).

This file is shipped next to the weights as Hugging Face remote code, so it imports only the
standard library and `transformers`.
"""

import re
import warnings

import transformers

# The transformers releases this code is tested on: pyproject.toml's range. It runs against whatever release
# the person loading a checkpoint has, and an older one would fail with a missing name deep in an import
# (which engines such as vLLM then report as "Cannot find model module"), so say it here.
LOWEST_TRANSFORMERS, FIRST_UNTESTED_TRANSFORMERS = (5, 4), (6,)
SUPPORTED_TRANSFORMERS = (
    f"transformers>={'.'.join(map(str, LOWEST_TRANSFORMERS))},<{'.'.join(map(str, FIRST_UNTESTED_TRANSFORMERS))}"
)


def _check_transformers_version(version: str) -> None:
    """An ImportError naming the versions below the range; a warning above it, or when unreadable."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or (found := (int(match.group(1)), int(match.group(2)))) >= FIRST_UNTESTED_TRANSFORMERS:
        warnings.warn(
            f"This gpt1 model's code is tested with {SUPPORTED_TRANSFORMERS}; transformers {version} is not in that "
            f"range. If it fails or generates odd text, install '{SUPPORTED_TRANSFORMERS}'.",
            stacklevel=2,
        )
    elif found < LOWEST_TRANSFORMERS:
        raise ImportError(
            f"This gpt1 model's code needs {SUPPORTED_TRANSFORMERS}, but transformers {version} is installed. "
            f"Upgrade it: pip install '{SUPPORTED_TRANSFORMERS}'. (Where an engine such as vLLM pins an older "
            "transformers, use a release of the engine that allows a supported one.)"
        )


_check_transformers_version(transformers.__version__)

from transformers import PretrainedConfig  # noqa: E402  (after the version check, which names the problem)
from transformers.activations import ACT2FN  # noqa: E402

# Every head the package provides, as `auto_map` entries. `save_pretrained` writes them into
# config.json so that each Auto class finds its head with `trust_remote_code=True`.
GPT1_AUTO_MAP = {
    "AutoConfig": "configuration_gpt1.GPT1Config",
    "AutoModel": "modeling_gpt1.GPT1Model",
    "AutoModelForCausalLM": "modeling_gpt1.GPT1ForCausalLM",
    "AutoModelForSequenceClassification": "modeling_gpt1.GPT1ForSequenceClassification",
    "AutoModelForMultipleChoice": "modeling_gpt1.GPT1ForMultipleChoice",
    "AutoModelForTokenClassification": "modeling_gpt1.GPT1ForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_gpt1.GPT1ForQuestionAnswering",
}


class GPT1Config(PretrainedConfig):
    r"""Sizes and training switches of a GPT-1 model. The defaults are the paper's.

    Args:
        vocab_size: Number of token embeddings (GPT-1: 40478 BPE tokens).
        n_positions: Longest sequence the learned position embeddings cover (the context).
        n_embd: Width of the residual stream.
        n_layer: Number of transformer blocks.
        n_head: Attention heads per block; must divide `n_embd`.
        n_inner: Width of the feed-forward layer; `None` means 4 × `n_embd`.
        activation_function: Feed-forward non-linearity, any name in `transformers.activations.ACT2FN`.
            The default is GPT-1's GELU (the tanh approximation) computed by PyTorch's fused kernel.
        resid_pdrop: Dropout on each residual branch (attention output and feed-forward output).
        embd_pdrop: Dropout on the sum of token and position embeddings.
        attn_pdrop: Dropout on the attention probabilities.
        layer_norm_epsilon: Epsilon of every LayerNorm.
        initializer_range: Standard deviation of the N(0, σ) weight initialisation.
        tie_word_embeddings: Share the input embedding matrix with the output projection.
        use_cache: Return key/value caches so generation does not recompute the prefix.
        classifier_dropout: Dropout before the classification heads' linear layer.
        auxiliary_lm_loss_weight: λ in GPT-1's fine-tuning objective L3 = L2 + λ·L1: the weight of the
            language-modelling loss added to the task loss of the classification heads. 0 turns it off.
        vocab_padding_multiple: Run the training loss's output-layer multiplies on the weight padded with
            zero rows to a multiple of this: matrix multiplies are faster on aligned sizes (64 suits GPU
            tensor cores; the README's Performance section has the CPU figure). The padding exists only
            inside the chunked loss: the parameters, the logits, the saved tensors and the tokenizer all
            have `vocab_size` rows, as vLLM, TRL and conversion tools expect. 1 (the default) pads
            nothing; `gpt1 train` uses 64.
    """

    model_type = "gpt1"
    # The cache's output name: `cache` from transformers 5.24, `past_key_values` before.
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    # Tensor parallelism (`from_pretrained(..., tp_plan="auto")` under torchrun). The fused projection holds
    # [query | key | value]; a plain column split would hand a rank all of the query and half the key, so
    # it is split and its output gathered (as transformers' phi3 does with its fused qkv_proj), and the
    # attention output projection splits its replicated input. The feed-forward is truly parallel. The
    # embeddings stay whole: the tied output layer's weight is read directly by the chunked loss.
    base_model_tp_plan = {
        "blocks.*.attn.qkv_proj": "colwise_gather_output",
        "blocks.*.attn.out_proj": "rowwise_split_input",
        "blocks.*.mlp.up_proj": "colwise",
        "blocks.*.mlp.down_proj": "rowwise",
    }
    # Pipeline stages, for engines that read the plan (transformers' own pipeline parallelism, as of 5.24,
    # ignores it and expects llama's module names).
    base_model_pp_plan = {
        "token_embeddings": (["input_ids"], ["inputs_embeds"]),
        "blocks": (["hidden_states", "attention_mask"], ["hidden_states"]),
    }
    attribute_map = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "n_positions",
        "intermediate_size": "n_inner",
        "hidden_act": "activation_function",
    }

    vocab_size: int = 40478
    n_positions: int = 512
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_pytorch_tanh"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    classifier_dropout: float = 0.1
    auxiliary_lm_loss_weight: float = 0.5
    vocab_padding_multiple: int = 1

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.n_inner is None:
            self.n_inner = 4 * self.n_embd
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(GPT1_AUTO_MAP)
        self.check_values()

    def check_values(self) -> None:
        """Raise a `ValueError` naming the field and its value for any size or rate a model cannot have."""
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "vocab_padding_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPT1Config.{name} must be a positive integer, got {value!r}.")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPT1Config.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"choose n_head among the divisors of {self.n_embd}, e.g. {_nearest_divisor(self.n_embd, self.n_head)}."
            )
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "classifier_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"GPT1Config.{name} is a dropout probability and must be in [0, 1), got {value!r}.")
        if self.activation_function not in ACT2FN:
            raise ValueError(
                f"GPT1Config.activation_function {self.activation_function!r} is unknown; "
                f"use one of {sorted(ACT2FN)} (GPT-1 used 'gelu_pytorch_tanh')."
            )
        if not isinstance(self.layer_norm_epsilon, (int, float)) or self.layer_norm_epsilon <= 0:
            raise ValueError(f"GPT1Config.layer_norm_epsilon must be > 0, got {self.layer_norm_epsilon!r}.")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range < 0:
            raise ValueError(f"GPT1Config.initializer_range must be >= 0, got {self.initializer_range!r}.")
        weight = self.auxiliary_lm_loss_weight
        if not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"GPT1Config.auxiliary_lm_loss_weight must be >= 0 (GPT-1 used 0.5), got {weight!r}.")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """`vocab_size` rounded up to a multiple of `vocab_padding_multiple`: the training loss's matrix rows."""
        return -(-self.vocab_size // self.vocab_padding_multiple) * self.vocab_padding_multiple


def _nearest_divisor(number: int, near: int) -> int:
    return min((d for d in range(1, number + 1) if number % d == 0), key=lambda d: abs(d - near))


GPT1Config.register_for_auto_class()

__all__ = ["GPT1_AUTO_MAP", "SUPPORTED_TRANSFORMERS", "GPT1Config"]
