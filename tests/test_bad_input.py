"""Bad input at the edges of the package: damaged model folders, the CLI, conflicting options.

Each case must end in one line that names the problem and the fix, with exit status 2 and no
traceback. docs/bad-input.md lists every bad-input case of the project with its test; the last test
here keeps that table honest.
"""

import ast
import json
import re
import shutil
import time
from pathlib import Path

import pytest

from gpt1 import GPT1ForCausalLM

from .helpers import gpt1_cli, make_tokenizer, tiny_config

ROOT = Path(__file__).resolve().parent.parent
# Online as far as gpt1 can tell, but the Hub's address is a local port where nothing listens: a test
# that would reach for the Hub gets its answer at once, and never touches the network.
UNREACHABLE_HUB: dict[str, str | None] = {"HF_HUB_OFFLINE": None, "HF_ENDPOINT": "http://127.0.0.1:9"}


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
    longer = ["--max-steps", "6", "--resume"]  # the finished run could not be resumed to the same --max-steps
    result = gpt1_cli("train", "--output-dir", str(tmp_path), *options, "--n-layer", "2", *longer, check=False)
    saved_with_checkpoint = tmp_path / "checkpoints" / "step-00000002" / "train_config.json"  # the latest
    assert_clear_cli_error(result, "--resume: the checkpoint", "holds a different model", str(saved_with_checkpoint))
    assert (tmp_path / "train_config.json").read_text() == before  # the run's record is untouched
    assert json.loads(saved_with_checkpoint.read_text())["n_layer"] == 1  # the options that wrote the checkpoint


def test_training_into_a_used_folder_is_refused_and_overwrite_starts_afresh(tmp_path):
    options = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
               "--vocab-size", "270", "--eval-batches", "1", "--sample-tokens", "2", "--eval-every", "4"]  # fmt: skip
    gpt1_cli("train", "--output-dir", str(tmp_path), *options, "--max-steps", "8", "--save-every", "4")
    before = {path.relative_to(tmp_path): path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}

    refused = gpt1_cli("train", "--output-dir", str(tmp_path), *options, "--max-steps", "4", check=False)
    assert_clear_cli_error(
        refused,
        "already holds a trained model and 1 checkpoint(s), the latest step-00000004",
        "--resume",
        "--overwrite",
    )
    after = {path.relative_to(tmp_path): path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before  # nothing was touched

    conflicting = gpt1_cli("train", "--output-dir", str(tmp_path), *options, "--resume", "--overwrite", check=False)
    assert_clear_cli_error(conflicting, "--resume continues the run", "--overwrite deletes it")

    gpt1_cli("train", "--output-dir", str(tmp_path), *options, "--max-steps", "4", "--save-every", "2", "--overwrite")
    assert sorted(path.name for path in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002"]  # 4 is gone
    assert json.loads((tmp_path / "train_config.json").read_text())["max_steps"] == 4


def test_a_mistyped_local_folder_is_not_looked_up_on_the_hub(tmp_path):
    (tmp_path / "runs" / "gpt1-tiny").mkdir(parents=True)  # the folder the user meant
    started = time.monotonic()
    typo = gpt1_cli("generate", "--model", "runs/gpt1-tny", "Hello", check=False, cwd=tmp_path, env=UNREACHABLE_HUB)
    assert_clear_cli_error(typo, "No such model folder: 'runs/gpt1-tny'")
    folder = gpt1_cli(
        "train", "--dataset", "my_texts/", "--max-steps", "1", check=False, cwd=tmp_path, env=UNREACHABLE_HUB
    )
    assert_clear_cli_error(folder, "No such file or folder: 'my_texts/'")
    assert time.monotonic() - started < 60  # two processes starting, no Hub retries
    assert not (tmp_path / "runs" / "gpt1-tiny" / "config.json").exists()


def test_a_hub_id_that_cannot_be_reached_says_so_in_one_line(tmp_path):
    unreachable = UNREACHABLE_HUB
    started = time.monotonic()
    result = gpt1_cli("generate", "--model", "someone/gpt1-model", "Hello", check=False, cwd=tmp_path, env=unreachable)
    assert_clear_cli_error(
        result, "'someone/gpt1-model' is no local file or folder", "cannot be reached", "HF_HUB_OFFLINE=1"
    )
    dataset = gpt1_cli("train", "--dataset", "my_texts", check=False, cwd=tmp_path, env=unreachable)
    assert_clear_cli_error(dataset, "'my_texts' is no local file or folder", "cannot be reached")
    assert time.monotonic() - started < 60
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", ["--max-step", "--max_steps"])
def test_an_abbreviated_or_misspelt_flag_is_refused_with_the_nearest_one(flag, tmp_path):
    result = gpt1_cli("train", "--output-dir", str(tmp_path), flag, "3", check=False)
    assert_clear_cli_error(result, f"unrecognized arguments: {flag} 3", "did you mean --max-steps?")
    assert not any(tmp_path.iterdir())


def test_generate_help_shows_every_default():
    result = gpt1_cli("generate", "--help")
    for option, default in [("--max-new-tokens", "100"), ("--temperature", "0.8"), ("--top-k", "50"),
                            ("--top-p", "1.0"), ("--num-samples", "1"), ("--seed", "a different one")]:  # fmt: skip
        section = result.stdout.split(option, 2)[-1]
        assert re.search(rf"default:? {re.escape(default)}", " ".join(section.split()[:14])), (option, section[:200])


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
