"""A model folder's files, checked as data before anything is built from them.

A folder from a stranger, or from a disk that lost a block, can hold anything: a config.json whose sizes
would allocate terabytes, an `auto_map` that sends every `trust_remote_code=True` user to another
repository's code, a safetensors header whose offsets point outside the file, a tokenizer.json whose ids
overflow or whose structure makes the Rust `tokenizers` library panic. Each check here reads the file
itself, bounded in size, and raises a one-line `ValueError` that names the file and the field, before
transformers, safetensors or tokenizers see it. The one bound that holds for any real model: its config
describes exactly the tensors in its weights, so nothing is built that the weights file could not fill.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import inspect
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeGuard

import torch
from transformers import PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .model import GPT1Config
from .model.configuration_gpt1 import GPT1_AUTO_MAP

MiB = 1 << 20
CONFIG_BYTES = 16 * MiB  # config.json, generation_config.json, tokenizer_config.json, the shards' index
TOKENIZER_BYTES = 256 * MiB  # the largest tokenizer.json files on the Hub are a tenth of this
HEADER_BYTES = 100_000_000  # safetensors' own limit on a header (MAX_HEADER_SIZE)
MAX_DIMENSION = 2**31 - 1  # any size of a model: rows, width, positions (int32 indexing)
MAX_LAYERS = 10_000  # far beyond any model's depth; a config past it is damaged
MAX_LABELS = 1_000_000  # transformers builds a dict of num_labels entries from the config alone
MAX_TOKEN_ID = 2**32 - 1  # the `tokenizers` library's ids are u32

# Bits per element of each safetensors dtype (the format's own list), and those a gpt1 weight may have.
DTYPE_BITS = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}  # fmt: skip
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
TORCH_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")

# Config fields that size a model, in the order an error names them.
SIZE_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_inner", "n_layer", "n_head", "hidden_size",
               "intermediate_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
               "n_ctx")  # fmt: skip
LAYER_FIELDS = ("n_layer", "num_hidden_layers")
GPT1_FLOATS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "classifier_dropout", "layer_norm_epsilon",
               "initializer_range", "auxiliary_lm_loss_weight")  # fmt: skip
GPT1_BOOLS = ("tie_word_embeddings", "use_cache")
# Fields every transformers config has, which it uses as they come.
COMMON_BOOLS = ("output_hidden_states", "output_attentions", "return_dict", "is_encoder_decoder", "tie_word_embeddings",
                "use_cache")  # fmt: skip
PROBLEM_TYPES = (None, "regression", "single_label_classification", "multi_label_classification")
# What `from_pretrained` takes for itself; every other keyword it passes on to the config.
LOADING_ARGUMENTS = frozenset({"dtype", "torch_dtype", "device_map", "trust_remote_code", "revision",
                               "use_safetensors", "attn_implementation", "low_cpu_mem_usage", "tp_plan", "key_mapping",
                               "cache_dir"})  # fmt: skip
TOKENIZER_MODELS = ("BPE", "WordPiece", "WordLevel", "Unigram")
_MODULE_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")


# --- how a message shows what it found ---------------------------------------------------------------------------


def name_of(path: Path | str) -> str:
    """A file as a message names it: quoted, so that no character of it can break the line."""
    return repr(str(path))


def show(value: Any, limit: int = 60) -> str:
    """A value from a file, as a message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """An error's text on one line, cut short: libraries' messages may span lines."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- JSON files ------------------------------------------------------------------------------------------------------


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"the key {show(key)} appears twice in one object")
        found[key] = value
    return found


def parse_json(raw: bytes) -> Any:
    """JSON from bytes; a ValueError saying why not (not UTF-8, not JSON, a key twice, nested too deep)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"byte {error.start} is not UTF-8 text") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, a key twice, an integer of too many digits
        raise ValueError(one_line(error, 200)) from None


def read_json(path: Path, limit: int = CONFIG_BYTES) -> Any:
    """A JSON file of a model folder, at most `limit` bytes; a one-line ValueError naming it otherwise."""
    size = path.stat().st_size
    if size > limit:
        raise ValueError(
            f"{name_of(path)} is {size:,} bytes, more than a {path.name} can sensibly be ({limit:,} at most): "
            "it is damaged or is not the file its name says."
        )
    try:
        return parse_json(path.read_bytes())
    except ValueError as error:
        raise ValueError(f"{name_of(path)} is not a valid JSON file: {error}.") from None


# --- config.json -----------------------------------------------------------------------------------------------------


def check_config_dict(config: Any, where: str) -> None:
    """The fields of a config.json that transformers reads before any check of its own, and a gpt1 config's
    sizes and rates: a ValueError naming `where` (the file, quoted) and the field."""
    if not isinstance(config, dict):
        raise ValueError(f"{where} holds a JSON {_kind(config)}, not an object of settings: it is no model config.")
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ValueError(f"{where}: model_type must be a string such as 'gpt1', got {show(model_type)}.")
    _check_auto_map(config.get("auto_map"), model_type, where)
    architectures = config.get("architectures")
    if architectures is not None and not (
        isinstance(architectures, list) and all(isinstance(name, str) for name in architectures)
    ):
        raise ValueError(f"{where}: architectures must be a list of class names, got {show(architectures)}.")
    num_labels = config.get("num_labels")
    if num_labels is not None and not (_is_int(num_labels) and 0 < num_labels <= MAX_LABELS):
        raise ValueError(
            f"{where}: num_labels must be a whole number from 1 to {MAX_LABELS:,}, got {show(num_labels)}."
        )
    for field in ("id2label", "label2id"):
        labels = config.get(field)
        if labels is not None and not isinstance(labels, dict):
            raise ValueError(f"{where}: {field} must be an object (label id -> name), got {show(labels)}.")
    id2label = config.get("id2label") or {}
    if not all(re.fullmatch(r"\d{1,9}", key) for key in id2label):
        bad = next(key for key in id2label if not re.fullmatch(r"\d{1,9}", key))
        raise ValueError(f"{where}: id2label's keys must be label ids (0, 1, ...), got {show(bad)}.")
    for field in ("dtype", "torch_dtype"):
        dtype = config.get(field)
        if dtype is not None and not (isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)):
            raise ValueError(f"{where}: {field} must name a torch dtype such as 'float32', got {show(dtype)}.")
    for field in COMMON_BOOLS:
        if config.get(field) not in (None, True, False):
            raise ValueError(f"{where}: {field} must be true or false, got {show(config[field])}.")
    if model_type == GPT1Config.model_type and (
        config.get("is_encoder_decoder") or config.get("return_dict", True) is not True
    ):
        field = "is_encoder_decoder" if config.get("is_encoder_decoder") else "return_dict"
        raise ValueError(
            f"{where}: {field} is {show(config[field])}, which no gpt1 model saves (a decoder only, returning output "
            "objects): the file is damaged."
        )
    chunks = config.get("chunk_size_feed_forward", 0)
    if not (_is_int(chunks) and 0 <= chunks <= MAX_DIMENSION):
        raise ValueError(f"{where}: chunk_size_feed_forward must be a whole number >= 0, got {show(chunks)}.")
    if config.get("problem_type") not in PROBLEM_TYPES:
        raise ValueError(f"{where}: problem_type must be one of {PROBLEM_TYPES}, got {show(config['problem_type'])}.")
    for field in SIZE_FIELDS:
        value = config.get(field)
        if field in config and value is None and field == "n_inner":
            continue  # gpt1: 4 × n_embd
        if field in config and not (_is_int(value) and value > 0):
            raise ValueError(f"{where}: {_owner(model_type)}{field} must be a positive integer, got {show(value)}.")
        cap = MAX_LAYERS if field in LAYER_FIELDS else MAX_DIMENSION
        if _is_int(value) and value > cap:
            raise ValueError(
                f"{where}: {field} {value:,} is more than any model has ({cap:,} at most): the file is damaged."
            )
    if model_type == GPT1Config.model_type:
        _check_gpt1_fields(config, where)


def _owner(model_type: Any) -> str:
    """How a field is named in a message: as GPT1Config names its own (`GPT1Config.n_layer`), or plainly."""
    return "GPT1Config." if model_type == GPT1Config.model_type else ""


def _check_auto_map(auto_map: Any, model_type: Any, where: str) -> None:
    """`auto_map` may name only this folder's own files, and for gpt1 only the classes gpt1 writes there.

    transformers ignores `auto_map` when the installed package has the model type (gpt1 always loads
    with its own classes), but it keeps the entry: a folder saved from it, or pushed, would send every
    `trust_remote_code=True` user to the code it names. Refused, whatever it names elsewhere.
    """
    if auto_map is None:
        return
    if not isinstance(auto_map, dict):
        raise ValueError(f"{where}: auto_map must be an object (Auto class -> module.Class), got {show(auto_map)}.")
    allowed = set(GPT1_AUTO_MAP.values())
    for auto_class, references in auto_map.items():
        for reference in references if isinstance(references, list) else [references]:
            field = f"auto_map[{show(auto_class)}] = {show(reference, 80)}"
            if reference is None and isinstance(references, list):
                continue  # a tokenizer's [slow, fast] pair may lack one of them
            if not isinstance(reference, str):
                raise ValueError(f"{where}: {field} is no 'module.Class' name.")
            if "--" in reference:
                raise ValueError(
                    f"{where}: {field} points at another repository's code, which `trust_remote_code=True` would "
                    "download and run: gpt1 loads no code from elsewhere. Remove the entry (gpt1 writes its own "
                    "auto_map when it saves)."
                )
            if not _MODULE_CLASS.fullmatch(reference):
                raise ValueError(f"{where}: {field} is no 'module.Class' name of a file in this folder.")
            if model_type == GPT1Config.model_type and reference not in allowed:
                raise ValueError(
                    f"{where}: {field} points at code other than gpt1's own (configuration_gpt1.py, "
                    "modeling_gpt1.py): a gpt1 folder names only those. Remove the entry (gpt1 writes its own "
                    "auto_map when it saves)."
                )


def _check_gpt1_fields(config: dict[str, Any], where: str) -> None:
    """What GPT1Config's own checks take for granted: the types, finite rates, token ids inside the vocabulary,
    architectures gpt1 has, and a padding multiple that cannot outgrow the vocabulary."""
    from .model import modeling_gpt1

    for field in GPT1_FLOATS:
        value = config.get(field, 0.0)
        if not (_is_number(value) and math.isfinite(value)):
            raise ValueError(f"{where}: GPT1Config.{field} must be a finite number, got {show(value)}.")
    for field in GPT1_BOOLS:
        if not isinstance(config.get(field, True), bool):
            raise ValueError(f"{where}: GPT1Config.{field} must be true or false, got {show(config[field])}.")
    if not isinstance(config.get("activation_function", ""), str):
        raise ValueError(
            f"{where}: GPT1Config.activation_function must be a name such as 'gelu_pytorch_tanh', "
            f"got {show(config['activation_function'])}."
        )
    vocab_size = config.get("vocab_size", GPT1Config.vocab_size)
    for field in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = config.get(field)
        ids = value if field == "eos_token_id" and isinstance(value, list) else [value]
        if value is not None and not all(_is_int(token) and 0 <= token < vocab_size for token in ids):
            raise ValueError(
                f"{where}: {field} must be a token id in [0, {vocab_size}) (vocab_size) or null, got {show(value)}."
            )
    multiple = config.get("vocab_padding_multiple", 1)
    if _is_int(multiple) and multiple > max(4096, vocab_size):
        raise ValueError(
            f"{where}: GPT1Config.vocab_padding_multiple {multiple:,} is larger than vocab_size ({vocab_size:,}) and "
            "4096: the training loss would pad the output layer with more rows than it has. Use 64 (gpt1 train's) or 1."
        )
    for field in ("dtype", "torch_dtype"):
        if config.get(field) not in (None, *TORCH_FLOAT_DTYPES):
            raise ValueError(f"{where}: {field} {show(config[field])} is no floating-point dtype for a gpt1 model.")
    for architecture in config.get("architectures") or []:
        if not (architecture.startswith("GPT1") and isinstance(getattr(modeling_gpt1, architecture, None), type)):
            raise ValueError(
                f"{where}: architectures names {show(architecture)}, which gpt1 does not have (it has GPT1Model, "
                "GPT1ForCausalLM, GPT1ForSequenceClassification, GPT1ForMultipleChoice, GPT1ForTokenClassification, "
                "GPT1ForQuestionAnswering)."
            )


def build_config(config: dict[str, Any], where: str, **overrides: Any) -> PreTrainedConfig:
    """The config object of a checked config.json (with `from_pretrained`'s config keywords applied);
    whatever the config class refuses becomes a one-line ValueError naming the file."""
    check_config_dict(config, where)
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ValueError(f"{where}: model_type {show(model_type)} is none that transformers or gpt1 knows.")
    config_class = CONFIG_MAPPING[model_type]
    is_dataclass = dataclasses.is_dataclass(config_class)
    fields = {field.name for field in dataclasses.fields(config_class)} if is_dataclass else set()
    for key in config:
        found = inspect.getattr_static(config_class, key, None)
        settable = isinstance(found, property) and found.fset is not None
        if found is not None and key not in fields and key != "model_type" and not settable:
            raise ValueError(
                f"{where}: {show(key)} is no setting but a part of {config_class.__name__} (a method, or a value "
                "transformers computes): the file is damaged."
            )
    settings = {key: value for key, value in overrides.items() if key not in LOADING_ARGUMENTS}
    try:
        built = config_class.from_dict(copy.deepcopy(config), **settings)
        built.validate()  # what transformers checks only when it saves the config again
        return built
    except MemoryError:
        raise  # no bad input: a bug, or a check missing above
    except Exception as error:  # the config class's own checks: GPT1Config names the field and the value
        raise ValueError(f"{where}: {one_line(error)}") from None


# --- safetensors headers -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors header (its offsets checked): the file that holds it, its dtype and shape."""

    file: Path
    dtype: str
    shape: tuple[int, ...]


def _damaged(path: Path, detail: str) -> ValueError:
    return ValueError(
        f"The weights in {name_of(path)} cannot be read ({detail}): the file is truncated or damaged. "
        "Save or download the model again."
    )


def _tensor_name(name: str) -> str:
    return name if name.isprintable() and len(name) <= 120 else show(name, 120)


def read_safetensors_header(path: Path) -> dict[str, Tensor]:
    """The tensors a safetensors file holds, from its header, checked as safetensors itself checks it (a length
    inside the file, a JSON object, known dtypes, offsets that tile the data exactly) before any library reads it."""
    size = path.stat().st_size
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise _damaged(path, f"it is {size} bytes long, too short for the 8-byte length of its header")
        length = int.from_bytes(prefix, "little")
        if length > HEADER_BYTES:
            raise _damaged(
                path, f"its first 8 bytes give a header of {length:,} bytes, beyond safetensors' {HEADER_BYTES:,}"
            )
        if 8 + length > size:
            raise _damaged(path, f"its first 8 bytes give a header of {length:,} bytes, but the file holds {size:,}")
        raw = file.read(length)
    if not raw.startswith(b"{"):
        raise _damaged(path, "its header is no JSON object")
    try:
        header = parse_json(raw)
    except ValueError as error:
        raise _damaged(path, f"its header is no valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise _damaged(path, "its header is no JSON object")
    tensors: dict[str, Tensor] = {}
    extents: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not (isinstance(entry, dict) and all(isinstance(value, str) for value in entry.values())):
                raise _damaged(path, f"its __metadata__ must map strings to strings, got {show(entry)}")
            continue
        shown = _tensor_name(name)
        if not isinstance(entry, dict):
            raise _damaged(path, f"the header's entry for {shown} is {show(entry)}, not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise _damaged(path, f"{shown} has dtype {show(dtype)}, which safetensors does not know")
        if not (isinstance(shape, list) and len(shape) <= 8 and all(_is_int(n) and n >= 0 for n in shape)):
            raise _damaged(path, f"{shown} has shape {show(shape)}, not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(n) and n >= 0 for n in offsets)):
            raise _damaged(path, f"{shown} has data_offsets {show(offsets)}, not [begin, end]")
        begin, end = offsets
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if end < begin or bits % 8 or end - begin != bits // 8:
            raise _damaged(
                path,
                f"{shown} has shape {shape} of {dtype} ({bits // 8:,} bytes), but its data_offsets [{begin}, {end}] "
                f"span {end - begin:,}",
            )
        tensors[name] = Tensor(path, dtype, tuple(shape))
        extents.append((begin, end, shown))
    data = size - 8 - length
    position = 0
    for begin, end, shown in sorted(extents):
        if begin != position:
            overlap = "overlaps the tensor before it" if begin < position else "leaves a gap after the tensor before it"
            raise _damaged(path, f"{shown} starts at byte {begin:,} of the data and {overlap}")
        position = end
    if position != data:
        past = "past the end of the file" if position > data else "and bytes follow that no tensor holds"
        raise _damaged(path, f"its tensors end at byte {position:,} of {data:,} bytes of data, {past}")
    return tensors


@dataclass(frozen=True)
class Weights:
    """The tensors of a model folder's weights (model.safetensors, or the shards its index names)."""

    files: tuple[Path, ...]
    tensors: dict[str, Tensor]

    @property
    def name(self) -> str:
        return name_of(self.files[0]) if len(self.files) == 1 else name_of(self.files[0].parent / INDEX)

    def rows(self, name: str) -> int | None:
        tensor = self.tensors.get(name)
        return tensor.shape[0] if tensor is not None and tensor.shape else None


WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_weights(folder: Path) -> Weights | None:
    """The headers of the weights `from_pretrained(use_safetensors=True)` would read in `folder` (model.safetensors,
    else the index and its shards), checked; None where there are none (transformers then says so)."""
    single = folder / WEIGHTS
    if single.is_file():
        return Weights((single,), read_safetensors_header(single))
    index_path = folder / INDEX
    if not index_path.is_file():
        return None
    index = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not (isinstance(weight_map, dict) and weight_map and all(isinstance(v, str) for v in weight_map.values())):
        raise ValueError(
            f"{name_of(index_path)}: weight_map must map tensor names to shard files, got {show(weight_map)}."
        )
    tensors: dict[str, Tensor] = {}
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not re.fullmatch(r"[\w][\w.-]*\.safetensors", shard) or not (folder / shard).is_file():
            raise ValueError(
                f"{name_of(index_path)}: weight_map names the shard {show(shard)}, which is no .safetensors file in "
                "this folder. Save or download the model again."
            )
        for name, tensor in read_safetensors_header(folder / shard).items():
            if name in tensors:
                raise ValueError(f"{name_of(folder / shard)}: {_tensor_name(name)} is in another shard too.")
            tensors[name] = tensor
    for name, shard in weight_map.items():
        if name not in tensors or tensors[name].file.name != shard:
            raise ValueError(
                f"{name_of(index_path)}: weight_map puts {_tensor_name(name)} in {show(shard)}, which does not hold "
                "it. Save or download the model again."
            )
    unlisted = sorted(set(tensors) - set(weight_map))
    if unlisted:
        raise ValueError(
            f"{name_of(index_path)}: weight_map does not list {_tensor_name(unlisted[0])}, which a shard holds."
        )
    return Weights(tuple(folder / shard for shard in shards), tensors)


# --- the weights against the config ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelTensors:
    """What a model class built from a config would load: every tensor's shape, the ones tied to another (a
    file may leave them out), the prefix of its base model's tensors ("" for a base model), and the class."""

    shapes: dict[str, tuple[int, ...]]
    tied: frozenset[str]
    base_prefix: str
    prefix: str
    class_name: str


def model_tensors(model_class: Any, config: PreTrainedConfig, where: str = "config.json") -> ModelTensors:
    """Build `model_class` from `config` on the meta device (no memory for any tensor) and read its state dict."""
    try:
        with torch.device("meta"):
            if model_class.__name__.startswith("Auto"):
                model = model_class.from_config(config, trust_remote_code=False)
            else:
                model = model_class(config)
    except MemoryError:
        raise
    except Exception as error:
        raise ValueError(f"{where} describes no model {model_class.__name__} can build: {one_line(error)}") from None
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    tied = frozenset(getattr(model, "all_tied_weights_keys", None) or ())
    base_prefix = model.base_model_prefix or ""
    prefix = base_prefix + "." if base_prefix and hasattr(model, base_prefix) else ""
    return ModelTensors(shapes, tied, base_prefix, prefix, type(model).__name__)


@cache
def _gpt1_head_tensors() -> frozenset[str]:
    """The names of every gpt1 task head's own tensors (a folder saved by one head may be loaded by another)."""
    from .model import modeling_gpt1

    config = GPT1Config(vocab_size=8, n_positions=4, n_embd=4, n_layer=1, n_head=1)
    names: set[str] = set()
    for reference in GPT1_AUTO_MAP.values():
        module, class_name = reference.split(".")
        if module == "modeling_gpt1":
            shapes = model_tensors(getattr(modeling_gpt1, class_name), config).shapes
            names |= {name for name in shapes if not name.startswith("transformer.")}
    return frozenset(names)


def _sizes_of(config: PreTrainedConfig, where: str, shape: tuple[int, ...], layers: bool = False) -> str:
    """The config fields a tensor's shape follows from, as a message names them: `config.json (vocab_size 100,
    n_embd 32)`; with `layers`, the number of layers too."""
    settings = config.to_dict()
    found = [
        f"{field} {settings[field]}"
        for field in SIZE_FIELDS
        if _is_int(settings.get(field)) and (settings[field] in shape or (layers and field in LAYER_FIELDS))
    ]
    return f"{where} ({', '.join(found)})" if found else where


def _split(names: Any, prefix: str) -> tuple[dict[str, str], set[str]]:
    """Base-model tensors (by their name inside the base model) and the task head's, of a state dict's names."""
    base = {name.removeprefix(prefix): name for name in names if not prefix or name.startswith(prefix)}
    return base, {name for name in names if prefix and not name.startswith(prefix)}


def check_weights_fit(
    weights: Weights,
    config: PreTrainedConfig,
    model_class: Any,
    *,
    where: str = "config.json",
    padded_rows: Callable[[str], range | None] = lambda name: None,
) -> None:
    """The weights hold exactly the tensors a `model_class` of `config` has, with their shapes: a ValueError naming
    the first tensor that differs, the file, and the config's sizes. A tied tensor may be absent; so may a task
    head's where the folder was saved by another class (from_pretrained initialises it), and a gpt1 folder may
    hold another gpt1 head's tensors. `padded_rows(name)` gives the rows a tensor may have instead (the padded
    embeddings of folders saved before gpt1 0.2, which `gpt1 convert` upgrades)."""
    layers = next((getattr(config, field) for field in LAYER_FIELDS if hasattr(config, field)), None)
    if _is_int(layers) and layers > len(weights.tensors):
        raise ValueError(
            f"{weights.name} holds {len(weights.tensors)} tensors, fewer than the {layers:,} layers "
            f"{_sizes_of(config, where, (), layers=True)} describes: the config does not belong to these weights."
        )
    expected = model_tensors(model_class, config, where)
    gpt1 = getattr(config, "model_type", None) == GPT1Config.model_type
    # A file saved from a base model names its tensors without the prefix; one saved with a head, with it.
    file_prefix = expected.base_prefix + "."
    saved_with_head = bool(expected.base_prefix) and any(name.startswith(file_prefix) for name in weights.tensors)
    saved_base, saved_heads = _split(weights.tensors, file_prefix if saved_with_head else "")
    model_base, model_heads = _split(expected.shapes, expected.prefix)

    def check(saved_name: str | None, name: str, shape: tuple[int, ...]) -> None:
        _check_tensor(weights, config, where, saved_name, name, shape, gpt1, padded_rows)

    for key, name in model_base.items():  # named as the file names it
        check(saved_base.get(key), (file_prefix if saved_with_head else "") + key, expected.shapes[name])
    extra = sorted(set(saved_base) - set(model_base))
    if extra:
        raise ValueError(
            f"{weights.name} holds {_tensor_name(saved_base[extra[0]])}, which a model of "
            f"{_sizes_of(config, where, (), layers=True)} does not have: the config does not belong to these weights."
        )
    saved_as = (getattr(config, "architectures", None) or [None])[0]
    for name in sorted(model_heads):
        if name in weights.tensors or not (name in expected.tied or saved_as != expected.class_name):
            check(name if name in weights.tensors else None, name, expected.shapes[name])
    unknown = sorted(name for name in saved_heads - model_heads if gpt1 and name not in _gpt1_head_tensors())
    if unknown:
        raise ValueError(
            f"{weights.name} holds {_tensor_name(unknown[0])}, which no gpt1 model has: these are not a gpt1 "
            "model's weights."
        )


def _check_tensor(
    weights: Weights,
    config: PreTrainedConfig,
    where: str,
    saved_name: str | None,
    name: str,
    shape: tuple[int, ...],
    gpt1: bool,
    padded_rows: Callable[[str], range | None],
) -> None:
    if saved_name is None:
        raise ValueError(
            f"{weights.name} has no tensor {name}, which {_sizes_of(config, where, shape, layers=True)} needs: the "
            "config does not belong to these weights, or the file is incomplete."
        )
    saved = weights.tensors[saved_name]
    rows = padded_rows(name)
    fits = saved.shape == shape or (
        rows is not None and len(shape) == len(saved.shape) >= 1 and saved.shape[0] in rows
        and saved.shape[1:] == shape[1:]
    )  # fmt: skip
    if not fits:
        raise ValueError(
            f"{name_of(saved.file)}: {_tensor_name(saved_name)} has shape {list(saved.shape)}, but "
            f"{_sizes_of(config, where, shape)} needs {list(shape)}."
        )
    if gpt1 and saved.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"{name_of(saved.file)}: {_tensor_name(saved_name)} has dtype {saved.dtype}; a gpt1 model's weights are "
            f"floating point ({', '.join(FLOAT_DTYPES)})."
        )


def check_finite(model: torch.nn.Module, source: str) -> None:
    """Every weight of a loaded model is a finite number: a flipped bit in a weights file (no checksum guards it)
    can make one infinite or NaN, and the model would then write nothing but errors."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"The weights in {source} hold infinite or NaN values ({name}): the file is damaged. "
                "Save or download the model again."
            )


# --- tokenizer.json and tokenizer_config.json ---------------------------------------------------------------------


def check_tokenizer_json(data: Any, where: str) -> int:
    """The structure the `tokenizers` library reads from a tokenizer.json, checked so that it never panics or
    meets an id past u32; returns the number of tokens, whose ids run from 0 to that number less one."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} holds a JSON {_kind(data)}, not a tokenizer (an object with a model).")
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") not in TOKENIZER_MODELS:
        found = model.get("type") if isinstance(model, dict) else model
        raise ValueError(f"{where}: model.type must be one of {', '.join(TOKENIZER_MODELS)}, got {show(found)}.")
    tokens = _check_vocab(model, model["type"], where)
    by_id = {token_id: token for token, token_id in tokens.items()}
    added = data.get("added_tokens", [])
    if not isinstance(added, list):
        raise ValueError(f"{where}: added_tokens must be a list, got {show(added)}.")
    seen: set[str] = set()
    for index, token in enumerate(added):
        field = f"added_tokens[{index}]"
        if not (isinstance(token, dict) and _is_int(token.get("id")) and isinstance(token.get("content"), str)):
            raise ValueError(
                f"{where}: {field} must be an object with an integer id and a content string, got {show(token)}."
            )
        token_id, content = token["id"], token["content"]
        if not 0 <= token_id <= MAX_TOKEN_ID:
            raise ValueError(f"{where}: {field}.id is {token_id}, not a token id (0 to {MAX_TOKEN_ID}).")
        if not content or content in seen:
            raise ValueError(f"{where}: {field}.content {show(content)} is empty or an earlier added token's.")
        if by_id.get(token_id, content) != content or tokens.get(content, token_id) != token_id:
            raise ValueError(
                f"{where}: {field} gives {show(content)} the id {token_id}, which clashes with model.vocab "
                f"({show(by_id.get(token_id))} has that id)."
            )
        for flag in ("single_word", "lstrip", "rstrip", "normalized", "special"):
            if not isinstance(token.get(flag), bool):
                raise ValueError(f"{where}: {field}.{flag} must be true or false, got {show(token.get(flag))}.")
        seen.add(content)
        by_id[token_id], tokens[content] = content, token_id
    if by_id and max(by_id) >= len(by_id):
        raise ValueError(
            f"{where}: the tokenizer has {len(by_id)} tokens but gives one the id {max(by_id)}: token ids must run "
            f"from 0 to {len(by_id) - 1}."
        )
    for part in ("truncation", "padding"):
        value = data.get(part)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{where}: {part} must be an object or null, got {show(value)}.")
    for part in COMPONENTS:
        if data.get(part) is not None:
            _check_component(data[part], part, part, len(by_id), where)
    truncation = data.get("truncation")
    if isinstance(truncation, dict):
        length, stride = truncation.get("max_length"), truncation.get("stride", 0)
        if not (_is_int(length) and _is_int(stride) and 0 <= stride < length):
            raise ValueError(f"{where}: truncation needs 0 <= stride < max_length, got {show(truncation)}.")
    return len(by_id)


def _check_vocab(model: dict[str, Any], kind: str, where: str) -> dict[str, int]:
    """model.vocab (token -> id; for Unigram, [token, score] pairs) and, for BPE, the merges."""
    vocab = model.get("vocab")
    if kind == "Unigram":
        if not (isinstance(vocab, list) and vocab):
            raise ValueError(f"{where}: model.vocab of a Unigram model must be a non-empty list of [token, score].")
        for index, entry in enumerate(vocab):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and _is_number(entry[1])
                    and math.isfinite(entry[1])):  # fmt: skip
                raise ValueError(f"{where}: model.vocab[{index}] must be [token, finite score], got {show(entry)}.")
        unk = model.get("unk_id")
        if unk is not None and not (_is_int(unk) and 0 <= unk < len(vocab)):
            raise ValueError(f"{where}: model.unk_id {show(unk)} is no index of model.vocab ({len(vocab)} tokens).")
        return {entry[0]: index for index, entry in enumerate(vocab)}
    if not isinstance(vocab, dict):
        raise ValueError(f"{where}: model.vocab must be an object (token -> id), got {show(vocab)}.")
    seen: dict[int, str] = {}
    for token, token_id in vocab.items():
        if not (_is_int(token_id) and 0 <= token_id <= MAX_TOKEN_ID):
            raise ValueError(
                f"{where}: model.vocab[{show(token)}] is {show(token_id)}, not a token id (0 to {MAX_TOKEN_ID})."
            )
        if token_id in seen:
            raise ValueError(
                f"{where}: model.vocab gives the id {token_id} to both {show(seen[token_id])} and {show(token)}."
            )
        seen[token_id] = token
    for field in ("unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        value = model.get(field)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: model.{field} must be a string or null, got {show(value)}.")
    if kind in ("WordPiece", "WordLevel") and model.get("unk_token") not in vocab:
        raise ValueError(f"{where}: model.unk_token {show(model.get('unk_token'))} is not in model.vocab.")
    if kind == "BPE":
        _check_merges(model, vocab, where)
    return dict(vocab)


def _check_merges(model: dict[str, Any], vocab: dict[str, int], where: str) -> None:
    merges = model.get("merges", [])
    if not isinstance(merges, list):
        raise ValueError(f"{where}: model.merges must be a list, got {show(merges)}.")
    dropout = model.get("dropout")
    if dropout is not None and not (_is_number(dropout) and 0.0 <= dropout <= 1.0):
        raise ValueError(f"{where}: model.dropout must be null or in [0, 1], got {show(dropout)}.")
    prefix = model.get("continuing_subword_prefix") or ""
    for index, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) and part for part in pair)):
            raise ValueError(f"{where}: model.merges[{index}] must be two tokens, 'a b' or [a, b], got {show(merge)}.")
        left, right = pair
        if prefix and not right.startswith(prefix):
            raise ValueError(
                f"{where}: model.merges[{index}] {show(merge)}: its second token lacks the "
                f"continuing_subword_prefix {show(prefix)}."
            )
        merged = left + right[len(prefix) :]
        for token in (left, right, merged):
            if token not in vocab:
                raise ValueError(
                    f"{where}: model.merges[{index}] {show(merge)} needs {show(token)}, which is not in model.vocab."
                )


# The types of each part of a tokenizers pipeline (tokenizers 0.2x), and the field a Sequence of them holds them in.
COMPONENTS = {
    "normalizer": ({"BertNormalizer", "ByteLevel", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "Nmt", "Precompiled",
                    "Prepend", "Replace", "Sequence", "Strip", "StripAccents"}, "normalizers"),
    "pre_tokenizer": ({"BertPreTokenizer", "ByteLevel", "CharDelimiterSplit", "Digits", "FixedLength", "Metaspace",
                       "Punctuation", "Sequence", "Split", "UnicodeScripts", "Whitespace", "WhitespaceSplit"},
                      "pretokenizers"),
    "post_processor": ({"BertProcessing", "ByteLevel", "RobertaProcessing", "Sequence", "TemplateProcessing"},
                       "processors"),
    "decoder": ({"BPEDecoder", "ByteFallback", "ByteLevel", "CTC", "Fuse", "Metaspace", "Replace", "Sequence", "Strip",
                 "WordPiece"}, "decoders"),
}  # fmt: skip


def _check_component(value: Any, part: str, field: str, count: int, where: str, depth: int = 0) -> None:
    """One step of the pipeline (a normalizer, pre-tokenizer, post-processor or decoder): a type the library has
    (its deserializer panics on some it does not expect), the steps of a Sequence, and the token ids and data a
    step carries."""
    types, inner = COMPONENTS[part]
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str) or kind not in types or depth > 16:
        raise ValueError(f"{where}: {field} must be an object whose type is one of {sorted(types)}, got {show(value)}.")
    if kind == "Sequence":
        steps = value.get(inner)
        if not isinstance(steps, list):
            raise ValueError(f"{where}: {field}.{inner} must be a list of steps, got {show(steps)}.")
        for index, step in enumerate(steps):
            _check_component(step, part, f"{field}.{inner}[{index}]", count, where, depth + 1)
    elif kind == "TemplateProcessing":
        _check_template(value, count, where)
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for name in ("sep", "cls"):
            token = value.get(name)
            if not (isinstance(token, list) and len(token) == 2 and isinstance(token[0], str) and _is_int(token[1])
                    and 0 <= token[1] < count):  # fmt: skip
                raise ValueError(f"{where}: {field}.{name} must be [token, id below {count}], got {show(token)}.")
    elif kind == "Precompiled":
        _check_charsmap(value.get("precompiled_charsmap"), f"{field}.precompiled_charsmap", where)


def _check_charsmap(charsmap: Any, field: str, where: str) -> None:
    """A sentencepiece normalization map as tokenizers reads it (base64 of a u32 trie size, the trie, the strings):
    sizes that fit, so that reading it cannot run past its end."""
    try:
        data = base64.b64decode(charsmap, validate=True) if isinstance(charsmap, str) else b""
    except ValueError:
        data = b""
    if len(data) < 4 or 4 + int.from_bytes(data[:4], "little") // 4 * 4 > len(data):
        raise ValueError(f"{where}: {field} is no sentencepiece normalization map (base64 of a trie and its strings).")


def _check_template(template: dict[str, Any], count: int, where: str) -> None:
    special = template.get("special_tokens") or {}
    if not isinstance(special, dict):
        raise ValueError(f"{where}: post_processor.special_tokens must be an object, got {show(special)}.")
    for key, token in special.items():
        if not (isinstance(token, dict) and isinstance(token.get("ids"), list) and isinstance(token.get("tokens"), list)
                and len(token["ids"]) == len(token["tokens"])):  # fmt: skip
            raise ValueError(f"{where}: post_processor.special_tokens[{show(key)}] needs as many ids as tokens.")
        for token_id in token["ids"]:
            if not (_is_int(token_id) and 0 <= token_id < count):
                raise ValueError(
                    f"{where}: post_processor.special_tokens[{show(key)}] has the id {show(token_id)}, which is no "
                    f"token's (the tokenizer has {count})."
                )
    for part in ("single", "pair"):
        pieces = template.get(part) or []
        for piece in pieces if isinstance(pieces, list) else []:
            token = piece.get("SpecialToken") if isinstance(piece, dict) else None
            name = token.get("id") if isinstance(token, dict) else None
            if name is not None and (not isinstance(name, str) or name not in special):
                raise ValueError(
                    f"{where}: post_processor.{part} uses the special token {show(name)}, which special_tokens "
                    "does not define."
                )


def check_tokenizer_config(data: Any, where: str) -> None:
    """tokenizer_config.json: an object, with no code to run and only token ids the tokenizers library can hold."""
    if not isinstance(data, dict):
        raise ValueError(f"{where} holds a JSON {_kind(data)}, not an object of tokenizer settings.")
    if data.get("auto_map") is not None:
        raise ValueError(
            f"{where}: auto_map = {show(data['auto_map'], 80)} names tokenizer code to run; gpt1 runs no code from "
            "model folders. Remove it (a gpt1 tokenizer needs none)."
        )
    tokenizer_class = data.get("tokenizer_class")
    if tokenizer_class is not None and not (isinstance(tokenizer_class, str) and tokenizer_class.isidentifier()):
        raise ValueError(f"{where}: tokenizer_class must be a class name, got {show(tokenizer_class)}.")
    decoder = data.get("added_tokens_decoder", {})
    if not isinstance(decoder, dict):
        raise ValueError(f"{where}: added_tokens_decoder must be an object (id -> token), got {show(decoder)}.")
    for key, token in decoder.items():
        if not (re.fullmatch(r"\d{1,10}", key) and int(key) <= MAX_TOKEN_ID):
            raise ValueError(f"{where}: added_tokens_decoder has the key {show(key)}, not a token id.")
        if not (isinstance(token, dict) and isinstance(token.get("content"), str)):
            raise ValueError(f"{where}: added_tokens_decoder[{show(key)}] must be an object with a content string.")
    length = data.get("model_max_length")
    if length is not None and not (_is_number(length) and length > 0):
        raise ValueError(f"{where}: model_max_length must be a positive number, got {show(length)}.")


def check_tokenizer_files(folder: Path) -> int | None:
    """The tokenizer files of a model folder, read and checked as data (see `check_tokenizer_json`); the number of
    tokens tokenizer.json holds, or None without one."""
    count = None
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        count = check_tokenizer_json(read_json(tokenizer_json, TOKENIZER_BYTES), name_of(tokenizer_json))
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        check_tokenizer_config(read_json(tokenizer_config), name_of(tokenizer_config))
    special = folder / "special_tokens_map.json"
    if special.is_file() and not isinstance(read_json(special), dict):
        raise ValueError(f"{name_of(special)} holds no JSON object of special tokens.")
    return count


def is_panic(error: BaseException) -> bool:
    """Whether `error` is a Rust panic raised through pyo3 (tokenizers, safetensors): a BaseException, not an
    Exception, so that `except Exception` lets it through."""
    return type(error).__name__ == "PanicException"
