"""Fast paths agree with their plain references, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from k1 import kernels
from k1.generate import generate
from tests.helpers import tiny_model


@pytest.mark.parametrize("n", [50, 400])
def test_grouped_moe_matches_reference_forward_and_backward(n):
    torch.manual_seed(0)
    h, inner, E, k = 32, 24, 8, 3
    # 400 tokens: every expert's group padded to a multiple of 32 rows; 50: no padding
    assert (kernels._group_block(n * k, E) > 1) == (n == 400)
    x = torch.randn(n, h, requires_grad=True)
    gate_up = torch.randn(E, 2 * inner, h, requires_grad=True)
    down = torch.randn(E, h, inner, requires_grad=True)
    # expert 5 gets no token at all: empty groups must work
    idx = torch.stack([torch.randperm(E - 1)[:k] for _ in range(n)])
    idx[idx == 5] = 7
    idx = torch.stack([row if row.unique().numel() == k else torch.tensor([0, 1, 2]) for row in idx])
    w = torch.rand(n, k, requires_grad=True)  # the router's weights are trained through this
    grad = torch.randn(n, h)

    outs, grads = [], []
    for fn in (kernels.moe_experts_reference, kernels.moe_experts):
        for t in (x, gate_up, down, w):
            t.grad = None
        y = fn(x, idx, w, gate_up, down)
        (y * grad).sum().backward()
        outs.append(y.detach())
        grads.append([t.grad.clone() for t in (x, gate_up, down, w)])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-4)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    # The grouped path writes the SwiGLU's gradient over its input: a second backward through the
    # same forward would read that gradient as the input, so it refuses instead.
    if kernels._HAS_GROUPED_MM:
        y = kernels.moe_experts(x, idx, w, gate_up, down)
        (y * grad).sum().backward(retain_graph=True)
        with pytest.raises(RuntimeError, match="one backward pass"):
            (y * grad).sum().backward()
    with torch.no_grad():  # the decode-sized path: only the chosen experts' weights are read
        ref = kernels.moe_experts_reference(x[:3], idx[:3], w[:3], gate_up, down)
        for fast in (kernels.moe_experts_gathered, kernels.moe_experts_copied):
            torch.testing.assert_close(fast(x[:3], idx[:3], w[:3], gate_up, down), ref, rtol=1e-5, atol=1e-4)


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

    # The absorbed path keeps rearranged copies of kv_b_proj: a weight changed in place (an
    # optimizer step) must reach the next decode step, not the stale copies.
    monkeypatch.setattr(kernels, "ABSORBED_DECODE", True)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.kv_b_proj.weight.mul_(1.5)
        full = model(ids)[:, -1]
        cache = model.new_cache(1)
        model(ids[:, :-1], cache=cache)
        torch.testing.assert_close(model(ids[:, -1:], cache=cache)[:, -1], full, rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("block_rows", [None, 3])
def test_fused_linear_cross_entropy_matches_reference(monkeypatch, block_rows):
    if block_rows:  # softmax blocks of 3 rows: ragged against the chunks of 8
        monkeypatch.setattr(kernels, "_SOFTMAX_BLOCK_BYTES", 4 * 50 * block_rows)
        # and the weight gradient summed over the chunks in blocks of 16 of the 50 columns
        monkeypatch.setattr(kernels, "_GRAD_ADD_BLOCK_BYTES", 4 * 16 * 16)
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
    with torch.no_grad():  # loss only: no gradient buffers, same value
        torch.testing.assert_close(kernels.linear_cross_entropy(h, w, t, chunk=8), ref, rtol=1e-5, atol=1e-6)
    # Two losses before one backward (main head + MTP depth): the second call reuses the
    # scratch buffers and must not disturb what the first saved for backward.
    t2 = t.roll(1)
    both = kernels.linear_cross_entropy(h, w, t, chunk=8) + kernels.linear_cross_entropy(h, w, t2, chunk=8)
    ref_both = kernels.linear_cross_entropy_reference(h, w, t) + kernels.linear_cross_entropy_reference(h, w, t2)
    for a, b in zip(torch.autograd.grad(both, (h, w)), torch.autograd.grad(ref_both, (h, w)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The gradients it computed are handed over, not copied: a second backward through the same
    # forward has nothing left to give and says so instead of returning stale numbers.
    once = kernels.linear_cross_entropy(h, w, t, chunk=8)
    once.backward(retain_graph=True)
    torch.testing.assert_close(w.grad, g_ref[1] / 2.5, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="one backward pass"):
        once.backward()


def test_fused_linear_cross_entropy_bf16_autocast(monkeypatch):
    """Under bf16 autocast both paths round the logits to bf16; the fused one also keeps its
    gradient in bf16, so gradients agree to bf16 precision and the loss closely."""
    monkeypatch.setattr(kernels, "_SOFTMAX_BLOCK_BYTES", 4 * 300 * 5)
    torch.manual_seed(2)
    h = torch.randn(64, 32, requires_grad=True)
    w = torch.randn(300, 32, requires_grad=True)
    t = torch.randint(0, 300, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = kernels.linear_cross_entropy_reference(h, w, t)
        got = kernels.linear_cross_entropy(h, w, t, chunk=16)
    g_ref = torch.autograd.grad(ref, (h, w))
    g_got = torch.autograd.grad(got, (h, w))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_got, g_ref, strict=True):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).abs().max() <= 0.02 * b.abs().max()


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


@pytest.mark.parametrize("rows", [1, 3, 16, 17])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_small_row_linear_matches_f_linear(rows, dtype):
    """Decode-sized inference rows take the weight @ x.T / matrix-vector path; the result is
    F.linear's (to the dtype's rounding), for 3-D inputs and with a bias too."""
    torch.manual_seed(rows)
    w, b = torch.randn(40, 24, dtype=dtype), torch.randn(40, dtype=dtype)
    x = torch.randn(1, rows, 24, dtype=dtype)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    with torch.no_grad():
        for bias in (None, b):
            got = kernels.linear(x, w, bias)
            assert got.shape == (1, rows, 40) and got.is_contiguous()
            torch.testing.assert_close(got, F.linear(x, w, bias), **tol)
    xg = x.clone().requires_grad_()  # training keeps F.linear (and its autograd)
    kernels.linear(xg, w).float().sum().backward()
    assert xg.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_reference_forward_and_backward(dtype):
    torch.manual_seed(3)
    x = torch.randn(2, 5, 48, dtype=dtype, requires_grad=True)
    w = (torch.rand(48) + 0.5).to(dtype).requires_grad_()
    grad = torch.randn(2, 5, 48, dtype=dtype)
    results = []
    for fn in (kernels.rms_norm_reference, kernels.rms_norm):
        y = fn(x, w, 1e-6)
        results.append((y.detach(), *torch.autograd.grad(y, (x, w), grad)))
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)  # same forward arithmetic
    for a, b in zip(results[1][1:], results[0][1:], strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("rows", [1, 5, 16, 17])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_matches_dequantized_weights(rows, dtype):
    """Direct int8 rows (up to INT8_DIRECT_ROWS) and the dequantizing path for more agree with
    F.linear on the dequantized weights; the quantization itself is within half a step per row."""
    torch.manual_seed(rows)
    w, b = torch.randn(40, 32), torch.randn(40, dtype=dtype)
    values, scale = kernels.quantize_int8(w)
    assert values.dtype == torch.int8 and scale.shape == (40,)
    assert ((values.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6).all()
    x = torch.randn(2, rows, 32, dtype=dtype)
    ref_w = kernels.dequantize_int8(values, scale, dtype)
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 5e-2}
    with torch.no_grad():
        for bias in (None, b):
            got = kernels.linear_int8(x, values, scale.to(dtype), bias)
            assert got.shape == (2, rows, 40) and got.dtype == dtype
            torch.testing.assert_close(got, F.linear(x, ref_w, bias), **tol)


@pytest.mark.parametrize("tokens", [1, 3, 40])
def test_int8_experts_match_reference_on_dequantized_weights(tokens):
    torch.manual_seed(tokens)
    E, H, inner, k = 6, 16, 8, 2
    gate_up, down = torch.randn(E, 2 * inner, H), torch.randn(E, H, inner)
    (gu_q, gu_s), (d_q, d_s) = kernels.quantize_int8(gate_up), kernels.quantize_int8(down)
    x = torch.randn(tokens, H)
    idx = torch.stack([torch.randperm(E)[:k] for _ in range(tokens)])
    weights = torch.rand(tokens, k)
    with torch.no_grad():
        got = kernels.moe_experts_int8(x, idx, weights, gu_q, gu_s, d_q, d_s)
        ref = kernels.moe_experts_reference(
            x, idx, weights, kernels.dequantize_int8(gu_q, gu_s, x.dtype), kernels.dequantize_int8(d_q, d_s, x.dtype)
        )
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_int8_model_stays_close_and_is_inference_only(tmp_path):
    """Stated tolerance for int8 weights (same form as bf16's in test_generate): logits within 5%
    of the fp32 logits' spread, the same top-1 token at >= 90% of positions; cached decoding of
    the quantized model equals its own recomputation; training and saving it are refused."""
    import k1
    from k1.errors import CheckpointError, ConfigError

    model = tiny_model(seed=21)
    ids = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(0))
    k1.save(model, tmp_path / "m")
    q = k1.load(tmp_path / "m", quantize="int8")
    assert q.quantized == "int8" and q.lm_head.weight is None and q.lm_head.weight_int8.dtype == torch.int8
    assert q.num_parameters == model.num_parameters
    with torch.no_grad():
        ref, low = model(ids), q(ids)
    assert (low - ref).abs().max() <= 0.05 * (ref.max() - ref.min())
    assert (low.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    prompts = [[5, 6, 7, 8, 9, 10, 11], [40, 41]]
    together = [g.tokens for g in generate(q, prompts, max_new_tokens=8)]
    with torch.no_grad():  # greedy by full recomputation, no cache: the int8 decode path agrees
        for prompt, out in zip(prompts, together, strict=True):
            seq = list(prompt)
            for _ in out:
                seq.append(int(q(torch.tensor([seq]))[0, -1].argmax()))
            assert seq[len(prompt):] == out
    with pytest.raises(ValueError, match="quantized"):
        q(ids, labels=ids)
    with pytest.raises(CheckpointError, match="quantized"):
        k1.save(q, tmp_path / "again")
    with pytest.raises(ConfigError, match="int8"):
        k1.load(tmp_path / "m", quantize="int4")


@pytest.mark.parametrize("tokens", [1, 3, 8])
def test_compile_friendly_experts_match_reference(tokens):
    """The formulations torch.compile decodes with, run eagerly: indexed (few tokens) and dense
    (tokens * k >= experts), in fp32 so the comparison is tight; int8 experts with their scales."""
    torch.manual_seed(tokens)
    E, H, inner, k = 6, 16, 8, 2
    gate_up, down = torch.randn(E, 2 * inner, H), torch.randn(E, H, inner)
    x = torch.randn(tokens, H)
    idx = torch.stack([torch.randperm(E)[:k] for _ in range(tokens)])
    weights = torch.rand(tokens, k)
    with torch.no_grad():
        ref = kernels.moe_experts_reference(x, idx, weights, gate_up, down)
        torch.testing.assert_close(kernels.moe_experts_indexed(x, idx, weights, gate_up, down), ref, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(kernels.moe_experts_dense(x, idx, weights, gate_up, down), ref, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(kernels.moe_experts(x, idx, weights, gate_up, down), ref, rtol=1e-5, atol=1e-4)
        (gu_q, gu_s), (d_q, d_s) = kernels.quantize_int8(gate_up), kernels.quantize_int8(down)
        ref8 = kernels.moe_experts_reference(x, idx, weights, kernels.dequantize_int8(gu_q, gu_s, x.dtype),
                                             kernels.dequantize_int8(d_q, d_s, x.dtype))
        got8 = kernels.moe_experts_indexed(x, idx, weights, gu_q, d_q, gu_s, d_s)
        torch.testing.assert_close(got8, ref8, rtol=1e-4, atol=1e-4)
        w = torch.randn(40, H)
        b = torch.randn(40)
        torch.testing.assert_close(kernels.linear_fused(x[:1], w, b), F.linear(x[:1], w, b), rtol=1e-5, atol=1e-5)
        q, s = kernels.quantize_int8(w)
        torch.testing.assert_close(kernels.linear_fused(x[:1], q, None, s),
                                   F.linear(x[:1], kernels.dequantize_int8(q, s, x.dtype)), rtol=1e-5, atol=1e-5)


def test_kept_bytes_counts_the_fused_loss_buffers():
    """The benchmark adds these to k1's training memory: they must include the loss's buffers."""
    h = torch.randn(300, 64, requires_grad=True)
    w = torch.randn(1000, 64, requires_grad=True)
    kernels.linear_cross_entropy(h, w, torch.randint(0, 1000, (300,)), chunk=256).backward()
    logits, grad_wt = 256 * 1000 * 4, 64 * 1000 * 4  # fp32 here: no autocast
    assert kernels.kept_bytes() >= logits + 2 * grad_wt
