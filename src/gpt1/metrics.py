"""A run's logs, one JSON line per evaluation, written by `gpt1 train` (the main process), cut back when
a run resumes, read by the model card and the loss-curve picture:

- metrics.jsonl (`METRICS`): step, train and validation loss, perplexity, learning rate, speed;
- samples.jsonl (`SAMPLES`): step, train and validation loss, the prompt and the text the model wrote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The longest line a log can hold: a record with a sample of thousands of tokens is far shorter. A longer line
# is read no further than this.
MAX_LINE_BYTES = 4 << 20


@dataclass(frozen=True)
class RunLog:
    """One of a run folder's JSON-lines logs: a record per evaluation, each with its "step" and the numbers and
    texts named here. A line that is no such record (damage, or a hand's edit) is skipped where the log is
    read along the way (the model card, a resumed run) and refused where it is the point (`gpt1 plot-metrics`)."""

    file_name: str
    numbers: tuple[str, ...] = ()  # what each record must hold as a number
    optional_numbers: tuple[str, ...] = ()  # a number or null, where a record has it
    texts: tuple[str, ...] = ()  # what each record must hold as a string
    optional_texts: tuple[str, ...] = ()

    def path(self, run_dir: Path) -> Path:
        return run_dir / self.file_name

    def append(self, run_dir: Path, record: dict[str, Any]) -> None:
        with self.path(run_dir).open("a") as file:
            file.write(json.dumps(record) + "\n")

    def restart(self, run_dir: Path, resumed_at_step: int | None) -> None:
        """A fresh run starts a fresh file; a resumed one keeps what was logged up to its checkpoint's step
        (lines logged after it, by the run that was stopped, are dropped, and so are a last line cut short
        by a kill and any line that is no record)."""
        log = self.path(run_dir)
        if not log.exists():
            return
        kept = [] if resumed_at_step is None else [
            line for _, record, line in self._lines(log) if record is not None and record["step"] <= resumed_at_step
        ]  # fmt: skip
        log.write_text("".join(line + "\n" for line in kept))

    def read(self, path: Path, missing_ok: bool = False, strict: bool = False) -> list[dict]:
        """The records of the log in a run folder, or of the file `path` itself. A last line cut short (a run
        killed while writing it) is left out. Any other line that is no record is skipped with a warning, or
        with `strict`, refused: a one-line ValueError naming the file, the line and the field. Without the
        file: [] if `missing_ok`, else FileNotFoundError."""
        log = self.path(path) if path.is_dir() else path
        if not log.exists():
            if missing_ok:
                return []
            raise FileNotFoundError(f"No {self.file_name} at {str(log)!r}: is this a gpt1 training run folder?")
        records, skipped = [], []
        for number, record, reason in self._lines(log):  # a record's line, or why a line is none
            if record is not None:
                records.append(record)
            else:
                skipped.append(f"line {number} {reason}")
        if skipped and strict:
            more = f" (and {len(skipped) - 1} more lines that are no records)" if len(skipped) > 1 else ""
            raise ValueError(
                f"{str(log)!r}: {skipped[0]}, so it is no record of a gpt1 run{more}. Delete or fix the line."
            )
        if skipped:
            logger.warning("%r: skipped %d line(s) that are no records (%s).", str(log), len(skipped), skipped[0])
        return records

    def _lines(self, log: Path) -> Iterator[tuple[int, dict | None, str]]:
        """Each line of a log: its number, then its record and the line itself, or None and why it is no
        record. Blank lines are left out, and so is a last line cut short by a kill (no line break, no record)."""
        with log.open("rb") as file:
            lines = _bounded_lines(file)
            line = next(lines, None)
            number = 0
            while line is not None:
                following = next(lines, None)
                number += 1
                text = line.rstrip(b"\r\n")
                if text.strip():
                    record, reason = self._parse(text)
                    if record is not None:
                        yield number, record, text.decode()
                    elif line.endswith(b"\n") or following is not None:
                        yield number, None, reason
                line = following

    def _parse(self, text: bytes) -> tuple[dict | None, str]:
        """The record a line holds, or None and why not."""
        if len(text) > MAX_LINE_BYTES:
            return None, f"is longer than {MAX_LINE_BYTES:,} bytes"
        try:
            record = json.loads(text.decode("utf-8"))
        except UnicodeDecodeError:
            return None, "is not UTF-8 text"
        except (ValueError, RecursionError):
            return None, "is not JSON"
        if not isinstance(record, dict):
            return None, f"holds a JSON {type(record).__name__}, not an object"
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            return None, f'has "step" {_show(record, "step")}, not a whole number of steps'
        for name in self.numbers + self.optional_numbers:
            value = record.get(name)
            if (value is not None or name in self.numbers) and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                return None, f'has "{name}" {_show(record, name)}, not a number'
        for name in self.texts + self.optional_texts:
            value = record.get(name)
            if (value is not None or name in self.texts) and not isinstance(value, str):
                return None, f'has "{name}" {_show(record, name)}, not a string'
        return record, ""


def _show(record: dict, name: str) -> str:
    """A field of a record as a message quotes it: its JSON value, cut short, or "missing"."""
    text = json.dumps(record[name]) if name in record else "missing"
    return text if len(text) <= 40 else text[:39] + "…"


def _bounded_lines(file: Any) -> Iterator[bytes]:
    """A binary file's lines, each read no further than MAX_LINE_BYTES + 1 bytes (the rest of a longer line is
    read in pieces and dropped), so that a line of gigabytes never sits in memory."""
    while line := file.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := file.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                pass
            line += b"\n" if rest else b""
        yield line


METRICS = RunLog(
    "metrics.jsonl",
    numbers=("train_loss", "val_loss"),
    optional_numbers=("val_perplexity", "grad_norm", "lr", "tokens_per_s", "tokens_seen"),
)
SAMPLES = RunLog("samples.jsonl", numbers=("val_loss",), optional_numbers=("train_loss",), texts=("text",),
                 optional_texts=("prompt",))  # fmt: skip
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
