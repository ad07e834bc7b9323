"""Pictures of a model and its training. Needs matplotlib (the `viz` extra)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

try:
    import matplotlib

    matplotlib.use("Agg")  # draw to files; no screen needed
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "Drawing pictures needs matplotlib: `python3 scripts/install.py --extras viz` in gpt1's clone, "
        "or `pip install matplotlib`."
    ) from error

from .metrics import read_metrics


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as a PNG and free it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return target


def plot_metrics(path: str | Path) -> Figure:
    """Train and validation loss against step (the gap between them shaded), learning rate on a second axis."""
    records = read_metrics(Path(path))
    steps = [record["step"] for record in records]
    train = [record["train_loss"] for record in records]
    val = [record["val_loss"] for record in records]
    figure, loss_axis = plt.subplots(figsize=(8, 4.5))
    loss_axis.plot(steps, train, marker="o", label="train loss")
    loss_axis.plot(steps, val, marker="o", label="validation loss")
    loss_axis.fill_between(steps, train, val, alpha=0.15, color="grey", label="train–validation gap")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("cross-entropy loss (nats/token)")
    loss_axis.grid(alpha=0.3)
    rate_axis = loss_axis.twinx()
    rate_axis.plot(
        steps, [record["lr"] for record in records], color="tab:green", linestyle=":", marker=".", label="learning rate"
    )
    rate_axis.set_ylabel("learning rate")
    lines = loss_axis.get_legend_handles_labels()
    rates = rate_axis.get_legend_handles_labels()
    loss_axis.legend(lines[0] + rates[0], lines[1] + rates[1], loc="upper right")
    loss_axis.set_title(f"Training run {Path(path).resolve().name}: loss by step")
    figure.tight_layout()
    return figure


@dataclass
class AttentionMaps:
    """What a model attends to on one text: `weights[layer, head, query, key]` (each row sums to 1, and
    is zero right of the diagonal) and the readable `tokens` they index."""

    tokens: list[str]
    weights: torch.Tensor

    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]


def attention_maps(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str) -> AttentionMaps:
    """Run `text` through `model` and collect every layer's attention weights.

    Only eager attention materialises the weights, so a model loaded with SDPA (the default) or flash
    attention is switched to eager for this one forward pass and switched back afterwards.
    """
    input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    if input_ids.shape[1] == 0:
        raise ValueError(f"The text {text!r} has no tokens; pass some text to look at.")
    limit = model.config.n_positions
    if input_ids.shape[1] > limit:
        raise ValueError(f"The text has {input_ids.shape[1]} tokens, more than the model's context of {limit}.")
    previous = model.config._attn_implementation
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            outputs = model(input_ids=input_ids.to(model.device), output_attentions=True)
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)
    weights = torch.stack([layer[0] for layer in outputs.attentions]).float().cpu()  # [layers, heads, q, k]
    tokens = [_readable(str(tokenizer.decode([token_id]))) for token_id in input_ids[0].tolist()]
    return AttentionMaps(tokens=tokens, weights=weights)


def plot_attention(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    *,
    layer: int | str = "all",
    head: int | str = "mean",
    query_token: str | None = None,
) -> Figure:
    """Attention heatmaps for `text`, query tokens down and key tokens across, one labelled panel per
    head or layer: `layer` is a layer index or "all"; `head` is a head index, "all" or "mean" (the
    average over heads). With `query_token`, a bar chart per layer shows where that token attends."""
    maps = attention_maps(model, tokenizer, text)
    layers = _select(layer, maps.num_layers, "layer", allowed=("all",))
    heads = _select(head, maps.num_heads, "head", allowed=("all", "mean"))
    panels = [
        (f"layer {index}, " + ("mean of heads" if head_index is None else f"head {head_index}"),
         maps.weights[index].mean(0) if head_index is None else maps.weights[index, head_index])
        for index in layers
        for head_index in heads
    ]  # fmt: skip
    if query_token is not None:
        return _plot_query(maps, panels, query_token, text)
    columns = min(len(panels), maps.num_heads if head == "all" and len(layers) > 1 else 4)
    rows = -(-len(panels) // columns)
    size = max(3.0, 0.32 * len(maps.tokens) + 1.5)
    figure, axes = plt.subplots(rows, columns, figsize=(size * columns, size * rows), squeeze=False)
    colour_map = plt.get_cmap("viridis").with_extremes(bad="#eeeeee")  # grey: keys in the query's future
    future = np.triu(np.ones((len(maps.tokens), len(maps.tokens)), dtype=bool), k=1)
    images = []
    for axis, (title, matrix) in zip(axes.flat, panels, strict=False):
        images.append(axis.imshow(np.ma.masked_where(future, matrix.numpy()), cmap=colour_map, vmin=0.0, vmax=1.0))
        axis.set_title(title, fontsize=10)
        positions = range(len(maps.tokens))
        axis.set_xticks(positions, maps.tokens, rotation=90, fontsize=8)
        axis.set_yticks(positions, maps.tokens, fontsize=8)
        grid_position = axis.get_subplotspec()
        if grid_position is not None and grid_position.is_last_row():
            axis.set_xlabel("key (attended to)")
        if grid_position is not None and grid_position.is_first_col():  # once per row: no overlap with neighbours
            axis.set_ylabel("query (attending)")
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(f"Attention on {text!r}", fontsize=12)
    figure.tight_layout()
    figure.colorbar(images[0], ax=axes.ravel().tolist(), shrink=0.8, label="attention weight")
    return figure


def _plot_query(maps: AttentionMaps, panels: list, query_token: str, text: str) -> Figure:
    """One bar chart per panel: the attention of `query_token` (its last occurrence) over the tokens up to it."""
    wanted = query_token.strip().lower()
    matches = [index for index, token in enumerate(maps.tokens) if token.strip("·").lower() == wanted]
    if not matches:
        raise ValueError(
            f"--query-token {query_token!r} is not one of the text's tokens: {[t.strip('·') for t in maps.tokens]}. "
            "Pick one of them (a word the tokenizer split into pieces needs one of its pieces)."
        )
    position = matches[-1]
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(max(6.0, 0.45 * position + 3), 2.0 * len(panels)), squeeze=False
    )
    keys = maps.tokens[: position + 1]
    rows = [matrix[position, : position + 1].numpy() for _, matrix in panels]
    top = 1.15 * max(float(row.max()) for row in rows)  # one scale for all panels, so layers compare
    for axis, (title, _), row in zip(axes[:, 0], panels, rows, strict=True):
        bars = axis.bar(range(len(keys)), row, color="tab:blue")
        bars[int(row.argmax())].set_color("tab:orange")  # where most of the attention goes
        axis.set_ylim(0, top)
        axis.set_ylabel("weight")
        axis.set_title(title, fontsize=10)
        axis.set_xticks(range(len(keys)), keys, rotation=90, fontsize=8)
    figure.suptitle(f"Where {maps.tokens[position].strip('·')!r} attends in {text!r}", fontsize=12)
    figure.tight_layout()
    return figure


def _select(choice: int | str, count: int, name: str, allowed: tuple[str, ...]) -> list[int | None]:
    """Indices to draw: all of them for "all", [None] (meaning the mean over heads) for "mean"."""
    if choice == "all":
        return list(range(count))
    if choice == "mean" and "mean" in allowed:
        return [None]
    try:
        index = int(choice)
    except (TypeError, ValueError):
        raise ValueError(f"--{name} must be an index or one of {list(allowed)}, got {choice!r}.") from None
    if not 0 <= index < count:
        raise ValueError(f"--{name} {index} is out of range: the model has {count} {name}s (0..{count - 1}).")
    return [index]


def _readable(piece: str) -> str:
    """A token as a tick label: a leading space shown as ·, line breaks as ⏎."""
    return piece.replace("\n", "⏎").replace(" ", "·") or "∅"
