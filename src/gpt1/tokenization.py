"""Tokenizers trained on the user's own text, with GPT-1's special tokens.

`train_tokenizer` builds a `tokenizers` pipeline and returns a `PreTrainedTokenizerFast`, which
`save_pretrained` writes as tokenizer.json + tokenizer_config.json: `AutoTokenizer` loads it back
with no custom code.
"""

from __future__ import annotations

import itertools
import os
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .columns import require_columns
from .model import GPT1Config

PAD_TOKEN = "<|pad|>"  # nosec B105
END_OF_TEXT_TOKEN = "<|endoftext|>"  # nosec B105
UNKNOWN_TOKEN = "<|unk|>"  # nosec B105
# GPT-1's fine-tuning tokens: a start token, a delimiter between the parts of structured inputs,
# and the extract (classify) token whose final hidden state feeds the task head.
# Bandit takes token texts for passwords (B105).
TASK_TOKENS = {  # nosec B105
    "start_token": "<|start|>",
    "delimiter_token": "<|delimiter|>",
    "classify_token": "<|classify|>",
}

TokenizerKind = Literal["bpe", "char", "word"]
TOKENIZER_KINDS: tuple[TokenizerKind, ...] = ("bpe", "char", "word")
DEFAULT_BPE_VOCAB_SIZE = 8192
# 8192 pieces cover 97.6% of tinyshakespeare's words, punctuation marks and spaces, and all of the built-in corpus.
DEFAULT_WORD_VOCAB_SIZE = 8192
# Every kind encodes the space and the line break, whatever it was trained on: rows read with str.splitlines()
# or datasets' text builder hold no line break, and a text of one word a row holds no space either.
ALWAYS_ENCODED = (" ", "\n")
_BATCH = 1000

# How the word tokenizer cuts text into the pieces it counts. Each piece carries the space before it, so that
# joining them gives the text back: a contraction after a letter ('s, 't, 're, 've, 'm, 'll, 'd), a word (letters
# and their combining marks), a number, one punctuation mark or symbol, or a run of whitespace. A run of whitespace
# before a piece leaves its last space to that piece (GPT-2's rule): "a   b" -> "a", "  ", " b".
_CONTRACTION = r"(?<=\p{L})['’](?i:s|t|re|ve|m|ll|d)(?![\p{L}\p{M}])"
_WORD_PIECES = rf"{_CONTRACTION}| ?[\p{{L}}\p{{M}}]+| ?\p{{N}}+| ?[^\s\p{{L}}\p{{N}}]|\s+(?= \S)|\s+"


def special_tokens(kind: TokenizerKind) -> list[str]:
    """The special tokens of a tokenizer of this kind, in id order (they take ids 0, 1, ...).

    Byte-level BPE encodes any text, so only the kinds that can meet an unknown piece have `<|unk|>`.
    """
    tokens = [PAD_TOKEN, END_OF_TEXT_TOKEN, *TASK_TOKENS.values()]
    return tokens if kind == "bpe" else [*tokens, UNKNOWN_TOKEN]


def train_tokenizer(
    source: str | os.PathLike | Iterable[str] | Iterable[os.PathLike],
    kind: TokenizerKind = "bpe",
    vocab_size: int | None = None,
    *,
    text_column: str = "text",
    model_max_length: int = GPT1Config.n_positions,
    min_frequency: int = 2,
    show_progress: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on `source` and return it as a `PreTrainedTokenizerFast`.

    Args:
        source: a text file or folder of .txt files; an iterable of text file paths (`Path` objects,
            or strings that all name existing files); an iterable of texts; or a `datasets.Dataset`
            with a `text_column`.
        kind: "bpe" for byte-level BPE (no input is ever unknown); "char" for one token per
            character seen (unseen characters become `<|unk|>`); or "word" for one token per word,
            number, punctuation mark or run of whitespace, keeping the `vocab_size` most frequent
            pieces (the others become `<|unk|>`). Every kind encodes the space and the line break,
            even when the training text had none.
        vocab_size: total vocabulary, special tokens included. BPE needs at least 256 byte tokens
            plus the special tokens (default 8192); char needs the alphabet plus the special tokens
            (default: exactly that); word needs the special tokens plus the space and the line break
            (default 8192).
        text_column: the column to read when `source` is a `datasets.Dataset`.
        model_max_length: the longest input the paired model takes (its `n_positions`).
        min_frequency: BPE merges need a pair seen at least this often.

    Text decodes back exactly (`decode(encode(text)) == text`) whenever the vocabulary covers it: always
    for BPE; for char, when every character was seen in training; for word, when every word, number and
    punctuation mark of it is among the kept pieces. Whitespace is always covered: a run the vocabulary
    lacks splits into the runs it holds, down to single spaces and line breaks, and an unknown word
    keeps the space before it, so "a zebra" decodes as "a <|unk|>". `vocabulary_coverage` measures how
    much of a text a vocabulary covers.
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"kind must be 'bpe', 'char' or 'word', got {kind!r}.")
    texts = _texts_from(source, text_column)
    if kind == "char":
        tokenizer = _train_char(texts, vocab_size)
    elif kind == "word":
        tokenizer = _train_word(texts, vocab_size, show_progress)
    else:
        tokenizer = _train_bpe(texts, vocab_size, min_frequency, show_progress)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        bos_token=END_OF_TEXT_TOKEN,
        eos_token=END_OF_TEXT_TOKEN,
        unk_token=None if kind == "bpe" else UNKNOWN_TOKEN,
        extra_special_tokens=dict(TASK_TOKENS),
        model_max_length=model_max_length,
        # decode(encode(text)) must give back the text, spaces before punctuation included.
        clean_up_tokenization_spaces=False,
    )


def _train_char(texts: Iterable[str], vocab_size: int | None) -> Tokenizer:
    alphabet: set[str] = set()
    for text in texts:
        alphabet.update(text)
    if not alphabet:
        raise ValueError("The corpus is empty: there is no text to build a char tokenizer from.")
    alphabet.update(ALWAYS_ENCODED)
    specials = special_tokens("char")
    needed = len(alphabet) + len(specials)
    if vocab_size is not None and vocab_size < needed:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for a char tokenizer of this corpus: it has {len(alphabet)} "
            f"distinct characters (the space and the line break always among them) plus {len(specials)} special "
            f"tokens = {needed}. Use vocab_size >= {needed} (or leave it unset)."
        )
    vocab = {token: index for index, token in enumerate([*specials, *sorted(alphabet)])}
    # A BPE model with no merges splits its input into characters and looks each one up: one token
    # per character, with no pre-tokenizer to run (twice as fast as splitting with a regex first).
    # Each unseen character becomes its own <|unk|>; Fuse joins tokens back with nothing in between.
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNKNOWN_TOKEN, fuse_unk=False))
    tokenizer.decoder = decoders.Fuse()
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _train_bpe(texts: Iterable[str], vocab_size: int | None, min_frequency: int, show_progress: bool) -> Tokenizer:
    specials = special_tokens("bpe")
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    needed = len(byte_alphabet) + len(specials)
    vocab_size = DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size
    if vocab_size < needed:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for byte-level BPE: it needs the {len(byte_alphabet)} byte "
            f"tokens plus {len(specials)} special tokens = {needed}. Use vocab_size >= {needed}."
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=byte_alphabet,
        show_progress=show_progress,
    )
    seen_text = _NonEmpty(texts)
    tokenizer.train_from_iterator(seen_text, trainer=trainer)
    if not seen_text.any_text:
        raise ValueError("The corpus is empty: there is no text to train a BPE tokenizer on.")
    return tokenizer


def _train_word(texts: Iterable[str], vocab_size: int | None, show_progress: bool) -> Tokenizer:
    specials = special_tokens("word")
    smallest = len(specials) + len(ALWAYS_ENCODED)
    vocab_size = DEFAULT_WORD_VOCAB_SIZE if vocab_size is None else vocab_size
    if vocab_size < smallest:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for a word tokenizer: it needs the {len(specials)} special tokens "
            f"plus the space and the line break = {smallest}, before any word. Use vocab_size >= {smallest}; a few "
            f"thousand keeps most words of a text (default {DEFAULT_WORD_VOCAB_SIZE})."
        )
    counting = Tokenizer(models.WordLevel(unk_token=UNKNOWN_TOKEN))
    counting.pre_tokenizer = _split(_WORD_PIECES)
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=show_progress)
    seen_text = _NonEmpty(texts)
    counting.train_from_iterator(seen_text, trainer=trainer)
    if not seen_text.any_text:
        raise ValueError("The corpus is empty: there is no text to train a word tokenizer on.")
    # The trainer numbers the pieces after the special tokens by falling frequency: the space and the line
    # break, when the text had too few of them to be kept, take the places of the rarest pieces.
    trained = sorted(counting.get_vocab(with_added_tokens=False).items(), key=lambda item: item[1])
    pieces = [piece for piece, _ in trained if piece not in specials]
    missing = [piece for piece in ALWAYS_ENCODED if piece not in pieces]
    pieces = [*pieces[: vocab_size - len(specials) - len(missing)], *missing]
    vocab = {piece: index for index, piece in enumerate([*specials, *pieces])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN_TOKEN))
    tokenizer.pre_tokenizer = _split(_word_pattern(pieces))
    tokenizer.decoder = decoders.Fuse()  # the pieces carry their spaces: joining them gives the text
    tokenizer.add_special_tokens(specials)
    return tokenizer


def _word_pattern(vocabulary: list[str]) -> str:
    """How the word tokenizer cuts text once its vocabulary is known: as in training, except that a piece takes
    the space before it only when the vocabulary holds it with that space, and a run of whitespace splits into
    the runs the vocabulary holds, longest first, down to single characters.

    So whitespace is never lost: an unknown " zebra" encodes as " " + `<|unk|>`, " b" as " " + "b" when only "b"
    was seen (as in rows of single words), and a run of 40 spaces as known runs (" " and "\\n" always are).
    """
    spaced: dict[str, list[str]] = {"word": [], "number": [], "mark": []}
    for piece in vocabulary:
        if piece.startswith(" ") and not piece.isspace():
            category = unicodedata.category(piece[1])[0]
            spaced["word" if category in "LM" else "number" if category == "N" else "mark"].append(piece[1:])
    # One group (a trie whose root branches at least into " " and "\n", which are always in the vocabulary).
    whitespace = _trie([piece for piece in vocabulary if piece.isspace()])
    alternatives = [_CONTRACTION]
    # A word ends where letters do and a number where digits do: " the" must not match the start of " there".
    for kind, end in (("word", r"(?![\p{L}\p{M}])"), ("number", r"(?!\p{N})"), ("mark", "")):
        if spaced[kind]:
            alternatives.append(f" {_trie(spaced[kind])}{end}")
    alternatives += [
        r"[\p{L}\p{M}]+",
        r"\p{N}+",
        r"[^\s\p{L}\p{N}]",
        rf"{whitespace}(?= \S)",
        whitespace,
        r"\s",
    ]
    return "|".join(alternatives)


def _trie(pieces: list[str]) -> str:
    """A pattern that matches any of `pieces`, longest first, written as a trie: a backtracking regex engine then
    takes time by the length of the text's pieces, not by the size of the vocabulary (a plain alternation of 8192
    words encodes 9 to 27 times slower)."""
    root: dict[str, dict] = {}
    for piece in pieces:
        node = root
        for character in piece:
            node = node.setdefault(character, {})
        node[""] = {}  # a piece ends here; every other key is one character
    return _alternatives(root)


def _alternatives(node: dict[str, dict]) -> str:
    branches = [_escape(character) + _alternatives(child) for character, child in sorted(node.items()) if character]
    if "" in node:
        branches.append("")  # ending here comes after the longer pieces: the engine tries them first
    return branches[0] if len(branches) == 1 else f"(?:{'|'.join(branches)})"


def _escape(character: str) -> str:
    return character if character.isalnum() else f"\\x{{{ord(character):X}}}"


def _split(pattern: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated")


@dataclass(frozen=True)
class VocabularyCoverage:
    """How much of a text a tokenizer's vocabulary covers: of the text's `pieces` (its tokens: words, punctuation
    marks and whitespace runs for a word tokenizer, characters for a char one), `unknown` became `<|unk|>`."""

    pieces: int
    unknown: int

    @property
    def share(self) -> float:
        """The covered share of the pieces, from 0 to 1 (1 for an empty text)."""
        return 1.0 - self.unknown / self.pieces if self.pieces else 1.0

    @property
    def percent(self) -> str:
        """The covered share as a percentage, rounded down: "100.0%" only when nothing is unknown."""
        permille = (self.pieces - self.unknown) * 1000 // self.pieces if self.pieces else 1000
        return f"{permille / 10:.1f}%"


def vocabulary_coverage(
    tokenizer: PreTrainedTokenizerFast,
    source: str | os.PathLike | Iterable[str] | Iterable[os.PathLike],
    *,
    text_column: str = "text",
) -> VocabularyCoverage:
    """Encode `source` (any source `train_tokenizer` takes) and count the pieces that became `<|unk|>`.

    Where none did, `decode(encode(text))` gives every text back; each unknown piece loses its text. A
    byte-level BPE tokenizer has no unknown token and always covers everything.
    """
    texts = iter(_texts_from(source, text_column))
    unknown_id = tokenizer.unk_token_id
    pieces = unknown = 0
    while batch := list(itertools.islice(texts, _BATCH)):
        for encoding in tokenizer.backend_tokenizer.encode_batch_fast(batch, add_special_tokens=False):
            pieces += len(encoding.ids)
            unknown += 0 if unknown_id is None else encoding.ids.count(unknown_id)
    return VocabularyCoverage(pieces=pieces, unknown=unknown)


class _NonEmpty:
    """Iterates over texts and remembers whether any of them held a character."""

    def __init__(self, texts: Iterable[str]):
        self.texts = texts
        self.any_text = False

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.any_text = self.any_text or bool(text)
            yield text


def _texts_from(source: object, text_column: str) -> Iterable[str]:
    """The texts of any supported source, read lazily."""
    import datasets  # imported here: it is slow to import, and most callers never need it

    if isinstance(source, (datasets.Dataset, datasets.IterableDataset)):
        require_columns(source, {"text_column=": text_column}, "The dataset")
        if isinstance(source, datasets.Dataset):
            return (text for batch in source.iter(batch_size=_BATCH) for text in batch[text_column])
        return (row[text_column] for row in source)
    if isinstance(source, (str, os.PathLike)):
        return _read_files(_files_under(Path(source)))
    if not isinstance(source, Iterable):
        raise TypeError(f"source must be texts, text file paths or a datasets.Dataset, got {type(source).__name__}.")
    items = list(source)
    if items and all(isinstance(item, os.PathLike) or (isinstance(item, str) and _is_file(item)) for item in items):
        return _read_files([path for item in items for path in _files_under(Path(item))])
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"source items must be all texts or all file paths, got a {type(item).__name__}.")
    return items


def _is_file(text: str) -> bool:
    return "\n" not in text and len(text) < 4096 and os.path.isfile(text)


def _files_under(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise FileNotFoundError(f"No .txt files in the folder {str(path)!r}.")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"No such text file or folder: {str(path)!r}.")
    return [path]


def _read_files(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{str(path)!r} is not UTF-8 text (byte {error.start}: {error.reason}). Convert it, e.g. "
                f"`iconv -f latin1 -t utf-8 {path.name}`."
            ) from None


def use_task_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make `tokenizer(text)` and `tokenizer(text, pair)` produce GPT-1's classification and entailment
    formats, `<|start|> text <|classify|>` and `<|start|> a <|delimiter|> b <|classify|>`.

    A fine-tuned classifier's tokenizer is saved this way, so that `pipeline("text-classification")`
    and any plain `tokenizer(...)` call feed the model what it was trained on. The template lives in
    tokenizer.json: loading it needs no custom code. `add_special_tokens=False` still gives bare text.
    """
    start, delimiter, classify = TASK_TOKENS.values()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (start, delimiter, classify)}
    missing = [token for token, index in ids.items() if index is None or index == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"The tokenizer has no GPT-1 task tokens {missing}; call gpt1.add_task_tokens(tokenizer).")
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {classify}",
        pair=f"{start} $A {delimiter} $B:1 {classify}:1",
        special_tokens=list(ids.items()),
    )


def token_id_count(tokenizer: PreTrainedTokenizerBase) -> int:
    """How many ids the model must embed for `tokenizer`: its largest id plus one. Usually `len(tokenizer)`, but a
    vocabulary with gaps gives ids past its length."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values(), default=-1) + 1)


def pair_tokenizer_with_model(
    tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | GPT1Config
) -> PreTrainedTokenizerBase:
    """Check that `tokenizer` fits `model` and make its `model_max_length` follow the model's context.

    Raises a `ValueError` when the tokenizer has ids the model has no embedding for.
    """
    config = model if isinstance(model, GPT1Config) else model.config
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}: ids "
            f">= {config.vocab_size} have no embedding. Resize the model with "
            f"model.resize_token_embeddings(len(tokenizer)), or build it with GPT1Config(vocab_size={len(tokenizer)})."
        )
    if (ids := token_id_count(tokenizer)) > config.vocab_size:
        raise ValueError(
            f"The tokenizer gives token id {ids - 1} but the model's vocab_size is {config.vocab_size}: ids "
            f">= {config.vocab_size} have no embedding. Use the tokenizer the model was trained with."
        )
    tokenizer.model_max_length = config.n_positions
    return tokenizer


def tokenize_dataset(
    dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    text_column: str = "text",
    num_proc: int | None = None,
    keep_columns: bool = False,
):
    """Add `input_ids` to every row of a `datasets.Dataset`, with `datasets.map(batched=True)`.

    The result is cached by `datasets` (keyed on the data and the tokenizer), so a second call is
    free; `num_proc` tokenizes in several processes. No special tokens are added and nothing is
    truncated: packing into blocks is the trainer's job.
    """
    require_columns(dataset, {"text_column=": text_column}, "The dataset")

    backend = getattr(tokenizer, "backend_tokenizer", None)

    def encode(batch: dict) -> dict:
        if backend is not None:
            # Straight to the Rust tokenizer: ids only, without the offsets and masks a call computes.
            return {
                "input_ids": [e.ids for e in backend.encode_batch_fast(batch[text_column], add_special_tokens=False)]
            }
        return {"input_ids": tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]}

    removed = [] if keep_columns else dataset.column_names
    return dataset.map(encode, batched=True, num_proc=num_proc, remove_columns=removed, desc="Tokenizing")
