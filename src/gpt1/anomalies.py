"""Numbers that can be trusted over a long run: the gradient norm of every step, loss and gradient-norm spikes,
and steps whose loss or gradient is NaN or infinite, each written down with the batch that caused it.

Every anomaly becomes a line of RUN_DIR/anomalies.jsonl (step, kind, loss, gradient norm, the level expected,
the data position) and RUN_DIR/anomalies/step-NNNNNNNN-rank-R.safetensors, the token ids of that step's
micro-batches on that process: `gpt1.anomalies.load_batch` gives them back, to run the model on them again.

A non-finite step is skipped (the optimizer does not step, the weights stay as they were), since one NaN
gradient would make every weight NaN; `--max-nonfinite-steps` of them in a row stop the run.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .metrics import RunLog

ANOMALIES = RunLog("anomalies.jsonl")  # cut back with the other logs when a run resumes
BATCHES_FOLDER = "anomalies"


class TrainingDivergedError(RuntimeError):
    """The loss or the gradients stayed NaN or infinite for more steps in a row than the run allows."""


@dataclass
class SpikeDetector:
    """Flags a value far above its recent level: above the median of the last `window` values by more than
    `sigmas` robust standard deviations (1.4826 median absolute deviations) and by more than `ratio` of that
    median, once `warmup` values have been seen. The median follows a falling training loss within a few steps
    and ignores the spikes themselves; the deviation measures the noise of small batches, not the trend."""

    sigmas: float = 6.0
    ratio: float = 0.1
    window: int = 32
    warmup: int = 10
    recent: list[float] = field(default_factory=list)

    def update(self, value: float) -> float | None:
        """Take the next value; return the level it was expected near when it is a spike, else None."""
        if not math.isfinite(value):
            return None  # reported as non-finite, and kept out of the level
        spike = None
        if len(self.recent) >= self.warmup:
            level = statistics.median(self.recent)
            spread = 1.4826 * statistics.median(abs(seen - level) for seen in self.recent)
            if value > level + max(self.sigmas * spread, self.ratio * abs(level)):
                spike = level
        self.recent = [*self.recent[1 - self.window :], value]
        return spike

    def state_dict(self) -> dict[str, list[float]]:
        return {"recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.recent = [float(value) for value in state["recent"]]


@dataclass
class TrainingHealth:
    """Watches each step's loss and gradient norm; writes anomalies down (main process: the log; every process:
    its batch) and raises TrainingDivergedError after more than `max_nonfinite_steps` non-finite steps in a row."""

    output_dir: Path
    max_nonfinite_steps: int
    rank: int = 0
    is_main_process: bool = True
    loss: SpikeDetector = field(default_factory=SpikeDetector)
    # Gradient norms are heavy-tailed: twice the usual is common in a healthy run, five times is not.
    grad_norm: SpikeDetector = field(default_factory=lambda: SpikeDetector(ratio=4.0))
    nonfinite_in_a_row: int = 0
    first_nonfinite: dict | None = None
    _batch_written_at: int | None = None

    def check(
        self, step: int, loss: float, grad_norm: float | None, finite: bool, batches: list[torch.Tensor], position: dict
    ) -> list[str]:
        """Record what is wrong with this step (`finite`: its update was applied); return the warning lines."""
        found: list[tuple[str, float | None]] = []
        if not finite:
            found.append(("nonfinite", None))
        else:
            self.nonfinite_in_a_row, self.first_nonfinite = 0, None
        if (expected := self.loss.update(loss)) is not None:
            found.append(("loss-spike", expected))
        if grad_norm is not None and (expected := self.grad_norm.update(grad_norm)) is not None:
            found.append(("grad-norm-spike", expected))
        warnings = []
        for kind, expected in found:
            record = self._write(step, kind, loss, grad_norm, expected, batches, position)
            warnings.append(_describe(record))
        if not finite:
            self.nonfinite_in_a_row += 1
            self.first_nonfinite = self.first_nonfinite or record
            if self.nonfinite_in_a_row > self.max_nonfinite_steps:
                raise TrainingDivergedError(self._diverged_message(step, loss, grad_norm))
        return warnings

    def state_dict(self) -> dict:
        return {"loss": self.loss.state_dict(), "grad_norm": self.grad_norm.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.loss.load_state_dict(state["loss"])
        self.grad_norm.load_state_dict(state["grad_norm"])

    def _write(
        self,
        step: int,
        kind: str,
        loss: float,
        grad_norm: float | None,
        expected: float | None,
        batches: list[torch.Tensor],
        position: dict,
    ) -> dict:
        folder = self.output_dir / BATCHES_FOLDER
        batch_file = folder / f"step-{step:08d}-rank-{self.rank}.safetensors"
        relative = f"{BATCHES_FOLDER}/step-{step:08d}-rank-*.safetensors"
        record = {"step": step, "kind": kind, "loss": loss, "grad_norm": grad_norm, "expected": expected,
                  **position, "batches": relative}  # fmt: skip
        if self._batch_written_at != step:  # several anomalies of one step share its batch
            self._batch_written_at = step
            folder.mkdir(parents=True, exist_ok=True)
            tensors = {f"micro_batch_{index}": batch.detach().cpu().contiguous() for index, batch in enumerate(batches)}
            metadata = {key: str(value) for key, value in record.items() if key != "batches"}
            save_file(tensors, str(batch_file), metadata={**metadata, "rank": str(self.rank)})
        if self.is_main_process:
            ANOMALIES.append(self.output_dir, record)
        return record

    def _diverged_message(self, step: int, loss: float, grad_norm: float | None) -> str:
        first = self.first_nonfinite or {}
        allowed = self.max_nonfinite_steps
        return (
            f"The training loss is {loss} and the gradient norm {grad_norm} at step {step}: {self.nonfinite_in_a_row} "
            f"step(s) in a row were NaN or infinite (--max-nonfinite-steps {allowed}), the first at step "
            f"{first.get('step', step)}; stopping. Their batches are in "
            f"{str(self.output_dir / BATCHES_FOLDER)!r} (gpt1.anomalies.load_batch reads one back)."
        )


def _describe(record: dict) -> str:
    step, kind = record["step"], record["kind"]
    where = (
        f"epoch {record.get('epoch')}, {record.get('batches_in_epoch')} batches into it; its tokens are in "
        f"{record['batches']}"
    )
    if kind == "nonfinite":
        return (
            f"step {step}: the loss is {record['loss']} and the gradient norm {record['grad_norm']}; the update was "
            f"skipped ({where})."
        )
    name, value = ("loss", record["loss"]) if kind == "loss-spike" else ("gradient norm", record["grad_norm"])
    return f"step {step}: {name} spike, {value:.4g} where about {record['expected']:.4g} was expected ({where})."


def load_batch(batch_file: str | Path) -> list[torch.Tensor]:
    """The micro-batches (token ids) of an anomaly's step, as `TrainingHealth` wrote them, in order."""
    tensors = load_file(str(batch_file))
    return [tensors[f"micro_batch_{index}"] for index in range(len(tensors))]
