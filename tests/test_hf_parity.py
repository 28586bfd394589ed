"""k1 and transformers' A.X K1 must compute the same function on the same weights, both ways."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

import k1  # noqa: E402
from k1.generate import generate  # noqa: E402
from tests.helpers import tiny_config, tiny_model  # noqa: E402

TOL = 1e-4


def hf_load(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def hf_positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A k1 model and transformers' load of what k1 saved."""
    model = tiny_model(seed=1)
    path = tmp_path_factory.mktemp("k1") / "model"
    k1.save(model, path)
    return model, hf_load(path)


def test_logits_agree_k1_to_transformers(pair):
    model, hf = pair
    ids = torch.randint(0, 128, (3, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    assert diff < TOL


def test_left_padded_batch_agrees_and_matches_unpadded(pair):
    model, hf = pair
    ids = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        theirs = hf(ids, attention_mask=mask, position_ids=hf_positions(mask)).logits
        alone = model(ids[1:, 6:])
    real = mask.bool()
    assert (ours - theirs)[real].abs().max().item() < TOL
    # padding must not change what the real tokens see
    assert (ours[1, 6:] - alone[0]).abs().max().item() < TOL


def test_long_sequence_exercises_yarn(pair):
    model, hf = pair
    # 300 tokens: past the 128-token original context that YaRN extends by 4x
    ids = torch.randint(0, 128, (1, 300), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    assert diff < TOL


def test_transformers_to_k1(tmp_path):
    from transformers import AXK1Config, AXK1ForCausalLM

    cfg = tiny_config().to_hf_dict()
    torch.manual_seed(3)
    hf = AXK1ForCausalLM(AXK1Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")}))
    with torch.no_grad():
        for m in hf.modules():
            if hasattr(m, "e_score_correction_bias"):
                m.e_score_correction_bias.normal_(0, 0.05)
    hf.eval().save_pretrained(tmp_path / "hf")
    model = k1.load(tmp_path / "hf")
    assert model.config.num_nextn_predict_layers == 0  # transformers writes no MTP weights
    ids = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        diff = (model(ids, attention_mask=mask) - hf(ids, attention_mask=mask, position_ids=hf_positions(mask)).logits)
    assert diff[mask.bool()].abs().max().item() < TOL


def test_sharded_checkpoint_loads_both_ways(tmp_path):
    model = tiny_model(seed=5)
    k1.save(model, tmp_path / "sharded", max_shard_bytes=64 * 1024)
    shards = sorted(p.name for p in (tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    hf = hf_load(tmp_path / "sharded")
    again = k1.load(tmp_path / "sharded")
    ids = torch.randint(0, 128, (1, 16), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() < TOL
        assert torch.equal(model(ids), again(ids))
    # and what transformers re-saves (unsharded, its own writer) loads back in k1
    hf.save_pretrained(tmp_path / "resaved")
    with torch.no_grad():
        assert (k1.load(tmp_path / "resaved")(ids) - model(ids)).abs().max().item() < TOL


def test_greedy_generation_identical(pair):
    model, hf = pair
    prompts = [[5, 17, 33, 2, 9, 70, 11], [40, 41, 42]]
    ours = [g.tokens for g in generate(model, prompts, max_new_tokens=32)]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=32, min_new_tokens=32, do_sample=False,
                          pad_token_id=0, eos_token_id=None)
    theirs = out[:, width:].tolist()
    assert ours == theirs
    assert all(len(t) == 32 for t in ours)
