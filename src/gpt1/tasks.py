"""GPT-1's task input transformations (Radford et al., 2018, section 3.3, figure 1).

Every task becomes token sequences that start with the start token and end with the classify
(extract) token, whose final hidden state feeds the task head:

    classification   <|start|> text <|classify|>
    entailment       <|start|> premise <|delimiter|> hypothesis <|classify|>
    similarity       both orders: <|start|> a <|delimiter|> b <|classify|> and <|start|> b <|delimiter|> a <|classify|>
    multiple choice  one sequence per choice: <|start|> context <|delimiter|> answer <|classify|>

Each function returns a `BatchEncoding` with `input_ids`, `attention_mask` and, when labels are
given, `labels`. With `return_tensors="pt"` (the default) the batch is right-padded and ready for
`GPT1ForSequenceClassification` / `GPT1ForMultipleChoice`; with `return_tensors=None` the rows stay
unpadded lists, for `datasets.map`, and `TaskDataCollator` pads them per batch for `Trainer`.
Similarity gives `[batch, 2, seq]`: the classification head sums the two orders' representations.

Truncation keeps the start, delimiter and classify tokens and fits `max_length` (by default the
tokenizer's `model_max_length`, which follows the model's `n_positions`): the longest text part
loses tokens from its end first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from .tokenization import PAD_TOKEN, TASK_TOKENS


@dataclass(frozen=True)
class TaskTokenIds:
    start: int
    delimiter: int
    classify: int
    pad: int


def task_token_ids(tokenizer: PreTrainedTokenizerBase) -> TaskTokenIds:
    """The ids of GPT-1's start, delimiter, classify and padding tokens in `tokenizer`."""
    vocab = tokenizer.get_vocab()
    missing = [token for token in TASK_TOKENS.values() if token not in vocab]
    if missing:
        raise ValueError(
            f"The tokenizer has no GPT-1 task tokens {missing}. Train it with gpt1.train_tokenizer, or call "
            "gpt1.add_task_tokens(tokenizer) and then model.resize_token_embeddings(len(tokenizer))."
        )
    if tokenizer.pad_token_id is None:
        raise ValueError("The tokenizer has no padding token; set tokenizer.pad_token (gpt1.train_tokenizer does).")
    start, delimiter, classify = (vocab[token] for token in TASK_TOKENS.values())
    return TaskTokenIds(start=start, delimiter=delimiter, classify=classify, pad=tokenizer.pad_token_id)


def add_task_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add GPT-1's start, delimiter and classify tokens (and a padding token) to a tokenizer that lacks
    them, such as a converted openai-gpt one. Returns how many tokens were added: resize the model's
    embeddings to `len(tokenizer)` afterwards."""
    added = tokenizer.add_special_tokens(
        {"extra_special_tokens": list(TASK_TOKENS.values())}, replace_extra_special_tokens=False
    )
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    return added


def classification_inputs(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    labels: Sequence | None = None,
    *,
    max_length: int | None = None,
    return_tensors: str | None = "pt",
) -> BatchEncoding:
    """`<|start|> text <|classify|>` for each text."""
    ids = task_token_ids(tokenizer)
    rows = [_sequence(ids, [text], max_length or tokenizer.model_max_length) for text in _encode(tokenizer, texts)]
    return _batch(rows, labels, ids.pad, return_tensors)


def entailment_inputs(
    tokenizer: PreTrainedTokenizerBase,
    premises: Sequence[str],
    hypotheses: Sequence[str],
    labels: Sequence | None = None,
    *,
    max_length: int | None = None,
    return_tensors: str | None = "pt",
) -> BatchEncoding:
    """`<|start|> premise <|delimiter|> hypothesis <|classify|>` for each pair."""
    _same_length(premises=premises, hypotheses=hypotheses)
    ids = task_token_ids(tokenizer)
    limit = max_length or tokenizer.model_max_length
    rows = [
        _sequence(ids, [premise, hypothesis], limit)
        for premise, hypothesis in zip(_encode(tokenizer, premises), _encode(tokenizer, hypotheses), strict=True)
    ]
    return _batch(rows, labels, ids.pad, return_tensors)


def similarity_inputs(
    tokenizer: PreTrainedTokenizerBase,
    texts_a: Sequence[str],
    texts_b: Sequence[str],
    labels: Sequence | None = None,
    *,
    max_length: int | None = None,
    return_tensors: str | None = "pt",
) -> BatchEncoding:
    """Both orders of each pair, `[batch, 2, seq]`: similarity has no inherent order, so GPT-1 encodes
    a-then-b and b-then-a and adds the two representations before the classifier."""
    _same_length(texts_a=texts_a, texts_b=texts_b)
    ids = task_token_ids(tokenizer)
    limit = max_length or tokenizer.model_max_length
    rows = [
        [_sequence(ids, [a, b], limit), _sequence(ids, [b, a], limit)]
        for a, b in zip(_encode(tokenizer, texts_a), _encode(tokenizer, texts_b), strict=True)
    ]
    return _batch(rows, labels, ids.pad, return_tensors)


def multiple_choice_inputs(
    tokenizer: PreTrainedTokenizerBase,
    contexts: Sequence[str],
    choices: Sequence[Sequence[str]],
    labels: Sequence[int] | None = None,
    *,
    max_length: int | None = None,
    return_tensors: str | None = "pt",
) -> BatchEncoding:
    """`<|start|> context <|delimiter|> answer <|classify|>` for every answer, `[batch, num_choices, seq]`."""
    _same_length(contexts=contexts, choices=choices)
    check_choices(choices, labels)
    ids = task_token_ids(tokenizer)
    limit = max_length or tokenizer.model_max_length
    rows = []
    for context, options in zip(_encode(tokenizer, contexts), choices, strict=True):
        rows.append([_sequence(ids, [context, answer], limit) for answer in _encode(tokenizer, list(options))])
    return _batch(rows, labels, ids.pad, return_tensors)


def check_choices(
    choices: Sequence[Sequence[str]],
    labels: Sequence[int] | None = None,
    *,
    description: str = "The examples",
    labels_name: str = "labels",
) -> None:
    """Every example has the same number of choices, at least one, and (with labels) a label that indexes one.

    The one check of multiple-choice data: `multiple_choice_inputs` runs it on what it is given, and
    `gpt1 finetune` on a whole dataset before encoding it (its batches must all have one shape).
    """
    first_with: dict[int, int] = {}  # number of choices -> the first example that has that many
    for index, options in enumerate(choices):
        first_with.setdefault(len(options), index)
    if len(first_with) > 1:
        uneven = {index: count for count, index in sorted(first_with.items(), key=lambda item: item[1])}
        raise ValueError(
            f"{description} have different numbers of choices {sorted(first_with)}. Every example needs the same "
            f"number of choices, got {uneven} (example: number of choices). Pad the short ones with empty "
            "answers or drop the odd examples."
        )
    if set(first_with) == {0}:
        raise ValueError("Each example needs at least one choice.")
    for index, label in enumerate(labels if labels is not None else []):
        count = len(choices[index])
        if not hasattr(label, "__index__"):  # an int or a numpy integer, not "1" or 1.0
            raise ValueError(f"{labels_name}[{index}] = {label!r} is not a choice index (an integer).")
        if not 0 <= int(label) < count:
            raise ValueError(
                f"{labels_name}[{index}] = {label} is not a choice index; example {index} has {count} choices "
                f"(0..{count - 1})."
            )


@dataclass
class TaskDataCollator:
    """Pads unpadded task rows (from the functions above with `return_tensors=None`) into a batch.

    Works for `[seq]` rows (classification, entailment) and `[k, seq]` rows (similarity, multiple
    choice); use it as `Trainer(data_collator=TaskDataCollator(tokenizer))`.
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = [feature["input_ids"] for feature in features]
        labels = [feature["labels"] for feature in features] if "labels" in features[0] else None
        return dict(_batch(rows, labels, task_token_ids(self.tokenizer).pad, "pt", self.pad_to_multiple_of))


def _encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    if isinstance(texts, str):
        raise TypeError("Pass a list of texts, not a single string.")
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def _sequence(ids: TaskTokenIds, parts: list[list[int]], max_length: int) -> list[int]:
    """start, parts joined by the delimiter, classify; the longest part is cut first to fit."""
    structure = len(parts) + 1  # start + delimiters + classify
    budget = max_length - structure
    if budget < len(parts):
        raise ValueError(
            f"max_length={max_length} leaves no room for text: this format needs {structure} special tokens "
            f"plus at least one token per part ({len(parts)})."
        )
    lengths = [len(part) for part in parts]
    while sum(lengths) > budget:
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        lengths[longest] -= 1
    sequence = [ids.start]
    for index, (part, length) in enumerate(zip(parts, lengths, strict=True)):
        if index:
            sequence.append(ids.delimiter)
        sequence.extend(part[:length])
    sequence.append(ids.classify)
    return sequence


def _batch(
    rows: list,
    labels: Sequence | None,
    pad_id: int,
    return_tensors: str | None,
    pad_to_multiple_of: int | None = None,
) -> BatchEncoding:
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"Got {len(labels)} labels for {len(rows)} examples.")
    data: dict = {"input_ids": rows, "attention_mask": _nested_map(rows, lambda row: [1] * len(row))}
    if labels is not None:
        data["labels"] = list(labels)
    if return_tensors is None:
        return BatchEncoding(data)
    if return_tensors != "pt":
        raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}.")
    flat = [row for item in rows for row in (item if item and isinstance(item[0], list) else [item])]
    width = max(len(row) for row in flat)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    tensors = {
        "input_ids": torch.tensor(_nested_map(rows, lambda row: row + [pad_id] * (width - len(row)))),
        "attention_mask": torch.tensor(_nested_map(rows, lambda row: [1] * len(row) + [0] * (width - len(row)))),
    }
    if labels is not None:
        tensors["labels"] = torch.tensor(list(labels))
    return BatchEncoding(tensors)


def _nested_map(rows: list, function) -> list:
    """Apply `function` to each token row, for rows of `[seq]` or `[k, seq]`."""
    return [[function(row) for row in item] if item and isinstance(item[0], list) else function(item) for item in rows]


def _same_length(**columns: Sequence) -> None:
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"These inputs must have one entry per example, got lengths {lengths}.")
