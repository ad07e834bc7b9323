"""train_tokenizer: char and byte-level BPE tokenizers trained on the user's text."""

import json
import os
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
from gpt1.tokenization import TASK_TOKENS, use_task_template

from .helpers import make_tokenizer, tiny_config

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


@pytest.mark.parametrize("kind", ["bpe", "char"])
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


@pytest.mark.parametrize("kind", ["bpe", "char"])
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
    @pytest.mark.parametrize("kind", ["bpe", "char"])
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

    def test_bpe_vocab_smaller_than_bytes_plus_specials(self):
        with pytest.raises(ValueError, match=r"vocab_size=200 .* 256 byte tokens plus 5 special tokens = 261"):
            train_tokenizer(CORPUS, kind="bpe", vocab_size=200)

    def test_unknown_kind(self):
        with pytest.raises(ValueError, match="kind must be 'bpe' or 'char', got 'word'"):
            train_tokenizer(CORPUS, kind="word")  # type: ignore[arg-type]

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
