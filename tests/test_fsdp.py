"""`gpt1 train` under Accelerate's FSDP2 (`GPT1Block` as the wrapped layer) on two CPU processes with gloo.

Accelerate 1.15 turns FSDP on only for accelerator devices: with `cpu=True` its state goes to plain
gloo DDP and drops the FSDP settings (accelerate/state.py, the FSDP branch of `AcceleratorState`). Torch's
FSDP2 itself runs on gloo, so the launcher below starts Accelerate's process state on the CPU and lets it
take the branch a GPU run takes. Everything after that is the real FSDP2 path of `gpt1 train`: sharded
parameters, gathered forwards for the samples, full-state checkpoints, the gathered final save, resume.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from safetensors import safe_open
from safetensors.torch import load_file
from torch.distributed.fsdp import StateDictType
from transformers import AutoModelForCausalLM

from gpt1.train import _check_fsdp

from .helpers import gpt1_cli

LAUNCHER = textwrap.dedent(
    """
    import sys
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    state = PartialState(cpu=True)  # the gloo process group
    assert state.distributed_type == DistributedType.MULTI_CPU
    PartialState._shared_state["distributed_type"] = DistributedType.MULTI_GPU  # see the module docstring

    from gpt1.cli import main
    sys.exit(main(["train", *sys.argv[1:]]))
    """
)
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_TRANSFORMER_CLS_TO_WRAP": "GPT1Block",
    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
}
# Dropout off, so that one process with batch 8 and two with batch 4 each take the same steps.
RUN = ["--tokenizer", "char", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
       "--dropout", "0", "--max-steps", "20", "--eval-every", "10", "--save-every", "10", "--eval-batches", "2",
       "--sample-tokens", "4", "--lr", "3e-3", "--warmup-steps", "3"]  # fmt: skip


def fsdp_train(tmp_path, output, *options, failpoint=None) -> subprocess.CompletedProcess:
    launcher = tmp_path / "fsdp_launcher.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, **FSDP_ENV, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    if failpoint:
        env["GPT1_FAILPOINT"] = failpoint
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(launcher), "--output-dir", str(output), *RUN, "--batch-size", "4", *options]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def metrics(output) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_fsdp2_on_two_processes_trains_saves_and_resumes_like_one_process(tmp_path):
    single = tmp_path / "single"
    gpt1_cli("train", "--output-dir", str(single), *RUN, "--batch-size", "8")

    sharded = tmp_path / "fsdp"
    killed = fsdp_train(tmp_path, sharded, failpoint="step@13")  # after the step-10 checkpoint
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    assert not (sharded / "model.safetensors").exists()  # stopped before the end
    checkpoint = sharded / "checkpoints" / "step-00000010"
    assert any(path.name.startswith("pytorch_model_fsdp") for path in checkpoint.iterdir())  # FSDP's own format
    resumed = fsdp_train(tmp_path, sharded, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    assert "Resumed from" in resumed.stdout + resumed.stderr

    # The loss falls, and two processes with half the batch each follow one process step for step.
    expected, got = metrics(single), metrics(sharded)
    assert [record["step"] for record in got] == [10, 20] and got[1]["val_loss"] < got[0]["val_loss"]
    for one, two in zip(expected, got, strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
        assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)

    # The folder is a plain gpt1 folder (not torch's FSDP class), whole, with the single run's weights.
    config = json.loads((sharded / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_gpt1.GPT1ForCausalLM"
    assert sorted(path.name for path in sharded.glob("*.py")) == ["configuration_gpt1.py", "modeling_gpt1.py"]
    single_weights, sharded_weights = load_file(single / "model.safetensors"), load_file(sharded / "model.safetensors")
    assert single_weights.keys() == sharded_weights.keys()
    for name, tensor in single_weights.items():
        torch.testing.assert_close(sharded_weights[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    model = AutoModelForCausalLM.from_pretrained(sharded, trust_remote_code=True)
    assert model.lm_head.weight.data_ptr() == model.transformer.token_embeddings.weight.data_ptr()

    # Each new best's weights were gathered by both processes and written whole, once: the last (step 20) here.
    best = sharded / "checkpoints" / "best" / "model.safetensors"
    with safe_open(str(best), framework="pt") as saved:
        assert saved.metadata()["step"] == "20"
    best_weights = load_file(best)
    assert best_weights.keys() == sharded_weights.keys()
    for name, tensor in sharded_weights.items():
        assert torch.equal(best_weights[name], tensor), name
    samples = [json.loads(line) for line in (sharded / "samples.jsonl").read_text().splitlines()]
    assert [sample["step"] for sample in samples] == [10, 20]  # cut back to step 10 on resume, then step 20


def fsdp_accelerator(state_dict_type: StateDictType, fsdp2: bool = True) -> SimpleNamespace:
    plugin = SimpleNamespace(state_dict_type=state_dict_type)
    return SimpleNamespace(
        distributed_type=DistributedType.FSDP, is_fsdp2=fsdp2, state=SimpleNamespace(fsdp_plugin=plugin)
    )


def test_fsdp_settings_that_would_break_the_run_are_refused_before_it_starts():
    with pytest.raises(ValueError, match="SHARDED_STATE_DICT writes checkpoints whose metadata is a pickle"):
        _check_fsdp(fsdp_accelerator(StateDictType.SHARDED_STATE_DICT))
    with pytest.raises(ValueError, match="set `fsdp_version: 2`"):
        _check_fsdp(fsdp_accelerator(StateDictType.FULL_STATE_DICT, fsdp2=False))
    _check_fsdp(fsdp_accelerator(StateDictType.FULL_STATE_DICT))  # what the README's config says
