"""Pictures of a model and its training. Needs matplotlib: `pip install "gpt1[viz]"`."""

from __future__ import annotations

from pathlib import Path

try:
    import matplotlib

    matplotlib.use("Agg")  # draw to files; no screen needed
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'Drawing pictures needs matplotlib: pip install "gpt1[viz]" (or pip install matplotlib).'
    ) from error

from .reporting import read_metrics


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
    rate_axis.plot(steps, [record["lr"] for record in records], color="tab:green", linestyle=":", label="learning rate")
    rate_axis.set_ylabel("learning rate")
    lines = loss_axis.get_legend_handles_labels()
    rates = rate_axis.get_legend_handles_labels()
    loss_axis.legend(lines[0] + rates[0], lines[1] + rates[1], loc="upper right")
    loss_axis.set_title(f"Training run {Path(path).resolve().name}: loss by step")
    figure.tight_layout()
    return figure
