"""What a training run leaves for people: the loss-curve picture and the model card."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .data import hub_dataset_id
from .metrics import METRICS, SAMPLES, SAMPLES_SHOWN, spread

logger = logging.getLogger(__name__)


# The first line of every card's usage example; `gpt1 push` rewrites it to the repo id it pushes to.
MODEL_ID_LINE = 'model_id = "{}"  # this folder, or the Hub repo id it was pushed to'
MODEL_ID_PATTERN = re.compile(r'^model_id = ".*"  # this folder, or the Hub repo id it was pushed to$', re.MULTILINE)


def write_loss_curve(run_dir: Path) -> Path | None:
    """Draw the run's loss curve, with a few of its samples beside it, into run_dir/loss_curve.png (see
    `viz.plot_metrics`); None without matplotlib."""
    try:
        from .viz import plot_metrics, save_figure
    except ImportError as error:
        logger.warning("%s No loss-curve picture was drawn.", error)
        return None
    # Drawn during training: a damaged line of the logs is skipped (with a warning), never the end of the run.
    return save_figure(plot_metrics(run_dir, strict=False), run_dir / "loss_curve.png")


def model_reference(run_dir: Path, repo_id: str | None = None) -> str:
    """How the card's usage names the model: its Hub repo id, or the folder (by name alone if the path is
    absolute: a path of the user's machine must not travel with a pushed card)."""
    return repo_id or (run_dir.name if run_dir.is_absolute() else run_dir.as_posix())


def write_model_card(
    run_dir: Path,
    model,
    data_description: str,
    steps: int,
    tokens_seen: int,
    dataset_id: str | None = None,
    repo_id: str | None = None,
    weights_step: int | None = None,
    max_steps: int | None = None,
) -> Path:
    """README.md for the Hub: metadata (with `model-index` results), architecture, data, results, a few
    of the samples written during training, usage and limitations. `dataset_id` is the Hub dataset trained
    on, when there is one; `repo_id` the Hub repo the folder goes to, when known (`gpt1 push` names it in
    the card as it uploads). `weights_step` is the step whose weights the folder holds (default: the last
    evaluated); the results are that evaluation's. `max_steps`, when more than `steps`, says the run
    stopped early."""
    records = METRICS.read(run_dir, missing_ok=True)
    kept = next((record for record in records if record["step"] == weights_step), records[-1] if records else {})
    train_loss, val_loss = kept.get("train_loss"), kept.get("val_loss")
    config = model.config
    parameters = model.num_parameters()  # tied embeddings counted once
    results = (
        _weights_row(records, kept) + f"| train loss | {train_loss:.4f} |\n| validation loss | {val_loss:.4f} |\n"
        f"| validation perplexity | {math.exp(min(val_loss, 50.0)):.2f} |\n"
        if train_loss is not None and val_loss is not None
        else "| results | no evaluation was recorded |\n"
    )
    stopped = (
        f" of {max_steps:,} (early stopping: validation loss had stopped improving)"
        if max_steps is not None and steps < max_steps
        else ""
    )
    picture = "![Training and validation loss](loss_curve.png)\n\n" if (run_dir / "loss_curve.png").exists() else ""
    samples = _samples_section(SAMPLES.read(run_dir, missing_ok=True))
    metrics = (
        [("loss", "validation loss", val_loss), ("perplexity", "validation perplexity", math.exp(min(val_loss, 50.0)))]
        if val_loss is not None
        else []
    )
    front_matter = _front_matter(run_dir.name, "text-generation", dataset_id, data_description, metrics)
    card = f"""{front_matter}
# GPT-1 ({config.n_layer} layers, {config.n_embd} wide)

A GPT-1-style decoder (Radford et al., 2018) trained from scratch with
the `gpt1` package: learned position embeddings, post-LayerNorm blocks of causal
self-attention and a GELU feed-forward, no final LayerNorm, input and output embeddings tied.

| architecture | |
|---|---|
| layers × width × heads | {config.n_layer} × {config.n_embd} × {config.n_head} |
| context (n_positions) | {config.n_positions} |
| vocabulary | {config.vocab_size} |
| parameters | {parameters:,} |

## Training

| | |
|---|---|
| data | {data_description} |
| steps | {steps:,}{stopped} |
| tokens seen | {tokens_seen:,} |
{results}
{picture}{samples}## Usage

The model code travels with the weights, so `gpt1` need not be installed:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

{MODEL_ID_LINE.format(model_reference(run_dir, repo_id))}
model = AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)
generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
print(generator("{_escape("The")}", max_new_tokens=50)[0]["generated_text"])
```

To pin both the weights and the code you run to one commit of a Hub repo, pass
`revision="COMMIT_SHA", code_revision="COMMIT_SHA"` to `from_pretrained`: `trust_remote_code` then
executes exactly the code you reviewed at that commit.

## Limitations

A small model trained on {data_description} only: it continues text in the style of its training
data and knows nothing else. Its output is not factual and must not be relied on.
"""
    target = run_dir / "README.md"
    target.write_text(card)
    return target


def _weights_row(records: list[dict], kept: dict) -> str:
    """The table row saying whose weights the folder holds, and how they compare with the other evaluations."""
    best = min(records, key=lambda record: record["val_loss"])
    if kept["step"] == best["step"]:
        how = f"the lowest validation loss of {len(records)} evaluation{'s' if len(records) != 1 else ''}"
        last = records[-1]
        if last["step"] != kept["step"]:
            how += (
                f" (the last, step {last['step']:,}: train {last['train_loss']:.4f}, validation {last['val_loss']:.4f})"
            )
    else:
        how = f"the last (the lowest validation loss was {best['val_loss']:.4f}, at step {best['step']:,})"
    return f"| weights | step {kept['step']:,}: {how} |\n"


def _samples_section(samples: list[dict]) -> str:
    """What the model wrote from the prompt at a few evaluations, first to last, in fenced blocks."""
    shown = spread(samples, SAMPLES_SHOWN)
    if not shown:
        return ""
    prompt = shown[0].get("prompt", "")
    parts = [
        "### Samples during training\n\n"
        f"What the model wrote from the prompt {prompt!r} at {len(shown)} of its {len(samples)} evaluations, "
        "the same random seed each time (every one is in `samples.jsonl` in the training run's folder):\n"
    ]
    for sample in shown:
        fence = "`" * max(3, _longest_backtick_run(sample["text"]) + 1)
        parts.append(
            f"\n**Step {sample['step']:,}** (validation loss {sample['val_loss']:.4f})\n\n"
            f"{fence}text\n{sample['text']}\n{fence}\n"
        )
    return "".join(parts) + "\n"


def _longest_backtick_run(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


_PIPELINE_TAGS = {
    "causal-lm": ("text-generation", "AutoModelForCausalLM"),
    "classification": ("text-classification", "AutoModelForSequenceClassification"),
    "multiple-choice": ("multiple-choice", "AutoModelForMultipleChoice"),
}


def write_finetune_card(
    run_dir: Path, model, config, data_description: str, metrics: dict, steps: int, repo_id: str | None = None
) -> Path:
    """README.md for a fine-tuned model: what it was tuned from and on, its evaluation, how to load it."""
    pipeline_tag, auto_class = _PIPELINE_TAGS[config.task]
    shown = {key.removeprefix("eval_"): value for key, value in metrics.items() if isinstance(value, float)}
    rows = "".join(
        f"| {name} | {value:.4f} |\n" for name, value in shown.items() if name in ("accuracy", "loss", "perplexity")
    )
    labels = ""
    if getattr(model.config, "id2label", None) and config.task == "classification":
        names = ", ".join(f"`{model.config.id2label[index]}`" for index in sorted(model.config.id2label))
        labels = f"| labels | {names} |\n"
    if config.task == "classification":
        usage = """classify = pipeline("text-classification", model=model_id, trust_remote_code=True)
print(classify("Your text here"))"""
    elif config.task == "multiple-choice":
        usage = """model = AutoModelForMultipleChoice.from_pretrained(model_id, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)
# Build <|start|> context <|delimiter|> answer <|classify|> per choice; gpt1.multiple_choice_inputs does it."""
    else:
        usage = """generate = pipeline("text-generation", model=model_id, trust_remote_code=True)
print(generate("Once upon a time", max_new_tokens=50)[0]["generated_text"])"""
    usage = MODEL_ID_LINE.format(model_reference(run_dir, repo_id)) + "\n" + usage
    wanted = ("loss", "perplexity") if config.task == "causal-lm" else ("accuracy",)
    results = [(name, f"validation {name}", float(shown[name])) for name in wanted if name in shown]
    dataset_id = hub_dataset_id(config.dataset)
    front_matter = _front_matter(run_dir.name, pipeline_tag, dataset_id, data_description, results)
    card = f"""{front_matter}
# GPT-1 fine-tuned for {config.task}

A GPT-1-style decoder (Radford et al., 2018) fine-tuned with `transformers.Trainer` by
the `gpt1` package, from `{model_reference(Path(config.model))}`.

| | |
|---|---|
| task | {config.task} ({auto_class}) |
| data | {data_description} |
| layers × width × heads | {model.config.n_layer} × {model.config.n_embd} × {model.config.n_head} |
| steps | {steps:,} |
| learning rate, batch, epochs | {config.lr:g}, {config.batch_size}, {config.epochs:g} |
| auxiliary LM loss weight | {config.aux_lm_weight:g} |
| LoRA | {f"rank {config.lora_rank}, merged into the weights" if config.lora else "no"} |
{labels}
## Evaluation (validation rows, best epoch)

| metric | value |
|---|---|
{rows}
## Usage

The model code travels with the weights, so `gpt1` need not be installed:

```python
from transformers import {auto_class}, AutoTokenizer, pipeline

{usage}
```

## Limitations

A small model fine-tuned on {data_description} only; check its accuracy on your own data before
relying on it.
"""
    target = run_dir / "README.md"
    target.write_text(card)
    return target


def _front_matter(
    model_name: str, pipeline_tag: str, dataset_id: str | None, dataset_name: str, metrics: list[tuple[str, str, float]]
) -> str:
    """The card's YAML metadata, written by huggingface_hub so that the Hub (and `ModelCard.load`) parse it:
    library, pipeline tag, tags, license, datasets and `model-index` results for `metrics`
    ((type, name, value) triples measured on the validation split)."""
    results = [
        EvalResult(
            task_type=pipeline_tag,
            dataset_type=dataset_id or "custom",
            dataset_name=dataset_name,
            dataset_split="validation",
            metric_type=metric_type,
            metric_name=metric_name,
            metric_value=round(value, 4),
        )
        for metric_type, metric_name, value in metrics
    ]
    data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license="apache-2.0",
        tags=["gpt1", "custom_code", pipeline_tag],
        datasets=[dataset_id] if dataset_id else None,
        eval_results=results or None,
    )
    return f"---\n{data.to_yaml()}\n---\n"


SCORES_HEADING = "## Scores"


def add_scores_to_card(run_dir: Path, scores: dict[str, dict[str, float]], source: str) -> Path:
    """Put `scores` ({task: {metric: value}}, from `source`) into run_dir/README.md: as `model-index` results
    in the metadata and as a table in a "Scores" section, replacing earlier scores of the same tasks."""
    path = run_dir / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"No model card in {str(run_dir)!r} (README.md) to add the scores to.")
    card = ModelCard.load(path)
    kept = [result for result in card.data.eval_results or [] if result.dataset_type not in scores]
    new = [
        EvalResult(
            task_type=card.data.pipeline_tag or "text-generation",
            dataset_type=task,
            dataset_name=f"{task} ({source})",
            metric_type=metric,
            metric_name=metric,
            metric_value=round(value, 4),
        )
        for task, metrics in scores.items()
        for metric, value in metrics.items()
    ]
    card.data.eval_results = kept + new
    if card.data.model_name is None:
        card.data.model_name = run_dir.resolve().name
    measured = [row for row in kept + new if row.dataset_name.endswith(f"({source})")]
    rows = "".join(f"| {row.dataset_type} | {row.metric_type} | {row.metric_value:.4f} |\n" for row in measured)
    section = f"{SCORES_HEADING}\n\nMeasured with {source}.\n\n| task | metric | value |\n|---|---|---|\n{rows}"
    body = card.text
    earlier = re.search(rf"^{SCORES_HEADING}[ \t]*$", body, re.MULTILINE)
    if earlier:  # replace the earlier section, up to the next heading of its level
        following = re.compile(r"^## ", re.MULTILINE).search(body, earlier.end())
        body = body[: earlier.start()] + section + ("\n" + body[following.start() :] if following else "")
    elif limitations := re.search(r"^## Limitations[ \t]*$", body, re.MULTILINE):
        body = body[: limitations.start()] + section + "\n" + body[limitations.start() :]
    else:
        body = body.rstrip("\n") + "\n\n" + section
    path.write_text(f"---\n{card.data.to_yaml()}\n---\n{body}")
    return path
