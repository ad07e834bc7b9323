#!/usr/bin/env python3
"""Tokenization speed: gpt1's tokenizers through `datasets.map(batched=True)` against Python loops.

    python benchmarks/bench_tokenizer.py [--corpus ../shared/data/tinyshakespeare.txt] [--out FILE]

For each kind (char and byte-level BPE), a tokenizer is trained on the corpus, then the corpus (one
row per line, as `datasets.load_dataset("text")` gives it) is tokenized three ways, in one run:

- ours: `gpt1.tokenize_dataset` (batched `datasets.map` over the Rust tokenizer), one process and
  `--num-proc` processes;
- peers: the Python loops people write: the same tokenizer called line by line, and for char also
  nanoGPT's shakespeare_char `prepare.py` encoder, `[stoi[c] for c in text]` (a bare dict lookup that
  knows nothing of special tokens or unknown characters).

Every method's ids are checked to be identical before timings count. Prints JSON (with machine
details) and a table: MB/s of UTF-8 text, and best-ours/peer ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import datasets
import tokenizers
import transformers

ROOT = Path(__file__).resolve().parent.parent
try:
    import gpt1
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(ROOT / "src"))
    import gpt1


def best_seconds(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def benchmark_kind(kind: str, text: str, args: argparse.Namespace) -> dict:
    megabytes = len(text.encode("utf-8")) / 1e6
    train_seconds, tokenizer = best_seconds(
        lambda: gpt1.train_tokenizer([text], kind=kind, vocab_size=args.bpe_vocab if kind == "bpe" else None), 1
    )
    lines = text.splitlines(keepends=True)
    dataset = datasets.Dataset.from_dict({"text": lines})  # in memory: nothing is cached between repeats

    def ours(num_proc: int | None):
        return lambda: gpt1.tokenize_dataset(dataset, tokenizer, num_proc=num_proc)

    def line_loop():
        return [token for line in lines for token in tokenizer(line)["input_ids"]]

    methods = {
        "ours_1_process": ours(None),
        f"ours_{args.num_proc}_processes": ours(args.num_proc),
        "peer_line_loop": line_loop,
    }
    if kind == "char":
        stoi = tokenizer.get_vocab()
        methods["peer_nanogpt_stoi"] = lambda: [stoi[character] for character in text]

    results = {}
    expected = None
    for name, function in methods.items():
        seconds, output = best_seconds(function, args.repeats)
        ids = output if isinstance(output, list) else [token for row in output["input_ids"] for token in row]
        expected = ids if expected is None else expected
        if ids != expected:
            raise RuntimeError(f"{kind}: {name} produced different ids from ours")
        results[name] = {"seconds": seconds, "mb_per_s": megabytes / seconds}
    best_ours = max(figures["mb_per_s"] for name, figures in results.items() if name.startswith("ours"))
    return {
        "vocab_size": len(tokenizer),
        "tokens": len(expected or []),
        "train_seconds": train_seconds,
        "methods": results,
        "ratios_best_ours_over": {
            name: best_ours / figures["mb_per_s"] for name, figures in results.items() if name.startswith("peer")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    parser.add_argument("--bpe-vocab", type=int, default=8192)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"No corpus at {args.corpus}; pass --corpus PATH to a UTF-8 text file.")
    datasets.disable_progress_bars()
    text = args.corpus.read_text(encoding="utf-8")
    report = {
        "benchmark": "tokenization speed, gpt1.tokenize_dataset vs Python loops",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__,
            "datasets": datasets.__version__,
        },
        "corpus": {"path": str(args.corpus), "megabytes": len(text.encode("utf-8")) / 1e6, "lines": text.count("\n")},
        "kinds": {kind: benchmark_kind(kind, text, args) for kind in ("char", "bpe")},
    }
    document = json.dumps(report, indent=2)
    print(document)
    if args.out:
        args.out.write_text(document + "\n")
    print(f"{'kind':<5} {'method':<22} {'MB/s':>8}  best ours / this", file=sys.stderr)
    for kind, result in report["kinds"].items():
        for name, figures in result["methods"].items():
            ratio = result["ratios_best_ours_over"].get(name)
            print(
                f"{kind:<5} {name:<22} {figures['mb_per_s']:>8.2f}" + (f"  {ratio:.2f}x" if ratio else ""),
                file=sys.stderr,
            )


if __name__ == "__main__":
    main()
