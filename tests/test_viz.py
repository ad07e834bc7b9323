"""Pictures: attention maps and loss curves, from the Python API and the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib.image
import pytest
import torch

from gpt1 import GPT1ForCausalLM
from gpt1.overfitting import turning_point
from gpt1.reporting import write_model_card
from gpt1.train import TrainConfig, train
from gpt1.viz import attention_maps, plot_attention, plot_metrics

from .helpers import gpt1_cli, make_tokenizer, tiny_config

TEXT = "The trophy didn't fit in the suitcase because it was too big."


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    model = GPT1ForCausalLM(tiny_config(vocab_size=len(tokenizer), n_layer=3, n_head=4)).eval()
    return model, tokenizer


def heatmap_axes(figure) -> list:
    return [axis for axis in figure.axes if axis.images]


def test_attention_maps_are_causal_and_each_row_sums_to_one(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    assert model.config._attn_implementation == "sdpa"
    maps = attention_maps(model, tokenizer, TEXT)
    length = len(tokenizer(TEXT).input_ids)
    assert maps.weights.shape == (3, 4, length, length) and len(maps.tokens) == length
    future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
    assert maps.weights[..., future].abs().max() == 0  # nothing attends to a later token
    torch.testing.assert_close(maps.weights.sum(-1), torch.ones(3, 4, length))
    assert model.config._attn_implementation == "sdpa"  # switched to eager for the pass, then back
    assert "".join(maps.tokens).replace("·", " ") == TEXT


@pytest.mark.parametrize(
    ("layer", "head", "panels", "first_title"),
    [("all", "mean", 3, "layer 0, mean of heads"), ("1", "all", 4, "layer 1, head 0"),
     ("all", "all", 12, "layer 0, head 0"), ("2", "3", 1, "layer 2, head 3")],
)  # fmt: skip
def test_one_labelled_panel_per_layer_or_head(model_and_tokenizer, layer, head, panels, first_title):
    model, tokenizer = model_and_tokenizer
    figure = plot_attention(model, tokenizer, TEXT, layer=layer, head=head)
    axes = heatmap_axes(figure)
    assert len(axes) == panels
    assert axes[0].get_title() == first_title
    tokens = attention_maps(model, tokenizer, TEXT).tokens
    assert [label.get_text() for label in axes[0].get_xticklabels()] == tokens
    assert [label.get_text() for label in axes[0].get_yticklabels()] == tokens
    assert any(axis.get_ylabel() == "attention weight" for axis in figure.axes)  # the colour scale


def test_query_token_draws_one_bar_chart_per_layer(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    figure = plot_attention(model, tokenizer, TEXT, query_token="it")
    assert len(figure.axes) == 3
    maps = attention_maps(model, tokenizer, TEXT)
    position = max(i for i, token in enumerate(maps.tokens) if token.strip("·") == "it")
    heights = [bar.get_height() for bar in figure.axes[1].patches]
    torch.testing.assert_close(
        torch.tensor(heights, dtype=torch.float32), maps.weights[1].mean(0)[position, : position + 1]
    )


def test_bad_choices_get_clear_errors(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="--layer 7 is out of range.*3 layers"):
        plot_attention(model, tokenizer, TEXT, layer=7)
    with pytest.raises(ValueError, match="--head must be an index or one of"):
        plot_attention(model, tokenizer, TEXT, head="max")
    with pytest.raises(ValueError, match="--query-token 'elephant' is not one of the text's tokens"):
        plot_attention(model, tokenizer, TEXT, query_token="elephant")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("run")
    return train(TrainConfig(output_dir=str(output), n_layer=2, n_head=2, n_embd=32, block_size=64, batch_size=8,
                             vocab_size=300, max_steps=30, eval_every=10, save_every=1000, eval_batches=2,
                             sample_tokens=4, lr=3e-3, warmup_steps=2))  # fmt: skip


def test_plot_metrics_draws_both_losses_the_gap_and_the_learning_rate(trained):
    figure = plot_metrics(trained)
    loss_axis, rate_axis, _ = figure.axes
    assert [line.get_label() for line in loss_axis.lines][:2] == ["train loss", "validation loss"]
    assert [len(line.get_xdata()) for line in loss_axis.lines][:2] == [3, 3]  # steps 10, 20, 30
    assert "train–validation gap" in [collection.get_label() for collection in loss_axis.collections]
    assert rate_axis.get_ylabel() == "learning rate"


def texts_of(axis) -> list[str]:
    return [text.get_text() for text in axis.texts]


def marked_points(axis) -> list[tuple[float, float]]:
    """Where the sample markers (hollow circles) sit on the loss axis."""
    return [tuple(point) for collection in axis.collections if collection.get_label() != "train–validation gap"
            for point in collection.get_offsets().tolist()]  # fmt: skip


def test_plot_metrics_shows_the_samples_beside_the_curve_with_markers_at_their_steps(trained):
    samples = [json.loads(line) for line in (trained / "samples.jsonl").read_text().splitlines()]
    figure = plot_metrics(trained)
    loss_axis, _, samples_axis = figure.axes
    assert not samples_axis.axison and "What the model wrote from the prompt 'The'" in samples_axis.get_title(
        loc="left"
    )
    shown = texts_of(samples_axis)
    for letter, sample in zip("ABC", samples, strict=True):  # 3 evaluations: all of them, first to last
        heading = f"{letter}   step {sample['step']} · validation loss {sample['val_loss']:.2f}"
        assert heading in shown and shown.index(heading) + 1 < len(shown)
        assert shown[shown.index(heading) + 1].replace("\n", " ").split() == sample["text"].split()
    assert marked_points(loss_axis) == [(sample["step"], pytest.approx(sample["val_loss"])) for sample in samples]
    assert texts_of(loss_axis) == ["A", "B", "C"]


def write_run(
    folder: Path, losses: list[tuple[float, float]], every: int = 100, texts: list[str] | None = None
) -> Path:
    """A run folder's metrics.jsonl (and samples.jsonl, given `texts`) from (train, validation) losses."""
    folder.mkdir(parents=True, exist_ok=True)
    steps = [every * (index + 1) for index in range(len(losses))]
    records = [{"step": step, "train_loss": train, "val_loss": val, "lr": 1e-3}
               for step, (train, val) in zip(steps, losses, strict=True)]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    if texts is not None:
        samples = [{**record, "prompt": "The", "text": text} for record, text in zip(records, texts, strict=True)]
        (folder / "samples.jsonl").write_text("".join(json.dumps(sample) + "\n" for sample in samples))
    return folder


OVERFITTING = [(4.0, 4.1), (3.0, 3.2), (2.5, 2.9), (2.0, 2.95), (1.6, 3.1), (1.2, 3.4)]  # best validation at step 300
IMPROVING = [(4.0, 4.1), (3.0, 3.2), (2.5, 2.9), (2.3, 2.8), (2.2, 2.75), (2.1, 2.7)]


def test_where_validation_loss_stops_improving_is_found_and_marked(tmp_path):
    overfit = write_run(tmp_path / "overfit", OVERFITTING)
    assert turning_point([json.loads(line) for line in (overfit / "metrics.jsonl").open()])["step"] == 300
    marks = [line for line in plot_metrics(overfit).axes[0].lines if "stops improving" in line.get_label()]
    assert [mark.get_label() for mark in marks] == ["validation loss stops improving (step 300, 2.90)"]
    assert list(marks[0].get_xdata()) == [300, 300]  # a vertical line at the best evaluation

    improving = write_run(tmp_path / "improving", IMPROVING)
    assert turning_point([json.loads(line) for line in (improving / "metrics.jsonl").open()]) is None
    assert not [line for line in plot_metrics(improving).axes[0].lines if "stops improving" in line.get_label()]
    # Validation loss that rises while training loss rises too is not memorising: nothing is marked.
    assert turning_point([{"step": 1, "train_loss": 2.0, "val_loss": 2.0}, {"step": 2, "train_loss": 2.5,
                                                                           "val_loss": 2.6}]) is None  # fmt: skip


def test_a_run_without_samples_draws_the_curve_alone_and_long_samples_are_cut_to_fit(tmp_path):
    figure = plot_metrics(write_run(tmp_path / "old", IMPROVING))  # runs from before samples.jsonl
    assert len(figure.axes) == 2
    texts = ["x" * 5000, "skipped", "line\n" * 200, "$math$ and `code`\n\n\n\nafter blanks", "skipped", "a\x19b\r\n"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no glyph missing: a control character is drawn as �
        figure = plot_metrics(write_run(tmp_path / "long", IMPROVING, texts=texts))
        figure.savefig(tmp_path / "long.png")
    bodies = texts_of(figure.axes[2])[1::2]  # heading, text, heading, text...
    assert bodies[2:] == ["$math$ and `code`\n\nafter blanks", "a�b"]  # first, two in between, last
    for body in bodies[:2]:  # cut to the room the panel has, the cut marked
        assert body.endswith("…") and 2 <= len(body.splitlines()) <= 8 and max(map(len, body.splitlines())) <= 100
    assert all(not text.get_parse_math() for text in figure.axes[2].texts)  # "$" is a dollar, not mathtext


def test_the_model_card_shows_samples_from_first_to_last(tmp_path):
    texts = [f"The sample of evaluation {index}" for index in range(6)]
    texts[3] = "The code ```python\nprint(1)\n``` inside"
    run = write_run(tmp_path / "run", OVERFITTING, texts=texts)
    model = GPT1ForCausalLM(tiny_config())
    card = write_model_card(run, model, "some text", 600, 1000, weights_step=300).read_text()
    section = card.split("### Samples during training", 1)[1].split("## Usage", 1)[0]
    shown = [0, 2, 3, 5]  # first, two in between, last
    positions = [section.index(f"**Step {100 * (index + 1)}**") for index in shown]
    assert positions == sorted(positions) and "evaluation 1" not in section and "evaluation 4" not in section
    assert "**Step 600** (validation loss 3.4000)\n\n```text\nThe sample of evaluation 5\n```" in section
    assert "````text\nThe code ```python\nprint(1)\n``` inside\n````" in section  # a fence its text cannot close
    assert "| weights | step 300: the lowest validation loss of 6 evaluations" in card
    assert "| validation loss | 2.9000 |" in card


def test_cli_writes_the_pictures(trained, tmp_path):
    attention_png, query_png, metrics_png = tmp_path / "attn.png", tmp_path / "it.png", tmp_path / "loss.png"
    gpt1_cli("attention", "--model", str(trained), TEXT, "--out", str(attention_png), "--layer", "all", "--head", "all")
    gpt1_cli("attention", "--model", str(trained), TEXT, "--out", str(query_png), "--query-token", "the")
    gpt1_cli("plot-metrics", str(trained), "--out", str(metrics_png))
    wide = matplotlib.image.imread(metrics_png).shape[1]
    gpt1_cli("plot-metrics", str(trained), "--out", str(tmp_path / "curve-alone.png"), "--samples", "0")
    assert matplotlib.image.imread(tmp_path / "curve-alone.png").shape[1] < wide * 0.7  # no samples panel
    refused = gpt1_cli("plot-metrics", str(trained), "--samples", "-1", check=False)
    assert refused.returncode == 2 and "--samples must be 0 (the curve alone) or more, got -1." in refused.stderr
    for picture in (attention_png, query_png, metrics_png):
        height, width, _ = matplotlib.image.imread(picture).shape
        assert height > 200 and width > 300, picture
    failed = gpt1_cli("attention", "--model", str(trained), TEXT, "--layer", "9", check=False)
    assert failed.returncode == 2 and "--layer 9 is out of range" in failed.stderr
    assert "Traceback" not in failed.stderr
