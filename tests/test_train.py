"""`gpt1 train` and `gpt1 generate`, run as a user runs them: through the real CLI."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from gpt1.train import TrainConfig, train

from .helpers import gpt1_cli

# A model and schedule small enough for a few seconds on 2 CPU cores. TINY_ANY_TOKENIZER leaves out
# --vocab-size, which sizes a BPE tokenizer trained for the run and conflicts with any other tokenizer.
TINY_ANY_TOKENIZER = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "8",
                      "--eval-batches", "2", "--sample-tokens", "8"]  # fmt: skip
TINY = [*TINY_ANY_TOKENIZER, "--vocab-size", "300"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny run on the built-in corpus, shared by the tests that inspect its output."""
    output = tmp_path_factory.mktemp("run")
    result = gpt1_cli("train", "--output-dir", str(output), *TINY, "--max-steps", "60", "--eval-every", "20",
                      "--save-every", "20", "--lr", "3e-3", "--warmup-steps", "5")  # fmt: skip
    (output.parent / f"{output.name}.log").write_text(result.stdout + result.stderr)
    return output


def test_a_healthy_run_prints_no_warning_and_writes_files_others_can_read(trained):
    log = (trained.parent / f"{trained.name}.log").read_text()
    # Before the first step, one line says what will happen: size, data, steps, tokens per step, folder.
    plan = re.search(r"Training (\d+\.\d+)M parameters \(2 layers × 32 wide\) on ([\d,]+) training and [\d,]+ "
                     r"validation tokens \([\d.]+ epochs\): 60 steps of 256 tokens, into (.+)\.", log)  # fmt: skip
    assert plan is not None, log[:2000]
    assert plan.group(3) == str(trained) and 0 < float(plan.group(1)) < 1
    for alarm in ("Removed shared tensor", "This should be OK, but check", "missing keys", "Traceback"):
        assert alarm not in log, alarm
    umask = os.umask(0)
    os.umask(umask)
    written = [trained / "model.safetensors", trained / "config.json", *trained.glob("checkpoints/*/*")]
    for path in written:
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_output_is_a_shareable_hf_folder(trained):
    names = {path.name for path in trained.iterdir()}
    expected = {
        *("config.json", "model.safetensors", "configuration_gpt1.py", "modeling_gpt1.py", "generation_config.json"),
        *("tokenizer.json", "tokenizer_config.json", "README.md", "loss_curve.png", "metrics.jsonl"),
    }
    assert expected <= names
    config = json.loads((trained / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_gpt1.GPT1ForCausalLM"
    model = AutoModelForCausalLM.from_pretrained(trained, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    assert model.config.vocab_size == len(tokenizer) == 300
    assert tokenizer.model_max_length == model.config.n_positions == 32


def test_it_learns_and_records_metrics(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [20, 40, 60]
    assert records[-1]["val_loss"] < records[0]["val_loss"] < 6.0  # ln(300) = 5.7 is chance level
    assert records[-1]["train_loss"] < 5.0
    for record in records:
        assert record["val_perplexity"] == pytest.approx(2.718281828 ** record["val_loss"], rel=1e-6)
        assert record["tokens_per_s"] > 0 and record["lr"] > 0


def test_model_card_reports_the_run(trained):
    card = (trained / "README.md").read_text()
    last = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert card.startswith("---\nlibrary_name: transformers\n") and "\npipeline_tag: text-generation\n" in card
    assert "custom_code" in card and "trust_remote_code=True" in card
    assert f"{last['val_loss']:.4f}" in card and "| steps | 60 |" in card
    assert "Python documentation topics" in card


def test_checkpoints_are_complete_and_only_the_last_k_are_kept(trained):
    checkpoints = sorted(path.name for path in (trained / "checkpoints").iterdir())
    assert checkpoints == ["step-00000020", "step-00000040"]  # keep 2; no checkpoint at the final step
    for name in checkpoints:
        files = {path.name for path in (trained / "checkpoints" / name).iterdir()}
        assert {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= files


def test_generate_streams_a_continuation(trained):
    first = gpt1_cli("generate", "--model", str(trained), "The return", "--max-new-tokens", "12", "--seed", "3")
    again = gpt1_cli("generate", "--model", str(trained), "The return", "--max-new-tokens", "12", "--seed", "3")
    assert first.stdout.startswith("The return") and len(first.stdout) > len("The return")
    assert first.stdout == again.stdout  # same seed, same text
    two = gpt1_cli("generate", "--model", str(trained), "The", "--num-samples", "2", "--max-new-tokens", "5")
    assert two.stdout.count("--- sample") == 2


# Where the crash-safety test kills one run, one after the other (GPT1_FAILPOINT="POINT@STEP", a real
# SIGKILL from inside the process at that point); each time the run is resumed with --resume.
KILL_POINTS = [
    "checkpoint-write@8",  # mid-write (weights, optimizer on disk; the run's progress not yet): no checkpoint yet
    "step@13",  # between checkpoints
    "checkpoint-written@16",  # complete, not yet renamed into place
    "checkpoint-renamed@24",  # in place, the old ones not yet pruned
    "step@30",
    "final-save@36",  # trained to the end, the final model not yet saved
]
SAVE_EVERY = 8


def test_killed_at_every_point_and_resumed_ends_with_the_uninterrupted_weights(tmp_path):
    """SIGKILL one run at six points, checkpoint writes included, resuming after each: every resume
    succeeds, no kill loses more than one checkpoint interval, and the final weights are bit-identical
    to a run never killed."""
    options = [*TINY, "--max-steps", "36", "--eval-every", "12", "--save-every", str(SAVE_EVERY),
               "--keep-checkpoints", "2"]  # fmt: skip
    gpt1_cli("train", "--output-dir", str(tmp_path / "whole"), *options)

    killed = tmp_path / "killed"
    latest_step = 0
    for index, point in enumerate(KILL_POINTS):
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "GPT1_FAILPOINT": point}
        command = [sys.executable, "-m", "gpt1", "train", "--output-dir", str(killed), *options]
        result = subprocess.run([*command, "--resume"] if index else command, capture_output=True, text=True, env=env)
        assert result.returncode == -signal.SIGKILL, f"{point}: {result.stderr[-3000:]}"
        if index:  # resumed from the last complete checkpoint, or from scratch if there was none
            expected = "Resumed from" if latest_step else "No checkpoint"
            assert expected in result.stdout + result.stderr, point
        kill_step = int(point.split("@")[1])
        complete = sorted((killed / "checkpoints").glob("step-*"))
        latest_step = int(complete[-1].name.removeprefix("step-")) if complete else 0
        assert kill_step - latest_step <= SAVE_EVERY, point  # no kill loses more than one interval
        assert not (killed / "model.safetensors").exists(), point  # it really died before the end
        if point.startswith("checkpoint-write"):  # the half-written checkpoint is there, under its temporary name
            assert (killed / "checkpoints" / f".tmp-step-{kill_step:08d}").is_dir()
            assert not (killed / "checkpoints" / f"step-{kill_step:08d}").exists()

    resumed = gpt1_cli("train", "--output-dir", str(killed), *options, "--resume")
    assert "Resumed from" in resumed.stdout + resumed.stderr
    whole, after_kills = load_file(tmp_path / "whole" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert whole.keys() == after_kills.keys()
    for name in whole:
        assert torch.equal(whole[name], after_kills[name]), name
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [12, 24, 36]
    assert not list((killed / "checkpoints").glob(".tmp-*"))  # half-written leftovers are cleaned up


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    output = tmp_path / "run"
    options = [*TINY, "--max-steps", "10", "--eval-every", "5", "--save-every", "5"]
    gpt1_cli("train", "--output-dir", str(output), *options)
    metrics = output / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 11, "train_lo')  # the tail of a write that never finished
    gpt1_cli("train", "--output-dir", str(output), *options, "--max-steps", "15", "--resume")
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [5, 10, 15]


def test_a_half_written_checkpoint_is_never_picked_up(tmp_path):
    output = tmp_path / "run"
    gpt1_cli(
        "train", "--output-dir", str(output), *TINY, "--max-steps", "10", "--eval-every", "10", "--save-every", "5"
    )
    broken = output / "checkpoints" / ".tmp-step-00000009"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"truncated")
    resumed = gpt1_cli("train", "--output-dir", str(output), *TINY, "--max-steps", "10", "--eval-every", "10",
                       "--save-every", "5", "--resume")  # fmt: skip
    assert "Resumed from" in resumed.stdout + resumed.stderr and "step-00000005" in resumed.stdout + resumed.stderr


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import gpt1.train as training

    rank = int(os.environ["RANK"])
    seen = []
    original_batches = training._batches

    def recording_batches(accelerator, loader, progress):
        for batch in original_batches(accelerator, loader, progress):
            seen.append(batch.tolist())
            yield batch

    training._batches = recording_batches

    config = training.TrainConfig(output_dir=sys.argv[1], n_layer=2, n_head=2, n_embd=32, block_size=32,
                                  batch_size=4, vocab_size=300, max_steps=30, eval_every=10, save_every=15,
                                  eval_batches=2, sample_tokens=4, lr=3e-3, warmup_steps=3)
    training.train(config)
    with open(f"{sys.argv[1]}/seen-rank{rank}.json", "w") as file:
        json.dump(seen, file)
    """
)


def test_two_process_ddp_on_cpu_with_torchrun(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    output = tmp_path / "run"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(script), str(output)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-5000:]
    seen = [json.loads((output / f"seen-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 30
    rows = [{tuple(row) for batch in rank_batches for row in batch} for rank_batches in seen]
    assert rows[0] and rows[1] and not rows[0] & rows[1]  # each rank trains on its own shard
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [10, 20, 30]  # written once, by rank 0 only
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    checkpoint = output / "checkpoints" / "step-00000015"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {path.name for path in checkpoint.iterdir()}
    assert AutoModelForCausalLM.from_pretrained(output, trust_remote_code=True).config.n_layer == 2


class TestBadInputBeforeTraining:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            (["--dataset", "./no/such/corpus.txt"], "No such file or folder: './no/such/corpus.txt'"),
            (["--preset", "huge"], "Unknown preset 'huge'; choose one of ['gpt1', 'small', 'tiny']"),
            (["--block-size", "64", "--n-positions", "32"], "--block-size 64 is longer than the model's context"),
            (["--tokenizer", "./no-tokenizer"], "No such tokenizer folder: './no-tokenizer'"),
        ],
    )
    def test_cli_errors(self, tmp_path, options, message):
        result = gpt1_cli("train", "--output-dir", str(tmp_path / "out"), *TINY_ANY_TOKENIZER, *options, check=False)
        assert result.returncode == 2, result.stderr[-2000:]
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "out" / "checkpoints").exists()

    def test_empty_file(self, tmp_path):
        (tmp_path / "empty.txt").write_text("")
        with pytest.raises(ValueError, match="empty.txt' is empty"):
            train(TrainConfig(output_dir=str(tmp_path / "out"), dataset=str(tmp_path / "empty.txt")))

    def test_corpus_shorter_than_one_block(self, tmp_path):
        (tmp_path / "short.txt").write_text("just a few words\n" * 3 + "and some more\n" * 3)
        with pytest.raises(ValueError, match="fewer than one block of 128"):
            train(TrainConfig(output_dir=str(tmp_path / "out"), dataset=str(tmp_path / "short.txt"), tokenizer="char"))

    def test_missing_text_column(self, tmp_path):
        (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps({"body": f"row {i}"}) for i in range(10)))
        with pytest.raises(
            ValueError, match=r"no column 'text'; its columns are \['body'\]. Name the right one with --text-column"
        ):
            train(TrainConfig(output_dir=str(tmp_path / "out"), dataset=str(tmp_path / "rows.jsonl")))

    def test_tokenizer_larger_than_the_model(self, tmp_path):
        from gpt1 import GPT1Config, GPT1ForCausalLM

        GPT1ForCausalLM(GPT1Config(vocab_size=100, n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(
            tmp_path / "small-vocab"
        )
        with pytest.raises(ValueError, match=r"300 tokens but the model's vocab_size is 100"):
            train(TrainConfig(output_dir=str(tmp_path / "out"), init_from=str(tmp_path / "small-vocab"),
                              vocab_size=300, block_size=32))  # fmt: skip

    def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(self, tmp_path):
        options = dict(n_layer=1, n_head=2, n_embd=16, block_size=32, batch_size=4, vocab_size=300,
                       eval_every=100, save_every=3, max_steps=100)  # fmt: skip
        output = tmp_path / "out"
        original_forward = torch.nn.Embedding.forward
        calls = {"n": 0}

        def poisoned(self, input):  # the 5th optimizer step sees a NaN
            calls["n"] += 1
            result = original_forward(self, input)
            return result * float("nan") if calls["n"] == 2 * 5 - 1 else result

        torch.nn.Embedding.forward = poisoned
        try:
            with pytest.raises(RuntimeError, match=r"loss is nan at step 5.*last good checkpoint is .*step-00000003"):
                train(TrainConfig(output_dir=str(output), **options))
        finally:
            torch.nn.Embedding.forward = original_forward
        checkpoint = output / "checkpoints" / "step-00000003"
        assert torch.isfinite(load_file(checkpoint / "model.safetensors")["transformer.token_embeddings.weight"]).all()
        assert not (output / "model.safetensors").exists()


def test_report_to_tensorboard_logs_the_metrics(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    output = tmp_path / "run"
    gpt1_cli("train", "--output-dir", str(output), *TINY, "--max-steps", "10", "--eval-every", "5",
             "--save-every", "100", "--report-to", "tensorboard")  # fmt: skip
    event_files = sorted((output / "gpt1").rglob("events.out.tfevents.*"))
    assert event_files
    scalars = {}
    for event_file in event_files:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars[tag] = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    assert [step for step, _ in scalars["val_loss"]] == [5, 10]
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert scalars["val_loss"][-1][1] == pytest.approx(records[-1]["val_loss"], rel=1e-6)
    assert {"train_loss", "lr", "tokens_per_s"} <= set(scalars)


def test_streaming_reads_lazily_trains_and_resumes(tmp_path):
    import datasets

    from gpt1.data import load_corpus

    corpus_file = tmp_path / "lines.txt"
    corpus_file.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(2000)))
    corpus = load_corpus(str(corpus_file), streaming=True, val_fraction=0.1)
    assert isinstance(corpus.train, datasets.IterableDataset)
    validation_rows = [row["text"] for row in corpus.validation]
    assert len(validation_rows) == 200 and validation_rows[1].startswith("line 10:")  # every 10th row held out
    assert not {row["text"] for row in itertools.islice(corpus.train, 500)} & set(validation_rows)

    output = tmp_path / "run"
    options = ["--dataset", str(corpus_file), "--streaming", "--tokenizer", "char", *TINY_ANY_TOKENIZER,
               "--save-every", "10", "--eval-every", "10"]  # fmt: skip
    gpt1_cli("train", "--output-dir", str(output), *options, "--max-steps", "20")
    resumed = gpt1_cli("train", "--output-dir", str(output), *options, "--max-steps", "30", "--resume")
    assert "Resumed from" in resumed.stdout + resumed.stderr and "step-00000010" in resumed.stdout + resumed.stderr
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [10, 20, 30]
    assert records[-1]["val_loss"] < records[0]["val_loss"]


def test_the_main_job_ends_where_the_readme_says(tmp_path):
    """The README's quickstart: `gpt1 train` with every default (about 2 CPU minutes), then `gpt1 generate`."""
    quickstart = (Path(__file__).resolve().parent.parent / "README.md").read_text().split("## Quickstart", 1)[1]
    promise = re.search(r"Validation loss falls\s+from ([\d.]+) at step (\d+) to ([\d.]+) at step (\d+)", quickstart)
    assert promise, "the README's quickstart no longer says what the main job reaches"
    first_loss, last_loss = float(promise[1]), float(promise[3])
    first_step, last_step = int(promise[2]), int(promise[4])
    gpt1_cli("train", cwd=tmp_path, timeout=900)
    run = tmp_path / "runs" / "gpt1-tiny"
    losses = {record["step"]: record["val_loss"] for record in map(json.loads, (run / "metrics.jsonl").open())}
    assert max(losses) == last_step == TrainConfig().max_steps
    # Seeded, so the same here as on the machine that measured it, up to float differences between CPUs.
    assert abs(losses[first_step] - first_loss) < 0.1 and abs(losses[last_step] - last_loss) < 0.05, losses
    text = gpt1_cli("generate", "--model", str(run), "The return statement", "--seed", "0").stdout
    assert text.startswith("The return statement") and len(text.split()) >= 40
