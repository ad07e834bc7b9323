"""Fine-tuning with `transformers.Trainer`: GPT-1's discriminative heads and continued LM training.

gpt1 finetune --model runs/gpt1-tiny --dataset reviews.csv --task classification --label-column label

GPT-1's recipe (Radford et al., 2018, section 4.1) is the default for a model of the paper's size:
learning rate 6.25e-5, batch 32, 3 epochs, linear warmup over 0.2% of training then linear decay, and
the auxiliary LM loss with weight 0.5. Smaller models (the tiny and small presets) learn nothing in 3
epochs at that rate, so below the paper's size the default learning rate is 3e-4 over 10 epochs
(`RECIPES`). Each epoch is evaluated, and the best model is saved as a shareable HF folder.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from .hub import push_folder
from .model import LORA_TARGET_MODULES, GPT1ForCausalLM, GPT1ForMultipleChoice, GPT1ForSequenceClassification
from .model_folders import check_gpt1_checkpoint, give_normal_permissions, load_model, load_tokenizer
from .options import RECIPES, FinetuneConfig, recipe_for
from .reporting import write_finetune_card
from .run_lock import RunLock
from .stopping import StopSignals, TrainingStopped, resume_command
from .task_data import prepare_task
from .tasks import add_task_tokens


def finetune(config: FinetuneConfig) -> Path:
    """Fine-tune a pretrained gpt1 model as `config` says; return the folder of the best model.

    One run per folder (`RunLock` on --output-dir, held by the main process). SIGTERM and SIGINT stop it after
    the current step with a Trainer checkpoint, raising `TrainingStopped`; a second signal stops it at once."""
    config.check()
    set_seed(config.seed)  # the new head's and LoRA's initial weights come from the global RNG
    output_dir = Path(config.output_dir)
    with contextlib.ExitStack() as held:
        if _is_main_process():
            held.enter_context(RunLock(output_dir))
        stop = held.enter_context(StopSignals("fine-tuning"))
        return _finetune(config, output_dir, stop)
    raise AssertionError("unreachable")  # mypy: ExitStack may swallow exceptions, this one never does


def _finetune(config: FinetuneConfig, output_dir: Path, stop: StopSignals) -> Path:
    check_gpt1_checkpoint(config.model)
    tokenizer = load_tokenizer(config.model)
    if config.task != "causal-lm" and add_task_tokens(tokenizer):
        # e.g. a converted openai-gpt tokenizer: the start/delimiter/classify embeddings are learnt here.
        print(f"Added GPT-1's task tokens to the tokenizer ({len(tokenizer)} tokens now).")
    task = prepare_task(config, tokenizer)
    model = load_model_for_task(config, tokenizer, task.label_names)
    recipe, recipe_lr, recipe_epochs = recipe_for(model.config)
    lr = config.lr if config.lr is not None else recipe_lr
    epochs = config.epochs if config.epochs is not None else recipe_epochs
    if config.lr is None or config.epochs is None:
        size = f"{model.config.n_layer} layers × {model.config.n_embd} wide"
        note = "" if recipe == RECIPES["paper-size"][0] else "; GPT-1's recipe (lr 6.25e-5, 3 epochs) is for 12 × 768"
        print(f"Fine-tuning a {size} model with {recipe}: --lr {lr:g} --epochs {epochs:g}{note}.")
    config = replace(config, lr=lr, epochs=epochs)  # what finetune_config.json records
    if config.lora:
        model = _with_lora(model, config)

    metric = "accuracy" if config.task != "causal-lm" else "loss"
    arguments = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        learning_rate=lr,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a share of the total steps
        lr_scheduler_type="linear",
        weight_decay=config.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=metric == "accuracy",
        save_total_limit=2,
        logging_steps=config.logging_steps,
        report_to=config.report_to or "none",
        seed=config.seed,
        bf16=config.mixed_precision == "bf16",
        fp16=config.mixed_precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=task.train,
        eval_dataset=task.validation,
        data_collator=task.collator,
        processing_class=tokenizer,
        compute_metrics=accuracy if config.task != "causal-lm" else None,
        callbacks=[stop_callback := StopOnSignal(stop)],
    )
    resume = _latest_complete_checkpoint(output_dir / "checkpoints") if config.resume else None
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    if stop_callback.stopped_at is not None:
        step = stop_callback.stopped_at
        raise TrainingStopped(
            f"Stopped by {stop.signal_name} after step {step:,} of {trainer.state.max_steps:,}. The checkpoint is "
            f"{output_dir / 'checkpoints' / f'checkpoint-{step}'}. Resume with: "
            + resume_command("finetune", ["--model", config.model, "--output-dir", config.output_dir, "..."])
        )
    metrics = trainer.evaluate()  # the best model, reloaded at the end of training
    # evaluate() stamps the epoch training ended at; the model kept is the best epoch's.
    if (best_epoch := _best_epoch(trainer.state.log_history, f"eval_{metric}", trainer.state.best_metric)) is not None:
        metrics["epoch"] = best_epoch
    if config.task == "causal-lm":
        metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    elif config.aux_lm_weight > 0:
        # The task heads' loss adds the weighted auxiliary LM loss: say so in its name.
        metrics["eval_loss_with_aux_lm"] = metrics.pop("eval_loss")

    best: Any = trainer.accelerator.unwrap_model(trainer.model)
    if config.lora:
        best = best.merge_and_unload()  # a plain gpt1 model again: saves and loads like any other
    if trainer.is_world_process_zero():
        best.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        give_normal_permissions(output_dir)
        (output_dir / "finetune_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
        (output_dir / "eval_results.json").write_text(json.dumps(metrics, indent=2) + "\n")
        write_finetune_card(
            output_dir, best, config, task.description, metrics, trainer.state.global_step, config.push_to_hub
        )
        if config.push_to_hub:
            print(f"Pushed to {push_folder(output_dir, config.push_to_hub)}")
    return output_dir


class StopOnSignal(TrainerCallback):
    """After a step during which a stop was asked for (on any process), the Trainer saves a checkpoint and ends
    training; `stopped_at` is that step."""

    def __init__(self, stop: StopSignals) -> None:
        self.stop = stop
        self.stopped_at: int | None = None

    def on_step_end(self, args, state, control, **kwargs):
        asked = torch.tensor(float(self.stop.requested), device=args.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(asked)  # every process stops after the same step
        if asked.item() > 0 and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


def _latest_complete_checkpoint(folder: Path) -> Path | None:
    """The Trainer checkpoint to resume from: the latest whose trainer_state.json (which the Trainer writes last)
    is there. One without it was cut short, by a second signal or a kill, and is passed over."""
    complete = [path for path in folder.glob("checkpoint-*") if (path / "trainer_state.json").is_file()]
    steps = {path: int(path.name.removeprefix("checkpoint-")) for path in complete if path.name[11:].isdigit()}
    return max(steps, key=steps.__getitem__, default=None)


def _is_main_process() -> bool:
    """Process 0 of a distributed run (torchrun and accelerate set RANK), or the only one."""
    return os.environ.get("RANK", "0") == "0"


def _best_epoch(log_history: list[dict[str, Any]], metric: str, best: float | None) -> float | None:
    """The epoch of the evaluation that scored `best` on `metric` (the model `load_best_model_at_end` kept)."""
    scored = [entry for entry in log_history if metric in entry]
    matching = [entry["epoch"] for entry in scored if best is not None and entry[metric] == best]
    return matching[0] if matching else (scored[-1]["epoch"] if scored else None)


def load_model_for_task(
    config: FinetuneConfig, tokenizer: PreTrainedTokenizerBase, label_names: list[str] | None
) -> PreTrainedModel:
    """The pretrained weights under the task's head, with embeddings resized to the tokenizer."""
    overrides: dict[str, Any] = dict(auxiliary_lm_loss_weight=config.aux_lm_weight, dtype=torch.float32)
    model: PreTrainedModel
    if config.task == "causal-lm":
        model = load_model(GPT1ForCausalLM, config.model, dtype=torch.float32)
    elif config.task == "classification":
        if label_names is None:
            raise ValueError("Classification needs the label names; prepare_task gives them.")
        model = load_model(
            GPT1ForSequenceClassification,
            config.model,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: index for index, name in enumerate(label_names)},
            **overrides,
        )
    else:
        model = load_model(GPT1ForMultipleChoice, config.model, **overrides)
    if len(tokenizer) > model.config.vocab_size:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def accuracy(prediction) -> dict[str, float]:
    """`compute_metrics` for the heads: the share of rows whose highest logit is the label."""
    logits, labels = prediction.predictions, prediction.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


def _with_lora(model: PreTrainedModel, config: FinetuneConfig) -> PreTrainedModel:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError(
            "--lora needs peft: `python3 scripts/install.py --extras lora` in gpt1's clone, or `pip install peft`."
        ) from None
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=LORA_TARGET_MODULES,
        # The new task head is trained in full; the pretrained body only through its adapters.
        modules_to_save=["classifier"] if config.task != "causal-lm" else None,
    )
    peft_model = get_peft_model(model, lora)
    trainable, total = peft_model.get_nb_trainable_parameters()
    print(f"LoRA: training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%).")
    return peft_model  # type: ignore[return-value]
