"""A run's metrics.jsonl: one JSON record per evaluation, written by `gpt1 train`, cut back when a
run resumes, read by the model card and the loss-curve picture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def append_record(run_dir: Path, record: dict[str, Any]) -> None:
    with (run_dir / METRICS_FILE).open("a") as file:
        file.write(json.dumps(record) + "\n")


def restart_metrics(run_dir: Path, resumed_at_step: int | None) -> None:
    """A fresh run starts a fresh file; a resumed one keeps what was logged up to its checkpoint's step
    (a last line cut short by a kill is dropped)."""
    metrics_file = run_dir / METRICS_FILE
    if not metrics_file.exists():
        return
    kept = [] if resumed_at_step is None else _lines_up_to(metrics_file, resumed_at_step)
    metrics_file.write_text("".join(line + "\n" for line in kept))


def _lines_up_to(metrics_file: Path, step: int) -> list[str]:
    kept = []
    for line in metrics_file.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record["step"] <= step:
            kept.append(line)
    return kept


def read_metrics(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a folder or the file itself)."""
    file = path / METRICS_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"No {METRICS_FILE} at {str(file)!r}: is this a gpt1 training run folder?")
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
