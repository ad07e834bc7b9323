"""train_tokenizer: char, word and byte-level BPE tokenizers trained on the user's text."""

import json
import os
import re
import subprocess
import sys
import textwrap

import datasets
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from gpt1 import (
    GPT1Config,
    GPT1ForCausalLM,
    GPT1ForSequenceClassification,
    pair_tokenizer_with_model,
    tokenize_dataset,
    train_tokenizer,
)
from gpt1.tokenization import TASK_TOKENS, VocabularyCoverage, use_task_template, vocabulary_coverage

from .helpers import gpt1_cli, make_tokenizer, tiny_config

CORPUS = [
    "The trophy didn't fit in the suitcase because it was too big.",
    "Language models learn from text; GPT-1 learned from 7,000 books.\n\nUnicode: héllo, 日本語, 😀.",
] * 3
ALPHABET = sorted(set("".join(CORPUS)))


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(CORPUS, kind="bpe", vocab_size=320)


@pytest.fixture(scope="module")
def char():
    return train_tokenizer(CORPUS, kind="char")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text())
def test_bpe_round_trips_any_unicode(bpe, text):
    assert bpe.decode(bpe(text).input_ids) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=ALPHABET))
def test_char_round_trips_any_string_over_the_seen_alphabet(char, text):
    ids = char(text).input_ids
    assert len(ids) == len(text)
    assert char.unk_token_id not in ids
    assert char.decode(ids) == text


def test_char_has_one_token_per_seen_character_and_unknown_for_the_rest(char):
    assert len(char) == len(ALPHABET) + 6  # pad, endoftext, start, delimiter, classify, unk
    for character in ALPHABET:
        assert character in char.get_vocab()
    ids = char("Qz").input_ids
    assert "Q" not in ALPHABET and ids[0] == char.unk_token_id
    assert ids[1] == char.convert_tokens_to_ids("z")


def test_bpe_learns_merges_and_never_produces_unknown(bpe):
    assert len(bpe) == 320
    assert bpe.unk_token is None
    assert len(bpe("the trophy").input_ids) < len("the trophy")  # merges were learned
    assert len(bpe("Ωmega ψ").input_ids) > 0


@pytest.mark.parametrize("kind", ["bpe", "char", "word"])
def test_special_tokens_and_context_length(kind):
    tokenizer = train_tokenizer(CORPUS, kind=kind, vocab_size=300 if kind == "bpe" else None, model_max_length=128)
    assert tokenizer.pad_token == "<|pad|>"
    assert tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert [tokenizer.start_token, tokenizer.delimiter_token, tokenizer.classify_token] == list(TASK_TOKENS.values())
    special_ids = {tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    assert len(special_ids) == len(tokenizer.all_special_tokens)
    # A special token in the text stays one token, and is never split.
    assert tokenizer("a<|classify|>").input_ids[-1] == tokenizer.convert_tokens_to_ids("<|classify|>")
    assert tokenizer.model_max_length == 128


@pytest.mark.parametrize("kind", ["bpe", "char", "word"])
def test_save_and_autotokenizer_round_trip_without_custom_code(kind, tmp_path):
    tokenizer = train_tokenizer(CORPUS, kind=kind, vocab_size=300 if kind == "bpe" else None)
    tokenizer.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.py"))
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in CORPUS[:2]:
        assert loaded(text).input_ids == tokenizer(text).input_ids
        assert loaded.decode(loaded(text).input_ids) == text
    assert loaded.classify_token == "<|classify|>" and loaded.pad_token_id == tokenizer.pad_token_id
    assert loaded.model_max_length == tokenizer.model_max_length


# Words seen both with and without a space before them (after a line break), and punctuation marks.
WORDS = ["the", "cat", "sat", "on", "mat", "Hello", "world", "didn", "GPT", "1", "2018"]
WORD_CORPUS = [" ".join(WORDS) + ", " + "\n".join(WORDS) + ". didn't (quoted) - ! ?(-!?)"] * 2


@pytest.fixture(scope="module")
def word():
    return train_tokenizer(WORD_CORPUS, kind="word")


def test_word_cuts_text_into_words_that_carry_their_space(word):
    assert word.convert_ids_to_tokens(word("Hello, world.\n").input_ids) == ["Hello", ",", " world", ".", "\n"]
    assert word.convert_ids_to_tokens(word(" didn't").input_ids) == [" didn", "'t"]
    assert word.unk_token == "<|unk|>" and word.unk_token_id == 5  # after pad, endoftext and the task tokens


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=12),
    separators=st.lists(st.text(alphabet=" \n,.()!?-", min_size=1, max_size=12), min_size=12, max_size=12),
)
def test_word_round_trips_text_its_vocabulary_covers_whatever_its_spacing(word, words, separators):
    """Any run of spaces and line breaks encodes, even one never seen in training: whitespace is never unknown."""
    text = "".join(piece + separator for piece, separator in zip(words, separators[: len(words)], strict=True))
    ids = word(text).input_ids
    assert word.unk_token_id not in ids
    assert word.decode(ids) == text


def test_word_round_trips_multiple_spaces_line_breaks_and_punctuation(word):
    text = "Hello,   world.\n\n\n    the cat (sat)  on\n  the mat!\n" + " " * 40 + "GPT-1, 2018?\n"
    ids = word(text).input_ids
    assert word.unk_token_id not in ids
    assert word.decode(ids) == text


def test_word_keeps_the_most_frequent_pieces_and_the_rest_become_unknown():
    text = " alpha" * 9 + " beta" * 5 + " gamma" * 3 + " delta"  # no piece " " or "\n" of its own
    word = train_tokenizer([text], kind="word", vocab_size=10)
    assert len(word) == 10
    # After the 6 special tokens, the pieces by falling frequency; the space and the line break take the
    # places of the rarest, " gamma" and " delta".
    assert word.convert_ids_to_tokens(range(6, 10)) == [" alpha", " beta", " ", "\n"]
    ids = word(" gamma beta delta").input_ids
    # An unknown word loses its text but not its space, so the decoded text still reads as words.
    assert word.convert_ids_to_tokens(ids) == [" ", "<|unk|>", " beta", " ", "<|unk|>"]
    assert word.decode(ids) == " <|unk|> beta <|unk|>"
    assert word.decode(ids, skip_special_tokens=True) == "  beta "


def test_word_coverage_says_how_much_of_a_text_the_vocabulary_keeps():
    word = train_tokenizer([" alpha" * 9 + " beta" * 5 + " gamma" * 3], kind="word", vocab_size=10)
    assert vocabulary_coverage(word, [" alpha beta alpha"]) == VocabularyCoverage(pieces=3, unknown=0)
    coverage = vocabulary_coverage(word, [" alpha gamma", " beta"])  # " gamma" -> " " + <|unk|>
    assert coverage == VocabularyCoverage(pieces=4, unknown=1)
    assert (coverage.share, coverage.percent) == (0.75, "75.0%")
    assert VocabularyCoverage(pieces=10_000, unknown=1).percent == "99.9%"  # never rounded up to 100.0%
    bpe = train_tokenizer(CORPUS, kind="bpe", vocab_size=300)
    assert vocabulary_coverage(bpe, ["Ωmega ψ, never seen"]).share == 1.0


def test_word_reloads_with_autotokenizer_to_the_same_ids(word, tmp_path):
    word.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.py"))
    assert json.loads((tmp_path / "tokenizer.json").read_text())["model"]["type"] == "WordLevel"
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Hello,  zebra world!\n\n\n      the unseen cat's mat"
    assert loaded(text).input_ids == word(text).input_ids
    assert loaded.decode(loaded(text).input_ids) == "Hello,  <|unk|> world!\n\n\n      the <|unk|> cat<|unk|> mat"
    assert (loaded.unk_token, loaded.pad_token_id, len(loaded)) == ("<|unk|>", 0, len(word))


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
@pytest.mark.parametrize(
    ("rows", "text"),
    [(["a", "b", "c"], "a b\nc  a\n\n b"), ("\n\n".join(CORPUS[:2]).splitlines(), "\n\n".join(CORPUS[:2]))],
    ids=["single letters", "lines of a text"],
)
def test_every_kind_encodes_the_space_and_the_line_break_whatever_rows_it_learned_from(kind, rows, text):
    """Rows as str.splitlines() and datasets' text builder give them hold no line break (single letters no space)."""
    assert not any("\n" in row for row in rows)
    tokenizer = train_tokenizer(rows, kind=kind, vocab_size=300 if kind == "bpe" else None)
    ids = tokenizer(text).input_ids
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_gpt1_train_tokenizer_word_trains_and_saves_a_word_tokenizer(tmp_path):
    output = tmp_path / "run"
    result = gpt1_cli(
        "train", "--output-dir", str(output), "--tokenizer", "word", "--vocab-size", "512",
        "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "4",
        "--max-steps", "2", "--eval-every", "2", "--save-every", "2", "--eval-batches", "1", "--sample-tokens", "4",
    )  # fmt: skip
    coverage = re.search(
        r"Word vocabulary: 512 tokens cover (\d+\.\d)% of the training text's ([\d,]+) words, punctuation marks "
        r"and spaces; the other ([\d,]+) become <\|unk\|>\.",
        result.stdout,
    )
    assert coverage is not None, result.stdout[-3000:]
    pieces, unknown = (int(group.replace(",", "")) for group in coverage.groups()[1:])
    assert 0 < unknown < pieces and float(coverage.group(1)) == pytest.approx(100 * (1 - unknown / pieces), abs=0.1)
    assert json.loads((output / "tokenizer.json").read_text())["model"]["type"] == "WordLevel"
    loaded = AutoTokenizer.from_pretrained(output)
    assert len(loaded) == 512
    text = "The return statement.\n\n  The value of the expression is returned."
    assert loaded.decode(loaded(text).input_ids) == text


# Loads a tokenizer and prints nothing itself: the ids go to a file. Without gpt1, `import gpt1` fails.
_LOAD_TOKENIZER = textwrap.dedent(
    """
    import json, sys
    folder, text, outputs, call = sys.argv[1:]
    if call == "gpt1 imported":
        import gpt1
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(folder)
    else:
        sys.modules["gpt1"] = None
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
        if call == "no code":
            tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
        else:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    json.dump({"ids": tokenizer(text).input_ids, "pair": tokenizer(text, text).input_ids}, open(outputs, "w"))
    """
)


@pytest.mark.parametrize(
    ("head", "call"),
    [("causal-lm", "gpt1 imported"), ("causal-lm", "no code"), ("classifier", "no code"), ("causal-lm", "trusted")],
)
def test_the_documented_tokenizer_loads_are_silent_in_a_terminal(head, call, tmp_path):
    """A folder as `gpt1 train` (and convert) or `gpt1 finetune` write it, loaded the ways the README shows:
    with a terminal on stdin, nothing asks whether to run custom code and nothing warns.

    `AutoTokenizer.from_pretrained(folder)` with neither gpt1 imported nor `trust_remote_code` cannot be
    silent: every transformers 5.x reads config.json before tokenizer_config.json, and a config whose
    model_type it does not know, with code in `auto_map`, makes it ask. `PreTrainedTokenizerFast` reads
    only the tokenizer files, and importing gpt1 makes the model type known.
    """
    pty = pytest.importorskip("pty")
    tokenizer = make_tokenizer()
    folder = tmp_path / "run"
    tokenizer.save_pretrained(folder)  # gpt1 train saves the tokenizer first, the model at the end
    if head == "causal-lm":
        GPT1ForCausalLM(tiny_config(vocab_size=len(tokenizer))).save_pretrained(folder)
    else:  # gpt1 finetune: the classifier, then its tokenizer with GPT-1's task template
        GPT1ForSequenceClassification(tiny_config(vocab_size=len(tokenizer), num_labels=2)).save_pretrained(folder)
        use_task_template(tokenizer)
        tokenizer.save_pretrained(folder)
    assert (folder / "config.json").exists() and (folder / "modeling_gpt1.py").exists()
    text = "GPT-1 learned from books."  # shorter than the context, so encoding it warns of nothing
    outputs = tmp_path / "outputs.json"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TOKENIZERS_PARALLELISM="false")
    terminal, stdin = pty.openpty()  # stdin is a terminal: a question would wait for an answer there
    try:
        # transformers gives up on an unanswered question after 15 s; the timeout catches any other wait.
        result = subprocess.run(
            [sys.executable, "-c", _LOAD_TOKENIZER, str(folder), text, str(outputs), call],
            stdin=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )
    finally:
        os.close(stdin)
        os.close(terminal)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    loaded = json.loads(outputs.read_text())
    assert loaded["ids"] == tokenizer(text).input_ids
    assert loaded["pair"] == tokenizer(text, text).input_ids


def test_sources_files_folders_paths_and_datasets_give_the_same_tokenizer(tmp_path, char):
    (tmp_path / "corpus").mkdir()
    for index, text in enumerate(CORPUS[:2]):
        (tmp_path / "corpus" / f"part{index}.txt").write_text(text, encoding="utf-8")
    files = sorted((tmp_path / "corpus").glob("*.txt"))
    sources = {
        "folder": tmp_path / "corpus",
        "folder as str": str(tmp_path / "corpus"),
        "paths": files,
        "path strings": [str(path) for path in files],
        "dataset": datasets.Dataset.from_dict({"body": CORPUS[:2]}),
    }
    for name, source in sources.items():
        tokenizer = train_tokenizer(source, kind="char", text_column="body")
        assert tokenizer.get_vocab() == char.get_vocab(), name


def test_tokenize_dataset_uses_batched_map_and_caches(tmp_path, bpe):
    dataset = datasets.Dataset.from_dict({"text": CORPUS})
    tokenized = tokenize_dataset(dataset, bpe)
    assert tokenized.column_names == ["input_ids"]
    assert tokenized[1]["input_ids"] == bpe(CORPUS[1]).input_ids
    on_disk = datasets.load_dataset("text", data_files=str(_write(tmp_path / "c.txt", "\n".join(CORPUS))))["train"]
    first = tokenize_dataset(on_disk, bpe)
    second = tokenize_dataset(on_disk, bpe)
    assert first.cache_files and first.cache_files == second.cache_files  # the second call reuses the cache
    assert sum(len(ids) for ids in first["input_ids"]) > 0


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


class TestBadInput:
    @pytest.mark.parametrize("kind", ["bpe", "char", "word"])
    @pytest.mark.parametrize("empty", [[], [""], ["", ""]])
    def test_empty_corpus(self, kind, empty):
        with pytest.raises(ValueError, match="corpus is empty"):
            train_tokenizer(empty, kind=kind)

    def test_empty_file(self, tmp_path):
        with pytest.raises(ValueError, match="corpus is empty"):
            train_tokenizer(_write(tmp_path / "empty.txt", ""), kind="bpe")

    def test_char_vocab_smaller_than_alphabet_plus_specials(self):
        needed = len(ALPHABET) + 6
        with pytest.raises(ValueError, match=rf"vocab_size=10 .* {len(ALPHABET)} distinct characters .* = {needed}"):
            train_tokenizer(CORPUS, kind="char", vocab_size=10)

    def test_char_vocab_always_holds_the_space_and_the_line_break(self):
        with pytest.raises(ValueError, match=r"vocab_size=9 .* 4 distinct characters \(the space and the line break"):
            train_tokenizer(["ab"], kind="char", vocab_size=9)
        assert len(train_tokenizer(["ab"], kind="char", vocab_size=10)) == 10

    @pytest.mark.parametrize("vocab_size", [7, 0, -5])
    def test_word_vocab_smaller_than_specials_plus_space_and_line_break(self, vocab_size):
        with pytest.raises(
            ValueError,
            match=rf"vocab_size={vocab_size} is too small for a word tokenizer: it needs the 6 special tokens plus "
            r"the space and the line break = 8, before any word. Use vocab_size >= 8",
        ):
            train_tokenizer(CORPUS, kind="word", vocab_size=vocab_size)
        assert len(train_tokenizer(CORPUS, kind="word", vocab_size=8)) == 8

    def test_bpe_vocab_smaller_than_bytes_plus_specials(self):
        with pytest.raises(ValueError, match=r"vocab_size=200 .* 256 byte tokens plus 5 special tokens = 261"):
            train_tokenizer(CORPUS, kind="bpe", vocab_size=200)

    def test_unknown_kind(self):
        with pytest.raises(ValueError, match="kind must be 'bpe', 'char' or 'word', got 'words'"):
            train_tokenizer(CORPUS, kind="words")  # type: ignore[arg-type]

    def test_missing_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="nowhere.txt"):
            train_tokenizer(tmp_path / "nowhere.txt")

    def test_non_utf8_file(self, tmp_path):
        (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
        with pytest.raises(ValueError, match="latin1.txt.* is not UTF-8"):
            train_tokenizer(tmp_path / "latin1.txt", kind="char")

    def test_missing_dataset_column(self):
        with pytest.raises(ValueError, match=r"no column 'text'; its columns are \['body'\]"):
            train_tokenizer(datasets.Dataset.from_dict({"body": ["x"]}))

    def test_tokenizer_larger_than_model_vocab(self):
        bpe = train_tokenizer(CORPUS, kind="bpe", vocab_size=320)
        model = GPT1ForCausalLM(GPT1Config(vocab_size=300, n_positions=64, n_embd=16, n_layer=1, n_head=2))
        with pytest.raises(ValueError, match=r"320 tokens but the model's vocab_size is 300.*resize_token_embeddings"):
            pair_tokenizer_with_model(bpe, model)
        model.resize_token_embeddings(len(bpe))
        paired = pair_tokenizer_with_model(bpe, model)
        assert paired.model_max_length == 64
        assert model(torch.tensor([bpe("the trophy").input_ids])).logits.shape[-1] == 320
