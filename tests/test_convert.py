"""`gpt1 convert`: openai-gpt checkpoints (the published GPT-1 format) to gpt1, checked for parity."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, OpenAIGPTConfig, OpenAIGPTLMHeadModel

from gpt1 import GPT1Config, GPT1ForCausalLM, convert_openai_gpt

from .helpers import make_tokenizer, tiny_config

CORPUS = ["Hello world, the trophy did not fit.", "It was too big!", "low lower lowest newer wider"]


def write_openai_tokenizer_files(folder):
    """A tiny GPT-1-style BPE vocabulary: lower-cased characters, `</w>` word ends, a few merges."""
    characters = sorted(set("".join(CORPUS).lower()) - {" "})
    vocab = [*characters, *(c + "</w>" for c in characters)]
    merges = [("l", "o"), ("lo", "w</w>"), ("t", "h"), ("th", "e</w>"), ("e", "r</w>"), ("i", "t</w>")]
    vocab += ["".join(pair) for pair in merges]
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")
    return len(vocab)


@pytest.fixture(scope="module")
def openai_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openai-gpt")
    vocab_size = write_openai_tokenizer_files(folder)
    torch.manual_seed(0)
    config = OpenAIGPTConfig(vocab_size=vocab_size, n_positions=64, n_embd=48, n_layer=3, n_head=4)
    model = OpenAIGPTLMHeadModel(config).eval()
    model.save_pretrained(folder)
    return folder, model


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "gpt1", *args], capture_output=True, text=True, timeout=300)


def test_cli_conversion_matches_openai_gpt_logits_and_generations(openai_checkpoint, tmp_path):
    source_folder, source = openai_checkpoint
    result = run_cli("convert", str(source_folder), str(tmp_path / "gpt1"))
    assert result.returncode == 0, result.stderr
    converted = AutoModelForCausalLM.from_pretrained(tmp_path / "gpt1").eval()
    assert isinstance(converted, GPT1ForCausalLM)
    ids = torch.randint(0, source.config.vocab_size, (4, 40), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        difference = (converted(ids).logits - source(ids).logits).abs().max().item()
    assert difference <= 1e-4
    prompt = ids[:2, :6]
    ours = converted.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=0)
    theirs = source.generate(prompt, max_new_tokens=30, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)


def test_conversion_carries_the_tokenizer_over(openai_checkpoint, tmp_path):
    source_folder, _ = openai_checkpoint
    convert_openai_gpt(source_folder, tmp_path)
    source_tokenizer = AutoTokenizer.from_pretrained(source_folder)
    converted_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    for text in [*CORPUS, "LOWER THE Tower"]:
        assert converted_tokenizer(text).input_ids == source_tokenizer(text).input_ids
    assert converted_tokenizer.model_max_length == 64


def test_conversion_without_tokenizer_writes_none(tmp_path):
    torch.manual_seed(0)
    OpenAIGPTLMHeadModel(
        OpenAIGPTConfig(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    ).save_pretrained(tmp_path / "src")
    convert_openai_gpt(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst" / "tokenizer.json").exists()
    assert (tmp_path / "dst" / "model.safetensors").exists()


def test_missing_source_is_a_clear_cli_error(tmp_path):
    result = run_cli("convert", str(tmp_path / "nowhere"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "No such openai-gpt checkpoint folder" in result.stderr and str(tmp_path / "nowhere") in result.stderr
    assert "Traceback" not in result.stderr


def test_non_openai_source_is_rejected(tmp_path):
    GPT1ForCausalLM(GPT1Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type 'gpt1'.*'openai-gpt' checkpoints only"):
        convert_openai_gpt(tmp_path, tmp_path / "out")


def test_cli_rejects_unknown_subcommand():
    result = run_cli("transmogrify")
    assert result.returncode == 2
    assert "invalid choice: 'transmogrify'" in result.stderr


def write_folder_saved_before_0_2(folder):
    """A gpt1 folder as gpt1 before 0.2 saved it: the embedding matrix padded past vocab_size with rows that
    were never input and never predicted, a tokenizer and a card beside it, and checkpoints of the run."""
    torch.manual_seed(0)
    tokenizer = make_tokenizer(vocab_size=300)
    config = tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, vocab_padding_multiple=64)
    model = GPT1ForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text("# my run\n")
    (folder / "checkpoints" / "step-00000004").mkdir(parents=True)
    weights = load_file(folder / "model.safetensors")
    embeddings = weights["transformer.token_embeddings.weight"]
    padding = torch.full((config.padded_vocab_size - config.vocab_size, config.n_embd), 5.0)  # would win, if scored
    weights["transformer.token_embeddings.weight"] = torch.cat([embeddings, padding])
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return model, tokenizer


def test_a_folder_saved_before_0_2_gets_a_clear_error_and_upgrades_with_convert(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    model, tokenizer = write_folder_saved_before_0_2(old)
    old_bytes = (old / "model.safetensors").read_bytes()

    refused = run_cli("generate", "Hello", "--model", str(old), "--max-new-tokens", "3")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "saved by gpt1 before 0.2" in refused.stderr and f"gpt1 convert {old} NEW_FOLDER" in refused.stderr

    upgraded = run_cli("convert", str(old), str(new))
    assert upgraded.returncode == 0, upgraded.stderr
    assert (old / "model.safetensors").read_bytes() == old_bytes  # the original is left as it was
    assert load_file(new / "model.safetensors")["transformer.token_embeddings.weight"].shape[0] == len(tokenizer)
    assert (new / "README.md").read_text() == "# my run\n" and not (new / "checkpoints").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(new, trust_remote_code=True).eval()
    ids = tokenizer("The trophy did not fit", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
    assert AutoTokenizer.from_pretrained(new)("The trophy").input_ids == tokenizer("The trophy").input_ids
    generated = run_cli("generate", "Hello", "--model", str(new), "--max-new-tokens", "3", "--seed", "0")
    assert generated.returncode == 0, generated.stderr

    again = run_cli("convert", str(new), str(tmp_path / "again"))
    assert again.returncode == 2 and "needs no upgrade" in again.stderr
    into_itself = run_cli("convert", str(old), str(new))
    assert into_itself.returncode == 2 and "new or empty folder" in into_itself.stderr


def test_resuming_a_checkpoint_saved_before_0_2_says_why_it_cannot(tmp_path):
    from gpt1.checkpoints import check_resumable

    model, _ = write_folder_saved_before_0_2(tmp_path / "old")  # its model.safetensors has the padded rows
    with pytest.raises(ValueError, match=r"written by gpt1 before 0\.2, which kept 320 embedding rows for vocab_size"):
        check_resumable(tmp_path / "old", model)
