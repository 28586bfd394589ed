"""Fast paths agree with their plain references, forward and backward."""

import torch

from k1 import kernels
from k1.generate import generate
from tests.helpers import tiny_model


def test_grouped_moe_matches_reference_forward_and_backward():
    torch.manual_seed(0)
    n, h, inner, E, k = 50, 32, 24, 8, 3
    x = torch.randn(n, h, requires_grad=True)
    gate_up = torch.randn(E, 2 * inner, h, requires_grad=True)
    down = torch.randn(E, h, inner, requires_grad=True)
    # expert 5 gets no token at all: empty groups must work
    idx = torch.stack([torch.randperm(E - 1)[:k] for _ in range(n)])
    idx[idx == 5] = 7
    idx = torch.stack([row if row.unique().numel() == k else torch.tensor([0, 1, 2]) for row in idx])
    w = torch.rand(n, k)
    grad = torch.randn(n, h)

    outs, grads = [], []
    for fn in (kernels.moe_experts_reference, kernels.moe_experts):
        for t in (x, gate_up, down):
            t.grad = None
        y = fn(x, idx, w, gate_up, down)
        (y * grad).sum().backward()
        outs.append(y.detach())
        grads.append([t.grad.clone() for t in (x, gate_up, down)])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-4)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    with torch.no_grad():  # the decode-sized path: only the chosen experts' weights are read
        few = kernels.moe_experts_gathered(x[:3], idx[:3], w[:3], gate_up, down)
        torch.testing.assert_close(few, kernels.moe_experts_reference(x[:3], idx[:3], w[:3], gate_up, down),
                                   rtol=1e-5, atol=1e-4)


def test_absorbed_decode_matches_decompressed(monkeypatch):
    model = tiny_model(seed=3)
    prompts = [[3, 4, 5, 6, 7, 8], [9, 10]]
    kernels_on = [g.tokens for g in generate(model, prompts, max_new_tokens=16)]
    monkeypatch.setattr(kernels, "ABSORBED_DECODE", False)
    kernels_off = [g.tokens for g in generate(model, prompts, max_new_tokens=16)]
    assert kernels_on == kernels_off

    # and the logits of a decode step agree closely, not just the argmax
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        full = model(ids)[:, -1]
        for flag in (True, False):
            monkeypatch.setattr(kernels, "ABSORBED_DECODE", flag)
            cache = model.new_cache(1)
            model(ids[:, :-1], cache=cache)
            step = model(ids[:, -1:], cache=cache)[:, -1]
            torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-5)


def test_int8_latent_cache_halves_bytes_and_keeps_greedy_outputs():
    """Stated tolerance: decode logits within 2% of their range; greedy tokens unchanged here."""
    model = tiny_model(seed=11)
    prompts = [[3, 4, 5, 6, 7, 8, 9, 10], [20, 21, 22]]
    plain = [g.tokens for g in generate(model, prompts, max_new_tokens=24)]
    quant = [g.tokens for g in generate(model, prompts, max_new_tokens=24, quantized_cache=True)]
    assert plain == quant
    # the per-token scales weigh little at real widths (small preset: 128 + 32 values per layer)
    from k1.config import ModelConfig
    from k1.model import LatentCache

    small = ModelConfig.preset("small")
    q = LatentCache(small, 1, dtype=torch.bfloat16, quantized=True)
    b = LatentCache(small, 1, dtype=torch.bfloat16)
    assert q.bytes_per_token() / b.bytes_per_token() <= 0.55
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10, 11]])
    with torch.no_grad():
        ref = model(ids)[:, -1]
        cache = model.new_cache(1, quantized=True)
        model(ids[:, :-1], cache=cache)
        step = model(ids[:, -1:], cache=cache)[:, -1]
    assert (step - ref).abs().max() <= 0.02 * (ref.max() - ref.min())


def test_fused_linear_cross_entropy_matches_reference():
    torch.manual_seed(1)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    t[[3, 9]] = -100  # ignored positions
    ref = kernels.linear_cross_entropy_reference(h, w, t)
    g_ref = torch.autograd.grad(ref * 2.5, (h, w))
    got = kernels.linear_cross_entropy(h, w, t, chunk=8)  # several chunks, a ragged last one
    g_got = torch.autograd.grad(got * 2.5, (h, w))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_got, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_model_loss_path_matches_logits_path():
    """model(labels=...) must give the loss one computes from the logits, MTP depths included."""
    import torch.nn.functional as F

    model = tiny_model(seed=5)
    ids = torch.randint(0, 128, (2, 17))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    out = model(inputs, labels=targets, return_mtp=True)
    logits, mtp = model(inputs, return_mtp=True)
    ref = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)
    ref_mtp = F.cross_entropy(mtp[0].flatten(0, 1), targets[:, 1:].flatten())
    torch.testing.assert_close(out["mtp_losses"][0], ref_mtp, rtol=1e-5, atol=1e-6)
