"""Cached generation against recomputing the whole sequence, on the installed transformers.

    python benchmarks/cache_parity.py            # prints one JSON line

A model file that misses the cache argument of a new transformers release still produces text, just
the wrong text. This measures, for greedy decoding with the dynamic cache, the static cache and a
left-padded batch, the largest difference between the logits `generate()` saw at each step and the
logits of a forward over the whole sequence so far, and whether the tokens agree. `.ci/run` prints it
for every transformers version it tests.
"""

from __future__ import annotations

import json

import torch
import transformers

from gpt1 import GPT1Config, GPT1ForCausalLM

NEW_TOKENS = 32


def recomputed_logits(model: GPT1ForCausalLM, sequences: torch.Tensor, mask: torch.Tensor, prompt_len: int):
    """The logits for each generated position, from a forward over everything before it."""
    steps = []
    for end in range(prompt_len, sequences.shape[1]):
        steps.append(model(sequences[:, :end], attention_mask=mask[:, :end], use_cache=False).logits[:, -1])
    return torch.stack(steps, dim=1)


def parity(model: GPT1ForCausalLM, prompt: torch.Tensor, mask: torch.Tensor, **generate_kwargs) -> dict:
    out = model.generate(
        prompt,
        attention_mask=mask,
        max_new_tokens=NEW_TOKENS,
        min_new_tokens=NEW_TOKENS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
        **generate_kwargs,
    )
    full_mask = torch.cat([mask, torch.ones(mask.shape[0], NEW_TOKENS, dtype=mask.dtype)], dim=1)
    expected = recomputed_logits(model, out.sequences, full_mask, prompt.shape[1])
    got = torch.stack(out.logits, dim=1)
    greedy_from_recompute = expected.argmax(-1)
    return {
        "max_abs_logit_diff": float((got - expected).abs().max()),
        "tokens_equal": bool(torch.equal(out.sequences[:, prompt.shape[1] :], greedy_from_recompute)),
    }


def main() -> None:
    torch.manual_seed(0)
    config = GPT1Config(vocab_size=256, n_positions=128, n_embd=64, n_layer=3, n_head=4, pad_token_id=0)
    model = GPT1ForCausalLM(config).eval()
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(1, config.vocab_size, (1, 8), generator=generator)
    batch = torch.randint(1, config.vocab_size, (3, 10), generator=generator)
    batch_mask = torch.ones_like(batch)
    for row, padding in enumerate((0, 4, 7)):  # left padding of different lengths
        batch[row, :padding], batch_mask[row, :padding] = 0, 0
    with torch.no_grad():
        report = {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "dynamic_cache": parity(model, prompt, torch.ones_like(prompt)),
            "static_cache": parity(model, prompt, torch.ones_like(prompt), cache_implementation="static"),
            "left_padded_batch": parity(model, batch, batch_mask),
        }
    print(json.dumps(report))
    if not all(report[case]["tokens_equal"] for case in ("dynamic_cache", "static_cache", "left_padded_batch")):
        raise SystemExit("cached generation chose other tokens than recomputing the sequence")


if __name__ == "__main__":
    main()
