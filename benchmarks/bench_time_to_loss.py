#!/usr/bin/env python3
"""Time to loss: `gpt1 train` with nanoGPT's published CPU settings on tinyshakespeare (char-level).

    python benchmarks/bench_time_to_loss.py [--corpus ../shared/data/tinyshakespeare.txt] [--out FILE]

nanoGPT's README reports validation loss 1.88 after 2000 iterations, in about 3 minutes on a laptop
CPU, with: 4 layers, 4 heads, 128 wide, context 64, batch 12, dropout 0, lr 1e-3 with 100 warmup
steps and cosine decay to 1e-4, beta2 0.99, weight decay 0.1, a 90/10 split. This script runs the
same settings through the real `gpt1 train` CLI (a post-LN GPT-1 instead of nanoGPT's pre-LN GPT-2)
and prints JSON: final validation loss, wall time and tokens/s, next to the published reference.
nanoGPT itself is not vendored here, so its figure is the published one, not a same-machine run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NANOGPT_SETTINGS = [
    "--tokenizer", "char", "--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64",
    "--batch-size", "12", "--max-steps", "2000", "--dropout", "0", "--lr", "1e-3", "--min-lr", "1e-4",
    "--warmup-steps", "100", "--beta2", "0.99", "--weight-decay", "0.1", "--val-fraction", "0.1",
    "--eval-every", "500", "--eval-batches", "200", "--save-every", "100000", "--sample-prompt", "ROMEO:",
]  # fmt: skip
NANOGPT_PUBLISHED = {"val_loss": 1.88, "wall_seconds_approx": 180, "machine": "a laptop CPU (nanoGPT README)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"No corpus at {args.corpus}; pass --corpus PATH to tinyshakespeare.txt.")
    with tempfile.TemporaryDirectory() as output:
        command = [sys.executable, "-m", "gpt1", "train", "--dataset", str(args.corpus), "--output-dir", output]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        started = time.perf_counter()
        subprocess.run([*command, *NANOGPT_SETTINGS], check=True, env=env, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in (Path(output) / "metrics.jsonl").read_text().splitlines()]
    final = records[-1]
    report = {
        "benchmark": "time to loss, nanoGPT shakespeare-char CPU settings",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "settings": NANOGPT_SETTINGS,
        "gpt1": {
            "val_loss": final["val_loss"],
            "train_loss": final["train_loss"],
            "wall_seconds": seconds,
            "tokens_per_s": final["tokens_per_s"],
            "curve": [{"step": r["step"], "val_loss": r["val_loss"]} for r in records],
        },
        "nanogpt_published": NANOGPT_PUBLISHED,
        "target_val_loss": 1.88,
        "reached_target": final["val_loss"] <= 1.88,
    }
    document = json.dumps(report, indent=2)
    print(document)
    if args.out:
        args.out.write_text(document + "\n")
    print(
        f"gpt1: val loss {final['val_loss']:.3f} in {seconds:.0f} s ({final['tokens_per_s']:,.0f} tok/s); "
        f"nanoGPT published: 1.88 in about 3 min",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
