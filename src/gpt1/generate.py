"""`gpt1 generate`: stream text from a model folder or Hub repo to stdout."""

from __future__ import annotations

import sys
from typing import Any

import torch
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList, TextStreamer

from .model_folders import load_model, load_tokenizer
from .tokenization import pair_tokenizer_with_model


def generate(
    model_path: str,
    prompt: str,
    *,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int | None = None,
    revision: str | None = None,
) -> list[str]:
    """Generate `num_samples` continuations of `prompt`, streaming each to stdout; returns them."""
    if max_new_tokens < 1 or num_samples < 1:
        raise ValueError(f"--max-new-tokens and --num-samples must be >= 1, got {max_new_tokens} and {num_samples}.")
    if temperature == 0 and num_samples > 1:
        raise ValueError(
            f"--num-samples {num_samples} conflicts with --temperature 0: greedy decoding writes the same text "
            "every time. Use --temperature > 0 for different samples, or --num-samples 1."
        )
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"Need temperature >= 0, 0 < top_p <= 1, top_k >= 0; got {temperature}, {top_p}, {top_k}.")
    tokenizer: Any = load_tokenizer(model_path, revision=revision)
    model: Any = load_model(AutoModelForCausalLM, model_path, revision=revision)
    pair_tokenizer_with_model(tokenizer, model)  # the model does not read ids back to check them
    model.eval()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    input_ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
    if input_ids.shape[1] == 0:
        input_ids = torch.tensor([[tokenizer.eos_token_id]], device=device)
    room = model.config.n_positions - input_ids.shape[1]
    if room <= 0:
        raise ValueError(
            f"The prompt is {input_ids.shape[1]} tokens; the model's context is {model.config.n_positions}. Shorten it."
        )
    sampling = temperature > 0
    samples: list[str] = []
    for index in range(num_samples):
        if seed is not None:
            torch.manual_seed(seed + index)
        if num_samples > 1:
            print(f"--- sample {index + 1} ---", flush=True)
        streamer = TextStreamer(tokenizer, skip_special_tokens=True)
        with torch.no_grad():
            output = model.generate(
                input_ids,
                max_new_tokens=min(max_new_tokens, room),
                do_sample=sampling,
                temperature=temperature if sampling else None,
                top_k=top_k if sampling and top_k > 0 else None,
                top_p=top_p if sampling else None,
                pad_token_id=tokenizer.pad_token_id,
                streamer=streamer,
                logits_processor=LogitsProcessorList([FiniteScores(model_path)]),
            )
        samples.append(tokenizer.decode(output[0], skip_special_tokens=True))
        sys.stdout.flush()
    return samples


class FiniteScores(LogitsProcessor):
    """A clear error, instead of the sampler's, when a model's scores are not numbers: finite weights can still
    overflow (a flipped exponent bit in a weights file makes one 1e36), and NaN logits cannot be sampled from."""

    def __init__(self, model_path: str):
        self.model_path = model_path

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # top-k and top-p filtering set -inf where a token is ruled out; NaN, +inf or a row with no token left are not.
        if bool(scores.isnan().any() | scores.isposinf().any() | scores.isneginf().all(dim=-1).any()):
            raise ValueError(
                f"The model in {self.model_path!r} gives scores that are not numbers (NaN or infinite) at token "
                f"{input_ids.shape[-1]}: its weights are damaged or training diverged. Save or download it again."
            )
        return scores
