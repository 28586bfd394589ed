"""Train k1's tokenizer on the train part of every shared data set, measure it against foreign
tokenizers on the held-out part (never trained on), per source and overall, check the goal, and time
encoding (one core and batch on all cores) against tiktoken's o200k and DeepSeek-V3's tokenizer.

    python bench/fetch_reference_tokenizers.py     # once: GPT-4o o200k, GPT-4 cl100k, DeepSeek-V3 files
    python bench/tokenizer_fertility.py            # train on all sources' train parts (default settings)
    python bench/tokenizer_fertility.py --train-on tokenizer_train   # the other sets become unseen registers
    python bench/tokenizer_fertility.py --leave-out kobest_BoolQ     # one register unseen, the rest trained on
    python bench/tokenizer_fertility.py --speed-only runs/bench_tokenizer/tokenizer   # timing only

Sources: the 8 tokenizer_train files (6 Korean registers, English, Python), and the other Korean sets
(NSMC reviews of other movies, chatbot Q/A, StrategyQA, KoBEST BoolQ / COPA / HellaSwag, Korean math
word problems), GSM8K (English) and MBPP (code); text fields only, labels left out. Each source is cut
into units (rows; blocks of 50 lines for the plain text files, which mark no documents) and one unit
in 10 is held out by a hash of its text: stable across runs, and a duplicate never lands on both
sides. A held-out line that also occurs in any training unit of its language is dropped as well.
Training runs on ONE core (TOKENIZERS_PARALLELISM=false): the machine is shared. The load average is
printed next to every timing. Exits 0 with a note when shared/data is absent.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from k1.tokenizer import TokenizerConfig, load, parse_weights, train  # noqa: E402
from k1.tokenizer.fertility import ReferenceUnavailable, load_reference, report  # noqa: E402

BLOCK = 50  # lines per unit of a plain text file (its files mark no document boundaries)
HOLDOUT = 10  # one unit in HOLDOUT is held out, chosen by a hash of its text


@dataclass
class Source:
    """One data set cut into units (documents, rows or blocks of lines) for the train / held-out split."""

    name: str
    lang: str
    register: str
    units: list[str]
    group: str  # "tokenizer_train" or "other sets": which training run sees it


def held_out(unit: str) -> bool:
    """A stable, content-based split: the same unit lands on the same side on every run and machine,
    and exact duplicates (short reviews, repeated boilerplate) never sit on both sides."""
    return (
        int.from_bytes(hashlib.sha1(unit.encode("utf-8", "surrogatepass")).digest()[:8], "big") % HOLDOUT == 0
    )


def data_dir() -> Path | None:
    for cand in (
        os.environ.get("K1_SHARED_DATA"),
        ROOT.parent.parent / "shared" / "data",
        ROOT.parent / "shared" / "data",
    ):
        if cand and (Path(cand) / "tokenizer_train").is_dir():
            return Path(cand)
    return None


def _blocks(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return ["\n".join(lines[i : i + BLOCK]) for i in range(0, len(lines), BLOCK)]


def _rows(path: Path, delimiter: str = ",", header: bool = True) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter=delimiter))
    return rows[1:] if header else rows


def _jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sources(data: Path) -> list[Source]:
    """Every data set in shared/data with Korean, English or code text, as units. Only text fields:
    labels (TRUE/FALSE, 1/2, ids) are left out, they are no language."""
    out = []
    registers = {
        "ko_nsmc": "movie reviews", "ko_wikinews": "news", "ko_bookreview_nanet": "essays, book reviews",
        "ko_bookreview_acorn": "book blurbs", "ko_unesco": "report prose", "ko_fairytale": "children's stories",
        "en_train": "novels, Rust book", "code_python_stdlib": "Python stdlib",
    }  # fmt: skip
    for f in sorted((data / "tokenizer_train").glob("*.txt")):
        lang = "ko" if f.name.startswith("ko_") else "code" if f.name.startswith("code_") else "en"
        out.append(Source(f.stem, lang, registers.get(f.stem, ""), _blocks(f), "tokenizer_train"))

    def add(name, lang, register, path, units):
        if path.is_file():
            out.append(
                Source(
                    name, lang, register, [u.replace("\r", "") for u in units() if u.strip()], "other sets"
                )
            )

    nsmc = data / "ko_text" / "nsmc_reviews.txt"
    add(
        "nsmc_reviews",
        "ko",
        "movie reviews (other movies)",
        nsmc,
        lambda: nsmc.read_text(encoding="utf-8").splitlines(),
    )
    chat = data / "ko_sft" / "ChatbotData.csv"
    add("chatbot", "ko", "chat Q/A", chat, lambda: [f"{q}\n{a}" for q, a, *_ in _rows(chat)])
    sqa = data / "ko_sft" / "ko-strategyqa-train-v2.csv"
    add(
        "strategyqa",
        "ko",
        "fact questions (template)",
        sqa,
        lambda: [" ".join(r) for r in _rows(sqa, header=False)],
    )
    mcq = data / "ko_mcq"
    # Text columns only: BoolQ Text+Question, COPA sentence+choices, HellaSwag context+choices.
    columns = {"kobest_BoolQ": (1, 2), "kobest_COPA": (1, 3, 4), "kobest_HellaSwag": (0, 1, 2, 3, 4)}
    for task, cols in columns.items():
        files = [mcq / task / f"{split}.tsv" for split in ("train", "dev")]
        add(
            task, "ko", {"kobest_BoolQ": "encyclopedia (Wikipedia)", "kobest_COPA": "everyday sentences",
                         "kobest_HellaSwag": "how-to passages"}[task], files[0],
            lambda files=files, cols=cols: [
                "\n".join(r[c] for c in cols) for f in files if f.is_file() for r in _rows(f, "\t")
            ],
        )  # fmt: skip
    kmath = sorted((data / "math").glob("kor-D_*-train.json"))
    if kmath:
        add("math_ko", "ko", "math word problems", kmath[0],
            lambda: [f"{r['kor_question']}\n{r['kor_answer']}" for f in kmath for r in _jsonl(f)])  # fmt: skip
    gsm = data / "math" / "gsm8k_train.jsonl.gz"
    add(
        "gsm8k",
        "en",
        "math word problems",
        gsm,
        lambda: [f"{r['question']}\n{r['answer']}" for r in _jsonl(gsm)],
    )
    mbpp = data / "code" / "mbpp.jsonl"
    add("mbpp", "code", "small Python functions", mbpp, lambda: [r["code"] for r in _jsonl(mbpp)])
    return out


def split(
    srcs: list[Source], work: Path, train_groups: set[str], leave_out: set[str] = frozenset()
) -> tuple[list[str], dict[str, Path], dict]:
    """Write the train part of each source (if its group is trained on) and the held-out part of
    every source. A held-out line that also occurs in any training unit of its language (the same
    review in two NSMC files, a repeated heading) is dropped, so nothing measured was trained on.
    Returns (training inputs, held-out file per source, counts)."""
    (work / "train").mkdir(parents=True, exist_ok=True)
    (work / "heldout").mkdir(parents=True, exist_ok=True)
    inputs, held, counts = [], {}, {}
    seen: dict[str, set[str]] = {}
    parts = {}
    for s in srcs:
        tr = [u for u in s.units if not held_out(u)]
        he = [u for u in s.units if held_out(u)]
        parts[s.name] = (tr, he)
        for u in tr:  # every source, trained or not: held-out text must not repeat any of it
            seen.setdefault(s.lang, set()).update(ln.strip() for ln in u.splitlines() if ln.strip())
        if s.group in train_groups and s.name not in leave_out and tr:
            path = work / "train" / f"{s.name}.txt"
            path.write_text("\n".join(tr) + "\n", encoding="utf-8")
            inputs.append(f"{s.lang}:{path}")
    for s in srcs:
        tr, he = parts[s.name]
        lines = [ln for u in he for ln in u.splitlines() if ln.strip()]
        kept = [ln for ln in lines if ln.strip() not in seen[s.lang]]
        path = work / "heldout" / f"{s.name}.txt"
        path.write_text("\n".join(kept) + "\n", encoding="utf-8")
        held[s.name] = path
        counts[s.name] = {
            "units": len(s.units), "heldout_units": len(he), "heldout_lines": len(kept),
            "dropped_lines": len(lines) - len(kept), "train_bytes": sum(len(u.encode()) for u in tr),
            "trained": s.group in train_groups and s.name not in leave_out,
        }  # fmt: skip
    return inputs, held, counts


def _best(fn, repeat: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of the fastest of `repeat` runs."""
    runs = []
    for _ in range(repeat):
        c, t = time.process_time(), time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t, time.process_time() - c))
    return min(runs)  # the least disturbed run: the machine is shared


def _thread_ticks() -> dict[str, int]:
    """CPU ticks per thread of this process (Linux); {} elsewhere."""
    out = {}
    try:
        for t in os.listdir("/proc/self/task"):
            fields = Path(f"/proc/self/task/{t}/stat").read_text().rsplit(")", 1)[1].split()
            out[t] = int(fields[11]) + int(fields[12])
    except OSError:
        return {}
    return out


def busy_threads(fn) -> int:
    """How many threads did a real share (>= 20%) of the CPU work of fn(): shows batch encoding
    spreading over cores even when a shared machine's other jobs eat the wall-clock gain."""
    before = _thread_ticks()
    fn()
    after = _thread_ticks()
    work = {t: after[t] - before.get(t, 0) for t in after}
    total = sum(work.values()) or 1
    return sum(1 for w in work.values() if w / total >= 0.2)


def speed(tok, text_docs: list[str], references: list[str], repeat: int = 3) -> list[dict]:
    """MB/s encoding the same documents: one core, then a batch on all cores (best of `repeat`)."""
    nbytes = sum(len(d.encode()) for d in text_docs)
    encoders = [("k1", tok.encode, tok.encode_batch)]
    for name in references:
        try:
            ref = load_reference(name)
        except ReferenceUnavailable:
            continue
        encoders.append((name, ref.encode, ref.encode_batch))
    rows = []
    for name, one, batch in encoders:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        if name in ("o200k", "cl100k") or batch is None:
            # tiktoken's batch call runs a thread pool; a plain loop is its one-core speed.
            single, _ = _best(lambda one=one: [one(d) for d in text_docs], repeat)
        else:
            # tokenizers with parallelism off: one core, without Python overhead per document.
            single, _ = _best(lambda batch=batch: batch(text_docs), repeat)
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        multi, cpu = _best(lambda batch=batch: batch(text_docs), repeat) if batch is not None else (None, 0)
        threads = busy_threads(lambda batch=batch: batch(text_docs)) if batch is not None else 1
        rows.append(
            {
                "tokenizer": name,
                "busy_threads_batch": threads,
                # CPU seconds per wall second in the batch: ~2 when both cores work, even when other
                # jobs on a shared machine keep the wall clock from improving.
                "cores_used_batch": cpu / multi if multi else None,
                "mb_s_1core": nbytes / single / 1e6,
                "mb_s_batch": nbytes / multi / 1e6 if multi else None,
            }
        )
    return rows


def per_source(
    rep, srcs: list[Source], held: dict[str, Path], counts: dict, refs=("o200k", "tekken")
) -> list[dict]:
    """The report's per-file rows (k1 against the references) with each source's register and group."""
    by_file = {Path(f.file).resolve(): f for f in rep.files}
    out = []
    for s in srcs:
        f = by_file.get(held[s.name].resolve())
        if f is None:
            continue
        out.append(
            {
                "source": s.name, "lang": s.lang, "register": s.register, "group": s.group,
                "trained": counts[s.name]["trained"], "chars": f.chars,
                "tokens": {k: f.tokens[k] for k in ("k1", *refs) if k in f.tokens},
                "per_1k": {k: f.per_1k_chars(k) for k in ("k1", *refs) if k in f.tokens},
                "fewer": {k: f.fewer(k) for k in refs if k in f.tokens},
            }
        )  # fmt: skip
    return out


def _sum_fewer(rows: list[dict], ref: str) -> float | None:
    k = sum(r["tokens"]["k1"] for r in rows)
    o = sum(r["tokens"].get(ref, 0) for r in rows)
    return 100 * (1 - k / o) if o and all(ref in r["tokens"] for r in rows) else None


def per_source_markdown(rows: list[dict]) -> str:
    refs = [k for k in rows[0]["fewer"]] if rows else []
    head = "| source | register | trained on its other units | held-out chars | k1 tok/1k | " + " | ".join(
        f"{r} tok/1k | fewer than {r}" for r in refs
    )
    lines = [head + " |", "|" + "---|" * (5 + 2 * len(refs))]
    for r in rows:
        cells = [
            r["source"],
            r["register"],
            "yes" if r["trained"] else "no",
            f"{r['chars']:,}",
            f"{r['per_1k']['k1']:.1f}",
        ]
        for ref in refs:
            cells += [f"{r['per_1k'][ref]:.1f}", f"{r['fewer'][ref]:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    for lang in ("ko", "en", "code"):
        for label, group in (
            (f"**all {lang}**", None),
            (f"{lang}: tokenizer_train", "tokenizer_train"),
            (f"{lang}: other sets", "other sets"),
        ):
            sel = [r for r in rows if r["lang"] == lang and (group is None or r["group"] == group)]
            if not sel or (group and lang != "ko"):
                continue
            chars = sum(r["chars"] for r in sel)
            cells = [label, "", "", f"{chars:,}", f"{1000 * sum(r['tokens']['k1'] for r in sel) / chars:.1f}"]
            for ref in refs:
                f = _sum_fewer(sel, ref)
                cells += [
                    f"{1000 * sum(r['tokens'][ref] for r in sel) / chars:.1f}",
                    f"{f:.1f}%" if f is not None else "-",
                ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab-size", type=int, default=131072)
    ap.add_argument("--weights", default=None, help="default: TokenizerConfig's")
    ap.add_argument("--digits", default=TokenizerConfig.digits)
    ap.add_argument("--multiword-share", type=float, default=TokenizerConfig.multiword_share)
    ap.add_argument("--source-alpha", type=float, default=TokenizerConfig.source_alpha)
    ap.add_argument("--min-frequency", type=int, default=TokenizerConfig.min_frequency)
    ap.add_argument("--pretokenizer", default=TokenizerConfig.pretokenizer)
    ap.add_argument(
        "--train-on",
        choices=("all", "tokenizer_train"),
        default="all",
        help="all: the train part of every source; tokenizer_train: only those files (the other sets are then unseen registers)",
    )
    ap.add_argument(
        "--leave-out",
        default="",
        help="comma-separated sources not trained on at all (an unseen register, the rest of the corpus kept)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_tokenizer")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument(
        "--speed-only",
        type=Path,
        default=None,
        metavar="TOKENIZER_DIR",
        help="time encoding of this tokenizer, no training",
    )
    args = ap.parse_args()

    data = data_dir()
    if data is None:
        print("shared/data/tokenizer_train not found (set K1_SHARED_DATA); nothing to measure")
        return 0
    work = args.out
    srcs = sources(data)
    groups = {"tokenizer_train", "other sets"} if args.train_on == "all" else {"tokenizer_train"}
    leave_out = {n for n in args.leave_out.split(",") if n}
    unknown = leave_out - {s.name for s in srcs}
    if unknown:
        ap.error(f"--leave-out: unknown source(s) {sorted(unknown)}; known: {[s.name for s in srcs]}")
    inputs, held, counts = split(srcs, work, groups, leave_out)
    if args.speed_only:
        print(speed_section(load(args.speed_only), held)[0])
        return 0

    config = TokenizerConfig(
        vocab_size=args.vocab_size,
        digits=args.digits,
        pretokenizer=args.pretokenizer,
        source_alpha=args.source_alpha,
        multiword_share=args.multiword_share,
        min_frequency=args.min_frequency,
    )
    if args.weights:
        config.weights = parse_weights(args.weights)
    t = time.perf_counter()
    train(
        inputs,
        None,
        work / "tokenizer",
        config=config,
        threads=1,
        overwrite=True,
        progress=False,
        log=lambda *_: None,
    )
    wall = time.perf_counter() - t
    stats = json.loads((work / "tokenizer" / "k1_tokenizer.json").read_text())["stats"]
    tok = load(work / "tokenizer")
    by_lang = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in stats["train_bytes_by_lang"].items() if v)
    trained = [s.name for s in srcs if counts[s.name]["trained"]]
    print(
        f"## Training\n\nvocab {stats['vocab_size']:,} ({stats['multiword_tokens']:,} Korean phrases); "
        f"{stats['train_bytes'] / 1e6:.2f} MB ({by_lang}) sampled from the train part of {len(trained)} sources "
        f"({', '.join(trained)}); {wall:.1f} s on one core (load average {os.getloadavg()[0]:.1f})\n"
    )

    texts = [f"{s.lang}:{held[s.name]}" for s in srcs]
    rep_all = report(tok, texts, out_dir=work, log=lambda *_: None)
    rows = per_source(rep_all, srcs, held, counts)
    print(
        f"## Held-out units of each source (one unit in {HOLDOUT} by hash, never trained on)\n\n"
        + per_source_markdown(rows)
    )
    rep_all.files = []  # shown above, with registers
    print("## All held-out text, every reference\n\n" + rep_all.to_markdown())

    ok = True
    if rep_all.fewer("o200k", "ko") is not None:
        ko = [r for r in rows if r["lang"] == "ko"]
        goal = (
            f"Korean: {rep_all.fewer('o200k', 'ko'):.1f}% fewer tokens than o200k (goal >= 40%; held-out of "
            f"tokenizer_train {_sum_fewer([r for r in ko if r['group'] == 'tokenizer_train'], 'o200k'):.1f}%, "
            f"of the other sets {_sum_fewer([r for r in ko if r['group'] != 'tokenizer_train'], 'o200k'):.1f}%; "
            f"worst source {min(ko, key=lambda r: r['fewer']['o200k'])['source']} {min(r['fewer']['o200k'] for r in ko):.1f}%)"
        )
        ok &= rep_all.fewer("o200k", "ko") >= 40
    else:
        goal = f"Korean: {rep_all.fewer('tekken', 'ko'):.1f}% fewer tokens than Tekken (goal >= 35%)"
        ok &= rep_all.fewer("tekken", "ko") >= 35
    for lang in ("en", "code"):
        more = -rep_all.fewer("tekken", lang)
        goal += f"; {lang}: {more:+.1f}% tokens vs Tekken (goal <= +10%)"
        ok &= more <= 10
    print(f"## Goal\n\n{goal}: {'MET' if ok else 'NOT MET'}\n")
    unseen = [r for r in rows if r["lang"] == "ko" and not r["trained"]]
    if unseen:
        print(
            f"Korean sources never trained on ({', '.join(r['source'] for r in unseen)}): "
            f"{_sum_fewer(unseen, 'o200k'):.1f}% fewer tokens than o200k\n"
        )

    results: dict = {
        "stats": stats,
        "split": counts,
        "per_source": rows,
        "report": rep_all.to_dict(),
        "train_on": args.train_on,
    }
    if not args.skip_speed:
        text, results["speed"] = speed_section(tok, held)
        print(text)
    (work / "bench.json").write_text(json.dumps(results, ensure_ascii=False, indent=2))
    return 0


def speed_section(tok, held: dict[str, Path]) -> tuple[str, list[dict]]:
    docs = []
    for p in held.values():
        docs += p.read_text(encoding="utf-8").splitlines(keepends=True)
    load_before = os.getloadavg()
    rows = speed(tok, docs, ["o200k", "deepseek-v3"])
    mb = sum(len(d.encode()) for d in docs) / 1e6
    out = [
        f"## Encoding speed ({mb:.1f} MB of held-out ko/en/code lines, {len(docs):,} documents, {os.cpu_count()} cores)\n",
        "| tokenizer | MB/s one core | MB/s batch, all cores | batch / one core | CPU s per wall s in batch | threads busy in batch |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['tokenizer']} | {r['mb_s_1core']:.2f} | {r['mb_s_batch']:.2f} | {r['mb_s_batch'] / r['mb_s_1core']:.2f}x "
            f"| {r['cores_used_batch']:.2f} | {r['busy_threads_batch']} |"
        )
    base = {r["tokenizer"]: r for r in rows}
    for ref in ("o200k", "deepseek-v3"):
        if ref in base:
            k, o = base["k1"], base[ref]
            out.append(
                f"\nk1 / {ref}: {k['mb_s_1core'] / o['mb_s_1core']:.2f}x on one core, {k['mb_s_batch'] / o['mb_s_batch']:.2f}x in batch"
            )
    load_after = os.getloadavg()
    out.append(
        f"\nLoad average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after: this process adds up to "
        f"{os.cpu_count()} while it runs; anything above that is other jobs on these cores."
    )
    return "\n".join(out) + "\n", rows


if __name__ == "__main__":
    raise SystemExit(main())
