"""Sharing on the Hub, offline: a test double records each commit into the HF cache layout, and a fresh
process without gpt1 loads the pushed model by repo id (and revision) with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers.utils.hub
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

from gpt1 import GPT1ForCausalLM, cli
from gpt1.hub import push_folder
from gpt1.model.configuration_gpt1 import GPT1_AUTO_MAP
from gpt1.train import TrainConfig, train

from .hub_double import RecordingHub

FAKE_TOKEN = "hf_FakeTokenThatMustNeverBeWrittenAnywhere0123"
PROBE = [[5, 6, 7, 8]]
TRAINED_FILES = ["README.md", "config.json", "configuration_gpt1.py", "generation_config.json", "loss_curve.png",
                 "model.safetensors", "modeling_gpt1.py", "tokenizer.json", "tokenizer_config.json"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run on the built-in corpus, with checkpoints and metrics that must stay at home."""
    output = tmp_path_factory.mktemp("run")
    config = TrainConfig(output_dir=str(output), n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8,
                         vocab_size=300, max_steps=20, eval_every=10, save_every=10, eval_batches=2,
                         sample_tokens=4, lr=3e-3, warmup_steps=2)  # fmt: skip
    train(config)
    (output / "__pycache__").mkdir()
    (output / "__pycache__" / "modeling_gpt1.cpython-311.pyc").write_bytes(b"\0")
    (output / "stray.pyc").write_bytes(b"\0")
    return output


@pytest.fixture
def hub(tmp_path, monkeypatch) -> RecordingHub:
    """The double stands in for the Hub everywhere: gpt1's pushes, transformers' and Trainer's."""
    double = RecordingHub(cache=tmp_path / "hub-cache")
    monkeypatch.setattr("gpt1.hub.HfApi", lambda: double)
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", double)
    monkeypatch.setattr(transformers.utils.hub.ModelCard, "load", double.load_card)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    return double


def logits_of(folder: Path) -> list:
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        return model(torch.tensor(PROBE)).logits.tolist()


def load_by_repo_id(hub: RecordingHub, tmp_path: Path, requests: list[dict]) -> list[dict]:
    """In a fresh process without gpt1, offline: load each {"repo", "revision"} by repo id through the
    Auto classes and pipeline(), and return its logits on PROBE and its config's auto_map."""
    script = textwrap.dedent(
        """
        import json, sys, torch
        sys.modules["gpt1"] = None
        PROBE = json.loads(sys.argv[2])
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline
        results = []
        for request in json.loads(sys.argv[1]):
            repo, revision = request["repo"], request.get("revision")
            config = AutoConfig.from_pretrained(repo, revision=revision, trust_remote_code=True)
            model = AutoModelForCausalLM.from_pretrained(repo, revision=revision, trust_remote_code=True).eval()
            tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)
            generator = pipeline("text-generation", model=repo, revision=revision, trust_remote_code=True)
            text = generator("The ", max_new_tokens=3, do_sample=False)[0]["generated_text"]
            with torch.no_grad():
                logits = model(torch.tensor(PROBE)).logits.tolist()
            results.append({"logits": logits, "auto_map": config.auto_map, "model_type": config.model_type,
                            "module": type(model).__module__, "vocab": len(tokenizer), "text": text})
        with open(sys.argv[3], "w") as file:
            json.dump(results, file)
        """
    )
    env = {**os.environ, "HF_HUB_CACHE": str(hub.cache), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "modules"), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    env.pop("HF_TOKEN", None)
    arguments = [json.dumps(requests), json.dumps(PROBE), str(tmp_path / "loaded.json")]
    result = subprocess.run(
        [sys.executable, "-c", script, *arguments], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "loaded.json").read_text())


def test_gpt1_push_uploads_exactly_the_shareable_files_and_never_the_token(trained, hub, tmp_path, capsys):
    assert (trained / "checkpoints").is_dir() and (trained / "metrics.jsonl").is_file()
    assert cli.main(["push", str(trained), "someone/gpt1-tiny", "--private", "--commit-message", "First model"]) == 0
    printed = capsys.readouterr()
    assert "someone/gpt1-tiny" in printed.out
    [commit] = hub.commits
    assert commit["files"] == TRAINED_FILES  # no checkpoints, optimizer states, metrics, caches or .pyc
    assert commit["message"] == "First model" and hub.repos["someone/gpt1-tiny"] is True
    # The token was in the environment for the whole push; it is in no file, snapshot or output.
    for root in (trained, hub.cache):
        for file in (path for path in root.rglob("*") if path.is_file()):
            assert FAKE_TOKEN.encode() not in file.read_bytes(), file
    assert FAKE_TOKEN not in printed.out + printed.err


def test_pushed_files_hold_no_path_of_this_machine_and_the_card_loads_the_repo(trained, hub, tmp_path):
    corpus = tmp_path / "my corpus.txt"  # a local dataset, named by an absolute path
    corpus.write_text("To be, or not to be, that is the question.\n" * 400)
    run = tmp_path / "absolute-run"
    sizes = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_batches=1, sample_tokens=2)
    train(TrainConfig(output_dir=str(run), dataset=str(corpus), tokenizer="char", max_steps=4, eval_every=4, **sizes))
    push_folder(run, "someone/gpt1-shakespeare")
    snapshot = next(hub.cache.glob("models--someone--gpt1-shakespeare/snapshots/*"))
    for file in (path for path in snapshot.rglob("*") if path.is_file()):
        text = file.read_bytes().decode("utf-8", errors="ignore")
        for private in (str(tmp_path), str(Path.home()), os.getcwd()):
            assert private not in text, (file.name, private)
    card = (snapshot / "README.md").read_text()
    assert 'model_id = "someone/gpt1-shakespeare"' in card and "my corpus.txt" in card
    assert 'model_id = "absolute-run"' in (run / "README.md").read_text()  # the local card, before the push


def test_model_card_metadata_parses_and_reports_the_run(trained):
    card = ModelCard.load(trained / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert {"gpt1", "custom_code"} <= set(data.tags) and data.license == "apache-2.0"
    last = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()][-1]
    results = {result.metric_type: result.metric_value for result in data.eval_results}
    assert results["loss"] == pytest.approx(last["val_loss"], abs=1e-4)
    assert results["perplexity"] == pytest.approx(last["val_perplexity"], rel=1e-4)
    assert data.eval_results[0].dataset_split == "validation"
    for heading in ("| layers × width × heads | 2 × 32 × 2 |", "## Training", "## Usage", "## Limitations"):
        assert heading in card.text
    assert "trust_remote_code=True" in card.text and 'code_revision="COMMIT_SHA"' in card.text


def test_a_newer_push_and_revision_select_either_commit(trained, hub, tmp_path):
    first_url = push_folder(trained, "someone/gpt1-tiny", commit_message="step 20")
    # A newer checkpoint of the same model, pushed in shards with its index.
    newer = tmp_path / "newer"
    model = GPT1ForCausalLM.from_pretrained(trained)
    with torch.no_grad():
        model.transformer.blocks[0].mlp.up_proj.weight.mul_(1.5)
    model.save_pretrained(newer)
    AutoTokenizer.from_pretrained(trained).save_pretrained(newer)
    second_url = push_folder(newer, "someone/gpt1-tiny", commit_message="newer", max_shard_size="100KB")
    first, second = (url.rsplit("/", 1)[-1] for url in (first_url, second_url))
    shards = [name for name in hub.commits[1]["files"] if name.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in hub.commits[1]["files"]
    assert all(name.startswith("model-0000") for name in shards)
    assert hub.commits[1]["deleted"] == ["model.safetensors"]  # else it would shadow the new shards

    loaded = load_by_repo_id(hub, tmp_path, [
        {"repo": "someone/gpt1-tiny", "revision": first},
        {"repo": "someone/gpt1-tiny", "revision": second},
        {"repo": "someone/gpt1-tiny"},
    ])  # fmt: skip
    expected_first, expected_second = logits_of(trained), logits_of(newer)
    assert expected_first != expected_second
    for result, expected in zip(loaded, [expected_first, expected_second, expected_second], strict=True):
        torch.testing.assert_close(torch.tensor(result["logits"]), torch.tensor(expected), atol=1e-5, rtol=1e-5)
        assert result["module"].startswith("transformers_modules") and result["model_type"] == "gpt1"
        assert set(result["auto_map"]) == set(GPT1_AUTO_MAP)  # every head loads by repo id
        assert result["text"].startswith("The ")


def test_transformers_push_to_hub_shares_code_and_loads_by_repo_id(trained, hub, tmp_path):
    model = GPT1ForCausalLM.from_pretrained(trained)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    model.push_to_hub("someone/pushed-model")
    tokenizer.push_to_hub("someone/pushed-model")
    model_files, tokenizer_files = hub.commits[0]["files"], hub.commits[1]["files"]
    assert {"config.json", "model.safetensors", "configuration_gpt1.py", "modeling_gpt1.py"} <= set(model_files)
    assert "tokenizer.json" in tokenizer_files

    arguments = TrainingArguments(str(tmp_path / "trainer"), hub_model_id="someone/trainer-pushed", report_to="none",
                                  use_cpu=True, save_strategy="no")  # fmt: skip
    Trainer(model=model, args=arguments, processing_class=tokenizer).push_to_hub(commit_message="From Trainer")
    trainer_commit = hub.commits[-1]
    assert trainer_commit["repo_id"] == "someone/trainer-pushed" and trainer_commit["message"] == "From Trainer"
    assert {"model.safetensors", "modeling_gpt1.py", "tokenizer.json"} <= set(trainer_commit["files"])

    loaded = load_by_repo_id(hub, tmp_path, [{"repo": "someone/pushed-model"}, {"repo": "someone/trainer-pushed"}])
    for result in loaded:
        torch.testing.assert_close(
            torch.tensor(result["logits"]), torch.tensor(logits_of(trained)), atol=1e-5, rtol=1e-5
        )
        assert result["vocab"] == len(tokenizer)


def test_push_without_login_says_how_to_log_in(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setattr("gpt1.hub.get_token", lambda: None)
    with pytest.raises(ValueError, match="Not logged in.*hf auth login.*HF_TOKEN"):
        push_folder(trained, "someone/gpt1-tiny")
    assert cli.main(["push", str(tmp_path / "no-model"), "someone/x"]) == 2
