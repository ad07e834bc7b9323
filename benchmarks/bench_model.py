#!/usr/bin/env python3
"""Benchmark gpt1's GPT1ForCausalLM against transformers' OpenAIGPTLMHeadModel at identical dimensions.

    python benchmarks/bench_model.py                  # nanoGPT's CPU-sized char model (~2 min on 2 cores)
    python benchmarks/bench_model.py --preset gpt1    # the paper's size (~10 min on 2 cores)
    python benchmarks/bench_model.py --quick          # smoke test (seconds)
    python benchmarks/bench_model.py --out bench.json

Method
------
Both models are built from one OpenAIGPTConfig (dropout 0). The reference model is initialised with
`torch.manual_seed`, and its weights are converted with `gpt1.convert.gpt1_state_dict_from_openai`
and loaded into ours, so both start from identical weights; a logits comparison checks this.
The device is the GPU when `torch.cuda.is_available()`, else the CPU with torch's default threads.

1. Training throughput. One step is forward + backward of the LM loss (labels = input_ids) + an
   AdamW step. Each model gets its own AdamW and is warmed up for 2 steps. Then, for several rounds,
   each model runs the same fixed random batches for the same number of steps; the order alternates
   (ours, theirs, theirs, ours, ...) so that slow drifts of the machine hit both models alike.
   A round gives tokens/s = steps × batch × seq / seconds; we report each model's median over rounds
   and the ratio ours/theirs.
2. Generation throughput. Greedy `generate` of exactly 256 new tokens (min_new_tokens = max_new_tokens)
   at batch 1, from a 16-token and from a 256-token random prompt (the second fills GPT-1's 512
   context), in eval mode under `torch.inference_mode`. After a short
   warm-up generation, the models alternate for N rounds; we report each model's best tokens/s
   (new tokens / seconds) and the ratio ours/theirs. Ours decodes with a KV cache, the reference
   recomputes the whole prefix at every step, so the ratio grows with the prefix: on a CPU ours is
   bound by reading the weights once per token, theirs by the FLOPs of the recomputed prefix.
   Generation is measured first, while both models still hold identical weights, so their greedy
   outputs are also compared (`greedy_outputs_identical`).

The script prints one JSON document on stdout (also written to --out when given) with the machine,
the configuration, per-model figures, ratios and pass/fail against the targets, and a short table on
stderr. Timings on a shared machine are noisy: compare ratios from the same run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

try:
    from gpt1 import GPT1ForCausalLM
except ImportError:  # Running from a checkout without installing: use the source tree.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from gpt1 import GPT1ForCausalLM
from gpt1.convert import gpt1_config_from_openai, gpt1_state_dict_from_openai

TRAIN_RATIO_TARGET = 1.2
GENERATION_RATIO_TARGET = 10.0
WARMUP_STEPS = 2

# Sizes and schedules. "cpu" is nanoGPT's shakespeare-char "baby GPT" (6 layers, 384 wide, 6 heads,
# a 65-character vocabulary), the classic CPU-sized model; "gpt1" is the paper's size with GPT-1's
# 40,478-token vocabulary and full 512 context (few steps: it is slow on a CPU); "quick" is a smoke test.
PRESETS = {
    "cpu": {
        "vocab_size": 65, "n_positions": 512, "n_embd": 384, "n_layer": 6, "n_head": 6,
        "batch_size": 8, "seq_len": 256, "train_steps": 3, "train_rounds": 8,
        "gen_rounds": 2, "prompt_lens": "16,256", "new_tokens": 256,
    },
    "gpt1": {
        "vocab_size": 40478, "n_positions": 512, "n_embd": 768, "n_layer": 12, "n_head": 12,
        "batch_size": 2, "seq_len": 512, "train_steps": 1, "train_rounds": 4,
        "gen_rounds": 1, "prompt_lens": "16,256", "new_tokens": 256,
    },
    "quick": {
        "vocab_size": 2048, "n_positions": 288, "n_embd": 128, "n_layer": 2, "n_head": 2,
        "batch_size": 4, "seq_len": 128, "train_steps": 3, "train_rounds": 3,
        "gen_rounds": 1, "prompt_lens": "16", "new_tokens": 256,
    },
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="sizes and schedule (default cpu)")
    parser.add_argument("--quick", action="store_true", help="same as --preset quick")
    parser.add_argument("--out", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--seed", type=int, default=0, help="torch.manual_seed for weights and data (default 0)")
    for name, default in PRESETS["cpu"].items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=str if name == "prompt_lens" else int,
            default=None,
            help=f"overrides the preset (cpu: {default}, gpt1: {PRESETS['gpt1'][name]})",
        )
    args = parser.parse_args(argv)
    if args.quick:
        args.preset = "quick"
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.prompt_lens = [int(length) for length in str(args.prompt_lens).split(",")]
    longest = max(args.prompt_lens) + args.new_tokens
    if args.n_positions < max(args.seq_len, longest):
        parser.error(
            f"--n-positions {args.n_positions} must cover --seq-len {args.seq_len} and "
            f"the longest prompt + --new-tokens = {longest}."
        )
    return args


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_details(device: torch.device) -> dict:
    details = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        details["gpu"] = torch.cuda.get_device_name(device)
    return details


def build_models(args: argparse.Namespace, device: torch.device) -> tuple[GPT1ForCausalLM, OpenAIGPTLMHeadModel]:
    """The two models, with identical dimensions and weights, dropout off."""
    reference_config = OpenAIGPTConfig(
        vocab_size=args.vocab_size,
        n_positions=args.n_positions,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(args.seed)
    theirs = OpenAIGPTLMHeadModel(reference_config)
    ours = GPT1ForCausalLM(gpt1_config_from_openai(reference_config))
    state_dict = gpt1_state_dict_from_openai(theirs.state_dict(), args.n_layer)
    missing, unexpected = ours.load_state_dict(state_dict, strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise RuntimeError(f"Weight conversion left keys unmatched: missing {missing}, unexpected {unexpected}.")
    ours.tie_weights()
    return ours.to(device), theirs.to(device)


@torch.inference_mode()
def max_logit_difference(ours: torch.nn.Module, theirs: torch.nn.Module, input_ids: torch.Tensor) -> float:
    """Largest absolute difference of the two models' logits on `input_ids` (checks the shared weights)."""
    ours.eval()
    theirs.eval()
    return (ours(input_ids).logits - theirs(input_ids).logits).abs().max().item()


def parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def attention_implementation(model: torch.nn.Module) -> str | None:
    return getattr(model.config, "_attn_implementation", None)


def interleaved_order(rounds: int) -> list[str]:
    """ours, theirs, theirs, ours, ours, theirs, ...: each model goes first in half the rounds."""
    order = []
    for round_index in range(rounds):
        pair = ["ours", "theirs"] if round_index % 2 == 0 else ["theirs", "ours"]
        order.extend(pair)
    return order


# --- training -------------------------------------------------------------------------------------------------------


def make_train_step(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A closure running one forward + backward + AdamW step on a batch; returns the (detached) loss."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step(input_ids: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        return loss.detach()

    return train_step


def time_train_steps(step: Callable, batches: list[torch.Tensor], device: torch.device) -> float:
    """Seconds to run `step` once on each batch."""
    synchronize(device)
    start = time.perf_counter()
    for batch in batches:
        step(batch)
    synchronize(device)
    return time.perf_counter() - start


def benchmark_training(models: dict[str, torch.nn.Module], args: argparse.Namespace, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(args.seed + 1)
    batches = [
        torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), generator=generator).to(device)
        for _ in range(args.train_steps)
    ]
    tokens_per_round = args.train_steps * args.batch_size * args.seq_len
    steps = {}
    initial_loss = {}
    for name, model in models.items():
        model.train()
        steps[name] = make_train_step(model)
        warmup_losses = [steps[name](batches[i % len(batches)]) for i in range(WARMUP_STEPS)]
        initial_loss[name] = float(warmup_losses[0])

    samples: dict[str, list[float]] = {name: [] for name in models}
    for name in interleaved_order(args.train_rounds):
        seconds = time_train_steps(steps[name], batches, device)
        samples[name].append(tokens_per_round / seconds)

    per_model = {
        name: {
            "tokens_per_s_median": statistics.median(values),
            "tokens_per_s_samples": values,
            "first_step_loss": initial_loss[name],
        }
        for name, values in samples.items()
    }
    ratio = per_model["ours"]["tokens_per_s_median"] / per_model["theirs"]["tokens_per_s_median"]
    return {
        "tokens_per_round": tokens_per_round,
        "warmup_steps": WARMUP_STEPS,
        "models": per_model,
        "ratio_ours_over_theirs": ratio,
    }


# --- generation -----------------------------------------------------------------------------------------------------


def generate(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )


def time_generation(model: torch.nn.Module, prompt: torch.Tensor, new_tokens: int, device: torch.device):
    """(seconds, generated ids) for one greedy generation of exactly `new_tokens` tokens."""
    synchronize(device)
    start = time.perf_counter()
    output = generate(model, prompt, new_tokens)
    synchronize(device)
    seconds = time.perf_counter() - start
    generated = output.shape[1] - prompt.shape[1]
    if generated != new_tokens:
        raise RuntimeError(f"{type(model).__name__} generated {generated} tokens, expected {new_tokens}.")
    return seconds, output


@torch.inference_mode()
def benchmark_generation(
    models: dict[str, torch.nn.Module], args: argparse.Namespace, prompt_len: int, device: torch.device
) -> dict:
    generator = torch.Generator().manual_seed(args.seed + 2)
    # Ids from 1 up, so that no prompt token equals pad_token_id 0.
    prompt = torch.randint(1, args.vocab_size, (1, prompt_len), generator=generator).to(device)
    for model in models.values():
        model.eval()
        generate(model, prompt, 8)  # warm-up

    samples: dict[str, list[float]] = {name: [] for name in models}
    outputs = {}
    for name in interleaved_order(args.gen_rounds):
        seconds, outputs[name] = time_generation(models[name], prompt, args.new_tokens, device)
        samples[name].append(args.new_tokens / seconds)

    per_model = {
        name: {"tokens_per_s_best": max(values), "tokens_per_s_samples": values} for name, values in samples.items()
    }
    ratio = per_model["ours"]["tokens_per_s_best"] / per_model["theirs"]["tokens_per_s_best"]
    new_ours, new_theirs = (outputs[name][0, prompt_len:] for name in ("ours", "theirs"))
    agreeing = int((new_ours == new_theirs).cumprod(0).sum())
    return {
        "prompt_len": prompt_len,
        "new_tokens": args.new_tokens,
        "batch_size": 1,
        "rounds": args.gen_rounds,
        "models": per_model,
        "ratio_ours_over_theirs": ratio,
        "greedy_outputs_identical": agreeing == args.new_tokens,
        "greedy_tokens_agreeing_before_first_difference": agreeing,
    }


# --- report ---------------------------------------------------------------------------------------------------------


def print_table(report: dict) -> None:
    train, targets = report["training"], report["targets"]
    rows = [
        ("", "ours (gpt1)", "theirs (openai-gpt)", "ratio", "target", "pass"),
        (
            "train tok/s (median)",
            f"{train['models']['ours']['tokens_per_s_median']:,.0f}",
            f"{train['models']['theirs']['tokens_per_s_median']:,.0f}",
            f"{train['ratio_ours_over_theirs']:.2f}",
            f">= {targets['train_ratio']['target']}",
            str(targets["train_ratio"]["passed"]),
        ),
    ]
    for gen, target in zip(report["generation"], targets["generation_ratio"], strict=True):
        rows.append(
            (
                f"generate tok/s, prompt {gen['prompt_len']}",
                f"{gen['models']['ours']['tokens_per_s_best']:,.1f}",
                f"{gen['models']['theirs']['tokens_per_s_best']:,.1f}",
                f"{gen['ratio_ours_over_theirs']:.2f}",
                f">= {target['target']}",
                str(target["passed"]),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    machine = report["machine"]
    print(
        f"preset {report['preset']}, device {machine['device']}, {machine['torch_threads']} torch threads, "
        f"{report['seconds']:.0f} s",
        file=sys.stderr,
    )
    for row in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)), file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    device = pick_device()
    ours, theirs = build_models(args, device)
    models = {"ours": ours, "theirs": theirs}
    check_ids = torch.randint(0, args.vocab_size, (2, min(args.seq_len, 32)), device=device)

    report = {
        "benchmark": "gpt1 GPT1ForCausalLM vs transformers OpenAIGPTLMHeadModel",
        "preset": args.preset,
        "machine": machine_details(device),
        "config": {
            "vocab_size": args.vocab_size,
            "n_positions": args.n_positions,
            "n_embd": args.n_embd,
            "n_layer": args.n_layer,
            "n_head": args.n_head,
            "dropout": 0.0,
            "dtype": str(next(ours.parameters()).dtype),
            "train_batch_size": args.batch_size,
            "train_seq_len": args.seq_len,
            "train_steps_per_round": args.train_steps,
            "train_rounds": args.train_rounds,
            "optimizer": "torch.optim.AdamW(lr=1e-4)",
            "seed": args.seed,
        },
        "models": {
            "ours": {
                "class": f"{type(ours).__module__}.{type(ours).__name__}",
                "attn_implementation": attention_implementation(ours),
                "parameters": parameter_count(ours),
            },
            "theirs": {
                "class": f"{type(theirs).__module__}.{type(theirs).__name__}",
                "attn_implementation": attention_implementation(theirs),
                "parameters": parameter_count(theirs),
            },
        },
        "max_abs_logit_difference": max_logit_difference(ours, theirs, check_ids),
    }
    # Generation first, while both models still hold identical weights (training changes them).
    report["generation"] = [benchmark_generation(models, args, length, device) for length in args.prompt_lens]
    report["training"] = benchmark_training(models, args, device)
    train_ratio = report["training"]["ratio_ours_over_theirs"]
    report["targets"] = {
        "train_ratio": {
            "target": TRAIN_RATIO_TARGET,
            "value": train_ratio,
            "passed": train_ratio >= TRAIN_RATIO_TARGET,
        },
        "generation_ratio": [
            {
                "prompt_len": gen["prompt_len"],
                "target": GENERATION_RATIO_TARGET,
                "value": gen["ratio_ours_over_theirs"],
                "passed": gen["ratio_ours_over_theirs"] >= GENERATION_RATIO_TARGET,
            }
            for gen in report["generation"]
        ],
    }
    report["seconds"] = time.perf_counter() - started

    document = json.dumps(report, indent=2)
    print(document)
    if args.out is not None:
        args.out.write_text(document + "\n")
    print_table(report)
    return report


if __name__ == "__main__":
    main()
