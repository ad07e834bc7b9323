"""Pictures: attention maps and loss curves, from the Python API and the CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
import torch

from gpt1 import GPT1ForCausalLM
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
    loss_axis, rate_axis = figure.axes
    assert [line.get_label() for line in loss_axis.lines] == ["train loss", "validation loss"]
    assert [len(line.get_xdata()) for line in loss_axis.lines] == [3, 3]  # steps 10, 20, 30
    assert loss_axis.collections  # the shaded train–validation gap
    assert rate_axis.get_ylabel() == "learning rate"


def test_cli_writes_the_pictures(trained, tmp_path):
    attention_png, query_png, metrics_png = tmp_path / "attn.png", tmp_path / "it.png", tmp_path / "loss.png"
    gpt1_cli("attention", "--model", str(trained), TEXT, "--out", str(attention_png), "--layer", "all", "--head", "all")
    gpt1_cli("attention", "--model", str(trained), TEXT, "--out", str(query_png), "--query-token", "the")
    gpt1_cli("plot-metrics", str(trained), "--out", str(metrics_png))
    for picture in (attention_png, query_png, metrics_png):
        height, width, _ = matplotlib.image.imread(picture).shape
        assert height > 200 and width > 300, picture
    failed = gpt1_cli("attention", "--model", str(trained), TEXT, "--layer", "9", check=False)
    assert failed.returncode == 2 and "--layer 9 is out of range" in failed.stderr
    assert "Traceback" not in failed.stderr
