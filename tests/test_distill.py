"""Distillation: KD losses against a full-softmax reference, capture round trip and resume, tokenizer
checks, online teacher, sequence-level selection, the endpoint client (allow-list, flaky server)."""

import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import k1
from k1 import distill
from k1.distill import logits as capture_mod
from k1.distill.client import EndpointClient
from k1.distill.sequence import Prompt, select
from k1.distill.teachers import GenResult, K1Teacher, Teacher, top_k_from_logits
from k1.errors import K1Error
from k1.objectives import OBJECTIVES, kd_divergence, linear_kd
from tests.helpers import tiny_model

SEQ = 16
LOSSES = ("forward_kl", "reverse_kl", "jsd")


# ------------------------------------------------------------------------------------- references


def full_reference(s, t, loss, temperature, beta=0.5):
    """The divergence between the full softmax distributions, in float64."""
    log_q = F.log_softmax(s.double() / temperature, -1)
    log_p = F.log_softmax(t.double() / temperature, -1)
    return divergence(log_p, log_q, loss, beta)


def divergence(log_p, log_q, loss, beta):
    p, q = log_p.exp(), log_q.exp()
    if loss == "forward_kl":
        return (p * (log_p - log_q)).sum(-1)
    if loss == "reverse_kl":
        return (q * (log_q - log_p)).sum(-1)
    m = beta * p + (1 - beta) * q
    return beta * (p * (log_p - m.log())).sum(-1) + (1 - beta) * (q * (log_q - m.log())).sum(-1)


def bucket_reference(s, t, k, loss, temperature, beta=0.5):
    """The stated definition under truncation: both distributions coarse-grained onto the teacher's
    top-k tokens plus one bucket holding all other tokens' summed probability, then the same
    divergence. Written with explicit index lists, independently of the code under test."""
    p = F.softmax(t.double() / temperature, -1)
    q = F.softmax(s.double() / temperature, -1)
    rows_p, rows_q = [], []
    for i in range(p.shape[0]):
        top = torch.argsort(p[i], descending=True)[:k].tolist()
        others = [j for j in range(p.shape[1]) if j not in top]
        rows_p.append(torch.cat([p[i, top], p[i, others].sum()[None]]))
        rows_q.append(torch.cat([q[i, top], q[i, others].sum()[None]]))
    return divergence(torch.stack(rows_p).log(), torch.stack(rows_q).log(), loss, beta)


def captured(t, k, temperature):
    top = top_k_from_logits(t[None], k, temperature)
    return (
        torch.from_numpy(top.ids[0]),
        torch.from_numpy(top.logprobs[0]),
        torch.from_numpy(top.leftover[0]),
    )


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_loss_with_k_equal_vocab_is_the_full_softmax_loss(loss, temperature):
    g = torch.Generator().manual_seed(0)
    s = (3 * torch.randn(10, 40, generator=g)).requires_grad_()
    t = 3 * torch.randn(10, 40, generator=g)
    ids, lp, left = captured(t, 40, temperature)
    assert float(left.abs().max()) == 0.0  # nothing is left over when every token is kept
    got = kd_divergence(s, ids, lp, left, loss, temperature, beta=0.3 if loss == "jsd" else 0.5)
    s_ref = s.detach().double().requires_grad_()
    ref = full_reference(s_ref, t, loss, temperature, beta=0.3 if loss == "jsd" else 0.5)
    torch.testing.assert_close(got.double(), ref.detach(), atol=2e-5, rtol=1e-4)
    got.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(s.grad.double(), s_ref.grad, atol=2e-5, rtol=1e-3)


@pytest.mark.parametrize("loss", LOSSES)
def test_kd_loss_under_truncation_matches_the_bucket_definition(loss):
    g = torch.Generator().manual_seed(1)
    s = (2 * torch.randn(8, 30, generator=g)).requires_grad_()
    t = 2 * torch.randn(8, 30, generator=g)
    for k in (1, 5):
        ids, lp, left = captured(t, k, 1.5)
        got = kd_divergence(s, ids, lp, left, loss, 1.5)
        s_ref = s.detach().double().requires_grad_()
        ref = bucket_reference(s_ref, t, k, loss, 1.5)
        torch.testing.assert_close(got.double(), ref.detach(), atol=2e-5, rtol=1e-4)
        (gs,) = torch.autograd.grad(got.sum(), s)
        ref.sum().backward()
        torch.testing.assert_close(gs.double(), s_ref.grad, atol=2e-5, rtol=1e-3)
        # Truncation only ever hides differences (data processing inequality).
        assert bool((got.double() <= full_reference(s.detach(), t, loss, 1.5) + 1e-5).all())


def test_padding_entries_change_nothing():
    """An endpoint may return fewer than k tokens; -inf entries must act as if they were absent."""
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 20, generator=g), torch.randn(6, 20, generator=g)
    ids, lp, left = captured(t, 4, 1.0)
    pad_ids = torch.cat([ids, torch.zeros(6, 3, dtype=ids.dtype)], -1)
    pad_lp = torch.cat([lp, torch.full((6, 3), float("-inf"))], -1)
    for loss in LOSSES:
        a = kd_divergence(s, ids, lp, left, loss)
        b = kd_divergence(s, pad_ids, pad_lp, left, loss)
        torch.testing.assert_close(a, b)


def test_kd_objective_mixes_cross_entropy_and_falls_back_to_it():
    model = tiny_model()
    ids = torch.randint(0, 128, (2, SEQ + 1), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(ids[:, :-1])
    top = top_k_from_logits(logits, 128, 1.0)
    batch = {
        "input_ids": ids,
        "teacher_ids": torch.from_numpy(top.ids),
        "teacher_logprobs": torch.from_numpy(top.logprobs).half(),
        "teacher_leftover": torch.from_numpy(top.leftover),
    }
    kd = OBJECTIVES["kd"]
    ce_only, _ = OBJECTIVES["pretrain"](model, {"input_ids": ids}, mtp_weight=0.0)
    loss, metrics = kd(model, batch, ce_weight=1.0)
    torch.testing.assert_close(loss, ce_only)
    # The teacher is the student itself: nothing to learn (fp16 storage leaves a trace).
    loss, metrics = kd(model, batch, ce_weight=0.0)
    assert metrics["kd"] < 1e-3
    val, metrics = kd(model, {"input_ids": ids}, ce_weight=0.0)  # validation: no teacher in the batch
    torch.testing.assert_close(val, ce_only)


def logits_path_kd(logits, targets, ids, lp, left, loss, temperature, ce_weight, beta=0.5):
    """The unchunked reference: cross-entropy and kd_divergence on whole (rows, vocab) logits."""
    ce = F.cross_entropy(logits.float(), targets)
    kd = kd_divergence(logits, ids, lp, left, loss, temperature, beta).mean()
    return ce_weight * ce + (1 - ce_weight) * temperature**2 * kd, ce, kd


@pytest.mark.parametrize("loss", LOSSES)
def test_chunked_kd_equals_the_whole_logits_path_values_and_gradients(loss):
    """linear_kd never holds more than `chunk` rows of logits; with any chunk size it must give the
    loss and the gradients (hidden states and output weight) of the plain path on whole logits."""
    g = torch.Generator().manual_seed(4)
    rows, hid, vocab, k = 23, 12, 50, 6
    hidden = torch.randn(rows, hid, generator=g)
    weight = torch.randn(vocab, hid, generator=g)
    targets = torch.randint(0, vocab, (rows,), generator=g)
    ids, lp, left = captured(2 * torch.randn(rows, vocab, generator=g), k, 2.0)
    lp = lp.half()  # as stored in a capture
    h_ref, w_ref = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    ref, ref_ce, ref_kd = logits_path_kd(h_ref @ w_ref.t(), targets, ids, lp, left, loss, 2.0, 0.3)
    ref.backward()
    for chunk in (1, 5, 23, 64):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        got, ce, kd = linear_kd(h, w, targets, ids, lp, left, loss, 2.0, 0.5, 0.3, chunk=chunk)
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close((ce, kd), (ref_ce, ref_kd), atol=1e-5, rtol=1e-5)
        assert not ce.requires_grad and not kd.requires_grad  # metrics only
        (2.5 * got).backward()  # an upstream scale reaches both gradients
        torch.testing.assert_close(h.grad, 2.5 * h_ref.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(w.grad, 2.5 * w_ref.grad, atol=1e-5, rtol=1e-4)


def test_kd_objective_equals_the_logits_path_with_masks_and_mtp():
    """The objective computes KD inside the model's forward from hidden states (no logits); it must
    match KD on the model's logits over the same target rows, loss_mask and MTP included."""
    model = tiny_model(num_nextn_predict_layers=1)
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 128, (2, SEQ + 1), generator=g)
    loss_mask = torch.ones_like(ids)
    loss_mask[:, : SEQ // 2] = 0  # a prompt: no targets there
    top = top_k_from_logits(3 * torch.randn(2, SEQ, 128, generator=g), 8, 1.5)
    batch = {
        "input_ids": ids,
        "loss_mask": loss_mask,
        "teacher_ids": torch.from_numpy(top.ids),
        "teacher_logprobs": torch.from_numpy(top.logprobs).half(),
        "teacher_leftover": torch.from_numpy(top.leftover),
    }
    opts = {"loss": "jsd", "temperature": 1.5, "ce_weight": 0.4, "beta": 0.3}
    got, metrics = OBJECTIVES["kd"](model, batch, mtp_weight=0.2, chunk=3, **opts)
    got.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    logits, (mtp_logits,) = model(ids[:, :-1], return_mtp=True)
    keep = (loss_mask[:, 1:] == 1).flatten()
    rows = lambda t: t.flatten(0, 1)[keep]  # noqa: E731
    ref, ce, kd = logits_path_kd(
        rows(logits),
        rows(ids[:, 1:]),
        *(rows(batch[f]) for f in ("teacher_ids", "teacher_logprobs", "teacher_leftover")),
        **opts,
    )
    mtp_targets = ids[:, 2:].masked_fill(loss_mask[:, 2:] == 0, -100)
    mtp = F.cross_entropy(mtp_logits.flatten(0, 1).float(), mtp_targets.flatten(), ignore_index=-100)
    ref = ref + 0.2 * mtp
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert metrics["ce"] == pytest.approx(ce.item(), abs=1e-5)
    assert metrics["kd"] == pytest.approx(kd.item(), abs=1e-5)
    ref.backward()
    for n, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=n)


# ------------------------------------------------------------------------------------- capture


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tokenizer, a teacher saved with it, a token stream, and a second tokenizer that differs."""
    from k1 import tokenizer

    root = tmp_path_factory.mktemp("distill")
    tok = tokenizer.train_default(root / "tok", 512)
    tokenizer.train_default(root / "tok_other", 520)
    teacher = tiny_model(seed=1, vocab_size=tok.vocab_size)
    with torch.no_grad():  # a confident teacher: a random one is near uniform, with little to teach
        teacher.lm_head.weight.mul_(40)
    k1.save(teacher, root / "teacher", tokenizer=root / "tok")
    rng = np.random.default_rng(0)
    np.save(root / "tokens.npy", rng.integers(0, tok.vocab_size, 24 * SEQ + 1).astype(np.uint16))
    return root


def dcfg(root, out, **capture):
    c = {
        "data": str(root / "tokens.npy"),
        "seq_len": SEQ,
        "top_k": 8,
        "batch_size": 3,
        "windows_per_shard": 5,
        "val_fraction": 0.2,
        **capture,
    }
    return distill.DistillConfig.from_dict(
        {
            "out_dir": str(out),
            "teacher": {"path": str(root / "teacher")},
            "capture": c,
            "kd": {"ce_weight": 0.2},
            "train": {
                "max_steps": 6,
                "batch_size": 4,
                "warmup_steps": 1,
                "lr": 3e-3,
                "eval_every": 3,
                "save_every": 3,
                "eval_batches": 1,
                "precision": "fp32",
                "peak_tflops": 1.0,
                "model": {"init": "tiny", "num_hidden_layers": 1, "hidden_size": 32, "n_routed_experts": 4},
            },
        }
    )


def shard_tensors(out):
    from safetensors.torch import load_file

    m = distill.read_manifest(out / "capture")
    return m, [load_file(out / "capture" / s["file"]) for s in m["shards"]]


def test_capture_round_trip_and_resume_after_a_crash(workdir, tmp_path, monkeypatch):
    cfg = dcfg(workdir, tmp_path / "a")
    m = distill.capture(cfg, progress=False)
    assert m["complete"] and m["stats"]["windows"] == 20 and len(m["shards"]) == 4  # 24 windows, 4 held out
    assert m["config"]["capture"]["top_k"] == 8 and m["teacher"]["fingerprint"]
    assert m["stats"]["bytes_per_token"] > 8 * 4 and m["stats"]["seconds_per_1k_tokens"] > 0

    # What the shards hold is the teacher's own top-k, position by position.
    teacher = K1Teacher(distill.TeacherConfig(path=str(workdir / "teacher")))
    src = distill.CapturedWindows(tmp_path / "a" / "capture", seed=0)
    b = src.fixed_batch(6, 3)
    top = teacher.top_k(b["input_ids"].numpy(), 8, 1.0)
    assert torch.equal(b["teacher_ids"], torch.from_numpy(top.ids))
    torch.testing.assert_close(
        b["teacher_logprobs"].float(), torch.from_numpy(top.logprobs), atol=4e-3, rtol=1e-3
    )
    torch.testing.assert_close(b["teacher_leftover"], torch.from_numpy(top.leftover))
    train, _ = capture_mod.token_windows(cfg.capture)
    assert torch.equal(b["input_ids"][0], torch.from_numpy(train.window(6).astype(np.int64)))

    # A crash in the third shard: the manifest names two complete shards; a second run finishes
    # the job and the result is the uninterrupted one.
    real, calls = K1Teacher.top_k, {"n": 0}

    def crash(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real(self, *a, **kw)

    monkeypatch.setattr(K1Teacher, "top_k", crash)
    with pytest.raises(RuntimeError):
        distill.capture(dcfg(workdir, tmp_path / "b"), progress=False)
    partial = distill.read_manifest(tmp_path / "b" / "capture")
    assert not partial["complete"] and len(partial["shards"]) == 2
    monkeypatch.setattr(K1Teacher, "top_k", real)
    distill.capture(dcfg(workdir, tmp_path / "b"), progress=False)
    (_, ta), (mb, tb) = shard_tensors(tmp_path / "a"), shard_tensors(tmp_path / "b")
    assert mb["complete"] and len(tb) == len(ta)
    for x, y in zip(ta, tb, strict=True):
        assert all(torch.equal(x[k], y[k]) for k in x)

    # Other settings in the same directory: refused, naming the key.
    with pytest.raises(K1Error, match="capture.top_k"):
        distill.capture(dcfg(workdir, tmp_path / "b", top_k=4), progress=False)


def test_student_trains_on_the_capture_and_online(workdir, tmp_path):
    cfg = dcfg(workdir, tmp_path / "s")
    distill.capture(cfg, progress=False)
    res = distill.train(cfg, progress=False)
    hist = res.history
    assert all("kd" in h for h in hist) and hist[-1]["kd"] < hist[0]["kd"]
    assert res.val_loss is not None and (tmp_path / "s" / "distill.md").is_file()
    student = k1.load(res.model_dir)
    assert student.config.num_hidden_layers == 1
    assert (res.model_dir / "tokenizer.json").is_file()  # the teacher's tokenizer comes with the student

    # Online: the same top-k computed per batch by the teacher in this process.
    online = dcfg(workdir, tmp_path / "o")
    online.online = True
    tcfg = distill.train_config(online)
    train, _, vocab = distill.kd_sources(tcfg)
    offline = distill.CapturedWindows(tmp_path / "s" / "capture", seed=0)
    a, b = train.fixed_batch(2, 2), offline.fixed_batch(2, 2)
    assert torch.equal(a["teacher_ids"], b["teacher_ids"]) and torch.equal(a["input_ids"], b["input_ids"])


def test_tokenizer_mismatch_is_a_clear_error(workdir, tmp_path):
    cfg = dcfg(workdir, tmp_path / "m")
    distill.capture(cfg, progress=False)
    cfg.train["tokenizer"] = str(workdir / "tok_other")
    with pytest.raises(K1Error, match="needs the teacher's tokenizer.*sequence"):
        distill.train(cfg, progress=False)
    cfg = dcfg(workdir, tmp_path / "m")
    cfg.kd.temperature = 2.0
    with pytest.raises(K1Error, match="temperature"):
        distill.train(cfg, progress=False)


def test_config_errors_name_the_key(workdir, tmp_path):
    with pytest.raises(K1Error, match="did you mean 'top_k'"):
        distill.DistillConfig.from_dict({"teacher": {"path": "x"}, "capture": {"topk": 3}})
    with pytest.raises(K1Error, match="kd.loss.*valid: forward_kl, jsd, reverse_kl"):
        distill.DistillConfig.from_dict({"teacher": {"path": "x"}, "kd": {"loss": "kl"}})
    with pytest.raises(K1Error, match="objective_options.tau"):
        from k1.train import TrainConfig

        TrainConfig.from_dict({"data": "x.npy", "objective": "kd", "objective_options": {"tau": 2.0}})


# ------------------------------------------------------------------------------------- sequence


class ScriptedTeacher(Teacher):
    """Answers from a table (prompt text, think) -> list of completions by sample; records calls."""

    kind = "scripted"

    def __init__(self, table):
        self.table, self.asked = table, []

    def describe(self):
        return {"kind": self.kind}

    def complete(self, requests, on_result, batch_size=16):
        from k1.thinking import split_reply

        for i, r in enumerate(requests):
            key = (r.messages[-1]["content"], r.think)
            self.asked.append(key)
            text = self.table[key][r.seed % 7919]  # generate seeds sample s with seed * 7919 + s
            reply = split_reply(text, r.think)
            on_result(i, GenResult(reply.reasoning, reply.answer, reply.closed, len(text), "stop"))


def test_sequence_level_keeps_the_shortest_correct_answer_per_mode(tmp_path):
    prompts = [
        {"id": "a", "question": "3 + 4?", "answer": 7},
        {"id": "b", "question": "10 - 8?", "answer": 2},
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(p) for p in prompts) + "\n", encoding="utf-8")
    table = {
        ("3 + 4?", True): [
            "3 + 4 = 7 이므로 답을 구합니다 길게 길게\n</think>\n\n정답: 7",
            "3 + 4 = 7\n</think>\n\n정답: 7",
            "3 + 4 = 8\n</think>\n\n정답: 8",
        ],
        ("3 + 4?", False): ["정답: 7 입니다", "3 + 4 = 7, 정답: 7", "정답: 6"],  # the 2nd shows its work
        ("10 - 8?", True): [
            "10 - 8 = 2",
            "10 - 8 = 2 ...",
            "10 - 8 = 3\n</think>\n\n정답: 3",
        ],  # never closed, wrong
        ("10 - 8?", False): ["정답은 2", "답: 2", "2"],
    }
    cfg = distill.DistillConfig.from_dict(
        {
            "out_dir": str(tmp_path / "out"),
            "method": "sequence",
            "teacher": {"path": "unused"},
            "generate": {"prompts": str(tmp_path / "p.jsonl"), "samples": 3},
        }
    )
    teacher = ScriptedTeacher(table)
    # A run stopped after some answers: generations.jsonl holds them; only the rest is asked for.
    first = distill.GenerateConfig(prompts=cfg.generate.prompts, samples=1)
    part = distill.DistillConfig(out_dir=cfg.out_dir, method="sequence", teacher=cfg.teacher, generate=first)
    distill.generate(part, teacher=ScriptedTeacher(table), progress=False)
    report = distill.generate(cfg, teacher=teacher, progress=False)
    assert len(teacher.asked) == 8  # 12 answers in all, 4 already there
    kept = [
        json.loads(line) for line in (tmp_path / "out" / "sequence" / "sft.jsonl").read_text().splitlines()
    ]
    by_id = {r["id"]: r for r in kept}
    assert set(by_id) == {"a/think", "a/non_think", "b/non_think"}
    assert by_id["a/think"]["messages"][-1] == {
        "role": "assistant",
        "content": "정답: 7",
        "reasoning_content": "3 + 4 = 7",
    }
    assert by_id["a/non_think"]["messages"][-1]["content"] == "정답: 7 입니다"
    assert by_id["b/non_think"]["messages"][-1]["content"] == "2"  # the shortest of three correct
    assert report["modes"]["think"]["prompts_solved"] == 1 and report["modes"]["non_think"]["correct"] == 4
    assert report["modes"]["think"]["mean_tokens_kept"] < report["modes"]["think"]["mean_tokens_correct"]


def test_selection_overall_picks_one_answer_per_prompt():
    p = Prompt("x", [{"role": "user", "content": "q"}], answer=5)
    gens = {
        "x|think|0": {"reasoning": "2 + 3 = 5", "answer": "정답: 5", "closed": True, "tokens": 9},
        "x|non_think|0": {"reasoning": None, "answer": "정답: 5", "closed": True, "tokens": 4},
    }
    g = distill.GenerateConfig(samples=1, select="overall")
    records, _ = select([p], gens, g)
    assert [r["mode"] for r in records] == ["non_think"]


# ------------------------------------------------------------------------------------- endpoint


class FakeEndpoint:
    """An OpenAI-compatible server on 127.0.0.1: chat completions answering "정답: <n>", and
    /completions with vLLM-style prompt_logprobs from a k1 model. Flaky: every request id's first
    try gets a 429 or a 503, and some a slow answer past the client's timeout."""

    def __init__(self, model, k=8):
        self.model, self.k, self.requests, self.lock = model, k, [], threading.Lock()
        self.tries: dict[str, int] = {}
        self.failures = {"429": 0, "503": 0, "slow": 0}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = json.dumps(
                    [body.get("messages") or body.get("prompt"), body.get("chat_template_kwargs")]
                )
                with outer.lock:
                    outer.requests.append(self.path)
                    n = outer.tries[key] = outer.tries.get(key, 0) + 1
                h = zlib.crc32(key.encode()) % 3
                if n == 1:
                    outer.failures[("429", "503", "slow")[h]] += 1
                if n == 1 and h == 0:
                    return self._send(429, {"error": "slow down"}, {"Retry-After": "0"})
                if n == 1 and h == 1:
                    return self._send(503, {"error": "busy"})
                if n == 1 and h == 2:
                    time.sleep(0.6)  # past the client's timeout: it must retry
                if self.path == "/v1/chat/completions":
                    q = body["messages"][-1]["content"]
                    think = body["chat_template_kwargs"]["enable_thinking"]
                    content = f"{q} 계산\n</think>\n\n정답: {len(q)}" if think else f"정답: {len(q)}"
                    return self._send(
                        200,
                        {
                            "choices": [
                                {
                                    "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop",
                                }
                            ],
                            "usage": {"completion_tokens": len(content)},
                        },
                    )
                if self.path == "/v1/completions":
                    return self._send(
                        200, {"choices": [{"text": "", "prompt_logprobs": outer.logprobs(body)}]}
                    )
                return self._send(404, {"error": "no such route"})

            def _send(self, code, obj, headers=None):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a slow answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def logprobs(self, body):
        ids = torch.tensor(body["prompt"])[None]
        with torch.no_grad():
            logp = torch.log_softmax(self.model(ids).float(), -1)[0]
        k = body["prompt_logprobs"]
        out = [None]
        for t in range(1, ids.shape[1]):
            row = logp[t - 1]
            top = row.topk(k).indices.tolist()
            actual = int(ids[0, t])
            entry = {str(i): {"logprob": float(row[i]), "rank": r + 1} for r, i in enumerate(top)}
            entry.setdefault(
                str(actual), {"logprob": float(row[actual]), "rank": int((row > row[actual]).sum()) + 1}
            )
            out.append(entry)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def endpoint(workdir):
    server = FakeEndpoint(k1.load(workdir / "teacher"))
    yield server
    server.close()


def test_disallowed_host_is_refused_before_any_request(endpoint):
    before = len(endpoint.requests)
    url = endpoint.url.replace("127.0.0.1", "localhost")
    with pytest.raises(K1Error, match=r"'localhost' is not allowed.*teacher.allowed_hosts"):
        EndpointClient(url, allowed_hosts=["127.0.0.1"])
    with pytest.raises(K1Error, match="not allowed"):
        distill.load_teacher(distill.TeacherConfig(path="http://10.1.2.3:8000/v1", model="m"))
    with pytest.raises(K1Error, match="api_key_env"):
        EndpointClient("http://user:secret@127.0.0.1:1/v1")
    assert len(endpoint.requests) == before
    assert (
        EndpointClient("https://gpu7.corp.example/v1", allowed_hosts=["*.corp.example"]).host
        == "gpu7.corp.example"
    )


def test_endpoint_generation_retries_bounded_and_resumes(endpoint, tmp_path):
    prompts = [{"id": f"p{i}", "question": "x" * (3 + i), "answer": 3 + i} for i in range(6)]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(p) for p in prompts) + "\n", encoding="utf-8")
    cfg = distill.DistillConfig.from_dict(
        {
            "out_dir": str(tmp_path / "out"),
            "method": "sequence",
            "teacher": {
                "path": endpoint.url,
                "model": "teacher",
                "concurrency": 3,
                "timeout_s": 0.3,
                "max_retries": 4,
            },
            "generate": {"prompts": str(tmp_path / "p.jsonl"), "samples": 1},
        }
    )
    teacher = distill.load_teacher(cfg.teacher)
    teacher.client.backoff_s = 0.01
    report = distill.generate(cfg, teacher=teacher, progress=False)
    assert (
        report["modes"]["think"]["prompts_solved"] == 6
        and report["modes"]["non_think"]["prompts_solved"] == 6
    )
    assert teacher.client.retries_done >= 12  # every request's first try failed
    assert min(endpoint.failures.values()) >= 1, endpoint.failures
    n = len(endpoint.requests)
    distill.generate(cfg, teacher=teacher, progress=False)  # all done: nothing is asked again
    assert len(endpoint.requests) == n


def test_endpoint_capture_equals_local_capture(workdir, endpoint, tmp_path):
    local = dcfg(workdir, tmp_path / "local", max_windows=4)
    remote = dcfg(workdir, tmp_path / "remote", max_windows=4)
    remote.teacher = distill.TeacherConfig(
        path=endpoint.url, model="teacher", tokenizer=str(workdir / "tok"), timeout_s=0.3, concurrency=2
    )
    distill.capture(local, progress=False)
    t = distill.load_teacher(remote.teacher)
    t.client.backoff_s = 0.01
    distill.capture(remote, teacher=t, progress=False)
    a = distill.CapturedWindows(tmp_path / "local" / "capture", 0).fixed_batch(0, 4)
    b = distill.CapturedWindows(tmp_path / "remote" / "capture", 0).fixed_batch(0, 4)
    assert torch.equal(a["teacher_ids"], b["teacher_ids"])
    torch.testing.assert_close(
        a["teacher_logprobs"].float(), b["teacher_logprobs"].float(), atol=2e-3, rtol=1e-3
    )
    torch.testing.assert_close(a["teacher_leftover"], b["teacher_leftover"], atol=1e-4, rtol=1e-3)


def test_cli_runs_the_whole_job(workdir, tmp_path, capsys):
    from k1.cli import main

    cfg = Path(tmp_path / "d.toml")
    cfg.write_text(
        f"""
out_dir = "{tmp_path / "run"}"
[teacher]
path = "{workdir / "teacher"}"
[capture]
data = "{workdir / "tokens.npy"}"
seq_len = {SEQ}
top_k = 4
max_windows = 6
[kd]
loss = "jsd"
[train]
max_steps = 2
batch_size = 2
warmup_steps = 0
peak_tflops = 1.0
[train.model]
init = "tiny"
num_hidden_layers = 1
""",
        encoding="utf-8",
    )
    main(["distill", str(cfg), "--set", "train.eval_every=2"])
    assert "student trained 2 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["distill", "generate", str(cfg)])
    assert exc.value.code == 2 and "sequence method" in capsys.readouterr().err


def test_hf_teacher_agrees_with_k1_teacher(workdir):
    """The same directory through transformers: same top-k, same tokenizer fingerprint, same greedy answers."""
    pytest.importorskip("transformers")
    from k1.distill.teachers import GenRequest, HFTeacher

    cfg = distill.TeacherConfig(path=str(workdir / "teacher"), device="cpu")
    a, b = K1Teacher(cfg), HFTeacher(cfg)
    assert a.fingerprint == b.fingerprint is not None
    windows = np.load(workdir / "tokens.npy")[: 2 * (SEQ + 1)].astype(np.int64).reshape(2, SEQ + 1)
    ta, tb = a.top_k(windows, 5, 1.0), b.top_k(windows, 5, 1.0)
    assert np.array_equal(ta.ids, tb.ids)
    np.testing.assert_allclose(ta.logprobs, tb.logprobs, atol=1e-4)
    reqs = [
        GenRequest([{"role": "user", "content": q}], think, 6, 0.0, 1.0, 0)
        for q in ("안녕", "3 + 4?")
        for think in (True, False)
    ]
    got: dict[str, dict] = {"k1": {}, "hf": {}}
    a.complete(reqs, lambda i, r: got["k1"].__setitem__(i, r))
    b.complete(reqs, lambda i, r: got["hf"].__setitem__(i, r))
    assert len(got["k1"]) == 4 and got["k1"] == got["hf"]


def test_code_verifier_runs_the_tests_with_limits():
    from k1.distill.sequence import verify_code

    p = Prompt("c", [{"role": "user", "content": "add"}], tests=["assert add(2, 3) == 5"])

    def answer(text):
        return GenResult(None, text, True, 1, "stop")

    assert verify_code(p, answer("```python\ndef add(a, b):\n    return a + b\n```"))
    assert not verify_code(p, answer("```python\ndef add(a, b):\n    return a - b\n```"))
    assert not verify_code(p, answer("def add(a, b):\n    while True:\n        pass\n"), timeout_s=1.0)


def test_sequence_level_trains_a_student_with_another_tokenizer(workdir, tmp_path):
    """Sequence-level output is text: a student with a different tokenizer trains on it (SFT)."""
    table = {
        (f"{a} + {b}?", think): [
            f"{a} + {b} = {a + b}\n</think>\n\n정답: {a + b}" if think else f"정답: {a + b}"
        ]
        for a in range(3, 9)
        for b in (2, 5)
        for think in (True, False)
    }
    prompts = [
        {"id": f"{a}-{b}", "question": f"{a} + {b}?", "answer": a + b} for a in range(3, 9) for b in (2, 5)
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(p) for p in prompts) + "\n", encoding="utf-8")
    cfg = distill.DistillConfig.from_dict(
        {
            "out_dir": str(tmp_path / "out"),
            "method": "sequence",
            "teacher": {"path": str(workdir / "teacher")},
            "generate": {"prompts": str(tmp_path / "p.jsonl"), "samples": 1},
            "train": {
                "tokenizer": str(workdir / "tok_other"),
                "seq_len": 64,
                "max_steps": 2,
                "batch_size": 2,
                "warmup_steps": 0,
                "eval_every": 2,
                "save_every": 2,
                "precision": "fp32",
                "peak_tflops": 1.0,
                "model": {"init": "tiny", "num_hidden_layers": 1, "hidden_size": 32},
            },
        }
    )
    report = distill.generate(cfg, teacher=ScriptedTeacher(table), progress=False)
    assert report["records"] == 24
    tcfg = distill.train_config(cfg)
    assert (tcfg.data_format, tcfg.objective, tcfg.think_ratio) == ("chat", "sft", 1.0)
    res = distill.train(cfg, progress=False)
    assert k1.load(res.model_dir).config.vocab_size == 520  # the student's own tokenizer
    assert "think" in (tmp_path / "out" / "distill.md").read_text()
