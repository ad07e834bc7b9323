"""Test helpers: tiny configs, a tiny tokenizer made in the test, and a `gpt1`-free subprocess runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from gpt1 import GPT1Config, train_tokenizer

SAMPLE_TEXT = (
    "The trophy didn't fit in the suitcase because it was too big. "
    "Language models learn from text; GPT-1 learned from books. "
) * 4


def tiny_config(**overrides) -> GPT1Config:
    sizes = dict(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    sizes.update(overrides)
    return GPT1Config(**sizes)


def random_ids(config: GPT1Config, batch: int = 2, seq: int = 12, seed: int = 1) -> torch.Tensor:
    """`[batch, seq]` token ids from 1 up (0 is the tiny configs' padding id), the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, config.vocab_size, (batch, seq), generator=generator)


def make_tokenizer(vocab_size: int = 300, model_max_length: int = 64) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here on a few sentences: no download needed."""
    return train_tokenizer([SAMPLE_TEXT], kind="bpe", vocab_size=vocab_size, model_max_length=model_max_length)


def run_without_gpt1(script: str, tmp_path: Path, **inputs) -> dict:
    """Run `script` in a fresh Python where `import gpt1` fails, the way a user without the package
    loads a checkpoint; `inputs` arrive as the dict `INPUTS`, and the script's `OUTPUTS` dict comes back."""
    inputs_file, outputs_file = tmp_path / "inputs.json", tmp_path / "outputs.json"
    inputs_file.write_text(json.dumps(inputs))
    program = (
        textwrap.dedent(
            f"""
        import json, sys
        sys.modules["gpt1"] = None  # any `import gpt1` now raises ImportError
        try:
            import gpt1
        except ImportError:
            pass
        else:
            raise SystemExit("gpt1 is importable; the test would not prove anything")
        INPUTS = json.load(open({str(inputs_file)!r}))
        OUTPUTS = {{}}
        """
        )
        + textwrap.dedent(script)
        + f"\njson.dump(OUTPUTS, open({str(outputs_file)!r}, 'w'))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr}"
    return json.loads(outputs_file.read_text())


def gpt1_cli(
    *args: str,
    check: bool = True,
    timeout: int = 600,
    cwd: Path | None = None,
    env: dict[str, str | None] | None = None,
) -> subprocess.CompletedProcess:
    """Run `python -m gpt1 ARGS` as a user would, offline; assert success unless `check=False`.
    `env` adds variables to the environment, or removes those it maps to None."""
    full_env: dict[str, str] = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    for name, value in (env or {}).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    result = subprocess.run(
        [sys.executable, "-m", "gpt1", *args], capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd
    )
    if check:
        assert result.returncode == 0, (
            f"gpt1 {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result
