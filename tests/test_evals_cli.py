"""`k1 eval`: thin commands over the library; user mistakes are one line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from evals_helpers import one_thread, save, shared_data, tiny_model, tiny_tokenizer

from k1.cli import main
from k1.errors import ConfigError
from k1.evals.run import load_config

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "evals"


def _fails(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    return err


def test_tasks_lists_the_registry(capsys):
    main(["eval", "tasks"])
    out = capsys.readouterr().out
    for name in (
        "gsm8k",
        "aime",
        "kor_math",
        "kobest_copa",
        "kmmlu",
        "click",
        "humaneval",
        "mbpp",
        "livecodebench_ko",
    ):
        assert name in out


def test_user_mistakes_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{oops\n')
    err = _fails(["eval", "score", "--task", "gsm8k", "--data", str(bad), "--reference"], capsys)
    assert f"{bad}:2: not valid JSON" in err
    assert "did you mean 'gsm8k'" in _fails(
        ["eval", "score", "--task", "gsm8", "--data", str(bad), "--reference"], capsys
    )
    assert "NAME=PATH" in _fails(["eval", "run", "m", "--tasks", "gsm8k"], capsys)
    assert "either --samples FILE or --reference" in _fails(
        ["eval", "score", "--task", "gsm8k", "--data", str(bad)], capsys
    )
    samples = tmp_path / "s.jsonl"
    samples.write_text('{"id": "nope", "completion": "1"}\n')
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "q", "answer": "#### 1"}\n')
    assert f"{samples}:1: id 'nope' is not a problem" in _fails(
        ["eval", "score", "--task", "gsm8k", "--data", str(good), "--samples", str(samples)], capsys
    )
    out = tmp_path / "out"
    assert f"{tmp_path / 'nope.jsonl'}: no such data file for task gsm8k" in _fails(
        ["eval", "run", str(tmp_path), "--tasks", f"gsm8k={tmp_path / 'nope.jsonl'}", "--out", str(out)],
        capsys,
    )
    assert "no such model directory" in _fails(
        ["eval", "run", str(tmp_path / "absent"), "--tasks", f"gsm8k={good}", "--out", str(out)], capsys
    )
    assert not out.exists()  # nothing written for a run that could not start


def test_no_traceback_from_the_real_command(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    done = subprocess.run(
        [sys.executable, "-m", "k1", "eval", "score", "--task", "aime", "--data", str(bad), "--reference"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == f"k1: error: {bad}:1: not valid JSON (Expecting value at column 1); fix or remove the line"
    )


def test_score_reference_writes_results(tmp_path, capsys):
    out = tmp_path / "out"
    main(
        [
            "eval",
            "score",
            "--task",
            "mbpp",
            "--data",
            str(shared_data("code", "mbpp.jsonl")),
            "--reference",
            "--limit",
            "5",
            "--option",
            "split=test",
            "--out",
            str(out),
        ]
    )
    assert "pass@1   1.000  n=5" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"]["mbpp"]["modes"]["non-think"]["pass@1"] == 1.0
    assert len((out / "samples" / "mbpp.non-think.jsonl").read_text().splitlines()) == 5


def test_run_and_compare(tmp_path, capsys):
    tok = tiny_tokenizer()
    model_dir = save(tiny_model(tok), tok, tmp_path / "model")
    runs = []
    with one_thread():
        _run_twice(model_dir, tmp_path, runs)
    assert "humaneval" in capsys.readouterr().out
    main(["eval", "compare", *runs, "--out", str(tmp_path / "cmp")])
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md.count("| humaneval |") == 2 and (tmp_path / "cmp" / "compare.png").stat().st_size > 1000


def _run_twice(model_dir, tmp_path, runs):
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        main(
            [
                "eval",
                "run",
                str(model_dir),
                "--tasks",
                f"humaneval={FIXTURES / 'humaneval_tiny.jsonl'}",
                "--modes",
                "think,non-think",
                "--max-new-tokens",
                "8",
                "--temperature",
                "0.8",
                "--seed",
                str(seed),
                "--timeout",
                "5",
                "--out",
                str(out),
            ]
        )
        runs.append(str(out))


def test_recipe_is_valid_and_unknown_keys_are_named(tmp_path):
    cfg = load_config(ROOT / "recipes" / "eval.toml")
    assert [t.name for t in cfg.tasks][:2] == ["gsm8k", "kor_math"] and cfg.sandbox.timeout_s == 10.0
    for spec in cfg.tasks:  # the recipe's data paths are examples; everything else must validate
        spec.data = str(FIXTURES / "humaneval_tiny.jsonl")
    cfg.validate()
    cfg.quantize = "int4"
    with pytest.raises(ConfigError, match="quantize 'int4'.*int8"):
        cfg.validate()
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "m"\nmax_new_token = 5\n')
    with pytest.raises(ConfigError, match="unknown key 'max_new_token'.*did you mean 'max_new_tokens'"):
        load_config(bad)
    bad.write_text('model = "m"\n[sandbox]\ntimeout = 5\n')
    with pytest.raises(ConfigError, match=r"\[sandbox\]: unknown key 'timeout'"):
        load_config(bad)
