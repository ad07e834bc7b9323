#!/usr/bin/env python
"""Check that vLLM's Transformers modeling backend serves a gpt1 model folder like transformers does.

Runs in a virtualenv with vLLM installed (and without gpt1: the folder brings its code); `scripts/check_vllm.py`
makes that environment and the folders, and runs this on each:

    python scripts/vllm_parity.py MODEL_FOLDER [--in-process] [--compile] [--tp 2] [--max-tokens 20] [--no-bench]

For prompts made into token ids by the folder's own tokenizer:

1. transformers reference: `AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`,
   `generate(do_sample=False)` one prompt at a time (no padding), keeping each step's raw logits, plus
   one full forward per prompt for the prompt tokens' logprobs.
2. vLLM: `LLM(model=folder, model_impl="transformers", trust_remote_code=True, dtype="float32",
   max_model_len=n_positions, ...)`, greedy (temperature 0) with `logprobs=0, prompt_logprobs=0`, on
   (a) 8 prompts of different lengths, sent as text (so vLLM's tokenization is checked too);
   (b) 8 prompts of ~0.3 x n_positions tokens: the batch's tokens exceed n_positions, and with the token
       budget of 1.5 x n_positions one forward is wider than n_positions and one prompt is chunked;
   (c) 4 prompts sharing (b)'s first prompt's leading KV blocks, so prefix caching is exercised.
3. Compares tokens per prompt (both stop at EOS) and logprobs (generated and prompt tokens).
4. Throughput: vLLM on batch 8 vs transformers `generate` on batch 8 with left padding, both made to
   produce exactly --bench-tokens new tokens (ignore_eos / min_new_tokens), fastest of --bench-repeats,
   each engine on --threads cores (default 1).

Exit status 0 when every prompt agrees, vLLM tokenizes like transformers, and the largest logprob
difference is <= --tol; 1 otherwise. vLLM runs in its default multi-process mode unless --in-process
(faster start: ~7 s instead of ~30-55 s on 2 cores; also reports the widest forward vLLM ran).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MIXED_PROMPTS = [
    "The",
    "A",
    "In Python,",
    "def f(x):\n    return",
    "The quick brown fox jumps over",
    "import os\nimport sys\n\nclass Foo:\n",
    "Exceptions are raised when an error is detected during execution, and they",
    "The module provides functions for working with files and directories, such as reading, "
    "writing and listing them; see also the",
]

LONG_TEXT = (
    "Python is an easy to learn, powerful programming language. It has efficient high-level data "
    "structures and a simple but effective approach to object-oriented programming. Python's elegant "
    "syntax and dynamic typing, together with its interpreted nature, make it an ideal language for "
    "scripting and rapid application development in many areas on most platforms. The Python "
    "interpreter and the extensive standard library are freely available in source or binary form for "
    "all major platforms from the Python web site, and may be freely distributed. The same site also "
    "contains distributions of and pointers to many free third party Python modules, programs and "
    "tools, and additional documentation. The Python interpreter is easily extended with new functions "
    "and data types implemented in C or C++ (or other languages callable from C). Python is also "
    "suitable as an extension language for customizable applications. This tutorial introduces the "
    "reader informally to the basic concepts and features of the Python language and system."
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="gpt1 model folder (config.json, model.safetensors, remote code, tokenizer)")
    p.add_argument("--max-tokens", type=int, default=20, help="greedy tokens per prompt for the comparison")
    p.add_argument("--bench-tokens", type=int, default=64, help="new tokens per sequence in the throughput runs")
    p.add_argument("--no-bench", action="store_true", help="skip the throughput measurement")
    p.add_argument("--tol", type=float, default=1e-3, help="largest allowed |logprob difference|")
    p.add_argument(
        "--compile", action="store_true", help="let vLLM torch.compile the model (slow on CPU); default eager"
    )
    p.add_argument("--kv-cache-mb", type=int, default=256, help="KV cache size for vLLM, MiB")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run vLLM's engine and worker in this process (faster start; VLLM_ENABLE_V1_MULTIPROCESSING=0)",
    )
    p.add_argument(
        "--block-size",
        type=int,
        default=32,
        help="vLLM KV-cache block size; the CPU default (128) is too coarse for prefix caching to hit",
    )
    p.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="vLLM's token budget per forward; default 1.5 x n_positions, so the long batch runs as one "
        "forward wider than n_positions plus a chunked-prefill remainder",
    )
    p.add_argument(
        "--tensor-parallel-size",
        "--tp",
        type=int,
        default=1,
        help="vLLM tensor parallel size (CPU: one worker process per rank; binds rank r to core r "
        "unless VLLM_CPU_OMP_THREADS_BIND is set)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for each engine: torch.set_num_threads for transformers, cores 0..N-1 for "
        "vLLM's worker (VLLM_CPU_OMP_THREADS_BIND). 1 matches vLLM's default on a 2-core machine, "
        "and is far steadier than 2 when other processes share the cores",
    )
    p.add_argument("--bench-repeats", type=int, default=3, help="timed runs per engine; the fastest counts")
    p.add_argument("--json", type=Path, help="also write the summary as JSON here")
    return p.parse_args()


def build_prompts(tokenizer, n_positions: int, vocab_size: int, max_tokens: int, block: int):
    """(mixed: [(text, ids)], long: [ids], prefix: [ids]), every prompt leaving room for max_tokens."""
    mixed = [(text, tokenizer(text, add_special_tokens=False)["input_ids"]) for text in MIXED_PROMPTS]
    room = n_positions - max_tokens
    mixed = [(t, ids[:room]) for t, ids in mixed]
    long_ids = tokenizer(LONG_TEXT, add_special_tokens=False)["input_ids"]
    long_len = max(2, min(int(0.3 * n_positions), room))
    while len(long_ids) < long_len + 7 * 8:
        long_ids = long_ids + long_ids
    long = [long_ids[7 * k : 7 * k + long_len] for k in range(8)]
    # Prompts sharing long[0]'s first 2/3 (whole KV blocks of 32 are reused by prefix caching), different tails.
    shared = long[0][: max(block, (2 * long_len // 3) // block * block)]
    tail_source = long_ids[len(long_ids) // 2 :]
    prefix = [shared + tail_source[5 * k : 5 * k + 2 + 3 * k] for k in range(4)]
    prefix = [ids[:room] for ids in prefix]
    for ids in [m[1] for m in mixed] + long + prefix:
        if not ids or max(ids) >= vocab_size:
            raise SystemExit(f"prompt ids out of range for vocab_size={vocab_size}: {ids}")
    return mixed, long, prefix


def hf_reference(model, prompts: list[list[int]], max_tokens: int):
    """Greedy generate one prompt at a time; logprobs of generated and prompt tokens."""
    import torch

    results = []
    for ids in prompts:
        input_ids = torch.tensor([ids])
        with torch.no_grad():
            out = model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=max_tokens,
                output_logits=True,
                return_dict_in_generate=True,
            )
        tokens = out.sequences[0, len(ids) :].tolist()
        logprobs = [
            torch.log_softmax(step[0].float(), -1)[tok].item() for step, tok in zip(out.logits, tokens, strict=False)
        ]
        with torch.no_grad():
            logits = model(input_ids).logits[0].float()
        prompt_lp = torch.log_softmax(logits[:-1], -1).gather(1, input_ids[0, 1:, None])[:, 0].tolist()
        results.append({"tokens": tokens, "logprobs": logprobs, "prompt_logprobs": prompt_lp})
    return results


def hf_bench(model, tokenizer, prompts: list[list[int]], new_tokens: int, pad_id: int, repeats: int):
    """Batch generate with left padding; returns tokens/s."""
    import torch

    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    kwargs = dict(attention_mask=mask, do_sample=False, pad_token_id=pad_id)
    with torch.no_grad():
        model.generate(input_ids, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
        elapsed = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = model.generate(input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
            elapsed = min(elapsed, time.perf_counter() - t0)
    generated = (out.shape[1] - width) * len(prompts)
    return generated / elapsed, elapsed


def _record_forward_widths(model) -> None:
    """Runs inside vLLM's worker: note the token count of every forward (vLLM flattens the batch to [1, tokens])."""
    model._probe_widths = []
    embeddings = model.model.get_submodule("position_embeddings")  # a plain nn.Embedding that vLLM keeps
    embeddings.register_forward_pre_hook(lambda module, args: model._probe_widths.append(int(args[0].shape[-1])))


def _widest_forward(model) -> int | None:
    # None under --compile: the compiled graph was traced before the hook existed and never calls it.
    return max(getattr(model, "_probe_widths", []), default=None)


def vllm_outputs_to_results(outputs):
    results = []
    for o in outputs:
        c = o.outputs[0]
        tokens = list(c.token_ids)
        logprobs = [lp[tok].logprob for lp, tok in zip(c.logprobs or [], tokens, strict=False)]
        prompt_lp = []
        for pos, lp in enumerate(o.prompt_logprobs or []):
            if lp is None:
                continue
            prompt_lp.append(lp[o.prompt_token_ids[pos]].logprob)
        results.append(
            {
                "tokens": tokens,
                "logprobs": logprobs,
                "prompt_logprobs": prompt_lp,
                "prompt_token_ids": list(o.prompt_token_ids),
                "cached": o.num_cached_tokens or 0,
            }
        )
    return results


def compare(name: str, ref: list[dict], got: list[dict], prompts: list[list[int]]):
    rows, max_gen, max_prompt, agree = [], 0.0, 0.0, 0
    for i, (r, g, ids) in enumerate(zip(ref, got, prompts, strict=False)):
        same = r["tokens"] == g["tokens"]
        agree += same
        n = 0
        while n < min(len(r["tokens"]), len(g["tokens"])) and r["tokens"][n] == g["tokens"][n]:
            n += 1
        gen_diff = max((abs(a - b) for a, b in zip(r["logprobs"][:n], g["logprobs"][:n], strict=False)), default=0.0)
        if n < min(len(r["logprobs"]), len(g["logprobs"])):  # the diverging step's own logprobs, for the record
            gen_diff = max(gen_diff, abs(r["logprobs"][n] - g["logprobs"][n]))
        p_diff = max(
            (abs(a - b) for a, b in zip(r["prompt_logprobs"], g["prompt_logprobs"], strict=False)), default=0.0
        )
        if g["prompt_logprobs"] and len(r["prompt_logprobs"]) != len(g["prompt_logprobs"]):
            p_diff = math.inf
        max_gen, max_prompt = max(max_gen, gen_diff), max(max_prompt, p_diff)
        rows.append(
            f"  {name}[{i}] prompt_len={len(ids):3d} new={len(r['tokens']):2d}/{len(g['tokens']):2d} "
            f"{'agree' if same else f'DIVERGE at step {n}'}  max|dlogprob| gen={gen_diff:.2e} prompt={p_diff:.2e}  "
            f"tokens {g['tokens'][:6]}..." + (f" (prefix-cache hit: {g['cached']} tokens)" if g.get("cached") else "")
        )
        if not same:
            rows.append(f"      hf:   {r['tokens']}\n      vllm: {g['tokens']}")
    return agree, max_gen, max_prompt, rows


def main() -> int:
    args = parse_args()
    folder = str(Path(args.model).resolve())
    config = json.loads(Path(folder, "config.json").read_text())
    n_positions, vocab_size = config["n_positions"], config["vocab_size"]
    if args.in_process:
        if args.tensor_parallel_size > 1:
            raise SystemExit("--in-process runs a single worker; drop it for --tensor-parallel-size > 1")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    cores = sorted(os.sched_getaffinity(0))  # the cores this process may use, which need not start at 0
    if args.tensor_parallel_size > 1:  # one core per rank
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "|".join(map(str, cores[: args.tensor_parallel_size])))
    else:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, cores[: args.threads])))
    t_start = time.perf_counter()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    mixed, long, prefix = build_prompts(tokenizer, n_positions, vocab_size, args.max_tokens, args.block_size)
    mixed_ids = [ids for _, ids in mixed]
    print(
        f"model {folder}: n_positions={n_positions} vocab_size={vocab_size} "
        f"vocab_padding_multiple={config.get('vocab_padding_multiple', 1)}"
    )
    print(
        f"prompts: mixed lengths {[len(i) for i in mixed_ids]}; long {len(long)} x {len(long[0])} tokens "
        f"= {sum(map(len, long))} total (n_positions {n_positions}); prefix lengths {[len(i) for i in prefix]}"
    )

    # ---- transformers reference ----
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    hf_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_mixed = hf_reference(model, mixed_ids, args.max_tokens)
    ref_long = hf_reference(model, long, args.max_tokens)
    ref_prefix = hf_reference(model, prefix, args.max_tokens)
    hf_reference_s = time.perf_counter() - t0
    hf_tps = None
    hf_threads = torch.get_num_threads()
    if not args.no_bench:
        bench_new = min(args.bench_tokens, n_positions - max(map(len, mixed_ids)))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        hf_tps, _hf_bench_s = hf_bench(model, tokenizer, mixed_ids, bench_new, pad_id, args.bench_repeats)
    del model

    # ---- vLLM ----
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    t0 = time.perf_counter()
    llm = LLM(
        model=folder,
        trust_remote_code=True,
        model_impl="transformers",
        dtype="float32",
        max_model_len=n_positions,
        kv_cache_memory_bytes=args.kv_cache_mb << 20,
        enforce_eager=not args.compile,
        tensor_parallel_size=args.tensor_parallel_size,
        block_size=args.block_size,
        max_num_batched_tokens=args.max_num_batched_tokens or n_positions + n_positions // 2,
        seed=0,
    )
    vllm_init_s = time.perf_counter() - t0
    vllm_threads = torch.get_num_threads() if args.in_process else None  # the worker runs in this process
    widest = None
    if args.in_process:  # the worker's model is in this process; vLLM will not ship these functions to another
        llm.apply_model(_record_forward_widths)
    sp = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, logprobs=0, prompt_logprobs=0)
    got_mixed = vllm_outputs_to_results(llm.generate([text for text, _ in mixed], sp, use_tqdm=False))
    got_long = vllm_outputs_to_results(
        llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in long], sp, use_tqdm=False)
    )
    got_prefix = vllm_outputs_to_results(  # after `long`, so long[0]'s blocks are cached
        llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prefix],
            # vLLM does not read the prefix cache for requests that want prompt logprobs
            SamplingParams(temperature=0.0, max_tokens=args.max_tokens, logprobs=0),
            use_tqdm=False,
        )
    )
    if args.in_process:
        widest = llm.apply_model(_widest_forward)[0]
    tokenization_ok = all(g["prompt_token_ids"] == ids for g, ids in zip(got_mixed, mixed_ids, strict=False))

    vllm_tps = None
    if not args.no_bench:
        bench_sp = SamplingParams(temperature=0.0, max_tokens=bench_new, ignore_eos=True)
        bench_prompts = [TokensPrompt(prompt_token_ids=ids) for ids in mixed_ids]
        llm.generate(bench_prompts, SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True), use_tqdm=False)
        vllm_bench_s = math.inf
        for _ in range(args.bench_repeats):
            t0 = time.perf_counter()
            outs = llm.generate(bench_prompts, bench_sp, use_tqdm=False)
            vllm_bench_s = min(vllm_bench_s, time.perf_counter() - t0)
        vllm_tps = sum(len(o.outputs[0].token_ids) for o in outs) / vllm_bench_s

    try:  # stop the engine-core / worker processes now rather than at interpreter exit
        llm.llm_engine.engine_core.shutdown(timeout=10)
    except Exception as error:
        print(f"note: engine shutdown raised {error!r}")
    del llm

    # ---- report ----
    a1, g1, p1, rows1 = compare("mixed", ref_mixed, got_mixed, mixed_ids)
    a2, g2, p2, rows2 = compare("long", ref_long, got_long, long)
    a3, g3, p3, rows3 = compare("prefix", ref_prefix, got_prefix, prefix)
    agree, total = a1 + a2 + a3, len(mixed_ids) + len(long) + len(prefix)
    max_gen, max_prompt = max(g1, g2, g3), max(p1, p2, p3)
    print("\n".join(rows1 + rows2 + rows3))
    summary = {
        "agreement": f"{agree}/{total}",
        "agree": agree,
        "total": total,
        "max_logprob_diff_generated": max_gen,
        "max_logprob_diff_prompt": max_prompt,
        "vllm_tokenization_matches_hf": tokenization_ok,
        "prefix_cache_hit_tokens": sum(g["cached"] for g in got_prefix),
        "widest_vllm_forward_tokens": widest,
        "hf_generate_tokens_per_s_batch8": hf_tps,
        "hf_torch_threads": hf_threads,
        "vllm_tokens_per_s_batch8": vllm_tps,
        "vllm_worker_torch_threads": vllm_threads,
        "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
        "bench_new_tokens_per_seq": None if args.no_bench else bench_new,
        "hf_reference_s": hf_reference_s,
        "hf_load_s": hf_load_s,
        "vllm_init_s": vllm_init_s,
        "vllm_mode": ("compiled" if args.compile else "eager")
        + (", in-process" if args.in_process else ", multiprocess")
        + (f", tp={args.tensor_parallel_size}" if args.tensor_parallel_size > 1 else ""),
        "load_average_1min_at_end": os.getloadavg()[0],
        "total_s": time.perf_counter() - t_start,
    }
    ok = agree == total and max(max_gen, max_prompt) <= args.tol and tokenization_ok
    summary["ok"] = ok
    print("SUMMARY " + json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    print(
        ("PASS" if ok else "FAIL") + f": {agree}/{total} prompts agree, max |dlogprob| generated "
        f"{max_gen:.2e} prompt {max_prompt:.2e} (tol {args.tol:g}); tokens/s batch 8: vLLM "
        f"{vllm_tps if vllm_tps is None else round(vllm_tps, 1)} vs generate "
        f"{hf_tps if hf_tps is None else round(hf_tps, 1)}"
    )
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
