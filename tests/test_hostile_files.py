"""Hostile or damaged files in a model folder (and a run folder's logs), given to the commands that open them.

Every command must either work or stop with exit status 2 and one line on stderr that names the file and the
field, never a traceback, and must never allocate much: each in-process command runs under an address-space
limit of what the process has plus 2 GiB, so that a config or a header that would make a library allocate by
a number it holds fails the test. The property tests mutate a valid tiny folder's config.json, tokenizer.json
and safetensors header, and count what each command made of each mutated file; the counts are printed in
pytest's terminal summary.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import resource
import shutil
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from gpt1 import GPT1ForCausalLM
from gpt1.cli import main
from gpt1.metrics import METRICS, restart_logs
from gpt1.reporting import write_loss_curve, write_model_card

from .conftest import SUMMARY
from .helpers import SAMPLE_TEXT, gpt1_cli, make_tokenizer, tiny_config

GiB = 1 << 30
HEADROOM = 2 * GiB  # what one command may allocate beyond what the process holds
FUZZ = settings(
    max_examples=50, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)
ALSO_CONVERT_AND_TRAIN_EVERY = 3  # the smaller subset of mutated files that convert and train --init-from read too
OUTCOMES: Counter[tuple[str, str, str]] = Counter()  # (file, command, worked | rejected | unclean)


# --- folders ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def quiet_progress_bars_and_report(request):
    """No progress bars (they would be lines on stderr beside the error); the counts, printed at the end."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    tqdm_disable = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # gpt1 train's own bar
    yield
    transformers.utils.logging.enable_progress_bar()
    datasets.enable_progress_bars()
    if tqdm_disable is None:
        os.environ.pop("TQDM_DISABLE")
    else:
        os.environ["TQDM_DISABLE"] = tqdm_disable
    if OUTCOMES:  # printed in pytest's summary (conftest.py)
        lines = request.config.stash.setdefault(SUMMARY, [])
        lines.append("mutated files per file type and command: worked / rejected in one clean line / unclean")
        for file, command in sorted({(file, command) for file, command, _ in OUTCOMES}):
            counts = [OUTCOMES[file, command, outcome] for outcome in ("worked", "rejected", "unclean")]
            lines.append(f"  {file:18} {command:10} tried {sum(counts):3}: {counts[0]:3} worked, {counts[1]:3} "
                         f"rejected, {counts[2]} unclean")  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """A valid tiny model folder; one saved as gpt1 before 0.2 (padded embedding rows, which `gpt1 convert`
    upgrades); a clean tokenizer folder and a text for `gpt1 train --init-from`."""
    root = tmp_path_factory.mktemp("hostile")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, vocab_padding_multiple=64)
    model = GPT1ForCausalLM(config).eval()
    for name in ("model", "old", "tokenizer"):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    weights = load_file(root / "old" / "model.safetensors")
    embeddings = weights["transformer.token_embeddings.weight"]
    padding = torch.zeros(config.padded_vocab_size - config.vocab_size, config.n_embd)
    weights["transformer.token_embeddings.weight"] = torch.cat([embeddings, padding])
    save_file(weights, root / "old" / "model.safetensors", metadata={"format": "pt"})
    (root / "text.txt").write_text((SAMPLE_TEXT + "\n") * 10)
    return {"model": root / "model", "old": root / "old", "tokenizer": root / "tokenizer", "text": root / "text.txt"}


@contextlib.contextmanager
def damaged_copy(folder: Path, file: str, damage: Callable[[bytes], bytes]) -> Iterator[Path]:
    """A copy of `folder` with `file` rewritten by `damage` (original bytes in, new bytes out)."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / folder.name
        shutil.copytree(folder, copy)
        (copy / file).write_bytes(damage((copy / file).read_bytes()))
        yield copy


# --- running a command ------------------------------------------------------------------------------------------------


def vm_size() -> int:
    """The address space this process holds now, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def memory_bound(headroom: int = HEADROOM) -> Iterator[None]:
    """RLIMIT_AS lowered to what the process holds plus `headroom` while the block runs, then restored: an
    allocation beyond it fails (MemoryError, or a library's error) instead of eating the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@contextlib.contextmanager
def native_stderr(into: list[str]) -> Iterator[None]:
    """What native code (Rust's panic messages) writes to file descriptor 2 while the block runs, appended to `into`:
    a user of the command would see it on stderr."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            into.append(capture.read().decode("utf-8", "replace"))


def run_cli(*args: str) -> tuple[int | str, str]:
    """`gpt1 ARGS` in this process, under the memory bound: its exit status (or what it raised) and its stderr,
    Python's and native code's."""
    err, native = io.StringIO(), []
    with native_stderr(native), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            memory_bound():  # fmt: skip
        try:
            status: int | str = main(list(args))
        except SystemExit as exit:  # argparse
            status = exit.code if isinstance(exit.code, int) else str(exit.code)
        except Exception as error:  # a traceback, had it run as the command
            status = f"raised {type(error).__name__}: {error}"
        except BaseException as error:  # a Rust panic (pyo3's PanicException) is no Exception
            if isinstance(error, KeyboardInterrupt):
                raise
            status = f"raised {type(error).__name__}: {error}"
    return status, native[0] + err.getvalue()


def is_clean_error(status: int | str, stderr: str, command: str) -> bool:
    lines = stderr.strip().splitlines()
    return (
        status == 2
        and len(lines) == 1
        and lines[0].startswith(f"gpt1 {command}: error: ")
        and "Traceback" not in stderr
    )


def assert_clean_error(status: int | str, stderr: str, command: str, *fragments: str) -> None:
    assert is_clean_error(status, stderr, command), (status, stderr[-3000:])
    for fragment in fragments:
        assert fragment in stderr, stderr


def commands(folder: Path, base: dict[str, Path], scratch: Path) -> dict[str, list[str]]:
    """The commands that open a model folder, as the property tests run them."""
    return {
        "generate": ["generate", "--model", str(folder), "Hello", "--max-new-tokens", "2", "--seed", "0"],
        "attention": ["attention", "The trophy", "--model", str(folder), "--out", str(scratch / "attention.png")],
        "convert": ["convert", str(folder), str(scratch / "converted")],
        "train": ["train", "--init-from", str(folder), "--tokenizer", str(base["tokenizer"]), "--dataset",
                  str(base["text"]), "--output-dir", str(scratch / "run"), "--max-steps", "1", "--block-size", "16",
                  "--batch-size", "2", "--eval-batches", "1", "--sample-tokens", "2", "--eval-every", "1",
                  "--save-every", "100"],
    }  # fmt: skip


def try_commands(file: str, damage: Callable[[bytes], bytes], base: dict[str, Path], subset: bool) -> None:
    """Run the commands on copies of the base folders with `file` damaged; each must work or fail cleanly. In the
    `subset`, convert and train --init-from too."""
    names = ["generate", "attention"]
    if subset:
        names.append("convert")  # on the folder saved before 0.2, which it upgrades
        if file != "tokenizer.json":
            names.append("train")  # --init-from reads the model, not its tokenizer
    for name in names:
        source = base["old"] if name == "convert" else base["model"]
        with damaged_copy(source, file, damage) as folder, tempfile.TemporaryDirectory() as scratch:
            status, stderr = run_cli(*commands(folder, base, Path(scratch))[name])
        outcome = "worked" if status == 0 else "rejected" if is_clean_error(status, stderr, name) else "unclean"
        OUTCOMES[file, name, outcome] += 1
        assert outcome != "unclean", f"gpt1 {name} on a damaged {file}: status {status}\n{stderr[-3000:]}"


# --- deterministic cases ----------------------------------------------------------------------------------------------


def edit_json(**changes) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        return json.dumps({**json.loads(raw), **changes}).encode()

    return damage


def edit_header(change: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    """A safetensors file with its header changed by `change` and rewritten (the data left where it was)."""

    def damage(raw: bytes) -> bytes:
        length = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + length])
        change(header)
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        return len(text).to_bytes(8, "little") + text + raw[8 + length :]

    return damage


def flip_first_layer_norm_gain(raw: bytes) -> bytes:
    """One bit flipped in the weights' data: the exponent's top bit of the first LayerNorm gain (1.0), which
    makes it infinite."""
    length = int.from_bytes(raw[:8], "little")
    begin = json.loads(raw[8 : 8 + length])["transformer.blocks.0.attn_norm.weight"]["data_offsets"][0]
    at = 8 + length + begin + 3  # the float32's most significant byte (little-endian)
    assert struct.unpack("<f", raw[at - 3 : at + 1])[0] == 1.0
    return raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1 :]


def flip_first_position_exponent(raw: bytes) -> bytes:
    """One bit flipped in the data of the first position embedding (0.008 becomes 2.9e36): a finite weight, whose
    first use overflows."""
    length = int.from_bytes(raw[:8], "little")
    begin = json.loads(raw[8 : 8 + length])["transformer.position_embeddings.weight"]["data_offsets"][0]
    at = 8 + length + begin + 3
    return raw[:at] + bytes([raw[at] ^ 0x40]) + raw[at + 1 :]


def flip_header_bit(raw: bytes) -> bytes:
    """One bit flipped in the header: a digit of the first data_offsets becomes another character."""
    at = raw.index(b'"data_offsets":[') + len(b'"data_offsets":[')
    return raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :]


def set_vocab_id(token_index: int, token_id: int) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        tokenizer = json.loads(raw)
        token = sorted(tokenizer["model"]["vocab"])[token_index]
        tokenizer["model"]["vocab"][token] = token_id
        return json.dumps(tokenizer).encode()

    return damage


DETERMINISTIC = {
    "truncated-weights": ("model.safetensors", lambda raw: raw[: len(raw) // 2],
                          ["model.safetensors", "cannot be read", "its tensors end at byte", "truncated or damaged"]),
    "bit-flipped-weights": ("model.safetensors", flip_first_layer_norm_gain,
                            ["model.safetensors", "infinite or NaN", "blocks.0.attn_norm.weight"]),
    "bit-flipped-to-1e36": ("model.safetensors", flip_first_position_exponent,
                            ["not numbers (NaN or infinite)", "weights are damaged"]),
    "bit-flipped-header": ("model.safetensors", flip_header_bit,
                           ["model.safetensors", "cannot be read", "header is no valid JSON"]),
    "header-length-2**63": ("model.safetensors", lambda raw: (2**63).to_bytes(8, "little") + raw[8:],
                            ["model.safetensors", "header of 9,223,372,036,854,775,808 bytes"]),
    "shape-not-offsets": ("model.safetensors",
                          edit_header(lambda h: h["transformer.token_embeddings.weight"].update(shape=[300, 33])),
                          ["model.safetensors", "transformer.token_embeddings.weight has shape [300, 33] of F32",
                           "data_offsets"]),
    "shape-not-config": ("model.safetensors", edit_header(
                             lambda h: h["transformer.position_embeddings.weight"].update(shape=[32, 64])),
                         ["model.safetensors", "transformer.position_embeddings.weight has shape [32, 64], but",
                          "config.json' (n_positions 64, n_embd 32) needs [64, 32]"]),
    "vocab-size-10**12": ("config.json", edit_json(vocab_size=10**12),
                          ["config.json", "vocab_size 1,000,000,000,000 is more than any model has"]),
    "vocab-size-not-weights": ("config.json", edit_json(vocab_size=320),
                               ["model.safetensors': transformer.token_embeddings.weight has shape [300, 32], but",
                                "config.json' (vocab_size 320, n_embd 32) needs [320, 32]"]),
    "n-layer-two": ("config.json", edit_json(n_layer="two"),
                    ["config.json", "GPT1Config.n_layer must be a positive integer, got 'two'"]),
    "n-embd-not-divisible": ("config.json", edit_json(n_head=5),
                             ["config.json", "GPT1Config.n_embd (32) must be divisible by n_head (5)"]),
    "auto-map-elsewhere": ("config.json", edit_json(auto_map={"AutoModel": "evil/repo--modeling_evil.Evil"}),
                           ["config.json", "auto_map['AutoModel'] = 'evil/repo--modeling_evil.Evil' points at "
                            "another repository"]),
    "vocab-id-10**12": ("tokenizer.json", set_vocab_id(10, 10**12),
                        ["tokenizer.json", "model.vocab[", "is 1000000000000, not a token id"]),
    "vocab-id-past-the-tokens": ("tokenizer.json", set_vocab_id(10, 4_000_000_000),
                                 ["tokenizer.json", "has 300 tokens but gives one the id 4000000000"]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(DETERMINISTIC))
@pytest.mark.parametrize("command", ["generate", "attention"])
def test_a_damaged_file_is_named_in_one_line(base, case, command, tmp_path):
    file, damage, fragments = DETERMINISTIC[case]
    with damaged_copy(base["model"], file, damage) as folder:
        status, stderr = run_cli(*commands(folder, base, tmp_path)[command])
    assert_clean_error(status, stderr, command, *fragments)


def test_through_the_real_command_line_too(base):
    """The same refusals from `python -m gpt1` in a process of its own: one line, exit status 2."""
    quiet = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for case, command in [("auto-map-elsewhere", "generate"), ("truncated-weights", "attention"),
                          ("bit-flipped-weights", "generate")]:  # fmt: skip
        file, damage, fragments = DETERMINISTIC[case]
        with damaged_copy(base["model"], file, damage) as folder:
            arguments = commands(folder, base, folder)[command]
            result = gpt1_cli(*arguments, check=False, env=quiet)
        assert_clean_error(result.returncode, result.stderr, command, *fragments)


def test_a_panic_of_the_tokenizers_library_past_the_checks_is_one_line(base, tmp_path, monkeypatch):
    """Where a tokenizer.json gets past the checks and the Rust library panics as it loads (here: a normalizer that
    its deserializer does not expect), the panic is a one-line error, and the lines Rust prints are held back."""
    import gpt1.model_folders

    monkeypatch.setattr(gpt1.model_folders, "check_tokenizer_files", lambda folder: None)
    panics = json_edit(lambda tokenizer: tokenizer.update(normalizer={"type": "Precompiled"}))
    with damaged_copy(base["model"], "tokenizer.json", panics) as folder:
        status, stderr = run_cli(*commands(folder, base, tmp_path)["generate"])
    assert_clean_error(status, stderr, "generate", "tokenizer.json", "the tokenizers library failed on it")


def test_a_panic_anywhere_in_a_command_is_one_line_and_nothing_else_is_swallowed(monkeypatch):
    """pyo3 raises a Rust panic as PanicException, a BaseException (which `except Exception` lets through): the
    command line turns it into its one line too, and lets every other BaseException go on."""
    import gpt1.generate

    class PanicException(BaseException):  # as pyo3 names it
        pass

    def panics(*args, **kwargs):
        raise PanicException("index out of bounds:\nthe len is 5 but the index is 5")

    monkeypatch.setattr(gpt1.generate, "generate", panics)
    status, stderr = run_cli("generate", "--model", "any", "Hello")
    assert_clean_error(status, stderr, "generate", "a library failed on this input (index out of bounds: the len")
    monkeypatch.setattr(gpt1.generate, "generate", lambda *args, **kwargs: (_ for _ in ()).throw(GeneratorExit()))
    with pytest.raises(GeneratorExit):
        main(["generate", "--model", "any", "Hello"])


def test_a_sharded_folder_is_checked_shard_by_shard(base, tmp_path):
    sharded = tmp_path / "sharded"
    GPT1ForCausalLM.from_pretrained(base["model"]).save_pretrained(sharded, max_shard_size="60KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base["model"] / name, sharded / name)
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (sharded / "model.safetensors").exists()
    status, stderr = run_cli(*commands(sharded, base, tmp_path)["generate"])
    assert status == 0, stderr
    index = "model.safetensors.index.json"
    with damaged_copy(
        sharded, index, lambda raw: raw.replace(shards[0].name.encode(), b"../model.safetensors")
    ) as folder:
        status, stderr = run_cli(*commands(folder, base, tmp_path)["generate"])
    assert_clean_error(status, stderr, "generate", index, "weight_map names the shard '../model.safetensors'")
    with damaged_copy(sharded, shards[1].name, lambda raw: raw[:-100]) as folder:
        status, stderr = run_cli(*commands(folder, base, tmp_path)["attention"])
    assert_clean_error(status, stderr, "attention", shards[1].name, "cannot be read", "past the end of the file")


def test_every_command_that_opens_a_folder_refuses_a_hostile_auto_map(base, tmp_path):
    """convert, train --init-from, finetune and push read the same config.json, and refuse the same entry,
    before anything is written or sent (push refuses before it asks for a login)."""
    damage = edit_json(auto_map={"AutoModelForCausalLM": "evil/repo--modeling_evil.Evil"})
    csv = tmp_path / "reviews.csv"
    csv.write_text("text,label\n" + "".join(f"it was {'good' if i % 2 else 'bad'},{i % 2}\n" for i in range(20)))
    for command in ("convert", "train", "finetune", "push"):
        with damaged_copy(base["old" if command == "convert" else "model"], "config.json", damage) as folder:
            arguments = {
                **commands(folder, base, tmp_path),
                "finetune": ["finetune", "--model", str(folder), "--dataset", str(csv), "--output-dir",
                             str(tmp_path / "tuned")],
                "push": ["push", str(folder), "someone/gpt1-tiny"],
            }[command]  # fmt: skip
            status, stderr = run_cli(*arguments)
        assert_clean_error(status, stderr, command, "config.json", "auto_map['AutoModelForCausalLM']")
    assert not (tmp_path / "converted").exists() and not (tmp_path / "tuned" / "model.safetensors").exists()


def test_a_tokenizer_with_more_tokens_than_the_model_names_both_files(tmp_path):
    tokenizer = make_tokenizer()  # 300 tokens
    GPT1ForCausalLM(tiny_config(vocab_size=280)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    for command in ("generate", "attention"):
        status, stderr = run_cli(*commands(tmp_path, {"tokenizer": tmp_path, "text": tmp_path}, tmp_path)[command])
        assert_clean_error(status, stderr, command, "tokenizer.json' gives 300 tokens with ids up to 299",
                           "config.json' has vocab_size 280")  # fmt: skip


def test_the_upgrade_of_an_old_folder_checks_what_it_copies(base, tmp_path):
    """`gpt1 convert` of a folder saved before 0.2 checks its headers against its config (the padded rows
    allowed) and the tokenizer it copies, and still upgrades the intact folder."""
    with damaged_copy(base["old"], "tokenizer.json", set_vocab_id(3, 10**12)) as folder:
        status, stderr = run_cli("convert", str(folder), str(tmp_path / "a"))
    assert_clean_error(status, stderr, "convert", "tokenizer.json", "not a token id")
    with damaged_copy(base["old"], "config.json", edit_json(n_embd=64, n_head=4, n_inner=256)) as folder:
        status, stderr = run_cli("convert", str(folder), str(tmp_path / "b"))
    assert_clean_error(status, stderr, "convert", "has shape [320, 32], but", "needs [300, 64]")
    status, stderr = run_cli("convert", str(base["old"]), str(tmp_path / "c"))
    assert status == 0, stderr
    assert load_file(tmp_path / "c" / "model.safetensors")["transformer.token_embeddings.weight"].shape[0] == 300


# --- metrics.jsonl and samples.jsonl ----------------------------------------------------------------------------------

GOOD = [{"step": 10 * (i + 1), "train_loss": 3.0 - i / 10, "val_loss": 3.1 - i / 20, "lr": 1e-3} for i in range(4)]
GARBAGE = [b"\x00\xff\xfe binary junk \x80", b"[1, 2, 3]", b'{"step": "ten", "train_loss": 1, "val_loss": 1}',
           b'{"step": 50, "train_loss": "low", "val_loss": 2.0}', b"{" * 100_000, b"9" * 5000]  # fmt: skip


def write_log(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("garbage", "fragment"),
    [(GARBAGE[0], "line 2 is not UTF-8 text"), (GARBAGE[1], "line 2 holds a JSON list, not an object"),
     (GARBAGE[2], 'line 2 has "step" "ten", not a whole number of steps'),
     (GARBAGE[3], 'line 2 has "train_loss" "low", not a number'), (GARBAGE[4], "line 2 is not JSON"),
     (b'{"step": 1, "train_loss": 1, "val_loss": 1, "pad": "' + b"x" * (5 << 20) + b'"}',
      "line 2 is longer than 4,194,304 bytes")],
    ids=["binary", "not-an-object", "step-not-a-number", "loss-not-a-number", "nested-too-deep", "huge-line"],
)  # fmt: skip
def test_plot_metrics_names_a_line_that_is_no_record(tmp_path, garbage, fragment):
    lines = [json.dumps(record).encode() for record in GOOD]
    write_log(tmp_path / "metrics.jsonl", [lines[0], garbage, *lines[1:]])
    status, stderr = run_cli("plot-metrics", str(tmp_path), "--out", str(tmp_path / "curve.png"))
    assert_clean_error(status, stderr, "plot-metrics", "metrics.jsonl", fragment)
    assert not (tmp_path / "curve.png").exists()


def test_a_garbage_samples_line_is_named_and_a_line_cut_short_at_the_end_is_not(tmp_path):
    write_log(tmp_path / "metrics.jsonl", [json.dumps(record).encode() for record in GOOD])
    (tmp_path / "metrics.jsonl").write_bytes((tmp_path / "metrics.jsonl").read_bytes() + b'{"step": 50, "tra')
    samples = [{**record, "prompt": "The", "text": "the trophy"} for record in GOOD]
    write_log(tmp_path / "samples.jsonl", [json.dumps(samples[0]).encode(), b'{"step": 20, "val_loss": 1, "text": 7}'])
    status, stderr = run_cli("plot-metrics", str(tmp_path), "--out", str(tmp_path / "curve.png"))
    assert_clean_error(status, stderr, "plot-metrics", "samples.jsonl", 'line 2 has "text" 7, not a string')
    (tmp_path / "samples.jsonl").unlink()
    status, stderr = run_cli("plot-metrics", str(tmp_path), "--out", str(tmp_path / "curve.png"))
    assert status == 0, stderr  # the cut-short last line of a killed run is no error
    assert (tmp_path / "curve.png").is_file()


def test_the_model_card_the_training_picture_and_a_resumed_run_skip_garbage_lines(tmp_path):
    good = [json.dumps(record).encode() for record in GOOD]
    write_log(tmp_path / "metrics.jsonl", [good[0], *GARBAGE, *good[1:]])
    write_log(tmp_path / "samples.jsonl", [*GARBAGE, json.dumps({**GOOD[0], "text": "the trophy"}).encode()])
    card = write_model_card(tmp_path, GPT1ForCausalLM(tiny_config()), "a text", 40, 1000).read_text()
    assert "| weights | step 40: the lowest validation loss of 4 evaluations" in card and "the trophy" in card
    assert write_loss_curve(tmp_path) == tmp_path / "loss_curve.png"  # drawn while training: skips, never stops
    restart_logs(tmp_path, resumed_at_step=20)
    assert [record["step"] for record in METRICS.read(tmp_path, strict=True)] == [10, 20]
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 1


# --- property tests: mutated files ------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
SIZES = st.sampled_from([0, -1, 1, 2, 3, 4, 5, 16, 31, 32, 33, 63, 64, 65, 96, 128, 299, 300, 301, 320, 4096,
                         10**6, 10**9, 10**12, 2**31, 2**32 + 5, 2**63, 2**70])  # fmt: skip
Mutation = tuple[str, Callable[[bytes], bytes]]


def flip_bits(draw, start: int = 0, end: Callable[[bytes], int] = len) -> Callable[[bytes], bytes]:
    """1 to 8 bits flipped at random places of the bytes in [start, end(bytes))."""
    flips = draw(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=8))

    def damage(raw: bytes) -> bytes:
        data = bytearray(raw)
        stop = max(start + 1, min(end(raw), len(raw)))
        for place, bit in flips:
            data[start + int(place * (stop - start))] ^= 1 << bit
        return bytes(data)

    return damage


def json_edit(change: Callable[[dict], None]) -> Callable[[bytes], bytes]:
    def damage(raw: bytes) -> bytes:
        data = json.loads(raw)
        change(data)
        return json.dumps(data).encode()

    return damage


CONFIG_FIELDS = [
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "vocab_padding_multiple",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "activation_function",
    "layer_norm_epsilon",
    "resid_pdrop",
    "attn_pdrop",
    "embd_pdrop",
    "initializer_range",
    "tie_word_embeddings",
    "use_cache",
    "model_type",
    "architectures",
    "auto_map",
    "dtype",
    "auxiliary_lm_loss_weight",
    "classifier_dropout",
]
TRANSFORMERS_FIELDS = ["num_labels", "id2label", "label2id", "torch_dtype", "problem_type", "output_attentions",
                       "attn_implementation", "layer_types", "rope_scaling", "per_layer_config", "use_return_dict",
                       "name_or_path", "chunk_size_feed_forward", "is_encoder_decoder", "return_dict"]  # fmt: skip
AUTO_CLASSES = [
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoTokenizer",
    "AutoModelForSequenceClassification",
]
CODE_REFERENCES = ["evil/repo--modeling_evil.Evil", "modeling_evil.Evil", "modeling_gpt1.GPT1Model",
                   "configuration_gpt1.GPT1Config", "../modeling_gpt1.X", "os.system", ""]  # fmt: skip


@st.composite
def config_mutations(draw) -> Mutation:
    kind = draw(st.sampled_from(["drop", "retype", "resize", "transformers-field", "whole-file", "auto_map",
                                 "byte-flip"]))  # fmt: skip
    if kind == "byte-flip":
        return kind, flip_bits(draw)
    if kind == "whole-file":
        value = draw(JSON_VALUES)
        return kind, lambda raw: json.dumps(value).encode()
    field = draw(st.sampled_from(CONFIG_FIELDS if kind != "transformers-field" else TRANSFORMERS_FIELDS))
    if kind == "drop":
        return kind, json_edit(lambda config: config.pop(field, None))
    if kind == "auto_map":
        entry, reference = draw(st.sampled_from(AUTO_CLASSES)), draw(st.sampled_from(CODE_REFERENCES) | st.text())
        return kind, json_edit(lambda config: config.setdefault("auto_map", {}).__setitem__(entry, reference))
    value = draw(SIZES) if kind == "resize" else draw(JSON_VALUES)
    return kind, json_edit(lambda config: config.__setitem__(field, value))


TOKENIZER_PARTS = ["normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"]
COMPONENT_TYPES = ["Precompiled", "TemplateProcessing", "Split", "ByteLevel", "Sequence", "Replace", "Strip",
                   "BertNormalizer", "Metaspace", "WordPiece", "RobertaProcessing", "Fuse"]  # fmt: skip
MODEL_FIELDS = ["unk_token", "continuing_subword_prefix", "end_of_word_suffix", "dropout", "fuse_unk", "byte_fallback",
                "ignore_merges"]  # fmt: skip
ADDED_FIELDS = ["id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"]


@st.composite
def tokenizer_mutations(draw) -> Mutation:
    kind = draw(st.sampled_from(["vocab-id", "vocab-drop", "vocab-add", "vocab-whole", "merges", "added_tokens",
                                 "model.type", "model-field", "component", "byte-flip"]))  # fmt: skip
    if kind == "byte-flip":
        return kind, flip_bits(draw)
    index, value = draw(st.integers(0, 10_000)), draw(JSON_VALUES)
    token_id = draw(SIZES | st.integers(0, 310))
    text = draw(st.text(max_size=6))
    model_type = draw(st.sampled_from(["BPE", "WordPiece", "WordLevel", "Unigram", "Foo", "", None, 3]))

    def change(tokenizer: dict) -> None:
        model = tokenizer["model"]
        vocab = model["vocab"]
        token = sorted(vocab)[index % len(vocab)] if isinstance(vocab, dict) and vocab else None
        if kind == "vocab-id" and token is not None:
            vocab[token] = token_id
        elif kind == "vocab-drop" and token is not None:
            del vocab[token]
        elif kind == "vocab-add" and isinstance(vocab, dict):
            vocab[text] = token_id
        elif kind == "vocab-whole":
            model["vocab"] = value
        elif kind == "merges":
            merges = model["merges"]
            at = index % len(merges)
            how = index % 4
            if how == 0:
                del merges[at]
            elif how == 1:
                merges[at] = value
            elif how == 2:
                merges[at] = [text, merges[at][1]]
            else:
                merges.append(value if index % 8 < 4 else [text, text])
        elif kind == "added_tokens":
            added = tokenizer["added_tokens"]
            field = ADDED_FIELDS[index % len(ADDED_FIELDS)]
            if index % 3 == 0:
                added.append({"id": token_id, "content": text, **dict.fromkeys(ADDED_FIELDS[2:], index % 2 == 0)})
            elif index % 3 == 1:
                added[index % len(added)][field] = token_id if field == "id" else value
            else:
                added[index % len(added)].pop(field)
        elif kind == "model.type":
            model["type"] = model_type
        elif kind == "model-field":
            model[MODEL_FIELDS[index % len(MODEL_FIELDS)]] = value if index % 2 else text
        else:  # a component, as random JSON or as a known type with random settings
            part = TOKENIZER_PARTS[index % len(TOKENIZER_PARTS)]
            known = {"type": COMPONENT_TYPES[index % len(COMPONENT_TYPES)], text or "x": value,
                     "precompiled_charsmap": text, "pattern": {"Regex": text}, "special_tokens": value}  # fmt: skip
            tokenizer[part] = value if index % 2 else known

    return kind, json_edit(change)


TENSOR_COUNT = 26  # tiny_config's: 2 embeddings + 2 layers of 12


def header_length(raw: bytes) -> int:
    return int.from_bytes(raw[:8], "little")


@st.composite
def header_mutations(draw) -> Mutation:
    kind = draw(st.sampled_from(["length-prefix", "dtype", "shape", "data_offsets", "names", "__metadata__",
                                 "header-byte-flip"]))  # fmt: skip
    if kind == "header-byte-flip":
        return kind, flip_bits(draw, start=8, end=lambda raw: 8 + header_length(raw))
    if kind == "length-prefix":
        near = draw(st.booleans())
        shift = draw(st.integers(-16, 16) if near else st.integers(0, 2**64 - 1))

        def new_length(raw: bytes) -> bytes:
            length = (header_length(raw) if near else 0) + shift
            return struct.pack("<Q", min(2**64 - 1, max(0, length))) + raw[8:]

        return kind, new_length
    index, value = draw(st.integers(0, TENSOR_COUNT - 1)), draw(JSON_VALUES)
    dtype = draw(st.sampled_from(["F16", "BF16", "F64", "I32", "U8", "BOOL", "F8_E4M3", "C64", "F4", "F33", ""]))
    dims = draw(st.lists(st.integers(-2, 2**40) | SIZES, max_size=4))
    shifts = draw(st.tuples(st.integers(-64, 64), st.integers(-64, 64)))
    text = draw(st.text(max_size=40))
    how = draw(st.integers(0, 3))

    def damage(raw: bytes) -> bytes:
        length = header_length(raw)
        header = json.loads(raw[8 : 8 + length])
        names = sorted(name for name in header if name != "__metadata__")
        name = names[index % len(names)]
        entry = header[name]
        duplicate = None
        if kind == "dtype":
            entry["dtype"] = dtype if how else value
        elif kind == "shape":
            entry["shape"] = [dims, list(reversed(entry["shape"])), [n + 1 for n in entry["shape"]], value][how]
        elif kind == "data_offsets":
            begin, end = entry["data_offsets"]
            entry["data_offsets"] = [[begin + shifts[0], end + shifts[1]], [end, begin], dims[:2], value][how]
        elif kind == "names":
            if how == 0:
                header[text] = header.pop(name)
            elif how == 1:
                del header[name]
            elif how == 2:
                header[text] = value
            else:
                duplicate = names[(index + 1) % len(names)]
        else:
            header["__metadata__"] = value
        body = json.dumps(header)
        if duplicate is not None:  # a name twice: JSON allows it, a dict cannot hold it
            body = body[:-1] + f", {json.dumps(duplicate)}: {json.dumps(header[name])}}}"
        encoded = body.encode()
        encoded += b" " * (-len(encoded) % 8)
        return len(encoded).to_bytes(8, "little") + encoded + raw[8 + length :]

    return kind, damage


SUBSET = st.integers(0, ALSO_CONVERT_AND_TRAIN_EVERY - 1).map(lambda draw: draw == 0)


@FUZZ
@given(mutation=config_mutations(), subset=SUBSET)
def test_any_mutated_config_json_works_or_is_refused_in_one_line(base, mutation, subset):
    try_commands("config.json", mutation[1], base, subset)


@FUZZ
@given(mutation=tokenizer_mutations(), subset=SUBSET)
def test_any_mutated_tokenizer_json_works_or_is_refused_in_one_line(base, mutation, subset):
    try_commands("tokenizer.json", mutation[1], base, subset)


@FUZZ
@given(mutation=header_mutations(), subset=SUBSET)
def test_any_mutated_safetensors_header_works_or_is_refused_in_one_line(base, mutation, subset):
    try_commands("model.safetensors", mutation[1], base, subset)


def test_the_memory_bound_catches_a_large_allocation():
    """The bound the property tests run under is real: 3 GiB cannot be had inside it."""
    with pytest.raises((MemoryError, RuntimeError)), memory_bound():
        torch.empty(3 * GiB, dtype=torch.uint8).fill_(1)
    assert math.isfinite(torch.empty(16).fill_(1.0).sum().item())  # and it is lifted again
