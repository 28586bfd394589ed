"""The curation pipeline: raw files in, clean deduplicated PII-free token shards out.

    k1 data prepare recipes/data_demo.toml           # the CLI
    k1.data.prepare("recipes/data_demo.toml")        # or a DataConfig / dict

Stages (each a datatrove executor run; every one resumes by skipping the tasks it already finished):

    filter        read -> normalize -> language -> quality -> work/filtered  (+ exact-dedup hashes)
    exact_find    one task: find documents whose normalized content hash was seen before
    near_sigs     drop exact duplicates -> work/unique (+ MinHash signatures)
    near_buckets  LSH buckets: candidate near-duplicate pairs
    near_cluster  one task: union the pairs into clusters, keep one document per cluster
    shards        drop near duplicates -> scrub PII -> tokenize -> train/validation shards, canary check
    finalize      one task: manifest.json + report.md with charts

Local execution (processes on this machine) is the default; the same stages run on Slurm or Ray by
changing `[executor] kind` (docs/data.md). Output depends only on the inputs and the config (tasks,
seed, thresholds), never on the number of workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
import time
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from k1.data.language import LANGUAGES, LanguageConfig
from k1.data.pii import PII_TYPES, validate_types
from k1.data.quality import QualityConfig, default_quality
from k1.data.read import InputSpec
from k1.errors import ConfigError, K1Error, did_you_mean

# ----------------------------------------------------------------------------------------------
# config


@dataclass
class SyntheticConfig:
    docs: int = 0
    """Generate a small messy corpus with planted PII and canaries (k1.data.synthetic) into
    <out>/raw and read it as an extra input; 0 = off."""
    seed: int = 0


@dataclass
class LanguageSection:
    keep: list[str] = field(default_factory=lambda: ["ko", "en", "code"])
    """Languages kept; the rest are dropped as language_<lang>."""
    ko_min_hangul: float = 0.3
    en_min_latin: float = 0.7
    code_min_lines: float = 0.3
    code_min_symbols: float = 0.03

    def rules(self) -> LanguageConfig:
        return LanguageConfig(
            self.ko_min_hangul, self.en_min_latin, self.code_min_lines, self.code_min_symbols
        )


@dataclass
class DedupConfig:
    exact: bool = True
    """Drop documents whose normalized content (case-folded, whitespace collapsed) was seen before."""
    near: bool = True
    """MinHash-LSH near-duplicate removal."""
    threshold: float = 0.8
    """Jaccard similarity of word 5-gram sets above which two documents are near duplicates."""
    num_perm: int = 112
    """MinHash permutations (split into LSH bands x rows chosen for the threshold)."""
    ngram: int = 5
    bands: int = 0
    """Override the band count chosen from threshold (0 = choose)."""
    rows: int = 0
    """Override the rows per band (0 = choose)."""


@dataclass
class PIIConfig:
    enabled: bool = True
    types: list[str] = field(default_factory=lambda: list(PII_TYPES))
    canaries: list[str] = field(default_factory=list)
    """Strings that must never reach the shards; the report says whether any did."""
    canary_file: str = ""
    """A file with one canary per line (kept out of the config so they need not be in plain sight)."""


@dataclass
class TokenizeConfig:
    tokenizer: str = "byte"
    """A k1 / Hugging Face tokenizer directory (tokenizer.json), or "byte" for a built-in byte-level one."""
    separator: str = ""
    """Token appended after each document; empty = the tokenizer's eos token."""
    shard_tokens: int = 1 << 24
    """Tokens per shard file (the last shard of a task is smaller)."""
    validation: float = 0.01
    """Share of documents (by a hash of their id) sent to the validation split."""
    batch_docs: int = 64


@dataclass
class ExecutorConfig:
    kind: str = "local"
    """local, slurm or ray: which datatrove executor runs the stages."""
    options: dict = field(default_factory=dict)
    """Passed to the datatrove executor (slurm: partition, time, cpus_per_task, ...; ray: cpus_per_task, ...)."""


@dataclass
class DataConfig:
    out: str = "runs/data"
    """Output directory: shards, manifest.json, report.md, work/ (intermediate files and logs)."""
    inputs: list[InputSpec] = field(default_factory=list)
    seed: int = 0
    tasks: int = 4
    """Independent tasks per parallel stage; part of the output's identity (shard names, order)."""
    workers: int = 2
    """Processes running tasks at once on this machine (local executor)."""
    split_bytes: int = 32 << 20
    """Line-based input files are cut into work units of this size."""
    keep_work: bool = False
    """Keep work/filtered and work/unique (the intermediate documents) after a successful run."""
    write_text: bool = False
    """Also write the final scrubbed documents as jsonl under <out>/text (for inspection)."""
    progress: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    language: LanguageSection = field(default_factory=LanguageSection)
    quality: dict[str, QualityConfig] = field(default_factory=default_quality)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    pii: PIIConfig = field(default_factory=PIIConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    # fields that change how the work is scheduled but never what it produces
    _SCHEDULING = ("workers", "progress", "executor", "keep_work")

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> DataConfig:
        cfg = _build(cls, data, where)
        cfg.validate()
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> DataConfig:
        path = Path(path)
        if not path.is_file():
            raise K1Error(f"{path}: no such config file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML ({err})") from err
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        d = {k: v for k, v in self.to_dict().items() if k not in self._SCHEDULING}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        if self.tasks < 1 or self.workers < 1:
            raise ConfigError("tasks and workers must be at least 1")
        for i, spec in enumerate(self.inputs):
            spec.validate(f"inputs[{i}]")
        if not self.inputs and not self.synthetic.docs:
            raise ConfigError("no [[inputs]] and no [synthetic] docs: nothing to read")
        for lang in self.language.keep:
            if lang not in LANGUAGES:
                raise ConfigError(f"language.keep: unknown language {lang!r}{did_you_mean(lang, LANGUAGES)}")
        for lang in self.quality:
            if lang not in LANGUAGES:
                raise ConfigError(f"quality.{lang}: unknown language{did_you_mean(lang, LANGUAGES)}")
        if not 0 < self.dedup.threshold < 1:
            raise ConfigError("dedup.threshold must be between 0 and 1")
        validate_types(self.pii.types)
        if not 0 <= self.tokenize.validation < 1:
            raise ConfigError("tokenize.validation must be in [0, 1)")
        if self.tokenize.shard_tokens < 1:
            raise ConfigError("tokenize.shard_tokens must be positive")
        if self.executor.kind not in EXECUTORS:
            raise ConfigError(
                f"executor.kind: unknown {self.executor.kind!r}{did_you_mean(self.executor.kind, list(EXECUTORS))}"
            )

    @property
    def out_dir(self) -> Path:
        return Path(self.out)

    @property
    def work(self) -> Path:
        return self.out_dir / "work"

    def all_canaries(self) -> list[str]:
        canaries = list(self.pii.canaries)
        if self.pii.canary_file:
            f = Path(self.pii.canary_file)
            if not f.is_file():
                raise K1Error(f"pii.canary_file {f}: no such file")
            canaries += [line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        if self.synthetic.docs:
            from k1.data.synthetic import canary_values

            canaries += canary_values(self.synthetic.seed)
        return canaries

    def all_inputs(self) -> list[InputSpec]:
        specs = list(self.inputs)
        if self.synthetic.docs:
            specs.append(InputSpec(path=str(self.out_dir / "raw"), source="synthetic"))
        return specs


def _build(cls, data, where: str):
    """A dataclass from a dict, recursively; unknown keys fail with the valid ones listed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, names)}")
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}", cls, key)
    return cls(**kwargs)


def _coerce(hint, value, where: str, owner, key):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if owner is DataConfig and key == "quality":
        merged = default_quality()
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table of languages")
        for lang, sub in value.items():
            if lang not in LANGUAGES:
                raise ConfigError(f"{where}: unknown language {lang!r}{did_you_mean(lang, LANGUAGES)}")
            base = dataclasses.asdict(merged[lang])
            base.update(sub if isinstance(sub, dict) else {})
            merged[lang] = _build(QualityConfig, base, f"{where}.{lang}")
        return merged
    if owner is DataConfig and key == "inputs":
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected [[inputs]] tables")
        return [_build(InputSpec, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return list(value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number")
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string")
    return value


def load_config(config) -> DataConfig:
    if isinstance(config, DataConfig):
        config.validate()
        return config
    if isinstance(config, dict):
        return DataConfig.from_dict(config)
    return DataConfig.from_toml(config)


# ----------------------------------------------------------------------------------------------
# stages


@dataclass
class Stage:
    name: str
    pipeline: list
    tasks: int


def _minhash_config(cfg: DataConfig):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    from k1.data.dedup import minhash_bands

    bands, rows = cfg.dedup.bands, cfg.dedup.rows
    if not (bands and rows):
        bands, rows = minhash_bands(cfg.dedup.threshold, cfg.dedup.num_perm)
    # sha1 hashing: datatrove's xxhash path breaks with xxhash>=4, and sha1 needs no extra package.
    return MinhashConfig(
        n_grams=cfg.dedup.ngram,
        num_buckets=bands,
        hashes_per_bucket=rows,
        seed=cfg.seed + 1,
        hash_config=HashConfig(precision=64, hash_fc="sha1"),
    )


def _exact_config():
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
    from datatrove.utils.hashing import HashConfig

    from k1.data.dedup import content_key

    return ExactDedupConfig(content_getter=content_key, hash_config=HashConfig(precision=64, hash_fc="sha1"))


def build_stages(cfg: DataConfig, units: list, canaries: list[str]) -> list[Stage]:
    """The datatrove pipelines, in order. Executors (local, Slurm, Ray) run these same lists."""
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupFilter, ExactDedupSignature, ExactFindDedups
    from datatrove.pipeline.dedup.minhash import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    from k1.data import steps
    from k1.data.dedup import SpaceWordTokenizer

    w = cfg.work
    specs = cfg.all_inputs()
    T = cfg.tasks
    stages: list[Stage] = []
    exact = _exact_config()
    first = [
        steps.CorpusReader(specs, units, str(w / "errors")),
        steps.Normalize(),
        steps.LanguageTag(tuple(cfg.language.keep), cfg.language.rules()),
        steps.QualityFilter(cfg.quality),
        steps.RankJsonlWriter(str(w / "filtered")),
    ]
    if cfg.dedup.exact:
        first.append(ExactDedupSignature(output_folder=str(w / "exact" / "sigs"), config=exact))
    stages.append(Stage("filter", first, T))
    if cfg.dedup.exact:
        stages.append(
            Stage(
                "exact_find",
                [
                    ExactFindDedups(
                        data_folder=str(w / "exact" / "sigs"),
                        output_folder=str(w / "exact" / "dups"),
                        config=exact,
                    )
                ],
                1,
            )
        )
    last_folder = w / "filtered"
    if cfg.dedup.near:
        mh = _minhash_config(cfg)
        sig = [steps.RankJsonlReader(str(last_folder))]
        if cfg.dedup.exact:
            sig.append(ExactDedupFilter(data_folder=str(w / "exact" / "dups"), config=exact))
        sig += [
            steps.RankJsonlWriter(str(w / "unique")),
            MinhashDedupSignature(
                output_folder=str(w / "minhash" / "sigs"), config=mh, language=SpaceWordTokenizer()
            ),
        ]
        stages.append(Stage("near_sigs", sig, T))
        stages.append(
            Stage(
                "near_buckets",
                [
                    MinhashDedupBuckets(
                        input_folder=str(w / "minhash" / "sigs"),
                        output_folder=str(w / "minhash" / "buckets"),
                        config=mh,
                    )
                ],
                mh.num_buckets,
            )
        )
        stages.append(
            Stage(
                "near_cluster",
                [
                    MinhashDedupCluster(
                        input_folder=str(w / "minhash" / "buckets"),
                        output_folder=str(w / "minhash" / "remove"),
                        config=mh,
                        save_cluster_size=True,
                    )
                ],
                1,
            )
        )
        last_folder = w / "unique"
    final = [steps.RankJsonlReader(str(last_folder))]
    if cfg.dedup.near:
        final.append(MinhashDedupFilter(input_folder=str(w / "minhash" / "remove")))
    elif cfg.dedup.exact:
        final.append(ExactDedupFilter(data_folder=str(w / "exact" / "dups"), config=exact))
    if cfg.pii.enabled:
        final.append(steps.ScrubPII(tuple(cfg.pii.types)))
    tok = cfg.tokenize
    final.append(
        steps.TokenizeShards(
            _tokenizer_path(cfg),
            tok.separator,
            str(cfg.out_dir / "shards"),
            tok.shard_tokens,
            tok.validation,
            cfg.seed,
            canaries,
            tok.batch_docs,
        )
    )
    if cfg.write_text:
        final.append(steps.RankJsonlWriter(str(cfg.out_dir / "text")))
    stages.append(Stage("shards", final, T))
    stages.append(Stage("finalize", [steps.Finalize(cfg.to_dict())], 1))
    return stages


def _tokenizer_path(cfg: DataConfig) -> str:
    if cfg.tokenize.tokenizer == "byte":
        from k1.data.shard import write_byte_tokenizer

        return str(write_byte_tokenizer(cfg.work / "byte_tokenizer"))
    return cfg.tokenize.tokenizer


# ----------------------------------------------------------------------------------------------
# executors: a registry, so the same stages run locally, on Slurm or on Ray


def _local(stage: Stage, cfg: DataConfig, logging_dir: str, previous):
    from datatrove.executor.local import LocalPipelineExecutor

    class QuietLocal(LocalPipelineExecutor):
        # datatrove logs INFO to stderr for local rank 0 and counts finished tasks on stderr; k1 shows
        # its own progress instead, so every task runs as a non-zero local rank (errors still reach
        # stderr, everything else the task's log file) and the counter message is left out.
        def _launch_run_for_rank(self, rank, ranks_q, completed=None, completed_lock=None):
            local_rank = ranks_q.get()
            try:
                return self._run_for_rank(rank, local_rank + 1)
            finally:
                ranks_q.put(local_rank)

    # Always through a process pool (workers >= 2): a task then has its own process, its own log file,
    # and cannot take the caller's logging setup down with it.
    return QuietLocal(
        stage.pipeline,
        tasks=stage.tasks,
        workers=max(2, min(cfg.workers, stage.tasks)),
        logging_dir=logging_dir,
    )


def _slurm(stage: Stage, cfg: DataConfig, logging_dir: str, previous):
    from datatrove.executor.slurm import SlurmPipelineExecutor

    opts = dict(cfg.executor.options)
    opts.setdefault("time", "24:00:00")
    opts.setdefault("partition", "cpu")
    return SlurmPipelineExecutor(
        pipeline=stage.pipeline,
        tasks=stage.tasks,
        logging_dir=logging_dir,
        job_name=f"k1-data-{stage.name}",
        depends=previous,
        **opts,
    )


def _ray(stage: Stage, cfg: DataConfig, logging_dir: str, previous):
    from datatrove.executor.ray import RayPipelineExecutor

    return RayPipelineExecutor(
        pipeline=stage.pipeline,
        tasks=stage.tasks,
        logging_dir=logging_dir,
        depends=previous,
        **dict(cfg.executor.options),
    )


EXECUTORS = {"local": _local, "slurm": _slurm, "ray": _ray}


# ----------------------------------------------------------------------------------------------
# running


def _check_out_dir(cfg: DataConfig) -> None:
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "config.json"
    fp = cfg.fingerprint()
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old.get("fingerprint") != fp:
            raise K1Error(
                f"{out} holds a run with a different config (fingerprint {old.get('fingerprint')} != {fp}): choose another out or delete it"
            )
    else:
        tmp = out / ".tmp-config.json"
        tmp.write_text(json.dumps({"fingerprint": fp, "config": cfg.to_dict()}, indent=2, ensure_ascii=False))
        tmp.replace(stamp)


def _progress_watch(stages: list[Stage], cfg: DataConfig, show: bool):
    """A rich progress bar per stage fed by datatrove's completion markers (works for any executor)."""
    if not show:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    prog = Progress(
        TextColumn("[bold]{task.description:<13}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tasks"),
        TimeElapsedColumn(),
    )
    ids = {s.name: prog.add_task(s.name, total=s.tasks) for s in stages}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for s in stages:
                done = len(list((cfg.work / "logs" / s.name / "completions").glob("*")))
                prog.update(ids[s.name], completed=done)
            stop.wait(0.5)

    prog.start()
    t = threading.Thread(target=poll, daemon=True)
    t.start()

    def finish():
        stop.set()
        t.join()
        for s in stages:
            prog.update(
                ids[s.name], completed=len(list((cfg.work / "logs" / s.name / "completions").glob("*")))
            )
        prog.stop()

    return prog, finish


def prepare(config, progress: bool | None = None) -> dict:
    """Run (or resume) the whole pipeline; return a summary: manifest path, report path, document and
    token counts, PII counts, canary result, errors."""
    from loguru import logger

    cfg = load_config(config)
    if progress is not None:
        cfg.progress = progress
    _check_out_dir(cfg)
    if cfg.synthetic.docs and not (cfg.out_dir / "raw" / ".done").is_file():
        from k1.data.synthetic import generate_corpus

        generate_corpus(cfg.out_dir / "raw", docs=cfg.synthetic.docs, seed=cfg.synthetic.seed)
        (cfg.out_dir / "raw" / ".done").write_text("ok")
    units = _plan(cfg)
    canaries = cfg.all_canaries()
    stages = build_stages(cfg, units, canaries)
    make = EXECUTORS[cfg.executor.kind]
    # The parent process's own datatrove messages (pool start, per-stage stats dumps) are noise next to
    # the progress bars; tasks still log to work/logs/<stage>/logs/.
    logger.disable("datatrove")
    # datatrove's inner tqdm bars (dedup stages) would print through ours; tqdm reads this variable.
    old_tqdm = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    import multiprocess

    try:
        multiprocess.set_forkserver_preload(
            ["k1.data.steps", "datatrove.pipeline.dedup.minhash", "datatrove.pipeline.dedup.exact_dedup"]
        )
    except (AttributeError, ValueError):
        pass
    _, finish = _progress_watch(stages, cfg, cfg.progress and cfg.executor.kind == "local")
    try:
        previous = None
        for stage in stages:
            ex = make(stage, cfg, str(cfg.work / "logs" / stage.name), previous)
            if cfg.executor.kind == "local":
                ex.run()
            previous = ex
        if cfg.executor.kind != "local":
            previous.run()  # submits the chain; each stage waits on the one before
            return {"submitted": True, "out": str(cfg.out_dir)}
    finally:
        if finish:
            finish()
        logger.enable("datatrove")
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm
    if not cfg.keep_work:
        for sub in ("filtered", "unique"):
            shutil.rmtree(cfg.work / sub, ignore_errors=True)
    return json.loads((cfg.out_dir / "summary.json").read_text())


def _plan(cfg: DataConfig) -> list:
    """Work units, planned once and frozen in work/units.json so a resumed run sees the same split."""
    from k1.data.read import Unit, plan_units

    f = cfg.work / "units.json"
    if f.is_file():
        data = json.loads(f.read_text())
        return [Unit(**u) for u in data["units"]]
    units, skipped = plan_units(cfg.all_inputs(), cfg.split_bytes)
    cfg.work.mkdir(parents=True, exist_ok=True)
    tmp = cfg.work / ".tmp-units.json"
    tmp.write_text(
        json.dumps({"units": [dataclasses.asdict(u) for u in units], "skipped": skipped}, ensure_ascii=False)
    )
    tmp.replace(f)
    return units


def finalize(cfg: DataConfig) -> dict:
    """Write manifest.json, summary.json and report.md (+ charts) from the finished stages."""
    from k1.data.report import collect, write_report
    from k1.data.shard import load_tokenizer, write_manifest

    info = load_tokenizer(_tokenizer_path(cfg), cfg.tokenize.separator)
    stats = collect(cfg)
    manifest = write_manifest(
        cfg.out_dir,
        cfg.tasks,
        info,
        {"config_fingerprint": cfg.fingerprint(), "created": time.strftime("%Y-%m-%dT%H:%M:%S")},
    )
    summary = write_report(cfg, stats, manifest)
    return summary
