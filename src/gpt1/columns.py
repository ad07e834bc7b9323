"""The one check that a dataset has the columns an option names, used wherever data is read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dataset_columns(dataset: Any) -> list[str]:
    """A `datasets` dataset's columns; a stream that learns them only when read: its first row's (none if empty)."""
    return list(dataset.column_names or next(iter(dataset), {}))


def require_columns(dataset: Any, columns: Mapping[str, str], description: str) -> None:
    """A clear error when `dataset` lacks a column. `columns` maps the option that names each column
    (`--label-column`, or `text_column=` in the Python API) to the column it names."""
    present = dataset_columns(dataset)
    for option, column in columns.items():
        if column not in present:
            raise ValueError(
                f"{description} has no column {column!r}; its columns are {present}. Name the right one with {option}."
            )
