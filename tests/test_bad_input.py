"""Bad input at the edges of the package: damaged model folders, the CLI, conflicting options.

Each case must end in one line that names the problem and the fix, with exit status 2 and no
traceback. docs/bad-input.md lists every bad-input case of the project with its test; the last test
here keeps that table honest.
"""

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

from gpt1 import GPT1ForCausalLM

from .helpers import gpt1_cli, make_tokenizer, tiny_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    tokenizer = make_tokenizer()
    GPT1ForCausalLM(tiny_config(vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def broken_copy(model_folder: Path, tmp_path: Path, damage) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(model_folder, folder)
    damage(folder)
    return folder


def edit_config(**changes):
    def damage(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    return damage


def truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def remove_tokenizer(folder: Path) -> None:
    for path in folder.iterdir():
        if "token" in path.name:
            path.unlink()


def assert_clear_cli_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize(
    ("damage", "fragments"),
    [
        (truncate_weights, ["cannot be read", "truncated or damaged", "Save or download the model again"]),
        (edit_config(n_layer="two"), ["GPT1Config.n_layer must be a positive integer, got 'two'"]),
        (edit_config(model_type="gpt9"), ["model_type 'gpt9'", "neither gpt1 nor transformers", "fix config.json"]),
        (remove_tokenizer, ["No tokenizer in", "tokenizer.save_pretrained("]),
        (lambda folder: (folder / "config.json").write_text("{not json"), ["is not a valid JSON file"]),
    ],
    ids=["truncated-weights", "config-wrong-type", "unknown-model-type", "missing-tokenizer", "config-not-json"],
)
def test_damaged_model_folder(model_folder, tmp_path, damage, fragments):
    folder = broken_copy(model_folder, tmp_path, damage)
    assert_clear_cli_error(gpt1_cli("generate", "--model", str(folder), "Hello", check=False), *fragments)


def test_unknown_flag():
    result = gpt1_cli("generate", "--model", "x", "Hello", "--temprature", "0.5", check=False)
    assert_clear_cli_error(result, "unrecognized arguments: --temprature 0.5")


def test_greedy_decoding_with_several_samples_conflicts(model_folder):
    result = gpt1_cli(
        "generate", "--model", str(model_folder), "Hi", "--temperature", "0", "--num-samples", "3", check=False
    )
    assert_clear_cli_error(result, "--num-samples 3 conflicts with --temperature 0", "--temperature > 0")


def test_vocab_size_with_a_char_tokenizer_conflicts(tmp_path):
    result = gpt1_cli("train", "--output-dir", str(tmp_path), "--tokenizer", "char", "--vocab-size", "500", check=False)
    assert_clear_cli_error(result, "--vocab-size 500 conflicts with --tokenizer 'char'", "Drop --vocab-size")
    assert not any(tmp_path.iterdir())  # nothing was written


def test_resume_with_a_different_model_is_refused_before_anything_is_written(tmp_path):
    options = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
               "--vocab-size", "270", "--eval-batches", "1", "--sample-tokens", "2", "--max-steps", "4",
               "--save-every", "2", "--eval-every", "4"]  # fmt: skip
    gpt1_cli("train", "--output-dir", str(tmp_path), *options)
    before = (tmp_path / "train_config.json").read_text()
    result = gpt1_cli("train", "--output-dir", str(tmp_path), *options, "--n-layer", "2", "--resume", check=False)
    assert_clear_cli_error(result, "--resume: the checkpoint", "holds a different model", "train_config.json")
    assert (tmp_path / "train_config.json").read_text() == before  # the run's record is untouched


# --- the table in docs/bad-input.md ---------------------------------------------------------------------------------

TABLE = ROOT / "docs" / "bad-input.md"


def named_tests(path: Path) -> set[str]:
    """`name` and `Class::name` for every test function in a test file."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test_")
            }
    return names


def test_the_bad_input_table_lists_at_least_25_cases_each_with_a_test_that_exists():
    rows = [line for line in TABLE.read_text().splitlines() if line.startswith("| ") and "`tests/" in line]
    assert len(rows) >= 25, len(rows)
    for row in rows:
        reference = re.search(r"`(tests/[\w/]+\.py)::([\w:]+)(\[[^\]]*\])?`", row)
        assert reference, f"no test named in: {row}"
        path, name = ROOT / reference.group(1), reference.group(2)
        assert path.is_file() and name in named_tests(path), f"{reference.group(0)} does not exist"
