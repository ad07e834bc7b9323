"""A test double of the Hugging Face Hub API: each commit lands in the local HF cache layout
(models--org--name/{blobs,snapshots/<sha>,refs/<revision>}), so that a process with HF_HUB_CACHE set
and HF_HUB_OFFLINE=1 loads the model by repo id, through the same code path as a real download."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, RepoUrl
from huggingface_hub.errors import EntryNotFoundError


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
        return RepoUrl(f"https://huggingface.co/{repo_id}")

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
            snapshot = repo / "snapshots" / parent
            files = {str(p.relative_to(snapshot)): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
        for operation in operations:
            if isinstance(operation, CommitOperationDelete):
                files.pop(operation.path_in_repo)  # KeyError, like the Hub's error, for a file that is not there
                continue
            assert isinstance(operation, CommitOperationAdd)
            source = operation.path_or_fileobj
            files[operation.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
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
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(blob, snapshot / name)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / branch).write_text(sha)
        self.commits.append(
            {
                "repo_id": repo_id,
                "sha": sha,
                "revision": branch,
                "message": commit_message,
                "files": sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationAdd)),
                "deleted": sorted(op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)),
            }
        )
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{sha}",
            commit_message=commit_message,
            commit_description="",
            oid=sha,
        )

    def upload_folder(self, *, repo_id, folder_path, commit_message="Upload folder", revision=None,
                      allow_patterns=None, ignore_patterns=None, path_in_repo=None, **kwargs):  # fmt: skip
        """What `Trainer.push_to_hub` calls: every file under `folder_path`, filtered like the real one."""
        root = Path(folder_path)
        allow = [allow_patterns] if isinstance(allow_patterns, str) else allow_patterns
        ignore = [ignore_patterns] if isinstance(ignore_patterns, str) else (ignore_patterns or [])
        operations = []
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            name = file.relative_to(root).as_posix()
            if (allow and not any(fnmatch(name, pattern) for pattern in allow)) or any(
                fnmatch(name, pattern) for pattern in ignore
            ):
                continue
            target = f"{path_in_repo.strip('/')}/{name}" if path_in_repo else name
            operations.append(CommitOperationAdd(path_in_repo=target, path_or_fileobj=str(file)))
        return self.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)

    def list_repo_files(self, repo_id, *, revision=None, **kwargs) -> list[str]:
        ref = self._repo_dir(repo_id) / "refs" / (revision or "main")
        if not ref.exists():
            return []
        snapshot = self._repo_dir(repo_id) / "snapshots" / ref.read_text()
        return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())

    def load_card(self, repo_id_or_path, *args, **kwargs) -> ModelCard:
        """`ModelCard.load` against this Hub: the README of main, or EntryNotFoundError when it has none."""
        ref = self._repo_dir(str(repo_id_or_path)) / "refs" / "main"
        readme = (
            self._repo_dir(str(repo_id_or_path))
            / "snapshots"
            / (ref.read_text() if ref.exists() else "-")
            / "README.md"
        )
        if not readme.is_file():
            raise EntryNotFoundError(f"{repo_id_or_path} has no README.md")
        return ModelCard(readme.read_text())

    def _repo_dir(self, repo_id: str) -> Path:
        return self.cache / f"models--{repo_id.replace('/', '--')}"
