"""A test double of the Hugging Face Hub API: each commit lands in the local HF cache layout
(models--org--name/{blobs,snapshots/<sha>,refs/<revision>}), so that a process with HF_HUB_CACHE set
and HF_HUB_OFFLINE=1 loads the model by repo id, through the same code path as a real download."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi


@dataclass
class RecordingHub(HfApi):
    cache: Path = Path(".")
    commits: list[dict] = field(default_factory=list)
    repos: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self):
        super().__init__(token=False)

    def create_repo(self, repo_id, *, private=False, exist_ok=False, repo_type=None, **kwargs):
        if repo_id in self.repos and not exist_ok:
            raise ValueError(f"{repo_id} exists")
        self.repos[repo_id] = private
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, *, branch, exist_ok=False, **kwargs):
        refs = self._repo_dir(repo_id) / "refs"
        main = refs / "main"
        if main.exists() and not (refs / branch).exists():
            (refs / branch).parent.mkdir(parents=True, exist_ok=True)
            (refs / branch).write_text(main.read_text())

    def create_commit(self, repo_id, operations, *, commit_message, revision=None, **kwargs):
        repo = self._repo_dir(repo_id)
        branch = revision or "main"
        parent = (repo / "refs" / branch).read_text() if (repo / "refs" / branch).exists() else None
        files = {}
        if parent is not None:
            files = {p.name: p.read_bytes() for p in (repo / "snapshots" / parent).iterdir()}
        for operation in operations:
            assert isinstance(operation, CommitOperationAdd)
            files[operation.path_in_repo] = Path(operation.path_or_fileobj).read_bytes()
        digest = hashlib.sha1(
            commit_message.encode() + b"".join(sorted(files.values())) + str(len(self.commits)).encode()
        )
        sha = digest.hexdigest()
        snapshot = repo / "snapshots" / sha
        snapshot.mkdir(parents=True)
        for name, content in files.items():
            blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(content)
            shutil.copyfile(blob, snapshot / name)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(sha)
        self.commits.append(
            {
                "repo_id": repo_id,
                "sha": sha,
                "revision": branch,
                "message": commit_message,
                "files": sorted(op.path_in_repo for op in operations),
            }
        )
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}",
            commit_message=commit_message,
            commit_description="",
            oid=sha,
        )

    def _repo_dir(self, repo_id: str) -> Path:
        return self.cache / f"models--{repo_id.replace('/', '--')}"
