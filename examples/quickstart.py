"""Quickstart: train a small GPT-1 on a corpus every Python ships with, save it, reload it, generate.

    python examples/quickstart.py [--steps 300] [--out runs/quickstart]

The corpus is the English text of Python's own documentation (`pydoc_data.topics`), so this runs
offline on any machine. It takes a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from pydoc_data.topics import topics

import torch
from transformers import AutoModelForCausalLM, pipeline

from gpt1 import GPT1Config, GPT1ForCausalLM, pair_tokenizer_with_model, train_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--prompt", default="The return statement")
    args = parser.parse_args()
    torch.manual_seed(0)

    text = "\n\n".join(topics[name] for name in sorted(topics))
    tokenizer = train_tokenizer([text], kind="bpe", vocab_size=2048)
    token_ids = torch.tensor(tokenizer(text).input_ids)
    split = int(0.95 * len(token_ids))
    train_ids, val_ids = token_ids[:split], token_ids[split:]
    print(f"corpus: {len(text) / 1e3:.0f} KB, {len(token_ids)} tokens, vocab {len(tokenizer)}")

    block_size, batch_size = 128, 16
    config = GPT1Config(
        vocab_size=len(tokenizer),
        n_positions=block_size,
        n_embd=128,
        n_layer=4,
        n_head=4,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT1ForCausalLM(config)
    pair_tokenizer_with_model(tokenizer, model)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=args.steps, pct_start=0.1)

    def batch(ids: torch.Tensor) -> torch.Tensor:
        starts = torch.randint(0, len(ids) - block_size, (batch_size,))
        return torch.stack([ids[start : start + block_size] for start in starts])

    @torch.no_grad()
    def validation_loss() -> float:
        model.eval()
        losses = [model(ids, labels=ids).loss.item() for ids in (batch(val_ids) for _ in range(8))]
        model.train()
        return sum(losses) / len(losses)

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        ids = batch(train_ids)
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == args.steps:
            val = validation_loss()
            tokens_per_s = step * batch_size * block_size / (time.perf_counter() - start)
            print(
                f"step {step:4d}  train {loss.item():.3f}  val {val:.3f} (ppl {math.exp(val):.1f})"
                f"  {tokens_per_s:.0f} tok/s"
            )

    out = Path(args.out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"saved to {out}: {sorted(path.name for path in out.iterdir())}")

    # Reload the way anyone would, from the folder and its own code, and generate.
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    generator = pipeline("text-generation", model=reloaded, tokenizer=tokenizer)
    sample = generator(args.prompt, max_new_tokens=60, do_sample=True, top_k=40, temperature=0.8)[0]["generated_text"]
    print(f"\n--- sample ---\n{sample}\n")


if __name__ == "__main__":
    main()
