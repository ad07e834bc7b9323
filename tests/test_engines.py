"""The engines people plug a causal LM into, used for real on tiny gpt1 models: PEFT, TRL and lm-eval.

(vLLM needs its own virtualenv with its own transformers pin: `scripts/check_vllm.py`.)
"""

from __future__ import annotations

import json
import math
import random
import textwrap

import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model

from gpt1 import LORA_TARGET_MODULES, GPT1ForCausalLM
from gpt1.reporting import write_model_card

from .helpers import gpt1_cli, make_tokenizer, tiny_config


def adapted_modules(peft_model) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}


@pytest.mark.parametrize("targets", ["documented list", "all-linear"])
def test_lora_trains_and_merges_with_the_documented_targets(targets, tmp_path):
    torch.manual_seed(0)
    config = tiny_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT1ForCausalLM(config)
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=4,
        lora_alpha=8,
        target_modules=LORA_TARGET_MODULES if targets == "documented list" else "all-linear",
    )
    peft_model = get_peft_model(model, lora)
    assert adapted_modules(peft_model) == set(LORA_TARGET_MODULES)  # all-linear leaves the tied head alone
    trainable = [parameter for parameter in peft_model.parameters() if parameter.requires_grad]
    assert trainable and all(parameter.numel() < config.n_embd * config.n_embd * 3 for parameter in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=3e-2)
    ids = (torch.arange(16) % 8 + 1).repeat(4, 1)  # a pattern to learn
    losses = []
    for _ in range(40):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.9, losses

    peft_model.eval()
    with torch.no_grad():
        adapted_logits = peft_model(input_ids=ids).logits
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    reloaded = GPT1ForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, adapted_logits, atol=1e-5, rtol=1e-4)


def test_peft_has_no_default_targets_for_gpt1():
    """PEFT picks default targets from a table of the model types it ships, with no supported way to add
    one: the README says to pass LORA_TARGET_MODULES. If this starts passing, PEFT grew a way; use it."""
    with pytest.raises(ValueError, match="target_modules"):
        get_peft_model(GPT1ForCausalLM(tiny_config()), LoraConfig(task_type="CAUSAL_LM", r=4))


def sentences(count: int, seed: int = 0) -> list[str]:
    """Short templated sentences: a corpus a tiny model learns something of in a few steps."""
    rng = random.Random(seed)
    subjects = ["The list", "A dict", "The function", "This module", "The loop", "Python"]
    verbs = ["returns", "raises", "holds", "prints", "calls", "sorts"]
    objects = ["a value", "the keys", "an error", "the items", "the file", "each line"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." for _ in range(count)]


@pytest.mark.parametrize("packing", [False, True], ids=["padded batches", "packed, padding-free"])
def test_trl_sft_trains_gpt1_with_gpt1s_own_loss(packing, tmp_path):
    """TRL's SFTTrainer computes its loss itself, from the backbone's states and `lm_head.weight` read
    directly; with packing (TRL's default "bfd" strategy) it flattens the batch into one row longer than
    the context, positions restarting per sequence. Both must give gpt1's own loss, and train."""
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    config = tiny_config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        vocab_padding_multiple=64,  # as `gpt1 train` builds its models: TRL must not see padding rows
        resid_pdrop=0.0,  # dropout off: the same loss in training mode too
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    assert config.padded_vocab_size > config.vocab_size
    model = GPT1ForCausalLM(config)
    arguments = SFTConfig(
        output_dir=str(tmp_path / "sft"),
        max_length=config.n_positions,
        packing=packing,
        max_steps=20,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,  # SFTConfig's default is bf16 autocast, even on a CPU: compare in float32
        seed=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=arguments,
        train_dataset=Dataset.from_dict({"text": sentences(160)}),
        processing_class=tokenizer,
    )
    batch = trainer.data_collator([trainer.train_dataset[index] for index in range(8)])
    if packing:
        assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch and "attention_mask" not in batch
    own_inputs = {key: batch[key] for key in ("input_ids", "labels", "attention_mask", "position_ids") if key in batch}
    for training in (False, True):  # gpt1's plain loss in eval mode, its chunked one (padded inside) in training
        model.train(training)
        with torch.no_grad():
            trl_loss = trainer.compute_loss(model, dict(batch))
            own = model(**own_inputs)
        assert (own.logits is None) == training
        torch.testing.assert_close(trl_loss, own.loss, atol=1e-5, rtol=1e-5)

    model.train()
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.8, losses

    trainer.save_model(str(tmp_path / "tuned"))
    reloaded = GPT1ForCausalLM.from_pretrained(tmp_path / "tuned").eval()
    ids = tokenizer("The list returns", return_tensors="pt").input_ids
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)


QUIZ = [
    ("Which keyword defines a function?", ["def", "class", "import"], 0),
    ("Which built-in gives a list's length?", ["size", "len", "count"], 1),
    ("What does a dict map keys to?", ["values", "files", "loops"], 0),
    ("Which statement leaves a loop?", ["pass", "continue", "break"], 2),
    ("Which type holds text?", ["str", "int", "float"], 0),
    ("What raises an error on purpose?", ["yield", "raise", "return"], 1),
]
LINES = ["The list returns a value.", "A dict holds the keys.", "The function prints each line.", "Python sorts."]


def write_tasks(folder):
    """A multiple-choice task and a perplexity task in lm-eval's YAML format, over data files beside them."""
    folder.mkdir()
    with open(folder / "quiz.jsonl", "w") as rows:
        for question, choices, answer in QUIZ:
            rows.write(json.dumps({"question": question, "choices": choices, "answer": answer}) + "\n")
    (folder / "lines.txt").write_text("\n".join(LINES) + "\n")
    (folder / "quiz.yaml").write_text(
        textwrap.dedent(
            """
            task: quiz
            dataset_path: json
            dataset_kwargs: {data_files: {test: quiz.jsonl}}
            test_split: test
            output_type: multiple_choice
            doc_to_text: "Question: {{question}}\\nAnswer:"
            doc_to_choice: "{{choices}}"
            doc_to_target: answer
            metric_list: [{metric: acc}]
            """
        )
    )
    (folder / "lines.yaml").write_text(
        textwrap.dedent(
            """
            task: lines
            dataset_path: text
            dataset_kwargs: {data_files: {test: lines.txt}}
            test_split: test
            output_type: loglikelihood_rolling
            doc_to_text: ""
            doc_to_target: "{{text}}"
            metric_list: [{metric: bits_per_byte}]
            """
        )
    )


@torch.no_grad()
def log_likelihood(model, tokenizer, context_ids: list[int], continuation_ids: list[int]) -> float:
    ids = torch.tensor([context_ids + continuation_ids])
    log_probs = model(ids).logits[0, :-1].log_softmax(-1)
    positions = range(len(context_ids) - 1, len(context_ids) + len(continuation_ids) - 1)
    return sum(log_probs[position, token].item() for position, token in zip(positions, continuation_ids, strict=True))


def test_gpt1_eval_scores_local_tasks_through_lm_eval_and_records_them(tmp_path):
    """`gpt1 eval` runs lm-eval's hf backend on task files written here; its scores equal gpt1's own
    log-likelihoods, and land in lm_eval_results.json and, with --card, the model card."""
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    model = GPT1ForCausalLM(tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_model_card(folder, model, "a test text", steps=0, tokens_seen=0)
    write_tasks(tmp_path / "tasks")

    result = gpt1_cli(
        "eval", "--model", str(folder), "--tasks", "quiz,lines", "--include-path", str(tmp_path / "tasks"), "--card",
        env={"HF_DATASETS_OFFLINE": "1"},
    )  # fmt: skip
    scores = json.loads((folder / "lm_eval_results.json").read_text())["scores"]
    assert set(scores) == {"quiz", "lines"}, result.stdout

    # Multiple choice: the choice with the highest log-likelihood after "Question: ...\nAnswer:" (a space between).
    correct = 0
    for question, choices, answer in QUIZ:
        context = f"Question: {question}\nAnswer:"
        context_ids = tokenizer(context).input_ids
        likelihoods = [
            log_likelihood(
                model, tokenizer, context_ids, tokenizer(context + " " + choice).input_ids[len(context_ids) :]
            )
            for choice in choices
        ]
        correct += int(max(range(len(choices)), key=likelihoods.__getitem__) == answer)
    assert scores["quiz"]["acc"] == pytest.approx(correct / len(QUIZ))

    # Perplexity: each line's tokens after the prefix token, in bits per byte of text.
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    total = sum(-log_likelihood(model, tokenizer, [prefix], tokenizer(line).input_ids) for line in LINES)
    bits_per_byte = total / sum(len(line.encode()) for line in LINES) / math.log(2)
    assert scores["lines"]["bits_per_byte"] == pytest.approx(bits_per_byte, rel=1e-4)
    assert f"lines: bits_per_byte {bits_per_byte:.4f}" in result.stdout

    card = ModelCard.load(folder / "README.md")
    recorded = {(entry.dataset_type, entry.metric_type): entry.metric_value for entry in card.data.eval_results}
    assert recorded[("quiz", "acc")] == round(scores["quiz"]["acc"], 4)
    assert recorded[("lines", "bits_per_byte")] == round(bits_per_byte, 4)
    assert "## Scores" in card.text and "| lines | bits_per_byte |" in card.text


def test_gpt1_eval_names_what_is_wrong_before_scoring(tmp_path):
    from gpt1.scoring import score

    tokenizer = make_tokenizer()
    folder = tmp_path / "model"
    GPT1ForCausalLM(tiny_config(vocab_size=len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_tasks(tmp_path / "tasks")
    with pytest.raises(FileNotFoundError, match="No such --include-path folder of task YAML files: 'no/tasks'"):
        score(str(folder), ["quiz"], include_path="no/tasks")
    with pytest.raises(ValueError, match=r"Unknown task\(s\) \['quizz'\]: not in lm-eval's registry or"):
        score(str(folder), ["quizz"], include_path=str(tmp_path / "tasks"))
    with pytest.raises(ValueError, match="--card writes into the model folder's README.md, and 'someone/gpt1'"):
        score("someone/gpt1", ["quiz"], card=True)


def test_scores_in_the_card_replace_their_earlier_values_and_keep_everything_else(tmp_path):
    from gpt1.reporting import add_scores_to_card

    folder = tmp_path / "model"
    folder.mkdir()
    write_model_card(folder, GPT1ForCausalLM(tiny_config()), "a test text", steps=0, tokens_seen=0)
    add_scores_to_card(folder, {"quiz": {"acc": 0.5}, "lines": {"bits_per_byte": 7.0}}, source="lm-eval")
    add_scores_to_card(folder, {"quiz": {"acc": 0.75}}, source="lm-eval")  # quiz again: replaced, lines kept
    card = ModelCard.load(folder / "README.md")
    recorded = [(entry.dataset_type, entry.metric_type, entry.metric_value) for entry in card.data.eval_results]
    assert recorded == [("lines", "bits_per_byte", 7.0), ("quiz", "acc", 0.75)]
    assert card.text.count("## Scores") == 1 and "| quiz | acc | 0.5000 |" not in card.text
    assert card.text.index("## Scores") < card.text.index("## Limitations")  # before the closing section
    assert "## Usage" in card.text and "## Training" in card.text

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A model\n\n### Scores of something else\n")
    add_scores_to_card(bare, {"quiz": {"acc": 0.25}}, source="lm-eval")
    text = (bare / "README.md").read_text()
    assert "### Scores of something else" in text and text.rstrip().endswith("| quiz | acc | 0.2500 |")
    assert ModelCard.load(bare / "README.md").data.model_name == "bare"
