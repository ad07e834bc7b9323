"""Fine-tuning with `transformers.Trainer`: a model pretrained here, then tuned on data made here."""

from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
from pathlib import Path

import datasets
import pytest
import torch
from transformers import (
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    Trainer,
    TrainingArguments,
)

from gpt1 import GPT1ForCausalLM, GPT1ForSequenceClassification, TaskDataCollator, classification_inputs
from gpt1.finetune import FinetuneConfig, finetune
from gpt1.train import TrainConfig, train

from .helpers import gpt1_cli, make_tokenizer, run_without_gpt1, tiny_config

POSITIVE = ["great", "wonderful", "excellent", "lovely", "superb", "delightful"]
NEGATIVE = ["awful", "terrible", "dreadful", "horrible", "boring", "dismal"]
SUBJECTS = ["the film", "this book", "our trip", "the meal", "that song", "the show", "my day", "the game",
            "the hotel", "this class", "the concert", "her talk"]  # fmt: skip
# A schedule that a 2-layer model learns these toy tasks with in seconds (GPT-1's 6.25e-5 suits 117M).
FAST = dict(lr=2e-3, batch_size=16, epochs=6.0, warmup_ratio=0.1, logging_steps=5)


def review_rows(count: int, seed: int) -> list[dict]:
    """Short reviews whose label follows from their adjectives: learnable, with held-out combinations."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(["positive", "negative"])
        words = POSITIVE if label == "positive" else NEGATIVE
        text = f"{rng.choice(SUBJECTS)} was {rng.choice(words)} and {rng.choice(words)}."
        rows.append({"text": text, "label": label})
    return rows


def choice_rows(count: int, seed: int) -> list[dict]:
    """Three answers per question; the right one is the only positive word, at a random position."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        answers = [rng.choice(POSITIVE), *rng.sample(NEGATIVE, 2)]
        rng.shuffle(answers)
        rows.append({"context": f"How was {rng.choice(SUBJECTS)}?", "choices": answers,
                     "label": next(i for i, a in enumerate(answers) if a in POSITIVE)})  # fmt: skip
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A tiny GPT-1 pretrained here on the built-in corpus (Python's documentation)."""
    output = tmp_path_factory.mktemp("pretrained")
    config = TrainConfig(output_dir=str(output), n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=16,
                         vocab_size=512, max_steps=60, eval_every=60, save_every=1000, eval_batches=2,
                         sample_tokens=4, lr=3e-3, warmup_steps=5, dropout=0.0)  # fmt: skip
    return train(config)


@pytest.fixture(scope="module")
def classifier_run(pretrained, tmp_path_factory) -> Path:
    """`gpt1 finetune --task classification` from the CLI, on a CSV of string labels."""
    folder = tmp_path_factory.mktemp("classifier")
    data = write_csv(folder / "reviews.csv", review_rows(400, seed=1))
    output = folder / "model"
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in FAST.items()]
    result = gpt1_cli("finetune", "--model", str(pretrained), "--dataset", str(data), "--task", "classification",
                      "--output-dir", str(output), "--val-fraction", "0.2", *flags)  # fmt: skip
    (folder / "finetune.log").write_text(result.stdout + result.stderr)
    return output


def test_finetune_reports_the_kept_epoch_and_names_its_loss_without_alarming_output(classifier_run):
    log = (classifier_run.parent / "finetune.log").read_text()
    assert "missing keys" not in log and "Removed shared tensor" not in log
    results = json.loads((classifier_run / "eval_results.json").read_text())
    assert "eval_loss" not in results and results["eval_loss_with_aux_lm"] > 0  # task loss + weighted LM loss
    states = (classifier_run / "checkpoints").glob("checkpoint-*/trainer_state.json")
    state = json.loads(max(states, key=lambda path: int(path.parent.name.split("-")[1])).read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_accuracy" in entry]
    best = next(entry for entry in evaluations if entry["eval_accuracy"] == state["best_metric"])
    assert results["epoch"] == best["epoch"]
    assert results["eval_accuracy"] == pytest.approx(best["eval_accuracy"])


def test_classifier_reaches_high_accuracy_on_held_out_rows(classifier_run):
    results = json.loads((classifier_run / "eval_results.json").read_text())
    assert results["eval_accuracy"] >= 0.9, results
    config = json.loads((classifier_run / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["auto_map"]["AutoModelForSequenceClassification"] == ("modeling_gpt1.GPT1ForSequenceClassification")
    for name in ("model.safetensors", "modeling_gpt1.py", "configuration_gpt1.py", "tokenizer.json", "README.md"):
        assert (classifier_run / name).is_file(), name
    card = (classifier_run / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and f"| accuracy | {results['eval_accuracy']:.4f} |" in card


def test_classifier_loads_and_predicts_the_same_without_gpt1(classifier_run, tmp_path):
    texts = ["the film was superb and lovely.", "this class was dismal and boring.", "my day was great and awful."]
    model = AutoModelForSequenceClassification.from_pretrained(classifier_run, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(classifier_run)
    with torch.no_grad():
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    expected = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
    assert expected[:2] == ["positive", "negative"]
    outputs = run_without_gpt1(
        """
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
        folder, texts = INPUTS["folder"], INPUTS["texts"]
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        with torch.no_grad():
            logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
        OUTPUTS["labels"] = [model.config.id2label[int(i)] for i in logits.argmax(-1)]
        OUTPUTS["class"] = type(model).__module__
        classify = pipeline("text-classification", model=folder, trust_remote_code=True)
        OUTPUTS["pipeline"] = [result["label"] for result in classify(texts)]
        """,
        tmp_path,
        folder=str(classifier_run),
        texts=texts,
    )
    assert outputs["labels"] == expected
    assert outputs["pipeline"] == expected  # label names, from GPT-1's <|start|> text <|classify|> format
    assert outputs["class"].startswith("transformers_modules")


def test_tokenizer_of_a_classifier_builds_gpt1_task_format(classifier_run):
    tokenizer = AutoTokenizer.from_pretrained(classifier_run)
    start, delimiter, classify = tokenizer.convert_tokens_to_ids(["<|start|>", "<|delimiter|>", "<|classify|>"])
    single = tokenizer("the meal was great.").input_ids
    assert single == classification_inputs(tokenizer, ["the meal was great."], return_tensors=None).input_ids[0]
    pair = tokenizer("a premise", "a hypothesis").input_ids
    assert pair[0] == start and pair[-1] == classify and pair.count(delimiter) == 1


def test_multiple_choice_learns_clearly_above_chance(pretrained, tmp_path):
    data = write_jsonl(tmp_path / "questions.jsonl", choice_rows(300, seed=2))
    output = finetune(
        FinetuneConfig(
            model=str(pretrained),
            dataset=str(data),
            task="multiple-choice",
            output_dir=str(tmp_path / "model"),
            val_fraction=0.2,
            **FAST,
        )
    )
    accuracy = json.loads((output / "eval_results.json").read_text())["eval_accuracy"]
    assert accuracy >= 0.7, f"accuracy {accuracy} on 3 choices (chance 0.33)"
    model = AutoModelForMultipleChoice.from_pretrained(output, trust_remote_code=True)
    assert type(model).__name__ == "GPT1ForMultipleChoice"


def test_causal_lm_finetuning_lowers_the_loss_on_new_text(pretrained, tmp_path):
    data = tmp_path / "reviews.txt"
    data.write_text("".join(f"{row['text']}\n" for row in review_rows(300, seed=3)))
    output = finetune(
        FinetuneConfig(
            model=str(pretrained),
            dataset=str(data),
            task="causal-lm",
            output_dir=str(tmp_path / "lm"),
            lr=2e-3,
            batch_size=8,
            epochs=2.0,
            max_length=32,
        )
    )
    results = json.loads((output / "eval_results.json").read_text())
    assert results["eval_perplexity"] == pytest.approx(math.exp(results["eval_loss"]), rel=1e-5)

    unseen = "".join(f"{row['text']}\n" for row in review_rows(20, seed=99))
    tokenizer = AutoTokenizer.from_pretrained(output)
    ids = tokenizer(unseen, return_tensors="pt").input_ids[:, :256]

    def loss_of(folder: Path) -> float:
        model = GPT1ForCausalLM.from_pretrained(folder).eval()
        with torch.no_grad():
            return model(ids[:, : model.config.n_positions], labels=ids[:, : model.config.n_positions]).loss.item()

    before, after = loss_of(pretrained), loss_of(output)
    assert after < before - 1.0, (before, after)  # it learnt the new text's vocabulary and pattern


def test_lora_adapters_are_merged_into_a_plain_model(pretrained, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", review_rows(300, seed=4))
    output = finetune(
        FinetuneConfig(
            model=str(pretrained),
            dataset=str(data),
            output_dir=str(tmp_path / "lora"),
            lora=True,
            lora_rank=4,
            val_fraction=0.2,
            **{**FAST, "lr": 5e-3},
        )
    )
    base = GPT1ForCausalLM.from_pretrained(pretrained)
    tuned = AutoModelForSequenceClassification.from_pretrained(output, trust_remote_code=True)
    tuned_state = tuned.state_dict()
    assert not any("lora" in key for key in tuned_state)
    qkv = "transformer.blocks.0.attn.qkv_proj.weight"
    assert not torch.equal(tuned_state[qkv], base.state_dict()[qkv])  # the adapters were merged in
    embeddings = "transformer.token_embeddings.weight"
    torch.testing.assert_close(tuned_state[embeddings], base.state_dict()[embeddings])  # untouched by LoRA
    assert json.loads((output / "eval_results.json").read_text())["eval_accuracy"] >= 0.9


def _one_trainer_step(model, dataset, collator, batch_size: int, accumulation: int, tmp_path: Path) -> dict:
    arguments = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch_size}x{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=dataset, data_collator=collator)
    trainer.train()
    return next(record for record in trainer.state.log_history if "loss" in record)


@pytest.mark.parametrize("head", ["causal-lm", "classification"])
def test_gradient_accumulation_matches_one_big_batch(head, tmp_path):
    """Batch 8 and batch 2 × 4 accumulation: the same loss and gradient norm, with rows of different
    lengths (the `num_items_in_batch` pitfall for token losses, and per-example means for the heads)."""
    tokenizer = make_tokenizer()
    texts = [" ".join(["the trophy did not fit"] * (1 + i % 4)) + f" case {i}" for i in range(8)]
    if head == "causal-lm":
        encoded = tokenizer(texts)
        rows = [{"input_ids": ids, "labels": ids} for ids in encoded["input_ids"]]

        def collator(features):
            width = max(len(feature["input_ids"]) for feature in features)

            def padded(key, value):
                return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])

            mask = [{"mask": [1] * len(f["input_ids"])} for f in features]
            width_mask = torch.tensor([m["mask"] + [0] * (width - len(m["mask"])) for m in mask])
            return {"input_ids": padded("input_ids", 0), "attention_mask": width_mask, "labels": padded("labels", -100)}

        make_model = GPT1ForCausalLM
    else:
        encoded = classification_inputs(tokenizer, texts, [i % 2 for i in range(8)], return_tensors=None)
        rows = [dict(zip(encoded, values, strict=True)) for values in zip(*encoded.values(), strict=True)]
        collator = TaskDataCollator(tokenizer)
        make_model = GPT1ForSequenceClassification
    config = tiny_config(vocab_size=len(tokenizer), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         classifier_dropout=0.0, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    results = []
    for batch_size, accumulation in ((8, 1), (2, 4)):
        torch.manual_seed(0)
        results.append(_one_trainer_step(make_model(config), rows, collator, batch_size, accumulation, tmp_path))
    whole, accumulated = results
    assert accumulated["loss"] == pytest.approx(whole["loss"], rel=1e-4)
    assert accumulated["grad_norm"] == pytest.approx(whole["grad_norm"], rel=1e-4)


def test_bad_input_gets_a_clear_error_before_training(pretrained, tmp_path):
    reviews = write_csv(tmp_path / "reviews.csv", review_rows(20, seed=5))

    def error_of(**options):
        options = {"model": str(pretrained), "dataset": str(reviews), "output_dir": str(tmp_path / "out"), **options}
        with pytest.raises((ValueError, FileNotFoundError)) as caught:
            finetune(FinetuneConfig(**options))
        return str(caught.value)

    assert "'sentiment'" in error_of(label_column="sentiment") and "--label-column" in error_of(label_column="x")
    assert "'review'" in error_of(text_column="review")

    split = tmp_path / "split"
    split.mkdir()
    write_csv(split / "train.csv", review_rows(20, seed=6))
    write_csv(split / "validation.csv", [{"text": "it was fine.", "label": "neutral"}])
    message = error_of(dataset=str(split))
    assert "'neutral'" in message and "label set" in message

    uneven = [
        {"context": "q", "choices": ["a", "b", "c"], "label": 0},
        {"context": "q", "choices": ["a", "b"], "label": 1},
    ]
    message = error_of(dataset=str(write_jsonl(tmp_path / "uneven.jsonl", uneven * 3)), task="multiple-choice")
    assert "different numbers of choices" in message and "[2, 3]" in message
    wrong_label = [{"context": "q", "choices": ["a", "b"], "label": 2}] * 4
    message = error_of(dataset=str(write_jsonl(tmp_path / "label.jsonl", wrong_label)), task="multiple-choice")
    assert "label[0] = 2 is not a choice index" in message

    gpt2 = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(gpt2)
    assert "'gpt2' checkpoint, not gpt1" in error_of(model=str(gpt2))
    assert "No such model folder" in error_of(model=str(tmp_path / "nowhere"))  # a path that is not there
    assert "No such file" in error_of(dataset=str(tmp_path / "missing.csv"))
    assert "Unknown --task" in error_of(task="summarization")


def test_cli_reports_bad_input_in_one_line(pretrained, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", review_rows(20, seed=7))
    result = gpt1_cli("finetune", "--model", str(pretrained), "--dataset", str(data), "--label-column", "stars",
                      "--output-dir", str(tmp_path / "out"), check=False)  # fmt: skip
    assert result.returncode == 2
    assert "no column 'stars'" in result.stderr and "Traceback" not in result.stderr


def test_class_label_columns_keep_their_names(pretrained, tmp_path):
    """Hub datasets store labels as `datasets.ClassLabel` ids; their names become id2label."""
    rows = review_rows(40, seed=8)
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["bad", "good"])}
    )
    table = datasets.Dataset.from_dict(
        {"text": [row["text"] for row in rows], "label": [int(row["label"] == "positive") for row in rows]},
        features=features,
    )
    table.to_parquet(tmp_path / "reviews.parquet")
    output = finetune(
        FinetuneConfig(
            model=str(pretrained),
            dataset=str(tmp_path / "reviews.parquet"),
            output_dir=str(tmp_path / "m"),
            max_steps=2,
            batch_size=8,
        )
    )
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "bad", "1": "good"}


def test_the_default_recipe_follows_the_model_size():
    from gpt1 import GPT1Config
    from gpt1.finetune import RECIPES, recipe_for

    assert recipe_for(GPT1Config()) == RECIPES["paper-size"] == ("GPT-1's recipe", 6.25e-5, 3.0)
    for sizes in (dict(n_layer=4, n_embd=128, n_head=4), dict(n_layer=6, n_embd=384, n_head=6)):  # tiny, small
        assert recipe_for(GPT1Config(**sizes)) == RECIPES["smaller"]


def test_finetune_without_lr_or_epochs_says_which_recipe_it_uses(pretrained, tmp_path):
    data = write_csv(tmp_path / "reviews.csv", review_rows(40, seed=5))
    result = gpt1_cli("finetune", "--model", str(pretrained), "--dataset", str(data), "--output-dir",
                      str(tmp_path / "model"), "--val-fraction", "0.25")  # fmt: skip
    expected = "Fine-tuning a 2 layers × 64 wide model with the small-model recipe: --lr 0.0003 --epochs 10"
    assert expected in result.stdout
    recorded = json.loads((tmp_path / "model" / "finetune_config.json").read_text())
    assert (recorded["lr"], recorded["epochs"]) == (3e-4, 10.0)


def test_a_signal_stops_finetuning_with_a_checkpoint_and_resuming_finishes_it(pretrained, tmp_path, monkeypatch):
    """SIGTERM at step 7 (sent for real, as a scheduler would): the Trainer saves checkpoint-7 and stops, the CLI's
    TrainingStopped names it; --resume continues from it to the weights of a run never stopped."""
    from safetensors.torch import load_file

    import gpt1.finetune as finetuning
    from gpt1.run_lock import RUN_LOCK
    from gpt1.stopping import TrainingStopped

    data = tmp_path / "reviews.txt"
    data.write_text("".join(f"{row['text']}\n" for row in review_rows(120, seed=3)))
    options = dict(model=str(pretrained), dataset=str(data), task="causal-lm", lr=2e-3, batch_size=8, epochs=1.0,
                   max_length=32)  # fmt: skip
    whole = finetune(FinetuneConfig(output_dir=str(tmp_path / "whole"), **options))

    step_end = finetuning.StopOnSignal.on_step_end

    def signalled(self, args, state, control, **kwargs):
        if state.global_step == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return step_end(self, args, state, control, **kwargs)

    monkeypatch.setattr(finetuning.StopOnSignal, "on_step_end", signalled)
    stopped = tmp_path / "stopped"
    with pytest.raises(TrainingStopped, match=r"Stopped by SIGTERM after step 7 of \d+\. The checkpoint is .*-7\b"):
        finetune(FinetuneConfig(output_dir=str(stopped), **options))
    assert (stopped / "checkpoints" / "checkpoint-7" / "trainer_state.json").is_file()
    assert not (stopped / "model.safetensors").exists() and not (stopped / RUN_LOCK).exists()

    monkeypatch.undo()
    finetune(FinetuneConfig(output_dir=str(stopped), resume=True, **options))
    expected, got = load_file(whole / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
