"""Results files: JSON for machines, Markdown for people, a PNG comparing models.

    write_results("runs/eval/student", results)   # results.json, results.md, results.png
    compare(["runs/eval/a/results.json", "runs/eval/b/results.json"], "runs/eval/compare")

The Markdown ends with a report card in the shape the run report uses: Korean vs English tasks,
think vs non-think, and the tokens each answer cost.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from k1.errors import K1Error

PRIMARY = {"mcq": ("acc_norm", "acc"), "math": ("pass@1",), "code": ("pass@1",)}


def primary(kind: str, metrics: dict) -> tuple[str, float | None]:
    """The headline metric of a task family (acc_norm for multiple choice, pass@1 otherwise)."""
    for name in PRIMARY.get(kind, ("pass@1", "acc")):
        if metrics.get(name) is not None:
            return name, metrics[name]
    return PRIMARY.get(kind, ("score",))[0], None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _tokens(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def rows(results: dict) -> list[dict]:
    """One row per (task, mode): the flat view both the Markdown and the plot use."""
    out = []
    for name, entry in results.get("tasks", {}).items():
        for mode, m in entry.get("modes", {}).items():
            metric, value = primary(entry["kind"], m)
            out.append(
                {
                    "task": name,
                    "kind": entry["kind"],
                    "language": entry.get("language", ""),
                    "mode": mode,
                    "metric": metric,
                    "score": value,
                    **{
                        k: m.get(k)
                        for k in (
                            "tokens_per_problem",
                            "tokens_per_correct",
                            "reasoning_tokens",
                            "answer_tokens",
                            "adherence",
                            "truncated",
                            "n_problems",
                            "missing",
                        )
                    },
                    "metrics": m,
                }
            )
    return out


def markdown(results: dict) -> str:
    lines = [f"# k1 eval: {results.get('name', results.get('model', '?'))}", ""]
    lines.append(
        f"- model: `{results.get('model')}` (backend {results.get('backend')}"
        + (", chat template" if results.get("chat") else "")
        + ")"
    )
    if results.get("started"):
        lines.append(f"- run: {results['started']} – {results.get('finished', '')}")
    cfg = results.get("config") or {}
    if cfg:
        lines.append(
            f"- decoding: max_new_tokens {cfg.get('max_new_tokens')}, temperature {cfg.get('temperature')}, "
            f"top_p {cfg.get('top_p')}, n {cfg.get('n')}, seed {cfg.get('seed')}; few-shot {cfg.get('num_fewshot')}"
        )
    lines += [
        "",
        "## Results",
        "",
        "| task | lang | mode | metric | score | tokens / problem | tokens / correct | reasoning tok | "
        "adherence | truncated | n |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    table = rows(results)
    for r in table:
        extra = ", ".join(
            f"{k} {_fmt(v)}"
            for k, v in r["metrics"].items()
            if (k.startswith("pass@") or k.startswith("maj@") or k == "acc")
            and k != r["metric"]
            and not k.endswith("stderr")
            and v is not None
        )
        lines.append(
            f"| {r['task']} | {r['language']} | {r['mode']} | {r['metric']} | {_fmt(r['score'])}"
            + (f" ({extra})" if extra else "")
            + f" | {_tokens(r['tokens_per_problem'])} | {_tokens(r['tokens_per_correct'])} | "
            f"{_tokens(r['reasoning_tokens'])} | {_fmt(r['adherence'], 2)} | {_fmt(r['truncated'], 2)} | "
            f"{_fmt(r['n_problems'])} |"
        )
    lines += [
        "",
        "## Report card",
        "",
        "| mode | Korean | English | all | tokens / problem | adherence |",
        "|---|---|---|---|---|---|",
    ]
    for mode in sorted({r["mode"] for r in table}):
        subset = [r for r in table if r["mode"] == mode and r["score"] is not None]

        def mean(values):
            values = [v for v in values if v is not None]
            return sum(values) / len(values) if values else None

        lines.append(
            f"| {mode} | {_fmt(mean([r['score'] for r in subset if r['language'] == 'ko']))} | "
            f"{_fmt(mean([r['score'] for r in subset if r['language'] == 'en']))} | "
            f"{_fmt(mean([r['score'] for r in subset]))} | {_tokens(mean([r['tokens_per_problem'] for r in subset]))} | "
            f"{_fmt(mean([r['adherence'] for r in subset]), 2)} |"
        )
    sandbox = results.get("sandbox")
    if sandbox:
        layers = ", ".join(
            f"{k.replace('_', ' ')}: {v}"
            for k, v in sandbox.items()
            if k in ("user_namespace", "network_namespace", "pid_namespace", "process_limit", "guard")
        )
        lines += [
            "",
            f"Code ran in the sandbox ({layers}; timeout {sandbox.get('timeout_s')} s, "
            f"memory {sandbox.get('memory_mb')} MiB).",
        ]
    lines += [
        "",
        "Scores are shares (0-1). Tokens are generated tokens; *tokens / correct* is all tokens spent "
        "on a task divided by the correct answers. Adherence: non-think answers without reasoning, think "
        "answers with a closed reasoning block and an answer after it.",
        "",
    ]
    return "\n".join(lines)


def plot(all_results: Sequence[dict], path: str | Path) -> None:
    """Grouped bars: headline score and tokens per problem for every (task, mode), one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels: list[str] = []
    for results in all_results:
        for r in rows(results):
            label = f"{r['task']}\n{r['mode']}"
            if label not in labels:
                labels.append(label)
    if not labels:
        return
    width = 0.8 / max(1, len(all_results))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 1.3 * len(labels) + 2), 7), sharex=True)
    for i, results in enumerate(all_results):
        by_label = {f"{r['task']}\n{r['mode']}": r for r in rows(results)}
        xs = [j + (i - (len(all_results) - 1) / 2) * width for j in range(len(labels))]
        scores = [(by_label.get(lab) or {}).get("score") or 0.0 for lab in labels]
        tokens = [(by_label.get(lab) or {}).get("tokens_per_problem") or 0.0 for lab in labels]
        name = str(results.get("name") or results.get("model"))
        top.bar(xs, scores, width, label=name)
        bottom.bar(xs, tokens, width, label=name)
    top.set_ylabel("score (acc_norm / pass@1)")
    top.set_ylim(0, 1)
    top.legend(fontsize="small")
    top.set_title("k1 eval")
    bottom.set_ylabel("generated tokens / problem")
    bottom.set_xticks(range(len(labels)))
    bottom.set_xticklabels(labels, fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)


def write_results(out: str | Path, results: dict) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "results.json", json.dumps(results, ensure_ascii=False, indent=2).encode())
    _atomic_write(out / "results.md", markdown(results).encode())
    plot([results], out / "results.png")


def load_results(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise K1Error(f"{path}: no results file; give a results.json or the run's --out directory") from None
    except ValueError:
        raise K1Error(f"{path}: not a JSON results file") from None
    if not isinstance(data, dict) or "tasks" not in data:
        raise K1Error(f"{path}: not a k1 eval results file (no 'tasks')")
    return data


def compare(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Markdown table + PNG comparing several runs' headline scores and token costs."""
    all_results = [load_results(p) for p in paths]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [str(r.get("name") or r.get("model")) for r in all_results]
    keys: list[tuple[str, str]] = []
    for results in all_results:
        for r in rows(results):
            if (r["task"], r["mode"]) not in keys:
                keys.append((r["task"], r["mode"]))
    lines = [
        "# k1 eval: comparison",
        "",
        "| task | mode | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for task, mode in keys:
        cells = []
        for results in all_results:
            r = next((x for x in rows(results) if x["task"] == task and x["mode"] == mode), None)
            cells.append("–" if r is None else f"{_fmt(r['score'])} ({_tokens(r['tokens_per_problem'])} tok)")
        lines.append(f"| {task} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: headline score (tokens generated per problem).", ""]
    _atomic_write(out / "compare.md", "\n".join(lines).encode())
    plot(all_results, out / "compare.png")
    return out
