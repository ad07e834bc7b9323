"""`gpt1 eval`: score a model with lm-evaluation-harness (its `hf` backend), on its own tasks or on task
files of yours, and keep the scores: as JSON, and in the model card's `model-index` when asked.

The model and tokenizer are opened by `gpt1.model_folders` (safetensors only, no code from the folder)
and handed to lm-eval's `HFLM` as objects, so lm-eval scores exactly what `gpt1 generate` runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from .model_folders import load_model, load_tokenizer
from .reporting import add_scores_to_card
from .tokenization import pair_tokenizer_with_model

INSTALL_HINT = (
    "gpt1 eval needs lm-evaluation-harness: `python3 scripts/install.py --extras eval`, or pip install lm-eval."
)


def score(
    model_path: str,
    tasks: list[str],
    *,
    include_path: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    output: str | None = None,
    card: bool = False,
    revision: str | None = None,
) -> dict[str, dict[str, float]]:
    """Score `model_path` on lm-eval `tasks`; returns {task: {metric: value}} and writes the whole
    lm-eval result to `output` (default: lm_eval_results.json in a local model folder, else here).
    With `card`, the scores also go into the folder's README.md (model-index and a table)."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    if not tasks:
        raise ValueError("--tasks is empty: name lm-eval tasks, or tasks defined by the YAML files in --include-path.")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}.")
    is_folder = os.path.isdir(model_path)
    if card and not is_folder:
        raise ValueError(f"--card writes into the model folder's README.md, and {model_path!r} is no local folder.")
    if include_path is not None and not os.path.isdir(include_path):
        raise FileNotFoundError(f"No such --include-path folder of task YAML files: {include_path!r}.")

    task_manager = TaskManager(include_path=os.path.abspath(include_path) if include_path else None)
    unknown = [task for task in tasks if not task_manager.match_tasks([task])]
    if unknown:
        where = f"lm-eval's registry or {include_path!r}" if include_path else "lm-eval's registry (no --include-path)"
        raise ValueError(f"Unknown task(s) {unknown}: not in {where}. A task YAML names itself with `task: NAME`.")

    tokenizer: Any = load_tokenizer(model_path, revision=revision)
    model: Any = load_model(AutoModelForCausalLM, model_path, revision=revision)
    pair_tokenizer_with_model(tokenizer, model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    harness_model = HFLM(pretrained=model.eval().to(device), tokenizer=tokenizer, batch_size=batch_size, device=device)
    with _working_directory(include_path):  # data files in the task YAMLs are found next to them
        results = simple_evaluate(model=harness_model, tasks=tasks, task_manager=task_manager, limit=limit)
    if results is None:  # lm-eval returns None on processes other than the main one
        return {}

    scores = _scores(results["results"])
    target = Path(output) if output else (Path(model_path) if is_folder else Path.cwd()) / "lm_eval_results.json"
    target.write_text(json.dumps({"scores": scores, "lm_eval": results}, indent=2, default=str) + "\n")
    if card:
        add_scores_to_card(Path(model_path), scores, source="lm-evaluation-harness")
    return scores


def _scores(task_results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """lm-eval's `{"acc,none": 0.4, "acc_stderr,none": ..., "exact_match,strict-match": 0.1, "sample_len": 6}`
    per task, as `{"acc": 0.4, "exact_match (strict-match)": 0.1}`: every metric under every filter (named
    when it is not the default one), without standard errors or counts."""
    scores: dict[str, dict[str, float]] = {}
    for task, metrics in task_results.items():
        for key, value in metrics.items():
            name, _, filter_name = key.partition(",")
            if not filter_name or name.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            label = name if filter_name == "none" else f"{name} ({filter_name})"
            scores.setdefault(task, {})[label] = float(value)
    return scores


@contextmanager
def _working_directory(path: str | None) -> Iterator[None]:
    if path is None:
        yield
        return
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)
