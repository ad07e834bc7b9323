#!/usr/bin/env python3
"""gpt1 against transformers' `openai-gpt` and `gpt2` at identical sizes: one command, every figure.

    python benchmarks/bench.py                          # CPU-sized and paper-sized models (~20 min on 2 cores)
    python benchmarks/bench.py --presets cpu            # the CPU-sized model only (~5 min on 2 cores)
    python benchmarks/bench.py --corpus tinyshakespeare.txt   # adds time to loss (~4 min on 2 cores)
    python benchmarks/bench.py --quick                  # a tiny model through every section (~1 min): checks it works
    python benchmarks/bench.py --out bench.json

Sections
--------
training      Tokens/s of one step (forward, backward of the LM loss, AdamW) and its memory, for ours,
              `OpenAIGPTLMHeadModel` and `GPT2LMHeadModel` (SDPA) at identical dimensions, dropout 0, with
              the same loop, optimizer (fused AdamW where torch has it) and batches. Rounds are
              interleaved, each model going first in turn, so drifts of the machine hit all alike;
              each model's median over rounds, and ratios ours/theirs. Ours runs as `gpt1 train` builds
              it: the output layer padded to a multiple of 64 rows inside the loss, the chunked language-modelling loss.
generation    Tokens/s of greedy `generate` of exactly N new tokens (default 256) from a 16-token prompt,
              at batch 1 and batch 8, best of the rounds; ours and openai-gpt start from identical
              weights, so their greedy outputs are compared too.
checkpointing Our activation memory (what the forward pass leaves allocated for the backward pass) and
              peak memory of a training step, with and without gradient checkpointing.
time_to_loss  `gpt1 train` against nanoGPT's recipe on tinyshakespeare (benchmarks/bench_time_to_loss.py);
              only with --corpus (or --quick, on the package's built-in corpus for a few steps).
gpu           With CUDA only: MFU at the paper's size (bf16 autocast, seq 512, SDPA/flash), eager and
              `torch.compile`d, with FLOPs per token = 6N + 12·L·H·Q·T (N parameters without the position
              embeddings) against the GPU's dense bf16 peak; tokens/s and peak memory.

Memory is measured the same way for every model: on CUDA from the caching allocator's counters, on a
CPU from the profiler's allocation events (bytes allocated and freed, in order; their running sum's
maximum is the peak). Resident memory (parameters, gradients, optimizer state) is counted from the
tensors themselves.

The JSON document (machine, versions, configuration, every sample, ratios, targets) goes to stdout and
to --out; a readable table goes to stderr. Timings on a shared machine are noisy: compare ratios from
one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import transformers
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, OpenAIGPTConfig, OpenAIGPTLMHeadModel

BENCHMARKS = Path(__file__).resolve().parent
try:
    from gpt1 import GPT1Config, GPT1ForCausalLM
except ImportError:  # Running from a checkout without installing: use the source tree.
    sys.path.insert(0, str(BENCHMARKS.parent / "src"))
    from gpt1 import GPT1Config, GPT1ForCausalLM
from gpt1.convert import gpt1_config_from_openai, gpt1_state_dict_from_openai  # noqa: E402

sys.path.insert(0, str(BENCHMARKS))
import bench_time_to_loss  # noqa: E402

TARGETS = {
    "train_vs_openai_gpt": 1.3,
    "train_vs_gpt2": 1.0,
    "generation_vs_openai_gpt": 10.0,
    "generation_vs_gpt2": 1.0,
    "gpu_mfu": 0.45,
    "checkpointed_activation_fraction": 1 / 3,  # at most
}
MODELS = ("gpt1", "openai-gpt", "gpt2")
VOCAB_PADDING_MULTIPLE = 64  # as `gpt1 train` builds its models
PROMPT_LEN = 16

# "cpu" is nanoGPT's shakespeare-char "baby GPT" (6 layers, 384 wide, 6 heads, 65 characters), the classic
# CPU-sized model; "gpt1" is the paper's size with GPT-1's 40,478-token vocabulary and full 512 context (few
# steps: it is slow on a CPU); "quick" checks that everything runs.
PRESETS = {
    "cpu": {
        "vocab_size": 65, "n_positions": 512, "n_embd": 384, "n_layer": 6, "n_head": 6,
        "batch_size": 8, "seq_len": 256, "train_steps": 2, "train_rounds": 6,
        "gen_rounds": 3, "gen_batch_sizes": (1, 8), "new_tokens": 256,
    },
    "gpt1": {
        "vocab_size": 40478, "n_positions": 512, "n_embd": 768, "n_layer": 12, "n_head": 12,
        "batch_size": 2, "seq_len": 512, "train_steps": 1, "train_rounds": 4,
        "gen_rounds": 1, "gen_batch_sizes": (1, 8), "new_tokens": 256,
    },
    "quick": {
        "vocab_size": 500, "n_positions": 128, "n_embd": 32, "n_layer": 2, "n_head": 2,
        "batch_size": 2, "seq_len": 32, "train_steps": 1, "train_rounds": 2,
        "gen_rounds": 1, "gen_batch_sizes": (1, 8), "new_tokens": 16,
    },
}  # fmt: skip
GPU_SIZES = {"vocab_size": 40478, "n_positions": 512, "n_embd": 768, "n_layer": 12, "n_head": 12, "seq_len": 512}
# Dense bf16 peaks (no sparsity), from the vendors' data sheets, by a substring of the device name.
GPU_BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "GH200": 989.4, "A100": 312.0, "L4": 121.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="a tiny model through every section, no targets judged")
    parser.add_argument("--presets", default="cpu,gpt1", help="comma-separated, from: " + ", ".join(PRESETS))
    parser.add_argument(
        "--sections",
        default="training,generation,checkpointing,time_to_loss,gpu",
        help="comma-separated subset of the default",
    )
    parser.add_argument("--corpus", type=Path, help="tinyshakespeare.txt, for the time-to-loss section")
    parser.add_argument("--gpu-batch-size", type=int, default=16, help="batch for the GPU MFU section (default 16)")
    parser.add_argument("--gpu-steps", type=int, default=20, help="timed steps per GPU run (default 20)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if its name is not known here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    args.presets = ["quick"] if args.quick else [name.strip() for name in args.presets.split(",") if name.strip()]
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")
    known_sections = {"training", "generation", "checkpointing", "time_to_loss", "gpu"}
    if set(args.sections) - known_sections:
        parser.error(
            f"unknown section(s) {sorted(set(args.sections) - known_sections)}; choose from {sorted(known_sections)}"
        )
    if args.corpus is not None and not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: no such file")
    return args


# --- machine and memory ---------------------------------------------------------------------------------------------


def progress(message: str) -> None:
    """One line on stderr as each part starts: a full run takes a while."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


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
        details["cuda"] = torch.version.cuda
    return details


def memory_during(first: Callable[[], object], then: Callable[[], object], device: torch.device) -> dict:
    """Run `first`, then `then`; bytes newly allocated and alive after `first`, and at the peak of both.

    Memory that was allocated before and is freed inside (last step's gradients, say) is not
    subtracted: the figures are what the two functions allocate, on top of what already lived.
    """
    if device.type == "cuda":
        synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        first()
        synchronize(device)
        held = torch.cuda.memory_allocated(device) - start
        then()
        synchronize(device)
        return {"held_after_first_bytes": held, "peak_bytes": torch.cuda.max_memory_allocated(device) - start}
    from torch.profiler import ProfilerActivity, profile, record_function

    marker = "gpt1-bench-first"
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        with record_function(marker):
            first()
        then()
    events = list(profiler.profiler.kineto_results.events())
    first_end = max(event.start_ns() + event.duration_ns() for event in events if event.name() == marker)
    allocations = sorted((event for event in events if event.name() == "[memory]"), key=lambda event: event.start_ns())
    running = peak = held = 0
    for event in allocations:  # frees of blocks allocated before the profiler started are not reported
        running += event.nbytes()
        peak = max(peak, running)
        if event.start_ns() <= first_end:
            held = running
    return {"held_after_first_bytes": held, "peak_bytes": peak}


def tensor_bytes(tensors) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors if isinstance(tensor, torch.Tensor))


def resident_bytes(model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters and the optimizer's state: what lives between steps (gradients are freed, set_to_none)."""
    state = (value for per_parameter in optimizer.state.values() for value in per_parameter.values())
    return tensor_bytes(model.parameters()) + tensor_bytes(state)


def mib(value: float) -> float:
    return value / 2**20


# --- models ---------------------------------------------------------------------------------------------------------


DROPOUT_OFF = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def dimensions(sizes: dict) -> dict:
    return {name: sizes[name] for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}


def build_gpt1(sizes: dict, seed: int, device: torch.device) -> GPT1ForCausalLM:
    """Our model alone, as `gpt1 train` builds it (vocabulary padded to 64 inside the loss), dropout off."""
    torch.manual_seed(seed)
    config = GPT1Config(**dimensions(sizes), **DROPOUT_OFF, vocab_padding_multiple=VOCAB_PADDING_MULTIPLE)
    return GPT1ForCausalLM(config).to(device)


def build_models(sizes: dict, seed: int, device: torch.device) -> dict[str, nn.Module]:
    """The three models at identical dimensions, dropout off; ours and openai-gpt with identical weights."""
    torch.manual_seed(seed)
    openai_gpt = OpenAIGPTLMHeadModel(OpenAIGPTConfig(**dimensions(sizes), **DROPOUT_OFF))
    config = gpt1_config_from_openai(openai_gpt.config)
    config.vocab_padding_multiple = VOCAB_PADDING_MULTIPLE
    ours = GPT1ForCausalLM(config)
    state_dict = gpt1_state_dict_from_openai(openai_gpt.state_dict(), sizes["n_layer"])
    missing, unexpected = ours.load_state_dict(state_dict, strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise RuntimeError(f"Weight conversion left keys unmatched: missing {missing}, unexpected {unexpected}.")
    ours.tie_weights()
    gpt2 = GPT2LMHeadModel(
        GPT2Config(**dimensions(sizes), **DROPOUT_OFF, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    )
    return {"gpt1": ours.to(device), "openai-gpt": openai_gpt.to(device), "gpt2": gpt2.to(device)}


def describe(model: nn.Module) -> dict:
    return {
        "class": f"{type(model).__module__}.{type(model).__name__}",
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def rotations(names: list[str], rounds: int) -> Iterator[str]:
    """Each round runs every model once; who goes first rotates, and every other round runs backwards."""
    for round_index in range(rounds):
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        yield from (order if round_index % 2 == 0 else order[::-1])


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device
        return torch.optim.AdamW(model.parameters(), lr=1e-4)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (as in real GPU training), fp32 on a CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- (a) training ---------------------------------------------------------------------------------------------------


def benchmark_training(models: dict[str, nn.Module], sizes: dict, seed: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(seed + 1)
    batches = [
        torch.randint(0, sizes["vocab_size"], (sizes["batch_size"], sizes["seq_len"]), generator=generator).to(device)
        for _ in range(sizes["train_steps"])
    ]
    optimizers = {name: make_optimizer(model) for name, model in models.items()}

    def step(name: str, input_ids: torch.Tensor) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        with autocast(device):
            loss = models[name](input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizers[name].step()

    first_loss = {}
    for name, model in models.items():
        model.train()
        with torch.no_grad(), autocast(device):
            first_loss[name] = float(model(input_ids=batches[0], labels=batches[0]).loss)
        for warmup in range(2):
            step(name, batches[warmup % len(batches)])

    samples: dict[str, list[float]] = {name: [] for name in models}
    tokens_per_round = len(batches) * sizes["batch_size"] * sizes["seq_len"]
    for name in rotations(list(models), sizes["train_rounds"]):
        synchronize(device)
        started = time.perf_counter()
        for batch in batches:
            step(name, batch)
        synchronize(device)
        samples[name].append(tokens_per_round / (time.perf_counter() - started))

    memory = {}
    for name in models:
        measured = memory_during(lambda name=name: step(name, batches[0]), lambda: None, device)
        resident = resident_bytes(models[name], optimizers[name])
        # Gradients are freed before each step (set_to_none), so the step's peak includes them.
        memory[name] = {
            "resident_mib": mib(resident),
            "step_peak_above_resident_mib": mib(measured["peak_bytes"]),
            "peak_mib": mib(resident + measured["peak_bytes"]),
        }

    per_model = {
        name: {
            "tokens_per_s_median": statistics.median(values),
            "tokens_per_s_samples": values,
            "initial_loss": first_loss[name],
            **memory[name],
        }
        for name, values in samples.items()
    }
    ours = per_model["gpt1"]["tokens_per_s_median"]
    return {
        "tokens_per_round": tokens_per_round,
        "optimizer": type(optimizers["gpt1"]).__name__
        + ("(fused)" if optimizers["gpt1"].defaults.get("fused") else ""),
        "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
        "models": per_model,
        "ratios": {
            "vs_openai_gpt": ours / per_model["openai-gpt"]["tokens_per_s_median"],
            "vs_gpt2": ours / per_model["gpt2"]["tokens_per_s_median"],
        },
        "peak_memory_ratios": {
            "vs_openai_gpt": per_model["gpt1"]["peak_mib"] / per_model["openai-gpt"]["peak_mib"],
            "vs_gpt2": per_model["gpt1"]["peak_mib"] / per_model["gpt2"]["peak_mib"],
        },
    }


# --- (b) generation -------------------------------------------------------------------------------------------------


def generate(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    output = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
    )
    if output.shape[1] - prompt.shape[1] != new_tokens:
        raise RuntimeError(f"{type(model).__name__} generated {output.shape[1] - prompt.shape[1]}, not {new_tokens}.")
    return output


@torch.inference_mode()
def benchmark_generation(
    models: dict[str, nn.Module], sizes: dict, batch_size: int, seed: int, device: torch.device
) -> dict:
    generator = torch.Generator().manual_seed(seed + 2)
    # Ids from 1 up, so that no prompt token equals pad_token_id 0.
    prompt = torch.randint(1, sizes["vocab_size"], (batch_size, PROMPT_LEN), generator=generator).to(device)
    new_tokens = sizes["new_tokens"]
    for model in models.values():
        model.eval()
        generate(model, prompt, 4)  # warm-up

    samples: dict[str, list[float]] = {name: [] for name in models}
    outputs = {}
    for name in rotations(list(models), sizes["gen_rounds"]):
        synchronize(device)
        started = time.perf_counter()
        with autocast(device):
            outputs[name] = generate(models[name], prompt, new_tokens)
        synchronize(device)
        samples[name].append(batch_size * new_tokens / (time.perf_counter() - started))

    per_model = {
        name: {"tokens_per_s_best": max(values), "tokens_per_s_samples": values} for name, values in samples.items()
    }
    ours = per_model["gpt1"]["tokens_per_s_best"]
    same = outputs["gpt1"][:, PROMPT_LEN:] == outputs["openai-gpt"][:, PROMPT_LEN:]
    return {
        "batch_size": batch_size,
        "prompt_len": PROMPT_LEN,
        "new_tokens": new_tokens,
        "models": per_model,
        "ratios": {
            "vs_openai_gpt": ours / per_model["openai-gpt"]["tokens_per_s_best"],
            "vs_gpt2": ours / per_model["gpt2"]["tokens_per_s_best"],
        },
        # Same weights, so greedy decoding must agree, up to float rounding that can flip a near-tie.
        "greedy_tokens_identical_to_openai_gpt": int(same.cumprod(1).sum()),
        "greedy_tokens_compared": same.numel(),
    }


# --- gradient checkpointing -----------------------------------------------------------------------------------------


def benchmark_checkpointing(sizes: dict, seed: int, device: torch.device) -> dict:
    """Our activation memory and step peak at the preset's size, without and with gradient checkpointing."""
    model = build_gpt1(sizes, seed, device).train()
    model.config.use_cache = False  # as when training; checkpointing would switch it off with a warning
    generator = torch.Generator().manual_seed(seed + 3)
    input_ids = torch.randint(0, sizes["vocab_size"], (sizes["batch_size"], sizes["seq_len"]), generator=generator)
    input_ids = input_ids.to(device)
    held: dict[str, torch.Tensor] = {}

    def forward() -> None:
        with autocast(device):
            held["loss"] = model(input_ids=input_ids, labels=input_ids).loss

    def backward() -> None:
        held.pop("loss").backward()

    results = {}
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.zero_grad(set_to_none=True)
        memory = memory_during(forward, backward, device)
        model.zero_grad(set_to_none=True)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(2):
            with autocast(device):
                loss = model(input_ids=input_ids, labels=input_ids).loss
            loss.backward()
            model.zero_grad(set_to_none=True)
        synchronize(device)
        results["checkpointed" if checkpointing else "plain"] = {
            "activation_mib": mib(memory["held_after_first_bytes"]),
            "step_peak_mib": mib(memory["peak_bytes"]),
            "seconds_per_step": (time.perf_counter() - started) / 2,
        }
    plain, checkpointed = results["plain"], results["checkpointed"]
    return {
        "batch_size": sizes["batch_size"],
        "seq_len": sizes["seq_len"],
        **results,
        "activation_fraction": checkpointed["activation_mib"] / plain["activation_mib"],
        "step_peak_fraction": checkpointed["step_peak_mib"] / plain["step_peak_mib"],
        "time_ratio": checkpointed["seconds_per_step"] / plain["seconds_per_step"],
    }


# --- (d) GPU MFU ----------------------------------------------------------------------------------------------------


def flops_per_token(model: GPT1ForCausalLM, seq_len: int) -> float:
    """6N + 12·L·H·Q·T (PaLM's appendix B, nanoGPT's estimate_mfu); N without the position embeddings."""
    config = model.config
    parameters = sum(parameter.numel() for parameter in model.parameters())
    parameters -= model.transformer.position_embeddings.weight.numel()
    return 6 * parameters + 12 * config.n_layer * config.n_head * config.head_dim * seq_len


def gpu_peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops is not None:
        return override_tflops * 1e12
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_BF16_PEAK_TFLOPS.items():  # "H100 PCIe" is listed before "H100"
        if key in name:
            return tflops * 1e12
    return None


def gpu_run(args: argparse.Namespace, device: torch.device, compiled: bool, peak_flops: float | None) -> dict:
    """Tokens/s, MFU and peak memory of our training step at the paper's size on one GPU."""
    model = build_gpt1(GPU_SIZES, args.seed, device).train()
    optimizer = make_optimizer(model)
    runner = torch.compile(model) if compiled else model
    input_ids = torch.randint(0, GPU_SIZES["vocab_size"], (args.gpu_batch_size, GPU_SIZES["seq_len"]), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = runner(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()

    for _ in range(3):  # compiles on the first
        step()
    torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(args.gpu_steps):
        step()
    synchronize(device)
    tokens_per_s = args.gpu_steps * input_ids.numel() / (time.perf_counter() - started)
    achieved = flops_per_token(model, GPU_SIZES["seq_len"]) * tokens_per_s
    return {
        "tokens_per_s": tokens_per_s,
        "tflops": achieved / 1e12,
        "mfu": achieved / peak_flops if peak_flops else None,
        "peak_memory_mib": mib(torch.cuda.max_memory_allocated(device)),
    }


def benchmark_gpu(args: argparse.Namespace, device: torch.device) -> dict:
    peak_flops = gpu_peak_flops(device, args.peak_tflops)
    runs = {}
    for compiled in (False, True):
        runs["compiled" if compiled else "eager"] = gpu_run(args, device, compiled, peak_flops)
        torch.cuda.empty_cache()
    return {
        "sizes": GPU_SIZES,
        "batch_size": args.gpu_batch_size,
        "dtype": "bf16 autocast",
        "peak_bf16_tflops": peak_flops / 1e12 if peak_flops else None,
        **runs,
    }


# --- (c) time to loss -----------------------------------------------------------------------------------------------


def benchmark_time_to_loss(args: argparse.Namespace) -> dict:
    if args.quick:
        with tempfile.TemporaryDirectory() as folder:
            corpus = Path(folder) / "corpus.txt"
            from gpt1.data import builtin_corpus

            corpus.write_text("\n".join(builtin_corpus()["text"][:40]), encoding="utf-8")
            return bench_time_to_loss.compare(corpus, steps=10, eval_every=5)
    if args.corpus is None:
        return {"skipped": "pass --corpus PATH/tinyshakespeare.txt"}
    return bench_time_to_loss.compare(args.corpus)


# --- report ---------------------------------------------------------------------------------------------------------


def judge(report: dict) -> dict:
    """Each ratio against its target (for the paper-sized and CPU-sized runs alike)."""
    verdicts = []

    def add(measure: str, where: str, value: float, target: float, at_most: bool = False) -> None:
        passed = value <= target if at_most else value >= target
        verdicts.append({"measure": measure, "where": where, "value": value, "target": target, "passed": passed})

    for preset, results in report["presets"].items():
        if "training" in results:
            ratios = results["training"]["ratios"]
            add("training step vs openai-gpt", preset, ratios["vs_openai_gpt"], TARGETS["train_vs_openai_gpt"])
            add("training step vs gpt2", preset, ratios["vs_gpt2"], TARGETS["train_vs_gpt2"])
        for generation in results.get("generation", []):
            where = f"{preset}, batch {generation['batch_size']}"
            add(
                "generation vs openai-gpt",
                where,
                generation["ratios"]["vs_openai_gpt"],
                TARGETS["generation_vs_openai_gpt"],
            )
            add("generation vs gpt2", where, generation["ratios"]["vs_gpt2"], TARGETS["generation_vs_gpt2"])
        if "checkpointing" in results:
            fraction = results["checkpointing"]["activation_fraction"]
            add(
                "activation memory with checkpointing",
                preset,
                fraction,
                TARGETS["checkpointed_activation_fraction"],
                at_most=True,
            )
    gpu = report.get("gpu", {})
    for mode in ("eager", "compiled"):
        if gpu.get(mode, {}).get("mfu") is not None:
            add(f"MFU, {mode}", gpu["device_name"], gpu[mode]["mfu"], TARGETS["gpu_mfu"])
    return {"verdicts": verdicts}


def print_table(report: dict) -> None:
    lines = [
        f"device {report['machine']['device']}, {report['machine']['torch_threads']} torch threads, "
        f"{report['seconds']:.0f} s"
    ]
    for preset, results in report["presets"].items():
        sizes = results["sizes"]
        lines.append(
            f"\n[{preset}] {sizes['n_layer']}x{sizes['n_embd']}x{sizes['n_head']}, vocab {sizes['vocab_size']}, "
            f"train batch {sizes['batch_size']} x {sizes['seq_len']}"
        )
        rows = [("", *MODELS, "vs openai-gpt", "vs gpt2")]
        if "training" in results:
            training = results["training"]["models"]
            rows.append(
                (
                    "train tok/s",
                    *(f"{training[name]['tokens_per_s_median']:,.0f}" for name in MODELS),
                    f"{results['training']['ratios']['vs_openai_gpt']:.2f}x",
                    f"{results['training']['ratios']['vs_gpt2']:.2f}x",
                )
            )
            rows.append(
                (
                    "train peak MiB",
                    *(f"{training[name]['peak_mib']:,.0f}" for name in MODELS),
                    f"{results['training']['peak_memory_ratios']['vs_openai_gpt']:.2f}x",
                    f"{results['training']['peak_memory_ratios']['vs_gpt2']:.2f}x",
                )
            )
        for generation in results.get("generation", []):
            models = generation["models"]
            rows.append(
                (
                    f"generate tok/s, batch {generation['batch_size']}",
                    *(f"{models[name]['tokens_per_s_best']:,.1f}" for name in MODELS),
                    f"{generation['ratios']['vs_openai_gpt']:.2f}x",
                    f"{generation['ratios']['vs_gpt2']:.2f}x",
                )
            )
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        lines.extend("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
        if "checkpointing" in results:
            checkpointing = results["checkpointing"]
            lines.append(
                f"gradient checkpointing: activations {checkpointing['plain']['activation_mib']:,.0f} -> "
                f"{checkpointing['checkpointed']['activation_mib']:,.0f} MiB "
                f"({checkpointing['activation_fraction']:.3f}), "
                f"step peak {checkpointing['step_peak_fraction']:.3f}, time {checkpointing['time_ratio']:.2f}x"
            )
    time_to_loss = report.get("time_to_loss", {})
    for name in ("gpt1", "nanogpt_recipe_reference"):
        if name in time_to_loss:
            run = time_to_loss[name]
            lines.append(f"time to loss, {name}: val {run['val_loss']:.4f} in {run['wall_seconds']:.1f} s")
    gpu = report.get("gpu", {})
    for mode in ("eager", "compiled"):
        if mode in gpu:
            run = gpu[mode]
            mfu = f"{run['mfu']:.1%}" if run["mfu"] is not None else "n/a (pass --peak-tflops)"
            lines.append(
                f"GPU {mode}: {run['tokens_per_s']:,.0f} tok/s, {run['tflops']:.0f} TFLOP/s, MFU {mfu}, "
                f"peak {run['peak_memory_mib']:,.0f} MiB"
            )
    if report.get("targets"):
        lines.append("\ntargets:")
        for verdict in report["targets"]["verdicts"]:
            mark = "pass" if verdict["passed"] else "MISS"
            lines.append(
                f"  {mark}  {verdict['measure']} ({verdict['where']}): "
                f"{verdict['value']:.3f} vs {verdict['target']:.3f}"
            )
    print("\n".join(lines), file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    device = pick_device()
    report: dict = {
        "benchmark": "gpt1 vs transformers' OpenAIGPTLMHeadModel and GPT2LMHeadModel (SDPA), identical sizes",
        "machine": machine_details(device),
        "quick": args.quick,
        "targets_by_measure": TARGETS,
        "presets": {},
    }
    for preset in args.presets:
        sizes = PRESETS[preset]
        results: dict = {"sizes": sizes}
        models = build_models(sizes, args.seed, device)
        results["models"] = {name: describe(model) for name, model in models.items()}
        # Generation first, while ours and openai-gpt still hold identical weights (training changes them).
        if "generation" in args.sections:
            progress(f"{preset}: generation at batch sizes {sizes['gen_batch_sizes']}")
            results["generation"] = [
                benchmark_generation(models, sizes, batch_size, args.seed, device)
                for batch_size in sizes["gen_batch_sizes"]
            ]
        if "training" in args.sections:
            progress(f"{preset}: training steps")
            results["training"] = benchmark_training(models, sizes, args.seed, device)
        del models
        if "checkpointing" in args.sections:
            progress(f"{preset}: gradient checkpointing")
            results["checkpointing"] = benchmark_checkpointing(sizes, args.seed, device)
        report["presets"][preset] = results
    if "time_to_loss" in args.sections:
        progress("time to loss")
        report["time_to_loss"] = benchmark_time_to_loss(args)
    if "gpu" in args.sections:
        if device.type == "cuda":
            progress("GPU MFU, eager and compiled")
            report["gpu"] = {"device_name": torch.cuda.get_device_name(device), **benchmark_gpu(args, device)}
        else:
            report["gpu"] = {"skipped": "no CUDA device"}
    report["seconds"] = time.perf_counter() - started
    report["targets"] = None if args.quick else judge(report)

    document = json.dumps(report, indent=2, default=str)
    print(document)
    if args.out is not None:
        args.out.write_text(document + "\n")
    print_table(report)
    return report


if __name__ == "__main__":
    main()
