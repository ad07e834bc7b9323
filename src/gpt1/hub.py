"""Share a model folder on the Hugging Face Hub."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token

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
    api: HfApi | None = None,
) -> str:
    """Upload a gpt1 model folder to `repo_id` in one commit and return the commit's URL.

    Credentials come from huggingface_hub's usual sources (`HF_TOKEN`, `hf auth login`); no token is
    ever written anywhere.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a model folder (no config.json); train or save a model first.")
    if api is None:
        if get_token() is None:
            raise ValueError(
                "Not logged in to the Hugging Face Hub: run `hf auth login`, or set the HF_TOKEN environment "
                "variable, then push again."
            )
        api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision is not None:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    commit = api.create_commit(
        repo_id=repo_id,
        operations=[
            CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path)) for path in shared_files(folder)
        ],
        commit_message=commit_message or f"Upload GPT-1 model from {folder.name}",
        revision=revision,
    )
    return str(commit.commit_url)


def shared_files(folder: Path) -> list[Path]:
    """The files of `folder` that go to the Hub, in one flat list."""
    return sorted(
        path for path in folder.iterdir() if path.is_file() and any(fnmatch(path.name, p) for p in SHARED_FILES)
    )
