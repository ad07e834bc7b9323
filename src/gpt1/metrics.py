"""A run's logs, one JSON line per evaluation, written by `gpt1 train` (the main process), cut back when
a run resumes, read by the model card and the loss-curve picture:

- metrics.jsonl (`METRICS`): step, train and validation loss, perplexity, learning rate, speed;
- samples.jsonl (`SAMPLES`): step, train and validation loss, the prompt and the text the model wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunLog:
    """One of a run folder's JSON-lines logs: a record per evaluation, each with its "step"."""

    file_name: str

    def path(self, run_dir: Path) -> Path:
        return run_dir / self.file_name

    def append(self, run_dir: Path, record: dict[str, Any]) -> None:
        with self.path(run_dir).open("a") as file:
            file.write(json.dumps(record) + "\n")

    def restart(self, run_dir: Path, resumed_at_step: int | None) -> None:
        """A fresh run starts a fresh file; a resumed one keeps what was logged up to its checkpoint's step
        (lines logged after it, by the run that was stopped, are dropped, and so is a last line cut short
        by a kill)."""
        log = self.path(run_dir)
        if not log.exists():
            return
        kept = [] if resumed_at_step is None else [line for line, step in _lines(log) if step <= resumed_at_step]
        log.write_text("".join(line + "\n" for line in kept))

    def read(self, path: Path, missing_ok: bool = False) -> list[dict]:
        """The records of the log in a run folder, or of the file `path` itself. A line cut short (a run
        killed while writing it) is left out. Without the file: [] if `missing_ok`, else FileNotFoundError."""
        log = self.path(path) if path.is_dir() else path
        if not log.exists():
            if missing_ok:
                return []
            raise FileNotFoundError(f"No {self.file_name} at {str(log)!r}: is this a gpt1 training run folder?")
        return [json.loads(line) for line, _ in _lines(log)]


METRICS = RunLog("metrics.jsonl")
SAMPLES = RunLog("samples.jsonl")
RUN_LOGS = (METRICS, SAMPLES)


def restart_logs(run_dir: Path, resumed_at_step: int | None) -> None:
    """Every log of the run, started afresh or cut back to the checkpoint a resumed run starts from."""
    for log in RUN_LOGS:
        log.restart(run_dir, resumed_at_step)


SAMPLES_SHOWN = 4  # the samples a picture or a card shows: the first, two in between, the last


def spread(records: list[dict], count: int) -> list[dict]:
    """`count` records from first to last, evenly spaced (all of them when there are no more): the few
    samples a picture or a card shows of how a run's text changed."""
    if len(records) <= count:
        return list(records)
    if count <= 1:
        return records[-1:]
    return [records[round(index * (len(records) - 1) / (count - 1))] for index in range(count)]


def _lines(log: Path) -> list[tuple[str, int]]:
    """The complete lines of a log with their step; a line that is no JSON record (cut short) is skipped."""
    found = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            found.append((line, record["step"]))
    return found
