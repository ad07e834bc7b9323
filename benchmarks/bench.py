#!/usr/bin/env python3
"""gpt1 against transformers' `openai-gpt` and `gpt2` at identical sizes: one command, every figure.

    python benchmarks/bench.py                          # small, CPU-sized and paper-sized models (~25 min on 2 cores)
    python benchmarks/bench.py --presets small,cpu      # the two small models only (~8 min on 2 cores)
    python benchmarks/bench.py --corpus tinyshakespeare.txt   # adds time to loss (3 repeats: ~12 min on 2 cores)
    python benchmarks/bench.py --corpus tinyshakespeare.txt --nanogpt path/to/nanoGPT   # and real nanoGPT's train.py
    python benchmarks/bench.py --quick                  # a tiny model through every section (~1 min): checks it works
    python benchmarks/bench.py --out bench.json

Sections
--------
startup       Wall time of fresh processes, median of 5: `gpt1 --help` (the console script beside this Python,
              else `python -m gpt1 --help`), `import gpt1`, `import gpt1; gpt1.GPT1ForCausalLM` (the model's own
              import cost) and `import gpt1.train`, with `python -c pass` for the interpreter alone; and which
              heavy libraries (torch, transformers, ...) `import gpt1` and the model's import leave in sys.modules.
training      Tokens/s of one step (forward, backward of the LM loss, AdamW) and its memory, for ours,
              `OpenAIGPTLMHeadModel` and `GPT2LMHeadModel` (SDPA) at identical dimensions, dropout 0, with
              the same loop, optimizer (fused AdamW where torch has it) and batches. Rounds are
              interleaved, each model going first in turn, so drifts of the machine hit all alike;
              each model's median over rounds, and ratios ours/theirs. Ours runs as `gpt1 train` builds
              it: the output layer padded to a multiple of 64 rows inside the loss, the chunked language-modelling loss.
generation    Tokens/s of greedy `generate` of exactly N new tokens (200 or 256) from a 16-token prompt,
              at batch 1 and batch 8, best of the rounds; ours and openai-gpt start from identical
              weights, so their greedy outputs are compared too. Each against the memory-bandwidth bound:
              a decoding step reads every weight once (the tied embedding and output matrix once, the
              position embeddings not: one row) and the KV cache at the run's average length,
              2·L·B·(prompt + N/2)·d elements; at the machine's copy bandwidth (a 256 MiB fp32 tensor
              into another, bytes read + written, best of 5) that allows B·bandwidth/bytes tokens/s.
              (Weights that fit in the processor's last-level cache, as the small presets' can, may
              beat it: the bound is DRAM's.)
checkpointing Our activation memory (what the forward pass leaves allocated for the backward pass) and
              peak memory of a training step, with and without gradient checkpointing.
time_to_loss  `gpt1 train` against nanoGPT's recipe on tinyshakespeare (benchmarks/bench_time_to_loss.py),
              and against nanoGPT's own train.py with --nanogpt PATH: median of 3 back-to-back repeats
              (--time-to-loss-repeats), wall time from process start and peak resident memory of each;
              only with --corpus (or --quick, on the package's built-in corpus for a few steps, once).
gpu           With CUDA only: training at the paper's size (bf16 autocast, seq 512, SDPA/flash), eager and
              `torch.compile`d, ours and GPT2LMHeadModel (SDPA) at the same sizes and batch: tokens/s, peak
              memory, and MFU with FLOPs per token = 6N + 12·L·H·Q·T (N parameters without the position
              embeddings) against the GPU's dense bf16 peak; and greedy decoding of 200 tokens from a 16-token
              prompt at batch 1 and 64, ours and gpt2, tokens/s and fraction of the bandwidth bound.

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
import subprocess
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
    "train_vs_openai_gpt": 1.3,  # at every preset
    "train_vs_gpt2": 1.2,
    "generation_batch1_vs_openai_gpt": 10.0,
    "generation_batch1_vs_gpt2": 1.3,
    "generation_batch8_vs_openai_gpt": 10.0,
    "generation_batch8_vs_gpt2": 1.0,
    "gpt1_help_seconds": 0.5,  # at most
    "time_to_loss_vs_reference": 1.0,  # gpt1's wall time over the bare recipe's, at most
    "time_to_loss_vs_nanogpt": 0.8,  # gpt1's wall time over real nanoGPT's, at most (when measured)
    "gpu_mfu": 0.45,
    "checkpointed_activation_fraction": 1 / 3,  # at most
}
MODELS = ("gpt1", "openai-gpt", "gpt2")
COMPILED = "gpt1-compiled"  # ours through torch.compile, in the training section
EAGER = "gpt1-eager"  # ours without the compiled decode step, in the generation section
VOCAB_PADDING_MULTIPLE = 64  # as `gpt1 train` builds its models
PROMPT_LEN = 16
# Libraries that take seconds to import, or that only some commands need: the startup section lists
# which of them a bare `import gpt1` and the model's import leave loaded.
HEAVY_MODULES = (
    "torch", "transformers", "accelerate", "datasets", "tokenizers", "numpy", "safetensors", "huggingface_hub",
    "matplotlib", "lm_eval", "peft", "trl",
)  # fmt: skip
BANDWIDTH_TENSOR_MIB = 256

# "small" is a small model with a small subword vocabulary (4 layers, 256 wide, 1,024 tokens);
# "cpu" is nanoGPT's shakespeare-char "baby GPT" (6 layers, 384 wide, 6 heads, 65 characters), the classic
# CPU-sized model; "gpt1" is the paper's size with GPT-1's 40,478-token vocabulary and full 512 context (few
# steps: it is slow on a CPU); "quick" checks that everything runs.
PRESETS = {
    "small": {
        "vocab_size": 1024, "n_positions": 512, "n_embd": 256, "n_layer": 4, "n_head": 4,
        "batch_size": 8, "seq_len": 128, "train_steps": 2, "train_rounds": 6,
        "gen_rounds": 3, "gen_batch_sizes": (1, 8), "new_tokens": 200,
    },
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
GPU_DECODE_BATCH_SIZES, GPU_NEW_TOKENS, GPU_DECODE_ROUNDS = (1, 64), 200, 2
GPU_MODELS = ("gpt1", "gpt2")
SECTIONS = ("startup", "training", "generation", "checkpointing", "time_to_loss", "gpu")
# Dense bf16 peaks (no sparsity), from the vendors' data sheets, by a substring of the device name.
GPU_BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.4, "H200": 989.4, "GH200": 989.4, "A100": 312.0, "L4": 121.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="a tiny model through every section, no targets judged")
    parser.add_argument("--presets", default="small,cpu,gpt1", help="comma-separated, from: " + ", ".join(PRESETS))
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of the default")
    parser.add_argument("--startup-repeats", type=int, default=5, help="runs of each startup command (default 5)")
    parser.add_argument("--corpus", type=Path, help="tinyshakespeare.txt, for the time-to-loss section")
    parser.add_argument(
        "--time-to-loss-repeats", type=int, default=3, help="back-to-back repeats of the time-to-loss runs (default 3)"
    )
    parser.add_argument("--nanogpt", type=Path, help="a checkout of karpathy/nanoGPT: time to loss of its train.py too")
    parser.add_argument("--gpu-batch-size", type=int, default=16, help="batch for the GPU MFU section (default 16)")
    parser.add_argument("--gpu-steps", type=int, default=20, help="timed steps per GPU run (default 20)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if its name is not known here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    args.presets = ["quick"] if args.quick else [name.strip() for name in args.presets.split(",") if name.strip()]
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    if args.quick:  # once each: the quick mode checks that everything runs, it measures nothing
        args.startup_repeats = args.time_to_loss_repeats = 1
    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        parser.error(f"unknown preset(s) {unknown}; choose from {sorted(PRESETS)}")
    if set(args.sections) - set(SECTIONS):
        parser.error(f"unknown section(s) {sorted(set(args.sections) - set(SECTIONS))}; choose from {list(SECTIONS)}")
    if args.corpus is not None and not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: no such file")
    if args.nanogpt is not None and not (args.nanogpt / "train.py").is_file():
        parser.error(f"--nanogpt {args.nanogpt}: no train.py there (pass a checkout of karpathy/nanoGPT)")
    if min(args.startup_repeats, args.time_to_loss_repeats) < 1:
        parser.error("repeats must be at least 1")
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


def cpu_model() -> str:
    """The processor's marketing name where Linux tells it (platform.processor() often says only "x86_64")."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_details(device: torch.device) -> dict:
    details = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
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


def measure_memory_bandwidth(device: torch.device, repeats: int = 5) -> dict:
    """The machine's memory bandwidth as generation sees it: one large tensor copied into another.

    Bytes read plus bytes written over the best of `repeats` copies, with this process's torch threads
    (those that generation uses too). Larger than the caches a core reaches, so it is DRAM (or HBM) that is timed.
    """
    source = torch.rand(BANDWIDTH_TENSOR_MIB * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.zeros_like(source)  # touched, so no page faults inside the timing
    best = float("inf")
    for _ in range(repeats + 1):  # the first copy warms up
        synchronize(device)
        started = time.perf_counter()
        target.copy_(source)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    moved = 2 * source.numel() * source.element_size()
    del source, target
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "bytes_per_s": moved / best,
        "gb_per_s": moved / best / 1e9,
        "method": f"dst.copy_(src), {BANDWIDTH_TENSOR_MIB} MiB fp32, bytes read + written, best of {repeats}",
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }


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
    return {"gpt1": ours.to(device), "openai-gpt": openai_gpt.to(device), "gpt2": build_gpt2(sizes, device)}


def build_gpt2(sizes: dict, device: torch.device, seed: int | None = None) -> GPT2LMHeadModel:
    """transformers' GPT-2 at the same dimensions, SDPA attention, dropout off (token 0 for bos/eos)."""
    if seed is not None:
        torch.manual_seed(seed)
    config = GPT2Config(**dimensions(sizes), **DROPOUT_OFF, bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    return GPT2LMHeadModel(config).to(device)


def describe(model: nn.Module) -> dict:
    return {
        "class": f"{type(model).__module__}.{type(model).__name__}",
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
    }


def position_embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The embeddings other than the token embeddings (the position table): a step reads one row of them."""
    token_embeddings = model.get_input_embeddings()
    return [
        module.weight
        for module in model.modules()
        if isinstance(module, nn.Embedding) and module is not token_embeddings
    ]


def weight_bytes_read_per_step(model: nn.Module) -> int:
    """Bytes of every parameter once (a tied embedding and output layer is one parameter), minus the positions."""
    positions = {id(parameter) for parameter in position_embedding_parameters(model)}
    return tensor_bytes(parameter for parameter in model.parameters() if id(parameter) not in positions)


def kv_element_size(device: torch.device) -> int:
    """Bytes of a cached key or value element: bf16 under CUDA autocast, fp32 on a CPU."""
    return 2 if device.type == "cuda" else 4


def bandwidth_bound(
    model: nn.Module, batch_size: int, prompt_len: int, new_tokens: int, bandwidth: dict, device: torch.device
) -> dict:
    """The fastest greedy decoding the memory bandwidth allows: each step reads every weight once and the
    KV cache at the run's average length; a step makes `batch_size` tokens."""
    config = model.config
    average_context = prompt_len + new_tokens / 2
    kv_cache_bytes = 2 * config.n_layer * batch_size * average_context * config.n_embd * kv_element_size(device)
    bytes_per_step = weight_bytes_read_per_step(model) + kv_cache_bytes
    return {
        "bytes_per_step": bytes_per_step,
        "kv_cache_bytes_per_step": kv_cache_bytes,
        "bound_tokens_per_s": batch_size * bandwidth["bytes_per_s"] / bytes_per_step,
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


# --- startup --------------------------------------------------------------------------------------------------------


def startup_commands() -> dict[str, list[str]]:
    """What a user waits for before anything happens: the CLI's help, the package, the model, the trainer."""
    script = Path(sys.executable).parent / "gpt1"
    help_command = [str(script), "--help"] if script.is_file() else [sys.executable, "-m", "gpt1", "--help"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],  # the interpreter alone, for scale
        "gpt1 --help": help_command,
        "import gpt1": [sys.executable, "-c", "import gpt1"],
        "import gpt1; gpt1.GPT1ForCausalLM": [sys.executable, "-c", "import gpt1; gpt1.GPT1ForCausalLM"],
        "import gpt1.train": [sys.executable, "-c", "import gpt1.train"],
    }


def heavy_modules_after(code: str, env: dict[str, str]) -> list[str]:
    """Which of HEAVY_MODULES a fresh interpreter holds after running `code`, as the child itself reports."""
    listing = f"import json, sys; print(json.dumps([name for name in {HEAVY_MODULES!r} if name in sys.modules]))"
    finished = subprocess.run(
        [sys.executable, "-c", f"{code}\n{listing}"], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(finished.stdout.splitlines()[-1])


def benchmark_startup(repeats: int) -> dict:
    """Median wall time of each command in a fresh process, the commands interleaved so drifts hit all alike.

    The source tree goes first on PYTHONPATH (as in the time-to-loss runs), so that it is this checkout
    that is timed, installed or not.
    """
    env = bench_time_to_loss.environment_with_path(BENCHMARKS.parent / "src")
    commands = startup_commands()
    runs: dict[str, list[dict]] = {label: [] for label in commands}
    for _ in range(repeats):
        for label, command in commands.items():
            runs[label].append(bench_time_to_loss.run_child(command, env=env))
    timings = {
        label: {
            "command": " ".join(commands[label]),
            "seconds_median": statistics.median(run["wall_seconds"] for run in samples),
            "seconds_samples": [run["wall_seconds"] for run in samples],
            "max_rss_mib": max(run["max_rss_mib"] for run in samples),
        }
        for label, samples in runs.items()
    }
    return {
        "repeats": repeats,
        "commands": timings,
        "heavy_modules_loaded": {
            code: heavy_modules_after(code, env) for code in ("import gpt1", "import gpt1; gpt1.GPT1ForCausalLM")
        },
    }


# --- (a) training ---------------------------------------------------------------------------------------------------


def benchmark_training(models: dict[str, nn.Module], sizes: dict, seed: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(seed + 1)
    batches = [
        torch.randint(0, sizes["vocab_size"], (sizes["batch_size"], sizes["seq_len"]), generator=generator).to(device)
        for _ in range(sizes["train_steps"])
    ]
    optimizers = {name: make_optimizer(model) for name, model in models.items()}
    # Ours once more through torch.compile (`gpt1 train --compile`), on the same weights and optimizer: the
    # compiled step's speed, and what compiling it costs, measured beside the eager ones.
    runners = {**models, COMPILED: torch.compile(models["gpt1"])}
    optimizers[COMPILED] = optimizers["gpt1"]

    def step(name: str, input_ids: torch.Tensor) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        with autocast(device):
            loss = runners[name](input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizers[name].step()

    first_loss = {}
    for name, model in models.items():
        model.train()
        with torch.no_grad(), autocast(device):
            first_loss[name] = float(model(input_ids=batches[0], labels=batches[0]).loss)
        for warmup in range(2):
            step(name, batches[warmup % len(batches)])
    synchronize(device)
    compile_started = time.perf_counter()
    step(COMPILED, batches[0])  # compiles
    synchronize(device)
    compile_seconds = time.perf_counter() - compile_started
    step(COMPILED, batches[-1])

    samples: dict[str, list[float]] = {name: [] for name in runners}
    tokens_per_round = len(batches) * sizes["batch_size"] * sizes["seq_len"]
    for name in rotations(list(runners), sizes["train_rounds"]):
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
        if name != COMPILED
    }
    ours = per_model["gpt1"]["tokens_per_s_median"]
    compiled = statistics.median(samples[COMPILED])
    return {
        "tokens_per_round": tokens_per_round,
        "optimizer": type(optimizers["gpt1"]).__name__
        + ("(fused)" if optimizers["gpt1"].defaults.get("fused") else ""),
        "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
        "models": per_model,
        "gpt1_compiled": {
            "tokens_per_s_median": compiled,
            "tokens_per_s_samples": samples[COMPILED],
            "compile_seconds": compile_seconds,
            "speedup_over_eager": compiled / ours,
            # Steps after which compiling has paid for itself: compile time / time saved per step (never if slower).
            "pays_after_steps": compile_seconds / (tokens_per_round / len(batches) * (1 / ours - 1 / compiled))
            if compiled > ours
            else None,
        },
        "ratios": {
            "vs_openai_gpt": ours / per_model["openai-gpt"]["tokens_per_s_median"],
            "vs_gpt2": ours / per_model["gpt2"]["tokens_per_s_median"],
            "compiled_vs_openai_gpt": compiled / per_model["openai-gpt"]["tokens_per_s_median"],
            "compiled_vs_gpt2": compiled / per_model["gpt2"]["tokens_per_s_median"],
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
    models: dict[str, nn.Module], sizes: dict, batch_size: int, seed: int, device: torch.device, bandwidth: dict
) -> dict:
    generator = torch.Generator().manual_seed(seed + 2)
    # Ids from 1 up, so that no prompt token equals pad_token_id 0.
    prompt = torch.randint(1, sizes["vocab_size"], (batch_size, PROMPT_LEN), generator=generator).to(device)
    new_tokens = sizes["new_tokens"]
    for model in models.values():
        model.eval()
        generate(model, prompt, 4)  # warm-up
    # Ours twice: "gpt1" as a process that has decoded for a while gets it (`compiled_decoding` "auto" has switched
    # to the compiled decode step; here it is forced, and the first call, which compiles, is timed apart), and
    # "gpt1-eager" as one `generate` call in a fresh process gets it.
    ours = models["gpt1"]
    ours.compiled_decoding = True
    synchronize(device)
    compile_started = time.perf_counter()
    with autocast(device):
        generate(ours, prompt, new_tokens)
    synchronize(device)
    first_call_seconds = time.perf_counter() - compile_started
    runners = {**models, EAGER: ours}

    samples: dict[str, list[float]] = {name: [] for name in runners}
    outputs = {}
    for name in rotations(list(runners), sizes["gen_rounds"]):
        ours.compiled_decoding = name != EAGER
        synchronize(device)
        started = time.perf_counter()
        with autocast(device):
            outputs[name] = generate(runners[name], prompt, new_tokens)
        synchronize(device)
        samples[name].append(batch_size * new_tokens / (time.perf_counter() - started))
    ours.compiled_decoding = "auto"

    per_model = {}
    for name, values in samples.items():
        # openai-gpt has no KV cache (it recomputes the prefix): its bound is the one it would have with one.
        bound = bandwidth_bound(runners[name], batch_size, PROMPT_LEN, new_tokens, bandwidth, device)
        per_model[name] = {
            "tokens_per_s_best": max(values),
            "tokens_per_s_samples": values,
            **bound,
            "fraction_of_bound": max(values) / bound["bound_tokens_per_s"],
        }
    same = outputs["gpt1"][:, PROMPT_LEN:] == outputs["openai-gpt"][:, PROMPT_LEN:]
    return {
        "batch_size": batch_size,
        "prompt_len": PROMPT_LEN,
        "new_tokens": new_tokens,
        "memory_bandwidth_gb_s": bandwidth["gb_per_s"],
        "models": per_model,
        "compiled_decoding": {
            "compile_failed": bool(ours._compile_failed),  # then the "gpt1" row decoded eagerly too
            "first_call_seconds": first_call_seconds,
            "compile_seconds": first_call_seconds - batch_size * new_tokens / per_model["gpt1"]["tokens_per_s_best"],
        },
        "ratios": {
            "vs_openai_gpt": per_model["gpt1"]["tokens_per_s_best"] / per_model["openai-gpt"]["tokens_per_s_best"],
            "vs_gpt2": per_model["gpt1"]["tokens_per_s_best"] / per_model["gpt2"]["tokens_per_s_best"],
            "eager_vs_openai_gpt": per_model[EAGER]["tokens_per_s_best"] / per_model["openai-gpt"]["tokens_per_s_best"],
            "eager_vs_gpt2": per_model[EAGER]["tokens_per_s_best"] / per_model["gpt2"]["tokens_per_s_best"],
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


# --- (d) GPU: MFU, memory and decoding against gpt2 -----------------------------------------------------------------


def flops_per_token(model: nn.Module, seq_len: int) -> float:
    """6N + 12·L·H·Q·T (PaLM's appendix B, nanoGPT's estimate_mfu); N without the position embeddings; H·Q = d."""
    config = model.config
    parameters = sum(parameter.numel() for parameter in model.parameters())
    parameters -= sum(parameter.numel() for parameter in position_embedding_parameters(model))
    return 6 * parameters + 12 * config.n_layer * config.n_embd * seq_len


def gpu_peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops is not None:
        return override_tflops * 1e12
    name = torch.cuda.get_device_name(device)
    for key, tflops in GPU_BF16_PEAK_TFLOPS.items():  # "H100 PCIe" is listed before "H100"
        if key in name:
            return tflops * 1e12
    return None


def build_gpu_model(name: str, seed: int, device: torch.device) -> nn.Module:
    """Ours as `gpt1 train` builds it, or transformers' GPT-2 (SDPA), at the paper's size."""
    if name in ("gpt1", EAGER):
        return build_gpt1(GPU_SIZES, seed, device)
    return build_gpt2(GPU_SIZES, device, seed)


def measured(run: Callable[[], dict]) -> dict:
    """A GPU measurement, or the error that stopped it (a compile failure, out of memory) in its place, so
    that one failure does not cost the section's other figures."""
    try:
        return run()
    except Exception as error:  # reported in the document and the table
        return {"error": f"{type(error).__name__}: {str(error)[:500]}"}
    finally:
        torch.cuda.empty_cache()


def gpu_training_run(
    name: str, args: argparse.Namespace, device: torch.device, compiled: bool, peak_flops: float | None
) -> dict:
    """Tokens/s, MFU and peak memory of one model's training step at the paper's size on one GPU."""
    model = build_gpu_model(name, args.seed, device).train()
    optimizer = make_optimizer(model)
    runner = torch.compile(model) if compiled else model
    input_ids = torch.randint(0, GPU_SIZES["vocab_size"], (args.gpu_batch_size, GPU_SIZES["seq_len"]), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = runner(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()

    try:
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
    finally:
        if compiled:  # drop the compiled graphs (and what they hold) before the next model
            torch._dynamo.reset()


@torch.inference_mode()
def gpu_decode_run(name: str, batch_size: int, seed: int, device: torch.device, bandwidth: dict) -> dict:
    """Greedy decoding of GPU_NEW_TOKENS tokens from a 16-token prompt under bf16 autocast, best of the rounds."""
    model = build_gpu_model(name, seed, device).eval()
    generator = torch.Generator().manual_seed(seed + 4)
    prompt = torch.randint(1, GPU_SIZES["vocab_size"], (batch_size, PROMPT_LEN), generator=generator).to(device)
    if name == "gpt1":  # as a process that has decoded for a while gets it ("gpt1-eager": one call in a new one)
        model.compiled_decoding = True
    if name == EAGER:
        model.compiled_decoding = False
    with autocast(device):
        generate(model, prompt, GPU_NEW_TOKENS if name == "gpt1" else 4)  # warm-up (and the compile)
    samples = []
    for _ in range(GPU_DECODE_ROUNDS):
        synchronize(device)
        started = time.perf_counter()
        with autocast(device):
            generate(model, prompt, GPU_NEW_TOKENS)
        synchronize(device)
        samples.append(batch_size * GPU_NEW_TOKENS / (time.perf_counter() - started))
    bound = bandwidth_bound(model, batch_size, PROMPT_LEN, GPU_NEW_TOKENS, bandwidth, device)
    return {
        "tokens_per_s_best": max(samples),
        "tokens_per_s_samples": samples,
        **bound,
        "fraction_of_bound": max(samples) / bound["bound_tokens_per_s"],
    }


def ratio(ours: dict, theirs: dict, key: str) -> float | None:
    """ours[key] / theirs[key], or None where either run failed."""
    if key in ours and key in theirs and theirs[key]:
        return ours[key] / theirs[key]
    return None


def benchmark_gpu(args: argparse.Namespace, device: torch.device, bandwidth: dict) -> dict:
    """Ours against gpt2 on one GPU: training eager and compiled, then greedy decoding at batch 1 and 64."""
    peak_flops = gpu_peak_flops(device, args.peak_tflops)
    training: dict[str, dict] = {name: {} for name in GPU_MODELS}
    for mode in ("eager", "compiled"):
        for name in GPU_MODELS:
            progress(f"GPU training, {name}, {mode}")
            training[name][mode] = measured(
                lambda name=name, mode=mode: gpu_training_run(name, args, device, mode == "compiled", peak_flops)
            )
    decode = []
    for batch_size in GPU_DECODE_BATCH_SIZES:
        progress(f"GPU decoding at batch {batch_size}")
        runs = {
            name: measured(
                lambda name=name, batch_size=batch_size: gpu_decode_run(name, batch_size, args.seed, device, bandwidth)
            )
            for name in (*GPU_MODELS, EAGER)
        }
        decode.append(
            {
                "batch_size": batch_size,
                "prompt_len": PROMPT_LEN,
                "new_tokens": GPU_NEW_TOKENS,
                "models": runs,
                "ratio_vs_gpt2": ratio(runs["gpt1"], runs["gpt2"], "tokens_per_s_best"),
                "eager_ratio_vs_gpt2": ratio(runs[EAGER], runs["gpt2"], "tokens_per_s_best"),
            }
        )
    return {
        "sizes": GPU_SIZES,
        "batch_size": args.gpu_batch_size,
        "dtype": "bf16 autocast",
        "peak_bf16_tflops": peak_flops / 1e12 if peak_flops else None,
        "memory_bandwidth_gb_s": bandwidth["gb_per_s"],
        **training["gpt1"],  # "eager" and "compiled": ours
        "gpt2": training["gpt2"],
        "ratios_vs_gpt2": {
            mode: {
                "tokens_per_s": ratio(training["gpt1"][mode], training["gpt2"][mode], "tokens_per_s"),
                "peak_memory": ratio(training["gpt1"][mode], training["gpt2"][mode], "peak_memory_mib"),
            }
            for mode in ("eager", "compiled")
        },
        "decode": decode,
    }


# --- (c) time to loss -----------------------------------------------------------------------------------------------


def benchmark_time_to_loss(args: argparse.Namespace) -> dict:
    """`gpt1 train` (with bench_time_to_loss.GPT1_RECIPE) against the bare recipe, and real nanoGPT if given."""
    options = {"repeats": args.time_to_loss_repeats, "nanogpt": args.nanogpt}
    if args.quick:
        with tempfile.TemporaryDirectory() as folder:
            corpus = Path(folder) / "corpus.txt"
            from gpt1.data import builtin_corpus

            corpus.write_text("\n".join(builtin_corpus()["text"][:40]), encoding="utf-8")
            return bench_time_to_loss.compare(corpus, steps=10, eval_every=5, **options)
    if args.corpus is None:
        return {"skipped": "pass --corpus PATH/tinyshakespeare.txt"}
    return bench_time_to_loss.compare(args.corpus, **options)


# --- report ---------------------------------------------------------------------------------------------------------


def judge(report: dict) -> dict:
    """Each figure against its target (every preset alike; time to loss and MFU where they were measured)."""
    verdicts = []

    def add(measure: str, where: str, value: float, target: float, at_most: bool = False) -> None:
        passed = value <= target if at_most else value >= target
        verdicts.append({"measure": measure, "where": where, "value": value, "target": target, "passed": passed})

    for preset, results in report["presets"].items():
        if "training" in results:
            ratios = results["training"]["ratios"]
            add("training step vs openai-gpt", preset, ratios["vs_openai_gpt"], TARGETS["train_vs_openai_gpt"])
            add("training step vs gpt2", preset, ratios["vs_gpt2"], TARGETS["train_vs_gpt2"])
            compiled = TARGETS["train_vs_openai_gpt"]
            add("training step, compiled, vs openai-gpt", preset, ratios["compiled_vs_openai_gpt"], compiled)
            add("training step, compiled, vs gpt2", preset, ratios["compiled_vs_gpt2"], TARGETS["train_vs_gpt2"])
        for generation in results.get("generation", []):
            batch_size = generation["batch_size"]
            for against in ("openai_gpt", "gpt2"):
                target = TARGETS.get(f"generation_batch{batch_size}_vs_{against}")
                if target is not None:
                    value = generation["ratios"][f"vs_{against}"]
                    add(f"generation vs {against.replace('_', '-')}", f"{preset}, batch {batch_size}", value, target)
                    value = generation["ratios"][f"eager_vs_{against}"]
                    where = f"{preset}, batch {batch_size}"
                    add(f"generation, one eager call, vs {against.replace('_', '-')}", where, value, target)
        if "checkpointing" in results:
            fraction = results["checkpointing"]["activation_fraction"]
            add(
                "activation memory with checkpointing",
                preset,
                fraction,
                TARGETS["checkpointed_activation_fraction"],
                at_most=True,
            )
    startup = report.get("startup", {}).get("commands", {})
    if "gpt1 --help" in startup:
        seconds = startup["gpt1 --help"]["seconds_median"]
        add("gpt1 --help, seconds", "startup", seconds, TARGETS["gpt1_help_seconds"], at_most=True)
    time_to_loss = report.get("time_to_loss", {})
    if "val_loss" in time_to_loss.get("gpt1", {}) and not report.get("quick"):
        # Faster counts only at the same loss: gpt1's recipe must reach the recipe's own figure.
        reached, target = time_to_loss["gpt1"]["val_loss"], bench_time_to_loss.TARGET_VAL_LOSS_WHOLE_TEXT
        add("time to loss, gpt1's validation loss", "whole validation text", reached, target, at_most=True)
    for key, against in (("reference", "the bare nanoGPT recipe"), ("nanogpt", "nanoGPT")):
        value = time_to_loss.get(f"wall_time_ratio_gpt1_over_{key}")
        if value is not None:
            add(f"time to loss, gpt1 / {against}", "wall time", value, TARGETS[f"time_to_loss_vs_{key}"], at_most=True)
    gpu = report.get("gpu", {})
    for mode in ("eager", "compiled"):
        if gpu.get(mode, {}).get("mfu") is not None:
            add(f"MFU, {mode}", gpu["device_name"], gpu[mode]["mfu"], TARGETS["gpu_mfu"])
    return {"verdicts": verdicts}


def seconds_list(values: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def startup_lines(startup: dict) -> list[str]:
    commands = startup["commands"]
    timed = ", ".join(f"{label} {run['seconds_median']:.2f} s" for label, run in commands.items())
    lines = [f"startup (median of {startup['repeats']}): {timed}"]
    for code, modules in startup["heavy_modules_loaded"].items():
        lines.append(f"  heavy modules after `{code}`: {', '.join(modules) if modules else 'none'}")
    return lines


def time_to_loss_lines(time_to_loss: dict) -> list[str]:
    if "skipped" in time_to_loss:
        return [f"time to loss: skipped, {time_to_loss['skipped']}"]
    recipe = time_to_loss["gpt1_recipe"]
    flags = " ".join(recipe["flags"]) or "none"
    lines = [
        f"time to loss (median of {time_to_loss['repeats']}; gpt1 recipe: {recipe['name']}, extra flags: {flags}):"
    ]
    for name in bench_time_to_loss.RUN_NAMES.values():
        run = time_to_loss.get(name)
        if run is None:
            continue
        if "skipped" in run:
            lines.append(f"  {name}: skipped, {run['skipped']}")
            continue
        estimate = " (estimate, 20 random batches)" if name == "nanogpt" else ""
        lines.append(
            f"  {name}: val {run['val_loss']:.4f}{estimate} in {run['wall_seconds']:.1f} s "
            f"({seconds_list(run['wall_seconds_samples'])}), peak RSS {run['max_rss_mib']:,.0f} MiB"
        )
    for key in ("reference", "nanogpt"):
        if f"wall_time_ratio_gpt1_over_{key}" in time_to_loss:
            lines.append(
                f"  gpt1 / {key}: wall time {time_to_loss[f'wall_time_ratio_gpt1_over_{key}']:.2f}x, "
                f"peak RSS {time_to_loss[f'max_rss_ratio_gpt1_over_{key}']:.2f}x"
            )
    return lines


def gpu_figure(run: dict, figure: Callable[[dict], str]) -> str:
    return f"failed ({run['error']})" if "error" in run else figure(run)


def gpu_lines(gpu: dict) -> list[str]:
    if "skipped" in gpu:
        return [f"GPU: skipped, {gpu['skipped']}"]

    def training(run: dict) -> str:
        mfu = f"{run['mfu']:.1%}" if run["mfu"] is not None else "n/a (pass --peak-tflops)"
        return (
            f"{run['tokens_per_s']:,.0f} tok/s, {run['tflops']:.0f} TFLOP/s, MFU {mfu}, "
            f"peak {run['peak_memory_mib']:,.0f} MiB"
        )

    def decoding(run: dict) -> str:
        return f"{run['tokens_per_s_best']:,.0f} tok/s ({run['fraction_of_bound']:.1%} of bound)"

    def times(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "n/a"

    lines = [f"GPU {gpu['device_name']}, batch {gpu['batch_size']} x {gpu['sizes']['seq_len']}, {gpu['dtype']}:"]
    for mode in ("eager", "compiled"):
        ratios = gpu["ratios_vs_gpt2"][mode]
        lines.append(
            f"  GPU train {mode}: gpt1 {gpu_figure(gpu[mode], training)}; "
            f"gpt2 {gpu_figure(gpu['gpt2'][mode], training)}; gpt1/gpt2 tok/s {times(ratios['tokens_per_s'])}, "
            f"peak memory {times(ratios['peak_memory'])}"
        )
    for decode in gpu["decode"]:
        models = decode["models"]
        lines.append(
            f"  GPU decode batch {decode['batch_size']}: gpt1 {gpu_figure(models['gpt1'], decoding)}; "
            f"gpt2 {gpu_figure(models['gpt2'], decoding)}; gpt1/gpt2 {times(decode['ratio_vs_gpt2'])} "
            f"(one eager call: {gpu_figure(models[EAGER], decoding)}, {times(decode['eager_ratio_vs_gpt2'])})"
        )
    return lines


def print_table(report: dict) -> None:
    machine = report["machine"]
    lines = [
        f"machine: {machine['cpu_model']}, {machine['cpus_usable']} of {machine['cpu_count']} cores usable, "
        f"torch {machine['torch']}, transformers {machine['transformers']}, {machine['date']}",
        f"device {machine['device']}, {machine['torch_threads']} torch threads, {report['seconds']:.0f} s",
    ]
    if "memory_bandwidth" in report:
        bandwidth = report["memory_bandwidth"]
        lines.append(f"memory bandwidth {bandwidth['gb_per_s']:.1f} GB/s ({bandwidth['method']})")
    if "startup" in report:
        lines.extend(startup_lines(report["startup"]))
    for preset, results in report["presets"].items():
        sizes = results["sizes"]
        lines.append(
            f"\n[{preset}] {sizes['n_layer']}x{sizes['n_embd']}x{sizes['n_head']}, vocab {sizes['vocab_size']}, "
            f"train batch {sizes['batch_size']} x {sizes['seq_len']}, generate {sizes['new_tokens']} new tokens"
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
            compiled = results["training"]["gpt1_compiled"]
            rows.append(
                (
                    "  gpt1 compiled",
                    f"{compiled['tokens_per_s_median']:,.0f}",
                    "",
                    "",
                    f"{results['training']['ratios']['compiled_vs_openai_gpt']:.2f}x",
                    f"{results['training']['ratios']['compiled_vs_gpt2']:.2f}x",
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
            rows.append(
                (
                    "  gpt1, one eager call",
                    f"{models[EAGER]['tokens_per_s_best']:,.1f}",
                    "",
                    "",
                    f"{generation['ratios']['eager_vs_openai_gpt']:.2f}x",
                    f"{generation['ratios']['eager_vs_gpt2']:.2f}x",
                )
            )
            rows.append(
                (
                    f"  of bound ({models['gpt1']['bound_tokens_per_s']:,.0f} tok/s)",
                    *(f"{models[name]['fraction_of_bound']:.1%}" for name in MODELS),
                    "",
                    "",
                )
            )
        widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
        if len(rows) > 1:  # a header alone, where only checkpointing ran, says nothing
            lines.extend("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
        if "training" in results:
            compiled = results["training"]["gpt1_compiled"]
            lines.append(
                f"gpt1 train --compile: {compiled['speedup_over_eager']:.2f}x the eager step, compiling took "
                f"{compiled['compile_seconds']:.1f} s ("
                + (
                    f"pays after {compiled['pays_after_steps']:,.0f} steps)"
                    if compiled["pays_after_steps"] is not None
                    else "never pays)"
                )
            )
        for generation in results.get("generation", []):
            lines.append(
                f"compiled decoding at batch {generation['batch_size']}: the first call took "
                f"{generation['compiled_decoding']['first_call_seconds']:.1f} s "
                f"(about {generation['compiled_decoding']['compile_seconds']:.1f} s of it compiling)"
            )
        if "checkpointing" in results:
            checkpointing = results["checkpointing"]
            lines.append(
                f"gradient checkpointing: activations {checkpointing['plain']['activation_mib']:,.0f} -> "
                f"{checkpointing['checkpointed']['activation_mib']:,.0f} MiB "
                f"({checkpointing['activation_fraction']:.3f}), "
                f"step peak {checkpointing['step_peak_fraction']:.3f}, time {checkpointing['time_ratio']:.2f}x"
            )
    if "time_to_loss" in report:
        lines.append("")
        lines.extend(time_to_loss_lines(report["time_to_loss"]))
    if "gpu" in report:
        lines.extend(gpu_lines(report["gpu"]))
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
    }
    if "startup" in args.sections:  # first, while nothing of this process competes for the cores
        progress(f"startup, {args.startup_repeats} run(s) of each command")
        report["startup"] = benchmark_startup(args.startup_repeats)
    if "generation" in args.sections or ("gpu" in args.sections and device.type == "cuda"):
        progress("memory bandwidth")
        report["memory_bandwidth"] = measure_memory_bandwidth(device)
    report["presets"] = {}
    for preset in args.presets if {"training", "generation", "checkpointing"} & set(args.sections) else []:
        torch._dynamo.reset()  # each preset compiles afresh, as a new process would (no shapes carried over)
        sizes = PRESETS[preset]
        results: dict = {"sizes": sizes}
        models = build_models(sizes, args.seed, device)
        results["models"] = {name: describe(model) for name, model in models.items()}
        # Generation first, while ours and openai-gpt still hold identical weights (training changes them).
        if "generation" in args.sections:
            progress(f"{preset}: generation at batch sizes {sizes['gen_batch_sizes']}")
            results["generation"] = [
                benchmark_generation(models, sizes, batch_size, args.seed, device, report["memory_bandwidth"])
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
        progress(f"time to loss, {args.time_to_loss_repeats} repeat(s)")
        report["time_to_loss"] = benchmark_time_to_loss(args)
    if "gpu" in args.sections:
        if device.type == "cuda":
            report["gpu"] = {
                "device_name": torch.cuda.get_device_name(device),
                **benchmark_gpu(args, device, report["memory_bandwidth"]),
            }
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
