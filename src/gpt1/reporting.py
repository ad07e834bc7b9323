"""What a training run leaves for people: the loss-curve picture and the model card."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

logger = logging.getLogger(__name__)


def read_metrics(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl (a folder or the file itself)."""
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"No metrics.jsonl at {str(file)!r}: is this a gpt1 training run folder?")
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def write_loss_curve(run_dir: Path) -> Path | None:
    """Draw train and validation loss against step into run_dir/loss_curve.png; None without matplotlib."""
    try:
        from .viz import plot_metrics
    except ImportError as error:
        logger.warning("%s No loss-curve picture was drawn.", error)
        return None
    figure = plot_metrics(run_dir)
    target = run_dir / "loss_curve.png"
    figure.savefig(target, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return target


def write_model_card(run_dir: Path, model, data_description: str, steps: int, tokens_seen: int) -> Path:
    """README.md for the Hub: metadata, architecture, data, results and how to load it."""
    records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    last = records[-1] if records else {}
    train_loss, val_loss = last.get("train_loss"), last.get("val_loss")
    config = model.config
    parameters = model.num_parameters()  # tied embeddings counted once
    results = (
        f"| final train loss | {train_loss:.4f} |\n| final validation loss | {val_loss:.4f} |\n"
        f"| validation perplexity | {math.exp(min(val_loss, 50.0)):.2f} |\n"
        if train_loss is not None and val_loss is not None
        else "| results | no evaluation was recorded |\n"
    )
    picture = "![Training and validation loss](loss_curve.png)\n\n" if (run_dir / "loss_curve.png").exists() else ""
    card = f"""---
library_name: transformers
pipeline_tag: text-generation
tags:
- gpt1
- custom_code
- text-generation
license: apache-2.0
---

# GPT-1 ({config.n_layer} layers, {config.n_embd} wide)

A GPT-1-style decoder (Radford et al., 2018) trained from scratch with
[gpt1](https://pypi.org/project/gpt1/): learned position embeddings, post-LayerNorm blocks of causal
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
| steps | {steps:,} |
| tokens seen | {tokens_seen:,} |
{results}
{picture}## Usage

The model code travels with the weights, so `gpt1` need not be installed:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")
generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
print(generator("{_escape("The ")}", max_new_tokens=50)[0]["generated_text"])
```

## Limitations

A small model trained on {data_description} only: it continues text in the style of its training
data and knows nothing else. Its output is not factual and must not be relied on.
"""
    target = run_dir / "README.md"
    target.write_text(card)
    return target


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
