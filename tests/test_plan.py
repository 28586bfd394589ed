import pytest

from k1.config import ModelConfig
from k1.errors import ConfigError
from k1.plan import plan


def test_axk1_flops_match_the_technical_report():
    p = plan(ModelConfig.preset("axk1-519b"), 10e12, "1024xH200")
    assert abs(p["train_flops"] / 2.55e24 - 1) < 0.15
    r = p["axk1_report"]
    # 2.55e24 FLOPs on 1,024 H200 (989 dense bf16 TFLOP/s) in 75 days
    assert r["implied_mfu_report_flops"] == pytest.approx(2.55e24 / (1024 * 75 * 86400 * 989e12))
    assert p["expert_parallel"] == 64 and p["experts_per_gpu"] == 3
    assert p["fits"]


def test_more_gpus_less_time_and_memory():
    cfg = ModelConfig.preset("base")
    a, b = plan(cfg, 1e11, "8xH100"), plan(cfg, 1e11, "64xH100")
    assert b["train_days"] == pytest.approx(a["train_days"] / 8)
    key = "optimizer+weights+grads (sharded)"
    assert b["train_gib_per_gpu"][key] == pytest.approx(a["train_gib_per_gpu"][key] / 8)


def test_bad_gpu_spec():
    with pytest.raises(ConfigError, match="COUNTxTYPE"):
        plan(ModelConfig.preset("tiny"), 1e6, "lots of gpus")
    with pytest.raises(ConfigError, match="valid: A100"):
        plan(ModelConfig.preset("tiny"), 1e6, "8xZ9")
