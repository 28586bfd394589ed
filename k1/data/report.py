"""The data report: report.md with PNG charts, and summary.json, built from the stages' saved stats.

Written by the pipeline's finalize stage into <out>/: documents and bytes in/out per stage (tokens
for the output; an estimate for earlier stages from the measured tokens per byte), drop reasons,
duplicate clusters, PII counts by type, language mix, canary result, unreadable inputs.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

MAX_LISTED_ERRORS = 50


def _total(v) -> float:
    if isinstance(v, dict):
        return float(v.get("total", 0))
    return float(v or 0)


def _stage_steps(logs: Path) -> list[dict]:
    """Per step of one stage: name, summed counters and seconds, over every task's stats file."""
    merged: list[dict] = []
    for f in sorted((logs / "stats").glob("*.json")):
        steps = json.loads(f.read_text())
        for i, step in enumerate(steps):
            if i >= len(merged):
                merged.append({"name": step["name"], "stats": Counter(), "seconds": 0.0})
            for k, v in step.get("stats", {}).items():
                merged[i]["stats"][k] += _total(v)
            merged[i]["seconds"] += _total(step.get("time_stats", {}))
    return merged


def collect(cfg) -> dict:
    """Everything the report needs, read from work/logs, work/errors and the dedup outputs."""
    work = cfg.work
    stages = {}
    for logs in sorted((work / "logs").iterdir()) if (work / "logs").is_dir() else []:
        stages[logs.name] = _stage_steps(logs)
    errors: list[dict] = []
    units_file = work / "units.json"
    if units_file.is_file():
        errors += json.loads(units_file.read_text()).get("skipped", [])
    for f in sorted((work / "errors").glob("[0-9]*.jsonl")):
        errors += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    clusters: Counter = Counter()
    import struct

    for f in sorted((work / "minhash" / "remove").glob("*.sizes")):
        data = f.read_bytes()
        for _doc, size in struct.iter_unpack("<II", data):
            clusters[size] += 1
    # each document of a cluster of size s appears once: s documents -> 1 cluster
    cluster_hist = {s: n // s for s, n in sorted(clusters.items())}
    return {"stages": stages, "errors": errors, "clusters": cluster_hist}


def _find(stages: dict, stage: str, step_name: str) -> Counter:
    for step in stages.get(stage, []):
        if step["name"].endswith(step_name):
            return step["stats"]
    return Counter()


def summarize(cfg, stats: dict, manifest: dict) -> dict:
    st = stats["stages"]
    rows = []
    read = _find(st, "filter", ": read")
    rows.append(("read", read["docs_out"], read["docs_out"], 0, read["bytes_out"], read["bytes_out"]))
    for step in ("normalize", "language", "quality"):
        s = _find(st, "filter", f": {step}")
        rows.append((step, s["docs_in"], s["docs_out"], 0, s["bytes_in"], s["bytes_out"]))
    exact = (
        _find(st, "near_sigs", "exact-deduplication stage 3")
        if cfg.dedup.near
        else _find(st, "shards", "exact-deduplication stage 3")
    )
    if cfg.dedup.exact:
        rows.append(("exact_dedup", exact["total"], exact["forwarded"], 0, None, None))
    if cfg.dedup.near:
        near = _find(st, "shards", "MinHash stage 4")
        rows.append(("near_dedup", near["total"], near["forwarded"], 0, None, None))
    pii = _find(st, "shards", ": pii")
    if cfg.pii.enabled:
        rows.append(("pii", pii["docs_in"], pii["docs_out"], 0, pii["bytes_in"], pii["bytes_out"]))
    shards = _find(st, "shards", ": shards")
    tokens_out = sum(v["tokens"] for v in manifest["totals"].values())
    rows.append(
        (
            "tokenize",
            shards["docs_in"],
            shards["docs_out"],
            tokens_out,
            shards["bytes_in"],
            shards["bytes_out"],
        )
    )
    tok_per_byte = tokens_out / shards["bytes_in"] if shards["bytes_in"] else 0.0

    drops: Counter = Counter()
    for stage in ("filter",):
        for step in st.get(stage, []):
            for k, v in step["stats"].items():
                if k.startswith("dropped/"):
                    drops[k.split("/", 1)[1]] += int(v)
    if cfg.dedup.exact:
        drops["exact_duplicate"] += int(exact["dropped"])
    if cfg.dedup.near:
        drops["near_duplicate"] += int(_find(st, "shards", "MinHash stage 4")["dropped"])
    lang = _find(st, "filter", ": language")
    languages = {k.split("/", 1)[1]: int(v) for k, v in lang.items() if k.startswith("lang/")}
    pii_counts = {k.split("/", 1)[1]: int(v) for k, v in pii.items() if k.startswith("pii/")}
    canaries = cfg.all_canaries()
    leaked = {int(k.split("/", 1)[1]): int(v) for k, v in shards.items() if k.startswith("canary/")}
    seconds = {}
    for stage, steps in st.items():
        for step in steps:
            seconds[f"{stage}/{step['name'].split(': ', 1)[-1]}"] = round(step["seconds"], 3)
    return {
        "out": str(cfg.out_dir),
        "manifest": str(cfg.out_dir / "manifest.json"),
        "report": str(cfg.out_dir / "report.md"),
        "stages": [
            {
                "stage": r[0],
                "docs_in": int(r[1]),
                "docs_out": int(r[2]),
                "bytes_in": None if r[4] is None else int(r[4]),
                "bytes_out": None if r[5] is None else int(r[5]),
                "tokens_est": round((r[5] or 0) * tok_per_byte) if r[5] is not None else None,
            }
            for r in rows
        ],
        "tokens": {s: v["tokens"] for s, v in manifest["totals"].items()},
        "documents": {s: v["documents"] for s, v in manifest["totals"].items()},
        "drops": dict(drops.most_common()),
        "languages": languages,
        "pii": pii_counts,
        "docs_with_pii": int(pii["docs_with_pii"]),
        "canaries": {"planted": len(canaries), "leaked": len(leaked), "leaked_ids": sorted(leaked)},
        "duplicate_clusters": stats["clusters"],
        "errors": len(stats["errors"]),
        "error_list": stats["errors"][:MAX_LISTED_ERRORS],
        "seconds": seconds,
    }


def _charts(out: Path, s: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def bar(name, labels, values, title, xlabel=""):
        if not labels:
            return
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.4))
        ax.barh(labels[::-1], values[::-1], color="#4C72B0")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)

    stages = s["stages"]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([r["stage"] for r in stages], [r["docs_out"] for r in stages], marker="o")
    ax.set_title("documents after each stage")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "stages.png", dpi=110)
    plt.close(fig)
    made.append("stages.png")
    bar("drops.png", list(s["drops"]), list(s["drops"].values()), "documents dropped, by reason")
    bar("pii.png", list(s["pii"]), list(s["pii"].values()), "PII replaced, by type")
    bar(
        "languages.png",
        list(s["languages"]),
        list(s["languages"].values()),
        "language mix (before filtering)",
    )
    cl = s["duplicate_clusters"]
    bar("clusters.png", [f"size {k}" for k in cl], list(cl.values()), "near-duplicate clusters", "clusters")
    return made


def _esc(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def write_report(cfg, stats: dict, manifest: dict) -> dict:
    from k1.data.shard import _atomic_write_bytes

    s = summarize(cfg, stats, manifest)
    out = cfg.out_dir
    charts = _charts(out, s)
    L = [
        "# Data report",
        "",
        f"Config fingerprint `{cfg.fingerprint()}`, {cfg.tasks} tasks, tokenizer `{manifest['tokenizer']['path']}` ({manifest['vocab_size']} tokens, {manifest['dtype']}).",
        "",
    ]
    L += [
        "## Stages",
        "",
        "| stage | docs in | docs out | MB in | MB out | tokens (est.) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in s["stages"]:
        mb = lambda b: "" if b is None else f"{b / 1e6:.2f}"  # noqa: E731
        L.append(
            f"| {r['stage']} | {r['docs_in']} | {r['docs_out']} | {mb(r['bytes_in'])} | {mb(r['bytes_out'])} | {'' if r['tokens_est'] is None else r['tokens_est']} |"
        )
    L += ["", "![stages](stages.png)", ""]
    L += ["## Output", "", "| split | shards | documents | tokens |", "|---|---:|---:|---:|"]
    for split, t in manifest["totals"].items():
        L.append(f"| {split} | {t['shards']} | {t['documents']} | {t['tokens']} |")
    L += ["", "## Drop reasons", "", "| reason | documents |", "|---|---:|"]
    L += [f"| {k} | {v} |" for k, v in s["drops"].items()]
    if "drops.png" in charts:
        L += ["", "![drops](drops.png)"]
    L += ["", "## Language mix (before filtering)", "", "| language | documents |", "|---|---:|"]
    L += [f"| {k} | {v} |" for k, v in s["languages"].items()]
    L += ["", "## Duplicate clusters (near dedup)", "", "| cluster size | clusters |", "|---:|---:|"]
    L += [f"| {k} | {v} |" for k, v in s["duplicate_clusters"].items()] or ["| - | 0 |"]
    L += [
        "",
        "## PII",
        "",
        f"Documents with PII: {s['docs_with_pii']}.",
        "",
        "| type | replaced |",
        "|---|---:|",
    ]
    L += [f"| {k} | {v} |" for k, v in sorted(s["pii"].items())]
    c = s["canaries"]
    verdict = (
        "none reached the shards"
        if not c["leaked"]
        else f"**{c['leaked']} LEAKED** (canary #{', #'.join(map(str, c['leaked_ids']))})"
    )
    L += ["", f"Canaries: {c['planted']} planted, {verdict}.", ""]
    L += ["## Unreadable or malformed input", "", f"{s['errors']} problems."]
    if s["error_list"]:
        L += ["", "| file | position | reason |", "|---|---|---|"]
        L += [f"| {_esc(e['file'])} | {_esc(e['pos'])} | {_esc(e['reason'])} |" for e in s["error_list"]]
        if s["errors"] > MAX_LISTED_ERRORS:
            L.append(f"\n(first {MAX_LISTED_ERRORS}; all of them in work/errors/)")
    L += ["", "## Time per step (seconds, summed over tasks)", "", "| step | s |", "|---|---:|"]
    L += [f"| {k} | {v} |" for k, v in s["seconds"].items() if v]
    _atomic_write_bytes(out / "report.md", ("\n".join(L) + "\n").encode())
    _atomic_write_bytes(out / "summary.json", json.dumps(s, indent=2, ensure_ascii=False).encode())
    return s


__all__ = ["collect", "summarize", "write_report"]
