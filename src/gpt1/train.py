"""Pretraining with Accelerate: one loop for one CPU, one GPU, DDP/FSDP and several machines.

gpt1 train [--dataset ...] [--preset tiny|small|gpt1] [--output-dir runs/gpt1-tiny] ...
accelerate launch -m gpt1 train ...
torchrun --nproc_per_node 2 -m gpt1 train ...
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, DistributedType, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .anomalies import ANOMALIES, TrainingDivergedError, TrainingHealth
from .checkpoints import (
    BEST_WEIGHTS,
    FINISHED,
    TRAIN_CONFIG,
    TrainingProgress,
    any_process,
    best_weights_step,
    check_resumable,
    disk_full_error,
    drop_tied_copies,
    failpoint,
    is_disk_full,
    latest_checkpoint,
    list_checkpoints,
    load_best_weights,
    load_trainer_state,
    restore_best_weights,
    save_best_weights,
    save_checkpoint,
)
from .data import Corpus, hub_dataset_id, load_corpus, pack_corpus
from .hub import push_folder
from .metrics import METRICS, SAMPLES, restart_logs
from .model import GPT1Config, GPT1ForCausalLM
from .model.modeling_gpt1 import torch_compile_available
from .model_folders import give_normal_permissions, load_model, load_tokenizer
from .options import COMPILE_PAYS_FROM_STEPS, TrainConfig
from .overfitting import ValidationWatch
from .reporting import write_loss_curve, write_model_card
from .run_lock import RUN_LOCK, FolderInUseError, RunLock
from .sources import check_folder_or_hub_repo
from .stopping import StopSignals, TrainingStopped, resume_command
from .tokenization import TOKENIZER_KINDS, pair_tokenizer_with_model, train_tokenizer, vocabulary_coverage

logger = logging.getLogger(__name__)

STREAM_SHUFFLE_BUFFER = 10_000  # blocks
# Evaluation keeps no activations for a backward pass, so it runs the same validation rows (`--eval-batches`
# training batches' worth) in batches this many times larger: fewer, fuller matrix multiplies, faster.
EVAL_BATCH_MULTIPLE = 4
STREAM_TOKENIZER_ROWS = 100_000
FINAL_STAGING = ".tmp-final"  # the final folder's files are written here, then moved into place

__all__ = ["TrainConfig", "TrainingDivergedError", "TrainingStopped", "train"]


def train(config: TrainConfig) -> Path:
    """Train a GPT-1 as `config` says and return the output folder (a shareable HF model folder).

    One run per folder: the output folder is locked while the run lasts (`RunLock`). SIGTERM and SIGINT stop it
    after the current step with a checkpoint, raising `TrainingStopped`; a second signal stops it at once."""
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(
        cpu=_distributed_on_cpu(),
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=config.report_to or None,
        project_dir=str(output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    accelerator.register_save_state_pre_hook(drop_tied_copies)
    _check_fsdp(accelerator)
    set_seed(config.seed)
    with contextlib.ExitStack() as held:
        _lock_output_dir(accelerator, output_dir, held)
        stop = held.enter_context(StopSignals("training"))
        _claim_output_dir(output_dir, config, accelerator)
        return _train(config, accelerator, output_dir, stop)
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions, this one never does


def _train(config: TrainConfig, accelerator: Accelerator, output_dir: Path, stop: StopSignals) -> Path:
    """The run itself, in its locked folder."""
    checkpoint = _checkpoint_to_resume(config, output_dir)

    with accelerator.main_process_first():
        corpus = load_corpus(
            config.dataset,
            dataset_config=config.dataset_config,
            split=config.split,
            text_column=config.text_column,
            val_fraction=config.val_fraction,
            streaming=config.streaming,
        )
        tokenizer = _tokenizer(config, corpus, output_dir, resuming=checkpoint is not None)
        model = _model(config, tokenizer)
        pair_tokenizer_with_model(tokenizer, model)
        if checkpoint is not None:
            check_resumable(checkpoint, model)
        tokenizer.model_max_length = model.config.n_positions
        packed = pack_corpus(corpus, tokenizer, block_size=config.block_size)

    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(output_dir)
        (output_dir / TRAIN_CONFIG).write_text(json.dumps(asdict(config), indent=2) + "\n")

    train_blocks = packed["training"].with_format("torch")
    val_blocks = packed["validation"].with_format("torch")
    if config.streaming:
        # A stream cannot be permuted: shuffle within a buffer, reshuffled each epoch by set_epoch.
        train_blocks = train_blocks.shuffle(seed=config.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
    train_loader = DataLoader(train_blocks, batch_size=config.batch_size, shuffle=not config.streaming, drop_last=True)
    eval_multiple = _eval_batch_multiple(config.eval_batches)
    val_loader = DataLoader(val_blocks, batch_size=config.batch_size * eval_multiple)
    if not config.streaming and len(train_loader) == 0:
        raise ValueError(
            f"The training text makes {len(train_blocks)} blocks, fewer than one batch of {config.batch_size}. "
            "Use more text or a smaller --batch-size."
        )

    optimizer = torch.optim.AdamW(
        _parameter_groups(model, config.weight_decay),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        # One fused kernel per step instead of a chain of foreach ops, on CPU and CUDA (the README's
        # Performance section has the measured gain).
        fused=accelerator.device.type in ("cpu", "cuda"),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    progress, watch = TrainingProgress(), ValidationWatch()
    main = accelerator.is_main_process
    health = TrainingHealth(output_dir, config.max_nonfinite_steps, accelerator.process_index, main)
    # The scheduler is stepped by hand once per optimizer step (a prepared one steps once per process).
    # It, `progress` and `watch` (the best evaluation so far) are saved as JSON (TRAINER_STATE), not
    # registered with Accelerate, which would pickle them and unpickle them with weights_only=False: a
    # checkpoint must not be able to run code.
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        load_trainer_state(checkpoint, scheduler, progress, watch, health)
        accelerator.print(f"Resumed from {checkpoint} at step {progress.step}.")
    elif config.resume:
        accelerator.print(f"No checkpoint in {output_dir / 'checkpoints'}; starting from scratch.")
    # The training forward runs compiled; evaluation, samples and saving use the model itself (whose state dict
    # has no `_orig_mod.` prefixes, and whose generate would otherwise recompile for every new length).
    training_forward = model
    if _compiles(config, accelerator.device):
        training_forward = torch.compile(model)
        accelerator.print(f"Compiling the training step (--compile {config.compile}); the first steps wait for it.")
    accelerator.print(_plan(config, model, train_blocks, val_blocks, accelerator.num_processes, output_dir))
    accelerator.init_trackers("gpt1", config={k: v for k, v in asdict(config).items() if not isinstance(v, list)})

    if accelerator.is_main_process:
        restart_logs(output_dir, resumed_at_step=progress.step if checkpoint is not None else None)
        ANOMALIES.restart(output_dir, resumed_at_step=progress.step if checkpoint is not None else None)
        restore_best_weights(checkpoint, output_dir)
    if signals := _stop_signals(accelerator, stop):
        last = latest_checkpoint(output_dir)
        raise TrainingStopped(_stopped_message(signals, progress.step, config, last, started=False))
    _run(
        accelerator,
        config,
        model,
        training_forward,
        optimizer,
        scheduler,
        loaders=(train_loader, val_loader),
        tokenizer=tokenizer,
        progress=progress,
        watch=watch,
        health=health,
        stop=stop,
        output_dir=output_dir,
    )

    accelerator.wait_for_everyone()
    failpoint("final-save", progress.step)
    final_model = _gathered_model(accelerator, model)
    if accelerator.is_main_process:
        kept_step = _keep_final_weights(config, final_model, output_dir, watch, progress.step)

        def write_card() -> None:  # the loss curve is already drawn: the last step always evaluates
            write_model_card(
                output_dir,
                final_model,
                corpus.description,
                progress.step,
                progress.tokens_seen,
                dataset_id=hub_dataset_id(config.dataset),
                repo_id=config.push_to_hub,
                weights_step=kept_step,
                max_steps=config.max_steps,
            )

        _save_final_folder(output_dir, final_model, write_card, progress.step)
        _write_finished(output_dir, progress.step, config.max_steps, kept_step)
        accelerator.print(_kept_line(output_dir, kept_step, watch))
        if config.push_to_hub:
            accelerator.print(f"Pushed to {push_folder(output_dir, config.push_to_hub)}")
    # end_training destroys the process group: every process gets there together, none while another still
    # writes the final folder (gloo can then wait forever on the other's connections).
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir


def _run(
    accelerator: Accelerator,
    config: TrainConfig,
    model: torch.nn.Module,
    training_forward: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    loaders: tuple[DataLoader, DataLoader],
    tokenizer: PreTrainedTokenizerBase,
    progress: TrainingProgress,
    watch: ValidationWatch,
    health: TrainingHealth,
    stop: StopSignals,
    output_dir: Path,
) -> None:
    """The loop: optimizer steps until `config.max_steps` (or early stopping), evaluating, sampling, keeping
    the best weights and checkpointing as it goes; after a step during which a stop was asked for (on any
    process), a checkpoint, then TrainingStopped."""
    train_loader, val_loader = loaders
    batches = _batches(accelerator, train_loader, progress)
    # Closed however the loop ends, so that its last line comes before what the run says next (an error included).
    with tqdm(
        total=config.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process, desc="train"
    ) as bar:
        tokens_per_step = config.batch_size * config.block_size * config.grad_accum * accelerator.num_processes
        started, steps_timed = time.perf_counter(), 0
        model.train()
        while progress.step < config.max_steps:
            loss_sum = torch.zeros((), device=accelerator.device)
            step_batches = []
            for _ in range(config.grad_accum):
                input_ids = next(batches)
                step_batches.append(input_ids)
                with accelerator.accumulate(model):
                    loss = training_forward(input_ids=input_ids, labels=input_ids).loss
                    accelerator.backward(loss)
                loss_sum += loss.detach()
            step_loss = accelerator.reduce(loss_sum / config.grad_accum, reduction="mean").item()
            grad_norm = _gradient_norm(accelerator, model, config.grad_clip)
            # A NaN or infinite gradient would make every weight NaN: skip that update. (With fp16 the gradient
            # scaler skips the steps whose scaled gradients overflow, and finds its scale that way: only the loss
            # counts.)
            finite = math.isfinite(step_loss) and (
                grad_norm is None or math.isfinite(grad_norm) or accelerator.scaler is not None
            )
            if finite:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            progress.step += 1
            failpoint("step", progress.step)
            position = {"epoch": progress.epoch, "batches_in_epoch": progress.batches_in_epoch}
            try:
                warnings = health.check(progress.step, step_loss, grad_norm, finite, step_batches, position)
            except TrainingDivergedError as error:
                last = latest_checkpoint(output_dir)  # the skipped steps left the weights as they were: it is good
                raise TrainingDivergedError(
                    f"{error} "
                    + (f"The last checkpoint is {last}." if last else "No checkpoint was written yet.")
                    + " Lower --lr, use --grad-clip, or check the data."
                ) from None
            for warning in warnings:
                if accelerator.is_main_process:
                    bar.write(f"Warning: {warning}")
            progress.tokens_seen += tokens_per_step
            steps_timed += 1
            tokens_per_s = steps_timed * tokens_per_step / (time.perf_counter() - started)
            learning_rate = scheduler.get_last_lr()[0]
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", grad_norm=f"{grad_norm or math.nan:.2f}",
                            lr=f"{learning_rate:.2e}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)  # fmt: skip

            if progress.step % config.eval_every == 0 or progress.step == config.max_steps:
                eval_batches = config.eval_batches // _eval_batch_multiple(config.eval_batches)
                val_loss = _evaluate(accelerator, model, val_loader, eval_batches)
                record = {
                    "step": progress.step,
                    "train_loss": step_loss,
                    "val_loss": val_loss,
                    "val_perplexity": math.exp(min(val_loss, 50.0)),
                    "grad_norm": grad_norm,
                    "lr": learning_rate,
                    "tokens_per_s": tokens_per_s,
                    "tokens_seen": progress.tokens_seen,
                }
                accelerator.log(record, step=progress.step)
                # Under FSDP every forward gathers the weights from all processes, so all of them sample, in step
                # (synced_gpus); elsewhere the main process alone does.
                fsdp = accelerator.distributed_type == DistributedType.FSDP
                if accelerator.is_main_process or fsdp:
                    sample = _sample(accelerator.unwrap_model(model), tokenizer, config, synced=fsdp)
                # Every process gets the same gathered val_loss, so the same verdict: they agree on new bests
                # (which FSDP gathers collectively) and on stopping.
                verdict = watch.update(progress.step, step_loss, val_loss, config.early_stopping_patience)
                if verdict.new_best:
                    _save_best_weights(accelerator, model, output_dir, progress.step, val_loss)
                if accelerator.is_main_process:
                    bar.write(
                        f"step {progress.step}: train {step_loss:.4f}, val {val_loss:.4f} "
                        f"(ppl {record['val_perplexity']:.2f})\n--- sample ---\n{sample}\n--------------"
                    )
                    if verdict.message:
                        bar.write(verdict.message)
                    METRICS.append(output_dir, record)
                    SAMPLES.append(
                        output_dir,
                        {"step": progress.step, "train_loss": step_loss, "val_loss": val_loss,
                         "prompt": config.sample_prompt, "text": sample},
                    )  # fmt: skip
                    write_loss_curve(output_dir)
                model.train()
                if verdict.stop:
                    break
            if progress.step >= config.max_steps:
                break  # the final save follows, whether a stop was asked for or not
            # Whether any process was asked to stop (a signal reaches the processes of a run at different moments):
            # all of them stop after the same step.
            stop_asked = _stop_signals(accelerator, stop)
            if progress.step % config.save_every == 0 or stop_asked:
                trainer_state = {
                    "progress": progress.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "validation": watch.state_dict(),
                    "health": health.state_dict(),
                }
                saved = save_checkpoint(
                    accelerator, output_dir, progress.step, config.keep_checkpoints, trainer_state, _weight_bytes(model)
                )
                if stop_asked:
                    raise TrainingStopped(_stopped_message(stop_asked, progress.step, config, saved, started=True))


def _gradient_norm(accelerator: Accelerator, model: torch.nn.Module, grad_clip: float) -> float | None:
    """The norm of the step's whole gradient, clipped to `grad_clip` when that is positive (measured all the same
    when it is not: a spike in it is the first sign of a run going wrong); None where Accelerate does not say
    (DeepSpeed clips inside its own engine)."""
    norm = accelerator.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    return float(norm) if norm is not None else None


def _weight_bytes(model: torch.nn.Module) -> int:
    """The bytes of the model's parameters (a tied matrix once)."""
    return sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())


def _stop_signals(accelerator: Accelerator, stop: StopSignals) -> list[str]:
    """The names of the stop signals the run's processes have received (a collective call): a signal reaches the
    processes of a run at different moments, or one of them only, and all of them must stop after the same step."""
    received = accelerator.gather(torch.tensor([stop.signal or 0], device=accelerator.device))
    return sorted({signal.Signals(number).name for number in received.tolist() if number})


def _stopped_message(signals: list[str], step: int, config: TrainConfig, checkpoint: Path | None, started: bool) -> str:
    """What a stopped run says: where it stopped, what is saved, and the command that resumes it."""
    resume = resume_command("train", ["--output-dir", config.output_dir])
    when = f"after step {step:,} of {config.max_steps:,}" if started else f"before training (at step {step:,})"
    saved = f"The checkpoint is {checkpoint}." if checkpoint is not None else "No checkpoint was written yet."
    return f"Stopped by {' and '.join(signals)} {when}. {saved} Resume with: {resume}"


def _batches(accelerator, loader, progress: TrainingProgress):
    """Batches forever, epoch after epoch, starting where `progress` says (a resumed run skips what was seen)."""
    while True:
        loader.set_epoch(progress.epoch)
        epoch_loader = accelerator.skip_first_batches(loader, progress.batches_in_epoch)
        # Starting an epoch draws a seed from the global RNG, which dropout also uses. Keep that draw
        # off the global RNG, so that a run resumed mid-epoch sees the same dropout as one never stopped.
        with torch.random.fork_rng(devices=[]):
            batches = iter(epoch_loader)
            first = next(batches, None)
        if first is not None:
            for batch in itertools.chain([first], batches):
                progress.batches_in_epoch += 1
                yield batch["input_ids"]
        progress.epoch += 1
        progress.batches_in_epoch = 0


@torch.no_grad()
def _eval_batch_multiple(eval_batches: int) -> int:
    """How many training batches each evaluation batch holds: up to EVAL_BATCH_MULTIPLE, and a divisor of
    --eval-batches, so that an evaluation reads exactly the rows --eval-batches training batches would, on any
    number of processes (each takes whole batches in turn)."""
    return max(multiple for multiple in range(1, EVAL_BATCH_MULTIPLE + 1) if eval_batches % multiple == 0)


def _evaluate(accelerator, model, loader, max_batches: int) -> float:
    """The mean validation loss over the rows of the first `max_batches` batches."""
    model.eval()
    losses = []
    for index, batch in enumerate(loader):
        if index >= max_batches:
            break
        input_ids = batch["input_ids"]
        loss = model(input_ids=input_ids, labels=input_ids, skip_logits=True).loss  # no [batch, seq, vocab] logits
        # The batch's mean once per row (every block has the same number of targets), so that the mean is over
        # rows whatever the batch sizes: a short last batch counts for its rows, not as much as a full one. Under
        # DDP, gather_for_metrics drops the entries of the rows repeated to even out the last batches; their
        # losses are still inside that batch's mean (a bias of at most one batch's worth, in the last batch).
        losses.append(accelerator.gather_for_metrics(loss.detach().expand(input_ids.shape[0])))
    return torch.cat(losses).mean().item()


@torch.no_grad()
def _sample(model, tokenizer: PreTrainedTokenizerBase, config: TrainConfig, synced: bool = False) -> str:
    """A sample from the prompt, drawn with its own seed so that the run's random state is untouched
    (a resumed run must see the same random numbers as an uninterrupted one). `synced`: every process
    generates together and none stops before the others (FSDP's forwards are collective)."""
    model.eval()
    prompt = tokenizer(config.sample_prompt, return_tensors="pt").input_ids.to(model.device)
    if prompt.shape[1] == 0:
        prompt = torch.tensor([[tokenizer.eos_token_id]], device=model.device)
    room = model.config.n_positions - prompt.shape[1]
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        output = model.generate(
            prompt,
            max_new_tokens=max(0, min(config.sample_tokens, room)),
            do_sample=True,
            top_k=40,
            pad_token_id=tokenizer.pad_token_id,
            synced_gpus=synced,
        )
    return str(tokenizer.decode(output[0], skip_special_tokens=True))


def _plan(config: TrainConfig, model, train_blocks, val_blocks, processes: int, output_dir: Path) -> str:
    """One line saying, before the first step, what the run will do and where it goes."""
    parameters = sum(parameter.numel() for parameter in model.parameters())  # a tied matrix counts once
    per_step = config.batch_size * config.grad_accum * processes * config.block_size
    if config.streaming:
        data = "streamed text"
    else:
        train_tokens, val_tokens = len(train_blocks) * config.block_size, len(val_blocks) * config.block_size
        data = f"{train_tokens:,} training and {val_tokens:,} validation tokens"
        data += f" ({config.max_steps * per_step / max(train_tokens, 1):.1f} epochs)"
    return (
        f"Training {parameters / 1e6:.2f}M parameters ({config.n_layer} layers × {config.n_embd} wide) on {data}: "
        f"{config.max_steps:,} steps of {per_step:,} tokens, into {output_dir}."
    )


def _claim_output_dir(output_dir: Path, config: TrainConfig, accelerator: Accelerator) -> None:
    """Refuse to train into a folder that holds something, unless told to continue it or to replace it.

    A new run into an old run's folder would overwrite its model and mix its checkpoints and metrics
    with the new ones. `--resume` continues the folder's run; `--overwrite` deletes the folder first.
    """
    held = sorted(entry.name for entry in output_dir.iterdir() if entry.name != RUN_LOCK) if output_dir.is_dir() else []
    if not held or config.resume:
        return
    if not config.overwrite:
        what = []
        if (output_dir / "model.safetensors").exists() or (output_dir / "model.safetensors.index.json").exists():
            what.append("a trained model")
        if checkpoints := list_checkpoints(output_dir):
            what.append(f"{len(checkpoints)} checkpoint(s), the latest {checkpoints[-1].name}")
        described = " and ".join(what) or f"{len(held)} file(s): {', '.join(held[:4])}"
        raise ValueError(
            f"--output-dir {str(output_dir)!r} already holds {described}. Pass --resume to continue that run from "
            "its latest checkpoint, --overwrite to delete it and start again, or choose another --output-dir."
        )
    if accelerator.is_main_process:
        accelerator.print(f"--overwrite: deleting the run in {output_dir} before starting.")
        for entry in output_dir.iterdir():  # all but this run's lock
            if entry.name == RUN_LOCK:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    accelerator.wait_for_everyone()


def _lock_output_dir(accelerator: Accelerator, output_dir: Path, held: contextlib.ExitStack) -> None:
    """One run per folder: the main process takes the folder's RunLock until the run ends, and every process
    learns whether it could (the others would otherwise wait for it forever)."""
    refused: FolderInUseError | None = None
    if accelerator.is_main_process:
        lock = RunLock(output_dir)
        try:
            held.enter_context(lock)
        except FolderInUseError as error:
            refused = error
        else:
            if stale := lock.stale_message():
                accelerator.print(stale)
    if any_process(accelerator, refused is not None):
        raise refused or FolderInUseError(
            f"--output-dir {str(output_dir)!r} is in use by another gpt1 run (the main process names it)."
        )


def _checkpoint_to_resume(config: TrainConfig, output_dir: Path) -> Path | None:
    """The checkpoint `--resume` continues from (None: start from scratch); a clear error for a run that has
    already finished its --max-steps, where there is nothing to resume."""
    if not config.resume:
        return None
    finished = read_finished(output_dir)
    if finished is not None and config.max_steps <= finished["max_steps"]:
        early = " (stopped early)" if finished["step"] < finished["max_steps"] else ""
        raise ValueError(
            f"--resume: the run in {str(output_dir)!r} has finished: it trained to step {finished['step']:,} of "
            f"--max-steps {finished['max_steps']:,}{early}, and its model is saved there. To train it further, raise "
            f"--max-steps, or start a new run from its weights: gpt1 train --init-from {output_dir} --output-dir NEW."
        )
    return latest_checkpoint(output_dir)


def _save_final_folder(output_dir: Path, model: PreTrainedModel, write_card, step: int) -> None:
    """The finished model into the run folder: its files written into FINAL_STAGING, the card beside them, then
    each moved into place. A full disk on the way removes what was written and stops with how much was needed;
    the checkpoints stay as they were."""
    staging = output_dir / FINAL_STAGING
    moved: list[Path] = []
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        model.save_pretrained(staging)
        failpoint("final-weights", step)
        write_card()
        failpoint("final-card", step)
        for path in sorted(staging.iterdir()):
            os.replace(path, output_dir / path.name)
            moved.append(output_dir / path.name)
        staging.rmdir()
    except OSError as error:
        if not is_disk_full(error):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        for path in [*moved, output_dir / "README.md"]:
            path.unlink(missing_ok=True)
        last = latest_checkpoint(output_dir)
        then = "What was written of the model is removed; " + (
            f"the checkpoint {last.name} is intact: free some space and run the same command with --resume."
            if last
            else "no checkpoint was written: free some space and train again."
        )
        raise disk_full_error(error, output_dir, "the final model", _weight_bytes(model) + 2**20, then) from None
    give_normal_permissions(output_dir)


def read_finished(output_dir: Path) -> dict | None:
    """The FINISHED record of a run folder (step, max_steps, weights_step), or None for a run not finished."""
    path = output_dir / FINISHED
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    valid = isinstance(record, dict) and all(isinstance(record.get(key), int) for key in ("step", "max_steps"))
    return record if valid else None


def _write_finished(output_dir: Path, step: int, max_steps: int, weights_step: int) -> None:
    """The run's last write: FINISHED says it ended (so that --resume refuses), atomically."""
    temporary = output_dir / f".tmp-{FINISHED}"
    temporary.write_text(json.dumps({"step": step, "max_steps": max_steps, "weights_step": weights_step}) + "\n")
    os.replace(temporary, output_dir / FINISHED)


def _check_fsdp(accelerator: Accelerator) -> None:
    """FSDP as the loop needs it: FSDP2 (FSDP1's flat parameters cannot generate samples), and checkpoints that
    load without unpickling (a sharded checkpoint's metadata is a pickle, which can run code on --resume)."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return
    if not accelerator.is_fsdp2:
        raise ValueError("gpt1 train runs FSDP version 2: set `fsdp_version: 2` in your accelerate config.")
    plugin = accelerator.state.fsdp_plugin
    if plugin is not None and plugin.state_dict_type.name != "FULL_STATE_DICT":  # accelerate makes it an enum
        raise ValueError(
            f"fsdp_state_dict_type {plugin.state_dict_type.name} writes checkpoints whose metadata is a pickle, "
            "which can run code when --resume reads it. Set `fsdp_state_dict_type: FULL_STATE_DICT` in your "
            "accelerate config (gpt1's largest model fits in one process's memory)."
        )


def _gathered_model(accelerator: Accelerator, model: torch.nn.Module) -> PreTrainedModel:
    """The trained model, whole, on the main process (what it saves). FSDP2 holds a shard per process and has
    swapped the model's class in place for torch's `FSDPGPT1ForCausalLM` (whose file save_pretrained would
    copy as the remote code): every process takes part in gathering the weights into a plain model, built
    on the main process only."""
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type != DistributedType.FSDP:
        return unwrapped
    state_dict = accelerator.get_state_dict(model)  # the whole weights on the main process, nothing elsewhere
    if not accelerator.is_main_process:
        return unwrapped
    whole = GPT1ForCausalLM(unwrapped.config)
    whole.load_state_dict(state_dict)
    return whole


def _save_best_weights(
    accelerator: Accelerator, model: torch.nn.Module, output_dir: Path, step: int, loss: float
) -> None:
    """The weights of a new best evaluation to BEST_WEIGHTS, written by the main process. Under FSDP every
    process takes part in gathering them (a collective call); elsewhere the main process holds them whole."""
    if accelerator.distributed_type == DistributedType.FSDP:
        state_dict = accelerator.get_state_dict(model)
    elif accelerator.is_main_process:
        state_dict = accelerator.unwrap_model(model).state_dict()
    if accelerator.is_main_process:
        tied = set(getattr(accelerator.unwrap_model(model), "_keys_to_ignore_on_save", None) or ())
        save_best_weights(output_dir, {name: t for name, t in state_dict.items() if name not in tied}, step, loss)


def _keep_final_weights(
    config: TrainConfig, model: PreTrainedModel, output_dir: Path, watch: ValidationWatch, last_step: int
) -> int:
    """Put the weights the folder keeps into `model` (the trained one, whole) and return their step:
    the best evaluation's with `--final-weights best`, unless the last step is the best; else the last."""
    if config.final_weights != "best" or watch.best_step is None or watch.best_step == last_step:
        return last_step
    on_disk = best_weights_step(output_dir)
    if on_disk is None or on_disk[0] != watch.best_step:
        logger.warning(
            "The best weights (step %s) are not in %s (found: %s); the folder keeps the last step's weights.",
            watch.best_step,
            output_dir / BEST_WEIGHTS,
            "none" if on_disk is None else f"step {on_disk[0]}",
        )
        return last_step
    tied = set(getattr(model, "_keys_to_ignore_on_save", None) or ())
    missing, unexpected = model.load_state_dict(load_best_weights(output_dir), strict=False)
    if unexpected or set(missing) - tied:
        raise RuntimeError(
            f"{output_dir / BEST_WEIGHTS} does not hold this model's weights (missing {sorted(set(missing) - tied)}, "
            f"unexpected {sorted(unexpected)})."
        )
    return watch.best_step


def _kept_line(output_dir: Path, kept_step: int, watch: ValidationWatch) -> str:
    """The run's last word: whose weights the folder holds, and their validation loss."""
    losses = {record["step"]: record["val_loss"] for record in METRICS.read(output_dir, missing_ok=True)}
    if kept_step not in losses:
        return f"The folder holds the weights of step {kept_step}."
    kept = f"the weights of step {kept_step} (validation loss {losses[kept_step]:.4f}"
    if kept_step == watch.best_step:
        best_of = f"the lowest of {len(losses)} evaluation{'s' if len(losses) != 1 else ''}"
        last = max(losses)
        trained_on = "" if kept_step == last else f"; training went on to step {last}"
        return f"The folder holds {kept}, {best_of}{trained_on})."
    return (
        f"The folder holds {kept}, the last); the lowest was {watch.best_val_loss:.4f} at step "
        f"{watch.best_step}, whose weights are in {output_dir / BEST_WEIGHTS} (--final-weights best keeps them)."
    )


def _compiles(config: TrainConfig, device: torch.device) -> bool:
    """Whether to compile the training step: as --compile says, or with auto, when the run is long enough to pay
    for the compile (COMPILE_PAYS_FROM_STEPS) and torch can compile for this device. Decided from the
    configuration alone, so that a resumed run makes the same choice as the run it continues."""
    if config.compile != "auto":
        return config.compile == "on"
    if config.max_steps < COMPILE_PAYS_FROM_STEPS.get(device.type, math.inf):
        return False
    return torch_compile_available(device.type)


def _distributed_on_cpu() -> bool:
    """Several processes (torchrun) on a machine without a GPU: Accelerate needs `cpu=True` to use gloo
    DDP, or each process silently trains alone."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _tokenizer(config: TrainConfig, corpus: Corpus, output_dir: Path, resuming: bool) -> PreTrainedTokenizerBase:
    if resuming and (output_dir / "tokenizer.json").exists():
        return load_tokenizer(str(output_dir))  # the run's own folder, checked as any other
    kind = next((kind for kind in TOKENIZER_KINDS if kind == config.tokenizer), None)
    if kind is not None:
        vocab_size = None if kind == "char" else config.vocab_size
        # From a stream, the tokenizer learns from its first rows rather than reading it all.
        source = corpus.train.take(STREAM_TOKENIZER_ROWS) if config.streaming else corpus.train
        tokenizer = train_tokenizer(source, kind=kind, vocab_size=vocab_size, text_column=corpus.text_column)
        if kind == "word":
            # The pieces a word vocabulary lacks lose their text: say how much of the text that is.
            coverage = vocabulary_coverage(tokenizer, source, text_column=corpus.text_column)
            PartialState().print(
                f"Word vocabulary: {len(tokenizer):,} tokens cover {coverage.percent} of the training text's "
                f"{coverage.pieces:,} words, punctuation marks and spaces; the other {coverage.unknown:,} become "
                f"{tokenizer.unk_token}."
            )
        return tokenizer
    check_folder_or_hub_repo(config.tokenizer, "tokenizer", " Pass bpe, char, word, a tokenizer folder or a Hub id.")
    return load_tokenizer(config.tokenizer)  # the tokenizer the user names, its files checked first


def _model(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    model: PreTrainedModel
    if config.init_from is not None:
        model = load_model(GPT1ForCausalLM, config.init_from, dtype=torch.float32)
    else:
        model_config = GPT1Config(
            vocab_size=len(tokenizer),
            n_positions=config.n_positions,
            n_embd=config.n_embd,
            n_layer=config.n_layer,
            n_head=config.n_head,
            resid_pdrop=config.dropout,
            embd_pdrop=config.dropout,
            attn_pdrop=config.dropout,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            # The training loss multiplies by the output layer padded to aligned sizes (faster); see GPT1Config.
            vocab_padding_multiple=64,
        )
        model = GPT1ForCausalLM(model_config)
    if isinstance(model, GPT1ForCausalLM):
        # The samples at each evaluation are short and few: compiling their decode step would only stall the run.
        model.compiled_decoding = False
    if config.block_size > model.config.n_positions:
        raise ValueError(
            f"--block-size {config.block_size} is longer than the model's context (n_positions = "
            f"{model.config.n_positions}). Use --block-size <= {model.config.n_positions}."
        )
    return model


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """GPT-1's decoupled weight decay on weight matrices only: not on biases, LayerNorm gains or embeddings."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_matrix = parameter.dim() >= 2 and "embeddings" not in name
        (decay if is_matrix else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _schedule(config: TrainConfig):
    """Linear warmup to `lr`, then cosine decay to `min_lr` at `max_steps` (as a multiplier of `lr`)."""
    floor = config.min_lr / config.lr if config.lr else 0.0

    def multiplier(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier
