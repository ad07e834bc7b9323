"""Training checkpoints: save them atomically, find the latest, check and load one to resume, prune old
ones, and the fail points the crash-safety tests kill the run at.

A checkpoint is `checkpoints/step-N` in the run folder: Accelerate's `save_state` (model in
safetensors, optimizer, RNG states), TRAINER_STATE (the data position and the learning-rate schedule,
as JSON, so that resuming unpickles nothing) and TRAIN_CONFIG (the options of the run that wrote it).

The best weights so far (lowest validation loss) are `checkpoints/best/model.safetensors`, their step and
loss in the file's metadata; every checkpoint holds a hard link to the best weights of its moment
(BEST_IN_CHECKPOINT), so that a resumed run gets back the best that its checkpoint knew, never a newer one
written by the run that was stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .model_folders import EMBEDDING_MATRIX, give_normal_permissions

FAILPOINT_VARIABLE = "GPT1_FAILPOINT"
# The run's position and learning-rate schedule in each checkpoint, as JSON data.
TRAINER_STATE = "trainer_state.json"
TRAIN_CONFIG = "train_config.json"  # the options of the run, in the folder and in each checkpoint
BEST_WEIGHTS = Path("checkpoints") / "best" / "model.safetensors"  # in the run folder; never pruned
BEST_IN_CHECKPOINT = "best_model.safetensors"  # the best weights as the checkpoint's step knew them


@dataclass
class TrainingProgress:
    """Where the run is: saved with every checkpoint so that a resumed run continues on the same batch."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    tokens_seen: int = 0

    def state_dict(self) -> dict[str, int]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, int]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def failpoint(name: str, step: int) -> None:
    """Fault injection for the crash-safety tests: with GPT1_FAILPOINT="NAME@STEP" the run kills itself
    with SIGKILL on reaching that point, as `kill -9` or the OOM killer would. Unset, it does nothing.

    Points: "step" (after an optimizer step), "checkpoint-write" (mid-write), "checkpoint-written"
    (complete, not yet renamed), "checkpoint-renamed" (before old ones are pruned), "best-written" (new
    best weights complete, not yet renamed into place), "final-save".
    """
    if os.environ.get(FAILPOINT_VARIABLE) == f"{name}@{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def list_checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    return sorted(folder.glob("step-*")) if folder.is_dir() else []


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator, output_dir: Path, step: int, keep: int, trainer_state: dict) -> None:
    """Accelerate `save_state` into a temporary folder, then one rename: a checkpoint is complete or absent."""
    checkpoints = output_dir / "checkpoints"
    final, temporary = checkpoints / f"step-{step:08d}", checkpoints / f".tmp-step-{step:08d}"
    if accelerator.is_main_process:
        for half_written in checkpoints.glob(".tmp-step-*"):  # left by a run killed mid-write
            shutil.rmtree(half_written, ignore_errors=True)
        checkpoints.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # Weights, optimizer and RNG states are on disk, the run's position not yet: a kill here leaves a
        # genuinely half-written checkpoint, which the crash-safety test makes sure is never used.
        failpoint("checkpoint-write", step)
        (temporary / TRAINER_STATE).write_text(json.dumps(trainer_state) + "\n")
        if (output_dir / BEST_WEIGHTS).is_file():
            _link_or_copy(output_dir / BEST_WEIGHTS, temporary / BEST_IN_CHECKPOINT)
        # The options of the run that wrote this checkpoint travel with it, so a resume is told the right ones.
        shutil.copy2(output_dir / TRAIN_CONFIG, temporary / TRAIN_CONFIG)
        give_normal_permissions(temporary)
        failpoint("checkpoint-written", step)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        failpoint("checkpoint-renamed", step)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_trainer_state(checkpoint: Path, scheduler, progress: TrainingProgress, validation=None) -> None:
    """Put the checkpoint's JSON state into `scheduler`, `progress` and `validation` (the best evaluation
    so far: a `ValidationWatch`, absent from checkpoints written before gpt1 kept it)."""
    state_file = checkpoint / TRAINER_STATE
    if not state_file.is_file():
        raise ValueError(
            f"--resume: {str(checkpoint)!r} has no {TRAINER_STATE} (it was written by an older gpt1, or is not a "
            "gpt1 checkpoint), so the run's position is unknown. Start a new run in a fresh --output-dir."
        )
    state = json.loads(state_file.read_text())
    scheduler.load_state_dict(state["scheduler"])
    progress.load_state_dict(state["progress"])
    if validation is not None and "validation" in state:
        validation.load_state_dict(state["validation"])


def save_best_weights(output_dir: Path, weights: dict[str, torch.Tensor], step: int, val_loss: float) -> Path:
    """Write the best weights so far to BEST_WEIGHTS, atomically: a temporary file, then one rename over
    the previous best (a kill at any moment leaves the old best or the new one, whole). `weights` is a
    state dict without tied copies; the step and validation loss go into the file's metadata."""
    target = output_dir / BEST_WEIGHTS
    temporary = target.with_name(f".tmp-{target.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in weights.items()}
    save_file(tensors, str(temporary), metadata={"format": "pt", "step": str(step), "val_loss": repr(val_loss)})
    give_normal_permissions(temporary.parent)
    failpoint("best-written", step)
    os.replace(temporary, target)
    return target


def best_weights_step(output_dir: Path) -> tuple[int, float] | None:
    """The step and validation loss of the best weights on disk, or None when there are none."""
    path = output_dir / BEST_WEIGHTS
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as saved:
        metadata = saved.metadata() or {}
    return int(metadata["step"]), float(metadata["val_loss"])


def load_best_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output_dir / BEST_WEIGHTS))


def restore_best_weights(checkpoint: Path | None, output_dir: Path) -> None:
    """As a run starts, the best weights that its `checkpoint` knew become the run's best again (a stopped
    run may have written a newer best after its last checkpoint, which the resumed run has not reached);
    a run starting from scratch has none."""
    target = output_dir / BEST_WEIGHTS
    kept = checkpoint / BEST_IN_CHECKPOINT if checkpoint is not None else None
    if kept is None or not kept.is_file():  # no evaluation before this checkpoint: no best yet
        target.unlink(missing_ok=True)
        return
    temporary = target.with_name(f".tmp-{target.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary.unlink(missing_ok=True)
    _link_or_copy(kept, temporary)
    os.replace(temporary, target)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no second copy on disk; the best file is replaced by rename, never written in place,
    so the link keeps the old content), or a copy where the file system has no hard links."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def check_resumable(checkpoint: Path, model: torch.nn.Module) -> None:
    """A clear error, before anything is written, when the checkpoint holds a different model than the
    options describe (Accelerate would stop with a long state-dict error deep in loading)."""
    weights = checkpoint / "model.safetensors"
    if not weights.is_file():
        return  # sharded or otherwise saved: leave it to Accelerate
    with safe_open(str(weights), framework="pt") as saved:
        saved_shapes = {name: tuple(saved.get_slice(name).get_shape()) for name in saved.keys()}  # noqa: SIM118
    rows = saved_shapes.get(EMBEDDING_MATRIX, (0,))[0]
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab_size is not None and rows > vocab_size:
        raise ValueError(
            f"--resume: the checkpoint {str(checkpoint)!r} was written by gpt1 before 0.2, which kept {rows} "
            f"embedding rows for vocab_size {vocab_size} (padding), and its optimizer state has that shape too, so "
            "this gpt1 cannot continue it. Finish the run with the gpt1 that started it, or upgrade a finished "
            "folder with `gpt1 convert OLD NEW` and train on from it with --init-from NEW."
        )
    built_shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing = sorted(set(built_shapes) - set(saved_shapes) - {"lm_head.weight"})  # the tied head is not saved
    different = [
        f"{name} {saved_shapes[name]} vs {shape}"
        for name, shape in built_shapes.items()
        if name in saved_shapes and saved_shapes[name] != shape
    ]
    if missing or different:
        details = ", ".join(different[:2] + [f"{name} missing" for name in missing[:2]])
        raise ValueError(
            f"--resume: the checkpoint {str(checkpoint)!r} holds a different model than these options build "
            f"({details}). Resume with the options of the run that wrote it (saved in "
            f"{str(checkpoint / TRAIN_CONFIG)!r}), or train into a new --output-dir."
        )


def drop_tied_copies(models: list, weights: list[dict], output_dir: str) -> None:
    """Checkpoints keep one copy of tied weights, as `save_pretrained` does. (Accelerate would drop the
    copy itself, with a warning asking the user to check the reload; loading ties it back.)"""
    for state in weights:
        seen: set[int] = set()
        for key, tensor in list(state.items()):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage().data_ptr()
                if storage in seen:
                    del state[key]  # a later name of an earlier tensor: lm_head.weight
                seen.add(storage)
