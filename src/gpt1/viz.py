"""Pictures of a model and its training: the attention explorer (an HTML page, `attention_html`), and
matplotlib figures of attention and loss curves, which need matplotlib (the `viz` extra)."""

from __future__ import annotations

import textwrap
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .explorer import attention_html, readable_token, record_attention

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .metrics import METRICS, SAMPLES, SAMPLES_SHOWN, spread
from .overfitting import turning_point

__all__ = ["AttentionMaps", "attention_html", "attention_maps", "plot_attention", "plot_metrics", "save_figure"]


def _pyplot() -> Any:
    """matplotlib's pyplot, drawing to files (no screen needed); a clear error where it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "Drawing pictures needs matplotlib: `python3 scripts/install.py --extras viz` in gpt1's clone, "
            "or `pip install matplotlib`. (The HTML attention explorer, attention_html, does not.)"
        ) from error
    return plt


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as a PNG and free it."""
    plt = _pyplot()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return target


def plot_metrics(path: str | Path, samples: int = SAMPLES_SHOWN, strict: bool = True) -> Figure:
    """Train and validation loss against step (the gap between them shaded), learning rate on a second axis,
    and the step where validation loss stopped improving while training loss still fell, marked. When the
    run kept its samples (samples.jsonl beside metrics.jsonl), `samples` of them, from first to last, fill a
    panel to the right, each lettered like its marker on the validation curve. A line of the logs that is no
    record is a ValueError naming it (`strict`, as `gpt1 plot-metrics` reads them), or is skipped with a warning."""
    plt = _pyplot()
    if samples < 0:
        raise ValueError(f"--samples must be 0 (the curve alone) or more, got {samples}.")
    run = Path(path)
    records = METRICS.read(run, strict=strict)
    shown = spread(SAMPLES.read(run, missing_ok=True, strict=strict), samples) if run.is_dir() and samples > 0 else []
    steps = [record["step"] for record in records]
    train = [record["train_loss"] for record in records]
    val = [record["val_loss"] for record in records]
    if shown:
        figure = plt.figure(figsize=(15, 6))
        grid = figure.add_gridspec(1, 2, width_ratios=(1.15, 1), wspace=0.28)
        loss_axis = figure.add_subplot(grid[0, 0])
    else:
        figure, loss_axis = plt.subplots(figsize=(8, 4.5))
    loss_axis.plot(steps, train, marker="o", label="train loss")
    loss_axis.plot(steps, val, marker="o", label="validation loss")
    loss_axis.fill_between(steps, train, val, alpha=0.15, color="grey", label="train–validation gap")
    turn = turning_point(records)
    if turn is not None:
        loss_axis.axvline(
            turn["step"], color="tab:red", linestyle="--", linewidth=1.2,
            label=f"validation loss stops improving (step {turn['step']:,}, {turn['val_loss']:.2f})",
        )  # fmt: skip
        loss_axis.annotate(
            "after it, training loss falls on and\nvalidation loss does not: memorising",
            xy=(turn["step"], 1.0), xycoords=("data", "axes fraction"), xytext=(5, -5), textcoords="offset points",
            color="tab:red", fontsize=9, ha="left", va="top",
        )  # fmt: skip
    for letter, sample in zip(_LETTERS, shown, strict=False):
        loss_axis.scatter(
            [sample["step"]], [sample["val_loss"]], s=140, facecolors="none", edgecolors="black", linewidths=1.2,
            zorder=3, label="samples shown at right" if letter == _LETTERS[0] else None,
        )  # fmt: skip
        loss_axis.annotate(letter, (sample["step"], sample["val_loss"]), xytext=(0, 10), textcoords="offset points",
                           ha="center", va="bottom", fontsize=10, fontweight="bold")  # fmt: skip
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("cross-entropy loss (nats/token)")
    loss_axis.grid(alpha=0.3)
    rate_axis = loss_axis.twinx()
    rate_axis.plot(
        steps,
        [_number(record.get("lr")) for record in records],
        color="tab:green",
        linestyle=":",
        marker=".",
        label="learning rate",
    )
    rate_axis.set_ylabel("learning rate")
    lines = loss_axis.get_legend_handles_labels()
    rates = rate_axis.get_legend_handles_labels()
    loss_axis.margins(y=0.12)  # room for the letters above the markers
    # Below the plot, where it covers no curve.
    loss_axis.legend(lines[0] + rates[0], lines[1] + rates[1], loc="upper center", bbox_to_anchor=(0.5, -0.13),
                     ncol=3, fontsize=9, frameon=False)  # fmt: skip
    loss_axis.set_title(f"Training run {run.resolve().name}: loss by step")
    if shown:
        _draw_samples(figure.add_subplot(grid[0, 1]), shown, figure)
    else:
        figure.tight_layout()
    return figure


def _number(value: float | None) -> float:
    """A number of a log record that may be missing (null): NaN, which matplotlib leaves out of a line."""
    return float("nan") if value is None else value


_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SAMPLE_FONT_SIZE = 9.0


def _draw_samples(axis, shown: list[dict], figure: Figure) -> None:
    """The samples as text, one slot each from the top: a lettered heading with the step and validation
    loss, then the text (monospace, wrapped to the panel, cut to the lines the slot has room for)."""
    axis.set_axis_off()
    box = axis.get_position()  # down to the figure's foot: the legend is below the curve, not below the samples
    axis.set_position((box.x0, 0.02, box.width, box.y1 - 0.02))
    prompt = shown[0].get("prompt", "")
    source = f"the prompt {prompt!r}" if prompt else "an empty prompt"
    axis.set_title(f"What the model wrote from {source}, from first to last", fontsize=11, loc="left")
    width_in = axis.get_position().width * figure.get_figwidth()
    height_pt = axis.get_position().height * figure.get_figheight() * 72
    columns = max(20, int(width_in * 72 / (0.62 * _SAMPLE_FONT_SIZE)))
    line_pt = 1.25 * _SAMPLE_FONT_SIZE
    slot_pt = height_pt / len(shown)
    room = max(1, int(slot_pt / line_pt) - 3)  # a slot's lines, less its heading and a gap before the next
    for index, (letter, sample) in enumerate(zip(_LETTERS, shown, strict=False)):
        top = 1.0 - index / len(shown)
        axis.text(
            0.0, top, f"{letter}   step {sample['step']:,} · validation loss {sample['val_loss']:.2f}",
            transform=axis.transAxes, va="top", ha="left", fontsize=10, fontweight="bold", parse_math=False,
        )  # fmt: skip
        axis.text(
            0.02, top - 1.5 * line_pt / height_pt, _fit(sample["text"], columns, room),
            transform=axis.transAxes, va="top", ha="left", fontsize=_SAMPLE_FONT_SIZE, family="monospace",
            linespacing=1.2, parse_math=False, clip_on=True,
        )  # fmt: skip


def _fit(text: str, columns: int, rows: int) -> str:
    """`text` wrapped to `columns` and cut to `rows` lines (… marks a cut); runs of blank lines become one,
    and control characters (an untrained byte-level model writes them) show as �."""
    text = "\n".join(text.expandtabs(4).splitlines())  # every kind of line break as \n
    text = "".join("�" if unicodedata.category(char)[0] == "C" and char != "\n" else char for char in text)
    lines: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            if lines and lines[-1]:
                lines.append("")
            continue
        lines += textwrap.wrap(line.rstrip(), columns, drop_whitespace=False) or [""]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) > rows:
        lines = lines[:rows]
        lines[-1] = lines[-1][: columns - 1] + "…"
    return "\n".join(lines) or "(nothing)"


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
    weights = record_attention(model, input_ids).weights  # [layers, heads, query, key]
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
    plt = _pyplot()
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
    plt = _pyplot()
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
    """A token as a tick label: as the explorer shows it (line breaks as ⏎), with spaces shown as ·."""
    return readable_token(piece).replace(" ", "·")
