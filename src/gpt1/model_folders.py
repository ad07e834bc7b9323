"""Model folders on disk: open them safely (weights only from safetensors, no code from the folder
runs), and leave the ones we save readable like any other file the user writes.

gpt1 checkpoints load through the installed package's classes (importing `gpt1` registers them with
the Auto classes), so nothing here needs `trust_remote_code`; a checkpoint that would need its own
code is refused with transformers' own message. What a checkpoint is comes from its config.json, read
as data. `use_safetensors=True` refuses pickled `pytorch_model.bin` weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import transformers
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .model import GPT1Config
from .sources import check_folder_or_hub_repo

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
EMBEDDING_MATRIX = "transformer.token_embeddings.weight"  # the input embeddings, in saved weights


def _check_source(model: str) -> None:
    check_folder_or_hub_repo(model, "model", " Pass a folder from `gpt1 train`, or a Hub repo id.")


def read_config(model: str, revision: str | None = None) -> dict[str, Any]:
    """config.json of a folder or Hub repo, as data (no code runs); a clear error when there is none."""
    _check_source(model)
    if os.path.isdir(model) and not (Path(model) / "config.json").is_file():
        raise FileNotFoundError(
            f"No config.json in {model!r}: pass a gpt1 model folder (from `gpt1 train`) or a Hub repo id."
        )
    config_dict, _ = PreTrainedConfig.get_config_dict(model, revision=revision)
    return config_dict


def check_gpt1_checkpoint(model: str, revision: str | None = None) -> None:
    """A clear error when `model` is missing or is not a gpt1 model."""
    _require_gpt1(model, read_config(model, revision).get("model_type"))


def _require_gpt1(model: str, model_type: str | None) -> None:
    if model_type != GPT1Config.model_type:
        raise ValueError(
            f"{model!r} is a {model_type!r} checkpoint, not gpt1. Use a model made by `gpt1 train`, "
            "or convert an openai-gpt checkpoint first with `gpt1 convert`."
        )


def load_model(model_class: Any, model: str, revision: str | None = None, **kwargs: Any) -> Any:
    """`model_class.from_pretrained(model)` from safetensors only, never running the checkpoint's code.
    A gpt1 class (not an Auto class) takes gpt1 checkpoints only."""
    config_dict = read_config(model, revision)
    model_type = config_dict.get("model_type")
    is_auto_class = model_class.__name__.startswith("Auto")
    if not is_auto_class:
        _require_gpt1(model, model_type)
    elif model_type not in CONFIG_MAPPING:  # gpt1 is there once the package is imported
        raise ValueError(
            f"{model!r} has model_type {model_type!r} in its config.json, which neither gpt1 nor transformers "
            f"{transformers.__version__} knows (a gpt1 checkpoint says 'gpt1'). gpt1 runs no code from "
            "checkpoints: fix config.json, or load a model that brings its own code yourself, with "
            "trust_remote_code=True, if you trust it."
        )
    if os.path.isdir(model):
        check_vocabulary_rows(
            Path(model) / "model.safetensors", config_dict.get("vocab_size"), f"gpt1 convert {model} NEW_FOLDER"
        )
    if is_auto_class:
        kwargs["trust_remote_code"] = False  # refuse, and never prompt, rather than run a stranger's code
    try:
        return model_class.from_pretrained(model, revision=revision, use_safetensors=True, **kwargs)
    except SafetensorError as error:
        raise ValueError(
            f"The weights in {model!r} cannot be read ({error}): model.safetensors is truncated or damaged. "
            "Save or download the model again."
        ) from None


def saved_embedding_rows(weights: Path) -> int | None:
    """Rows of the token embeddings in a safetensors file, from its header (no tensor is read); None without them."""
    if not weights.is_file():
        return None
    try:
        with safe_open(str(weights), framework="pt") as saved:
            if EMBEDDING_MATRIX not in saved.keys():  # noqa: SIM118 (a safe_open handle is no dict)
                return None
            return int(saved.get_slice(EMBEDDING_MATRIX).get_shape()[0])
    except SafetensorError:
        return None  # a damaged file: the loader that reads it says so


def check_vocabulary_rows(weights: Path, vocab_size: int | None, upgrade: str) -> None:
    """A clear error for weights saved by gpt1 before 0.2, which kept the embedding rows padded up to a multiple
    of `vocab_padding_multiple`; `upgrade` is the command that rewrites them with `vocab_size` rows."""
    rows = saved_embedding_rows(weights)
    if rows is not None and isinstance(vocab_size, int) and rows > vocab_size:
        raise ValueError(
            f"{str(weights)!r} holds {rows} embedding rows for vocab_size {vocab_size}: it was saved by gpt1 "
            f"before 0.2, which padded the rows (gpt1 now keeps the padding inside the training loss and saves "
            f"vocab_size rows, as vLLM and TRL expect). Upgrade it once, the original left as it is: {upgrade}"
        )


def load_tokenizer(model: str, revision: str | None = None) -> Any:
    """The tokenizer saved with a model; a clear error when a local model folder has none."""
    _check_source(model)
    if os.path.isdir(model) and not any((Path(model) / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"No tokenizer in {model!r} (no {' or '.join(TOKENIZER_FILES)}). Save it next to the model "
            f"with tokenizer.save_pretrained({model!r})."
        )
    return AutoTokenizer.from_pretrained(model, revision=revision)


def give_normal_permissions(folder: str | os.PathLike) -> None:
    """Files in `folder` readable as the user's umask allows, like every other file they write.

    safetensors writes its file through a private temporary file (mode 0600) and renames it, so
    `model.safetensors` would be the one file of a model folder that others sharing the machine cannot read.
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o777 == 0o600:
            path.chmod(0o666 & ~umask)
