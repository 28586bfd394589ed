"""The generation API: greedy, sampling, stops, ragged batches, bf16."""

import pytest
import torch

from k1.generate import SamplingParams, filtered_probs, generate, sample_next
from tests.helpers import tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=21)


def test_ragged_batch_equals_each_prompt_alone(model):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [40, 41], [90, 3, 4, 5]]
    together = [g.tokens for g in generate(model, prompts, max_new_tokens=12)]
    alone = [generate(model, [p], max_new_tokens=12)[0].tokens for p in prompts]
    assert together == alone


def test_sampling_is_seeded_and_top_k_1_is_greedy(model):
    prompts = [[1, 2, 3], [4, 5]]
    kw = dict(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=20)
    a = [g.tokens for g in generate(model, prompts, seed=7, **kw)]
    b = [g.tokens for g in generate(model, prompts, seed=7, **kw)]
    c = [g.tokens for g in generate(model, prompts, seed=8, **kw)]
    assert a == b and a != c
    greedy = [g.tokens for g in generate(model, prompts, max_new_tokens=10)]
    top1 = [g.tokens for g in generate(model, prompts, max_new_tokens=10, temperature=0.8, top_k=1, seed=3)]
    assert top1 == greedy


def test_top_p_keeps_only_the_nucleus():
    logits = torch.tensor([[4.0, 3.9, 0.0, -1.0, -2.0]])
    # probabilities about 0.52, 0.47, 0.01, ...: a 0.6 nucleus holds the first two tokens only
    params = SamplingParams(temperature=1.0, top_p=0.6)
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, params, g)) for _ in range(200)}
    assert draws <= {0, 1} and len(draws) == 2


@pytest.mark.parametrize("extra", [{}, {"top_k": 3}, {"top_p": 0.5}])
def test_a_tiny_temperature_samples_the_best_token_not_nan(extra):
    """A temperature of 1e-186 (the API's fuzzer sent one) divided the logits into +-inf and the
    softmax into NaN, which multinomial refused: the server answered 500."""
    logits = torch.tensor([[2.0, 7.5, -3.0, 7.0], [-40.0, -1.0, -2.0, -3.0]], dtype=torch.bfloat16)
    params = SamplingParams(temperature=3.9e-186, **extra)
    probs = filtered_probs(logits, params)
    assert torch.isfinite(probs).all()
    assert torch.equal(probs, torch.nn.functional.one_hot(torch.tensor([1, 1]), 4).float())
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, params, g).tolist() == [1, 1]


def test_stop_token_ends_one_sequence_not_the_others(model):
    prompts = [[5, 6, 7], [8, 9, 10]]
    free = generate(model, prompts, max_new_tokens=12)
    stop = free[0].tokens[3]
    out = generate(model, prompts, max_new_tokens=12, stop_token_ids=[stop])
    assert out[0].finish_reason == "stop" and out[0].tokens == free[0].tokens[: free[0].tokens.index(stop)]
    if stop not in free[1].tokens:
        assert out[1].finish_reason == "length" and out[1].tokens == free[1].tokens


def test_bad_requests_are_refused(model):
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], max_new_tokens=3)
    with pytest.raises(ValueError, match="exceeds the context"):
        generate(model, [[1, 2]], max_new_tokens=10_000)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1, 2]], max_new_tokens=3, top_p=0.0)


def test_bf16_weights_stay_close_to_fp32(model):
    """Stated tolerance for bf16 inference: logits within 5% of the fp32 logits' spread (max abs
    error over all positions), and the same top-1 token at >= 90% of positions (random weights
    have near-ties that bf16 rounding may flip)."""
    ids = torch.randint(0, 128, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids)
        half = tiny_model(seed=21).to(torch.bfloat16)
        low = half(ids).float()
    assert (low - ref).abs().max() <= 0.05 * (ref.max() - ref.min())
    assert (low.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
