"""The train/validation gap: the best evaluation so far, the line that says when the model starts to
memorise its training text, early stopping, and where a finished run's validation loss stopped improving.

One rule throughout: an evaluation is a new best when its validation loss is lower than every earlier
one. A later evaluation that is no new best while its training loss is lower than at the best one means
the model is learning its training text rather than the language: it memorises.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Verdict:
    """What one evaluation means for the run: a new best (keep its weights), a line to print, stop or not."""

    new_best: bool
    message: str | None = None
    stop: bool = False


@dataclass
class ValidationWatch:
    """The best evaluation so far and the evaluations since, updated after each evaluation. Its state goes
    into every checkpoint (as JSON), so a resumed run knows its best and how long it has waited for a
    better one. Every process of a multi-process run holds the same one, updated with the same (gathered)
    validation loss, so all of them agree on new bests and on stopping."""

    best_step: int | None = None
    best_val_loss: float = math.inf
    best_train_loss: float = math.inf
    evaluations_since_best: int = 0
    evaluations: int = 0
    warned: bool = False  # the memorising line was printed in this stretch without a new best

    def update(self, step: int, train_loss: float, val_loss: float, patience: int | None = None) -> Verdict:
        self.evaluations += 1
        if val_loss < self.best_val_loss:
            message = None
            if self.warned:
                message = (
                    f"validation loss {val_loss:.4f} is a new best at step {step}, after "
                    f"{_evaluations(self.evaluations_since_best)} without one."
                )
            self.best_step, self.best_val_loss, self.best_train_loss = step, val_loss, train_loss
            self.evaluations_since_best, self.warned = 0, False
            return Verdict(new_best=True, message=message)
        self.evaluations_since_best += 1
        message = None
        if not self.warned and train_loss < self.best_train_loss:
            self.warned = True
            message = (
                f"validation loss {val_loss:.4f} has not improved on {self.best_val_loss:.4f} (step {self.best_step}) "
                f"for {_evaluations(self.evaluations_since_best)} while training loss fell "
                f"{self.best_train_loss:.4f} → {train_loss:.4f}: the model is memorising the training text"
                + (
                    f" (--early-stopping-patience {patience} stops the run after {_evaluations(patience)} "
                    "without a new best)."
                    if patience
                    else " (see --early-stopping-patience)."
                )
            )
        if patience is not None and self.evaluations_since_best >= patience:
            stop = (
                f"Early stopping at step {step}: validation loss has not improved on {self.best_val_loss:.4f} "
                f"(step {self.best_step}) for {_evaluations(self.evaluations_since_best)} "
                f"(--early-stopping-patience {patience})."
            )
            return Verdict(new_best=False, message=stop if message is None else f"{message}\n{stop}", stop=True)
        return Verdict(new_best=False, message=message)

    def state_dict(self) -> dict[str, Any]:
        state = asdict(self)
        # JSON has no infinity: before the first evaluation there is no best yet.
        return {key: None if value == math.inf else value for key, value in state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, math.inf if value is None and key in ("best_val_loss", "best_train_loss") else value)


def turning_point(records: list[dict]) -> dict | None:
    """The evaluation where validation loss stopped improving while training loss kept falling: the one
    with the lowest validation loss, when a later one has a higher validation loss at a lower training
    loss. None for a run whose validation loss is lowest at its last evaluation (still improving)."""
    if not records:
        return None
    best = min(records, key=lambda record: record["val_loss"])  # the first of equals
    later = records[records.index(best) + 1 :]
    memorising = any(
        record["val_loss"] > best["val_loss"] and record["train_loss"] < best["train_loss"] for record in later
    )
    return best if memorising else None


def _evaluations(count: int) -> str:
    return f"{count} evaluation" + ("" if count == 1 else "s")
