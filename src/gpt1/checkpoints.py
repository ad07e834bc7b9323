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

import errno
import json
import os
import shutil
import signal
import time
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
FINISHED = "finished.json"  # in the run folder, written last: the run trained to its end and saved its model


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
    """Fault injection for the fault-tolerance tests: GPT1_FAILPOINT="NAME@STEP[:ACTION][:rank=R]" (several,
    comma-separated) makes the run fail at that point as a real machine would. Unset, it does nothing.

    Points: "step" (after an optimizer step), "checkpoint-begin" (the temporary folder made, nothing written),
    "checkpoint-write" (mid-write), "checkpoint-written" (complete, not yet renamed), "checkpoint-renamed" (before
    old ones are pruned), "best-write" and "best-written" (new best weights before and after writing, not yet
    renamed into place), "final-save" (before the final folder is written), "final-weights" and "final-card"
    (the final folder's weights, then its model card, written into its temporary folder).

    Actions: "kill" (the default) sends SIGKILL, as `kill -9` or the out-of-memory killer would; "enospc" raises
    the OSError of a full disk; "sigterm" and "sigint" send the process that signal, as a scheduler or Ctrl-C
    would; "sleep=S" waits S seconds there (a slow disk; or a second signal later than the first by more than
    `stopping.REPEAT_WINDOW_S`). "rank=R" limits the fault to process R of a distributed run (default: every
    process). Several faults at one point happen in the order given.
    """
    for spec in filter(None, os.environ.get(FAILPOINT_VARIABLE, "").split(",")):
        where, *options = spec.strip().split(":")
        if where != f"{name}@{step}":
            continue
        ranks = [option.removeprefix("rank=") for option in options if option.startswith("rank=")]
        if ranks and ranks[0] != os.environ.get("RANK", "0"):
            continue
        action = next((option for option in options if not option.startswith("rank=")), "kill")
        if action.startswith("sleep="):
            time.sleep(float(action.removeprefix("sleep=")))
        elif action == "enospc":
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({FAILPOINT_VARIABLE}={spec})")
        else:
            os.kill(os.getpid(), {"kill": signal.SIGKILL, "sigterm": signal.SIGTERM, "sigint": signal.SIGINT}[action])


class DiskFullError(OSError):
    """A write failed for want of space (or quota); the message says what was being written, how much it needs
    and what is free."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full_error(error: OSError, folder: Path, writing: str, needed_bytes: int, then: str) -> DiskFullError:
    """The error to stop with when writing `writing` into `folder` ran out of space: how much it needs (about
    `needed_bytes`), what is free now, and `then`, what is left intact and how to go on."""
    try:
        free = f"{_megabytes(shutil.disk_usage(folder).free)} free now"
    except OSError:
        free = "free space unknown"
    reason = "the disk quota is used up" if error.errno == errno.EDQUOT else "the disk is full"
    full = DiskFullError(
        f"{reason} while writing {writing} in {str(folder)!r}: it needs about {_megabytes(needed_bytes)} "
        f"({free}; {error.strerror or error}). {then}"
    )
    full.errno = error.errno  # (set apart: OSError(errno, text) would print "[Errno 28]" before the text)
    return full


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under `folder` (hard links counted in full)."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _megabytes(count: int) -> str:
    return f"{count / 2**20:,.1f} MB"


def list_checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    return sorted(folder.glob("step-*")) if folder.is_dir() else []


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(
    accelerator, output_dir: Path, step: int, keep: int, trainer_state: dict, weight_bytes: int
) -> Path:
    """Accelerate `save_state` into a temporary folder, then one rename: a checkpoint is complete or absent.

    A full disk (on any process) removes the partial checkpoint and raises DiskFullError on every process, saying
    how much a checkpoint needs: the previous one's size, or about three times `weight_bytes` (the weights and
    AdamW's two moments) for the first."""
    checkpoints = output_dir / "checkpoints"
    final, temporary = checkpoints / f"step-{step:08d}", checkpoints / f".tmp-step-{step:08d}"
    previous = latest_checkpoint(output_dir)
    failure: OSError | None = None
    try:
        if accelerator.is_main_process:
            for half_written in checkpoints.glob(".tmp-step-*"):  # left by a run killed mid-write
                shutil.rmtree(half_written, ignore_errors=True)
            temporary.mkdir(parents=True)
            failpoint("checkpoint-begin", step)
    except OSError as error:
        if not is_disk_full(error):
            raise
        failure = error
    accelerator.wait_for_everyone()  # the folder is made and empty before any process writes into it
    try:
        if failure is None:
            accelerator.save_state(str(temporary))
        if accelerator.is_main_process and failure is None:
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
    except OSError as error:
        if not is_disk_full(error):
            raise
        failure = error
    if any_process(accelerator, failure is not None):
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        needed = folder_bytes(previous) if previous is not None else 3 * weight_bytes
        then = "The partial checkpoint is removed; " + (
            f"the previous one, {previous.name}, is intact: free some space and resume with --resume."
            if previous is not None
            else "no checkpoint was written before it: free some space and train again."
        )
        cause = failure or OSError(errno.ENOSPC, "another process of the run ran out of space")
        raise disk_full_error(cause, checkpoints, f"checkpoint {final.name}", needed, then) from None
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        failpoint("checkpoint-renamed", step)
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def any_process(accelerator, flag: bool) -> bool:
    """Whether `flag` is true on any process of the run (a collective call: every process must make it)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor(float(flag), device=accelerator.device), reduction="sum").item() > 0)


def load_trainer_state(checkpoint: Path, scheduler, progress: TrainingProgress, validation=None, health=None) -> None:
    """Put the checkpoint's JSON state into `scheduler`, `progress`, `validation` (the best evaluation so far: a
    `ValidationWatch`) and `health` (the loss and gradient-norm levels: a `TrainingHealth`); the last two are
    absent from checkpoints written before gpt1 kept them."""
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
    if health is not None and "health" in state:
        health.load_state_dict(state["health"])


def save_best_weights(output_dir: Path, weights: dict[str, torch.Tensor], step: int, val_loss: float) -> Path:
    """Write the best weights so far to BEST_WEIGHTS, atomically: a temporary file, then one rename over
    the previous best (a kill at any moment leaves the old best or the new one, whole). `weights` is a
    state dict without tied copies; the step and validation loss go into the file's metadata."""
    target = output_dir / BEST_WEIGHTS
    temporary = target.with_name(f".tmp-{target.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in weights.items()}
    try:
        failpoint("best-write", step)
        save_file(tensors, str(temporary), metadata={"format": "pt", "step": str(step), "val_loss": repr(val_loss)})
        give_normal_permissions(temporary.parent)
        failpoint("best-written", step)
    except OSError as error:
        if not is_disk_full(error):
            raise
        temporary.unlink(missing_ok=True)
        needed = sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
        last = latest_checkpoint(output_dir)
        then = "The partial file is removed; " + (
            f"the previous best weights and the checkpoint {last.name} are intact: free some space and resume "
            "with --resume."
            if last is not None
            else "no checkpoint was written yet: free some space and train again."
        )
        raise disk_full_error(error, target.parent, "the best weights so far", needed, then) from None
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
