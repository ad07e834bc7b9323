"""The benchmark command runs end to end in its quick mode (a tiny model): it works, and its report is whole.

No timing is asserted: speed is what the benchmark prints, not what a test on a shared machine checks.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
BENCH = BENCHMARKS / "bench.py"
MODELS = ("gpt1", "openai-gpt", "gpt2")


def test_quick_benchmark_runs_every_section_and_reports_whole_figures(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert json.loads(result.stdout) == report

    assert {"platform", "processor", "torch", "transformers", "cpus_usable", "device", "date"} <= set(report["machine"])

    startup = report["startup"]
    assert set(startup["commands"]) >= {"gpt1 --help", "import gpt1", "import gpt1; gpt1.GPT1ForCausalLM"}
    assert all(run["seconds_median"] > 0 for run in startup["commands"].values())
    assert set(startup["heavy_modules_loaded"]) == {"import gpt1", "import gpt1; gpt1.GPT1ForCausalLM"}
    # the model cannot be built without torch: the child's own list of modules is what is reported
    assert "torch" in startup["heavy_modules_loaded"]["import gpt1; gpt1.GPT1ForCausalLM"]
    assert report["memory_bandwidth"]["gb_per_s"] > 0
    quick = report["presets"]["quick"]
    training = quick["training"]
    for name in MODELS:
        figures = training["models"][name]
        assert figures["tokens_per_s_median"] > 0 and figures["peak_mib"] > figures["resident_mib"] > 0
        assert math.isfinite(figures["initial_loss"])
    # ours and openai-gpt start from the same weights, so they start from the same loss
    assert math.isclose(
        training["models"]["gpt1"]["initial_loss"], training["models"]["openai-gpt"]["initial_loss"], rel_tol=1e-4
    )
    assert all(ratio > 0 for ratio in training["ratios"].values())

    assert [generation["batch_size"] for generation in quick["generation"]] == [1, 8]
    for generation in quick["generation"]:
        assert all(generation["models"][name]["tokens_per_s_best"] > 0 for name in MODELS)
        assert generation["greedy_tokens_compared"] == generation["batch_size"] * generation["new_tokens"]
        for name in MODELS:
            figures = generation["models"][name]
            assert figures["bound_tokens_per_s"] > 0 and figures["bytes_per_step"] > figures["kv_cache_bytes_per_step"]
            assert math.isclose(
                figures["fraction_of_bound"], figures["tokens_per_s_best"] / figures["bound_tokens_per_s"]
            )

    checkpointing = quick["checkpointing"]
    assert 0 < checkpointing["checkpointed"]["activation_mib"] < checkpointing["plain"]["activation_mib"]

    time_to_loss = report["time_to_loss"]
    for run in ("gpt1", "nanogpt_recipe_reference"):
        assert math.isfinite(time_to_loss[run]["val_loss"]) and time_to_loss[run]["wall_seconds"] > 0
        assert time_to_loss[run]["max_rss_mib"] > 0 and len(time_to_loss[run]["wall_seconds_samples"]) == 1
    assert time_to_loss["gpt1_recipe"]["flags"] == time_to_loss["gpt1"]["extra_flags"]
    assert time_to_loss["wall_time_ratio_gpt1_over_reference"] > 0
    assert "skipped" in time_to_loss["nanogpt"]  # no --nanogpt given

    assert report["gpu"] == {"skipped": "no CUDA device"} or report["gpu"]["eager"]["tokens_per_s"] > 0
    assert report["targets"] is None  # the quick mode judges nothing
    assert "train tok/s" in result.stderr and "gradient checkpointing" in result.stderr
    assert "machine:" in result.stderr and "startup (median of 1)" in result.stderr and "of bound" in result.stderr


def bench_time_to_loss():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_time_to_loss
    finally:
        sys.path.remove(str(BENCHMARKS))
    return bench_time_to_loss


def test_a_child_s_peak_memory_is_its_own_not_the_parent_s():
    """Linux counts what a process held before exec in its ru_maxrss: the timer keeps this process's out."""
    ballast = b"x" * (256 * 2**20)  # written, so resident here
    finished = bench_time_to_loss().run_child([sys.executable, "-c", "print('hello')"])
    assert finished["stdout"] == "hello\n" and finished["wall_seconds"] > 0
    assert 0 < finished["max_rss_mib"] < 128 < len(ballast) / 2**20


def test_nanogpt_data_and_log_lines_are_read_as_nanogpt_writes_them(tmp_path):
    module = bench_time_to_loss()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefghij" * 10, encoding="utf-8")
    assert module.prepare_nanogpt_data(corpus, tmp_path) == {"vocab_size": 10, "train_tokens": 90, "val_tokens": 10}
    folder = tmp_path / "data" / "shakespeare_char"
    assert (folder / "train.bin").stat().st_size == 2 * 90 and (folder / "val.bin").stat().st_size == 2 * 10
    log = "iter 9: loss 3.1, time 5.00ms\nstep 10: train loss 3.0598, val loss 3.0889\n"
    assert module.NANOGPT_STEP_LINE.findall(log) == [("10", "3.0598", "3.0889")]
    command = module.nanogpt_command(Path("/nanoGPT"), steps=2000)
    assert "--max_iters=2000" in command and "--eval_interval=250" in command and "--eval_iters=20" in command
    assert "--eval_interval=5" in module.nanogpt_command(Path("/nanoGPT"), steps=10, eval_every=5)
