#!/usr/bin/env python3
"""Quality per minute of the README's main job: which defaults give the best text in a few CPU minutes?

    python benchmarks/bench_main_job.py [--candidates default,dropout-0.2,...] [--out FILE]

Each candidate is the real `gpt1 train` CLI on the built-in corpus (Python's documentation) with the
default options plus the candidate's flags, timed from process start to the saved folder. Runs one
after another, so run it on a quiet machine. For each it prints the wall time, the final train and
validation loss, validation bits per character (loss per token / ln 2 × tokens per character of the
corpus under the run's tokenizer, so that runs with different tokenizers compare), and a sample from
`gpt1 generate` with its defaults and a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The return statement"

# Name -> extra `gpt1 train` flags. "default" is the main job exactly as the README runs it.
CANDIDATES: dict[str, list[str]] = {
    "default": [],
    "dropout-0.2": ["--dropout", "0.2"],
    "dropout-0": ["--dropout", "0"],
    "vocab-1024": ["--vocab-size", "1024"],
    "vocab-4096": ["--vocab-size", "4096"],
    "lr-2e-3": ["--lr", "2e-3", "--min-lr", "2e-4"],
    "block-64-batch-32": ["--block-size", "64", "--batch-size", "32"],
    "wide-3x192": ["--n-layer", "3", "--n-head", "4", "--n-embd", "192"],
    "char": ["--tokenizer", "char"],
    "wide-3x192-800-steps": ["--n-layer", "3", "--n-head", "4", "--n-embd", "192", "--max-steps", "800"],
    "wide-2x256": ["--n-layer", "2", "--n-head", "4", "--n-embd", "256"],
    "steps-900": ["--max-steps", "900", "--save-every", "300"],
    "steps-1200": ["--max-steps", "1200", "--save-every", "400"],
}


def chars_per_token(output_dir: Path) -> float:
    from pydoc_data.topics import topics

    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(output_dir)
    text = "\n".join(topics[name] for name in sorted(topics))
    return len(text) / len(tokenizer(text).input_ids)


def run(name: str, flags: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "run"
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "gpt1", "train", "--output-dir", str(output), *flags],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
        last = [record for record in records if "val_loss" in record][-1]
        sample = subprocess.run(
            [sys.executable, "-m", "gpt1", "generate", "--model", str(output), PROMPT, "--seed", "0"],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        ).stdout.strip()
        per_char = chars_per_token(output)
    return {
        "candidate": name,
        "flags": flags,
        "seconds": round(seconds, 1),
        "step": last["step"],
        "train_loss": round(last.get("train_loss", float("nan")), 3),
        "val_loss": round(last["val_loss"], 3),
        "val_bits_per_char": round(last["val_loss"] / math.log(2) / per_char, 3),
        "chars_per_token": round(per_char, 2),
        "val_curve": [[record["step"], round(record["val_loss"], 3)] for record in records if "val_loss" in record],
        "sample": sample,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--candidates", default=",".join(CANDIDATES), help="comma-separated, from: " + ", ".join(CANDIDATES)
    )
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    names = args.candidates.split(",")
    unknown = [name for name in names if name not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; choose from {sorted(CANDIDATES)}")
    results = []
    for name in names:
        result = run(name, CANDIDATES[name])
        results.append(result)
        print(
            f"{name:20s} {result['seconds']:6.1f} s  step {result['step']}  train {result['train_loss']:.3f}  "
            f"val {result['val_loss']:.3f}  {result['val_bits_per_char']:.3f} bits/char  "
            f"val by step {result['val_curve']}",
            flush=True,
        )
        print("    " + result["sample"].replace("\n", "\n    ")[:600], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
