"""Tensor parallelism from the config's plan: `from_pretrained(..., tp_plan="auto")` on two CPU processes."""

import fnmatch
import json
import os
import signal
import subprocess
import sys
import textwrap

import torch

from gpt1 import GPT1Config, GPT1ForCausalLM

from .helpers import tiny_config

# Each of the two ranks loads the sharded model and checks what it holds; rank 0 reports the logits.
TP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, torch.distributed as dist
    from transformers import AutoModelForCausalLM
    folder, outputs = sys.argv[1:]
    model = AutoModelForCausalLM.from_pretrained(folder, tp_plan="auto", trust_remote_code=True).eval()
    up = model.transformer.blocks[0].mlp.up_proj.weight
    local_rows = (up.to_local() if hasattr(up, "to_local") else up).shape[0]
    ids = torch.load(f"{folder}/ids.pt")
    with torch.no_grad():
        logits = model(ids).logits
        generated = model.generate(ids[:, :4], max_new_tokens=6, do_sample=False)
    logits = logits.full_tensor() if hasattr(logits, "full_tensor") else logits
    if dist.get_rank() == 0:
        torch.save(logits, f"{folder}/tp_logits.pt")
        json.dump({"world": dist.get_world_size(), "local_up_rows": local_rows, "generated": generated.tolist()},
                  open(outputs, "w"))
    dist.barrier()  # neither rank tears the group down while the other still uses it
    dist.destroy_process_group()
    """
)


def test_tp_plan_names_real_modules():
    model = GPT1ForCausalLM(tiny_config())
    names = [name for name, _ in model.transformer.named_modules()]
    for pattern in list(GPT1Config.base_model_tp_plan) + list(GPT1Config.base_model_pp_plan):
        assert fnmatch.filter(names, pattern.replace("*", "[0-9]*")), f"{pattern} matches no module"


def test_tensor_parallel_on_two_cpu_processes_gives_the_single_process_logits(tmp_path):
    torch.manual_seed(0)
    model = GPT1ForCausalLM(tiny_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    with torch.no_grad():  # biases away from zero, so a wrongly split bias shows
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    ids = torch.randint(1, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(1))
    model.save_pretrained(tmp_path)
    torch.save(ids, tmp_path / "ids.pt")
    with torch.no_grad():
        expected = model(ids).logits
        expected_generation = model.generate(ids[:, :4], max_new_tokens=6, do_sample=False)

    outputs = tmp_path / "outputs.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "mods")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    script = tmp_path / "tp.py"
    script.write_text(TP_SCRIPT)
    for attempt in range(2):
        returncode, stderr = _launch([*command, str(script), str(tmp_path), str(outputs)], env)
        # transformers 5.4's gloo tensor parallelism rarely aborts a rank while exiting ("terminate called
        # without an active exception", about 1 run in 20 here): that one known crash gets a second launch.
        if returncode == 0 or attempt == 1 or "terminate called without an active exception" not in stderr:
            break
    assert returncode == 0, stderr[-4000:]
    report = json.loads(outputs.read_text())
    assert report["world"] == 2
    assert report["local_up_rows"] == model.config.n_inner // 2  # the feed-forward really is split
    torch.testing.assert_close(torch.load(tmp_path / "tp_logits.pt"), expected, atol=1e-5, rtol=1e-5)
    assert report["generated"] == expected_generation.tolist()


def _launch(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run torchrun in a session of its own, so that a hang kills its workers too, not only torchrun."""
    launcher = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        _, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        raise
    return launcher.returncode, stderr
