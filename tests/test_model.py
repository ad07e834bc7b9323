"""Behaviour of the decoder and the causal-LM head."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import DynamicCache

from gpt1 import GPT1ForCausalLM, GPT1Model

from .helpers import random_ids, tiny_config


@pytest.fixture
def model(config):
    return GPT1ForCausalLM(config).eval()


def with_attention(model, implementation):
    model.set_attn_implementation(implementation)
    return model


def test_architecture_is_post_ln_with_tied_head_and_no_final_norm(model, config):
    names = [name for name, _ in model.named_modules()]
    assert not any("ln_f" in name or name.endswith("final_norm") for name in names)
    block = model.transformer.blocks[0]
    assert isinstance(block.attn_norm, torch.nn.LayerNorm) and isinstance(block.mlp_norm, torch.nn.LayerNorm)
    assert model.lm_head.weight.data_ptr() == model.transformer.token_embeddings.weight.data_ptr()
    # Post-LN: the block's output is exactly LayerNorm(residual + mlp(...)), so each position is normalised.
    hidden = model.transformer(random_ids(config)).last_hidden_state
    normalised = (hidden - model.transformer.blocks[-1].mlp_norm.bias) / model.transformer.blocks[-1].mlp_norm.weight
    torch.testing.assert_close(normalised.mean(-1), torch.zeros(hidden.shape[:2]), atol=1e-5, rtol=0)


def test_weights_are_initialised_like_gpt1(config):
    model = GPT1ForCausalLM(tiny_config(n_embd=64, vocab_size=500))
    assert abs(model.transformer.token_embeddings.weight.std().item() - 0.02) < 0.002
    assert model.transformer.blocks[0].attn.qkv_proj.bias.abs().max() == 0
    assert torch.equal(model.transformer.blocks[0].attn_norm.weight, torch.ones(64))


def test_eager_attention_weights_are_causal_probabilities(model, config):
    with_attention(model, "eager")
    outputs = model(random_ids(config, batch=3, seq=10), output_attentions=True)
    assert len(outputs.attentions) == config.n_layer
    for weights in outputs.attentions:
        assert weights.shape == (3, config.n_head, 10, 10)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, config.n_head, 10))
        assert torch.all(weights.triu(diagonal=1) == 0)


def test_sdpa_is_default_and_matches_eager(config):
    model = GPT1ForCausalLM(config).eval()
    assert model.config._attn_implementation == "sdpa"
    ids = random_ids(config)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # one left-padded row exercises the materialised mask too
    sdpa = model(ids, attention_mask=mask).logits
    eager = with_attention(model, "eager")(ids, attention_mask=mask).logits
    torch.testing.assert_close(sdpa[1], eager[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa[0, 3:], eager[0, 3:], atol=1e-5, rtol=1e-5)


def test_flex_attention_matches_sdpa_where_available(config):
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    assert flex is not None
    model = GPT1ForCausalLM(config).eval()
    ids = random_ids(config, seq=16)
    with torch.no_grad():  # flex attention has no CPU backward
        expected = model(ids).logits
        got = with_attention(model, "flex_attention")(ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_future_tokens_never_change_earlier_logits(model, config, implementation):
    with_attention(model, implementation)
    ids = random_ids(config)
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 5) % config.vocab_size
    torch.testing.assert_close(model(ids).logits[:, :7], model(changed).logits[:, :7])
    assert not torch.allclose(model(ids).logits[:, 7:], model(changed).logits[:, 7:])


def test_incremental_decoding_with_cache_matches_full_forward(model, config):
    ids = random_ids(config, seq=10)
    full = model(ids).logits
    cache = DynamicCache(config=config)
    first = model(ids[:, :6], past_key_values=cache, use_cache=True)
    assert first.past_key_values.get_seq_length() == 6
    rest = [model(ids[:, step : step + 1], past_key_values=cache, use_cache=True).logits for step in range(6, 10)]
    torch.testing.assert_close(torch.cat([first.logits, *rest], dim=1), full, atol=1e-5, rtol=1e-5)


def test_greedy_generate_is_the_same_with_and_without_cache(model, config):
    prompt = random_ids(config, batch=1, seq=5)
    cached = model.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=20, do_sample=False, use_cache=False)
    assert cached.shape == (1, 25)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_left_padded_batch_generates_like_each_prompt_alone(model, config, implementation):
    with_attention(model, implementation)
    prompts = [random_ids(config, batch=1, seq=length, seed=length)[0] for length in (3, 7, 5)]
    longest = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), longest), config.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = prompt
        mask[row, longest - len(prompt) :] = 1
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], max_new_tokens=12, do_sample=False)
        assert torch.equal(batched[row, longest:], alone[0, len(prompt) :]), f"prompt {row} diverged"


def test_padding_does_not_change_real_token_outputs(model, config):
    ids = random_ids(config, batch=1, seq=8)
    alone = model(ids).logits
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)], dim=1)
    left = model(padded, attention_mask=mask).logits[:, 4:]
    right = model(torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1), attention_mask=mask.flip(1)).logits
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right[:, :8], alone, atol=1e-5, rtol=1e-5)


def test_position_ids_and_inputs_embeds(model, config):
    ids = random_ids(config)
    expected = model(ids).logits
    explicit_positions = model(ids, position_ids=torch.arange(ids.shape[1])[None].expand_as(ids)).logits
    torch.testing.assert_close(explicit_positions, expected)
    shifted = model(ids, position_ids=torch.arange(ids.shape[1])[None] + 3).logits
    assert not torch.allclose(shifted, expected)
    from_embeds = model(inputs_embeds=model.transformer.token_embeddings(ids)).logits
    torch.testing.assert_close(from_embeds, expected)


def test_output_hidden_states(model, config):
    outputs = model(random_ids(config), output_hidden_states=True)
    assert len(outputs.hidden_states) == config.n_layer + 1
    embeddings = (
        model.transformer.token_embeddings(random_ids(config)) + model.transformer.position_embeddings.weight[:12]
    )
    torch.testing.assert_close(outputs.hidden_states[0], embeddings)
    hidden = model.transformer(random_ids(config)).last_hidden_state
    torch.testing.assert_close(outputs.hidden_states[-1], hidden)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(config):
    ids = random_ids(config)
    plain = GPT1ForCausalLM(config).train()
    checkpointed = GPT1ForCausalLM(config).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.gradient_checkpointing_enable()
    assert checkpointed.transformer.gradient_checkpointing
    losses = []
    for model in (plain, checkpointed):
        loss = model(ids, labels=ids).loss
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    for (name, first), (_, second) in zip(plain.named_parameters(), checkpointed.named_parameters(), strict=True):
        torch.testing.assert_close(first.grad, second.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_loss_ignores_minus_100_and_matches_shifted_cross_entropy(model, config):
    ids = random_ids(config)
    labels = ids.clone()
    labels[:, :4] = -100
    outputs = model(ids, labels=labels)
    logits = outputs.logits[:, :-1].reshape(-1, config.vocab_size)
    expected = torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(outputs.loss, expected)


def test_num_items_in_batch_turns_the_mean_into_a_sum_over_that_count(model, config):
    ids = random_ids(config)
    mean = model(ids, labels=ids).loss
    counted = model(ids, labels=ids, num_items_in_batch=torch.tensor(100)).loss
    real_targets = ids.shape[0] * (ids.shape[1] - 1)
    torch.testing.assert_close(counted, mean * real_targets / 100)


def test_logits_to_keep(model, config):
    ids = random_ids(config)
    full = model(ids).logits
    last = model(ids, logits_to_keep=1).logits
    assert last.shape == (2, 1, config.vocab_size)
    torch.testing.assert_close(last, full[:, -1:])


def test_saves_one_tied_tensor_in_safetensors(model, tmp_path):
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    assert "lm_head.weight" not in tensors and "transformer.token_embeddings.weight" in tensors
    reloaded = GPT1ForCausalLM.from_pretrained(tmp_path)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.transformer.token_embeddings.weight.data_ptr()
    torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight)


def test_forward_compiles_without_graph_breaks(config):
    model = GPT1ForCausalLM(config).eval()
    ids = random_ids(config)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(ids).logits, model(ids).logits)


def test_training_step_compiles_without_graph_breaks(config):
    """The training path (chunked loss, custom autograd function) must compile in one graph too."""
    model = GPT1ForCausalLM(config).train()
    ids = random_ids(config)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    compiled(ids, labels=ids).loss.backward()
    compiled_grads = [parameter.grad.clone() for parameter in model.parameters()]
    model.zero_grad()
    model(ids, labels=ids).loss.backward()
    for compiled_grad, parameter in zip(compiled_grads, model.parameters(), strict=True):
        torch.testing.assert_close(compiled_grad, parameter.grad)


@pytest.mark.parametrize("padding_multiple", [1, 64])
@pytest.mark.parametrize("num_items_in_batch", [None, 37])
def test_chunked_training_loss_matches_the_plain_loss_and_gradients(config, padding_multiple, num_items_in_batch):
    config.vocab_padding_multiple = padding_multiple
    assert (config.padded_vocab_size > config.vocab_size) == (padding_multiple > 1)  # 96 tokens: 128 rows padded
    model = GPT1ForCausalLM(config).train()
    model.lm_loss_chunk_logits = 5 * config.padded_vocab_size  # five rows per chunk: several chunks
    ids = random_ids(config, batch=3, seq=10)
    labels = ids.clone()
    labels[0, :4] = -100
    kwargs = {} if num_items_in_batch is None else {"num_items_in_batch": torch.tensor(num_items_in_batch)}
    results = []
    for skip_logits in (None, False):  # None: the default in training mode, the chunked loss
        model.zero_grad()
        outputs = model(ids, labels=labels, skip_logits=skip_logits, **kwargs)
        outputs.loss.backward()
        results.append((outputs, [parameter.grad.clone() for parameter in model.parameters()]))
    (chunked, chunked_grads), (plain, plain_grads) = results
    assert chunked.logits is None and plain.logits.shape == (3, 10, config.vocab_size)
    torch.testing.assert_close(chunked.loss, plain.loss)
    for first, second in zip(chunked_grads, plain_grads, strict=True):
        torch.testing.assert_close(first, second, atol=1e-6, rtol=1e-4)


def test_the_chunked_loss_under_no_grad_computes_no_gradients(config):
    """Evaluation (`gpt1 train` evaluates with skip_logits under no_grad) gets the same loss from one matrix multiply
    per chunk, not three: autograd's `needs_input_grad` says True under no_grad, so the loss must ask grad mode."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountMatmuls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_)
            return func(*args, **(kwargs or {}))

    model = GPT1ForCausalLM(config).eval()
    ids = random_ids(config, batch=2, seq=8)
    with torch.no_grad():
        model.transformer(ids)  # the decoder's own multiplies, to subtract
        with CountMatmuls() as decoder:
            hidden = model.transformer(ids).last_hidden_state
        with CountMatmuls() as evaluation:
            loss = model(ids, labels=ids, skip_logits=True).loss
    with CountMatmuls() as training:
        training_loss = model(ids, labels=ids, skip_logits=True).loss
    assert evaluation.count - decoder.count == 1  # the logits, nothing for gradients
    assert training.count - decoder.count == 3  # the logits, then d hidden and d weight
    torch.testing.assert_close(loss, training_loss.detach())
    torch.testing.assert_close(loss, model.loss_function(model.lm_head(hidden), ids, config.vocab_size))


def test_skip_logits_needs_labels(model, config):
    with pytest.raises(ValueError, match="skip_logits=True .* needs labels"):
        model(random_ids(config), skip_logits=True)


def test_vocabulary_padding_lives_only_inside_the_training_loss(config, tmp_path):
    """Parameters, logits and saved tensors have vocab_size rows (what vLLM, TRL and converters expect)."""
    config.vocab_padding_multiple = 64
    model = GPT1ForCausalLM(config)
    assert config.padded_vocab_size % 64 == 0 and config.padded_vocab_size > config.vocab_size
    assert model.transformer.token_embeddings.weight.shape[0] == model.lm_head.weight.shape[0] == config.vocab_size
    ids = random_ids(config)
    assert model.eval()(ids).logits.shape[-1] == config.vocab_size
    model.train()
    chunked, plain = model(ids, labels=ids).loss, model(ids, labels=ids, skip_logits=False).loss
    torch.testing.assert_close(chunked, plain)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert saved["transformer.token_embeddings.weight"].shape[0] == config.vocab_size


def test_resizing_keeps_the_embeddings_tied_and_sized_to_the_tokens(config):
    config.vocab_padding_multiple = 64
    model = GPT1ForCausalLM(config)
    new_size = config.vocab_size + 40
    model.resize_token_embeddings(new_size)
    assert model.config.vocab_size == new_size
    assert model.transformer.token_embeddings.weight.shape[0] == new_size
    assert model.lm_head.weight.data_ptr() == model.transformer.token_embeddings.weight.data_ptr()
    assert model(random_ids(model.config)).logits.shape[-1] == new_size


def test_base_model_returns_last_block_states(config):
    model = GPT1Model(config).eval()
    outputs = model(random_ids(config), use_cache=True)
    assert outputs.last_hidden_state.shape == (2, 12, config.n_embd)
    assert outputs.past_key_values.get_seq_length() == 12


class TestBadInput:
    def test_token_id_beyond_vocab(self, model, config):
        ids = random_ids(config)
        ids[1, 3] = config.vocab_size + 4
        with pytest.raises(ValueError, match=rf"token id {config.vocab_size + 4}.*\[0, {config.vocab_size}\)"):
            model(ids)

    def test_negative_token_id(self, model, config):
        ids = random_ids(config)
        ids[0, 0] = -1
        with pytest.raises(ValueError, match="token id -1"):
            model(ids)

    def test_too_long_input(self, model, config):
        ids = torch.ones(1, config.n_positions + 1, dtype=torch.long)
        with pytest.raises(ValueError, match=rf"{config.n_positions + 1}.*n_positions\) is {config.n_positions}"):
            model(ids)

    def test_cache_plus_new_tokens_too_long(self, model, config):
        cache = DynamicCache(config=config)
        model(torch.ones(1, config.n_positions - 2, dtype=torch.long), past_key_values=cache, use_cache=True)
        with pytest.raises(ValueError, match=rf"{config.n_positions - 2} cached \+ 3 new"):
            model(torch.ones(1, 3, dtype=torch.long), past_key_values=cache, use_cache=True)

    def test_attention_mask_shape(self, model, config):
        ids = random_ids(config)
        with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 11\), expected \(2, 12\)"):
            model(ids, attention_mask=torch.ones(2, 11, dtype=torch.long))

    def test_both_ids_and_embeds(self, model, config):
        ids = random_ids(config)
        with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
            model(ids, inputs_embeds=model.transformer.token_embeddings(ids))


def test_no_cache_is_built_while_training(config):
    model = GPT1ForCausalLM(config).train()
    ids = random_ids(config)
    assert model(ids, use_cache=True).past_key_values is None
    cache = DynamicCache(config=config)
    assert model(ids, past_key_values=cache, use_cache=True).past_key_values.get_seq_length() == ids.shape[1]
    assert model.eval()(ids).past_key_values.get_seq_length() == ids.shape[1]


def test_an_untied_output_layer_is_saved_and_loaded_as_a_weight_of_its_own(tmp_path):
    config = tiny_config(tie_word_embeddings=False)
    model = GPT1ForCausalLM(config).eval()
    assert model.lm_head.weight.data_ptr() != model.transformer.token_embeddings.weight.data_ptr()
    model.save_pretrained(tmp_path)
    assert "lm_head.weight" in load_file(tmp_path / "model.safetensors")
    reloaded = GPT1ForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight)
    ids = random_ids(config)
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits)
