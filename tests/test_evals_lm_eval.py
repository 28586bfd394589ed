"""k1 model directories run under lm-evaluation-harness through transformers (`lm_eval --model hf`),
and lm-eval's log-likelihoods agree with k1's own multiple-choice scorer on the same requests."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from evals_helpers import one_thread, save, tiny_model, tiny_tokenizer  # noqa: E402

from k1.evals.models import HFModel  # noqa: E402
from k1.evals.tasks import get_task  # noqa: E402

ROWS = [
    ("비가 왔다.", "결과", "우산을 썼다.", "선글라스를 썼다.", 1),
    ("배가 고팠다.", "결과", "밥을 먹었다.", "잠을 잤다.", 1),
    ("길이 미끄러웠다.", "원인", "눈이 왔다.", "해가 떴다.", 1),
    ("시험에 떨어졌다.", "원인", "공부를 하지 않았다.", "잠을 잘 잤다.", 1),
]

# The same prompt as k1's kobest_copa task: "<premise> 그래서|왜냐하면" + " <alternative>".
TASK_YAML = """
task: k1_tiny_copa
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{sentence}}}} {{{{'그래서' if question == '결과' else '왜냐하면'}}}}"
doc_to_choice: "{{{{[' ' + alt1, ' ' + alt2]}}}}"
doc_to_target: "{{{{answer - 1}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.slow
def test_lm_eval_hf_runs_a_k1_directory(tmp_path, monkeypatch):
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    tok = tiny_tokenizer()
    model_dir = save(tiny_model(tok), tok, tmp_path / "model")
    data = tmp_path / "copa.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {"sentence": s, "question": q, "alt1": a, "alt2": b, "answer": ans}, ensure_ascii=False
            )
            + "\n"
            for s, q, a, b, ans in ROWS
        )
    )
    tsv = tmp_path / "dev.tsv"
    tsv.write_text(
        "ID\tsentence\tquestion\t1\t2\tAnswer\n"
        + "".join(f"{i}\t{s}\t{q}\t{a}\t{b}\t{ans}\n" for i, (s, q, a, b, ans) in enumerate(ROWS))
    )
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / "k1_tiny_copa.yaml").write_text(TASK_YAML.format(data=data))
    with one_thread():
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_dir},dtype=float32",
            tasks=["k1_tiny_copa"],
            task_manager=TaskManager(include_path=str(tasks_dir)),
            device="cpu",
            batch_size=2,
            log_samples=True,
        )
        ours = HFModel(str(model_dir))
        docs = get_task("kobest_copa").load(tsv)
        lls = ours.loglikelihood([r for d in docs for r in get_task("kobest_copa").requests(d, [])])
    samples = sorted(out["samples"]["k1_tiny_copa"], key=lambda s: s["doc_id"])
    theirs = [float(resp[0][0]) for s in samples for resp in s["resps"]]
    assert [tuple(a) for s in samples for a in s["arguments"]][:2] == get_task("kobest_copa").requests(
        docs[0], []
    )
    assert lls == pytest.approx(theirs, abs=1e-3)
    ours_acc = sum((lls[2 * i + 1] > lls[2 * i]) == (d.gold == 1) for i, d in enumerate(docs)) / len(docs)
    assert out["results"]["k1_tiny_copa"]["acc,none"] == pytest.approx(ours_acc)
