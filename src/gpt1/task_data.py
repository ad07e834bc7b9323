"""Task data for fine-tuning: load the rows, check their columns, labels and choices, and encode them in
GPT-1's task formats (`gpt1.tasks`) as `Trainer` inputs; for causal-lm, packed blocks of text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase, default_data_collator

from .columns import require_columns
from .data import load_corpus, load_rows, pack_corpus
from .options import FinetuneConfig
from .tasks import TaskDataCollator, check_choices, classification_inputs, entailment_inputs, multiple_choice_inputs
from .tokenization import use_task_template


@dataclass
class PreparedTask:
    """A task's model inputs, ready for `Trainer`."""

    train: datasets.Dataset
    validation: datasets.Dataset
    collator: Any
    label_names: list[str] | None
    description: str


def prepare_task(config: FinetuneConfig, tokenizer: PreTrainedTokenizerBase) -> PreparedTask:
    """Load the dataset and turn it into the task's inputs: packed blocks for causal-lm, GPT-1's
    `<|start|> ... <|classify|>` sequences for the heads."""
    if config.task == "causal-lm":
        corpus = load_corpus(
            config.dataset,
            dataset_config=config.dataset_config,
            split=config.split,
            text_column=config.text_column,
            val_fraction=config.val_fraction,
        )
        block_size = min(config.max_length or tokenizer.model_max_length, tokenizer.model_max_length)
        blocks = pack_corpus(corpus, tokenizer, block_size=block_size, fix="Use more text or a smaller --max-length.")
        with_labels = {name: part.map(lambda row: {"labels": row["input_ids"]}) for name, part in blocks.items()}
        return PreparedTask(
            with_labels["training"], with_labels["validation"], default_data_collator, None, corpus.description
        )

    train, validation, description = load_rows(
        config.dataset,
        dataset_config=config.dataset_config,
        split=config.split,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    if config.task == "classification":
        columns = {"text-column": config.text_column, "label-column": config.label_column}
        if config.text_pair_column:
            columns["text-pair-column"] = config.text_pair_column
        _require_columns(train, validation, columns, description)
        label_names = _label_names(train, validation, config.label_column, description)
        use_task_template(tokenizer)  # pipeline("text-classification") then builds GPT-1's format itself
        is_class_label = isinstance(train.features.get(config.label_column), datasets.ClassLabel)
        encode = _classification_encoder(config, tokenizer, label_names, labels_are_ids=is_class_label)
    else:
        columns = {
            "context-column": config.context_column,
            "choices-column": config.choices_column,
            "label-column": config.label_column,
        }
        _require_columns(train, validation, columns, description)
        _check_choices(train, validation, config, description)
        label_names = None
        encode = _multiple_choice_encoder(config, tokenizer)
    encoded = [
        part.map(encode, batched=True, remove_columns=part.column_names, desc=f"Encoding {name}")
        for name, part in (("train", train), ("validation", validation))
    ]
    return PreparedTask(encoded[0], encoded[1], TaskDataCollator(tokenizer), label_names, description)


def _require_columns(
    train: datasets.Dataset, validation: datasets.Dataset, columns: dict[str, str], description: str
) -> None:
    for part, name in ((train, "training"), (validation, "validation")):
        require_columns(
            part, {f"--{option}": column for option, column in columns.items()}, f"The {name} split of {description}"
        )


def _classification_encoder(
    config: FinetuneConfig, tokenizer: PreTrainedTokenizerBase, label_names: list[str], labels_are_ids: bool
):
    """`labels_are_ids`: the column is a `datasets.ClassLabel`, whose values are already class ids."""
    label_ids = {name: index for index, name in enumerate(label_names)}

    def encode(batch: dict) -> dict:
        column = batch[config.label_column]
        labels = [int(label) for label in column] if labels_are_ids else [label_ids[str(label)] for label in column]
        texts = [str(text) for text in batch[config.text_column]]
        if config.text_pair_column:
            pairs = [str(text) for text in batch[config.text_pair_column]]
            return dict(
                entailment_inputs(tokenizer, texts, pairs, labels, max_length=config.max_length, return_tensors=None)
            )
        return dict(classification_inputs(tokenizer, texts, labels, max_length=config.max_length, return_tensors=None))

    return encode


def _multiple_choice_encoder(config: FinetuneConfig, tokenizer: PreTrainedTokenizerBase):
    def encode(batch: dict) -> dict:
        return dict(
            multiple_choice_inputs(
                tokenizer,
                [str(text) for text in batch[config.context_column]],
                [[str(choice) for choice in choices] for choices in batch[config.choices_column]],
                [int(label) for label in batch[config.label_column]],
                max_length=config.max_length,
                return_tensors=None,
            )
        )

    return encode


def _label_names(train: datasets.Dataset, validation: datasets.Dataset, column: str, description: str) -> list[str]:
    """Class names in id order: a ClassLabel's names, or the sorted distinct labels of the training rows."""
    feature = train.features.get(column)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    seen = set(train.unique(column))
    if None in seen:
        raise ValueError(f"Some training rows of {description} have no {column!r} value; fill or drop them.")
    if len(seen) < 2:
        raise ValueError(
            f"The training rows of {description} have a single label {sorted(map(str, seen))}; "
            "classification needs at least two."
        )
    names = [str(label) for label in sorted(seen)]
    unknown = sorted({str(label) for label in validation.unique(column)} - set(names))
    if unknown:
        raise ValueError(
            f"The validation rows of {description} have labels {unknown} that no training row has "
            f"(the label set is {names}). Fix the labels or add training rows for them."
        )
    return names


def _check_choices(
    train: datasets.Dataset, validation: datasets.Dataset, config: FinetuneConfig, description: str
) -> None:
    """Every row holds a list of answers, all rows the same number of them, and a label indexing one."""
    for part, name in ((train, "training"), (validation, "validation")):
        choices = part[config.choices_column]
        for index, answers in enumerate(choices):
            if not isinstance(answers, (list, tuple)):
                raise ValueError(
                    f"Row {index} of the {name} rows of {description}: --choices-column {config.choices_column!r} "
                    f"must hold a list of answers, got {type(answers).__name__} {answers!r}."
                )
    # One check over both splits together: every batch of the collator must have the same shape.
    check_choices(
        list(train[config.choices_column]) + list(validation[config.choices_column]),
        list(train[config.label_column]) + list(validation[config.label_column]),
        description=f"The rows of {description}",
        labels_name=config.label_column,
    )
