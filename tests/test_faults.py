"""The faults real machines have, on `gpt1 train` (and `gpt1 finetune`): a scheduler's SIGTERM or a Ctrl-C, a full
disk, two runs pointed at one folder, and steps whose loss or gradient goes NaN or spikes.

Faults are injected with GPT1_FAILPOINT (see `gpt1.checkpoints.failpoint`): a signal sent by the process to
itself at an exact step, the OSError of a full disk at an exact point of a save. Most runs here are in-process
(the failpoint and the signal handlers work there too); those that must end the process, or that check what a
user sees, run the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gpt1.train as training
from gpt1 import GPT1ForCausalLM
from gpt1.anomalies import ANOMALIES, load_batch
from gpt1.checkpoints import FAILPOINT_VARIABLE, DiskFullError, latest_checkpoint
from gpt1.run_lock import RUN_LOCK, FolderInUseError, RunLock
from gpt1.stopping import EXIT_STOPPED, TrainingStopped
from gpt1.train import TrainConfig, TrainingDivergedError, train

from .helpers import gpt1_cli

RUN = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, eval_batches=2, sample_tokens=8,
           vocab_size=300, max_steps=24, eval_every=8, save_every=6, keep_checkpoints=2)  # fmt: skip
RUN_FLAGS = [f"--{key.replace('_', '-')}={value}" for key, value in RUN.items()]


def run_in_process(folder: Path, monkeypatch, failpoint: str | None = None, **options) -> Path:
    if failpoint is None:
        monkeypatch.delenv(FAILPOINT_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(FAILPOINT_VARIABLE, failpoint)
    return train(TrainConfig(output_dir=str(folder), **{**RUN, **options}))


def assert_same_weights(expected: Path, got: Path) -> None:
    first, second = load_file(expected / "model.safetensors"), load_file(got / "model.safetensors")
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def read_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def logged_steps(folder: Path, log: str) -> list[int]:
    return [json.loads(line)["step"] for line in (folder / log).read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The run never stopped, to compare the stopped and resumed ones with."""
    folder = tmp_path_factory.mktemp("uninterrupted") / "run"
    os.environ.pop(FAILPOINT_VARIABLE, None)
    train(TrainConfig(output_dir=str(folder), **RUN))
    return folder


def test_a_healthy_run_finishes_unlocked_with_no_anomaly(uninterrupted):
    assert json.loads((uninterrupted / "finished.json").read_text()) == {
        "step": 24,
        "max_steps": 24,
        "weights_step": 24,
    }
    assert not (uninterrupted / RUN_LOCK).exists()
    assert not ANOMALIES.path(uninterrupted).exists()
    assert not list(uninterrupted.glob(".tmp*"))
    records = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    assert all(record["grad_norm"] > 0 for record in records)  # every evaluation logs the step's gradient norm


# (fail point, the step the run stops after): a signal between checkpoints, on a checkpoint's step, on an
# evaluation's step, and on the step before the last.
STOPS = [("step@3:sigterm", 3), ("step@6:sigint", 6), ("step@8:sigterm", 8), ("step@23:sigint", 23)]


def test_a_signal_stops_after_the_step_with_a_checkpoint_and_resuming_gives_the_same_weights(
    uninterrupted, tmp_path, monkeypatch
):
    folder = tmp_path / "run"
    for index, (point, step) in enumerate(STOPS):
        with pytest.raises(TrainingStopped) as stopped:
            run_in_process(folder, monkeypatch, point, resume=index > 0)
        name = point.split(":")[1].upper()
        checkpoint = folder / "checkpoints" / f"step-{step:08d}"
        assert f"Stopped by {name} after step {step} of 24. The checkpoint is {checkpoint}." in str(stopped.value)
        assert "--resume" in str(stopped.value)
        assert latest_checkpoint(folder) == checkpoint, point
        assert not (folder / RUN_LOCK).exists(), point  # the lock is released
        assert not (folder / "model.safetensors").exists() and not (folder / "finished.json").exists(), point
    # A signal during the last step: the final save is its checkpoint, and the run finishes.
    run_in_process(folder, monkeypatch, "step@24:sigterm", resume=True)
    assert_same_weights(uninterrupted, folder)
    assert (folder / "samples.jsonl").read_text() == (uninterrupted / "samples.jsonl").read_text()
    for ours, theirs in zip(read_records(folder), read_records(uninterrupted), strict=True):  # each evaluation once
        assert {**ours, "tokens_per_s": 0} == {**theirs, "tokens_per_s": 0}  # the same figures, speed apart
    assert not (folder / RUN_LOCK).exists() and (folder / "finished.json").is_file()


def test_a_stop_asked_before_the_first_step_writes_nothing(tmp_path, monkeypatch):
    def signalled_at_once(self):  # as if SIGTERM arrived while the corpus was being read
        self.signal = signal.SIGTERM
        return self

    def loop(*args, **kwargs):
        raise AssertionError("the training loop must not start")

    monkeypatch.setattr(training.StopSignals, "__enter__", signalled_at_once)
    monkeypatch.setattr(training, "_run", loop)
    with pytest.raises(TrainingStopped, match=r"Stopped by SIGTERM before training \(at step 0\)\. No checkpoint"):
        run_in_process(tmp_path / "run", monkeypatch)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / RUN_LOCK).exists()


def test_the_cli_stops_on_a_real_sigint_and_a_second_signal_stops_at_once(tmp_path):
    """What a user sees: Ctrl-C (SIGINT from outside, at whatever step the run is) stops it with exit status 75
    and the command to resume; during the checkpoint of a stop, a second signal ends the process at once, the
    half-written checkpoint never used; resuming then finishes the run."""
    folder = tmp_path / "run"
    flags = [*RUN_FLAGS, "--max-steps", "200", "--save-every", "100", "--eval-every", "100"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop(FAILPOINT_VARIABLE, None)
    command = [sys.executable, "-m", "gpt1", "train", "--output-dir", str(folder), *flags]
    # Slow steps from step 2 on, so that the signal lands mid-run whatever the machine's speed.
    running = subprocess.Popen(command, env={**env, FAILPOINT_VARIABLE: ",".join(f"step@{n}:sleep=0.05" for n in
                               range(2, 200))}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (folder / "metrics.jsonl").exists() and not (folder / "train_config.json").exists():
        assert running.poll() is None and time.monotonic() < deadline, running.communicate()
        time.sleep(0.1)
    time.sleep(3)  # training is under way
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == EXIT_STOPPED, stderr[-3000:]
    assert "SIGINT received: finishing this training step" in stderr
    stop_line = stderr.strip().splitlines()[-1]
    assert stop_line.startswith("Stopped by SIGINT after step ") and stop_line.endswith("--resume"), stop_line
    step = int(stop_line.split("after step ")[1].split(" ")[0])
    assert 1 <= step < 200 and latest_checkpoint(folder) == folder / "checkpoints" / f"step-{step:08d}"
    assert not (folder / RUN_LOCK).exists()

    # Resumed; stopped again 3 steps on; a second SIGTERM 1.2 s later, while that stop's checkpoint is written.
    again = step + 3
    twice = f"step@{again}:sigterm,checkpoint-write@{again}:sleep=1.2,checkpoint-write@{again}:sigterm"
    killed = subprocess.run([*command, "--resume"], env={**env, FAILPOINT_VARIABLE: twice}, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -signal.SIGTERM, killed.stderr[-3000:]
    assert "received again: stopping at once" in killed.stderr
    assert (folder / "checkpoints" / f".tmp-step-{again:08d}").is_dir()  # the half-written one, never renamed
    assert latest_checkpoint(folder) == folder / "checkpoints" / f"step-{step:08d}"  # the previous one, whole

    resumed = gpt1_cli("train", "--output-dir", str(folder), *flags, "--resume")
    assert f"Resumed from {folder / 'checkpoints' / f'step-{step:08d}'}" in resumed.stdout + resumed.stderr
    assert (folder / "finished.json").is_file() and not list((folder / "checkpoints").glob(".tmp-*"))


DDP_FLAGS = ["--n-layer=2", "--n-head=2", "--n-embd=32", "--block-size=32", "--batch-size=4", "--vocab-size=300",
             "--max-steps=16", "--eval-every=8", "--save-every=100", "--eval-batches=2",
             "--sample-tokens=4"]  # fmt: skip


def torchrun_train(folder: Path, port: int, failpoint: str | None, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop(FAILPOINT_VARIABLE, None)
    if failpoint:
        env[FAILPOINT_VARIABLE] = failpoint
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "gpt1", "train", "--output-dir", str(folder), *DDP_FLAGS, *extra]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def test_under_ddp_a_signal_to_one_process_stops_both_after_the_same_step(tmp_path):
    """torchrun, 2 CPU processes: SIGTERM reaches process 1 alone at step 5, then SIGINT process 0 alone at step
    11; both processes stop after that step each time, one checkpoint holds both processes' states, and the run
    resumed to the end has the weights of the run never stopped."""
    whole = torchrun_train(tmp_path / "whole", 29531, None)
    assert whole.returncode == 0, whole.stderr[-3000:]
    folder = tmp_path / "stopped"
    for index, (point, step, name) in enumerate([("step@5:sigterm:rank=1", 5, "SIGTERM"),
                                                 ("step@11:sigint:rank=0", 11, "SIGINT")]):  # fmt: skip
        stopped = torchrun_train(folder, 29532 + index, point, *(["--resume"] if index else []))
        assert stopped.returncode != 0, stopped.stderr[-3000:]  # torchrun reports the workers' status 75 as failure
        said = stopped.stdout + stopped.stderr
        assert said.count(f"Stopped by {name} after step {step} of 16.") == 1, said[-3000:]  # said once, by rank 0
        assert "exitcode  : 75" in said or "exit code 75" in said or "75" in said
        checkpoint = folder / "checkpoints" / f"step-{step:08d}"
        assert latest_checkpoint(folder) == checkpoint
        assert {"random_states_0.pkl", "random_states_1.pkl"} <= {path.name for path in checkpoint.iterdir()}
        assert not (folder / RUN_LOCK).exists()
    resumed = torchrun_train(folder, 29534, None, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(tmp_path / "whole", folder)
    assert logged_steps(folder, "metrics.jsonl") == [8, 16]


# (fail point, what was being written, the previous checkpoint that must be intact or None)
DISK_FULL = [
    ("checkpoint-begin@6:enospc", "checkpoint step-00000006", None),
    ("best-write@8:enospc", "the best weights so far", 6),
    ("checkpoint-write@12:enospc", "checkpoint step-00000012", 6),
    ("checkpoint-written@18:enospc", "checkpoint step-00000018", 12),
    ("final-weights@24:enospc", "the final model", 18),
    ("final-card@24:enospc", "the final model", 18),
]


def test_a_full_disk_at_any_point_of_a_save_keeps_the_previous_checkpoint_and_says_what_was_needed(
    uninterrupted, tmp_path, monkeypatch
):
    folder = tmp_path / "run"
    for index, (point, writing, previous) in enumerate(DISK_FULL):
        with pytest.raises(DiskFullError) as full:
            run_in_process(folder, monkeypatch, point, resume=index > 0)
        message = str(full.value)
        assert f"the disk is full while writing {writing} in " in message, message
        assert "it needs about " in message and " MB free now" in message, message
        expected = f"step-{previous:08d}" if previous else "no checkpoint was written"
        assert expected in message, message
        if previous is None:
            assert latest_checkpoint(folder) is None
        else:
            assert latest_checkpoint(folder) == folder / "checkpoints" / f"step-{previous:08d}"
            assert load_file(latest_checkpoint(folder) / "model.safetensors")  # whole and readable
        # Nothing partial is left: no temporary checkpoint, best weights or final folder, no half model.
        assert not list(folder.rglob(".tmp*")), point
        assert not (folder / "model.safetensors").exists() and not (folder / "README.md").exists(), point
        assert not (folder / RUN_LOCK).exists()
    run_in_process(folder, monkeypatch, resume=True)
    assert_same_weights(uninterrupted, folder)


def test_the_cli_says_the_disk_is_full_in_one_line(tmp_path):
    result = gpt1_cli("train", "--output-dir", str(tmp_path / "run"), *RUN_FLAGS, check=False,
                      env={FAILPOINT_VARIABLE: "checkpoint-write@6:enospc"})  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gpt1 train: error: the disk is full while writing checkpoint step-00000006"), last
    assert "it needs about" in last and "Traceback" not in result.stderr


def wait_for_lock(folder: Path, process: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        try:
            record = json.loads((folder / RUN_LOCK).read_text())
        except (OSError, ValueError):
            record = None
        if record and (folder / "train_config.json").exists():
            return record
        time.sleep(0.1)


def test_one_run_per_folder_a_second_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        FAILPOINT_VARIABLE: "step@2:sleep=120",
    }
    first = subprocess.Popen([sys.executable, "-m", "gpt1", "train", "--output-dir", str(folder), *RUN_FLAGS], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        record = wait_for_lock(folder, first)
        assert record["pid"] == first.pid and "gpt1 train --output-dir" in record["command"]
        for extra in ([], ["--resume"], ["--overwrite"]):
            second = gpt1_cli("train", "--output-dir", str(folder), *RUN_FLAGS, *extra, check=False)
            assert second.returncode == 2
            assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
            assert f"is in use by another gpt1 run: process {first.pid} on " in second.stderr, second.stderr
            assert f"kill -TERM {first.pid}" in second.stderr
        assert (folder / "train_config.json").is_file()  # --overwrite deleted nothing
    finally:
        first.kill()  # SIGKILL: no handler runs, the lock file stays behind
        first.communicate()
    assert json.loads((folder / RUN_LOCK).read_text())["pid"] == first.pid
    run_in_process(folder, monkeypatch, resume=True)
    said = capsys.readouterr()
    assert f"was locked by process {first.pid} on " in said.out + said.err
    assert "ended without releasing it (it crashed or was killed); taking it over" in said.out + said.err
    assert not (folder / RUN_LOCK).exists()

    with pytest.raises(
        ValueError, match=r"--resume: the run in .* has finished: it trained to step 24 of --max-steps 24"
    ):
        run_in_process(folder, monkeypatch, resume=True)
    assert not (folder / RUN_LOCK).exists()  # released after the refusal too


def test_the_lock_is_held_per_open_and_released_on_any_exit(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder) as held:
        assert held.stale is None
        with pytest.raises(FolderInUseError, match=rf"process {os.getpid()} on "), RunLock(folder):
            pass
    assert not (folder / RUN_LOCK).exists()
    with pytest.raises(RuntimeError), RunLock(folder):
        raise RuntimeError("a crash inside the run")
    assert not (folder / RUN_LOCK).exists()
    with RunLock(folder) as taken:
        assert taken.stale is None


def poison_embeddings(monkeypatch, from_step: int, to_step: int) -> None:
    """NaN token embeddings in the forward of optimizer steps `from_step`..`to_step` (1-based; one forward each
    for the training step, evaluation runs with the model in eval mode and is left alone)."""
    original = torch.nn.Embedding.forward
    calls = {"training": 0}

    def poisoned(self, input):
        result = original(self, input)
        if not self.training:
            return result
        if self.num_embeddings == RUN["vocab_size"]:
            calls["training"] += 1
            if from_step <= calls["training"] <= to_step:
                return result * float("nan")
        return result

    monkeypatch.setattr(torch.nn.Embedding, "forward", poisoned)


def test_a_nan_step_is_skipped_and_written_down_with_its_batch(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    poison_embeddings(monkeypatch, 5, 5)
    run_in_process(folder, monkeypatch)
    records = ANOMALIES.read(folder)
    assert [(record["step"], record["kind"]) for record in records] == [(5, "nonfinite")]
    assert records[0]["epoch"] == 0 and records[0]["batches_in_epoch"] == 5
    weights = load_file(folder / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())  # the NaN update was skipped
    (batch,) = load_batch(folder / "anomalies" / "step-00000005-rank-0.safetensors")
    assert batch.shape == (RUN["batch_size"], RUN["block_size"]) and batch.dtype == torch.long
    monkeypatch.undo()
    model = GPT1ForCausalLM.from_pretrained(folder)
    assert torch.isfinite(model(input_ids=batch, labels=batch).loss)  # the data was fine: reproducible offline


def test_nans_in_a_row_stop_the_run_naming_the_first_and_its_batch(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    poison_embeddings(monkeypatch, 5, 10**6)
    with pytest.raises(TrainingDivergedError) as diverged:
        run_in_process(folder, monkeypatch, max_nonfinite_steps=2, save_every=3)
    message = str(diverged.value)
    assert (
        "at step 7: 3 step(s) in a row were NaN or infinite (--max-nonfinite-steps 2), the first at step 5" in message
    )
    assert "The last checkpoint is" in message and "step-00000006" in message
    assert [record["step"] for record in ANOMALIES.read(folder)] == [5, 6, 7]
    checkpoint = load_file(folder / "checkpoints" / "step-00000006" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint.values())
    assert not (folder / RUN_LOCK).exists()


def test_a_loss_spike_is_logged_with_the_batch_that_caused_it(tmp_path, monkeypatch, capsys):
    """A batch of random tokens (garbage data) at step 40 of a run whose loss has settled: a loss spike, written down
    with that batch; the other steps raise nothing."""
    batches = training._batches

    def with_garbage(accelerator, loader, progress):
        for batch in batches(accelerator, loader, progress):
            if progress.batches_in_epoch == 40:
                batch = torch.randint(0, RUN["vocab_size"], batch.shape, generator=torch.Generator().manual_seed(0))
            yield batch

    monkeypatch.setattr(training, "_batches", with_garbage)
    folder = tmp_path / "run"
    run_in_process(folder, monkeypatch, max_steps=48, lr=3e-3, warmup_steps=5, eval_every=48, save_every=48)
    spikes = [record for record in ANOMALIES.read(folder) if record["kind"] == "loss-spike"]
    assert [record["step"] for record in spikes] == [40], ANOMALIES.read(folder)
    assert spikes[0]["loss"] > 1.1 * spikes[0]["expected"]
    (batch,) = load_batch(folder / "anomalies" / "step-00000040-rank-0.safetensors")
    assert torch.equal(
        batch, torch.randint(0, RUN["vocab_size"], batch.shape, generator=torch.Generator().manual_seed(0))
    )
    said = capsys.readouterr()
    assert "Warning: step 40: loss spike, 6.5" in said.out + said.err
