import json

import pytest

from gpt1 import GPT1Config
from gpt1.model.configuration_gpt1 import GPT1_AUTO_MAP


def test_defaults_are_the_papers():
    config = GPT1Config()
    assert (config.vocab_size, config.n_positions, config.n_embd, config.n_layer, config.n_head) == (
        40478,
        512,
        768,
        12,
        12,
    )
    assert config.n_inner == 4 * 768
    assert config.resid_pdrop == config.embd_pdrop == config.attn_pdrop == 0.1
    assert config.layer_norm_epsilon == 1e-5
    assert config.initializer_range == 0.02
    assert config.tie_word_embeddings is True
    assert config.activation_function == "gelu_pytorch_tanh"
    assert config.auxiliary_lm_loss_weight == 0.5
    assert config.classifier_dropout == 0.1
    assert config.model_type == "gpt1"


def test_attribute_map_gives_the_standard_names():
    config = GPT1Config(n_embd=64, n_head=4, n_layer=3, n_positions=128)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (64, 4, 3)
    assert config.max_position_embeddings == 128
    assert config.intermediate_size == 256
    config.hidden_size = 128
    assert config.n_embd == 128


def test_round_trip_through_json(tmp_path):
    config = GPT1Config(n_layer=3, auxiliary_lm_loss_weight=0.0, pad_token_id=5)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "gpt1"
    assert saved["auto_map"] == GPT1_AUTO_MAP
    loaded = GPT1Config.from_pretrained(tmp_path)
    assert loaded.n_layer == 3 and loaded.auxiliary_lm_loss_weight == 0.0 and loaded.pad_token_id == 5


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (dict(n_embd=100, n_head=12), ["n_embd", "100", "n_head", "12"]),
        (dict(n_layer=0), ["n_layer", "0"]),
        (dict(vocab_size=-3), ["vocab_size", "-3"]),
        (dict(n_positions=1.5), ["n_positions", "1.5"]),
        (dict(attn_pdrop=1.0), ["attn_pdrop", "1.0"]),
        (dict(resid_pdrop=-0.1), ["resid_pdrop", "-0.1"]),
        (dict(classifier_dropout=2), ["classifier_dropout", "2"]),
        (dict(activation_function="gelu_but_wrong"), ["activation_function", "gelu_but_wrong"]),
        (dict(auxiliary_lm_loss_weight=-1), ["auxiliary_lm_loss_weight", "-1"]),
        (dict(layer_norm_epsilon=0), ["layer_norm_epsilon", "0"]),
    ],
)
def test_impossible_values_name_field_and_value(overrides, names):
    with pytest.raises(ValueError) as error:
        GPT1Config(**overrides)
    for name in names:
        assert name in str(error.value)
