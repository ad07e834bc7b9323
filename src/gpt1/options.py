"""The options of `gpt1 train` and `gpt1 finetune`: each field with its default, its help and its checks.

The command line is built from these dataclasses (one flag per field, its help from the field's
metadata), and they import only the standard library, so `gpt1 --help` prints without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Model sizes and the schedule that suits each. "tiny" is the README's main job, under two minutes on
# two CPU cores: its shape and vocabulary won on validation bits per character in that time among the
# candidates of benchmarks/bench_main_job.py (the README has the table). "small" is nanoGPT's 6×384
# "baby GPT"; "gpt1" is the paper's (12 layers, 768 wide, 12 heads, context 512, batch 64, max lr
# 2.5e-4 with 2000 warmup steps, weight decay 0.01).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_layer=3, n_head=4, n_embd=192, block_size=128, batch_size=16, vocab_size=2048,
                 lr=1e-3, min_lr=1e-4, warmup_steps=50, max_steps=600, eval_every=100, save_every=200),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=32, vocab_size=8192,
                  lr=6e-4, min_lr=6e-5, warmup_steps=200, max_steps=5000, eval_every=250, save_every=500),
    "gpt1": dict(n_layer=12, n_head=12, n_embd=768, block_size=512, batch_size=64, vocab_size=40478,
                 lr=2.5e-4, min_lr=0.0, warmup_steps=2000, max_steps=100_000, eval_every=1000, save_every=2000),
}  # fmt: skip

MIXED_PRECISION = ("no", "bf16", "fp16")
COMPILE = ("auto", "on", "off")
# `--compile auto` compiles the training step for runs of at least this many steps. Compiling costs about 20 s for a
# small model on a CPU (a minute at the paper's size) and the compiled step is 10-15% faster there, so it pays for
# itself after a few thousand steps: never in the main job (600 steps) or nanoGPT's settings (2,000), always in the
# small and paper-sized presets. On a GPU the compiled step gains more and pays sooner. (README, Performance.)
COMPILE_PAYS_FROM_STEPS = {"cpu": 3000, "cuda": 500}
FINAL_WEIGHTS = ("best", "last")
TASKS = ("causal-lm", "classification", "multiple-choice")

# (name, learning rate, epochs) by model size. GPT-1's is for its own size: on the tiny and small presets
# it stays at chance on a 200-row classification set. 3e-4 for 10 epochs learns on both (the README has
# the accuracies); 1e-3 learns on the tiny preset but not on the small one.
RECIPES = {"paper-size": ("GPT-1's recipe", 6.25e-5, 3.0), "smaller": ("the small-model recipe", 3e-4, 10.0)}


# The default of the options a preset sets: `TrainConfig.__post_init__` replaces it with the preset's value,
# so the fields are typed by the value they always hold once the config exists.
FROM_PRESET: Any = None


def option(default: Any = None, help: str = "") -> Any:
    """A dataclass field that is also a command-line flag; the CLI adds "(default: ...)" to `help`."""
    return field(default=default, metadata={"help": help})


def _preset_help() -> str:
    described = (
        f"{name}: " + ", ".join(f"{key}={value}" for key, value in values.items()) for name, values in PRESETS.items()
    )
    return "model size and schedule; " + "; ".join(described)


def _check_positive(config: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(config, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}.")


def _check_mixed_precision(value: str) -> None:
    if value not in MIXED_PRECISION:
        raise ValueError(f"--mixed-precision must be no, bf16 or fp16, got {value!r}.")


@dataclass
class TrainConfig:
    """Every `gpt1 train` option. Those a preset sets hold the preset's value unless given."""

    output_dir: str = option("runs/gpt1-tiny", "where the model folder, checkpoints and metrics go")
    # data
    dataset: str | None = option(
        None,
        "Hub dataset id, or a local file/folder (.txt, .json/.jsonl, .csv, .parquet); "
        "default: the built-in corpus (Python's documentation, offline)",
    )
    dataset_config: str | None = option(None, "Hub dataset configuration name")
    split: str = option("train", "split to train on")
    text_column: str = option("text", "column holding the text")
    val_fraction: float = option(0.1, "share of rows held out for validation when the dataset has no validation split")
    streaming: bool = option(
        False, "read the data lazily (corpora larger than memory); shuffles within a 10,000-block buffer"
    )
    # tokenizer and model
    tokenizer: str = option("bpe", "bpe, char or word (trained on the data), or a tokenizer folder / Hub id")
    vocab_size: int = option(FROM_PRESET, "BPE or word vocabulary size (default: the preset's)")
    preset: str = option("tiny", _preset_help())
    n_layer: int = option(FROM_PRESET, "number of layers (default: the preset's)")
    n_head: int = option(FROM_PRESET, "number of attention heads (default: the preset's)")
    n_embd: int = option(FROM_PRESET, "width (default: the preset's)")
    dropout: float = option(0.1, "dropout on embeddings, attention and residuals")
    n_positions: int = option(FROM_PRESET, "model context (default: the block size)")
    block_size: int = option(FROM_PRESET, "training sequence length (default: the preset's)")
    init_from: str | None = option(None, "start from this model folder or Hub id instead of from scratch")
    # optimisation
    batch_size: int = option(FROM_PRESET, "sequences per device per micro-batch (default: the preset's)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_steps: int = option(FROM_PRESET, "optimizer steps to train (default: the preset's)")
    lr: float = option(FROM_PRESET, "peak learning rate (default: the preset's)")
    min_lr: float = option(FROM_PRESET, "learning rate at the end of the cosine decay (default: the preset's)")
    warmup_steps: int = option(FROM_PRESET, "linear warmup steps (default: the preset's)")
    weight_decay: float = option(0.01, "AdamW weight decay on weight matrices")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.999, "AdamW beta2")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 = off)")
    max_nonfinite_steps: int = option(
        3,
        "optimizer steps in a row whose loss or gradient norm may be NaN or infinite: each is skipped, the weights "
        "left as they were and its batch saved to anomalies/, and one more stops the run (0: stop at the first)",
    )
    mixed_precision: str = option("no", "no, bf16 or fp16")
    compile: str = option(
        "auto",
        "compile the training step with torch.compile: on, off, or auto (on for runs of at least "
        + ", ".join(f"{steps:,} steps on {device.upper()}" for device, steps in COMPILE_PAYS_FROM_STEPS.items())
        + ", where it pays for its compile time; a CPU needs a C++ compiler)",
    )
    seed: int = option(1337, "random seed")
    # seeing it learn
    eval_every: int = option(FROM_PRESET, "evaluate and sample every N steps (default: the preset's)")
    eval_batches: int = option(
        20, "validation batches (each the training batch size) per evaluation, run up to 4 at a time"
    )
    sample_prompt: str = option("The", "prompt of the samples written at each evaluation")
    sample_tokens: int = option(64, "tokens per sample")
    early_stopping_patience: int | None = option(
        None, "stop after N evaluations in a row without a new lowest validation loss (default: off)"
    )
    final_weights: str = option(
        "best", "the weights the folder keeps: best (the evaluation with the lowest validation loss) or last"
    )
    report_to: list[str] = field(
        default_factory=list, metadata={"help": "Accelerate trackers, e.g. tensorboard (repeatable)"}
    )
    # checkpoints
    save_every: int = option(FROM_PRESET, "write a checkpoint every N steps (default: the preset's)")
    keep_checkpoints: int = option(2, "checkpoints to keep")
    resume: bool = option(False, "continue from the latest checkpoint in --output-dir")
    overwrite: bool = option(False, "delete what --output-dir holds (an earlier run, its checkpoints) before training")
    # sharing
    push_to_hub: str | None = option(
        None, "upload the finished folder to this Hub repo (needs `hf auth login` or HF_TOKEN)"
    )

    def __post_init__(self) -> None:
        """Fill each option left at FROM_PRESET with the preset's value, and check the whole, before anything
        runs. (transformers' TrainingArguments resolves its derived options the same way.)"""
        if self.preset not in PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}.")
        if self.vocab_size is not FROM_PRESET and self.tokenizer not in ("bpe", "word"):
            raise ValueError(
                f"--vocab-size {self.vocab_size} conflicts with --tokenizer {self.tokenizer!r}: it sizes the BPE or "
                "word tokenizer trained for the run, while a char tokenizer has one token per character and a "
                "saved tokenizer keeps its own size. Drop --vocab-size, or use --tokenizer bpe or word."
            )
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is FROM_PRESET:
                setattr(self, name, value)
        if self.n_positions is FROM_PRESET:
            # Position embeddings past the training length would never be trained.
            self.n_positions = self.block_size
        _check_mixed_precision(self.mixed_precision)
        if isinstance(self.compile, bool):  # before 0.2.1 it was a switch: True and False still mean on and off
            self.compile = "on" if self.compile else "off"
        if self.compile not in COMPILE:
            raise ValueError(f"--compile must be auto, on or off, got {self.compile!r}.")
        _check_positive(self, ("batch_size", "grad_accum", "max_steps", "eval_every", "save_every", "block_size"))
        if self.keep_checkpoints < 1:
            raise ValueError(f"--keep-checkpoints must be at least 1, got {self.keep_checkpoints}.")
        if self.max_nonfinite_steps < 0:
            raise ValueError(
                f"--max-nonfinite-steps must be 0 (stop at the first) or more, got {self.max_nonfinite_steps}."
            )
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(
                f"--early-stopping-patience must be at least 1 (evaluations in a row without a new lowest "
                f"validation loss), got {self.early_stopping_patience}. Leave it out to train all --max-steps."
            )
        if self.final_weights not in FINAL_WEIGHTS:
            raise ValueError(
                f"--final-weights must be best or last, got {self.final_weights!r}: best keeps the weights of the "
                "evaluation with the lowest validation loss, last those of the last step."
            )
        if self.resume and self.overwrite:
            raise ValueError(
                "--resume continues the run in --output-dir and --overwrite deletes it: choose one of them."
            )


@dataclass
class FinetuneConfig:
    """Every `gpt1 finetune` option. `lr` and `epochs` left at None come from the model's size (`RECIPES`)."""

    model: str = option("", "the pretrained gpt1 model folder or Hub repo id to start from (required)")
    dataset: str = option(
        "", "Hub dataset id, or a local .csv/.json/.jsonl/.parquet file or folder (.txt too for causal-lm) (required)"
    )
    task: str = option("classification", "causal-lm, classification or multiple-choice")
    output_dir: str = option("runs/gpt1-finetuned", "where the best model, checkpoints and metrics go")
    # data
    dataset_config: str | None = option(None, "Hub dataset configuration name")
    split: str = option("train", "split to train on")
    val_fraction: float = option(0.1, "share of rows held out (at random) when the dataset has no validation split")
    text_column: str = option("text", "column of the text to classify, or of the text to train on for causal-lm")
    text_pair_column: str | None = option(
        None, "second text column: <|start|> text <|delimiter|> pair <|classify|> (entailment)"
    )
    label_column: str = option("label", "column of the labels: class names or ids, or the right choice's index")
    context_column: str = option("context", "multiple-choice: column of the question or context")
    choices_column: str = option("choices", "multiple-choice: column holding the list of answers")
    max_length: int | None = option(None, "truncate inputs to this many tokens (default: the model's context)")
    # optimisation (GPT-1's recipe, with lr and epochs by model size)
    lr: float | None = option(
        None, "peak learning rate (default: GPT-1's 6.25e-5 for a 12 × 768 model or larger, 3e-4 below)"
    )
    batch_size: int = option(32, "examples per device per step")
    epochs: float | None = option(None, "training epochs (default: GPT-1's 3 for a 12 × 768 model or larger, 10 below)")
    max_steps: int = option(-1, "stop after this many optimizer steps, whatever the epochs (-1 = off)")
    warmup_ratio: float = option(0.002, "share of the steps spent warming up, then linear decay")
    weight_decay: float = option(0.01, "AdamW weight decay")
    aux_lm_weight: float = option(0.5, "weight of the auxiliary language-modelling loss (0 turns it off)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    mixed_precision: str = option("no", "no, bf16 or fp16")
    seed: int = option(1337, "random seed")
    # LoRA (needs peft: the `lora` extra)
    lora: bool = option(
        False, "train LoRA adapters on the attention and MLP projections, then merge them (needs peft: the lora extra)"
    )
    lora_rank: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    # seeing it learn, resuming, sharing
    logging_steps: int = option(10, "log the training loss every N steps")
    report_to: list[str] = field(
        default_factory=list, metadata={"help": "Trainer trackers, e.g. tensorboard (repeatable)"}
    )
    resume: bool = option(False, "continue from the latest checkpoint in --output-dir")
    push_to_hub: str | None = option(
        None, "upload the finished folder to this Hub repo (needs `hf auth login` or HF_TOKEN)"
    )

    def check(self) -> None:
        if not self.model:
            raise ValueError("--model is required: a gpt1 model folder or Hub repo id to fine-tune.")
        if not self.dataset:
            raise ValueError("--dataset is required: a Hub dataset id or a local .csv/.json/.jsonl/.parquet file.")
        if self.task not in TASKS:
            raise ValueError(f"Unknown --task {self.task!r}; choose one of {list(TASKS)}.")
        _check_mixed_precision(self.mixed_precision)
        _check_positive(self, ("lr", "batch_size", "grad_accum", "lora_rank", "logging_steps"))
        if self.epochs is not None and self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError(f"--epochs must be positive (or set --max-steps), got {self.epochs}.")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}.")
        if self.aux_lm_weight < 0:
            raise ValueError(f"--aux-lm-weight must be >= 0 (GPT-1 used 0.5), got {self.aux_lm_weight}.")


def recipe_for(model_config: Any) -> tuple[str, float, float]:
    """GPT-1's recipe for a model of the paper's size (12 layers, 768 wide) or larger, else the small-model one."""
    paper_size = model_config.n_layer >= 12 and model_config.n_embd >= 768
    return RECIPES["paper-size" if paper_size else "smaller"]
