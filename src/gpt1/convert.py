"""Convert checkpoints to the gpt1 format: transformers' `openai-gpt` ones (the published GPT-1 weights), and
gpt1 folders saved before 0.2 (embedding rows padded past the vocabulary)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, OpenAIGPTConfig, OpenAIGPTLMHeadModel

from .folder_checks import build_config, check_finite, check_weights_fit, is_panic, name_of, one_line, read_weights
from .model import GPT1Config, GPT1ForCausalLM, modeling_gpt1
from .model_folders import (
    EMBEDDING_MATRIX,
    TOKENIZER_FILES,
    give_normal_permissions,
    load_model,
    load_tokenizer,
    read_config,
)
from .sources import check_folder_or_hub_repo

logger = logging.getLogger(__name__)

# openai-gpt's `afn` names → transformers activation names. openai-gpt's "gelu" is the tanh approximation.
_ACTIVATIONS = {"gelu": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu", "swish": "silu"}

# openai-gpt parameter name (inside a block) → gpt1 name, and whether it is a Conv1D weight ([in, out]) to transpose.
_BLOCK_PARAMETERS = {
    "attn.c_attn.weight": ("attn.qkv_proj.weight", True),
    "attn.c_attn.bias": ("attn.qkv_proj.bias", False),
    "attn.c_proj.weight": ("attn.out_proj.weight", True),
    "attn.c_proj.bias": ("attn.out_proj.bias", False),
    "ln_1.weight": ("attn_norm.weight", False),
    "ln_1.bias": ("attn_norm.bias", False),
    "mlp.c_fc.weight": ("mlp.up_proj.weight", True),
    "mlp.c_fc.bias": ("mlp.up_proj.bias", False),
    "mlp.c_proj.weight": ("mlp.down_proj.weight", True),
    "mlp.c_proj.bias": ("mlp.down_proj.bias", False),
    "ln_2.weight": ("mlp_norm.weight", False),
    "ln_2.bias": ("mlp_norm.bias", False),
}


def gpt1_config_from_openai(config: OpenAIGPTConfig) -> GPT1Config:
    """The GPT1Config with the same architecture as an `openai-gpt` config."""
    if config.afn not in _ACTIVATIONS:
        raise ValueError(f"openai-gpt activation {config.afn!r} has no gpt1 equivalent; known: {sorted(_ACTIVATIONS)}.")
    return GPT1Config(
        vocab_size=config.vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        activation_function=_ACTIVATIONS[config.afn],
        resid_pdrop=config.resid_pdrop,
        embd_pdrop=config.embd_pdrop,
        attn_pdrop=config.attn_pdrop,
        layer_norm_epsilon=config.layer_norm_epsilon,
        initializer_range=config.initializer_range,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
    )


def gpt1_state_dict_from_openai(state_dict: dict[str, torch.Tensor], n_layer: int) -> dict[str, torch.Tensor]:
    """Rename (and transpose Conv1D weights of) an `OpenAIGPTLMHeadModel` state dict for `GPT1ForCausalLM`."""
    state_dict = {name.removeprefix("transformer."): tensor for name, tensor in state_dict.items()}
    converted = {
        "transformer.token_embeddings.weight": state_dict["tokens_embed.weight"],
        "transformer.position_embeddings.weight": state_dict["positions_embed.weight"],
    }
    for layer in range(n_layer):
        for old, (new, transpose) in _BLOCK_PARAMETERS.items():
            tensor = state_dict[f"h.{layer}.{old}"]
            converted[f"transformer.blocks.{layer}.{new}"] = tensor.t().contiguous() if transpose else tensor
    return converted


def convert_openai_gpt(src: str | os.PathLike, dst: str | os.PathLike, *, revision: str | None = None) -> Path:
    """Convert an `openai-gpt` checkpoint (a folder or Hub repo id) to a gpt1 folder at `dst`.

    The folder holds safetensors weights, config.json with `auto_map`, the remote-code files, the
    generation config and, when the source has one, the source's tokenizer. Returns `dst`.
    """
    src, dst = str(src), Path(dst)
    if os.path.isfile(src):
        raise ValueError(f"SRC must be a folder or a Hub repo id of an openai-gpt checkpoint, got the file {src!r}.")
    check_folder_or_hub_repo(src, "openai-gpt checkpoint")
    config_dict = read_config(src, revision)  # checked as data: see folder_checks
    if config_dict.get("model_type") != OpenAIGPTConfig.model_type:
        raise ValueError(
            f"{src!r} has model_type {config_dict.get('model_type')!r}; "
            "`gpt1 convert` converts 'openai-gpt' checkpoints only."
        )
    source_config = build_config(config_dict, f"The config.json of {src!r}")
    if not isinstance(source_config, OpenAIGPTConfig):  # model_type 'openai-gpt' builds one
        raise TypeError(f"{type(source_config).__name__} is no OpenAIGPTConfig.")
    tokenizer = _load_source_tokenizer(src, revision)
    # load_model checks the weights headers against the config before it reads a tensor.
    source = load_model(OpenAIGPTLMHeadModel, src, revision=revision or "main", dtype=torch.float32)

    config = gpt1_config_from_openai(source_config)
    model = GPT1ForCausalLM(config)
    state_dict = gpt1_state_dict_from_openai(source.state_dict(), config.n_layer)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    # The LM head is tied to the token embeddings, so it is the only key the source need not provide.
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise ValueError(f"Conversion left weights unmatched: missing {missing}, unexpected {unexpected}.")
    model.tie_weights()

    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    if tokenizer is None:
        logger.warning("%s has no tokenizer to carry over; add one to %s before generating text.", src, dst)
    else:
        tokenizer.model_max_length = config.n_positions
        tokenizer.save_pretrained(dst)
    give_normal_permissions(dst)
    return dst


def upgrade_gpt1_folder(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the gpt1 folder `src`, saved before 0.2, in today's format at `dst`; returns `dst`.

    Those versions saved the embedding matrix padded with rows up to a multiple of `vocab_padding_multiple`
    (rows that are never input and never predicted); today the padding lives inside the training loss and a
    folder holds `vocab_size` rows, as vLLM, TRL and conversion tools expect. The weights are cut to
    `vocab_size` rows and saved with today's remote code; every other file (tokenizer, card, metrics) is
    copied as it is, training checkpoints excepted. `src` is left untouched.
    """
    src, dst = Path(src), Path(dst)
    weights = src / "model.safetensors"
    if not (src / "config.json").is_file() or not weights.is_file():
        raise FileNotFoundError(
            f"No gpt1 model folder at {str(src)!r}: it needs config.json and model.safetensors (one file; "
            "a sharded folder can be merged first with save_pretrained(max_shard_size='100GB'))."
        )
    if dst.exists() and (dst.resolve() == src.resolve() or any(dst.iterdir())):
        raise ValueError(f"The upgraded folder goes to a new or empty folder, and {str(dst)!r} is not one.")
    where = name_of(src / "config.json")
    config = build_config(read_config(str(src)), where)
    if not isinstance(config, GPT1Config):
        raise ValueError(f"{where} has model_type {config.model_type!r}: `gpt1 convert` upgrades gpt1 folders only.")
    architecture = (config.architectures or ["GPT1ForCausalLM"])[0]
    model_class = getattr(modeling_gpt1, architecture)  # folder_checks allows gpt1's classes only
    saved = read_weights(src)
    if saved is None:  # model.safetensors was there a moment ago
        raise FileNotFoundError(f"No model.safetensors in {str(src)!r}.")
    padded = range(config.vocab_size, config.padded_vocab_size + 1)  # the rows a folder from before 0.2 may hold
    embeddings = (EMBEDDING_MATRIX, "lm_head.weight")
    check_weights_fit(
        saved, config, model_class, where=where, padded_rows=lambda name: padded if name in embeddings else None
    )
    rows = saved.rows(EMBEDDING_MATRIX)
    if rows is None or rows <= config.vocab_size:
        raise ValueError(
            f"{str(src)!r} holds {rows} embedding rows for vocab_size {config.vocab_size}: it needs no upgrade."
        )
    if any((src / name).is_file() for name in TOKENIZER_FILES):
        load_tokenizer(str(src))  # copied as it is: checked first, as every command that reads it checks it

    state_dict = load_file(weights)
    for name in (EMBEDDING_MATRIX, "lm_head.weight"):  # the head is saved only when untied
        if name in state_dict:
            state_dict[name] = state_dict[name][: config.vocab_size].contiguous()
    model = model_class(config).to(state_dict[EMBEDDING_MATRIX].dtype)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise ValueError(f"{str(src)!r} does not fit {architecture}: missing {missing}, unexpected {unexpected}.")
    check_finite(model, saved.name)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    for path in src.iterdir():
        if (dst / path.name).exists() or path.name == "checkpoints":
            continue
        if path.is_dir():
            shutil.copytree(path, dst / path.name)
        else:
            shutil.copy2(path, dst / path.name)
    give_normal_permissions(dst)
    return dst


def _load_source_tokenizer(src: str, revision: str | None):
    """The source's tokenizer, or None where it has none. A local folder's tokenizer.json or tokenizer_config.json
    is checked as every command checks it (an error names a damaged one); a tokenizer transformers builds from
    other files (vocab.json and merges.txt) is left out, with a warning, when it cannot be built."""
    if os.path.isdir(src) and any((Path(src) / name).is_file() for name in TOKENIZER_FILES):
        tokenizer = load_tokenizer(src)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(src, revision=revision, trust_remote_code=False)
        except (OSError, ValueError):
            return None
        except BaseException as error:  # a Rust panic of the tokenizers library on a damaged vocabulary
            if not is_panic(error):
                raise
            logger.warning("The tokenizer files of %s cannot be read (%s).", src, one_line(error))
            return None
    # Without vocabulary files transformers still builds a tokenizer, holding only its special tokens.
    if len(tokenizer) <= len(tokenizer.all_special_tokens):
        return None
    return tokenizer
