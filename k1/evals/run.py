"""Running evaluations: a config in, samples and results out; and scoring completions made elsewhere.

    from k1.evals.run import EvalConfig, TaskSpec, run, score
    cfg = EvalConfig(model="runs/demo/student", tasks=[TaskSpec("gsm8k", "gsm8k/test.jsonl")],
                     modes=["think", "non-think"], out="runs/eval/student")
    results = run(cfg)        # writes results.json, results.md, results.png and samples/*.jsonl

    score("mbpp", "mbpp.jsonl", reference=True)       # the harness on its own: canonical code must pass

Long runs are resumable: every finished batch of problems is appended to
`OUT/samples/<task>.<mode>.jsonl`; running the same config again skips what is already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from k1.config import QUANTIZATION_MODES
from k1.errors import ConfigError, K1Error, did_you_mean
from k1.evals import code as code_eval
from k1.evals import math as math_eval
from k1.evals import mcq as mcq_eval
from k1.evals.data import DataError, read_jsonl
from k1.evals.metrics import generative_metrics
from k1.evals.models import Completion, load_model
from k1.evals.sandbox import Limits, isolation
from k1.evals.tasks import MCQTask, get_task

MODES = ("think", "non-think")
LOGLIKELIHOOD = "loglikelihood"


@dataclass
class TaskSpec:
    """One task to run: a registered task name and a local data file (or upstream split directory)."""

    name: str
    data: str
    fewshot_data: str | None = None
    """Where few-shot examples come from (multiple choice); default: the train split next to `data`."""
    num_fewshot: int | None = None
    """Overrides the run's num_fewshot for this task."""
    limit: int | None = None
    """Overrides the run's limit for this task."""
    options: dict = field(default_factory=dict)
    """Task options, e.g. {split = "test"} for mbpp or {after = "2024-08-01"} for livecodebench."""


@dataclass
class EvalConfig:
    """An evaluation run. Every field is a key of the TOML config (recipes/eval.toml)."""

    model: str = ""
    """A model directory or an http(s) URL of an OpenAI-compatible endpoint."""
    backend: str = "auto"
    """hf, k1, openai, or auto (URL -> openai, directory -> hf)."""
    served_model: str | None = None
    """Model name at the endpoint (default: the first one it lists)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (the key itself is never stored)."""
    tasks: list[TaskSpec] = field(default_factory=list)
    modes: list[str] = field(default_factory=lambda: ["non-think"])
    """Generation modes for math and code tasks: think, non-think."""
    max_new_tokens: int = 1024
    temperature: float = 0.0
    """0 is greedy. Sampling (n > 1, maj@n, pass@k) needs temperature > 0."""
    top_p: float = 1.0
    n: int = 1
    """Samples per problem."""
    k: list[int] = field(default_factory=lambda: [1])
    """pass@k values to report (each <= n)."""
    seed: int = 0
    num_fewshot: int = 0
    """Solved examples before each multiple-choice question."""
    limit: int | None = None
    """Evaluate only the first `limit` problems of each task."""
    batch_size: int = 8
    workers: int = 2
    """Programs run at once in the code sandbox."""
    concurrency: int = 8
    """Requests in flight to an endpoint."""
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    """k1 backend: weight-only "int8" (measure what it costs on your tasks); none by default."""
    compile: bool = False
    """k1 backend: decode steps through torch.compile (`Transformer.compile_decode`): faster
    generation after a warm-up of some tens of seconds; needs a C++ compiler (else it warns and
    runs uncompiled)."""
    out: str = "runs/eval"
    sandbox: Limits = field(default_factory=Limits)

    def validate(self) -> EvalConfig:
        if not self.model:
            raise ConfigError("no model given: a model directory or an endpoint URL")
        if not self.tasks:
            raise ConfigError("no tasks given; e.g. --tasks gsm8k=data/gsm8k.jsonl (see `k1 eval tasks`)")
        if self.quantize and self.quantize not in QUANTIZATION_MODES:
            raise ConfigError(f"quantize {self.quantize!r}" + did_you_mean(self.quantize, QUANTIZATION_MODES))
        for mode in self.modes:
            if mode not in MODES:
                raise ConfigError(f"unknown mode {mode!r}" + did_you_mean(mode, MODES))
        if self.n > 1 and self.temperature == 0:
            raise ConfigError(
                f"n={self.n} samples with temperature 0 would all be the same; set temperature (e.g. 0.6)"
            )
        bad = [k for k in self.k if not 1 <= k <= self.n]
        if bad:
            raise ConfigError(f"pass@{bad[0]} needs n >= {bad[0]} samples per problem (n={self.n})")
        if self.batch_size < 1 or self.workers < 1 or self.concurrency < 1:
            raise ConfigError("batch_size, workers and concurrency must be at least 1")
        for spec in self.tasks:
            get_task(spec.name)
            # before a model is loaded (minutes for a big one), not after
            for path in (spec.data, spec.fewshot_data):
                if path is not None and not Path(path).exists():
                    raise DataError(f"{path}: no such data file for task {spec.name}; nothing is downloaded")
        self.sandbox.validate()
        return self


def _from_table(cls, table: dict, where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}" + did_you_mean(key, sorted(names)))
    return table


def load_config(path: str | Path, **overrides) -> EvalConfig:
    """An EvalConfig from a TOML file; keyword overrides (e.g. from the command line) win."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    _from_table(EvalConfig, raw, str(path))
    tasks = []
    for i, t in enumerate(raw.pop("tasks", [])):
        _from_table(TaskSpec, t, f"{path} [[tasks]] #{i + 1}")
        if "name" not in t or "data" not in t:
            raise ConfigError(f"{path} [[tasks]] #{i + 1}: needs name and data")
        tasks.append(TaskSpec(**t))
    sandbox = Limits(**_from_table(Limits, raw.pop("sandbox", {}), f"{path} [sandbox]"))
    cfg = EvalConfig(**raw, tasks=tasks, sandbox=sandbox)
    for key, value in overrides.items():
        if value is not None:
            setattr(cfg, key, value)
    return cfg


def parse_task_args(values: list[str]) -> list[TaskSpec]:
    """`name=path` items (comma-separated or repeated) -> TaskSpecs."""
    specs = []
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            if "=" not in item:
                raise ConfigError(
                    f"--tasks {item!r}: write NAME=PATH (the data file), e.g. gsm8k=data/gsm8k.jsonl"
                )
            name, data = item.split("=", 1)
            get_task(name.strip())
            specs.append(TaskSpec(name.strip(), data.strip()))
    return specs


# ---------------------------------------------------------------------------------------------
# Samples files: append-only, one record per problem, resumable


def _read_done(path: Path) -> dict[str, dict]:
    """Records already written; a torn last line (a crash mid-write) is dropped."""
    if not path.exists():
        return {}
    done: dict[str, dict] = {}
    good = 0
    with path.open("rb") as f:
        for raw in f:
            try:
                record = json.loads(raw)
            except ValueError:
                break
            done[str(record["id"])] = record
            good += len(raw)
    if good < path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good)
    return done


def _append(path: Path, records: list[dict]) -> None:
    with path.open("a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _fingerprint(cfg: EvalConfig) -> str:
    """What makes two runs' samples interchangeable (not limits or worker counts)."""
    keep = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if k
        in (
            "model",
            "backend",
            "served_model",
            "max_new_tokens",
            "temperature",
            "top_p",
            "n",
            "seed",
            "num_fewshot",
        )
    }
    keep["tasks"] = sorted(
        (t.name, t.data, t.fewshot_data, t.num_fewshot, json.dumps(t.options, sort_keys=True))
        for t in cfg.tasks
    )
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# A run


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def run(cfg: EvalConfig, model=None, fresh: bool = False) -> dict:
    """Evaluate cfg.model on cfg.tasks; returns the results dict (also written under cfg.out)."""
    from k1.evals.report import write_results

    cfg.validate()
    out = Path(cfg.out)
    stamp = out / "run.json"
    fingerprint = _fingerprint(cfg)
    if stamp.exists() and not fresh:
        try:
            previous = json.loads(stamp.read_text()).get("fingerprint")
        except (ValueError, AttributeError):
            previous = None
        if previous != fingerprint:
            raise K1Error(
                f"{out}: holds samples from a different run config; choose another --out or pass --fresh"
            )
    model = model or load_model(
        cfg.model,
        cfg.backend,
        served_model=cfg.served_model,
        api_key_env=cfg.api_key_env,
        device=cfg.device,
        dtype=cfg.dtype,
        quantize=cfg.quantize,
        compile=cfg.compile,
        batch_size=cfg.batch_size,
        concurrency=cfg.concurrency,
    )
    if "think" in cfg.modes and not model.chat and any(get_task(t.name).kind != "mcq" for t in cfg.tasks):
        raise K1Error(f"{cfg.model}: no chat template, so it cannot run in think mode; use --modes non-think")
    # The output directory is touched only once the model and config are known to be good.
    samples_dir = out / "samples"
    samples_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        for f in samples_dir.glob("*.jsonl"):
            f.unlink()
    stamp.write_text(json.dumps({"fingerprint": fingerprint}))
    results: dict = {
        "model": cfg.model,
        "name": getattr(model, "name", cfg.model),
        "backend": model.backend,
        "chat": model.chat,
        "config": _public_config(cfg),
        "tasks": {},
        "started": _now(),
    }
    if any(get_task(t.name).kind == "code" for t in cfg.tasks):
        results["sandbox"] = {**dataclasses.asdict(cfg.sandbox), **isolation().describe()}
    with _progress() as bar:
        for spec in cfg.tasks:
            task = get_task(spec.name)
            docs = task.load(
                spec.data, limit=spec.limit if spec.limit is not None else cfg.limit, **spec.options
            )
            entry = {
                "kind": task.kind,
                "language": task.language,
                "data": spec.data,
                "n_docs": len(docs),
                "modes": {},
            }
            results["tasks"][task.name] = entry
            modes = [LOGLIKELIHOOD] if isinstance(task, MCQTask) else cfg.modes
            for mode in modes:
                path = samples_dir / f"{task.name}.{mode}.jsonl"
                done = _read_done(path)
                todo = [d for d in docs if d.id not in done]
                label = f"{task.name} ({mode})"
                bar_id = bar.add_task(label, total=len(docs), completed=len(docs) - len(todo))
                started = time.monotonic()
                if isinstance(task, MCQTask):
                    records = _run_mcq(
                        model, task, spec, cfg, todo, path, lambda k, b=bar_id: bar.advance(b, k)
                    )
                else:
                    records = _run_generative(
                        model, task, cfg, todo, mode, path, lambda k, b=bar_id: bar.advance(b, k)
                    )
                ordered = [done.get(d.id) or records[d.id] for d in docs]
                metrics = (
                    mcq_eval.metrics(ordered)
                    if isinstance(task, MCQTask)
                    else generative_metrics(ordered, cfg.k)
                )
                metrics["wall_s"] = round(time.monotonic() - started, 2)
                entry["modes"][mode] = metrics
    results["finished"] = _now()
    write_results(out, results)
    return results


def _run_mcq(
    model, task: MCQTask, spec: TaskSpec, cfg: EvalConfig, todo, path: Path, advance
) -> dict[str, dict]:
    if not todo:
        return {}
    k = spec.num_fewshot if spec.num_fewshot is not None else cfg.num_fewshot
    pool = []
    if k > 0:
        pool_path = spec.fewshot_data or task.fewshot_pool_path(spec.data)
        pool = task.load(pool_path) if pool_path else task.load(spec.data)
    records = mcq_eval.evaluate(
        model,
        task,
        todo,
        pool,
        num_fewshot=k,
        seed=cfg.seed,
        on_records=lambda new: _append(path, new),
        progress=advance,
    )
    return {r["id"]: r for r in records}


def _run_generative(model, task, cfg: EvalConfig, todo, mode: str, path: Path, advance) -> dict[str, dict]:
    think = mode == "think"
    out: dict[str, dict] = {}
    chunk = max(cfg.batch_size, cfg.concurrency if model.backend == "openai" else 1)
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        prompts = [task.prompt(doc, think=think, chat=model.chat) for doc in part]
        completions = model.generate(
            prompts,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            n=cfg.n,
            seed=cfg.seed + start,
        )
        records = _score_generative(
            task, part, completions, think, model.count_tokens, cfg.sandbox, cfg.workers
        )
        for r in records:
            r["mode"] = mode
        _append(path, records)
        out.update((r["id"], r) for r in records)
        advance(len(part))
    return out


def _score_generative(task, docs, completions, think, count_tokens, limits, workers) -> list[dict]:
    if task.kind == "math":
        return [
            math_eval.score_doc(doc, comps, think, count_tokens)
            for doc, comps in zip(docs, completions, strict=True)
        ]
    return code_eval.score_docs(docs, completions, think, count_tokens, limits, workers)


def _public_config(cfg: EvalConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d.pop("api_key_env", None)  # the variable's name is harmless, but results travel; keep them minimal
    return d


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# ---------------------------------------------------------------------------------------------
# Scoring completions made elsewhere


def _sample_completions(where: str, record: dict) -> list[Completion]:
    def tokens(value):
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    if isinstance(record.get("samples"), list):  # our own samples files
        out = []
        for s in record["samples"]:
            if not isinstance(s, dict) or not isinstance(s.get("text"), str):
                raise DataError(f"{where}: each of 'samples' needs a 'text' string")
            out.append(Completion(s["text"], tokens(s.get("n_tokens")), s.get("finish", "stop")))
        return out
    for key in ("completions", "responses", "outputs"):
        if isinstance(record.get(key), list):
            counts = (
                record.get("n_tokens")
                if isinstance(record.get("n_tokens"), list)
                else [None] * len(record[key])
            )
            return [Completion(str(t), tokens(c)) for t, c in zip(record[key], counts, strict=False)]
    for key in ("completion", "response", "output", "text"):
        if isinstance(record.get(key), str):
            return [Completion(record[key], tokens(record.get("n_tokens")))]
    raise DataError(f"{where}: no completion; give 'completion' (string) or 'completions' (list of strings)")


def _record_id(where: str, record: dict) -> str:
    for key in ("id", "doc_id", "task_id", "question_id"):
        if record.get(key) is not None:
            return str(record[key])
    raise DataError(f"{where}: no 'id' naming the problem it answers")


def score(
    task_name: str,
    data: str,
    samples: str | None = None,
    *,
    reference: bool = False,
    mode: str = "non-think",
    tokenizer: str | None = None,
    ks: tuple[int, ...] = (1,),
    limits: Limits | None = None,
    workers: int = 2,
    limit: int | None = None,
    options: dict | None = None,
    out: str | None = None,
) -> dict:
    """Score completions from a samples file (any model, any server), or the data set's own references.

    Samples jsonl: {"id": ..., "completion": "..."} or {"id": ..., "completions": [...]} (optionally
    "n_tokens", "mode"); for multiple choice {"id": ..., "loglikelihoods": [...]} or {"choice": 2}.
    """
    from k1.evals.report import write_results

    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}" + did_you_mean(mode, MODES))
    if (samples is None) == (not reference):
        raise ConfigError("give either --samples FILE or --reference")
    task = get_task(task_name)
    docs = task.load(data, limit=limit, **(options or {}))
    by_id = {d.id: d for d in docs}
    count = None
    if tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
        count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    groups: dict[str, list[tuple]] = {}
    if reference:
        for doc in docs:
            ref = task.reference(doc) if task.kind == "math" else getattr(doc, "reference", None)
            if task.kind == "mcq":
                ref = doc.gold
            if ref is None:
                continue
            groups.setdefault(mode, []).append((doc, ref))
        if not groups:
            raise K1Error(f"{data}: task {task_name} has no reference solutions in this file")
    else:
        for where, record in read_jsonl(Path(samples)):
            rid = _record_id(where, record)
            if rid not in by_id:
                raise DataError(f"{where}: id {rid!r} is not a problem of {data}")
            m = record.get("mode", mode)
            if task.kind == "mcq":
                lls = record.get("loglikelihoods")
                choice = record.get("choice", record.get("pred"))
                if lls is None and choice is None:
                    raise DataError(
                        f"{where}: multiple choice needs 'loglikelihoods' (list) or 'choice' (index)"
                    )
                if lls is not None and (not isinstance(lls, list) or len(lls) != len(by_id[rid].choices)):
                    raise DataError(
                        f"{where}: 'loglikelihoods' should list {len(by_id[rid].choices)} numbers"
                    )
                groups.setdefault(LOGLIKELIHOOD, []).append((by_id[rid], (lls, choice)))
            else:
                if m not in MODES:
                    raise DataError(f"{where}: mode {m!r}" + did_you_mean(str(m), MODES))
                groups.setdefault(m, []).append((by_id[rid], _sample_completions(where, record)))
    results: dict = {
        "model": samples or "reference",
        "name": Path(samples).stem if samples else "reference",
        "backend": "samples",
        "tasks": {},
    }
    entry = {"kind": task.kind, "language": task.language, "data": data, "n_docs": len(docs), "modes": {}}
    results["tasks"][task.name] = entry
    scored_all = {}
    for m, items in groups.items():
        if task.kind == "mcq":
            records = []
            for doc, value in items:
                if reference:
                    records.append(mcq_eval.score_doc(doc, choice=value))
                else:
                    lls, choice = value
                    records.append(
                        mcq_eval.score_doc(doc, lls, _choice_index(doc, choice) if lls is None else None)
                    )
            metrics = mcq_eval.metrics(records)
            m = LOGLIKELIHOOD
        else:
            think = m == "think"
            item_docs = [doc for doc, _ in items]
            comps = [[Completion(v, None)] if isinstance(v, str) else v for _, v in items]
            if count:  # samples without token counts: count them with the given tokenizer
                for row in comps:
                    for c in row:
                        if c.n_tokens is None:
                            c.n_tokens = count(c.text)
            records = _score_generative(task, item_docs, comps, think, count, limits, workers)
            metrics = generative_metrics(records, [k for k in ks if k <= min(len(c) for c in comps)])
        metrics["missing"] = len(docs) - len({d.id for d, _ in items})
        entry["modes"][m] = metrics
        scored_all[m] = records
    if out:
        out_dir = Path(out)
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)
        for m, records in scored_all.items():
            path = out_dir / "samples" / f"{task.name}.{m}.jsonl"
            path.unlink(missing_ok=True)
            _append(path, records)
        write_results(out_dir, results)
    return results


def _choice_index(doc, choice) -> int | None:
    if isinstance(choice, int) and not isinstance(choice, bool):
        return choice
    if isinstance(choice, str):
        text = choice.strip()
        if text.isdigit():
            return int(text)
        letters = "ABCDEFGHIJ"
        if len(text) == 1 and text.upper() in letters:
            return letters.index(text.upper())
        stripped = [c.strip() for c in doc.choices]
        if text in stripped:
            return stripped.index(text)
    return None
