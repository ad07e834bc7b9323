"""GPT-1 (Radford et al., 2018, "Improving Language Understanding by Generative Pre-Training").

A decoder-only transformer: token embeddings plus learned position embeddings, then blocks of
causal multi-head self-attention and a GELU feed-forward, each followed by a residual add and a
LayerNorm (post-LN, as in the original transformer). There is no final LayerNorm, and the output
projection shares its weights with the token embeddings.

This file is shipped next to the weights as Hugging Face remote code, so it imports only the
standard library, `torch`, `transformers` and its sibling `configuration_gpt1.py`.
"""

import functools
import time
import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_gpt1 import GPT1Config

# This file runs against whatever transformers release the person loading a checkpoint has, so it reads
# the names that changed between releases from the installed library instead of assuming one release.
# transformers 5.24 renamed the key/value cache from `past_key_values` to `cache`: `generate` passes it
# as `cache=`, the output classes carry `.cache`, and the mask helpers take `cache=`. Every forward here
# accepts both names; internally the cache travels under the installed name (CACHE_NAME), which is the
# one `GradientCheckpointingLayer` knows to drop while checkpointing.
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


# The linear layers of every block, for LoRA: `LoraConfig(target_modules=LORA_TARGET_MODULES)`. PEFT chooses
# default targets from a table of the model types it ships and has no supported way to add one, so a gpt1
# model needs them named (or `target_modules="all-linear"`, which picks the same four).
LORA_TARGET_MODULES = ["qkv_proj", "out_proj", "up_proj", "down_proj"]


def _parameter_names(function: Callable) -> tuple[str, ...]:
    """The named parameters of `function`, looking through decorators such as `deprecate_kwarg`."""
    code = getattr(function, "__wrapped__", function).__code__
    return code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]


_MASK_CACHE_NAME = "cache" if "cache" in _parameter_names(create_causal_mask) else "past_key_values"


def _as_cache_argument(cache: Cache | None, name: str = CACHE_NAME) -> dict[str, Any]:
    """`{name: cache}`, to pass or return the cache under the installed release's name."""
    return {name: cache}


def _one_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache passed under either name (`cache` from transformers 5.24, `past_key_values` before)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the key/value cache once, as cache= or as past_key_values=, not both.")
    return cache if cache is not None else past_key_values


def _index_checked(compute: Callable[[], torch.Tensor], describe: Callable[[], str]) -> torch.Tensor:
    """`compute()`, turning an index out of range into a `ValueError` that says `describe()`.

    Ids, positions and labels are not read before use: reading them would make the host wait for the
    device on every call. An index out of range raises `IndexError` on a CPU (on a GPU it is a
    device-side assert), and only then are the values read, to name the offending one.
    """
    if torch.compiler.is_compiling():
        return compute()
    try:
        return compute()
    except IndexError as error:
        raise ValueError(describe()) from error


def _out_of_range(values: torch.Tensor) -> int:
    """The offending value of `values` (its minimum when negative, else its maximum), read only to word an error."""
    low, high = int(values.min()), int(values.max())
    return low if low < 0 else high


def _keep_last(hidden_states: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The positions to compute logits for: the last `logits_to_keep` (0 keeps all), or those indexed by a tensor."""
    if isinstance(logits_to_keep, int):
        return hidden_states if logits_to_keep == 0 else hidden_states[:, -logits_to_keep:]
    return hidden_states[:, logits_to_keep]


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(query · keyᵀ · scaling + mask) · value, written out so the weights can be returned.

    `query`, `key` and `value` are `[batch, heads, seq, head_dim]`; `attention_mask` is the additive
    `[batch, 1, query, key]` mask from `create_causal_mask` (0 where allowed, the dtype's minimum
    where not). Returns the output as `[batch, query, heads, head_dim]` and the attention weights.
    """
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    query_len, key_len = attn_weights.shape[-2:]
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    elif query_len > 1:
        # No mask was built (no padding): apply causality here. A single query sees only its past anyway.
        future = torch.ones(query_len, key_len, dtype=torch.bool, device=attn_weights.device).triu(
            key_len - query_len + 1
        )
        attn_weights = attn_weights.masked_fill(future, torch.finfo(attn_weights.dtype).min)
    # Softmax in fp32 for stability under mixed precision, then back to the value dtype.
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(value.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `hidden @ weight.T` against `targets`, without the full logits.

    The language-modelling head's logits are `[tokens, vocab]` floats: at GPT-1's 40,478-word
    vocabulary they are the largest activation of a training step, and a plain cross-entropy reads and
    writes them four more times (log-softmax, its backward, the zero-filled gradient and its scatter).
    Here the rows go through in chunks: each chunk's logits are made, turned into the loss and, since
    the loss is a scalar, straight into the gradients of `hidden` and `weight`, then freed. Backward
    only scales those gradients.

    With `padded_rows` above the vocabulary, the multiplies run on a copy of `weight` with zero rows
    added up to that count (aligned sizes are faster); the padding columns get probability zero and
    their gradient is dropped, so the parameters, the loss and the checkpoints never see them.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        divisor: torch.Tensor,
        chunk_rows: int,
        padded_rows: int,
        ignore_index: int = -100,
        grad_enabled: bool = True,
    ) -> torch.Tensor:
        compute_dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled() else hidden.dtype
        vocab_size, width = weight.shape
        with torch.autocast(hidden.device.type, enabled=False):
            hidden_c = hidden.to(compute_dtype)
            if padded_rows > vocab_size:
                weight_c = weight.new_zeros((padded_rows, width), dtype=compute_dtype)
                weight_c[:vocab_size] = weight
            else:
                weight_c = weight.to(compute_dtype)
            # Each gradient only where it is wanted (a frozen, tied output layer under LoRA needs none), and none
            # under no_grad (evaluation), which `needs_input_grad` does not see: it reads only `requires_grad`.
            grad_hidden = torch.empty_like(hidden_c) if grad_enabled and ctx.needs_input_grad[0] else None
            wants_weight_grad = grad_enabled and ctx.needs_input_grad[1]
            grad_weight = (
                torch.zeros(weight_c.shape, dtype=torch.float32, device=weight.device) if wants_weight_grad else None
            )
            loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for start in range(0, hidden_c.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                logits = (hidden_c[rows] @ weight_c.T).float()
                if vocab_size < logits.shape[1]:
                    logits[:, vocab_size:] = float("-inf")
                chunk_targets = targets[rows]
                is_target = chunk_targets != ignore_index
                safe_targets = torch.where(is_target, chunk_targets, 0).unsqueeze(1)
                log_normaliser = torch.logsumexp(logits, dim=1, keepdim=True)
                token_losses = (log_normaliser - logits.gather(1, safe_targets)).squeeze(1)
                loss_sum += (token_losses * is_target).sum()
                if grad_hidden is None and grad_weight is None:  # no gradient wanted: the loss is all
                    continue
                # d loss / d logits = softmax - one_hot(target), zero for ignored rows; reuses the logits' memory.
                grad_logits = logits.sub_(log_normaliser).exp_()
                grad_logits.scatter_add_(1, safe_targets, torch.full_like(safe_targets, -1, dtype=grad_logits.dtype))
                grad_logits.mul_(is_target.unsqueeze(1))
                grad_logits_c = grad_logits.to(compute_dtype)
                if grad_hidden is not None:
                    grad_hidden[rows] = grad_logits_c @ weight_c
                if grad_weight is not None:
                    grad_weight.addmm_(grad_logits_c.T.float(), hidden_c[rows].float())
            divisor = divisor.to(device=hidden.device, dtype=torch.float32)
            if grad_weight is not None:
                grad_weight = grad_weight[:vocab_size]
            ctx.save_for_backward(grad_hidden, grad_weight, divisor)
            ctx.hidden_dtype, ctx.weight_dtype = hidden.dtype, weight.dtype
        return loss_sum / divisor

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight, divisor = ctx.saved_tensors
        scale = grad_loss / divisor
        return (
            (grad_hidden * scale).to(ctx.hidden_dtype) if ctx.needs_input_grad[0] else None,
            (grad_weight * scale).to(ctx.weight_dtype) if ctx.needs_input_grad[1] else None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


class GPT1Attention(nn.Module):
    """Causal multi-head self-attention with one fused query/key/value projection."""

    def __init__(self, config: GPT1Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.attention_dropout = config.attn_pdrop
        # One matmul for query, key and value: rows [0, E) are the query, [E, 2E) the key, [2E, 3E) the value.
        self.qkv_proj = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        cache: Cache | None = kwargs.pop(CACHE_NAME, None)
        batch_size, seq_len, _ = hidden_states.shape
        # The fused projection gives [query | key | value]. Split by widths, not `chunk(3)`: vLLM recognises
        # this form and shards the projection by heads under its tensor parallelism, so the head count comes
        # from the tensor (-1), not the config (transformers' own plan gathers the projection whole).
        heads_shape = (batch_size, seq_len, -1, self.head_dim)
        width = self.config.n_embd
        query, key, value = self.qkv_proj(hidden_states).split((width, width, width), dim=-1)
        query = query.reshape(heads_shape).transpose(1, 2)
        key = key.reshape(heads_shape).transpose(1, 2)
        value = value.reshape(heads_shape).transpose(1, 2)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(batch_size, seq_len, -1)
        attn_output = self.resid_dropout(self.out_proj(attn_output))
        return attn_output, attn_weights


class GPT1MLP(nn.Module):
    """Position-wise feed-forward: expand to `n_inner`, GELU, project back."""

    def __init__(self, config: GPT1Config):
        super().__init__()
        inner_size = config.n_inner or 4 * config.n_embd
        self.up_proj = nn.Linear(config.n_embd, inner_size)
        self.act = ACT2FN[config.activation_function]
        self.down_proj = nn.Linear(inner_size, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act(self.up_proj(hidden_states))))


class GPT1Block(GradientCheckpointingLayer):
    """Post-LN transformer block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, config: GPT1Config, layer_idx: int):
        super().__init__()
        self.attn = GPT1Attention(config, layer_idx)
        self.attn_norm = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT1MLP(config)
        self.mlp_norm = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        # kwargs carry the cache under CACHE_NAME, and position_ids (used by flash attention for packed rows).
        attn_output, _ = self.attn(hidden_states, attention_mask=attention_mask, **kwargs)
        hidden_states = self.attn_norm(hidden_states + attn_output)
        hidden_states = self.mlp_norm(hidden_states + self.mlp(hidden_states))
        return hidden_states


class GPT1PreTrainedModel(PreTrainedModel):
    config_class = GPT1Config
    config: GPT1Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT1Block"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": GPT1Block,
        "attentions": OutputRecorder(GPT1Attention, index=1),
    }
    # Logits per chunk of the chunked language-modelling loss: 16M (64 MB in fp32), about 400 rows at
    # GPT-1's vocabulary. Smaller chunks make thinner matrix multiplies, which were measured slower on a CPU.
    lm_loss_chunk_logits = 1 << 24

    def _language_modelling_head(self, config: GPT1Config) -> nn.Linear:
        """The output layer, tied to the token embeddings unless `config.tie_word_embeddings` is off."""
        # A tied head is not saved (Trainer, reloading its best checkpoint, then ties it instead of warning);
        # an untied one is a weight of its own and must be.
        self._keys_to_ignore_on_save = ["lm_head.weight"] if config.tie_word_embeddings else None
        return nn.Linear(config.n_embd, config.vocab_size, bias=False)


class GPT1Model(GPT1PreTrainedModel):
    """The bare decoder: returns the last block's hidden states (there is no final LayerNorm)."""

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        config.check_values()
        self.token_embeddings = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embeddings = nn.Embedding(config.n_positions, config.n_embd)
        self.embed_dropout = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList([GPT1Block(config, layer_idx) for layer_idx in range(config.n_layer)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.token_embeddings

    def set_input_embeddings(self, new_embeddings: nn.Module) -> None:
        self.token_embeddings = cast(nn.Embedding, new_embeddings)

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        input_ids: `[batch, seq]` token ids, each in `[0, vocab_size)`.
        attention_mask: `[batch, past + seq]`, 1 for real tokens and 0 for padding (left or right).
        position_ids: `[batch, seq]`; by default counted from the first real token of each row, so a
            left-padded prompt gets the same positions as the same prompt alone. Positions that restart
            at 0 inside a row (with no `attention_mask`) mark packed sequences, which then cannot see
            each other.
        cache: a `Cache` from a previous call (generation); a new `DynamicCache` is made when `use_cache`
            is on and none is given. `past_key_values` is the same argument under its older name.
        inputs_embeds: `[batch, seq, n_embd]`, instead of `input_ids`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        cache = _one_cache(cache, past_key_values)
        # No new cache while training: it would only copy every key and value and keep them alive
        # (and under gradient checkpointing the blocks would drop it anyway). Pass one to force it.
        if use_cache and cache is None and not self.training:
            cache = DynamicCache(config=self.config)
        # An int for a dynamic cache; a tensor for a static one, which is never branched on.
        past_len = cache.get_seq_length() if cache is not None else 0

        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}.")
            ids = input_ids
            inputs_embeds = _index_checked(lambda: self.token_embeddings(ids), lambda: self._bad_token_message(ids))
        inputs_embeds = cast(torch.Tensor, inputs_embeds)
        batch_size, seq_len = inputs_embeds.shape[:2]

        if isinstance(past_len, int):
            self._check_mask_shape(batch_size, past_len, seq_len, attention_mask)
        given_positions = position_ids
        if position_ids is None:
            if isinstance(past_len, int):
                self._check_length(past_len, seq_len)
            if attention_mask is not None and attention_mask.dim() == 2:
                # Count positions from each row's first real token; padding sits at position 0.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_len:]
            else:
                position_ids = (torch.arange(seq_len, device=inputs_embeds.device) + past_len).unsqueeze(0)

        # Packed rows are recognised from the position ids, and only when there is neither a 2D mask nor a
        # filled cache. A cache made empty for this call (eval mode) does not count, so packed rows stay
        # apart in eval as in training. Positions made here are never packed, so they are not passed:
        # transformers' packing check would read them back from the device.
        mask_cache = None if isinstance(past_len, int) and past_len == 0 and not _is_static(cache) else cache
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=given_positions,
            **_as_cache_argument(mask_cache, _MASK_CACHE_NAME),
        )

        positions = position_ids
        position_embeddings = _index_checked(
            lambda: self.position_embeddings(positions), lambda: self._bad_position_message(positions)
        )
        hidden_states = self.embed_dropout(inputs_embeds + position_embeddings)
        for block in self.blocks:
            hidden_states = block(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                **_as_cache_argument(cache),
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, **_as_cache_argument(cache))

    def _bad_token_message(self, input_ids: torch.Tensor) -> str:
        return (
            f"input_ids contains token id {_out_of_range(input_ids)}, outside this model's "
            f"vocabulary [0, {self.config.vocab_size}). Use the tokenizer the model was trained with, or resize the "
            "embeddings with model.resize_token_embeddings(len(tokenizer))."
        )

    def _bad_position_message(self, position_ids: torch.Tensor) -> str:
        n_positions = self.config.n_positions
        return (
            f"position_ids contains position {_out_of_range(position_ids)}, but this model's context "
            f"(n_positions) is {n_positions}: positions must lie in [0, {n_positions}). Truncate each sequence, or "
            f"generate with max_length <= {n_positions}."
        )

    def _check_length(self, past_len: int, seq_len: int) -> None:
        """The positions made here run to past_len + seq_len - 1: check them as Python ints, for free."""
        if past_len + seq_len > self.config.n_positions:
            raise ValueError(
                f"Sequence too long: {past_len} cached + {seq_len} new tokens = {past_len + seq_len}, but this "
                f"model's context (n_positions) is {self.config.n_positions}. Truncate the input, or generate "
                f"with max_length <= {self.config.n_positions}."
            )

    @staticmethod
    def _check_mask_shape(batch_size: int, past_len: int, seq_len: int, attention_mask: torch.Tensor | None) -> None:
        if attention_mask is not None and attention_mask.dim() == 2:
            expected = (batch_size, past_len + seq_len)
            if tuple(attention_mask.shape) != expected:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected {expected} "
                    f"([batch, cached + new tokens] = [{batch_size}, {past_len} + {seq_len}])."
                )


def _is_static(cache: Cache | None) -> bool:
    """Whether `cache` preallocates its length (a `StaticCache`): its masks need the cache even when empty."""
    return cache is not None and bool(getattr(cache, "is_compileable", False))


class GPT1ForCausalLM(GPT1PreTrainedModel, GenerationMixin):
    """GPT-1 with its language-modelling head (the token embeddings, transposed)."""

    _tied_weights_keys = {"lm_head.weight": "transformer.token_embeddings.weight"}

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = self._language_modelling_head(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        labels: `[batch, seq]` next-token targets, unshifted (pass `labels=input_ids`); -100 is ignored.
        logits_to_keep: compute logits for only the last N positions (0 keeps all); generation uses 1.
        skip_logits: return the loss without `logits`, computed chunk by chunk (`LinearCrossEntropy`):
            faster, and the `[batch, seq, vocab]` logits are never held in memory. By default on in
            training mode when `labels` are given (as with Liger kernels; `Trainer` passes it too);
            pass `False` to get the logits anyway.
        """
        outputs: BaseModelOutputWithPast = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=_one_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = cast(torch.Tensor, outputs.last_hidden_state)
        if skip_logits is None:
            skip_logits = self.training and labels is not None
        if skip_logits and labels is None:
            raise ValueError("skip_logits=True returns only the loss, so it needs labels.")

        loss, logits = None, None
        if skip_logits and isinstance(logits_to_keep, int) and logits_to_keep == 0:
            loss = self._chunked_lm_loss(hidden_states, cast(torch.Tensor, labels), **kwargs)
        else:
            logits = self.lm_head(_keep_last(hidden_states, logits_to_keep))
            if labels is not None:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **_as_cache_argument(getattr(outputs, CACHE_NAME)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _chunked_lm_loss(
        self,
        hidden_states: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: torch.Tensor | int | None = None,
        shift_labels: torch.Tensor | None = None,
        ignore_index: int = -100,
        **kwargs,
    ) -> torch.Tensor:
        """The same loss as `self.loss_function` (next-token cross-entropy, mean over the targets or sum
        over `num_items_in_batch`), computed by `LinearCrossEntropy` without materialising the logits."""
        if shift_labels is None:
            shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
        targets = shift_labels.reshape(-1).to(hidden_states.device)
        # Trainer passes the batch's target count under gradient accumulation: a sum over that count.
        counted = num_items_in_batch is not None
        divisor = torch.as_tensor(num_items_in_batch) if counted else (targets != ignore_index).sum()
        weight = cast(nn.Linear, self.get_output_embeddings()).weight
        chunk_rows = max(1, self.lm_loss_chunk_logits // self.config.padded_vocab_size)
        return cast(
            torch.Tensor,
            LinearCrossEntropy.apply(
                hidden_states.reshape(-1, hidden_states.shape[-1]),
                weight,
                targets,
                divisor,
                chunk_rows,
                self.config.padded_vocab_size,
                ignore_index,
                torch.is_grad_enabled(),  # read here: inside LinearCrossEntropy.forward it is always off
            ),
        )

    # --- compiled decoding ------------------------------------------------------------------------------------------
    # Decoding one token at a time is mostly per-step overhead on small models (Python, dispatch, a growing cache),
    # which a static cache and a compiled decode step remove. Compiling costs seconds, once per process and shape,
    # and pays only if enough decoding follows, which no one knows in advance. So `generate` rents before it buys:
    # it decodes eagerly until this model has spent about one compile's worth of time decoding in this process,
    # then compiles (then a process never spends more than about twice what the better choice in hindsight would
    # have). `compiled_decoding` is "auto" (that rule), True (compile from the first call) or False (never).
    compiled_decoding: bool | str = "auto"
    # Seconds of eager decoding after which "auto" compiles: about what compiling the decode step costs on each
    # device (measured in the README's Performance section).
    compiled_decoding_after_seconds: dict[str, float] = {"cpu": 10.0, "cuda": 30.0}
    compiled_decoding_backend: str | Callable = "inductor"
    _eager_decoding_seconds = 0.0
    _compile_failed = False
    # The generate() arguments the compiled path was measured with: plain greedy or sampled decoding, its limits
    # and outputs. Anything else (a cache or compile of the caller's, beams, assistants, per-layer outputs,
    # decoding across processes) is left to generate as it is.
    _PLAIN_DECODING = {
        "input_ids", "attention_mask", "generation_config", "max_new_tokens", "max_length", "min_new_tokens",
        "min_length", "do_sample", "temperature", "top_k", "top_p", "min_p", "typical_p", "repetition_penalty",
        "no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "pad_token_id", "bos_token_id",
        "eos_token_id", "stop_strings", "tokenizer", "streamer", "logits_processor", "stopping_criteria",
        "return_dict_in_generate", "output_scores", "output_logits", "use_cache", "synced_gpus",
    }  # fmt: skip

    def generate(self, inputs: torch.Tensor | None = None, *args, **kwargs):  # type: ignore[override]
        """`GenerationMixin.generate`, with a static cache and a compiled decode step once that pays (see above)."""
        compiled = self._wants_compiled_decoding(inputs, args, kwargs)
        if compiled is not None:
            rng_state = torch.random.get_rng_state()
            try:
                return super().generate(inputs, cache_implementation="static", compile_config=compiled, **kwargs)  # type: ignore[misc]
            except (torch._dynamo.exc.TorchDynamoException, torch._dynamo.exc.FailOnRecompileLimitHit) as error:
                self._compile_failed = True
                if kwargs.get("streamer") is not None:  # it has already streamed part of the answer: not twice
                    raise
                warnings.warn(
                    f"gpt1: compiling the decode step failed ({type(error).__name__}); decoding eagerly from now on. "
                    "Set model.compiled_decoding = False to skip the attempt.",
                    stacklevel=2,
                )
                torch.random.set_rng_state(rng_state)  # the same samples as if it had decoded eagerly at once
        started = time.perf_counter()
        output = super().generate(inputs, *args, **kwargs)  # type: ignore[misc]
        self._eager_decoding_seconds += time.perf_counter() - started
        return output

    def _wants_compiled_decoding(self, inputs: torch.Tensor | None, args: tuple, kwargs: dict[str, Any]) -> Any:
        """The `CompileConfig` for this call when it decodes compiled, else None."""
        if self.compiled_decoding is False or self._compile_failed or self.training or args:
            return None
        # synced_gpus None lets generate turn it on under FSDP or ZeRO-3: only an explicit False is plain decoding.
        if set(kwargs) - self._PLAIN_DECODING or kwargs.get("synced_gpus", False) is not False:
            return None
        ids = inputs if inputs is not None else kwargs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or self.device.type not in self.compiled_decoding_after_seconds:
            return None
        if self.config._attn_implementation not in ("sdpa", "eager") or kwargs.get("use_cache") is False:
            return None
        for config in (self.generation_config, kwargs.get("generation_config")):
            if config is not None and not _is_plain_decoding(config):
                return None
        if self.compiled_decoding == "auto":
            if self._eager_decoding_seconds < self.compiled_decoding_after_seconds[self.device.type]:
                return None
            if not torch_compile_available(self.device.type):
                return None
        from transformers.generation import CompileConfig

        # One graph per batch size and cache length (torch turns on dynamic shapes if a second length turns up, so a
        # server does not recompile per request); CUDA graphs on a GPU, where launching kernels is the overhead.
        cuda_graphs = self.device.type == "cuda" and self.compiled_decoding_backend == "inductor"
        mode = "reduce-overhead" if cuda_graphs else "default"
        config = CompileConfig(fullgraph=True, backend=self.compiled_decoding_backend, mode=mode)
        config._compile_all_devices = True  # type: ignore[assignment]  # generate compiles on accelerators only
        return config


def _is_plain_decoding(config: Any) -> bool:
    """Whether a `GenerationConfig` asks for plain greedy or sampled decoding with the default cache."""
    return (
        getattr(config, "num_beams", 1) in (None, 1)
        and getattr(config, "num_beam_groups", 1) in (None, 1)
        and getattr(config, "cache_implementation", None) is None
        and getattr(config, "compile_config", None) is None
        and not getattr(config, "disable_compile", False)
        and getattr(config, "penalty_alpha", None) is None
        and getattr(config, "dola_layers", None) is None
        and getattr(config, "prompt_lookup_num_tokens", None) is None
        and getattr(config, "use_cache", True) is not False
    )


@functools.cache
def torch_compile_available(device_type: str) -> bool:
    """Whether torch.compile's default backend can build code for this device type here (a CPU needs a C++
    compiler). Looked up once per process."""
    if device_type != "cpu":
        return True
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        return bool(get_cpp_compiler())
    except Exception:  # no compiler, or an inductor without this helper: decode eagerly
        return False


class _GPT1TaskHead(GPT1PreTrainedModel):
    """Shared parts of GPT-1's fine-tuning heads.

    GPT-1 classifies from the hidden state of the sequence's last token (its extract token), and
    adds the language-modelling loss on the input text, weighted by `auxiliary_lm_loss_weight`.
    """

    _tied_weights_keys = {"lm_head.weight": "transformer.token_embeddings.weight"}
    # Task losses are per-batch means; Trainer must scale them for gradient accumulation itself.
    accepts_loss_kwargs = False

    def __init__(self, config: GPT1Config, num_outputs: int):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = self._language_modelling_head(config)
        self.classifier_dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.n_embd, num_outputs)
        self.post_init()

    def _last_token_states(
        self, hidden_states: torch.Tensor, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Hidden state of each row's last real token, for left or right padding."""
        batch_size, seq_len = hidden_states.shape[:2]
        if attention_mask is not None and attention_mask.dim() == 2:
            is_real = attention_mask[:, -seq_len:].to(torch.bool)
        elif input_ids is not None and self.config.pad_token_id is not None:
            is_real = input_ids != self.config.pad_token_id
        else:
            return hidden_states[:, -1]
        positions = torch.arange(seq_len, device=hidden_states.device)
        last_real = (positions * is_real.to(hidden_states.device)).argmax(-1)
        return hidden_states[torch.arange(batch_size, device=hidden_states.device), last_real]

    def _run_on_sequences(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        rows: int | None,
        **decoder_kwargs,
    ) -> tuple[BaseModelOutputWithPast, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The decoder over each sequence, and each sequence's last-real-token state (what GPT-1 classifies).

        With `rows` (batch × k), `[batch, k, seq]` inputs (k choices, or k orders of a pair) are flattened
        into `rows` sequences first. Returns the decoder's outputs, the pooled states `[sequences, n_embd]`,
        and the flat input ids and mask (for the auxiliary LM loss).
        """
        if rows is not None:
            input_ids, attention_mask, position_ids, inputs_embeds = (
                _merge_leading_dims(tensor, rows) for tensor in (input_ids, attention_mask, position_ids, inputs_embeds)
            )
        outputs: BaseModelOutputWithPast = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **decoder_kwargs,
        )
        pooled = self._last_token_states(cast(torch.Tensor, outputs.last_hidden_state), input_ids, attention_mask)
        return outputs, pooled, input_ids, attention_mask

    def _with_auxiliary_lm_loss(
        self,
        task_loss: torch.Tensor,
        outputs: BaseModelOutputWithPast,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        lm_loss = self._auxiliary_lm_loss(cast(torch.Tensor, outputs.last_hidden_state), input_ids, attention_mask)
        return task_loss if lm_loss is None else task_loss + lm_loss

    def _auxiliary_lm_loss(
        self, hidden_states: torch.Tensor, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The LM loss L1 on the task's own text, or None when it is switched off or cannot be formed.

        As in OpenAI's fine-tuning code, each sequence's loss is the mean over its own tokens and the
        batch loss is the mean over sequences. Every example then weighs the same whatever its length,
        and a batch split into equal micro-batches (gradient accumulation) gives the same loss.
        """
        if self.config.auxiliary_lm_loss_weight == 0 or input_ids is None:
            return None
        is_real = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is not None and attention_mask.dim() == 2:
            is_real = attention_mask[:, -input_ids.shape[1] :].to(torch.bool)
        elif self.config.pad_token_id is not None:
            is_real = input_ids != self.config.pad_token_id
        logits = self.lm_head(hidden_states[:, :-1]).float()
        targets, target_is_real = input_ids[:, 1:], is_real[:, 1:].to(logits.dtype)
        token_losses = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        per_sequence = (token_losses * target_is_real).sum(1) / target_is_real.sum(1).clamp(min=1)
        return self.config.auxiliary_lm_loss_weight * per_sequence.mean()


class GPT1ForSequenceClassification(_GPT1TaskHead):
    """GPT-1 with a linear classifier on the last real token, for classification, entailment and similarity.

    Like the stock heads, `config.problem_type` selects regression (MSE), single-label (cross-entropy)
    or multi-label (BCE) and is inferred from `num_labels` and the labels' dtype when unset.

    For similarity, GPT-1 encodes both orders of a pair and adds the two sequence representations
    before the classifier: pass `input_ids` of shape `[batch, orders, seq]` (see
    `gpt1.tasks.similarity_inputs`) and the last-token states of each example's rows are summed.
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config, num_outputs=int(config.num_labels or 2))

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        r"""
        input_ids: `[batch, seq]`, or `[batch, orders, seq]` for similarity (representations summed).
        labels: `[batch]` class ids, `[batch]` floats (regression, `num_labels == 1`) or
            `[batch, num_labels]` multi-hot floats (multi-label).
        """
        batch_size, orders = _leading_dims(input_ids, inputs_embeds, sequence_dims=2)
        outputs, pooled, flat_input_ids, flat_mask = self._run_on_sequences(
            input_ids,
            attention_mask,
            position_ids,
            inputs_embeds,
            rows=None if orders is None else batch_size * orders,
            cache=_one_cache(cache, past_key_values),
            use_cache=use_cache if orders is None else False,
            **kwargs,
        )
        if orders is not None:
            pooled = pooled.view(batch_size, orders, -1).sum(1)  # GPT-1 adds the two orders' representations
        logits = self.classifier(self.classifier_dropout(pooled))

        loss = None
        if labels is not None:
            loss = self._with_auxiliary_lm_loss(self._task_loss(logits, labels), outputs, flat_input_ids, flat_mask)

        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=logits,
            **_as_cache_argument(getattr(outputs, CACHE_NAME)),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        num_labels = int(self.config.num_labels or 2)
        labels = labels.to(logits.device)
        if self.config.problem_type is None:
            if num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        if self.config.problem_type == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        if self.config.problem_type == "single_label_classification":
            return _index_checked(
                lambda: nn.functional.cross_entropy(logits.view(-1, num_labels), labels.view(-1)),
                lambda: (
                    f"labels contain class {_out_of_range(labels)}, but the model has "
                    f"num_labels={num_labels} (classes 0..{num_labels - 1}). Set num_labels (and id2label) to "
                    "cover every class."
                ),
            )
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class GPT1ForMultipleChoice(_GPT1TaskHead):
    """GPT-1 for multiple choice: each choice is its own sequence; a linear layer scores its last token.

    Inputs are `[batch, num_choices, seq]`; logits are `[batch, num_choices]`; labels are the index of
    the right choice, scored with cross-entropy over the choices plus the auxiliary LM loss.
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config, num_outputs=1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MultipleChoiceModelOutput:
        r"""
        input_ids: `[batch, num_choices, seq]`.
        labels: `[batch]`, the index of the right choice.
        """
        batch_size, num_choices = _leading_dims(input_ids, inputs_embeds, sequence_dims=2)
        if num_choices is None:
            shape = tuple((input_ids if input_ids is not None else inputs_embeds).shape)  # type: ignore[union-attr]
            raise ValueError(f"GPT1ForMultipleChoice expects inputs of shape [batch, num_choices, seq], got {shape}.")
        outputs, pooled, flat_input_ids, flat_mask = self._run_on_sequences(
            input_ids,
            attention_mask,
            position_ids,
            inputs_embeds,
            rows=batch_size * num_choices,
            use_cache=False,
            **kwargs,
        )
        logits = self.classifier(self.classifier_dropout(pooled)).view(batch_size, num_choices)

        loss = None
        if labels is not None:
            choice_labels = labels.to(logits.device).view(-1)
            choice_loss = _index_checked(
                lambda: nn.functional.cross_entropy(logits, choice_labels),
                lambda: (
                    f"labels contain choice {_out_of_range(choice_labels)}, but each example has "
                    f"{num_choices} choices (0..{num_choices - 1})."
                ),
            )
            loss = self._with_auxiliary_lm_loss(choice_loss, outputs, flat_input_ids, flat_mask)

        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class GPT1ForTokenClassification(GPT1PreTrainedModel):
    """GPT-1 with a linear classifier on every token's hidden state, for tagging (named entities, parts of speech).

    A decoder labels each token from that token and the ones before it: it never sees the right context.
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.classifier_dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.n_embd, int(config.num_labels or 2))
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        r"""
        labels: `[batch, seq]` class ids per token; -100 is ignored (padding, word continuations).
        """
        outputs: BaseModelOutputWithPast = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        logits = self.classifier(self.classifier_dropout(outputs.last_hidden_state))

        loss = None
        if labels is not None:
            num_labels = logits.shape[-1]
            token_labels = labels.to(logits.device)
            loss = _index_checked(
                lambda: self.loss_function(logits, token_labels, self.config, **kwargs),
                lambda: (
                    f"labels contain class {_out_of_range(token_labels[token_labels != -100])}, but the "
                    f"model has num_labels={num_labels} (classes 0..{num_labels - 1}; -100 is ignored)."
                ),
            )
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class GPT1ForQuestionAnswering(GPT1PreTrainedModel):
    """GPT-1 with a span head: a start and an end score for every token, for extractive question answering.

    Put the question before the context: a decoder's token sees only what precedes it, so the context tokens
    can then attend to the question.
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.qa_outputs = nn.Linear(config.n_embd, 2)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        **kwargs,
    ) -> QuestionAnsweringModelOutput:
        r"""
        start_positions, end_positions: `[batch]` token indices of the answer span's first and last token.
        """
        outputs: BaseModelOutputWithPast = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).unbind(-1)

        loss = None
        if start_positions is not None and end_positions is not None:
            # The mean of the start and end cross-entropies; positions past the end are ignored.
            loss = self.loss_function(start_logits, end_logits, start_positions, end_positions, **kwargs)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def _leading_dims(
    input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, sequence_dims: int
) -> tuple[int, int | None]:
    """(batch, k) for `[batch, k, seq]` inputs, (batch, None) for `[batch, seq]` ones."""
    reference = input_ids if input_ids is not None else inputs_embeds
    if reference is None:
        raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
    extra = reference.dim() - sequence_dims - (0 if input_ids is not None else 1)
    if extra <= 0:
        return reference.shape[0], None
    return reference.shape[0], reference.shape[1]


def _merge_leading_dims(tensor: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """`[batch, k, ...]` → `[batch * k, ...]`, so each choice or order is its own sequence."""
    return None if tensor is None else tensor.reshape(rows, *tensor.shape[2:])


GPT1Model.register_for_auto_class("AutoModel")
GPT1ForCausalLM.register_for_auto_class("AutoModelForCausalLM")
GPT1ForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
GPT1ForMultipleChoice.register_for_auto_class("AutoModelForMultipleChoice")
GPT1ForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
GPT1ForQuestionAnswering.register_for_auto_class("AutoModelForQuestionAnswering")

__all__ = [
    "LORA_TARGET_MODULES",
    "GPT1ForCausalLM",
    "GPT1ForMultipleChoice",
    "GPT1ForQuestionAnswering",
    "GPT1ForSequenceClassification",
    "GPT1ForTokenClassification",
    "GPT1Model",
    "GPT1PreTrainedModel",
]
