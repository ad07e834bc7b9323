"""The benchmark command runs end to end in its quick mode (a tiny model): it works, and its report is whole.

No timing is asserted: speed is what the benchmark prints, not what a test on a shared machine checks.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
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

    assert {"platform", "processor", "torch", "transformers", "cpus_usable", "device"} <= set(report["machine"])
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

    checkpointing = quick["checkpointing"]
    assert 0 < checkpointing["checkpointed"]["activation_mib"] < checkpointing["plain"]["activation_mib"]

    time_to_loss = report["time_to_loss"]
    for run in ("gpt1", "nanogpt_recipe_reference"):
        assert math.isfinite(time_to_loss[run]["val_loss"]) and time_to_loss[run]["wall_seconds"] > 0

    assert report["gpu"] == {"skipped": "no CUDA device"} or report["gpu"]["eager"]["tokens_per_s"] > 0
    assert report["targets"] is None  # the quick mode judges nothing
    assert "train tok/s" in result.stderr and "gradient checkpointing" in result.stderr
