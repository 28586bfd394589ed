"""Data readers for the upstream layouts, the task registry, and the code tasks end to end through
`score`: canonical MBPP solutions pass, wrong ones fail, HumanEval and LiveCodeBench layouts work."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest
from evals_helpers import shared_data

from k1.errors import ConfigError
from k1.evals import code as code_eval
from k1.evals.data import DataError
from k1.evals.models import Completion
from k1.evals.run import score
from k1.evals.tasks import MCQTask, get_task

FIXTURES = Path(__file__).parent / "fixtures" / "evals"


def _write_samples(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


# -- readers on the real upstream files ------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "folder", "rows", "n_choices"),
    [
        ("kobest_boolq", "kobest_BoolQ", 700, 2),
        ("kobest_copa", "kobest_COPA", 500, 2),
        ("kobest_hellaswag", "kobest_HellaSwag", 500, 4),
    ],
)
def test_kobest_layouts(task, folder, rows, n_choices):
    directory = shared_data("ko_mcq", folder)
    t = get_task(task)
    assert isinstance(t, MCQTask)
    docs = t.load(directory)  # a directory in the upstream layout: dev.tsv is evaluated
    assert len(docs) == rows and all(len(d.choices) == n_choices for d in docs)
    golds = {d.gold for d in docs}
    assert golds == set(range(n_choices))  # both/all labels occur: the label column was read right
    assert len({d.id for d in docs}) == rows
    assert t.fewshot_pool_path(directory).name == "train.tsv"


def test_kobest_copa_prompt_uses_the_relation():
    docs = get_task("kobest_copa").load(shared_data("ko_mcq", "kobest_COPA", "dev.tsv"), limit=20)
    assert any(d.context.endswith(" 그래서") for d in docs) and any(
        d.context.endswith(" 왜냐하면") for d in docs
    )
    first = docs[0]  # "전쟁이 시작되었다." / 결과 / answer 2
    assert first.context == "전쟁이 시작되었다. 그래서" and first.gold == 1
    assert first.choices[1] == " 병사들이 전투에 파견되었다."


def test_fewshot_examples_are_solved_and_never_the_question():
    task = get_task("kobest_copa")
    docs = task.load(shared_data("ko_mcq", "kobest_COPA", "dev.tsv"), limit=5)
    from k1.evals.mcq import build_requests

    requests = build_requests(task, docs, docs, num_fewshot=3, seed=0)
    for doc, reqs in zip(docs, requests, strict=True):
        context = reqs[0][0]
        assert context.count("\n\n") == 3 and context.endswith(doc.context)
        shots = context.split("\n\n")[:3]
        assert all(not shot.startswith(doc.context) for shot in shots)
    assert build_requests(task, docs, docs, 3, seed=0) == requests  # deterministic


def test_math_layouts():
    gsm = get_task("gsm8k").load(shared_data("math", "gsm8k_train_head200.jsonl"))
    assert len(gsm) == 200 and gsm[0].answer == "72" and gsm[0].solution.endswith("#### 72")
    aime = get_task("aime").load(shared_data("math", "aime24_test.jsonl"))
    assert len(aime) == 30 and {d.answer for d in aime} >= {"025", "204"}
    kor = get_task("kor_math").load(shared_data("math", "kor-D_addsub-train.json"))  # JSON Lines under .json
    assert len(kor) == 316 and kor[0].problem.startswith("마이크는") and kor[0].answer == "227"


def test_malformed_lines_name_the_file_and_line(tmp_path):
    bad = tmp_path / "gsm.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": "q2", "answer": "#### 2"\n')
    with pytest.raises(DataError, match=rf"{bad}:3: not valid JSON"):
        get_task("gsm8k").load(bad)
    missing = tmp_path / "aime.jsonl"
    missing.write_text('{"problem": "p", "answer": "1"}\n{"problem": "p"}\n')
    with pytest.raises(DataError, match=rf"{missing}:2: missing field 'answer'"):
        get_task("aime").load(missing)
    tsv = tmp_path / "dev.tsv"
    tsv.write_text("ID\tsentence\tquestion\t1\t2\tAnswer\n1\t비.\t결과\t가\t나\t1\n2\t비.\t결과\t가\n")
    with pytest.raises(DataError, match=rf"{tsv}:3: 4 fields, but the header has 6"):
        get_task("kobest_copa").load(tsv)
    wrong_relation = tmp_path / "copa.tsv"
    wrong_relation.write_text("ID\tsentence\tquestion\t1\t2\tAnswer\n1\t비.\t이유\t가\t나\t1\n")
    with pytest.raises(DataError, match=rf"{wrong_relation}:2: field 'question' should be 원인 or 결과"):
        get_task("kobest_copa").load(wrong_relation)
    with pytest.raises(DataError, match="no such data file"):
        get_task("gsm8k").load(tmp_path / "absent.jsonl")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b'{"question": "\xff\xfe"}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        get_task("gsm8k").load(binary)


def test_registry_rejects_unknown_names_and_options():
    with pytest.raises(ConfigError, match="did you mean 'gsm8k'"):
        get_task("gsm8kk")
    with pytest.raises(ConfigError, match="unknown option 'splt'"):
        get_task("mbpp").load(shared_data("code", "mbpp.jsonl"), splt="test")


def test_other_mcq_layouts(tmp_path):
    kmmlu = tmp_path / "kmmlu.csv"
    kmmlu.write_text(
        'question,answer,A,B,C,D,Category,Human Accuracy\n"대한민국의 수도는?\n(한 곳)",2,부산,서울,대구,광주,Geo,0.9\n'
    )
    doc = get_task("kmmlu").load(kmmlu)[0]  # a quoted field holding a newline
    assert doc.gold == 1 and doc.choices == [" A", " B", " C", " D"]
    assert doc.context == "대한민국의 수도는?\n(한 곳)\nA. 부산\nB. 서울\nC. 대구\nD. 광주\n정답:"
    click = tmp_path / "click.json"
    click.write_text(
        json.dumps(
            [
                {
                    "id": "c1",
                    "paragraph": "",
                    "question": "한글을 만든 왕은?",
                    "choices": ["태조", "세종", "정조", "고종", "영조"],
                    "answer": "세종",
                }
            ],
            ensure_ascii=False,
        )
    )
    doc = get_task("click").load(click)[0]
    assert doc.gold == 1 and len(doc.choices) == 5 and "E. 영조" in doc.context


# -- code: canonical solutions pass, wrong ones fail ---------------------------------------------


def test_mbpp_canonical_solutions_pass_and_wrong_ones_fail(tmp_path):
    """A subset here (bench/evals_canonical.py runs all 974 + 427): every reference passes."""
    full = shared_data("code", "mbpp.jsonl")
    result = score("mbpp", str(full), reference=True, limit=40, workers=2)["tasks"]["mbpp"]["modes"][
        "non-think"
    ]
    assert result["pass@1"] == 1.0 and result["n_problems"] == 40
    # MBPP tasks whose test fixtures use the solution's own classes (test_setup_code) pass too
    docs = get_task("mbpp").load(full)
    fixtures = [d for d in docs if d.id in ("367", "927")]
    records = code_eval.score_docs(fixtures, [[Completion(d.reference, None)] for d in fixtures], think=False)
    assert all(r["samples"][0]["correct"] for r in records)
    # wrong answers: a solution to a different task, a syntax error, a function that returns None
    docs = docs[10:30]
    rows = []
    for i, d in enumerate(docs):
        wrong = [
            docs[(i + 1) % len(docs)].reference,
            "def broken(:\n  pass",
            "```python\nimport sys\nsys.exit(0)\n```",
        ]
        rows.append({"id": d.id, "completions": wrong})
    samples = _write_samples(tmp_path / "wrong.jsonl", rows)
    result = score("mbpp", str(full), samples, limit=30, workers=2, ks=(1, 3))["tasks"]["mbpp"]["modes"][
        "non-think"
    ]
    assert result["pass@1"] == 0.0 and result["pass@3"] == 0.0 and result["missing"] == 10


def test_mbpp_sanitized_layout():
    path = shared_data("code", "sanitized-mbpp.json")
    docs = get_task("mbpp").load(path, split="test")
    assert docs and all(11 <= int(d.id) <= 510 for d in docs)
    result = score("mbpp", str(path), reference=True, limit=15)["tasks"]["mbpp"]["modes"]["non-think"]
    assert result["pass@1"] == 1.0


def test_humaneval_layout(tmp_path):
    data = str(FIXTURES / "humaneval_tiny.jsonl")
    ref = score("humaneval", data, reference=True)["tasks"]["humaneval"]["modes"]["non-think"]
    assert ref["pass@1"] == 1.0 and ref["n_problems"] == 3
    rows = [
        # a chat answer with the whole function, reasoning first
        {
            "id": "Tiny/0",
            "completion": "<think>keep the best so far</think>\n```python\nfrom typing import List\n\n"
            "def running_max(numbers: List[int]) -> List[int]:\n    import itertools\n"
            "    return list(itertools.accumulate(numbers, max))\n```",
        },
        # a body continuing the header, using the header's helper
        {"id": "Tiny/1", "completion": "    return ''.join(shift_char(ch, k) for ch in s)\n"},
        # wrong: counts every character
        {"id": "Tiny/2", "completion": "```python\ndef count_hangul(text):\n    return len(text)\n```"},
    ]
    result = score("humaneval", data, _write_samples(tmp_path / "s.jsonl", rows), mode="think")
    modes = result["tasks"]["humaneval"]["modes"]
    assert list(modes) == ["think"] and modes["think"]["pass@1"] == pytest.approx(2 / 3)
    assert modes["think"]["adherence"] == pytest.approx(1 / 3)  # only Tiny/0 reasoned before answering
    garbage = [{"id": f"Tiny/{i}", "completion": "\ufffd\x00 )))( <think>"} for i in range(3)]
    result = score("humaneval", data, _write_samples(tmp_path / "g.jsonl", garbage))
    assert result["tasks"]["humaneval"]["modes"]["non-think"]["pass@1"] == 0.0


LCB_RIGHT = {
    "tiny_sum": "n = int(input())\nprint(sum(map(int, input().split())))\n",
    "tiny_tri": "```python\nn = int(input())\ns = n * (n + 1) // 2\nprint(s, s / n)\n```",
    "tiny_digits": "```python\nclass Solution:\n    def addDigits(self, num: int) -> int:\n"
    "        return 0 if num == 0 else 1 + (num - 1) % 9\n```",
}
LCB_WRONG = {
    "tiny_sum": "n = int(input())\nprint(sum(map(int, input().split())) % 2**31)\n",  # overflows on the private test
    "tiny_tri": "n = int(input())\nprint(n * (n + 1) // 2)\n",
    "tiny_digits": "class Solution:\n    def addDigits(self, num):\n        return num % 10\n",
}


@pytest.mark.parametrize("task", ["livecodebench", "livecodebench_ko"])
def test_livecodebench_layout(task, tmp_path):
    data = str(FIXTURES / "livecodebench_tiny.jsonl")
    docs = get_task(task).load(data)
    assert [d.style for d in docs] == ["stdio", "stdio", "functional"]
    assert len(docs[0].cases) == 3  # one public + two packed private tests
    assert docs[2].entry_point == "addDigits" and "class Solution" in docs[2].starter_code
    prompt = get_task(task).prompt(docs[0], think=False, chat=True).messages[0]["content"]
    assert ("표준 입력" in prompt) == (task == "livecodebench_ko")
    right = _write_samples(tmp_path / "r.jsonl", [{"id": k, "completion": v} for k, v in LCB_RIGHT.items()])
    wrong = _write_samples(tmp_path / "w.jsonl", [{"id": k, "completion": v} for k, v in LCB_WRONG.items()])
    assert score(task, data, right)["tasks"][task]["modes"]["non-think"]["pass@1"] == 1.0
    out = tmp_path / "out"
    assert score(task, data, wrong, out=str(out))["tasks"][task]["modes"]["non-think"]["pass@1"] == 0.0
    outcomes = [
        json.loads(line)["samples"][0]["outcome"]
        for line in (out / "samples" / f"{task}.non-think.jsonl").read_text().splitlines()
    ]
    assert outcomes[0] == "failed on test 1: wrong answer"  # the public test passed; a private one caught it


def test_livecodebench_date_window():
    data = FIXTURES / "livecodebench_tiny.jsonl"
    after = get_task("livecodebench").load(data, after="2024-08-01")
    assert [d.id for d in after] == ["tiny_sum", "tiny_tri"]
    window = get_task("livecodebench").load(data, after="2024-08-01", before="2024-10-01")
    assert [d.id for d in window] == ["tiny_sum"]


def test_packed_tests_cannot_run_code(tmp_path):
    """Private tests are unpickled; a pickle that names a callable is refused, never executed."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    packed = base64.b64encode(zlib.compress(pickle.dumps(Evil()))).decode()
    row = json.loads((FIXTURES / "livecodebench_tiny.jsonl").read_text().splitlines()[0])
    row["private_test_cases"] = packed
    path = tmp_path / "evil.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"{path}:1: field 'private_test_cases'"):
        get_task("livecodebench").load(path)
    assert not marker.exists()


def test_outputs_match_like_a_judge():
    assert code_eval.outputs_match("1 2\n3\n\n", "1 2\n3")
    assert code_eval.outputs_match("0.3333333\n", "0.33333333333")
    assert not code_eval.outputs_match("1 2\n", "1 3\n")
    assert not code_eval.outputs_match("1\n2\n", "1\n")
