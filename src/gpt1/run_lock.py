"""One run per folder: a lock file in the output folder that a second `gpt1 train` (or `gpt1 finetune`) into
the same folder finds taken, and refuses with the first run's process id, host and command.

The lock is an advisory `flock` on RUN_LOCK, which the kernel releases whenever the process ends, however it
ends (SIGKILL, an out-of-memory kill, a crash included): a lock is never left held by a dead run. The file
itself says who took it; a file whose lock is free was left by a run that ended without removing it, which
the next run reports as such and takes over.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, and no lock (each run still writes atomically)
    fcntl = None  # type: ignore[assignment]

RUN_LOCK = ".gpt1-run.lock"


class FolderInUseError(ValueError):
    """Another live process holds the folder's lock."""


class RunLock:
    """Hold `folder`'s RUN_LOCK while entered. `stale` is the record of a run that ended without releasing its
    lock (crashed or killed), found on entering, or None."""

    def __init__(self, folder: str | os.PathLike, option: str = "--output-dir") -> None:
        self.folder = Path(folder)
        self.option = option
        self.stale: dict | None = None
        self._descriptor: int | None = None
        self._made: list[Path] = []  # the folders the lock had to make, deepest first: removed again if left empty

    @property
    def path(self) -> Path:
        return self.folder / RUN_LOCK

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        missing = [folder for folder in [self.folder, *self.folder.parents] if not folder.exists()]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._made = missing
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_record(descriptor)
                os.close(descriptor)
                raise FolderInUseError(self._in_use_message(holder)) from None
            # A run that was finishing may have removed the file between our open and our lock: then we hold
            # a lock on a file nobody else will open. Start again on the file the path names now.
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(descriptor)
        self.stale = _read_record(descriptor) or None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": shlex.join(["gpt1", *sys.argv[1:]]),
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._descriptor is None:
            return
        # Remove the file while still holding the lock, then let go: a run that opened the file just before is
        # sent back by the check in __enter__ to the new file.
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)
        self._descriptor = None
        for folder in self._made:  # a run that wrote nothing (refused before it began) leaves no folder behind
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: the run's work is in it

    def stale_message(self) -> str | None:
        """A line about the run that ended without releasing the lock, if there was one."""
        if not self.stale:
            return None
        return (
            f"{self.option} {str(self.folder)!r} was locked by {_describe(self.stale)}, which ended without "
            "releasing it (it crashed or was killed); taking it over."
        )

    def _in_use_message(self, holder: dict) -> str:
        return (
            f"{self.option} {str(self.folder)!r} is in use by another gpt1 run: {_describe(holder)}. Two runs in "
            f"one folder would mix their checkpoints and logs. Wait for it to end, stop it (kill -TERM "
            f"{holder.get('pid', 'PID')} saves a checkpoint first), or choose another {self.option}."
        )


def _read_record(descriptor: int) -> dict:
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode())
    except (ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict) -> str:
    if not record:
        return "a process that left no record"
    described = f"process {record.get('pid', '?')} on {record.get('host', '?')}"
    if record.get("started"):
        described += f", started {record['started']}"
    if record.get("command"):
        described += f" (`{record['command']}`)"
    return described
