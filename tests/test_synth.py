"""Generated Korean arithmetic: determinism, correct traces, levels, held-out split, CLI."""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from k1 import synth
from k1.errors import K1Error

ROOT = Path(__file__).resolve().parents[1]


def test_same_seed_same_problems_other_seed_other_problems():
    a = synth.arithmetic(60, seed=3)
    assert a == synth.arithmetic(60, seed=3)
    b = synth.arithmetic(60, seed=4)
    assert {r["key"] for r in a} != {r["key"] for r in b}


def test_every_trace_recomputes_to_the_answer():
    records = synth.arithmetic(800, seed=0)
    assert all(synth.check_record(r) for r in records)
    for r in records:
        assert r["answer_text"].startswith(f"정답: {r['answer']}")
        assert r["answer"] >= 0
        user, assistant = r["messages"]
        assert user == {"role": "user", "content": r["question"]}
        assert assistant["reasoning_content"] == r["reasoning"] and assistant["content"] == r["answer_text"]
    # the self-check catches a wrong step
    bad = dict(records[0], reasoning=records[0]["reasoning"].replace(" = ", " = 1", 1))
    assert not synth.check_record(bad)


def test_levels_grow_in_steps_and_use_several_templates():
    steps = {}
    for level in synth.LEVELS:
        records = synth.arithmetic(120, seed=1, levels=level)
        assert {r["level"] for r in records} == {level}
        counts = [len(synth.EQUATION.findall(r["reasoning"])) for r in records]
        steps[level] = (min(counts), max(counts))
        assert len(Counter(r["template"].split(":")[0] for r in records)) >= 3
    assert steps[1] == (1, 1) and steps[2] == (1, 1)
    assert steps[3] == (2, 2) and steps[4][0] >= 3
    ops2 = "".join(r["reasoning"] for r in synth.arithmetic(100, seed=1, levels=2))
    assert "×" in ops2 and "÷" in ops2
    mixed = synth.arithmetic(40, seed=0, levels="1..4")
    assert [r["level"] for r in mixed[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]


def test_questions_are_korean_with_fitting_particles():
    assert synth.josa("민수", "은/는") == "민수는" and synth.josa("서연", "이/가") == "서연이"
    assert synth.josa("사과", "을/를") == "사과를" and synth.josa("2권", "과/와") == "2권과"
    for r in synth.arithmetic(200, seed=2):
        q = r["question"]
        assert q.endswith("?") and re.search(r"[가-힣]{2}", q)
        assert "은는" not in q and "이가" not in q
        # a particle after a name agrees with its final consonant
        for name in synth.NAMES:
            for m in re.finditer(name + r"(은|는|이|가)", q):
                assert m.group(0) == synth.josa(name, "은/는" if m.group(1) in "은는" else "이/가")


def test_held_out_split_never_overlaps_training():
    train = synth.arithmetic(4000, seed=0, split="train")
    for seed in (0, 1):
        test = synth.arithmetic(400, seed=seed, split="test")
        assert not {r["key"] for r in train} & {r["key"] for r in test}
        assert not {r["question"] for r in train} & {r["question"] for r in test}
        assert all(synth.split_of(r["key"]) == "test" for r in test)
    assert len({r["key"] for r in train}) == len(train)  # distinct within a split


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(K1Error, match="levels are 1..4"):
        synth.arithmetic(5, levels="0..2")
    with pytest.raises(K1Error, match="--level"):
        synth.parse_levels("easy")
    with pytest.raises(K1Error, match="split"):
        synth.arithmetic(5, split="dev")
    with pytest.raises(K1Error, match="ran out of distinct"):
        synth.arithmetic(1000, levels=1, split="test")


def test_cli_writes_jsonl_and_reports_bad_input(tmp_path):
    out = tmp_path / "p.jsonl"
    cmd = [sys.executable, "-m", "k1", "synth", "arithmetic", "--n", "12", "--seed", "5", "--level", "2,4"]
    res = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records == synth.arithmetic(12, seed=5, levels=(2, 4))
    bad = subprocess.run(
        [*cmd[:-2], "--level", "7", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "levels are 1..4" in bad.stderr
