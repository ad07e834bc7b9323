"""A graceful stop on SIGTERM or SIGINT: what schedulers (SLURM, Kubernetes, spot reclaim) send before they
take a machine back, and what Ctrl-C sends.

The first signal only raises a flag; the training loop reads it after each optimizer step, writes a checkpoint
with the usual atomic protocol and ends with `TrainingStopped` (the CLI says where the checkpoint is and how to
resume, and exits with EXIT_STOPPED). A second signal stops the process at once, the way the signal would
without gpt1: checkpoints are written into a temporary folder and renamed, so a stop at any moment leaves the
previous checkpoint whole.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

# EX_TEMPFAIL from sysexits.h, "try again later": the run stopped on request and resumes from its checkpoint.
# Distinct from success (0), a failed run (1) and bad input (2). Under torchrun the launcher reports it as a
# failed worker.
EXIT_STOPPED = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# One request can arrive twice: a terminal's Ctrl-C reaches every process of the foreground group, and a
# launcher (torchrun, accelerate launch) forwards it to its workers as SIGTERM a moment later. Repeats within
# this many seconds of the first signal are that one request, not a second.
REPEAT_WINDOW_S = 1.0


class TrainingStopped(Exception):
    """The run stopped on a signal, after writing a checkpoint; the message says where and how to resume."""


class StopSignals:
    """While entered (in the main thread), SIGTERM and SIGINT ask for a stop instead of ending the process.

    `requested` turns true on the first signal; a second one, later than REPEAT_WINDOW_S, restores the default
    action and re-sends itself, which ends the process at once. `what` ("training", "fine-tuning") goes into
    the message printed when the first signal arrives.
    """

    def __init__(self, what: str = "training") -> None:
        self.what = what
        self.signal: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # Python handles signals in the main thread only
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.signal is None:
            self.signal, self._first_at = number, time.monotonic()
            _say(
                f"\ngpt1: {name} received: finishing this {self.what} step, then saving a checkpoint "
                f"(send it again to stop at once).\n"
            )
            return
        if time.monotonic() - self._first_at < REPEAT_WINDOW_S:
            return  # the same request, delivered again (see REPEAT_WINDOW_S)
        _say(f"\ngpt1: {name} received again: stopping at once; the last complete checkpoint is kept.\n")
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)


def resume_command(command: str, fallback: list[str]) -> str:
    """The command line that resumes a stopped run: the one that started it, plus --resume; `gpt1 COMMAND
    *fallback` when gpt1 was called from Python or under a launcher, whose command line is not gpt1's."""
    words = ["gpt1", *sys.argv[1:]] if sys.argv[1:2] == [command] else ["gpt1", command, *fallback]
    return shlex.join(words if "--resume" in words else [*words, "--resume"])


def _say(message: str) -> None:
    """Write to stderr from a signal handler: straight to the file descriptor, since the handler may have
    interrupted a write to sys.stderr (a progress bar), and a buffered stream refuses a reentrant call."""
    with contextlib.suppress(OSError):  # no stderr to speak to: the stop itself still happens
        os.write(2, message.encode())
