"""Answer extraction, reasoning split, pass@k and majority vote; reference answers of the real math
sets must score 100% through the extractor and perturbed ones 0%."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from itertools import combinations
from pathlib import Path

import pytest
from evals_helpers import shared_data
from hypothesis import given, settings
from hypothesis import strategies as st

from k1.evals.extract import adheres, answers_equal, extract_answer, extract_code, split_thinking
from k1.evals.metrics import generative_metrics, majority, pass_at_k, sample_record
from k1.evals.run import score


@pytest.mark.parametrize(
    ("text", "gold"),
    [
        ("so the total is \\boxed{42}.", "42"),
        ("\\boxed{\\frac{2}{3}}", "0.6666666666666666"),
        ("\\boxed{\\dfrac{3}{4}}", "0.75"),
        ("$\\boxed{025}$", "25"),
        ("\\boxed{25}", "025"),
        ("The answer is 1,250 dollars.", "1250"),
        ("the final answer is: $18.", "18"),
        ("Final Answer: 3.50", "3.5"),
        ("따라서 정답: 1,250원입니다.", "1250"),
        ("정답은 227개입니다.", "227"),
        ("그러므로 답은 36이다.", "36"),
        ("답: -7", "-7"),
        ("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72", "72"),
        ("We get 3 + 4 = 7 apples in total", "7"),
        ("The answer is x = 5", "5"),
        ("\\boxed{50\\%}", "0.5"),
        ("\\boxed{50\\%}", "50"),
        ("\\boxed{26}", "26.0"),
        ("The answer is 2/3", "0.6666666666666666"),
        ("\\boxed{\\text{(B)}}", "(B)"),
        ("\\boxed{2\\sqrt{3}}", "2\\sqrt{3}"),
        ("\\boxed 7", "7"),
        ("\\boxed{1{,}000}", "1000"),
        ("\\boxed{0.666667}", "0.6666666666666666"),
        ("is \\boxed{12^\\circ}", "12"),
    ],
)
def test_extracts_and_matches(text, gold):
    assert answers_equal(extract_answer(text), gold)


@pytest.mark.parametrize(
    ("text", "gold"),
    [
        ("\\boxed{41}", "42"),
        ("정답: 1,251원", "1250"),
        ("\\boxed{0.67}", "0.6666666666666666"),  # 0.5% off: beyond the 1e-4 relative tolerance
        ("no answer here", "3"),
        ("", "3"),
        ("\\boxed{2\\sqrt{2}}", "2\\sqrt{3}"),
        ("The answer is 5, not 7", "7"),
        # regressions: a relative tolerance once let large integers and short decimals pass when off
        ("The answer is 448001.", "448000"),
        ("\\boxed{2400001}", "2400000.0"),
        ("\\boxed{224.88}", "224.87"),
    ],
)
def test_rejects_wrong_answers(text, gold):
    assert not answers_equal(extract_answer(text), gold)


def test_answers_equal_normalizes_both_sides():
    assert answers_equal("\\frac{2}{3}", "0.6666666666666666")
    assert answers_equal("$1,000$", "1000") and not answers_equal("$1,001$", "1000")


def test_boxed_beats_phrases_and_later_numbers():
    """The last \\boxed{} is the answer even if numbers follow it."""
    assert extract_answer("The answer is 3. Check: \\boxed{5}. (took 10 minutes)") == "5"
    assert extract_answer("\\boxed{1} then \\boxed{2}") == "2"


def test_garbage_gives_no_crash():
    for text in [
        "\\boxed{",
        "\\boxed{{{{",
        "정답:",
        "####",
        "\x00\x01\ufffd" * 100,
        "9" * 10000,
        "\\frac{1}{0}",
        "1/0",
        "\\boxed{\\frac{1}{0}}",
    ]:
        extracted = extract_answer(text)
        assert extracted is None or isinstance(extracted, str)
        answers_equal(extracted, "1")


@settings(max_examples=200, deadline=None)
@given(num=st.integers(-(10**6), 10**6), den=st.integers(1, 50), style=st.integers(0, 6))
def test_rendered_numbers_roundtrip(num, den, style):
    """Any rational, written in any of the answer styles, extracts to a value equal to itself."""
    value = Fraction(num, den)
    if value.denominator == 1:
        plain = f"{value.numerator:,}" if style % 2 else str(value.numerator)
    else:
        plain = (
            f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
            if style % 2
            else f"{value.numerator}/{value.denominator}"
        )
    text = [
        f"\\boxed{{{plain}}}",
        f"The answer is {plain}.",
        f"정답: {plain}",
        f"#### {plain}",
        f"따라서 답은 {plain}입니다.",
        f"so we get {plain}",
        f"Final answer: ${plain}$",
    ][style]
    gold = str(float(value)) if value.denominator != 1 else str(value.numerator)
    assert answers_equal(extract_answer(text), gold), (text, gold)


def test_split_thinking_and_adherence():
    t = split_thinking("<think>6*7=42</think>\n\nThe answer is 42.")
    assert (t.reasoning, t.answer, t.closed) == ("6*7=42", "The answer is 42.", True)
    assert adheres(t, think=True) and not adheres(t, think=False)
    # the template opened the block: the completion starts inside it
    t = split_thinking("<think>\nlet me see\n</think>\\boxed{3}")
    assert t.reasoning == "let me see" and t.answer == "\\boxed{3}"
    # ran out of tokens inside the reasoning: no answer, not adherent in think mode
    t = split_thinking("<think>\nstill thinking about 41")
    assert t.answer == "" and not t.closed and not adheres(t, think=True)
    assert extract_answer(t.answer) is None
    # an empty block counts as no reasoning in non-think mode
    assert adheres(split_thinking("<think>\n\n</think>\n\n\\boxed{3}"), think=False)
    assert adheres(split_thinking("\\boxed{3}"), think=False)
    assert not adheres(split_thinking("\\boxed{3}"), think=True)
    # a code body keeps its indentation (regression: stripping it broke HumanEval continuations)
    assert split_thinking("\n    return x\n").answer == "    return x"
    # numbers in the reasoning never count as the answer
    assert extract_answer(split_thinking("<think>maybe 99</think>no idea").answer) is None


def test_reasoning_and_answer_tokens():
    # a count above the generated total is capped (a tokenizer may split text differently in isolation)
    record, _ = sample_record("<think>abcd</think>xy", 10, "stop", True, count_tokens=len)
    assert (record["reasoning_tokens"], record["answer_tokens"]) == (10, 0)
    record, _ = sample_record("<think>ab</think>xyz", 20, "stop", True, count_tokens=lambda s: 5)
    assert (record["reasoning_tokens"], record["answer_tokens"], record["adherent"]) == (5, 15, True)
    # no tokenizer (an endpoint): tokens shared by characters
    record, _ = sample_record("<think>" + "a" * 33 + "</think>" + "b" * 52, 100, "stop", True)
    assert record["reasoning_tokens"] == 48 and record["answer_tokens"] == 52
    record, _ = sample_record("plain answer", 7, "stop", False, count_tokens=len)
    assert (record["reasoning_tokens"], record["answer_tokens"]) == (0, 7)


def test_extract_code():
    assert extract_code("Sure:\n```python\nprint(1)\n```\nand\n```python\nprint(2)\n```") == "print(2)\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # truncated fence
    assert extract_code("    return a + b\n") == "    return a + b\n"  # a bare completion
    assert extract_code("```bash\nls\n```") == "ls\n"


def _brute_pass_at_k(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 5, 2), (8, 1, 8), (10, 3, 4)])
def test_pass_at_k_matches_enumeration(n, c, k):
    """The unbiased estimator equals the share of k-subsets holding a correct sample."""
    assert math.isclose(pass_at_k(n, c, k), _brute_pass_at_k(n, c, k), rel_tol=1e-12)


def test_pass_at_k_large_n_and_errors():
    assert 0 < pass_at_k(1000, 1, 10) < 1
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 5)


def test_majority_and_maj_metric():
    assert majority(["3", None, "5", "5", "3"]) == "3"  # tie: first given
    assert majority([None, None]) is None
    records = [
        {
            "id": "a",
            "samples": [
                {"correct": c, "n_tokens": 10, "finish": "stop", "adherent": True} for c in (1, 0, 0, 1)
            ],
            "maj_correct": True,
        },
        {
            "id": "b",
            "samples": [
                {"correct": c, "n_tokens": 30, "finish": "length", "adherent": False} for c in (0, 0, 0, 0)
            ],
            "maj_correct": False,
        },
    ]
    m = generative_metrics(records, ks=(1, 2))
    assert m["pass@1"] == pytest.approx(0.25) and m["maj@4"] == 0.5
    assert m["pass@2"] == pytest.approx((1 - (2 / 4) * (1 / 3)) / 2)
    assert m["tokens_per_problem"] == 20 and m["tokens_per_correct"] == pytest.approx(160 / 2)
    assert m["adherence"] == 0.5 and m["truncated"] == 0.5


# -- real data: reference answers score 100%, perturbed ones 0% ---------------------------------


def _wrong(answer: str) -> str:
    value = Fraction(answer.replace(",", ""))
    return str(value + 1) if value.denominator == 1 else str(float(value) * 1.5 + 1)


FORMATS = [
    "\\boxed{{{}}}",
    "The answer is {}.",
    "정답: {}",
    "따라서 답은 {}입니다.",
    "#### {}",
    "We end up with {} in all",
]


def _samples(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "samples.jsonl"
    path.write_text(
        "".join(json.dumps({"id": i, "completion": c}, ensure_ascii=False) + "\n" for i, c in rows)
    )
    return path


@pytest.mark.parametrize(
    ("task", "file"),
    [
        ("gsm8k", "math/gsm8k_train_head200.jsonl"),
        ("aime", "math/aime24_test.jsonl"),
        ("kor_math", "math/kor-D_addsub-train.json"),
        ("kor_math", "math/kor-D_multiarith-train.json"),
        ("kor_math", "math/kor-D_single_eq-train.json"),
    ],
)
def test_real_math_references_score_100_and_wrong_0(task, file, tmp_path):
    from k1.evals.tasks import get_task

    path = shared_data(*file.split("/"))
    # the data set's own reference (GSM8K: the full worked solution ending in "#### n")
    ref = score(task, str(path), reference=True)["tasks"][task]["modes"]["non-think"]
    assert ref["pass@1"] == 1.0 and ref["missing"] == 0
    docs = get_task(task).load(path)
    rng = random.Random(0)
    right, wrong = [], []
    for doc in docs:
        fmt = rng.choice(FORMATS)
        gold = doc.answer
        if Fraction(gold).denominator == 1 and abs(Fraction(gold)) >= 1000:
            gold = f"{int(Fraction(gold)):,}"  # write large answers with thousands separators
        right.append((doc.id, "풀이 과정 12 + 30 ...\n" + fmt.format(gold)))
        wrong.append((doc.id, "풀이 과정 ...\n" + fmt.format(_wrong(doc.answer))))
    ok = score(task, str(path), str(_samples(tmp_path, right)))["tasks"][task]["modes"]["non-think"]
    bad = score(task, str(path), str(_samples(tmp_path, wrong)))["tasks"][task]["modes"]["non-think"]
    assert ok["pass@1"] == 1.0
    assert bad["pass@1"] == 0.0


def test_aime_solutions_extract_their_answer():
    """AoPS solutions that end in a boxed answer extract it (leading zeros: "025" == 25)."""
    path = shared_data("math", "aime24_test.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    boxed = [r for r in rows if "\\boxed" in r["solution"]]
    hits = sum(answers_equal(extract_answer(r["solution"]), r["answer"]) for r in boxed)
    assert len(boxed) >= 25 and hits / len(boxed) >= 0.9
