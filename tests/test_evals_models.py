"""Model backends and whole runs: a tiny A.X K1 through transformers, a tiny model trained to know its
answers, a garbage-emitting random model, and an OpenAI-compatible endpoint served in the test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from evals_helpers import FakeOpenAI, fake_logprob, memorize, save, tiny_model, tiny_tokenizer  # noqa: E402

from k1.errors import ConfigError, K1Error  # noqa: E402
from k1.evals.models import HFModel, load_model  # noqa: E402
from k1.evals.run import EvalConfig, TaskSpec, run  # noqa: E402
from k1.evals.sandbox import Limits  # noqa: E402
from k1.evals.tasks import MathDoc, Prompt, get_task  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "evals"
PROBLEMS = [
    ("사과 3개와 4개를 더하면 모두 몇 개인가요?", "7", "3+4=7"),
    ("12 곱하기 3은 얼마인가요?", "36", "12*3=36"),
]
COPA_TSV = (
    "ID\tsentence\tquestion\t1\t2\tAnswer\n1\t비가 왔다.\t결과\t우산을 썼다.\t선글라스를 썼다.\t1\n"
    "2\t배가 고팠다.\t결과\t밥을 먹었다.\t잠을 잤다.\t1\n3\t길이 미끄러웠다.\t원인\t눈이 왔다.\t해가 떴다.\t1\n"
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a busy shared machine two threads are ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def math_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "math_ko.jsonl"
    path.write_text(
        "".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a, _ in PROBLEMS)
    )
    return path


@pytest.fixture(scope="module")
def copa_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "dev.tsv"
    path.write_text(COPA_TSV)
    return path


@pytest.fixture(scope="module")
def random_dir(tmp_path_factory) -> Path:
    """A random A.X K1 (MoE layer included): it emits garbage."""
    tok = tiny_tokenizer()
    return save(tiny_model(tok, moe=True), tok, tmp_path_factory.mktemp("random"))


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """A tiny model trained to answer two Korean problems: reasoning in think mode, the answer alone otherwise."""
    tok = tiny_tokenizer()
    model = tiny_model(tok, moe=False)
    task = get_task("math_ko")
    pairs = []
    for question, answer, work in PROBLEMS:
        doc = MathDoc("x", question, answer)
        for think in (True, False):
            prompt = tok.apply_chat_template(
                task.prompt(doc, think, chat=True).messages,
                tokenize=False,
                add_generation_prompt=True,
                enable_thinking=think,
            )
            target = f"{work}\n</think>\n\n정답: \\boxed{{{answer}}}" if think else f"\\boxed{{{answer}}}"
            pairs.append((prompt, target + tok.eos_token))
    # a raw-text continuation for the stop-string test
    pairs.append(("Question: 1+1?\nAnswer:", " 2\n\nQuestion: 2+2?\nAnswer: 4" + tok.eos_token))
    loss = memorize(model, tok, pairs)
    assert loss < 0.05
    return save(model, tok, tmp_path_factory.mktemp("trained"))


def _direct_loglikelihood(model: HFModel, context: str, continuation: str) -> float:
    ids = model.tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_ctx = len(model.tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model.model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    return float(sum(logp[i - 1, ids[i]] for i in range(n_ctx, len(ids))))


def test_loglikelihood_batches_match_single_sequences(random_dir):
    batched, single = HFModel(str(random_dir), batch_size=4), HFModel(str(random_dir), batch_size=1)
    requests = [
        ("비가 왔다. 그래서", " 우산을 썼다."),
        ("짧은", " 답"),
        ("The answer is", " 42"),
        ("Question: what is 2+2?", " 4"),
        ("", "hello"),
        ("끝에 공백 ", "이 있다"),
    ]
    got = batched.loglikelihood(requests)
    assert got == pytest.approx(single.loglikelihood(requests), abs=1e-4)
    for (context, continuation), value in zip(requests[:4], got[:4], strict=True):
        assert value == pytest.approx(_direct_loglikelihood(single, context, continuation), abs=1e-4)
    assert all(v < 0 for v in got)


def test_batched_generation_matches_one_at_a_time(random_dir):
    task = get_task("math_ko")
    prompts = [
        task.prompt(MathDoc(str(i), q, a), think=False, chat=True) for i, (q, a, _) in enumerate(PROBLEMS)
    ]
    prompts.append(Prompt(messages=[{"role": "user", "content": "짧게"}]))
    batched = HFModel(str(random_dir), batch_size=3).generate(prompts, max_new_tokens=12)
    single = HFModel(str(random_dir), batch_size=1).generate(prompts, max_new_tokens=12)
    assert [c[0].text for c in batched] == [c[0].text for c in single]
    assert all(c[0].n_tokens <= 12 for c in batched)


def test_sampling_is_seeded(random_dir):
    model = HFModel(str(random_dir))
    prompt = [Prompt(messages=[{"role": "user", "content": "아무 말"}])]
    a = model.generate(prompt, max_new_tokens=8, temperature=1.0, n=3, seed=5)
    b = model.generate(prompt, max_new_tokens=8, temperature=1.0, n=3, seed=5)
    assert len(a[0]) == 3 and [c.text for c in a[0]] == [c.text for c in b[0]]
    assert len({c.text for c in a[0]}) > 1  # three different samples


def test_trained_model_answers_and_stops(trained_dir):
    model = HFModel(str(trained_dir))
    out = model.generate([Prompt(text="Question: 1+1?\nAnswer:")], max_new_tokens=30, stop=("\n\nQuestion:",))
    assert out[0][0].text == " 2" and out[0][0].finish_reason == "stop"
    think = model.generate(
        [get_task("math_ko").prompt(MathDoc("a", *PROBLEMS[0][:2]), think=True, chat=True)], max_new_tokens=40
    )[0][0]
    # the template opened the reasoning block, so the completion is reported starting inside it
    assert think.text.startswith("<think>") and "</think>" in think.text and think.text.endswith("\\boxed{7}")


def test_run_think_and_non_think_end_to_end(trained_dir, math_file, tmp_path):
    out = tmp_path / "run"
    cfg = EvalConfig(
        model=str(trained_dir),
        tasks=[TaskSpec("math_ko", str(math_file))],
        modes=["think", "non-think"],
        max_new_tokens=40,
        out=str(out),
    )
    results = run(cfg)
    think, plain = (results["tasks"]["math_ko"]["modes"][m] for m in ("think", "non-think"))
    assert think["pass@1"] == 1.0 and plain["pass@1"] == 1.0
    assert think["adherence"] == 1.0 and plain["adherence"] == 1.0
    assert think["reasoning_tokens"] > 0 and plain["reasoning_tokens"] == 0
    assert think["tokens_per_problem"] > plain["tokens_per_problem"] > 0
    assert think["tokens_per_correct"] == think["tokens_per_problem"]  # every answer was right
    assert json.loads((out / "results.json").read_text())["tasks"]["math_ko"]["n_docs"] == 2
    md = (out / "results.md").read_text()
    assert "| math_ko | ko | think | pass@1 | 1.000" in md and "## Report card" in md
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sampling_reports_maj_and_pass_at_k(trained_dir, math_file, tmp_path):
    cfg = EvalConfig(
        model=str(trained_dir),
        tasks=[TaskSpec("math_ko", str(math_file))],
        max_new_tokens=40,
        n=4,
        k=[1, 4],
        temperature=1.0,
        seed=3,
        out=str(tmp_path / "run"),
    )
    metrics = run(cfg)["tasks"]["math_ko"]["modes"]["non-think"]
    assert metrics["n_samples"] == 4 and {"pass@1", "pass@4", "maj@4"} <= set(metrics)
    assert metrics["pass@4"] >= metrics["pass@1"] > 0.5  # it knows the answers; sampling rarely strays
    record = json.loads(
        (tmp_path / "run" / "samples" / "math_ko.non-think.jsonl").read_text().splitlines()[0]
    )
    assert len(record["samples"]) == 4 and record["majority"] == "7"


class _Counting:
    """A backend wrapper that counts the problems it is asked to generate for."""

    def __init__(self, inner):
        self.inner, self.prompts = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, **kwargs):
        self.prompts += len(prompts)
        return self.inner.generate(prompts, **kwargs)


def test_run_resumes_after_a_crash(trained_dir, math_file, tmp_path):
    cfg = EvalConfig(
        model=str(trained_dir),
        tasks=[TaskSpec("math_ko", str(math_file))],
        max_new_tokens=40,
        batch_size=1,
        out=str(tmp_path / "run"),
    )
    first = _Counting(HFModel(str(trained_dir)))
    run(cfg, model=first)
    assert first.prompts == 2
    again = _Counting(HFModel(str(trained_dir)))
    assert run(cfg, model=again)["tasks"]["math_ko"]["modes"]["non-think"]["pass@1"] == 1.0
    assert again.prompts == 0  # everything was on disk
    samples = tmp_path / "run" / "samples" / "math_ko.non-think.jsonl"
    text = samples.read_text()
    samples.write_text(text[: len(text) - 20])  # a crash tore the last record
    third = _Counting(HFModel(str(trained_dir)))
    assert run(cfg, model=third)["tasks"]["math_ko"]["modes"]["non-think"]["pass@1"] == 1.0
    assert third.prompts == 1
    changed = EvalConfig(**{**cfg.__dict__, "max_new_tokens": 41})
    with pytest.raises(K1Error, match="different run config"):
        run(changed, model=third)


def test_garbage_model_gets_a_score(random_dir, math_file, copa_file, tmp_path):
    """A random model's output is nonsense; every task still ends with a score, nothing crashes."""
    cfg = EvalConfig(
        model=str(random_dir),
        modes=["think", "non-think"],
        max_new_tokens=16,
        num_fewshot=1,
        tasks=[
            TaskSpec("math_ko", str(math_file)),
            TaskSpec("kobest_copa", str(copa_file)),
            TaskSpec("humaneval", str(FIXTURES / "humaneval_tiny.jsonl")),
            TaskSpec("livecodebench", str(FIXTURES / "livecodebench_tiny.jsonl")),
        ],
        sandbox=Limits(timeout_s=5),
        out=str(tmp_path / "run"),
    )
    results = run(cfg)
    for task, entry in results["tasks"].items():
        for mode, metrics in entry["modes"].items():
            value = metrics.get("pass@1", metrics.get("acc"))
            assert 0.0 <= value <= 1.0, (task, mode)
    assert results["tasks"]["humaneval"]["modes"]["think"]["pass@1"] == 0.0
    assert set(results["tasks"]["kobest_copa"]["modes"]) == {"loglikelihood"}
    assert results["sandbox"]["timeout_s"] == 5


def test_think_mode_needs_a_chat_template(tmp_path, math_file):
    tok = tiny_tokenizer(chat=False)
    model_dir = save(tiny_model(tok), tok, tmp_path / "base")
    cfg = EvalConfig(
        model=str(model_dir),
        tasks=[TaskSpec("math_ko", str(math_file))],
        modes=["think"],
        max_new_tokens=4,
        out=str(tmp_path / "run"),
    )
    with pytest.raises(K1Error, match="no chat template"):
        run(cfg)
    # non-think works on a base model: raw-text prompts with stop strings
    cfg.modes = ["non-think"]
    assert "math_ko" in run(cfg)["tasks"]


@pytest.mark.skipif(
    importlib.util.find_spec("k1.checkpoint") is None or importlib.util.find_spec("k1.generate") is None,
    reason="the native k1 backend needs k1.checkpoint and k1.generate (the model work)",
)
def test_k1_backend_agrees_with_transformers(random_dir):
    native, hf = load_model(str(random_dir), "k1"), load_model(str(random_dir), "hf")
    requests = [("비가 왔다. 그래서", " 우산을 썼다."), ("The answer is", " 42")]
    assert native.loglikelihood(requests) == pytest.approx(hf.loglikelihood(requests), abs=1e-3)
    prompt = [Prompt(messages=[{"role": "user", "content": "안녕"}])]
    assert (
        native.generate(prompt, max_new_tokens=8)[0][0].text
        == hf.generate(prompt, max_new_tokens=8)[0][0].text
    )
    # int8 weights: the same interface, log-likelihoods close to the full-precision model's
    quantized = load_model(str(random_dir), "k1", quantize="int8")
    assert quantized.model.quantized == "int8"
    assert quantized.loglikelihood(requests) == pytest.approx(native.loglikelihood(requests), rel=0.05)
    with pytest.raises(ConfigError, match="--backend k1"):
        load_model(str(random_dir), "hf", quantize="int8")
    with pytest.raises(ConfigError, match="compile runs k1's own model code"):
        load_model(str(random_dir), "hf", compile=True)
    # compiled decode steps: the same generations as eager ones
    compiled = load_model(str(random_dir), "k1", compile=True)
    assert compiled.model._decode_hidden is not None
    assert compiled.generate(prompt, max_new_tokens=8)[0][0].text == native.generate(prompt, max_new_tokens=8)[0][0].text


# -- OpenAI-compatible endpoints ---------------------------------------------------------------


def _answers(prompt: str) -> tuple[str, str]:
    """The fake server's model: right answers for the test problems, canonical code for HumanEval."""
    for question, answer, work in PROBLEMS:
        if question in prompt:
            return work, f"정답: \\boxed{{{answer}}}"
    for line in (FIXTURES / "humaneval_tiny.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["prompt"] in prompt:
            return "plan", f"```python\n{row['prompt']}{row['canonical_solution']}```"
    return "", "모르겠습니다"


def test_openai_backend_generates_and_scores_choices(monkeypatch):
    monkeypatch.setenv("K1_TEST_KEY", "sk-test-123")
    with FakeOpenAI(_answers, key="sk-test-123") as server:
        model = load_model(server.url, api_key_env="K1_TEST_KEY")
        assert model.name == "fake-k1" and model.backend == "openai"
        task = get_task("math_ko")
        prompts = [task.prompt(MathDoc("a", *PROBLEMS[0][:2]), think=t, chat=True) for t in (True, False)]
        think, plain = (c[0] for c in model.generate(prompts, max_new_tokens=64))
        assert think.text == "<think>3+4=7</think>정답: \\boxed{7}" and think.n_tokens == len(
            "3+4=7정답: \\boxed{7}"
        )
        assert plain.text == "정답: \\boxed{7}"
        sent = [r for r in server.requests if r["path"].endswith("/chat/completions")]
        # the two requests run concurrently and may arrive in either order: one per mode
        assert sorted(r["chat_template_kwargs"]["enable_thinking"] for r in sent) == [False, True]
        lls = model.loglikelihood([("비가 왔다.", " 우산"), ("ab", "cd")])
        assert lls == pytest.approx([sum(map(fake_logprob, " 우산")), fake_logprob("c") + fake_logprob("d")])
    monkeypatch.setenv("K1_TEST_KEY", "wrong")
    with FakeOpenAI(_answers, key="sk-test-123") as server, pytest.raises(K1Error, match="HTTP 401"):
        load_model(server.url, served_model="fake-k1", api_key_env="K1_TEST_KEY").generate(
            [Prompt(messages=[{"role": "user", "content": "hi"}])], max_new_tokens=4
        )


def test_run_against_an_endpoint(monkeypatch, math_file, copa_file, tmp_path):
    """A served model is measured by the same code: math, multiple choice and code through HTTP."""
    monkeypatch.setenv("K1_TEST_KEY", "sk-secret-abc")
    out = tmp_path / "run"
    with FakeOpenAI(_answers, key="sk-secret-abc") as server:
        cfg = EvalConfig(
            model=server.url,
            api_key_env="K1_TEST_KEY",
            modes=["think", "non-think"],
            max_new_tokens=256,
            tasks=[
                TaskSpec("math_ko", str(math_file)),
                TaskSpec("kobest_copa", str(copa_file)),
                TaskSpec("humaneval", str(FIXTURES / "humaneval_tiny.jsonl")),
            ],
            out=str(out),
        )
        results = run(cfg)
    tasks = results["tasks"]
    assert (
        tasks["math_ko"]["modes"]["think"]["pass@1"] == 1.0
        and tasks["math_ko"]["modes"]["think"]["adherence"] == 1.0
    )
    assert tasks["math_ko"]["modes"]["non-think"]["adherence"] == 1.0
    assert tasks["humaneval"]["modes"]["non-think"]["pass@1"] == 1.0
    # the fake model's choice is the one whose characters it finds likeliest: check the accuracy independently
    docs = get_task("kobest_copa").load(copa_file)
    expected = sum(
        max(range(2), key=lambda i, d=d: sum(map(fake_logprob, d.choices[i]))) == d.gold for d in docs
    )
    assert tasks["kobest_copa"]["modes"]["loglikelihood"]["acc"] == pytest.approx(expected / len(docs))
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md"):
            assert "sk-secret-abc" not in path.read_text()


def test_score_counts_tokens_with_a_tokenizer(tmp_path, math_file):
    """Completions made elsewhere carry no token counts; --tokenizer counts them, reasoning apart."""
    from k1.evals.run import score

    tok = tiny_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    text = "<think>3+4=7, 모두 7개</think>\n\n정답: \\boxed{7}"
    samples = tmp_path / "s.jsonl"
    samples.write_text(
        json.dumps({"id": "1", "completion": text, "mode": "think"}, ensure_ascii=False) + "\n"
    )
    metrics = score("math_ko", str(math_file), str(samples), tokenizer=str(tmp_path / "tok"))["tasks"][
        "math_ko"
    ]
    think = metrics["modes"]["think"]
    total = len(tok(text, add_special_tokens=False)["input_ids"])
    reasoning = len(tok("<think>3+4=7, 모두 7개</think>", add_special_tokens=False)["input_ids"])
    assert think["pass@1"] == 1.0 and think["missing"] == 1
    assert think["tokens_per_problem"] == total and think["reasoning_tokens"] == reasoning
    assert think["answer_tokens"] == total - reasoning > 0
