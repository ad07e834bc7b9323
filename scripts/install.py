#!/usr/bin/env python3
"""Install gpt1 into a virtual environment, with the right PyTorch build for this machine.

    python3 scripts/install.py            # .venv with gpt1 and its runtime dependencies
    python3 scripts/install.py --dev      # ... plus the test and lint tools
    python3 scripts/install.py --extras viz,gpu

An unpinned `pip install torch` on Linux pulls the newest CUDA build (several GB) even on a machine
without a GPU. This script installs the tested torch version from constraints.txt first: the CUDA
build when an NVIDIA GPU is present, otherwise the CPU build (from pip's configured sources if they
have it, else from the PyTorch CPU index). Everything else is then installed under the same
constraints, so pip never replaces that torch.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
PYTORCH_CPU_INDEX = os.environ.get("GPT1_TORCH_CPU_INDEX", "https://download.pytorch.org/whl/cpu")


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def pinned_torch_version() -> str:
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.split("==", 1)[1].strip()
    raise SystemExit(f"constraints.txt has no torch== pin: {CONSTRAINTS}")


def has_nvidia_gpu() -> bool:
    if os.environ.get("GPT1_FORCE_CPU"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    result = subprocess.run([smi, "-L"], capture_output=True, text=True)
    return result.returncode == 0 and "GPU" in result.stdout


def installed_torch(python: str) -> str | None:
    result = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def install_torch(python: str, version: str) -> None:
    pip = (python, "-m", "pip", "install", "--disable-pip-version-check")
    current = installed_torch(python)
    if current is not None and current.split("+")[0] == version:
        print(f"torch {current} already installed")
        return
    if has_nvidia_gpu() or platform.system() != "Linux":
        # PyPI's Linux wheels are CUDA builds; macOS and Windows wheels there are CPU/MPS builds.
        run(*pip, f"torch=={version}")
        return
    # No GPU on Linux: take the CPU build. Try pip's own configured sources first (a local wheelhouse
    # or mirror), then the PyTorch CPU index.
    try:
        run(*pip, f"torch=={version}+cpu")
    except subprocess.CalledProcessError:
        run(*pip, f"torch=={version}", "--index-url", PYTORCH_CPU_INDEX, "--extra-index-url", "https://pypi.org/simple")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(ROOT / ".venv"), help="virtual environment to create or reuse")
    parser.add_argument("--dev", action="store_true", help="also install the test and lint tools")
    parser.add_argument("--extras", default="", help="comma-separated extras, e.g. viz,gpu")
    args = parser.parse_args()

    if sys.version_info < (3, 10):  # noqa: UP036 (this script may be started by an older python3)
        raise SystemExit(f"gpt1 needs Python >= 3.10, this is {platform.python_version()}")
    venv_dir = Path(args.venv)
    python = str(venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    if not Path(python).exists():
        print(f"Creating virtual environment {venv_dir}")
        venv.create(venv_dir, with_pip=True)

    install_torch(python, pinned_torch_version())
    extras = [extra for extra in args.extras.split(",") if extra]
    if args.dev:
        extras += ["dev", "viz"]
    target = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    run(python, "-m", "pip", "install", "--disable-pip-version-check", "-c", str(CONSTRAINTS), "-e", target)
    print(f"\nDone. Activate with: source {venv_dir}/bin/activate")


if __name__ == "__main__":
    main()
