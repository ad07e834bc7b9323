"""The command line's help: instant (nothing heavy imported), every flag with its default."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import MISSING, fields

import pytest

from gpt1.options import PRESETS, FinetuneConfig, TrainConfig

from .helpers import gpt1_cli

HEAVY = (
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "tokenizers",
    "numpy",
    "safetensors",
    "huggingface_hub",
    "lm_eval",
)


@pytest.mark.parametrize("command", [[], ["train"], ["finetune"], ["generate"], ["attention"], ["push"], ["eval"]])
def test_help_imports_no_heavy_library(command):
    # `gpt1 --help` used to take 4-5 s, all of it importing torch and transformers to print text.
    program = (
        "import json, sys\n"
        "from gpt1.cli import main\n"
        "try:\n"
        f"    main({[*command, '--help']!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    *help_lines, modules = result.stdout.strip().splitlines()
    assert "usage: gpt1" in "\n".join(help_lines)
    assert sorted(set(json.loads(modules)) & set(HEAVY)) == []


@pytest.mark.parametrize("command, config_class", [("train", TrainConfig), ("finetune", FinetuneConfig)])
def test_every_flag_has_help_with_its_default(command, config_class):
    options_text = " ".join(gpt1_cli(command, "--help").stdout.split("options:", 1)[1].split())
    for option in fields(config_class):
        assert option.metadata.get("help"), f"{config_class.__name__}.{option.name} has no help"
        flag = "--" + option.name.replace("_", "-")
        assert f"{flag} " in options_text, flag
        if option.default not in (MISSING, None, "", False):
            own_help = options_text.split(f"{flag} ", 1)[1].split(" --", 1)[0]
            assert f"(default: {option.default})" in own_help, (flag, own_help)


def test_preset_help_says_what_each_preset_sets():
    help_text = " ".join(gpt1_cli("train", "--help").stdout.split())
    for name, values in PRESETS.items():
        assert f"{name}: " + ", ".join(f"{key}={value}" for key, value in values.items()) in help_text
