#!/usr/bin/env python3
"""Time to loss: `gpt1 train` against a nanoGPT-recipe reference, same settings, same machine.

    python benchmarks/bench_time_to_loss.py [--corpus ../shared/data/tinyshakespeare.txt] [--out FILE]
                                            [--only gpt1|reference]

nanoGPT's README reports validation loss 1.88 after 2000 iterations, in about 3 minutes on a laptop
CPU, with: 4 layers, 4 heads, 128 wide, context 64, batch 12, dropout 0, lr 1e-3 with 100 warmup
steps and cosine decay to 1e-4, beta2 0.99, weight decay 0.1, a 90/10 split (char-level).

Two runs, one after the other, with those settings:
- gpt1: the real `gpt1 train` CLI (post-LN GPT-1, packed blocks), timed from process start to the
  saved folder, so import, tokenizer training, packing, evaluation and saving all count.
- reference: nanoGPT's recipe, re-implemented here in plain PyTorch (nanoGPT's code is not
  vendored): a pre-LN GPT-2-style model without biases and with a final LayerNorm, scaled init of the
  residual projections, random 64-character windows, weight decay on every matrix including the
  embeddings, SDPA attention. Timed the same way, from process start.
Both evaluate the full validation text (the last 10% of the lines) every 500 steps and at the end,
and both use every core, so the losses and wall times compare directly. Prints JSON and a summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS, BATCH, CONTEXT, WIDTH, LAYERS, HEADS = 2000, 12, 64, 128, 4, 4
LR, MIN_LR, WARMUP, BETA2, WEIGHT_DECAY, EVAL_EVERY, SEED = 1e-3, 1e-4, 100, 0.99, 0.1, 500, 1337


def nanogpt_settings(steps: int = STEPS, eval_every: int = EVAL_EVERY) -> list[str]:
    """`gpt1 train` flags for nanoGPT's settings (fewer steps and evaluations for a smoke run)."""
    return [
        "--tokenizer", "char", "--n-layer", str(LAYERS), "--n-head", str(HEADS), "--n-embd", str(WIDTH),
        "--block-size", str(CONTEXT), "--batch-size", str(BATCH), "--max-steps", str(steps), "--dropout", "0",
        "--lr", str(LR), "--min-lr", str(MIN_LR), "--warmup-steps", str(min(WARMUP, steps // 2)),
        "--beta2", str(BETA2), "--weight-decay", str(WEIGHT_DECAY), "--val-fraction", "0.1",
        "--eval-every", str(eval_every), "--eval-batches", "100000", "--save-every", "100000",
        "--sample-prompt", "ROMEO:", "--seed", str(SEED),
    ]  # fmt: skip


NANOGPT_PUBLISHED = {"val_loss": 1.88, "wall_seconds_approx": 180, "machine": "a laptop CPU (nanoGPT README)"}
TARGET_VAL_LOSS = 1.88


def run_gpt1(corpus: Path, steps: int = STEPS, eval_every: int = EVAL_EVERY) -> dict:
    with tempfile.TemporaryDirectory() as output:
        command = [sys.executable, "-m", "gpt1", "train", "--dataset", str(corpus), "--output-dir", output]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        started = time.perf_counter()
        subprocess.run(
            [*command, *nanogpt_settings(steps, eval_every)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        records = [json.loads(line) for line in (Path(output) / "metrics.jsonl").read_text().splitlines()]
    return {
        "val_loss": records[-1]["val_loss"],
        "train_loss": records[-1]["train_loss"],
        "wall_seconds": seconds,
        "curve": [{"step": record["step"], "val_loss": record["val_loss"]} for record in records],
    }


def run_reference(corpus: Path, steps: int = STEPS, eval_every: int = EVAL_EVERY) -> dict:
    """The reference in a fresh interpreter, timed like `gpt1 train` from process start."""
    started = time.perf_counter()
    worker = ["--reference-worker", "--steps", str(steps), "--eval-every", str(eval_every)]
    finished = subprocess.run(
        [sys.executable, __file__, "--corpus", str(corpus), *worker],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(finished.stdout.splitlines()[-1])
    return {**result, "wall_seconds": time.perf_counter() - started}


def reference_worker(corpus: Path, steps: int = STEPS, eval_every: int = EVAL_EVERY) -> None:
    """nanoGPT's recipe: model, batches, optimizer and schedule. Prints one JSON line."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn_norm = nn.LayerNorm(WIDTH, bias=False)
            self.qkv_proj = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
            self.out_proj = nn.Linear(WIDTH, WIDTH, bias=False)
            self.mlp_norm = nn.LayerNorm(WIDTH, bias=False)
            self.up_proj = nn.Linear(WIDTH, 4 * WIDTH, bias=False)
            self.down_proj = nn.Linear(4 * WIDTH, WIDTH, bias=False)

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            batch, length, _ = hidden.shape
            query, key, value = self.qkv_proj(self.attn_norm(hidden)).split(WIDTH, dim=2)
            query, key, value = (t.view(batch, length, HEADS, -1).transpose(1, 2) for t in (query, key, value))
            attended = F.scaled_dot_product_attention(query, key, value, is_causal=True)
            hidden = hidden + self.out_proj(attended.transpose(1, 2).reshape(batch, length, WIDTH))
            return hidden + self.down_proj(F.gelu(self.up_proj(self.mlp_norm(hidden))))

    class PreLNGPT(nn.Module):
        def __init__(self, vocab_size: int) -> None:
            super().__init__()
            self.token_embeddings = nn.Embedding(vocab_size, WIDTH)
            self.position_embeddings = nn.Embedding(CONTEXT, WIDTH)
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.final_norm = nn.LayerNorm(WIDTH, bias=False)
            for name, parameter in self.named_parameters():
                if parameter.dim() >= 2:  # residual projections get nanoGPT's 1/sqrt(2·layers) scaling
                    scaled = name.endswith(("out_proj.weight", "down_proj.weight"))
                    nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * LAYERS) if scaled else 0.02)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            hidden = self.token_embeddings(input_ids) + self.position_embeddings(positions)
            for block in self.blocks:
                hidden = block(hidden)
            return self.final_norm(hidden) @ self.token_embeddings.weight.T  # tied output layer

    torch.manual_seed(SEED)
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    validation_lines = max(1, round(len(lines) * 0.1))  # the same split as `gpt1 train --val-fraction 0.1`
    train_text, val_text = "".join(lines[:-validation_lines]), "".join(lines[-validation_lines:])
    alphabet = {char: index for index, char in enumerate(sorted(set(train_text + val_text)))}
    train_ids = torch.tensor([alphabet[char] for char in train_text])
    val_ids = torch.tensor([alphabet[char] for char in val_text])
    val_blocks = val_ids[: len(val_ids) // CONTEXT * CONTEXT].view(-1, CONTEXT)

    model = PreLNGPT(len(alphabet))
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": WEIGHT_DECAY}, {"params": vectors, "weight_decay": 0.0}],
        lr=LR,
        betas=(0.9, BETA2),
    )

    warmup = min(WARMUP, steps // 2)

    def learning_rate(step: int) -> float:
        if step < warmup:
            return LR * (step + 1) / warmup
        progress = (step - warmup) / (steps - warmup)
        return MIN_LR + (LR - MIN_LR) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def shifted_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def validation_loss() -> float:
        model.eval()
        total = 0.0
        for start in range(0, len(val_blocks), BATCH):
            block = val_blocks[start : start + BATCH]
            total += shifted_loss(model(block)[:, :-1], block[:, 1:]).item() * len(block)
        model.train()
        return total / len(val_blocks)

    curve = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        starts = torch.randint(len(train_ids) - CONTEXT - 1, (BATCH,))
        inputs = torch.stack([train_ids[s : s + CONTEXT] for s in starts])
        targets = torch.stack([train_ids[s + 1 : s + 1 + CONTEXT] for s in starts])
        loss = shifted_loss(model(inputs), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_loss = loss.item()  # nanoGPT logs every iteration in its CPU run (--log_interval=1)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append({"step": step + 1, "val_loss": validation_loss()})
    print(json.dumps({"val_loss": curve[-1]["val_loss"], "train_loss": train_loss, "curve": curve}))


def compare(
    corpus: Path, steps: int = STEPS, eval_every: int = EVAL_EVERY, only: str | None = None
) -> dict[str, object]:
    """Both runs, one after the other, and their wall-time ratio."""
    runs = {}
    if only in (None, "gpt1"):
        runs["gpt1"] = run_gpt1(corpus, steps, eval_every)
    if only in (None, "reference"):
        runs["nanogpt_recipe_reference"] = run_reference(corpus, steps, eval_every)
    report: dict[str, object] = {
        "settings": nanogpt_settings(steps, eval_every),
        **runs,
        "nanogpt_published": NANOGPT_PUBLISHED,
        "target_val_loss": TARGET_VAL_LOSS,
    }
    if len(runs) == 2:
        report["wall_time_ratio_reference_over_gpt1"] = (
            runs["nanogpt_recipe_reference"]["wall_seconds"] / runs["gpt1"]["wall_seconds"]
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", choices=("gpt1", "reference"))
    parser.add_argument("--steps", type=int, default=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--eval-every", type=int, default=EVAL_EVERY, help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.corpus.is_file():
        raise SystemExit(f"No corpus at {args.corpus}; pass --corpus PATH to tinyshakespeare.txt.")
    if args.reference_worker:
        reference_worker(args.corpus, args.steps, args.eval_every)
        return
    report = {
        "benchmark": "time to loss, nanoGPT shakespeare-char CPU settings",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
        **compare(args.corpus, args.steps, args.eval_every, args.only),
    }
    runs = {name: run for name, run in report.items() if name in ("gpt1", "nanogpt_recipe_reference")}
    document = json.dumps(report, indent=2)
    print(document)
    if args.out:
        args.out.write_text(document + "\n")
    for name, run in runs.items():
        print(f"{name}: val loss {run['val_loss']:.4f} in {run['wall_seconds']:.0f} s", file=sys.stderr)
    print(f"nanoGPT published: {TARGET_VAL_LOSS} in about 3 min on a laptop CPU", file=sys.stderr)


if __name__ == "__main__":
    main()
