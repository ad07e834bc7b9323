"""`gpt1 train` and `gpt1 generate`, run as a user runs them: through the real CLI."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from gpt1.train import TrainConfig, train

from .helpers import gpt1_cli

# A model and schedule small enough for a few seconds on 2 CPU cores. TINY_ANY_TOKENIZER leaves out
# --vocab-size, which sizes a BPE or word tokenizer trained for the run and conflicts with any other tokenizer.
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


def test_each_evaluation_keeps_its_sample(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (trained / "samples.jsonl").read_text().splitlines()]
    assert [sample["step"] for sample in samples] == [20, 40, 60]
    log = (trained.parent / f"{trained.name}.log").read_text()
    for sample, record in zip(samples, records, strict=True):
        assert (sample["train_loss"], sample["val_loss"]) == (record["train_loss"], record["val_loss"])
        assert sample["prompt"] == "The" and sample["text"].startswith("The") and len(sample["text"]) > 3
        assert f"step {sample['step']}: train" in log and sample["text"] in log  # what the terminal showed


def test_model_card_reports_the_run(trained):
    card = (trained / "README.md").read_text()
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda record: record["val_loss"])  # the weights the folder keeps
    assert card.startswith("---\nlibrary_name: transformers\n") and "\npipeline_tag: text-generation\n" in card
    assert "custom_code" in card and "trust_remote_code=True" in card
    assert f"| validation loss | {best['val_loss']:.4f} |" in card and "| steps | 60 |" in card
    assert f"| weights | step {best['step']}: the lowest validation loss of 3 evaluations" in card
    assert "Python documentation topics" in card
    # The samples, first to last, each in a fenced block under its step and validation loss.
    samples = [json.loads(line) for line in (trained / "samples.jsonl").read_text().splitlines()]
    section = card.split("### Samples during training", 1)[1].split("## Usage", 1)[0]
    positions = [section.index(f"**Step {sample['step']}** (validation loss {sample['val_loss']:.4f})\n\n```text\n"
                               f"{sample['text']}\n```") for sample in samples]  # fmt: skip
    assert positions == sorted(positions)


def test_the_folder_holds_the_best_evaluations_weights(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    best = min(records, key=lambda record: record["val_loss"])
    kept = trained / "checkpoints" / "best" / "model.safetensors"
    assert_same_weights(load_file(trained / "model.safetensors"), load_file(kept))
    with safe_open(kept, framework="pt") as saved:
        assert int(saved.metadata()["step"]) == best["step"]
    log = (trained.parent / f"{trained.name}.log").read_text()
    assert f"The folder holds the weights of step {best['step']} (validation loss {best['val_loss']:.4f}" in log


def assert_same_weights(expected: dict, got: dict) -> None:
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_checkpoints_are_complete_and_only_the_last_k_are_kept(trained):
    checkpoints = sorted(path.name for path in (trained / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-00000020", "step-00000040"]  # keep 2; no checkpoint at the final step
    assert sorted(path.name for path in (trained / "checkpoints").iterdir()) == ["best", *checkpoints]
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
    "best-written@12",  # the first evaluation's weights, the best so far, written but not yet renamed into place
    "step@13",  # between checkpoints
    "checkpoint-written@16",  # complete, not yet renamed into place
    "checkpoint-renamed@24",  # in place, the old ones not yet pruned
    "step@30",
    "final-save@36",  # trained to the end, the final model not yet saved
]
SAVE_EVERY = 8


def test_killed_at_every_point_and_resumed_ends_with_the_uninterrupted_weights(tmp_path):
    """SIGKILL one run at seven points, checkpoint and best-weights writes included, resuming after each: every resume
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
        if point.startswith("best-written"):  # the new best is whole under its temporary name, not yet in place
            assert (killed / "checkpoints" / "best" / ".tmp-model.safetensors").is_file()
            assert not (killed / "checkpoints" / "best" / "model.safetensors").exists()

    resumed = gpt1_cli("train", "--output-dir", str(killed), *options, "--resume")
    assert "Resumed from" in resumed.stdout + resumed.stderr
    whole, after_kills = load_file(tmp_path / "whole" / "model.safetensors"), load_file(killed / "model.safetensors")
    assert whole.keys() == after_kills.keys()
    for name in whole:
        assert torch.equal(whole[name], after_kills[name]), name
    for log in ("metrics.jsonl", "samples.jsonl"):  # each evaluation once, none lost or repeated by the kills
        assert [json.loads(line)["step"] for line in (killed / log).read_text().splitlines()] == [12, 24, 36], log
    assert (killed / "samples.jsonl").read_text() == (tmp_path / "whole" / "samples.jsonl").read_text()
    assert not list((killed / "checkpoints").glob(".tmp-*"))  # half-written leftovers are cleaned up


def test_a_log_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    output = tmp_path / "run"
    options = [*TINY, "--max-steps", "10", "--eval-every", "5", "--save-every", "5"]
    gpt1_cli("train", "--output-dir", str(output), *options)
    logs = [output / "metrics.jsonl", output / "samples.jsonl"]
    for log in logs:  # the tail of a write that never finished
        log.write_text(log.read_text() + '{"step": 11, "train_lo')
    gpt1_cli("train", "--output-dir", str(output), *options, "--max-steps", "15", "--resume")
    for log in logs:  # resumed from step 5: step 10 logged again by the resumed run, once
        assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [5, 10, 15], log


def test_a_half_written_checkpoint_is_never_picked_up(tmp_path):
    output = tmp_path / "run"
    gpt1_cli(
        "train", "--output-dir", str(output), *TINY, "--max-steps", "10", "--eval-every", "10", "--save-every", "5"
    )
    (output / "finished.json").unlink()  # as if killed while writing a checkpoint at step 9, before the end
    broken = output / "checkpoints" / ".tmp-step-00000009"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"truncated")
    resumed = gpt1_cli("train", "--output-dir", str(output), *TINY, "--max-steps", "10", "--eval-every", "10",
                       "--save-every", "5", "--resume")  # fmt: skip
    assert "Resumed from" in resumed.stdout + resumed.stderr and "step-00000005" in resumed.stdout + resumed.stderr


# A run made to overfit: 80 lines of random letters, which a 0.4M-parameter model soon learns by heart,
# while the validation lines (other random letters) can only get less likely as it does.
OVERFIT = ["--tokenizer", "char", "--n-layer", "2", "--n-head", "2", "--n-embd", "128", "--block-size", "32",
           "--batch-size", "8", "--eval-batches", "2", "--sample-tokens", "8", "--dropout", "0", "--lr", "3e-3",
           "--warmup-steps", "5", "--max-steps", "200", "--eval-every", "10", "--save-every", "10",
           "--keep-checkpoints", "100", "--early-stopping-patience", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def overfit(tmp_path_factory) -> tuple[Path, list[str], str]:
    """The overfitting run, stopped early (`--early-stopping-patience 3`): its folder, options and log."""
    folder = tmp_path_factory.mktemp("overfit")
    rng = random.Random(0)
    corpus = folder / "letters.txt"
    corpus.write_text("".join("".join(rng.choice("abcdefgh") for _ in range(15)) + "\n" for _ in range(80)))
    options = ["--dataset", str(corpus), *OVERFIT]
    result = gpt1_cli("train", "--output-dir", str(folder / "run"), *options)
    return folder / "run", options, result.stdout + result.stderr


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def validation_loss_of(folder: Path, options: list[str]) -> float:
    """The validation loss of the model in `folder`, measured as training measures it: the mean over the rows of
    the first --eval-batches batches of the validation blocks."""
    from gpt1 import GPT1ForCausalLM
    from gpt1.data import load_corpus, pack_corpus

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = GPT1ForCausalLM.from_pretrained(folder).eval()
    corpus = load_corpus(options[options.index("--dataset") + 1], val_fraction=0.1)
    blocks = pack_corpus(corpus, tokenizer, block_size=32)["validation"]["input_ids"][: 2 * 8]
    with torch.no_grad():
        losses = [model(input_ids=row[None], labels=row[None]).loss for row in torch.tensor(blocks)]
    return torch.stack(losses).mean().item()


def test_early_stopping_stops_patience_evaluations_after_the_best_and_keeps_its_weights(overfit):
    output, options, log = overfit
    records = read_log(output / "metrics.jsonl")
    best = min(records, key=lambda record: record["val_loss"])
    stop = records[-1]["step"]
    # It ran until the third evaluation in a row without a new lowest validation loss, and not longer.
    lowest, since = math.inf, []
    for record in records:
        since.append(0 if record["val_loss"] < lowest else since[-1] + 1)
        lowest = min(lowest, record["val_loss"])
    assert since[-1] == 3 and max(since[:-1]) < 3 and stop == best["step"] + 30 < 200, records
    assert (
        f"Early stopping at step {stop}: validation loss has not improved on {best['val_loss']:.4f} "
        f"(step {best['step']}) for 3 evaluations (--early-stopping-patience 3)."
    ) in log
    # It said the model memorises, once per stretch without a new best (not at every evaluation), naming the best.
    memorising = (r"validation loss [\d.]+ has not improved on ([\d.]+) \(step (\d+)\) for \d+ evaluations? "
                  r"while training loss fell [\d.]+ → [\d.]+: the model is memorising the training text")  # fmt: skip
    warnings = re.findall(memorising, log)
    stretches = sum(1 for before, now in itertools.pairwise(since) if now == 1 and before == 0)
    assert 1 <= len(warnings) <= stretches < sum(1 for count in since if count)
    assert warnings[-1] == (f"{best['val_loss']:.4f}", str(best["step"]))
    # The folder holds the best evaluation's weights, which get the validation loss reported for them.
    weights = load_file(output / "model.safetensors")
    assert_same_weights(load_file(output / "checkpoints" / f"step-{best['step']:08d}" / "model.safetensors"), weights)
    assert_same_weights(load_file(output / "checkpoints" / "best" / "model.safetensors"), weights)
    assert validation_loss_of(output, options) == pytest.approx(best["val_loss"], abs=1e-4)
    assert (
        f"The folder holds the weights of step {best['step']} (validation loss {best['val_loss']:.4f}, the lowest "
        f"of {len(records)} evaluations; training went on to step {stop})."
    ) in log
    card = (output / "README.md").read_text()
    assert f"| steps | {stop} of 200 (early stopping: validation loss had stopped improving) |" in card
    assert f"| weights | step {best['step']}: the lowest validation loss of {len(records)} evaluations" in card
    assert f"| validation loss | {best['val_loss']:.4f} |" in card and f"value: {best['val_loss']:.4f}" in card


def test_final_weights_last_keeps_the_last_steps_weights(overfit, tmp_path):
    output, options, _ = overfit
    last = tmp_path / "last"
    log = gpt1_cli("train", "--output-dir", str(last), *options, "--final-weights", "last").stdout
    records = read_log(last / "metrics.jsonl")
    assert records == [{**record, "tokens_per_s": records[index]["tokens_per_s"]}
                       for index, record in enumerate(read_log(output / "metrics.jsonl"))]  # fmt: skip
    best, final = min(records, key=lambda record: record["val_loss"]), records[-1]
    weights = load_file(last / "model.safetensors")
    assert not torch.equal(weights["transformer.token_embeddings.weight"],
                           load_file(output / "model.safetensors")["transformer.token_embeddings.weight"])  # fmt: skip
    assert validation_loss_of(last, options) == pytest.approx(final["val_loss"], abs=1e-4)
    # The best weights are still there, for whoever wants them.
    assert_same_weights(load_file(output / "model.safetensors"), load_file(last / "checkpoints/best/model.safetensors"))
    assert (
        f"The folder holds the weights of step {final['step']} (validation loss {final['val_loss']:.4f}, the last); "
        f"the lowest was {best['val_loss']:.4f} at step {best['step']}"
    ) in log
    card = (last / "README.md").read_text()
    assert (
        f"| weights | step {final['step']}: the last (the lowest validation loss was {best['val_loss']:.4f}, "
        f"at step {best['step']}) |"
    ) in card
    assert f"| validation loss | {final['val_loss']:.4f} |" in card


def test_a_resumed_run_keeps_the_best_it_had_before_the_restart(overfit, tmp_path):
    output, options, _ = overfit
    records = read_log(output / "metrics.jsonl")
    best = min(records, key=lambda record: record["val_loss"])["step"]
    killed = tmp_path / "killed"
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "GPT1_FAILPOINT": f"step@{best + 15}",
    }
    command = [sys.executable, "-m", "gpt1", "train", "--output-dir", str(killed), *options]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    state = json.loads((killed / "checkpoints" / f"step-{best + 10:08d}" / "trainer_state.json").read_text())
    assert state["validation"]["best_step"] == best and state["validation"]["evaluations_since_best"] == 1

    resumed = gpt1_cli("train", "--output-dir", str(killed), *options, "--resume")
    assert f"step-{best + 10:08d} at step {best + 10}" in resumed.stdout + resumed.stderr
    assert [record["step"] for record in read_log(killed / "metrics.jsonl")] == [r["step"] for r in records]
    assert (killed / "samples.jsonl").read_text() == (output / "samples.jsonl").read_text()
    assert_same_weights(load_file(output / "model.safetensors"), load_file(killed / "model.safetensors"))

    # A stopped run may have written a newer best after its last checkpoint: the resumed run goes back to the
    # best its checkpoint knew, never a best from past that checkpoint.
    stale = {name: torch.zeros_like(tensor) for name, tensor in load_file(killed / "model.safetensors").items()}
    (killed / "finished.json").unlink()  # as if it was stopped again before the end
    save_file(
        stale, killed / "checkpoints" / "best" / "model.safetensors", metadata={"step": "9999", "val_loss": "0.1"}
    )
    gpt1_cli("train", "--output-dir", str(killed), *options, "--resume")
    assert_same_weights(load_file(output / "model.safetensors"), load_file(killed / "model.safetensors"))


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


def torchrun_two_processes(tmp_path: Path, script_text: str, port: int) -> tuple[subprocess.CompletedProcess, Path]:
    """Run `script_text` on 2 CPU processes with torchrun, the run folder as its argument."""
    script, output = tmp_path / "two_processes.py", tmp_path / "run"
    script.write_text(script_text)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(script), str(output)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env), output


def test_two_process_ddp_on_cpu_with_torchrun(tmp_path):
    result, output = torchrun_two_processes(tmp_path, DDP_SCRIPT, port=29517)
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


# Each rank evaluates for real, then reports the script's validation loss instead: the best at step 20, then
# two evaluations without a better one.
DDP_EARLY_STOPPING_SCRIPT = textwrap.dedent(
    """
    import sys
    import gpt1.train as training

    losses = iter([3.0, 2.0, 2.5, 2.2, 1.0])
    measure = training._evaluate

    def scripted(accelerator, model, loader, max_batches):
        measure(accelerator, model, loader, max_batches)
        return next(losses)

    training._evaluate = scripted
    config = training.TrainConfig(output_dir=sys.argv[1], n_layer=2, n_head=2, n_embd=32, block_size=32,
                                  batch_size=4, vocab_size=300, max_steps=100, eval_every=10, save_every=10,
                                  keep_checkpoints=10, eval_batches=2, sample_tokens=4, early_stopping_patience=2)
    training.train(config)
    """
)


def test_two_process_ddp_stops_early_together_and_keeps_the_best_weights(tmp_path):
    result, output = torchrun_two_processes(tmp_path, DDP_EARLY_STOPPING_SCRIPT, port=29518)
    assert result.returncode == 0, result.stderr[-5000:]  # both ranks stopped at step 40 (one alone would hang)
    assert [record["step"] for record in read_log(output / "metrics.jsonl")] == [10, 20, 30, 40]
    assert [sample["step"] for sample in read_log(output / "samples.jsonl")] == [10, 20, 30, 40]
    said = result.stdout + result.stderr
    assert said.count("Early stopping at step 40: validation loss has not improved on 2.0000 (step 20)") == 1
    assert "The folder holds the weights of step 20 (validation loss 2.0000" in said
    step_20 = load_file(output / "checkpoints" / "step-00000020" / "model.safetensors")
    assert_same_weights(step_20, load_file(output / "model.safetensors"))
    assert not (output / "checkpoints" / "step-00000040").exists()  # stopped: the final model, no checkpoint


class TestBadInputBeforeTraining:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            (["--dataset", "./no/such/corpus.txt"], "No such file or folder: './no/such/corpus.txt'"),
            (["--preset", "huge"], "Unknown preset 'huge'; choose one of ['gpt1', 'small', 'tiny']"),
            (["--block-size", "64", "--n-positions", "32"], "--block-size 64 is longer than the model's context"),
            (["--tokenizer", "./no-tokenizer"], "No such tokenizer folder: './no-tokenizer'"),
            (["--early-stopping-patience", "0"], "--early-stopping-patience must be at least 1 (evaluations in a row"),
            (["--final-weights", "lowest"], "--final-weights must be best or last, got 'lowest': best keeps the"),
            (["--compile", "yes"], "--compile must be auto, on or off, got 'yes'."),
            (["--max-nonfinite-steps", "-1"], "--max-nonfinite-steps must be 0 (stop at the first) or more, got -1."),
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


def test_compile_on_trains_a_compiled_step_that_learns_as_the_eager_one(tmp_path):
    """`--compile on` runs the training step through torch.compile (inductor, a real C++ compile); the run learns
    as the eager one does, and saves a folder that loads without torch.compile's `_orig_mod.` prefixes."""
    runs = {}
    for mode in ("on", "off"):
        output = tmp_path / mode
        result = gpt1_cli("train", "--output-dir", str(output), *TINY, "--max-steps", "12", "--eval-every", "12",
                          "--save-every", "6", "--compile", mode, "--lr", "3e-3", "--warmup-steps", "2")  # fmt: skip
        assert ("Compiling the training step (--compile on)" in result.stdout) == (mode == "on")
        runs[mode] = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
        assert not any("_orig_mod" in key for key in load_file(output / "model.safetensors"))
    compiled, eager = runs["on"][-1], runs["off"][-1]
    assert compiled["val_loss"] < 5.6  # it learned: a 300-token vocabulary starts at ln(300) = 5.70
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=2e-3)  # the same run up to float rounding


def test_the_validation_loss_is_the_mean_over_rows_whatever_the_batch_size():
    """A short last batch counts for its rows: evaluating in batches of 3, 4 or 7 (4 training batches at a time,
    or one) gives the mean of the per-row losses, not a mean of batch means weighted by batch."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from gpt1 import GPT1Config, GPT1ForCausalLM
    from gpt1.train import _evaluate

    torch.manual_seed(0)
    model = GPT1ForCausalLM(GPT1Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    blocks = [{"input_ids": torch.randint(0, 50, (16,))} for _ in range(10)]
    with torch.no_grad():
        per_row = [float(model(row["input_ids"][None], labels=row["input_ids"][None]).loss) for row in blocks]
    accelerator = Accelerator(cpu=True)
    for batch_size in (3, 4, 7):
        loss = _evaluate(accelerator, model, DataLoader(blocks, batch_size=batch_size), max_batches=100)
        assert loss == pytest.approx(sum(per_row) / len(per_row), rel=1e-5), batch_size
    # --eval-batches 4 of 2 rows: the first 8 rows, read 4 batches at a time or 2 or 1.
    for multiple in (4, 2, 1):
        loss = _evaluate(accelerator, model, DataLoader(blocks, batch_size=2 * multiple), max_batches=4 // multiple)
        assert loss == pytest.approx(sum(per_row[:8]) / 8, rel=1e-5), multiple


def test_an_evaluation_batch_holds_a_divisor_of_eval_batches_training_batches():
    from gpt1.train import _eval_batch_multiple

    assert [_eval_batch_multiple(n) for n in (1, 2, 3, 4, 6, 7, 20, 100_000)] == [1, 2, 3, 4, 3, 1, 4, 4]


@pytest.mark.parametrize(
    ("max_steps", "device", "expected"), [(2999, "cpu", False), (3000, "cpu", True), (499, "cuda", False),
                                          (500, "cuda", True), (10**6, "mps", False)],
)  # fmt: skip
def test_compile_auto_compiles_runs_long_enough_to_pay_for_it(monkeypatch, max_steps, device, expected):
    from gpt1 import train as train_module

    monkeypatch.setattr(train_module, "torch_compile_available", lambda device: True)
    config = TrainConfig(max_steps=max_steps)
    assert config.compile == "auto"
    assert train_module._compiles(config, torch.device(device)) is expected
    monkeypatch.setattr(train_module, "torch_compile_available", lambda device: False)  # no C++ compiler
    assert train_module._compiles(config, torch.device(device)) is False
    assert train_module._compiles(TrainConfig(max_steps=max_steps, compile="on"), torch.device(device)) is True
    assert train_module._compiles(TrainConfig(max_steps=10**6, compile="off"), torch.device(device)) is False
    assert TrainConfig(compile=True).compile == "on" and TrainConfig(compile=False).compile == "off"  # 0.2.0's switch


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
