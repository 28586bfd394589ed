"""Model directories: round trips, MTP, release naming, and one-line errors for broken input."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import k1
from k1 import checkpoint
from k1.cli import main
from k1.errors import CheckpointError
from tests.helpers import tiny_model


@pytest.fixture
def saved(tmp_path):
    model = tiny_model(seed=2)
    path = tmp_path / "m"
    k1.save(model, path)
    return model, path


def cli_error(capsys, path) -> str:
    """Run `k1 model check PATH`; it must fail with exit 2 and a single line, no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(["model", "check", str(path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_round_trip_keeps_every_tensor_including_mtp(saved):
    model, path = saved
    again = k1.load(path)
    assert again.config.num_nextn_predict_layers == 1
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_release_layout_names(saved):
    _, path = saved
    names = set(load_file(path / "model.safetensors"))
    L = 3
    assert "model.layers.1.mlp.experts.7.gate_proj.weight" in names
    assert "model.layers.1.post_mlp_layernorm.weight" in names  # layer level, as released
    assert "model.layers.1.mlp.experts.gate_up_proj" not in names
    assert {f"model.layers.{L}.enorm.weight", f"model.layers.{L}.eh_proj.weight",
            f"model.layers.{L}.shared_head.norm.weight", f"model.layers.{L}.shared_head.head.weight",
            f"model.layers.{L}.embed_tokens.weight"} <= names
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "axk1" and cfg["mlp_layer_types"][0] == "dense"


def test_release_extras_are_tolerated(saved, tmp_path):
    """The release stores post_mlp_layernorm for dense layers too, and may route without a bias."""
    model, path = saved
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.0.post_mlp_layernorm.weight"] = torch.ones(64)
    del tensors["model.layers.1.mlp.gate.e_score_correction_bias"]
    save_file(tensors, path / "model.safetensors")
    again = k1.load(path)
    assert torch.count_nonzero(again.model.layers[1].mlp.gate.e_score_correction_bias) == 0


def test_fused_expert_layout_is_read(saved):
    model, path = saved
    tensors = load_file(path / "model.safetensors")
    for layer in (1, 2):
        p = f"model.layers.{layer}.mlp.experts."
        gate = torch.stack([tensors.pop(f"{p}{e}.gate_proj.weight") for e in range(8)])
        up = torch.stack([tensors.pop(f"{p}{e}.up_proj.weight") for e in range(8)])
        tensors[p + "gate_up_proj"] = torch.cat((gate, up), 1)
        tensors[p + "down_proj"] = torch.stack([tensors.pop(f"{p}{e}.down_proj.weight") for e in range(8)])
    save_file(tensors, path / "model.safetensors")
    ids = torch.arange(12)[None]
    with torch.no_grad():
        assert torch.equal(k1.load(path)(ids), model(ids))


def test_q_lora_rank_none_round_trip(tmp_path):
    model = tiny_model(seed=4, q_lora_rank=None)
    k1.save(model, tmp_path / "m")
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert torch.equal(k1.load(tmp_path / "m")(ids), model(ids))


def test_bf16_save_and_load(tmp_path):
    model = tiny_model(seed=6)
    k1.save(model, tmp_path / "m", dtype="bfloat16")
    again = k1.load(tmp_path / "m")
    assert again.model.embed_tokens.weight.dtype == torch.bfloat16
    assert again.model.layers[1].mlp.gate.e_score_correction_bias.dtype == torch.float32


def test_not_a_directory(tmp_path, capsys):
    assert "no such directory" in cli_error(capsys, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "no config.json" in cli_error(capsys, tmp_path / "empty")


def test_wrong_model_type(saved, capsys):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["model_type"] = "llama"
    (path / "config.json").write_text(json.dumps(cfg))
    err = cli_error(capsys, path)
    assert "config.json" in err and "llama" in err and "axk1" in err


def test_missing_extra_and_misshaped_tensors(saved, capsys):
    _, path = saved
    f = path / "model.safetensors"
    original = load_file(f)

    broken = dict(original)
    del broken["model.layers.2.self_attn.kv_b_proj.weight"]
    save_file(broken, f)
    assert "model.layers.2.self_attn.kv_b_proj.weight is missing" in cli_error(capsys, path)

    broken = dict(original)
    broken["model.layers.1.self_attn.surprise.weight"] = torch.zeros(2)
    save_file(broken, f)
    err = cli_error(capsys, path)
    assert "unexpected tensor model.layers.1.self_attn.surprise.weight" in err and "model.safetensors" in err

    broken = dict(original)
    broken["model.layers.0.mlp.up_proj.weight"] = torch.zeros(5, 5)
    save_file(broken, f)
    err = cli_error(capsys, path)
    assert "model.layers.0.mlp.up_proj.weight has shape (5, 5)" in err and "model.safetensors" in err


def test_truncated_safetensors(saved, capsys):
    _, path = saved
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    err = cli_error(capsys, path)
    assert "model.safetensors" in err and "truncated" in err


def test_save_is_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous directory intact and no half-written one."""
    first = tiny_model(seed=7)
    path = tmp_path / "m"
    k1.save(first, path)
    before = sorted(p.name for p in tmp_path.iterdir())

    import safetensors.torch

    def crash(*args, **kwargs):
        open(args[1], "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError):
        k1.save(tiny_model(seed=8), path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp directory left behind
    ids = torch.arange(8)[None]
    with torch.no_grad():
        assert torch.equal(k1.load(path)(ids), first(ids))


def test_tensor_from_an_unknown_layer(saved):
    _, path = saved
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.9.input_layernorm.weight"] = torch.ones(64)
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError, match="layer 9"):
        checkpoint.load(path)
