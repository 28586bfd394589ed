"""Decode steps through torch.compile (Transformer.compile_decode) give what eager decoding gives."""

import shutil
import warnings

import pytest
import torch

from k1.generate import _left_pad, generate
from k1.model import Transformer
from tests.helpers import tiny_model

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="torch.compile's CPU backend needs a C++ compiler")


def _steps(model: Transformer, prompts, steps: int, quantized_cache: bool = False):
    """Logits of `steps` greedy decode steps after a prefill, and the tokens chosen."""
    ids, mask = _left_pad(prompts, 0, "cpu")
    ragged = not bool(mask.all())
    cache = model.new_cache(len(prompts), capacity=ids.shape[1] + steps, quantized=quantized_cache)
    out, tokens = [], []
    with torch.no_grad():
        logits = model(ids, attention_mask=mask if ragged else None, cache=cache, last_only=True)[:, -1]
        for _ in range(steps):
            nxt = logits.argmax(-1)
            tokens.append(nxt.tolist())
            mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
            logits = model(nxt[:, None], attention_mask=mask if ragged else None, cache=cache, last_only=True)[:, -1]
            out.append(logits)
    return torch.stack(out), tokens


@needs_compiler
@pytest.mark.parametrize("quantize", [False, True])
def test_compiled_decode_matches_eager(quantize):
    """fp32, so any difference is the compiler's and not rounding: batch 1, and a ragged batch of 5
    (tokens * k >= experts: the dense expert path), with the int8 latent cache and int8 weights."""
    model = tiny_model(seed=5)
    if quantize:
        model.quantize("int8")
    for prompts in ([[3, 4, 5, 6]], [[5, 6, 7, 8, 9], [40, 41], [90, 3, 4], [7], [8, 9, 10, 11, 12]]):
        eager, eager_tokens = _steps(model, prompts, 6, quantized_cache=quantize)
        compiled_fn, calls = model.compile_decode()._decode_hidden, []
        model._decode_hidden = lambda *a, fn=compiled_fn, calls=calls: calls.append(1) or fn(*a)
        try:
            with warnings.catch_warnings():
                # a silent fallback to eager decoding would pass vacuously
                warnings.filterwarnings("error", message="compiled decoding failed")
                compiled, compiled_tokens = _steps(model, prompts, 6, quantized_cache=quantize)
        finally:
            model.compile_decode(False)
        assert len(calls) == 6  # every decode step went through the compiled function
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
        assert compiled_tokens == eager_tokens


def test_failed_compile_falls_back_to_eager_with_one_warning():
    model = tiny_model(seed=6)
    prompts = [[3, 4, 5], [6, 7, 8]]
    want = [g.tokens for g in generate(model, prompts, max_new_tokens=5)]
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise torch._dynamo.exc.TorchDynamoException("no compiler here")

    model._decode_hidden = broken
    with pytest.warns(UserWarning, match="compiled decoding failed"):
        got = [g.tokens for g in generate(model, prompts, max_new_tokens=5)]
    assert got == want and len(calls) == 1 and model._decode_hidden is None


def test_compiled_decode_is_not_used_for_training_or_prompts():
    model = tiny_model(seed=7).compile_decode()
    assert not model._compiled_step(torch.zeros(2, 5, dtype=torch.long), model.new_cache(2))
    with torch.enable_grad():
        assert not model._compiled_step(torch.zeros(2, 1, dtype=torch.long), model.new_cache(2))
    with torch.no_grad():
        assert model._compiled_step(torch.zeros(2, 1, dtype=torch.long), model.new_cache(2))


@needs_compiler
def test_compiled_decode_follows_a_dtype_change_and_quantization():
    """The compiled step does not re-check the module's tensors each step; changing them wholesale
    (a dtype, int8 weights) must still give what eager decoding gives."""
    model = tiny_model(seed=8).compile_decode()
    prompts = [[3, 4, 5, 6]]
    _steps(model, prompts, 2)
    for change in (lambda m: m.to(torch.bfloat16), lambda m: m.float().quantize("int8")):
        change(model)
        compiled, tokens = _steps(model, prompts, 4)
        fn = model._decode_hidden
        model._decode_hidden = None
        eager, eager_tokens = _steps(model, prompts, 4)
        model._decode_hidden = fn
        torch.testing.assert_close(compiled.float(), eager.float(), rtol=2e-2, atol=2e-2)
        assert tokens == eager_tokens


@needs_compiler
def test_ragged_decoding_compiles_once_not_per_step():
    """A ragged batch passes a growing mask each step: it must become a symbolic size, not a
    recompilation per step (dynamo stops recompiling after 8 and would quietly run eagerly)."""
    from torch._dynamo.utils import counters

    model = tiny_model(seed=9).compile_decode()
    _steps(model, [[1, 2, 3]], 3)  # compiled without a mask first, as a chat's first reply would be
    prompts = [[5, 6, 7, 8, 9], [40, 41], [90, 3, 4]]
    graphs = counters["stats"]["unique_graphs"]
    _steps(model, prompts, 4)
    # the masked variant, static then symbolic (a broken trace recompiled each layer per step: 13)
    assert counters["stats"]["unique_graphs"] - graphs <= 3
    graphs = counters["stats"]["unique_graphs"]
    compiled, tokens = _steps(model, prompts, 12)
    assert counters["stats"]["unique_graphs"] == graphs
    model.compile_decode(False)
    eager, eager_tokens = _steps(model, prompts, 12)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    assert tokens == eager_tokens
