"""bf16 weights packed for oneDNN (Transformer.pack_weights): the same results as the weights
themselves, remade when the weights change, never in the way of training, copying or saving."""

import copy
import io
import shutil

import pytest
import torch
import torch.nn.functional as F

from k1 import kernels
from k1.model import Linear, MoE
from tests.helpers import tiny_model
from tests.test_compiled_decode import _steps

pytestmark = pytest.mark.skipif(not kernels.can_pack(torch.zeros(1, dtype=torch.bfloat16)),
                                reason="this torch's oneDNN has no bf16 packed linear on this CPU")

RAGGED = [[5, 6, 7, 8, 9], [40, 41], [90, 3, 4], [7], [8, 9, 10, 11, 12]]  # 5 x k=2 >= 8 experts: dense


def _close(got: torch.Tensor, want: torch.Tensor, share: float = 0.02):
    """Within `share` of the reference's spread (bf16 rounds each product's output)."""
    got, want = got.float(), want.float()
    assert (got - want).abs().max() <= share * (want.max() - want.min())


@pytest.mark.parametrize("rows", [1, 3, 17, 300])
def test_packed_linear_matches_f_linear(rows):
    torch.manual_seed(rows)
    w, b = torch.randn(40, 24, dtype=torch.bfloat16), torch.randn(40, dtype=torch.bfloat16)
    x = torch.randn(2, rows, 24, dtype=torch.bfloat16)
    packed = kernels.pack_weight(w)
    for bias in (None, b):
        got = kernels.linear_packed(x, packed, 40, bias)
        assert got.shape == (2, rows, 40) and got.dtype == torch.bfloat16
        _close(got, F.linear(x.float(), w.float(), None if bias is None else bias.float()), 0.01)


@pytest.mark.parametrize("tokens", [3, 5])
def test_dense_packed_moe_matches_reference(tokens):
    """Routed experts (every expert on every token, the unchosen weighted zero) plus the shared
    expert, from two packed products."""
    torch.manual_seed(tokens)
    E, H, inner, shared, k = 6, 16, 8, 12, 2
    gate_up = torch.randn(E, 2 * inner, H, dtype=torch.bfloat16)
    down = torch.randn(E, H, inner, dtype=torch.bfloat16)
    s_gate, s_up, s_down = (torch.randn(shared, H, dtype=torch.bfloat16), torch.randn(shared, H, dtype=torch.bfloat16),
                            torch.randn(H, shared, dtype=torch.bfloat16))
    x = torch.randn(tokens, H, dtype=torch.bfloat16)
    idx = torch.stack([torch.randperm(E)[:k] for _ in range(tokens)])
    weights = torch.rand(tokens, k, dtype=torch.bfloat16)
    packed = kernels.pack_moe(gate_up, down, s_gate, s_up, s_down)
    got = kernels.moe_dense_packed(x, idx, weights, *packed, E, inner, shared)
    xf = x.float()
    want = kernels.moe_experts_reference(xf, idx, weights.float(), gate_up.float(), down.float())
    want = want + F.linear(F.silu(F.linear(xf, s_gate.float())) * F.linear(xf, s_up.float()), s_down.float())
    assert got.shape == (tokens, H)
    _close(got, want, 0.02)


def test_packed_decoding_matches_unpacked_and_uses_the_packs(monkeypatch):
    model = tiny_model(seed=5).to(torch.bfloat16)
    model.pack_weights()
    packed = model._packed_modules
    assert sum(isinstance(m, Linear) for m in packed) > 10 and sum(isinstance(m, MoE) for m in packed) == 3  # 2 layers, MTP
    calls = {"linear": 0, "experts": 0}
    for name, key in (("linear_packed", "linear"), ("moe_dense_packed", "experts")):
        fn = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, fn=fn, key=key: calls.__setitem__(key, calls[key] + 1) or fn(*a))
    for prompts in ([[3, 4, 5, 6]], RAGGED):
        got, got_tokens = _steps(model, prompts, 6)
        model.pack_weights(False)
        want, want_tokens = _steps(model, prompts, 6)
        model.pack_weights()
        _close(got, want)
        assert got_tokens == want_tokens
    # dense experts in 2 MoE layers: the 4-token prompt (4 x k=2 >= 8 experts) and 6 steps of the batch of 5
    assert calls["linear"] > 100 and calls["experts"] == 2 * (1 + 6)


def test_moe_without_a_shared_expert_decodes_with_and_without_packs():
    """n_shared_experts = 0 leaves the shared expert's weights empty: skipped, and left out of the
    packs (oneDNN has no product of width zero)."""
    model = tiny_model(seed=3, n_shared_experts=0).to(torch.bfloat16)
    want, want_tokens = _steps(model, RAGGED, 4)
    model.pack_weights()
    assert sum(isinstance(m, MoE) for m in model._packed_modules) == 3
    got, tokens = _steps(model, RAGGED, 4)
    _close(got, want)
    assert tokens == want_tokens


def test_packs_follow_weight_changes_and_step_aside_for_fp32():
    model, other = tiny_model(seed=5).to(torch.bfloat16), tiny_model(seed=6).to(torch.bfloat16)
    ids = torch.randint(0, 128, (3, 9), generator=torch.Generator().manual_seed(1))
    model.pack_weights()
    with torch.no_grad():
        model(ids)
        model.lm_head.weight.mul_(-2.0)  # in place: the pack must be remade
        model.model.layers[1].mlp.experts.down_proj.mul_(3.0)
        model.model.layers[2].mlp.shared_experts.up_proj.weight.mul_(-1.0)
        got = model(ids)
        model.pack_weights(False)
        want = model(ids)
        _close(got, want)
        model.pack_weights()
        model.load_state_dict(other.state_dict())
        _close(model(ids), other(ids))
        model.float()  # not bf16 any more: the packs are dropped, results are exactly fp32's
        assert torch.equal(model(ids), other.float()(ids))
    assert all(m._packed is None for m in model._packed_modules)


def test_model_level_refresh_sees_changed_replaced_and_removed_weights():
    # What compiled decode steps run before each step (a graph cannot look): its quick check must
    # miss no change that the modules' own checks would see.
    model = tiny_model(seed=5).to(torch.bfloat16).pack_weights()
    attn, mlp = model.model.layers[2].self_attn, model.model.layers[1].mlp
    x = torch.randn(3, attn.o_proj.in_features, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(3))
    model.refresh_packed()
    packs = (attn.o_proj._packed, mlp._packed)
    model.refresh_packed()  # nothing changed: the same packs
    assert (attn.o_proj._packed, mlp._packed) == packs
    with torch.no_grad():
        mlp.experts.gate_up_proj.mul_(2.0)  # in place
    attn.o_proj.weight = torch.nn.Parameter(attn.o_proj.weight.detach() * -1.0)  # replaced
    model.refresh_packed()
    assert attn.o_proj._packed is not packs[0] and mlp._packed is not packs[1]
    with torch.no_grad():
        want = F.linear(x, attn.o_proj.weight)
        _close(kernels.linear_packed(x, attn.o_proj._packed[0], attn.o_proj.out_features), want)
    attn.o_proj.quantize_int8()  # removed: the pack goes
    model.refresh_packed()
    assert attn.o_proj._packed is None and mlp._packed is not None
    packs = mlp._packed
    old = mlp.shared_experts.up_proj  # a submodule swapped for another: the MoE's pack is remade
    mlp.shared_experts.up_proj = Linear(old.in_features, old.out_features, bias=False).to(torch.bfloat16)
    model.refresh_packed()
    assert mlp._packed is not packs


def test_packed_model_trains_copies_and_pickles():
    model = tiny_model(seed=5).to(torch.bfloat16).pack_weights()
    reference = tiny_model(seed=5).to(torch.bfloat16)
    ids = torch.randint(0, 128, (2, 8), generator=torch.Generator().manual_seed(2))
    for m in (model, reference):
        m.train()
        m(ids[:, :-1], labels=ids[:, 1:])["loss"].backward()
    # gradients flow through the weights themselves, exactly as without packs
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name
    model.eval()
    clone = copy.deepcopy(model)  # oneDNN's packed tensors cannot be copied: the copy comes unpacked
    torch.save(model, io.BytesIO())
    assert all(m._packed is None for m in clone._packed_modules)
    with torch.no_grad():
        _close(clone(ids), model(ids))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
@pytest.mark.parametrize("direct", [True, False])
def test_compiled_decode_packs_and_follows_changes(direct, monkeypatch):
    # Other tests' models compiled the same code; past dynamo's recompile limit it would run eagerly.
    torch._dynamo.reset()
    if not direct:  # as where inductor's internals differ: the graphs call the custom op
        monkeypatch.setattr(kernels, "_let_inductor_call_packed", lambda: False)
        monkeypatch.setattr(kernels, "_packed_in_graphs", False)
    model = tiny_model(seed=5).to(torch.bfloat16)
    eager, eager_tokens = _steps(model, RAGGED, 5)
    model.compile_decode()
    assert model._packed_modules
    assert kernels._packed_in_graphs == direct  # the tested torch lets graphs call oneDNN directly
    with torch.profiler.profile() as prof:
        compiled, tokens = _steps(model, RAGGED, 5)
    # the packs are in the graph: oneDNN called by the compiled code itself (no Python between),
    # or through the custom op
    op = "mkldnn::_linear_pointwise" if direct else "k1::linear_packed"
    assert any(e.name == op and _in_compiled_graph(e) for e in prof.events())
    assert not (direct and any(e.name == "k1::linear_packed" for e in prof.events()))
    _close(compiled, eager)
    assert tokens == eager_tokens
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)
        model.model.layers[2].self_attn.o_proj.weight.mul_(2.0)
    compiled, tokens = _steps(model, RAGGED, 3)
    model._decode_hidden = None  # eager, with the packs (remade, as the test above shows)
    eager, eager_tokens = _steps(model, RAGGED, 3)
    _close(compiled, eager)
    assert tokens == eager_tokens


def _in_compiled_graph(event) -> bool:
    while event is not None:
        if event.name.startswith(("## Call CompiledFxGraph", "Torch-Compiled Region")):
            return True
        event = event.cpu_parent
    return False
