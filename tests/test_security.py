"""What a checkpoint from a stranger can and cannot do: the code we ship runs nothing and reads nothing.

The remote-code files travel with every checkpoint and run under `trust_remote_code=True`, so they are
held to a stricter rule than the rest of the package: no file, network or process access, and no
dynamic code. Weights are read only from safetensors; any `torch.load` in the package must pass
`weights_only=True`, which refuses pickled code.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "gpt1"
REMOTE_CODE = sorted((PACKAGE / "model").glob("*_gpt1.py"))

# Standard-library modules with no file, network or process access (the version check uses re and warnings;
# compiled decoding times itself with time).
ALLOWED_REMOTE_IMPORTS = (
    "torch",
    "transformers",
    "collections",
    "typing",
    "math",
    "dataclasses",
    "functools",
    "re",
    "time",
    "warnings",
)
FORBIDDEN_CALLS = {"open", "eval", "exec", "compile", "__import__", "input", "breakpoint", "globals", "setattr"}
FORBIDDEN_ATTRIBUTES = {"load", "save", "system", "popen", "urlopen", "read_text", "write_text", "from_pretrained"}


def remote_code_findings(source: str) -> list[str]:
    """Every import outside the allowed list, and every call that could reach files, network or dynamic code."""
    findings = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [] if node.level > 0 else [node.module or ""]  # `from .configuration_gpt1 import` is a sibling
        else:
            modules = []
        findings += [f"import {module}" for module in modules if module.split(".")[0] not in ALLOWED_REMOTE_IMPORTS]
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
                findings.append(f"call {node.func.id}() at line {node.lineno}")
            if isinstance(node.func, ast.Attribute) and node.func.attr in FORBIDDEN_ATTRIBUTES:
                findings.append(f"call .{node.func.attr}() at line {node.lineno}")
    return findings


@pytest.mark.parametrize("path", REMOTE_CODE, ids=lambda path: path.name)
def test_remote_code_does_no_io_no_network_no_dynamic_code(path):
    assert remote_code_findings(path.read_text()) == []


def test_the_scan_catches_what_it_looks_for():
    sneaky = (
        "import os\nimport subprocess\nfrom urllib import request\nimport torch\n"
        "open('x')\neval('1')\nexec('pass')\ntorch.load('w.bin')\nos.system('ls')\n"
    )
    findings = remote_code_findings(sneaky)
    assert findings == [
        "import os",
        "import subprocess",
        "import urllib",
        "call open() at line 5",
        "call eval() at line 6",
        "call exec() at line 7",
        "call .load() at line 8",
        "call .system() at line 9",
    ]


def test_every_torch_load_in_the_package_is_weights_only():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            is_torch_load = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            )
            if is_torch_load:
                keywords = {keyword.arg: keyword.value for keyword in node.keywords}
                weights_only = keywords.get("weights_only")
                assert isinstance(weights_only, ast.Constant) and weights_only.value is True, (
                    f"{path.name}:{node.lineno} calls torch.load without weights_only=True"
                )


def test_the_package_never_imports_pickle_or_runs_dynamic_code():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(name.split(".")[0] in {"pickle", "dill", "marshal", "shelve"} for name in names), (
                    f"{path.name}:{node.lineno} imports {names}"
                )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec"}, f"{path.name}:{node.lineno} calls {node.func.id}()"


def test_resuming_unpickles_nothing_and_loads_with_weights_only(tmp_path, monkeypatch):
    """A checkpoint must not be able to run code: the run's own state is JSON, and every torch.load that
    Accelerate makes for the optimizer and RNG states is weights_only=True."""
    import torch

    from gpt1.train import TrainConfig, train

    sizes = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, vocab_size=270)
    options = dict(output_dir=str(tmp_path), eval_batches=1, sample_tokens=2, max_steps=4, save_every=2, eval_every=4)
    options.update(sizes)
    train(TrainConfig(**options))
    checkpoint = tmp_path / "checkpoints" / "step-00000002"
    assert (checkpoint / "trainer_state.json").is_file()
    assert not list(checkpoint.glob("custom_checkpoint_*"))  # no pickled Python objects of ours

    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    (tmp_path / "finished.json").unlink()  # as if stopped before the end, so that --resume loads the checkpoint
    train(TrainConfig(**options, resume=True))
    assert calls and all(weights_only is True for weights_only in calls), calls
