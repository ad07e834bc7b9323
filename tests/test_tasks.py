"""GPT-1's task input transformations, and the heads consuming them."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from gpt1 import (
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    TaskDataCollator,
    add_task_tokens,
    classification_inputs,
    entailment_inputs,
    multiple_choice_inputs,
    similarity_inputs,
    train_tokenizer,
)
from gpt1.tasks import task_token_ids

from .helpers import tiny_config

CORPUS = ["a man is playing a guitar", "the trophy did not fit in the suitcase", "it was too big, or too small"]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, kind="char", model_max_length=32)


def text_of(tokenizer, ids):
    return tokenizer.decode([token for token in ids if token != tokenizer.pad_token_id])


def test_classification_format(tokenizer):
    batch = classification_inputs(tokenizer, ["a man", "it was too big"], labels=[1, 0])
    assert batch["input_ids"].shape == (2, 16)
    assert text_of(tokenizer, batch["input_ids"][0].tolist()) == "<|start|>a man<|classify|>"
    assert batch["attention_mask"][0].tolist() == [1] * 7 + [0] * 9
    assert batch["input_ids"][0, 7:].eq(tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == [1, 0]


def test_entailment_format(tokenizer):
    batch = entailment_inputs(tokenizer, ["a man is playing"], ["a guitar"], labels=[2])
    assert (
        text_of(tokenizer, batch["input_ids"][0].tolist())
        == "<|start|>a man is playing<|delimiter|>a guitar<|classify|>"
    )
    assert batch["attention_mask"].all()


def test_similarity_gives_both_orders(tokenizer):
    batch = similarity_inputs(tokenizer, ["the trophy", "a man"], ["the suitcase", "a guitar"], labels=[0.8, 0.1])
    assert batch["input_ids"].shape[:2] == (2, 2)
    first, second = (text_of(tokenizer, row.tolist()) for row in batch["input_ids"][0])
    assert first == "<|start|>the trophy<|delimiter|>the suitcase<|classify|>"
    assert second == "<|start|>the suitcase<|delimiter|>the trophy<|classify|>"
    assert batch["labels"].dtype == torch.float32


def test_multiple_choice_format(tokenizer):
    batch = multiple_choice_inputs(
        tokenizer, ["the trophy", "a man"], [["too big", "too small"], ["guitar", "it"]], labels=[0, 0]
    )
    assert batch["input_ids"].shape[:2] == (2, 2)
    rows = [text_of(tokenizer, row.tolist()) for row in batch["input_ids"][0]]
    assert rows == [
        "<|start|>the trophy<|delimiter|>too big<|classify|>",
        "<|start|>the trophy<|delimiter|>too small<|classify|>",
    ]
    # "<|start|>a man<|delimiter|>it<|classify|>" is 10 tokens, then padding.
    assert batch["attention_mask"][1, 1].tolist() == [1] * 10 + [0] * (batch["input_ids"].shape[-1] - 10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.text(alphabet="abc ", min_size=1, max_size=80),
    second=st.text(alphabet="abc ", min_size=1, max_size=80),
    max_length=st.integers(min_value=5, max_value=40),
)
def test_truncation_keeps_the_structure_and_fits(tokenizer, first, second, max_length):
    ids = task_token_ids(tokenizer)
    batch = entailment_inputs(tokenizer, [first], [second], max_length=max_length, return_tensors=None)
    row = batch["input_ids"][0]
    assert len(row) <= max_length
    assert row[0] == ids.start and row[-1] == ids.classify and row.count(ids.delimiter) == 1
    premise = row[1 : row.index(ids.delimiter)]
    hypothesis = row[row.index(ids.delimiter) + 1 : -1]
    assert premise and hypothesis  # both parts survive
    assert premise == tokenizer(first).input_ids[: len(premise)]  # cut from the end, never reordered
    assert hypothesis == tokenizer(second).input_ids[: len(hypothesis)]
    if len(row) < max_length:
        assert len(premise) == len(first) and len(hypothesis) == len(second)  # nothing cut when it fits


def test_default_max_length_is_the_tokenizers_model_max_length(tokenizer):
    batch = classification_inputs(tokenizer, ["a man is playing a guitar " * 4])
    assert batch["input_ids"].shape[-1] == 32 == tokenizer.model_max_length
    assert batch["input_ids"][0, -1] == task_token_ids(tokenizer).classify


def test_collator_pads_unpadded_rows_for_trainer(tokenizer):
    rows = multiple_choice_inputs(
        tokenizer, ["a", "the trophy"], [["b", "cc"], ["d", "e"]], [1, 0], return_tensors=None
    )
    features = [{key: rows[key][index] for key in rows} for index in range(2)]
    batch = TaskDataCollator(tokenizer, pad_to_multiple_of=8)(features)
    assert batch["input_ids"].shape == (2, 2, 16)
    padded = multiple_choice_inputs(tokenizer, ["a", "the trophy"], [["b", "cc"], ["d", "e"]], [1, 0])
    width = padded["input_ids"].shape[-1]
    assert torch.equal(batch["input_ids"][..., :width], padded["input_ids"])
    assert torch.equal(batch["attention_mask"][..., :width], padded["attention_mask"])
    assert batch["labels"].tolist() == [1, 0]


def test_batches_feed_the_heads(tokenizer):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=3)
    classifier = GPT1ForSequenceClassification(config).eval()
    outputs = classifier(**entailment_inputs(tokenizer, ["a man", "the trophy"], ["a guitar", "it"], labels=[2, 0]))
    assert outputs.logits.shape == (2, 3) and outputs.loss.isfinite()
    chooser = GPT1ForMultipleChoice(config).eval()
    outputs = chooser(**multiple_choice_inputs(tokenizer, ["a man"], [["guitar", "it", "too"]], labels=[2]))
    assert outputs.logits.shape == (1, 3) and outputs.loss.isfinite()


def test_similarity_head_sums_both_orders_so_order_does_not_matter(tokenizer):
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=1)
    model = GPT1ForSequenceClassification(config).eval()
    forward = similarity_inputs(tokenizer, ["the trophy", "a man"], ["the suitcase", "a guitar is"])
    backward = similarity_inputs(tokenizer, ["the suitcase", "a guitar is"], ["the trophy", "a man"])
    torch.testing.assert_close(model(**forward).logits, model(**backward).logits)
    # ...and equals the classifier applied to the sum of the two sequences' last-token states.
    rows = forward["input_ids"][0]
    states = [model.transformer(row[row != tokenizer.pad_token_id][None]).last_hidden_state[0, -1] for row in rows]
    torch.testing.assert_close(
        model(**forward).logits[0], model.classifier(states[0] + states[1]), atol=1e-5, rtol=1e-5
    )


class TestBadInput:
    def test_uneven_choices(self, tokenizer):
        with pytest.raises(ValueError, match=r"same number of choices, got \{0: 2, 1: 3\}"):
            multiple_choice_inputs(tokenizer, ["a", "b"], [["x", "y"], ["x", "y", "z"]])

    def test_label_beyond_choices(self, tokenizer):
        with pytest.raises(ValueError, match=r"labels\[0\] = 2 is not a choice index; example 0 has 2 choices"):
            multiple_choice_inputs(tokenizer, ["a"], [["x", "y"]], labels=[2])

    def test_mismatched_columns(self, tokenizer):
        with pytest.raises(ValueError, match=r"lengths \{'premises': 2, 'hypotheses': 1\}"):
            entailment_inputs(tokenizer, ["a", "b"], ["c"])

    def test_labels_count(self, tokenizer):
        with pytest.raises(ValueError, match="Got 1 labels for 2 examples"):
            classification_inputs(tokenizer, ["a", "b"], labels=[1])

    def test_max_length_too_small_for_the_structure(self, tokenizer):
        with pytest.raises(ValueError, match="max_length=4 leaves no room"):
            entailment_inputs(tokenizer, ["a"], ["b"], max_length=4)

    def test_tokenizer_without_task_tokens(self):
        raw = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, "<unk>")))
        with pytest.raises(ValueError, match=r"no GPT-1 task tokens .*add_task_tokens"):
            classification_inputs(raw, ["a"])
        assert add_task_tokens(raw) == 4  # start, delimiter, classify and a padding token
        batch = classification_inputs(raw, ["a"])
        assert batch["input_ids"].tolist() == [
            [raw.convert_tokens_to_ids("<|start|>"), 0, raw.convert_tokens_to_ids("<|classify|>")]
        ]
