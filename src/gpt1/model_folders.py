"""Model folders on disk: open them safely (weights only from safetensors, no code from the folder
runs, every file checked as data before a library reads it: see `folder_checks`), and leave the ones we
save readable like any other file the user writes.

gpt1 checkpoints load through the installed package's classes (importing `gpt1` registers them with
the Auto classes), so nothing here needs `trust_remote_code`; a checkpoint that would need its own
code is refused with transformers' own message. What a checkpoint is comes from its config.json, read
as data. `use_safetensors=True` refuses pickled `pytorch_model.bin` weights.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import transformers
from safetensors import SafetensorError
from transformers import AutoTokenizer, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .folder_checks import (
    Weights,
    build_config,
    check_config_dict,
    check_finite,
    check_tokenizer_files,
    check_weights_fit,
    is_panic,
    name_of,
    one_line,
    read_json,
    read_safetensors_header,
    read_weights,
)
from .model import GPT1Config
from .sources import check_folder_or_hub_repo
from .tokenization import token_id_count

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
EMBEDDING_MATRIX = "transformer.token_embeddings.weight"  # the input embeddings, in saved weights


def _check_source(model: str) -> None:
    check_folder_or_hub_repo(model, "model", " Pass a folder from `gpt1 train`, or a Hub repo id.")


def read_config(model: str, revision: str | None = None) -> dict[str, Any]:
    """config.json of a folder or Hub repo, as data (no code runs), checked (see `folder_checks`); a clear error
    when there is none."""
    _check_source(model)
    if os.path.isdir(model):
        path = Path(model) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"No config.json in {model!r}: pass a gpt1 model folder (from `gpt1 train`) or a Hub repo id."
            )
        config_dict = read_json(path)
        check_config_dict(config_dict, name_of(path))
        return config_dict
    config_dict, _ = PreTrainedConfig.get_config_dict(model, revision=revision)
    check_config_dict(config_dict, f"The config.json of {model!r}")
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


def _require_known(model: str, model_type: str | None) -> None:
    if model_type not in CONFIG_MAPPING:  # gpt1 is there once the package is imported
        raise ValueError(
            f"{model!r} has model_type {model_type!r} in its config.json, which neither gpt1 nor transformers "
            f"{transformers.__version__} knows (a gpt1 checkpoint says 'gpt1'). gpt1 runs no code from "
            "checkpoints: fix config.json, or load a model that brings its own code yourself, with "
            "trust_remote_code=True, if you trust it."
        )


def load_model(model_class: Any, model: str, revision: str | None = None, **kwargs: Any) -> Any:
    """`model_class.from_pretrained(model)` from safetensors only, never running the checkpoint's code, after the
    folder's config and weights headers are checked against each other (nothing is built that the weights could
    not fill). A gpt1 class takes gpt1 checkpoints only; another concrete class, its own model type."""
    config_dict = read_config(model, revision)
    model_type = config_dict.get("model_type")
    is_auto_class = model_class.__name__.startswith("Auto")
    if model_class.__module__.startswith("gpt1."):
        _require_gpt1(model, model_type)
    elif not is_auto_class and model_type != model_class.config_class.model_type:
        raise ValueError(
            f"{model!r} has model_type {model_type!r}, not the {model_class.config_class.model_type!r} "
            f"that {model_class.__name__} loads."
        )
    else:
        _require_known(model, model_type)
    source = repr(model)
    if os.path.isdir(model):
        weights = check_model_files(Path(model), model_class, config_dict, f"gpt1 convert {model} NEW_FOLDER", **kwargs)
        source = weights.name if weights is not None else source
    if is_auto_class:
        kwargs["trust_remote_code"] = False  # refuse, and never prompt, rather than run a stranger's code
    try:
        loaded = model_class.from_pretrained(model, revision=revision, use_safetensors=True, **kwargs)
    except SafetensorError as error:
        raise ValueError(
            f"The weights in {model!r} cannot be read ({error}): model.safetensors is truncated or damaged. "
            "Save or download the model again."
        ) from None
    check_finite(loaded, source)
    return loaded


def check_model_files(
    folder: Path, model_class: Any, config_dict: dict[str, Any], upgrade: str, **overrides: Any
) -> Weights | None:
    """The config of a local model folder, built with `overrides` (from_pretrained's config keywords), and its
    weights headers against it (see `folder_checks.check_weights_fit`); the weights, or None without any.
    `upgrade` is the command that upgrades a folder saved before gpt1 0.2."""
    where = name_of(folder / "config.json")
    config = build_config(config_dict, where, **overrides)
    weights = read_weights(folder)
    if weights is not None:
        if isinstance(config, GPT1Config):
            _refuse_padded_rows(weights, config.vocab_size, upgrade)
        check_weights_fit(weights, config, model_class, where=where)
    return weights


def check_model_folder(folder: Path) -> None:
    """Everything of a model folder that gpt1 reads (config, weights headers, tokenizer), checked as `load_model`
    and `load_tokenizer` check them, without loading the weights: for a folder about to be shared."""
    from .model import modeling_gpt1

    config_dict = read_config(str(folder))
    if config_dict.get("model_type") == GPT1Config.model_type:
        architecture = (config_dict.get("architectures") or ["GPT1ForCausalLM"])[0]
        check_model_files(folder, getattr(modeling_gpt1, architecture), config_dict, f"gpt1 convert {folder} NEW")
    else:
        read_weights(folder)
    if any((folder / name).is_file() for name in TOKENIZER_FILES):
        load_tokenizer(str(folder))


def saved_embedding_rows(weights: Path) -> int | None:
    """Rows of the token embeddings in a safetensors file, from its header (no tensor is read); None without them.
    A damaged header is a ValueError that says so."""
    if not weights.is_file():
        return None
    tensor = read_safetensors_header(weights).get(EMBEDDING_MATRIX)
    return tensor.shape[0] if tensor is not None and tensor.shape else None


def check_vocabulary_rows(weights: Path, vocab_size: int | None, upgrade: str) -> None:
    """A clear error for weights saved by gpt1 before 0.2, which kept the embedding rows padded up to a multiple
    of `vocab_padding_multiple`; `upgrade` is the command that rewrites them with `vocab_size` rows."""
    rows = saved_embedding_rows(weights)
    if rows is not None and isinstance(vocab_size, int) and rows > vocab_size:
        raise ValueError(_padded_rows_message(weights, rows, vocab_size, upgrade))


def _refuse_padded_rows(weights: Weights, vocab_size: int, upgrade: str) -> None:
    rows = weights.rows(EMBEDDING_MATRIX)
    if rows is not None and rows > vocab_size:
        raise ValueError(_padded_rows_message(weights.tensors[EMBEDDING_MATRIX].file, rows, vocab_size, upgrade))


def _padded_rows_message(weights: Path, rows: int, vocab_size: int, upgrade: str) -> str:
    return (
        f"{str(weights)!r} holds {rows} embedding rows for vocab_size {vocab_size}: it was saved by gpt1 "
        f"before 0.2, which padded the rows (gpt1 now keeps the padding inside the training loss and saves "
        f"vocab_size rows, as vLLM and TRL expect). Upgrade it once, the original left as it is: {upgrade}"
    )


def load_tokenizer(model: str, revision: str | None = None) -> Any:
    """The tokenizer saved with a model, its files checked as data first (see `folder_checks`) and every id it
    gives checked against config.json's vocab_size; a clear error when a local model folder has none."""
    _check_source(model)
    if not os.path.isdir(model):
        return _tokenizer(model, revision, repr(model))
    folder = Path(model)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"No tokenizer in {model!r} (no {' or '.join(TOKENIZER_FILES)}). Save it next to the model "
            f"with tokenizer.save_pretrained({model!r})."
        )
    vocab_size = None
    if (folder / "config.json").is_file():  # AutoTokenizer reads it too: checked before it does
        config_dict = read_config(model)
        _require_known(model, config_dict.get("model_type"))
        config = build_config(config_dict, name_of(folder / "config.json"))
        vocab_size = getattr(config, "vocab_size", None)
    check_tokenizer_files(folder)
    files = [name_of(folder / name) for name in TOKENIZER_FILES if (folder / name).is_file()]
    tokenizer = _tokenizer(model, revision, " and ".join(files))
    if isinstance(vocab_size, int) and (ids := token_id_count(tokenizer)) > vocab_size:
        raise ValueError(
            f"{files[0]} gives {len(tokenizer)} tokens with ids up to {ids - 1}, but "
            f"{name_of(folder / 'config.json')} has vocab_size {vocab_size}: ids >= {vocab_size} have no "
            "embedding. Save the tokenizer the model was trained with next to it, or resize the model with "
            "model.resize_token_embeddings(len(tokenizer)) and save both."
        )
    return tokenizer


def _tokenizer(model: str, revision: str | None, files: str) -> Any:
    """AutoTokenizer for `model`, with no code from it, tried on a first text: whatever the tokenizers library
    raises, a Rust panic included, becomes a one-line ValueError naming the files. A panic also prints its own
    lines to the process's stderr, from Rust: those are held back, and what else the loading printed is passed on."""
    with _native_stderr_held() as printed:
        try:
            tokenizer = AutoTokenizer.from_pretrained(model, revision=revision, trust_remote_code=False)
            tokenizer.decode(tokenizer("Hello, world.").input_ids)  # where a damaged tokenizer fails that loaded
            printed.keep = True
            return tokenizer
        except OSError:
            if not os.path.isdir(model):
                printed.keep = True
                raise  # the Hub's own message (not found, unreachable)
            error_text = "it cannot be read"
        except MemoryError:
            printed.keep = True
            raise
        except Exception as error:
            error_text = one_line(error)
        except BaseException as error:
            if not is_panic(error):
                printed.keep = True
                raise
            error_text = f"the tokenizers library failed on it: {one_line(error)}"
    raise ValueError(f"{files} cannot be loaded as a tokenizer ({error_text}): save the tokenizer again.")


class _Held:
    keep = False  # pass what was printed on once the block ends (else drop it)


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[_Held]:
    """The process's stderr (file descriptor 2, where Rust writes) redirected to a temporary file while the block
    runs; written out after it when the block sets `keep`. Where fd 2 cannot be redirected, nothing is held."""
    held = _Held()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield held
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if held.keep:
                capture.seek(0)
                os.write(2, capture.read())


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
