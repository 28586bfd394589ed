import pytest

from k1.config import PRESETS, ModelConfig
from k1.errors import ConfigError


def test_axk1_519b_counts_without_allocating():
    p = ModelConfig.preset("axk1-519b").param_counts()
    assert abs(p["total"] / 519e9 - 1) < 0.01
    assert abs(p["active"] / 33e9 - 1) < 0.01


def test_counts_match_an_allocated_model():
    from k1.model import Transformer

    for name in ("tiny", "small"):
        cfg = ModelConfig.preset(name)
        model = Transformer(cfg)
        main = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("mtp."))
        mtp = sum(p.numel() for n, p in model.named_parameters() if n.startswith("mtp."))
        counts = cfg.param_counts()
        assert counts["total"] == main
        assert counts["mtp"] == mtp


def test_unknown_preset_and_key_list_valid_ones():
    with pytest.raises(ConfigError, match="valid: axk1-519b, base, small, tiny"):
        ModelConfig.preset("huge")
    with pytest.raises(ConfigError, match="did you mean 'hidden_size'"):
        ModelConfig.preset("tiny", hiden_size=3)


def test_invalid_values_are_rejected():
    with pytest.raises(ConfigError, match="n_group"):
        ModelConfig.preset("tiny", n_group=3)
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        ModelConfig.preset("tiny", num_experts_per_tok=99)


def test_hf_dict_round_trip():
    for cfg in PRESETS.values():
        assert ModelConfig.from_hf_dict(cfg.to_hf_dict()) == cfg


def test_legacy_rope_scaling_form_is_read():
    d = ModelConfig.preset("tiny").to_hf_dict()
    rope = d.pop("rope_parameters")
    d["rope_theta"] = rope.pop("rope_theta")
    d["rope_scaling"] = {**rope, "type": rope.pop("rope_type")}
    d.pop("mlp_layer_types")
    d["first_k_dense_replace"] = 1
    assert ModelConfig.from_hf_dict(d) == ModelConfig.preset("tiny")
