"""Share a model folder on the Hugging Face Hub."""

from __future__ import annotations

import tempfile
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

from . import model as gpt1_model
from .model_folders import check_model_folder, load_model, read_config
from .reporting import MODEL_ID_LINE, MODEL_ID_PATTERN

# What a shareable gpt1 folder holds; checkpoints, optimizer states, metrics and caches stay home.
SHARED_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "configuration_gpt1.py",
    "modeling_gpt1.py",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "loss_curve.png",
    "README.md",
]


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    max_shard_size: str | int | None = None,
    api: HfApi | None = None,
) -> str:
    """Upload a gpt1 model folder to `repo_id` in one commit and return the commit's URL.

    Only the files a user needs go up (`SHARED_FILES`): weights, config, remote code, tokenizer,
    generation config, model card and loss curve; never checkpoints, optimizer states or caches.
    With `max_shard_size` (e.g. "200MB") the weights are re-saved in safetensors shards of at most
    that size, with their index. `revision` is a branch, created from main when it does not exist.

    Credentials come from huggingface_hub's usual sources (`HF_TOKEN`, `hf auth login`); no token is
    ever written anywhere.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a model folder (no config.json); train or save a model first.")
    check_model_folder(folder)  # a damaged or hostile file is named here, not shared
    if api is None:
        if get_token() is None:
            raise ValueError(
                "Not logged in to the Hugging Face Hub: run `hf auth login`, or set the HF_TOKEN environment "
                "variable, then push again."
            )
        api = HfApi()
    with tempfile.TemporaryDirectory() as staging:
        files = [_card_naming(path, repo_id, Path(staging)) if path.name == "README.md" else path
                 for path in shared_files(folder)]  # fmt: skip
        if max_shard_size is not None:
            files = _with_resharded_weights(folder, files, Path(staging), max_shard_size)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path)) for path in files
        ]
        # Weights left from an earlier push in another layout (one file vs shards) would shadow the new
        # ones (from_pretrained prefers model.safetensors to an index): delete them in the same commit.
        uploading = {path.name for path in files}
        operations += [
            CommitOperationDelete(path_in_repo=name)
            for name in api.list_repo_files(repo_id, revision=revision)
            if _is_weights(name) and name not in uploading
        ]
        commit = api.create_commit(
            repo_id=repo_id,
            operations=operations,
            commit_message=commit_message or f"Upload GPT-1 model from {folder.name}",
            revision=revision,
        )
    return str(commit.commit_url)


def _card_naming(card: Path, repo_id: str, staging: Path) -> Path:
    """A copy of the model card whose usage loads `repo_id`, where it named the local folder."""
    staged = staging / card.name
    staged.write_text(MODEL_ID_PATTERN.sub(MODEL_ID_LINE.format(repo_id), card.read_text()))
    return staged


def shared_files(folder: Path) -> list[Path]:
    """The files of `folder` that go to the Hub, in one flat list."""
    return sorted(
        path for path in folder.iterdir() if path.is_file() and any(fnmatch(path.name, p) for p in SHARED_FILES)
    )


def _with_resharded_weights(folder: Path, files: list[Path], staging: Path, max_shard_size: str | int) -> list[Path]:
    """`files` with the weights replaced by shards of at most `max_shard_size`, written into `staging`."""
    architecture = (read_config(str(folder)).get("architectures") or ["GPT1ForCausalLM"])[0]
    model_class = getattr(gpt1_model, architecture, None) if architecture.startswith("GPT1") else None
    if model_class is None:
        raise ValueError(f"{str(folder)!r} holds a {architecture}, not a gpt1 model; it cannot be re-sharded here.")
    load_model(model_class, str(folder), dtype="auto").save_pretrained(staging, max_shard_size=max_shard_size)
    kept = [path for path in files if not _is_weights(path.name)]
    shards = [path for path in staging.iterdir() if _is_weights(path.name)]
    return sorted(kept + shards)


def _is_weights(name: str) -> bool:
    return "/" not in name and (name.endswith(".safetensors") or name == "model.safetensors.index.json")
