"""Corpora for pretraining: load text with `datasets`, split off validation, pack tokens into blocks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import datasets

from .columns import dataset_columns, require_columns
from .sources import check_hub_repo, looks_like_local_path
from .tokenization import tokenize_dataset

# `datasets.load_dataset` builders for local files, by extension.
_BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
BUILTIN_CORPUS = "pydoc"


@dataclass
class Corpus:
    """Train and validation text, and whether rows are whole documents (then an end-of-text token separates them)
    or consecutive lines of one text (then they are simply concatenated)."""

    train: datasets.Dataset | datasets.IterableDataset
    validation: datasets.Dataset | datasets.IterableDataset
    text_column: str
    rows_are_documents: bool
    description: str


def builtin_corpus() -> datasets.Dataset:
    """The English text of Python's documentation topics, which ships with CPython: offline everywhere."""
    from pydoc_data.topics import topics

    return datasets.Dataset.from_dict({"text": [topics[name] for name in sorted(topics)]})


def load_corpus(
    dataset: str | None = None,
    *,
    dataset_config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    val_fraction: float = 0.1,
    streaming: bool = False,
) -> Corpus:
    """Load the training text: the built-in corpus (`dataset=None`), local files or a folder
    (.txt, .json/.jsonl, .csv, .parquet), or a Hub dataset id.

    The validation set is the dataset's own `validation` (or `test`) split when it has one, else the
    last `val_fraction` of the rows (a contiguous tail, as nanoGPT splits its text). With `streaming`,
    rows are read lazily (`datasets` IterableDataset), and without a validation split every
    round(1 / val_fraction)-th row is held out, since a stream's length is unknown.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    if dataset is None or dataset == BUILTIN_CORPUS:
        builtin = builtin_corpus()
        return _split(
            builtin.to_iterable_dataset() if streaming else builtin,
            "text",
            val_fraction,
            True,
            "Python documentation topics (pydoc_data)",
        )
    train, validation, rows_are_documents, description = _load_splits(dataset, dataset_config, split, streaming)
    if validation is not None:
        corpus = Corpus(train, validation, text_column, rows_are_documents, description)
        _check_columns(corpus)
        return corpus
    return _split(train, text_column, val_fraction, rows_are_documents, description)


def hub_dataset_id(dataset: str | None) -> str | None:
    """`dataset` when it names a Hub dataset, None for the built-in corpus or local files."""
    if dataset is None or dataset == BUILTIN_CORPUS or Path(dataset).exists():
        return None
    return dataset


def load_rows(
    dataset: str,
    *,
    dataset_config: str | None = None,
    split: str = "train",
    val_fraction: float = 0.1,
    seed: int = 1337,
) -> tuple[datasets.Dataset, datasets.Dataset, str]:
    """Labelled rows for fine-tuning: (train, validation, description).

    `dataset` is a local .csv/.json/.jsonl/.parquet file or folder, or a Hub dataset id. The validation
    rows are the dataset's own `validation` (or `test`) split, else a seeded random `val_fraction` of
    the rows: unlike running text, a labelled file is often sorted by label, so a tail would be one class.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}.")
    rows, validation, _, description = _load_splits(dataset, dataset_config, split, streaming=False)
    if validation is not None:
        return rows, validation, description
    if len(rows) < 2:
        raise ValueError(f"{description} has {len(rows)} rows; it needs at least 2 to hold some out for validation.")
    held_out = rows.train_test_split(test_size=max(1, round(len(rows) * val_fraction)), seed=seed)
    return held_out["train"], held_out["test"], description


def _load_splits(dataset: str, dataset_config: str | None, split: str, streaming: bool) -> tuple:
    """(the `split` rows, the dataset's own validation or test split or None, rows_are_documents, description)
    of local files or a Hub dataset."""
    path = Path(dataset).expanduser()
    if path.exists():
        loaded, rows_are_documents = _load_local(path, streaming)
        description = path.resolve().name  # the file or folder's name: no path of this machine goes in a card
    elif looks_like_local_path(dataset) or path.suffix in _BUILDERS:
        raise FileNotFoundError(f"No such file or folder: {dataset!r}.")
    else:
        check_hub_repo(dataset, "dataset", "dataset")
        # datasets 4+ runs no dataset scripts: a Hub dataset is data files only.
        loaded = datasets.load_dataset(dataset, dataset_config, streaming=streaming)  # user-named  # nosec B615
        rows_are_documents, description = True, dataset + (f" ({dataset_config})" if dataset_config else "")
    if split not in loaded:
        raise ValueError(f"{description} has no split {split!r}; its splits are {sorted(loaded)}.")
    validation_split = next((name for name in ("validation", "test") if name in loaded and name != split), None)
    return loaded[split], loaded[validation_split] if validation_split else None, rows_are_documents, description


def _load_local(
    path: Path, streaming: bool = False
) -> tuple[datasets.DatasetDict | datasets.IterableDatasetDict, bool]:
    files = sorted(p for p in path.rglob("*") if p.suffix in _BUILDERS) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"No {', '.join(sorted(_BUILDERS))} files in the folder {str(path)!r}.")
    builders = {_BUILDERS.get(file.suffix) for file in files}
    if None in builders or len(builders) > 1:
        raise ValueError(
            f"Cannot read {str(path)!r}: expected files of one kind among {sorted(_BUILDERS)}, got "
            f"{sorted({file.suffix or '(no extension)' for file in files})}."
        )
    for file in files:
        if file.stat().st_size == 0:
            raise ValueError(f"{str(file)!r} is empty.")
    builder = builders.pop()
    options = {"keep_linebreaks": True} if builder == "text" else {}
    try:
        loaded = datasets.load_dataset(  # a packaged builder over local files, not the Hub  # nosec B615
            builder, data_files=_files_by_split(path, files), streaming=streaming, **options
        )
    except (UnicodeDecodeError, datasets.exceptions.DatasetGenerationError) as error:
        raise ValueError(f"Could not read {str(path)!r} as {builder}: {error}. Is it UTF-8 {builder}?") from None
    # Lines of a text file are pieces of one text; rows of json/csv/parquet are separate documents.
    return loaded, builder != "text"


def _files_by_split(path: Path, files: list[Path]) -> dict[str, list[str]]:
    """A folder's files grouped into splits by their names (train.csv, validation.csv, test.csv, dev.csv,
    ...), with the naming rules of `datasets`; a file, or a folder of unnamed files, is all "train"."""
    if not path.is_dir():
        return {"train": [str(path)]}
    patterns = datasets.data_files.get_data_patterns(str(path))
    found = datasets.data_files.DataFilesDict.from_patterns(patterns, base_path=str(path))
    wanted = {str(file.resolve()) for file in files}
    by_split = {
        str(split): sorted(str(Path(file).resolve()) for file in split_files if str(Path(file).resolve()) in wanted)
        for split, split_files in found.items()
    }
    return {split: split_files for split, split_files in by_split.items() if split_files} or {"train": sorted(wanted)}


def _split(
    dataset: datasets.Dataset | datasets.IterableDataset,
    text_column: str,
    val_fraction: float,
    rows_are_documents: bool,
    description: str,
) -> Corpus:
    if isinstance(dataset, datasets.IterableDataset):
        every = max(2, round(1 / val_fraction))
        train = dataset.filter(lambda _, index: index % every != 0, with_indices=True)
        validation = dataset.filter(lambda _, index: index % every == 0, with_indices=True)
        corpus = Corpus(train, validation, text_column, rows_are_documents, description)
        _check_columns(corpus)
        return corpus
    if len(dataset) < 2:
        raise ValueError(f"{description} has {len(dataset)} rows; it needs at least 2 to split off validation text.")
    validation_rows = max(1, round(len(dataset) * val_fraction))
    train = dataset.select(range(len(dataset) - validation_rows))
    validation = dataset.select(range(len(dataset) - validation_rows, len(dataset)))
    corpus = Corpus(train, validation, text_column, rows_are_documents, description)
    _check_columns(corpus)
    return corpus


def _check_columns(corpus: Corpus) -> None:
    if not dataset_columns(corpus.train):
        raise ValueError(f"{corpus.description} is empty.")
    require_columns(corpus.train, {"--text-column": corpus.text_column}, corpus.description)


def pack_blocks(
    dataset: datasets.Dataset,
    tokenizer,
    *,
    block_size: int,
    text_column: str,
    rows_are_documents: bool,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """Tokenize `dataset` and cut the token stream into `input_ids` blocks of exactly `block_size`.

    Documents are separated by the end-of-text token. Packing is a batched `datasets.map` (cached);
    the tail of the stream that does not fill a block is dropped.
    """
    separator = [tokenizer.eos_token_id] if rows_are_documents else []

    def group(batch: dict) -> dict:
        stream = [token for ids in batch["input_ids"] for token in (*ids, *separator)]
        usable = len(stream) // block_size * block_size
        return {"input_ids": [stream[start : start + block_size] for start in range(0, usable, block_size)]}

    if isinstance(dataset, datasets.IterableDataset):
        # Lazily, batch by batch, as the stream is read; a map that changes the row count drops the inputs.
        encode = tokenizer.backend_tokenizer.encode_batch_fast
        columns = dataset_columns(dataset)

        def encode_and_group(batch: dict) -> dict:
            ids = [encoding.ids for encoding in encode(batch[text_column], add_special_tokens=False)]
            return group({"input_ids": ids})

        return dataset.map(encode_and_group, batched=True, batch_size=1000, remove_columns=columns)
    tokenized = tokenize_dataset(dataset, tokenizer, text_column=text_column, num_proc=num_proc)
    # One map batch holds the whole corpus for small corpora, so that no block is lost between batches.
    return tokenized.map(group, batched=True, batch_size=10_000, num_proc=num_proc, desc="Packing blocks")


def pack_corpus(
    corpus: Corpus,
    tokenizer,
    *,
    block_size: int,
    fix: str = "Use more text, a smaller --block-size, or a different --val-fraction.",
) -> dict[str, datasets.Dataset]:
    """`pack_blocks` on both parts of `corpus`: {"training": ..., "validation": ...}; a clear error, ending
    with `fix`, when a part is shorter than one block."""
    packed = {}
    for name, part in (("training", corpus.train), ("validation", corpus.validation)):
        packed[name] = pack_blocks(
            part,
            tokenizer,
            block_size=block_size,
            text_column=corpus.text_column,
            rows_are_documents=corpus.rows_are_documents,
        )
        if next(iter(packed[name]), None) is None:
            texts = [row[corpus.text_column] for row in itertools.islice(part, 1000)]
            tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])
            raise ValueError(
                f"The {name} text of {corpus.description} has about {tokens} tokens, fewer than one block of "
                f"{block_size}. {fix}"
            )
    return packed
