"""The continuous-batching engine: same tokens as plain generation whatever joins the batch, MTP
speculative decoding that changes speed but not output, stop strings, logprobs, think cap,
cancellation and the queue limit."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from k1.engine import Engine, EngineConfig, QueueFull, RequestParams, speculative_sample
from k1.generate import generate
from tests.serve_helpers import TRANSCRIPTS, fixtures, one_thread


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def fx():
    return fixtures()


def tokens(req) -> tuple[list[int], object]:
    ids, last = [], None
    for last in req:
        ids += last.token_ids
    return ids, last


@pytest.mark.parametrize("speculative", ["off", "auto"])
def test_continuous_batching_matches_generate(fx, speculative):
    """Requests of different lengths, more than there are slots, some arriving while others decode:
    each gets exactly the tokens `k1.generate` gives it alone (slots move when others finish).
    With speculative="auto" the random MTP head's drafts are mostly rejected: the rejection path."""
    tok, model = fx.tok, fx.random
    prompts = [tok.encode(f"prompt {i} " + "안녕하세요 " * (i % 4)) for i in range(7)]
    lengths = [5, 12, 3, 9, 14, 6, 10]
    expected = [
        generate(model, [p], max_new_tokens=n)[0].tokens for p, n in zip(prompts, lengths, strict=True)
    ]
    with Engine(model, tok, EngineConfig(max_seqs=3, speculative=speculative)) as engine:
        first = [
            engine.submit(p, RequestParams(max_new_tokens=n))
            for p, n in zip(prompts[:4], lengths[:4], strict=True)
        ]
        time.sleep(0.05)  # the rest join a running batch
        rest = [
            engine.submit(p, RequestParams(max_new_tokens=n))
            for p, n in zip(prompts[4:], lengths[4:], strict=True)
        ]
        got = [tokens(r)[0] for r in first + rest]
        stats = engine.stats()
    assert got == expected
    assert stats["prefills"] == 7
    if speculative == "auto":
        assert stats["draft_tokens"] > 0


def test_mtp_speculative_decoding_same_output_fewer_steps(fx):
    """The parrot's trained MTP head drafts well: greedy output is unchanged, most drafts are
    accepted, and the engine needs fewer decode steps than tokens. With spec_max_batch=1 the three
    sequences decode plainly together, then speculatively once one is left: drafts go stale and
    the MTP cache has gaps, and the output must still be the same."""
    tok, model = fx.tok, fx.parrot
    prompts = [
        tok.encode(tok.apply_chat_template(m, add_generation_prompt=True, **o)) for m, o, _ in TRANSCRIPTS
    ]
    outs, stats = {}, {}
    for name, mode, limit in (("off", "off", 0), ("mtp", "mtp", 0), ("mixed", "mtp", 1)):
        with Engine(model, tok, EngineConfig(speculative=mode, spec_max_batch=limit)) as engine:
            reqs = [
                engine.submit(p, RequestParams(max_new_tokens=48, stop_token_ids=tok.stop_ids))
                for p in prompts
            ]
            outs[name] = [tokens(r)[0] for r in reqs]
            stats[name] = engine.stats()
    assert outs["mtp"] == outs["off"] and outs["mixed"] == outs["off"]
    assert stats["mtp"]["acceptance_rate"] > 0.8
    assert stats["mtp"]["steps"] < 0.7 * stats["mtp"]["generated_tokens"]
    assert 0 < stats["mixed"]["draft_tokens"] < stats["mtp"]["draft_tokens"]


def test_speculative_sampling_keeps_the_target_distribution():
    """Drafts from q, kept with min(1, p/q), else resampled from (p - q)+: samples follow p."""
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    q = torch.tensor([0.1, 0.4, 0.1, 0.1, 0.3])
    counts = torch.zeros(5)
    trials = 20000
    for _ in range(trials):
        draft = int(torch.multinomial(q, 1, generator=g))
        tok, _ = speculative_sample(p, q, draft, g)
        counts[tok] += 1
    assert torch.allclose(counts / trials, p, atol=0.015)


def test_stop_strings_logprobs_and_seeds(fx):
    tok, model = fx.tok, fx.random
    prompt = tok.encode("The quick brown fox")
    with Engine(model, tok, EngineConfig()) as engine:
        full, last = engine.generate(prompt, RequestParams(max_new_tokens=24, logprobs=True, top_logprobs=3))
        ids, _ = tokens(
            engine.submit(prompt, RequestParams(max_new_tokens=24, logprobs=True, top_logprobs=3))
        )
        assert len(full) > 6
        stop = full[3:6]
        text, end = engine.generate(prompt, RequestParams(max_new_tokens=24, stop=[stop]))
        assert text == full[: full.index(stop)] and end.finish_reason == "stop"

        # logprobs are the model's own log-softmax at each step, top-1 is the greedy token
        lps = [
            lp
            for out in engine.submit(prompt, RequestParams(max_new_tokens=24, logprobs=True, top_logprobs=3))
            for lp in (out.logprobs or [])
        ]
        with torch.no_grad():
            ref = model(torch.tensor([prompt + ids]))[0].float().log_softmax(-1)
        for j, lp in enumerate(lps):
            assert lp.token == ids[j] and lp.top[0][0] == ids[j] and len(lp.top) == 3
            assert lp.logprob == pytest.approx(float(ref[len(prompt) - 1 + j, ids[j]]), abs=1e-4)

        sampled = [
            engine.generate(prompt, RequestParams(max_new_tokens=16, temperature=1.0, seed=s))[0]
            for s in (7, 7, 8)
        ]
        assert sampled[0] == sampled[1] and sampled[0] != sampled[2]


def test_think_cap_closes_reasoning(fx):
    """At max_thinking_tokens the engine writes </think> itself; the answer follows."""
    tok, model = fx.tok, fx.parrot
    messages, options, reply = TRANSCRIPTS[0]
    prompt = tok.encode(tok.apply_chat_template(messages, add_generation_prompt=True, **options))
    reasoning = tok.encode(reply.split("</think>")[0])
    with Engine(model, tok, EngineConfig()) as engine:
        for cap in (0, 2):
            params = RequestParams(
                max_new_tokens=40, stop_token_ids=tok.stop_ids, thinking=True, max_thinking_tokens=cap
            )
            ids, last = tokens(engine.submit(prompt, params))
            assert ids[: cap + 3] == reasoning[:cap] + [tok.end_think_id] + tok.encode("\n\n")
            assert last.reasoning_tokens == cap + 1  # the cap, then </think>
        text, last = engine.generate(
            prompt, RequestParams(max_new_tokens=40, stop_token_ids=tok.stop_ids, thinking=True)
        )
        assert text + "<|end|>" == reply and last.reasoning_tokens == len(tok.encode(reply.split("\n\n")[0]))


def test_cancel_frees_the_slot_and_queue_is_bounded(fx):
    tok, model = fx.tok, fx.random
    prompt = tok.encode("hello")
    with Engine(model, tok, EngineConfig(max_seqs=1, max_queue=1)) as engine:
        seen = threading.Event()
        a = engine.submit(
            prompt, RequestParams(max_new_tokens=500, stop_token_ids=()), on_output=lambda out: seen.set()
        )
        assert seen.wait(10)
        b = engine.submit(prompt, RequestParams(max_new_tokens=3))
        with pytest.raises(QueueFull):
            engine.submit(prompt, RequestParams(max_new_tokens=3))
        a.cancel()
        ids, last = tokens(b)  # b gets the slot once a's is freed
        assert len(ids) == 3 and last.finish_reason == "length"
        assert a.finish_reason == "cancelled" and len(a.generated) < 500
        with pytest.raises(ValueError, match="context"):
            engine.submit(prompt, RequestParams(max_new_tokens=engine.max_context))
