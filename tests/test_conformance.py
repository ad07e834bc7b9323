"""What transformers' common model tests (`tests/test_modeling_common.py`) hold in-tree models to, for gpt1.

`.ci/run` runs this module on the pinned transformers, the lowest release `pyproject.toml` declares and
the newest one pip resolves, because a checkpoint's `modeling_gpt1.py` runs on whatever release the
person loading it has. Each test names the contract it checks.
"""

import traceback

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import DataCollatorWithFlattening, DynamicCache, StaticCache, Trainer, TrainingArguments
from transformers.generation import CompileConfig, GenerationConfig

from gpt1 import (
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForQuestionAnswering,
    GPT1ForSequenceClassification,
    GPT1ForTokenClassification,
    GPT1Model,
)
from gpt1.model.modeling_gpt1 import CACHE_NAME

from .helpers import random_ids

ALL_HEADS = [
    GPT1Model,
    GPT1ForCausalLM,
    GPT1ForSequenceClassification,
    GPT1ForMultipleChoice,
    GPT1ForTokenClassification,
    GPT1ForQuestionAnswering,
]


@pytest.fixture
def model(config):
    return GPT1ForCausalLM(config).eval()


def inputs_for(head, config, batch=2, seq=10):
    ids = random_ids(config, batch=batch, seq=seq)
    if head is GPT1ForMultipleChoice:
        return {"input_ids": ids.view(batch, 1, seq).expand(batch, 3, seq).contiguous()}
    return {"input_ids": ids}


def recompute_greedily(model, prompt, new_tokens):
    """Greedy decoding the slow way: the whole sequence again for every token, no cache at all."""
    tokens, step_logits = prompt, []
    for _ in range(new_tokens):
        logits = model(tokens, use_cache=False).logits[:, -1]
        step_logits.append(logits)
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens, torch.stack(step_logits, dim=1)


# --- The key/value cache, under either name ------------------------------------------------------------


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_cache_is_used_under_either_name(model, config, name):
    ids = random_ids(config, seq=10)
    full = model(ids).logits
    cache = DynamicCache(config=config)
    first = model(ids[:, :6], use_cache=True, **{name: cache})
    assert getattr(first, CACHE_NAME) is cache and cache.get_seq_length() == 6
    rest = [model(ids[:, step : step + 1], use_cache=True, **{name: cache}).logits for step in range(6, 10)]
    torch.testing.assert_close(torch.cat([first.logits, *rest], dim=1), full, atol=1e-5, rtol=1e-5)


def test_two_different_caches_at_once_is_an_error(model, config):
    with pytest.raises(ValueError, match="cache= or as past_key_values=, not both"):
        model(random_ids(config), cache=DynamicCache(config=config), past_key_values=DynamicCache(config=config))


def test_cached_generation_equals_recomputing_the_whole_sequence(model, config):
    """The silent failure of a forward that misses the cache: right first token, wrong ones after it."""
    prompt = random_ids(config, batch=1, seq=5)
    generated = model.generate(
        prompt, max_new_tokens=12, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    expected_tokens, expected_logits = recompute_greedily(model, prompt, 12)
    assert torch.equal(generated.sequences, expected_tokens)
    torch.testing.assert_close(torch.stack(generated.logits, dim=1), expected_logits, atol=1e-4, rtol=1e-4)


def test_static_cache_generation_equals_recomputing(model, config):
    prompt = random_ids(config, batch=2, seq=6)
    expected, _ = recompute_greedily(model, prompt, 10)
    static = model.generate(prompt, max_new_tokens=10, do_sample=False, cache_implementation="static")
    assert torch.equal(static, expected)


def test_generate_compiles_the_static_cache_decode_step_in_one_graph(model, config):
    """`generate(cache_implementation="static")` compiles the decode step; fullgraph makes a graph break fail."""
    prompt = random_ids(config, batch=1, seq=6)
    expected, _ = recompute_greedily(model, prompt, 8)
    compile_config = CompileConfig(backend="eager", fullgraph=True)
    compile_config._compile_all_devices = True  # generate compiles only on accelerators unless told otherwise
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = model.generate(
        prompt, max_new_tokens=8, do_sample=False, cache_implementation="static", compile_config=compile_config
    )
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1, "generate did not compile the forward"
    assert torch.equal(compiled, expected)


def compiled_graphs() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def test_generate_switches_to_compiled_decoding_once_it_has_paid(model, config, fresh_dynamo):
    """The "auto" rule: eager until this model has spent `compiled_decoding_after_seconds` decoding, then a static
    cache and a compiled step, with the same greedy tokens."""
    prompt = random_ids(config, batch=1, seq=6)
    expected, _ = recompute_greedily(model, prompt, 8)
    model.compiled_decoding_backend = "eager"  # the path, without a C++ compile
    model.compiled_decoding_after_seconds = {"cpu": 3600.0}
    assert torch.equal(model.generate(prompt, max_new_tokens=8, do_sample=False), expected)
    assert torch.equal(model.generate(prompt, max_new_tokens=8, do_sample=False), expected)
    assert compiled_graphs() == 0, "less than an hour of decoding: still eager"
    assert 0 < model._eager_decoding_seconds < 60
    model.compiled_decoding_after_seconds = {"cpu": model._eager_decoding_seconds}  # the time has been spent
    compiled = model.generate(prompt, max_new_tokens=8, do_sample=False)
    assert compiled_graphs() >= 1, "generate did not switch to the compiled decode step"
    assert torch.equal(compiled, expected)


def test_compiled_decoding_can_be_forced_or_refused(model, config, fresh_dynamo):
    model.compiled_decoding_backend = "eager"
    prompt = random_ids(config, batch=2, seq=5)
    model.compiled_decoding = False
    model.compiled_decoding_after_seconds = {"cpu": 0.0}
    eager = model.generate(prompt, max_new_tokens=6, do_sample=False)
    assert compiled_graphs() == 0
    model.compiled_decoding = True
    model.compiled_decoding_after_seconds = {"cpu": 3600.0}
    # As README's `model.generate(**inputs)` and pipelines call it: the ids as a keyword.
    assert torch.equal(model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False), eager)
    assert compiled_graphs() >= 1


@pytest.mark.parametrize(
    "choice",
    [
        {"output_attentions": True, "return_dict_in_generate": True},
        {"cache_implementation": "dynamic"},
        {"num_beams": 2},
        {"generation_config": GenerationConfig(num_beams=2, max_new_tokens=4)},
        {"synced_gpus": None},  # generate turns it on under FSDP or ZeRO-3
    ],
    ids=["output_attentions", "cache_implementation", "num_beams", "generation_config", "synced_gpus"],
)
def test_a_caller_who_chose_is_not_overruled(model, config, fresh_dynamo, choice):
    model.compiled_decoding = True
    model.compiled_decoding_backend = "eager"
    model.generate(random_ids(config, batch=1, seq=4), max_new_tokens=4, do_sample=False, **choice)
    assert compiled_graphs() == 0


def test_a_model_whose_generation_config_asks_for_beams_is_not_overruled(model, config, fresh_dynamo):
    model.compiled_decoding = True
    model.compiled_decoding_backend = "eager"
    model.generation_config.num_beams = 2
    model.generate(random_ids(config, batch=1, seq=4), max_new_tokens=4, do_sample=False)
    assert compiled_graphs() == 0


def test_a_failed_compile_falls_back_to_eager_with_a_warning(model, config, fresh_dynamo):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    model.compiled_decoding = True
    model.compiled_decoding_backend = broken_backend
    prompt = random_ids(config, batch=1, seq=6)
    expected, _ = recompute_greedily(model, prompt, 6)
    with pytest.warns(UserWarning, match="compiling the decode step failed"):
        assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=False), expected)
    assert model._compile_failed
    assert torch.equal(model.generate(prompt, max_new_tokens=6, do_sample=False), expected)  # eager, no retry


def test_a_failed_compile_draws_the_same_samples_as_eager_decoding(model, config, fresh_dynamo):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler here")

    prompt = random_ids(config, batch=1, seq=6)
    torch.manual_seed(7)
    eager = model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=20)
    model.compiled_decoding = True
    model.compiled_decoding_backend = broken_backend
    torch.manual_seed(7)
    with pytest.warns(UserWarning, match="compiling the decode step failed"):
        retried = model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=20)
    assert torch.equal(retried, eager)


def test_forward_with_a_static_cache_compiles_in_one_graph(model, config):
    ids = random_ids(config, batch=1, seq=6)
    cache = StaticCache(config=config, max_cache_len=16)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    prefill = compiled(ids, use_cache=True, **{CACHE_NAME: cache}).logits
    next_token = prefill[:, -1:].argmax(-1)
    step = compiled(next_token, use_cache=True, **{CACHE_NAME: cache}).logits
    full = model(torch.cat([ids, next_token], dim=1)).logits
    torch.testing.assert_close(prefill, full[:, :-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step, full[:, -1:], atol=1e-5, rtol=1e-5)


class WithStaticCache(nn.Module):
    """The model and a static cache as one module with the cache as buffers, the way `torch.export` needs state."""

    def __init__(self, model: GPT1ForCausalLM, max_cache_len: int):
        super().__init__()
        self.model = model
        config = model.config
        self.cache = StaticCache(config=config, max_cache_len=max_cache_len)
        self.cache.early_initialization(1, config.n_head, config.head_dim, model.dtype, model.device)
        for index, layer in enumerate(self.cache.layers):
            self.register_buffer(f"keys_{index}", layer.keys, persistent=False)
            self.register_buffer(f"values_{index}", layer.values, persistent=False)
            self.register_buffer(f"length_{index}", layer.cumulative_length, persistent=False)

    def forward(self, input_ids: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        for layer in self.cache.layers:
            layer.cumulative_length.copy_(start)
        return self.model(input_ids, use_cache=True, **{CACHE_NAME: self.cache}).logits


def test_prefill_and_decode_step_export(model, config):
    ids = random_ids(config, batch=1, seq=5)
    wrapper = WithStaticCache(model.requires_grad_(False), max_cache_len=16)
    prefill = torch.export.export(wrapper, (ids, torch.tensor(0)), strict=False).module()
    decode = torch.export.export(wrapper, (ids[:, :1], torch.tensor(5)), strict=False).module()
    prefill_logits = prefill(ids, torch.tensor(0))
    for (name, filled), (same_name, empty) in zip(prefill.named_buffers(), decode.named_buffers(), strict=True):
        assert name == same_name
        empty.copy_(filled)  # hand the prefilled cache to the decode program
    next_token = prefill_logits[:, -1:].argmax(-1)
    step_logits = decode(next_token, torch.tensor(5))
    full = model(torch.cat([ids, next_token], dim=1)).logits
    torch.testing.assert_close(prefill_logits, full[:, :-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step_logits, full[:, -1:], atol=1e-5, rtol=1e-5)


# --- Padding-free (packed) rows ------------------------------------------------------------------------


PACKED_MODES = {  # (training, keyword arguments of the forward)
    "training": (True, {}),
    "eval, cache on": (False, {"use_cache": True}),
    "eval, cache off": (False, {"use_cache": False}),
}


@pytest.mark.parametrize("implementation", ["sdpa", "eager", "flex_attention"])
@pytest.mark.parametrize("mode", PACKED_MODES)
def test_packed_row_gives_each_sequence_its_own_logits(config, implementation, mode):
    """Sequences packed in one row, positions restarting at 0 (longer in all than n_positions, 64), give the
    logits of each sequence run alone by the eager reference, in every mode and attention implementation.
    (What TRL's padding-free packing and vLLM's batches send.)"""
    training, kwargs = PACKED_MODES[mode]
    model = GPT1ForCausalLM(config).train(training)
    sequences = [random_ids(config, batch=1, seq=length, seed=length) for length in (40, 30, 20)]
    packed = torch.cat(sequences, dim=1)
    positions = torch.cat([torch.arange(sequence.shape[1]) for sequence in sequences])[None]
    assert packed.shape[1] > config.n_positions
    model.set_attn_implementation("eager")
    with torch.no_grad():  # flex attention has no backward on a CPU
        alone = [model(sequence, **kwargs).logits for sequence in sequences]
        model.set_attn_implementation(implementation)
        logits = model(packed, position_ids=positions, **kwargs).logits
    torch.testing.assert_close(logits, torch.cat(alone, dim=1), atol=1e-5, rtol=1e-5)


def test_a_position_past_the_context_is_rejected_by_value(model, config):
    ids = random_ids(config, batch=1, seq=4)
    with pytest.raises(ValueError, match=rf"position {config.n_positions}, .*n_positions\) is {config.n_positions}"):
        model(ids, position_ids=torch.tensor([[0, 1, 2, config.n_positions]]))


def test_trainer_trains_on_padding_free_batches(config, tmp_path):
    config.vocab_size = 40
    model = GPT1ForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    # Short repeating sequences, a batch of four packed into one row longer than n_positions.
    rows = [{"input_ids": (torch.arange(24) % 8 + 2 * (index % 3)).tolist()} for index in range(32)]
    for row in rows:
        row["input_ids"] = row["input_ids"][: int(torch.randint(17, 25, (1,), generator=generator))]
    collator = DataCollatorWithFlattening()
    batch = collator(rows[:4])
    assert batch["input_ids"].shape[0] == 1 and batch["input_ids"].shape[1] > config.n_positions
    arguments = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=12,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=rows, data_collator=collator)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] * 0.9, losses


# --- No host syncs on the hot path ---------------------------------------------------------------------


class HostReads(TorchDispatchMode):
    """Records every device-to-host scalar read (`.item()`, `int(tensor)`, `if tensor:`), with where it came from."""

    def __init__(self):
        super().__init__()
        self.stacks: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.stacks.append("".join(traceback.format_stack()))
        return func(*args, **(kwargs or {}))


def test_a_training_step_reads_nothing_back_from_the_device(config):
    model = GPT1ForCausalLM(config).train()
    classifier = GPT1ForSequenceClassification(config).train()
    ids = random_ids(config)
    with HostReads() as reads:
        model(ids, labels=ids).loss.backward()
        classifier(ids, labels=torch.tensor([0, 1])).loss.backward()
    assert reads.stacks == []


def test_a_decode_step_reads_nothing_back_from_the_device(model, config):
    ids = random_ids(config)
    cache = DynamicCache(config=config)
    with torch.no_grad():
        model(ids, use_cache=True, **{CACHE_NAME: cache})
        with HostReads() as reads:
            model(ids[:, :1], use_cache=True, **{CACHE_NAME: cache})
        assert reads.stacks == []
        # With a padding mask, transformers' own mask helper checks whether it can skip the mask (llama
        # does the same); nothing of gpt1's reads.
        with HostReads() as reads:
            mask = torch.ones(2, ids.shape[1] + 2, dtype=torch.long)
            model(ids[:, :1], attention_mask=mask, position_ids=torch.full((2, 1), 13), **{CACHE_NAME: cache})
        assert all("masking_utils" in stack for stack in reads.stacks), reads.stacks


# --- Save and reload, outputs, embeddings, logits_to_keep -----------------------------------------------


@pytest.mark.parametrize("head", ALL_HEADS, ids=lambda head: head.__name__)
def test_every_head_saves_and_reloads_to_the_same_outputs(config, head, tmp_path):
    model = head(config).eval()
    inputs = inputs_for(head, config)
    model.save_pretrained(tmp_path)
    reloaded = head.from_pretrained(tmp_path).eval()
    first, second = model(**inputs), reloaded(**inputs)
    for key in first:
        if isinstance(first[key], torch.Tensor):
            torch.testing.assert_close(first[key], second[key], msg=key)


@pytest.mark.parametrize("head", ALL_HEADS, ids=lambda head: head.__name__)
def test_every_head_returns_hidden_states_and_attentions(config, head):
    model = head(config).eval()
    model.set_attn_implementation("eager")
    outputs = model(**inputs_for(head, config), output_hidden_states=True, output_attentions=True)
    assert len(outputs.hidden_states) == config.n_layer + 1
    assert len(outputs.attentions) == config.n_layer
    rows = 6 if head is GPT1ForMultipleChoice else 2
    assert outputs.attentions[0].shape == (rows, config.n_head, 10, 10)


@pytest.mark.parametrize("head", ALL_HEADS, ids=lambda head: head.__name__)
def test_every_head_trains_with_gradient_checkpointing(config, head):
    """Checkpointing recomputes each block in backward: the gradients must not change."""
    config.classifier_dropout = 0.0  # dropout would differ between the two runs
    inputs = inputs_for(head, config)
    plain = head(config).train()
    checkpointed = head(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable()
    for model in (plain, checkpointed):
        model(**inputs)[0].pow(2).mean().backward()  # logits, or the hidden states of the bare model
    for (name, first), (_, second) in zip(plain.named_parameters(), checkpointed.named_parameters(), strict=True):
        if first.grad is not None:
            torch.testing.assert_close(first.grad, second.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_logits_to_keep_takes_a_count_or_an_index_tensor(model, config):
    ids = random_ids(config)
    full = model(ids).logits
    torch.testing.assert_close(model(ids, logits_to_keep=3).logits, full[:, -3:])
    torch.testing.assert_close(model(ids, logits_to_keep=torch.tensor([0, 5])).logits, full[:, [0, 5]])


def test_resized_embeddings_stay_tied_and_keep_old_rows(config):
    model = GPT1ForCausalLM(config).eval()
    old_size, old_rows = config.vocab_size, model.get_input_embeddings().weight.detach().clone()
    model.resize_token_embeddings(old_size + 7)
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == model.config.vocab_size == old_size + 7
    assert model.get_output_embeddings().weight.data_ptr() == embeddings.data_ptr()
    torch.testing.assert_close(embeddings[:old_size], old_rows)
    assert model(random_ids(model.config)).logits.shape[-1] == old_size + 7


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_implementations_agree_with_a_padding_mask_and_a_cache(model, config, implementation):
    ids = random_ids(config)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    reference = model(ids, attention_mask=mask).logits
    model.set_attn_implementation(implementation)
    cache = DynamicCache(config=config)
    prefill = model(ids[:, :8], attention_mask=mask[:, :8], use_cache=True, **{CACHE_NAME: cache}).logits
    rest = model(ids[:, 8:], attention_mask=mask, use_cache=True, **{CACHE_NAME: cache}).logits
    got = torch.cat([prefill, rest], dim=1)
    torch.testing.assert_close(got[0], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1, 4:], reference[1, 4:], atol=1e-5, rtol=1e-5)


def test_loss_under_gradient_accumulation_equals_the_whole_batch(config):
    """Trainer passes `num_items_in_batch` and sums micro-batch losses: unequal micro-batches must add up exactly."""
    model = GPT1ForCausalLM(config).train()
    ids = random_ids(config, batch=4)
    labels = ids.clone()
    labels[0, :9] = -100  # the first micro-batch holds fewer targets than the second
    whole = model(ids, labels=labels)
    whole.loss.backward()
    whole_grads = [parameter.grad.clone() for parameter in model.parameters()]
    model.zero_grad()
    targets = int((labels[:, 1:] != -100).sum())
    summed = sum(
        model(ids[rows], labels=labels[rows], num_items_in_batch=torch.tensor(targets)).loss
        for rows in (slice(0, 2), slice(2, 4))
    )
    summed.backward()
    torch.testing.assert_close(summed, whole.loss)
    for first, second in zip(whole_grads, model.parameters(), strict=True):
        torch.testing.assert_close(first, second.grad, atol=1e-6, rtol=1e-5)
