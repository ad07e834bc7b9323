#!/usr/bin/env python3
"""Run the model contract tests on the lowest transformers pyproject.toml declares and on the newest pip finds.

    python3 scripts/test_transformers_range.py            # both ends, then the pinned version again
    python3 scripts/test_transformers_range.py --only lowest

A checkpoint's `modeling_gpt1.py` runs on whatever transformers the person loading it has, so the
declared range is a promise. The pinned version (constraints.txt) is what the whole suite runs on;
this swaps only transformers, and what that release forces (huggingface_hub, tokenizers, safetensors),
into the same virtual environment, runs the tests of the model, its heads, remote code, generation
and the tokenizer, prints cached-against-recomputed generation parity, and puts the pinned versions
back however it ends.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
# What a transformers release may require other versions of; everything else stays pinned.
FOLLOWERS = ("transformers", "huggingface_hub", "tokenizers", "safetensors")
CONTRACT_TESTS = [
    "tests/test_conformance.py",
    "tests/test_model.py",
    "tests/test_heads.py",
    "tests/test_config.py",
    "tests/test_properties.py",
    "tests/test_remote_code.py",
    "tests/test_parallel.py",
    "tests/test_tokenization.py",
]


def declared_range() -> tuple[str, str]:
    """(lowest, upper bound) of transformers in pyproject.toml, e.g. ("5.4.0", "6")."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'"transformers>=([\w.]+),<([\w.]+)"', text)
    if match is None:
        raise SystemExit('pyproject.toml declares no "transformers>=LOW,<HIGH" dependency')
    return match.group(1), match.group(2)


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def pip_install(python: str, constraints: Path, *requirements: str) -> None:
    run(python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "-c", str(constraints), *requirements)


def installed_version(python: str) -> str:
    result = subprocess.run(
        [python, "-c", "import transformers; print(transformers.__version__)"], capture_output=True, text=True
    )
    return result.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the environment's python")
    parser.add_argument("--only", choices=["lowest", "newest"], help="test one end only")
    args = parser.parse_args()

    lowest, upper = declared_range()
    targets = {"lowest": f"transformers=={lowest}", "newest": f"transformers>={lowest},<{upper}"}
    if args.only:
        targets = {args.only: targets[args.only]}
    pinned_lines = CONSTRAINTS.read_text().splitlines()
    pinned = [line for line in pinned_lines if line.split("==")[0].strip() in FOLLOWERS]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as free:
        free.write("\n".join(line for line in pinned_lines if line not in pinned) + "\n")
    free_constraints = Path(free.name)

    failures = []
    try:
        for end, requirement in targets.items():
            # --upgrade takes the newest release in range; for the lowest the == pin decides.
            pip_install(args.python, free_constraints, "--upgrade", requirement)
            version = installed_version(args.python)
            print(f"\n=== transformers {version} ({end} of >={lowest},<{upper}) ===", flush=True)
            tests = subprocess.run([args.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CONTRACT_TESTS])
            parity = subprocess.run([args.python, "benchmarks/cache_parity.py"], cwd=ROOT)
            if tests.returncode != 0 or parity.returncode != 0:
                failures.append(f"transformers {version} ({end})")
    finally:
        pip_install(args.python, CONSTRAINTS, *pinned)
        free_constraints.unlink()
        print(f"\nrestored the pinned transformers {installed_version(args.python)}", flush=True)
    if failures:
        raise SystemExit("contract tests failed on " + ", ".join(failures))
    print("contract tests passed on " + ", ".join(targets), flush=True)


if __name__ == "__main__":
    sys.exit(main())
