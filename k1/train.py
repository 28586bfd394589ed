"""The training loop: one loop for pretraining, SFT and distillation, from a laptop to a cluster.

    k1 train recipes/tiny.toml                      # one process
    torchrun --nproc_per_node=8 -m k1 train cfg.toml   # FSDP2 over 8 ranks, same command

What it does each step: draw the step's global batch (a pure function of seed and step, so a
resumed run sees exactly the batches it would have seen), run the objective under bf16 autocast
with fp32 master weights, accumulate gradients, clip, AdamW, advance the schedule, and nudge each
MoE layer's routing bias towards balanced load (DeepSeek-V3's auxiliary-loss-free balancing).

Outputs under `out_dir`: `checkpoints/step-N/` (Hugging Face model directories plus
`train_state.pt`), `checkpoints/latest`, `model/` (the final model), `metrics.jsonl`, `tb/`
(TensorBoard), `train.png` and `report.md`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from k1 import atomic, checkpoint, parallel
from k1.config import PRESETS, ModelConfig
from k1.errors import ConfigError, K1Error, did_you_mean
from k1.objectives import get_objective

STATE_FILE = "train_state.pt"
LATEST = "latest"


@dataclass
class TrainConfig:
    """Settings of a training run; a TOML file holds them (recipes/*.toml), `--set key=value` overrides."""

    out_dir: str = "runs/train"
    """Where checkpoints, metrics, plots and the final model go."""
    model: str = "tiny"
    """A preset name to start from random weights, or a model directory to continue from."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields changed from the preset (the TOML's [model] table)."""
    data: str = ""
    """Training tokens: a `k1 data prepare` manifest (manifest.json), or a .npy array of token ids."""
    data_format: str = "tokens"
    """How `data` is read: a key of k1.train.DATA_FORMATS (tokens: shards or .npy; others by stage)."""
    val_data: str = ""
    """Validation tokens (same forms); empty: the manifest's validation split, or val_fraction of data."""
    val_fraction: float = 0.05
    """Share of windows held out for validation when data has no validation split."""
    tokenizer: str = ""
    """Tokenizer directory: its vocabulary must fit the model, and it is saved with every checkpoint."""
    objective: str = "pretrain"
    """Loss function (k1.objectives registry)."""
    objective_options: dict[str, Any] = field(default_factory=dict)
    """Keyword settings passed to the objective (kd: loss, temperature, ce_weight, beta; see docs/distill.md)."""
    teacher: str = ""
    """data_format "kd": a local teacher (k1 or transformers directory) scored on every batch (online
    distillation); empty: `data` is a capture directory from `k1 distill capture`."""
    teacher_top_k: int = 32
    """Online distillation: teacher tokens kept per position (the rest is one leftover-mass bucket)."""
    seq_len: int = 256
    """Tokens per training sequence."""
    batch_size: int = 8
    """Sequences per micro-batch on each rank."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (global batch = batch_size x grad_accum x ranks)."""
    max_steps: int = 200
    """Optimizer steps in the whole run."""
    lr: float = 3e-3
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of lr."""
    warmup_steps: int = 20
    """Linear warmup from 0 to lr."""
    schedule: str = "cosine"
    """After warmup: cosine (to min_lr), wsd (warmup-stable-decay), or constant."""
    decay_fraction: float = 0.2
    """wsd: the share of steps spent decaying at the end."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (not on norms, biases or embeddings)."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    mtp_weight: float = 0.3
    """Weight of the multi-token-prediction loss (DeepSeek-V3 used 0.3, then 0.1)."""
    balance_rate: float = 1e-3
    """Routing-bias update speed per step (gamma); 0 turns auxiliary-loss-free balancing off."""
    seq_aux_weight: float = 0.0
    """Weight of the small sequence-wise balance loss (DeepSeek-V3: 1e-4); 0: off."""
    precision: str = "bf16"
    """bf16 (autocast, fp32 master weights) or fp32."""
    compile: bool = False
    """torch.compile each decoder block for training (about 1.2x tokens/s at `small`, after some
    30 s of compiling the first step); the loss, evaluation and generation stay eager."""
    seed: int = 0
    eval_every: int = 50
    """Validation loss every N steps (and at the end)."""
    eval_batches: int = 8
    """Micro-batches per validation."""
    save_every: int = 100
    """Checkpoint every N steps (and at the end)."""
    keep_last: int = 2
    """Checkpoints kept; older ones are removed."""
    log_every: int = 10
    """Steps between log lines when the output is not a terminal."""
    peak_tflops: float = 0.0
    """Hardware peak for MFU; 0 measures this machine's matmul throughput at the start."""
    threads: int = 0
    """torch CPU threads; 0 leaves torch's default."""
    # SFT (objective "sft", data_format "chat"; see k1/sft.py and docs/sft.md)
    think_ratio: float = 0.5
    """chat: share of conversations rendered in think mode, with their reasoning (only those that have some can be)."""
    pack: bool = True
    """chat: pack several conversations per sequence (they do not attend to each other); false: one per sequence."""
    question_column: str = "question"
    """chat: field / CSV column of the user's question, for records without messages or instruction/output."""
    answer_column: str = "answer"
    """chat: field / CSV column of the assistant's answer."""
    reasoning_column: str = "reasoning"
    """chat: field / CSV column of the reasoning trace (optional; empty or missing: no reasoning)."""
    system_prompt: str = ""
    """chat: system message added to conversations that have none."""

    @classmethod
    def from_toml(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise K1Error(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as err:
            raise K1Error(f"{path}: invalid TOML ({err})") from None
        return cls.from_dict(raw, source=str(path), overrides=overrides)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config", overrides: list[str] | None = None) -> TrainConfig:
        raw = dict(raw)
        model_table = raw.pop("model", None)
        values: dict[str, Any] = {}
        if isinstance(model_table, dict):
            model_table = dict(model_table)
            values["model"] = model_table.pop("init", model_table.pop("preset", "tiny"))
            values["model_overrides"] = model_table
        elif model_table is not None:
            values["model"] = model_table
        values.update(raw)
        for item in overrides or []:
            key, sep, text = item.partition("=")
            if not sep:
                raise ConfigError(f"--set {item!r}: expected key=value")
            value = _parse_value(text)
            if key.startswith("model."):
                values.setdefault("model_overrides", {})[key[len("model."):]] = value
            else:
                values[key] = value
        valid = [f.name for f in fields(cls)]
        for key in values:
            if key not in valid:
                raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean(key, valid)}")
        cfg = cls(**values)
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> None:
        def need(cond, msg):
            if not cond:
                raise ConfigError(f"{source}: {msg}")

        need(self.schedule in ("cosine", "wsd", "constant"), f"schedule {self.schedule!r}; valid: cosine, wsd, constant")
        need(self.precision in ("bf16", "fp32"), f"precision {self.precision!r}; valid: bf16, fp32")
        need(self.seq_len > 1 and self.batch_size > 0 and self.grad_accum > 0, "seq_len > 1, batch_size and grad_accum > 0")
        need(self.max_steps > 0, "max_steps must be positive")
        need(self.lr > 0 and 0 <= self.min_lr_ratio <= 1, "lr > 0 and 0 <= min_lr_ratio <= 1")
        need(0 <= self.warmup_steps <= self.max_steps, "warmup_steps must be in 0..max_steps")
        need(0 < self.val_fraction < 1, "val_fraction must be in (0, 1)")
        need(self.keep_last >= 1, "keep_last must be at least 1")
        need(bool(self.data), "no training data: set data = \"path/to/manifest.json\" (from `k1 data prepare`)")
        need(0 <= self.think_ratio <= 1, "think_ratio must be in [0, 1]")
        objective = get_objective(self.objective)
        options = [p for p in inspect.signature(objective).parameters if p not in ("model", "batch", "mtp_weight")]
        for key in self.objective_options:
            if key not in options:
                raise ConfigError(f"{source}: objective_options.{key} is not a setting of objective {self.objective!r}"
                                  f"{did_you_mean(key, options) if options else '; it takes none'}")
        if self.data_format not in DATA_FORMATS:
            raise ConfigError(f"{source}: data_format {self.data_format!r}{did_you_mean(self.data_format, list(DATA_FORMATS))}")
        if not Path(self.model).is_dir() and self.model not in PRESETS:
            raise ConfigError(f"{source}: model {self.model!r} is neither a model directory nor a preset"
                              f"{did_you_mean(self.model, list(PRESETS))}")

    def to_toml(self) -> str:
        lines = []
        for f in fields(self):
            if f.name in ("model", "model_overrides"):  # written as the [model] table
                continue
            lines.append(f"{f.name} = {_toml_value(getattr(self, f.name))}")
        lines.append("\n[model]")
        lines.append(f"init = {_toml_value(self.model)}")
        for k, v in self.model_overrides.items():
            lines.append(f"{k} = {_toml_value(v)}")
        return "\n".join(lines) + "\n"


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


# ------------------------------------------------------------------------------------- data


class TokenWindows:
    """Fixed-length windows over one or more token arrays, visited in a seeded random order.

    Sample g of the run is window perm_epoch[g mod n] with epoch = g div n: which tokens a step sees
    depends only on (seed, step), so resuming needs no iterator state and every rank can pick its
    own slice of the global batch.
    """

    def __init__(self, arrays: list[np.ndarray], seq_len: int, seed: int, name: str = "data"):
        self.arrays, self.seq_len, self.seed = arrays, seq_len, seed
        counts = [max(0, (len(a) - 1) // seq_len) for a in arrays]
        self.starts = np.cumsum([0, *counts])
        self.n = int(self.starts[-1])
        if self.n == 0:
            total = sum(len(a) for a in arrays)
            raise K1Error(f"{name}: {total} tokens is too few for one sequence of seq_len={seq_len} + 1")
        self._perm: tuple[int, np.ndarray] | None = None

    def window(self, w: int) -> np.ndarray:
        a = int(np.searchsorted(self.starts, w, side="right") - 1)
        start = (w - int(self.starts[a])) * self.seq_len
        return self.arrays[a][start : start + self.seq_len + 1]

    def sample(self, g: int) -> np.ndarray:
        epoch, i = divmod(g, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return self.window(int(self._perm[1][i]))

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        """Samples first .. first + count - 1 of the run, as {"input_ids": (count, seq_len + 1)}."""
        ids = np.stack([self.sample(first + j).astype(np.int64) for j in range(count)])
        return {"input_ids": torch.from_numpy(ids)}

    def max_token_id(self) -> int:
        """Largest id in the first million tokens of each array (a cheap check against the vocabulary)."""
        return max(int(np.max(a[: 1 << 20])) if len(a) else 0 for a in self.arrays)

    def fixed_batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        """Windows first .. first + count - 1 in storage order: the same validation set every time."""
        ids = np.stack([self.window((first + j) % self.n).astype(np.int64) for j in range(count)])
        return {"input_ids": torch.from_numpy(ids)}


def _load_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise K1Error(f"{path}: not a readable .npy token array ({err})") from None
    raise K1Error(f"{path}: unsupported token file; use a manifest.json from `k1 data prepare` or a .npy array")


def open_tokens(path: str, split: str) -> tuple[list[np.ndarray], int | None]:
    """Token arrays of a split, and the vocabulary size the data was made with (when known)."""
    p = Path(path)
    if not p.exists():
        raise K1Error(f"{p}: training data not found")
    if p.is_dir() and (p / "manifest.json").is_file():
        p = p / "manifest.json"
    if p.suffix == ".json":
        from k1.data.shard import ShardDataset  # the data pipeline's reader checks every shard's size

        ds = ShardDataset(p, split)
        return [a for a in ds if len(a)], ds.manifest.get("vocab_size")
    return [_load_array(p)], None


def token_sources(cfg: TrainConfig) -> tuple[TokenWindows, TokenWindows, int | None]:
    """Pretraining data: windows over token shards; validation from the manifest's split, from
    val_data, or else the last val_fraction of the training windows."""
    train_arrays, data_vocab = open_tokens(cfg.data, "train")
    val_arrays = None
    if cfg.val_data:
        val_arrays, _ = open_tokens(cfg.val_data, "validation")
    elif Path(cfg.data).suffix == ".json" or (Path(cfg.data) / "manifest.json").is_file():
        # Only a manifest has a validation split (open_tokens on a bare .npy returns the array itself).
        try:
            val_arrays, _ = open_tokens(cfg.data, "validation")
        except K1Error:
            val_arrays = None
    if val_arrays is None or not any(len(a) for a in val_arrays):
        whole = TokenWindows(train_arrays, cfg.seq_len, cfg.seed, cfg.data)
        n_val = max(1, int(whole.n * cfg.val_fraction))
        cut = (whole.n - n_val) * cfg.seq_len
        joined = np.concatenate([np.asarray(a) for a in train_arrays]) if len(train_arrays) > 1 else train_arrays[0]
        train_arrays, val_arrays = [joined[: cut + 1]], [joined[cut:]]
    train = TokenWindows(train_arrays, cfg.seq_len, cfg.seed, cfg.data)
    val = TokenWindows(val_arrays, cfg.seq_len, cfg.seed + 1, cfg.val_data or cfg.data)
    return train, val, data_vocab


def _kd_sources(cfg: TrainConfig):
    from k1.distill.logits import kd_sources  # imported when used: distillation pulls in its teachers

    return kd_sources(cfg)


# How `data` is read, by `data_format`. A source returns (train, validation, vocab size or None);
# train and validation offer `n` (samples per epoch), `batch(first, count)` (the run's samples
# first.., a pure function of seed and index) and `fixed_batch(first, count)` (a fixed evaluation
# set). Batches are dicts the objective understands ("input_ids", optional "loss_mask",
# "segment_ids", "position_ids"). SFT and distillation register their own formats.
DATA_FORMATS: dict[str, Any] = {"tokens": token_sources, "kd": _kd_sources}


# ------------------------------------------------------------------------------------- schedule


def lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier on cfg.lr at optimizer step `step` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        decay_steps = max(1, int(cfg.decay_fraction * cfg.max_steps))
        decay_start = cfg.max_steps - decay_steps
        if step < decay_start:
            return 1.0
        return floor + (1 - floor) * (1 - (step - decay_start) / decay_steps)
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Norms, biases and embeddings are not shrunk: decay would fight their scale, not overfit.
        if p.ndim < 2 or "embed_tokens" in name or name.endswith("norm.weight"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------- balancing


def moe_modules(model) -> list[tuple[str, torch.nn.Module]]:
    from k1.model import MoE

    return [(name, m) for name, m in model.named_modules() if isinstance(m, MoE)]


def sequence_balance_loss(moes, batch_size: int) -> torch.Tensor:
    """DeepSeek-V3 eq. 17-20: alpha * sum_i f_i P_i per sequence, averaged over sequences and layers."""
    losses = []
    for _, m in moes:
        if m.last_routing is None:
            continue
        idx, scores = m.last_routing
        n_experts, k = scores.shape[1], idx.shape[1]
        t = idx.shape[0] // batch_size
        counts = torch.zeros(batch_size, n_experts, device=idx.device)
        counts.scatter_add_(1, idx.view(batch_size, t * k), torch.ones(batch_size, t * k, device=idx.device))
        f = counts * n_experts / (k * t)
        p = (scores / scores.sum(-1, keepdim=True)).view(batch_size, t, n_experts).mean(1)
        losses.append((f * p).sum(-1).mean())
    return torch.stack(losses).mean() if losses else torch.zeros(())


# ------------------------------------------------------------------------------------- checkpoints


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def _complete(d: Path) -> bool:
    return checkpoint.is_model_dir(d) and (d / STATE_FILE).is_file()


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `latest` names, or else the newest complete one (a kill can land between the
    directory's rename and the pointer's update)."""
    pointer = root / LATEST
    if pointer.is_file():
        d = root / pointer.read_text(encoding="utf-8").strip()
        if _complete(d):
            return d
    candidates = sorted(p for p in root.glob("step-*") if p.is_dir() and _complete(p))
    return candidates[-1] if candidates else None


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        trash = old.with_name(f".trash-{old.name}")
        os.replace(old, trash)  # one atomic step out of sight, then the slow delete
        shutil.rmtree(trash, ignore_errors=True)
    for stale in root.glob(".*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- measuring


def measure_peak_tflops(dtype: torch.dtype, device: torch.device, seconds: float = 0.3) -> float:
    """This machine's own dense matmul throughput: the reference MFU is measured against."""
    n = 2048 if device.type == "cpu" else 8192
    g = torch.Generator(device=device).manual_seed(0)  # leave the run's own random stream untouched
    a = torch.randn(n, n, dtype=dtype, device=device, generator=g)
    b = torch.randn(n, n, dtype=dtype, device=device, generator=g)
    a @ b
    iters, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or iters < 2:
        a @ b
        iters += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * iters / (time.perf_counter() - start) / 1e12


# ------------------------------------------------------------------------------------- the run


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path
    steps: int
    final_loss: float
    val_loss: float | None
    tokens: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def build_model(cfg: TrainConfig, vocab_size: int | None):
    from k1.model import Transformer

    if Path(cfg.model).is_dir():
        model = checkpoint.load(cfg.model)
        if cfg.model_overrides:
            raise ConfigError(f"[model] overrides {sorted(cfg.model_overrides)} cannot change an existing model "
                              f"directory ({cfg.model}); start from a preset instead")
        return model.float().train()
    overrides = dict(cfg.model_overrides)
    if vocab_size and "vocab_size" not in overrides:
        overrides["vocab_size"] = vocab_size
    model_cfg = ModelConfig.preset(cfg.model, **overrides)
    torch.manual_seed(cfg.seed)
    return Transformer(model_cfg).train()


def _tokenizer_info(path: str) -> tuple[int, dict[str, int | None]]:
    """Vocabulary size and special ids of a tokenizer directory (read without the tokenizer module)."""
    p = Path(path)
    f = p / "tokenizer.json"
    if not f.is_file():
        raise K1Error(f"{p}: not a tokenizer directory (no tokenizer.json)")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(f))
    ids = {}
    cfg_file = p / "tokenizer_config.json"
    conf = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    for key in ("bos_token", "eos_token", "pad_token"):
        value = conf.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        ids[key.replace("_token", "_token_id")] = tok.token_to_id(value) if value else None
    return tok.get_vocab_size(with_added_tokens=True), ids


def run(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train as `cfg` says; with `resume`, continue from the latest checkpoint in cfg.out_dir."""
    if not cfg.tokenizer and (Path(cfg.model) / "tokenizer.json").is_file():
        # Continuing from a model directory: its own tokenizer travels on with every checkpoint.
        cfg = dataclasses.replace(cfg, tokenizer=cfg.model)
    d = parallel.init()
    try:
        return _run(cfg, d, resume, progress)
    finally:
        parallel.shutdown(d)


def _run(cfg: TrainConfig, d: parallel.Dist, resume: bool, progress: bool) -> TrainResult:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out_dir)
    ckpt_root = out / "checkpoints"
    if d.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")

    # Data and tokenizer first: every problem is reported before any compute is spent.
    data, val, data_vocab = DATA_FORMATS[cfg.data_format](cfg)

    tok_vocab, special = (None, {})
    if cfg.tokenizer:
        tok_vocab, special = _tokenizer_info(cfg.tokenizer)
    vocab_needed = tok_vocab or data_vocab
    model = build_model(cfg, vocab_needed)
    mcfg = model.config
    for name, v in (("tokenizer", tok_vocab), ("data", data_vocab)):
        if v and v > mcfg.vocab_size:
            raise K1Error(f"the {name}'s vocabulary ({v}) does not fit the model's vocab_size ({mcfg.vocab_size})")
    if hasattr(data, "max_token_id"):
        max_id = data.max_token_id()
    else:
        max_id = int(data.batch(0, min(cfg.batch_size, data.n))["input_ids"].max())
    if max_id >= mcfg.vocab_size:
        raise K1Error(f"{cfg.data}: token id {max_id} is outside the model's vocabulary ({mcfg.vocab_size})")
    if special and any(v is not None for v in special.values()):
        mcfg = dataclasses.replace(mcfg, **{k: v for k, v in special.items() if v is not None})
        model.config = mcfg

    model.to(d.device)
    moes = moe_modules(model)
    for _, m in moes:
        m.record_routing = True
    if cfg.compile:
        model.compile_blocks()  # before FSDP's wrapping: its hooks stay outside the compiled code
        if d.is_main:
            print("k1 train: compile = true: the first step compiles the decoder blocks (tens of seconds)",
                  file=sys.stderr)
    model = parallel.wrap(model, d)
    objective = get_objective(cfg.objective)
    # Fused AdamW: one kernel over all parameters instead of a loop of small ops and temporaries.
    # FSDP's sharded (DTensor) parameters take the multi-tensor path instead.
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                  **({"foreach": True} if d.enabled else {"fused": True}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s))

    start_step, history = 0, []
    if resume:
        found = latest_checkpoint(ckpt_root)
        if found is None:
            if d.is_main:
                print(f"k1 train: no checkpoint in {ckpt_root}; starting from step 0", file=sys.stderr)
        else:
            start_step, history = _restore(found, model, optimizer, scheduler, d, out)
    metrics_path = out / "metrics.jsonl"
    if d.is_main and not resume and metrics_path.exists():
        metrics_path.unlink()  # a fresh run does not append to an old run's curve

    autocast_dtype = torch.bfloat16 if cfg.precision == "bf16" else None
    peak = cfg.peak_tflops or measure_peak_tflops(autocast_dtype or torch.float32, d.device)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * d.world * cfg.seq_len
    flops_per_token = mcfg.flops_per_token(cfg.seq_len, training=True,
                                           include_mtp=bool(cfg.mtp_weight and mcfg.num_nextn_predict_layers))
    writer = _tensorboard(out / "tb") if d.is_main else None
    show = _Progress(cfg.max_steps, start_step, enabled=progress and d.is_main)
    load_window = {name: torch.zeros(m.cfg.n_routed_experts, device=d.device) for name, m in moes}
    last_val = next((h["val_loss"] for h in reversed(history) if "val_loss" in h), None)
    t_run = time.perf_counter()
    loss_value = float("nan")
    for step in range(start_step, cfg.max_steps):
        t0 = time.perf_counter()
        model.train()
        step_loads = {name: torch.zeros_like(v) for name, v in load_window.items()}
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            first = ((step * cfg.grad_accum + micro) * d.world + d.rank) * cfg.batch_size
            batch = {k: v.to(d.device) for k, v in data.batch(first, cfg.batch_size).items()}
            with torch.autocast(d.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                loss, metrics = objective(model, batch, mtp_weight=cfg.mtp_weight, **cfg.objective_options)
                if cfg.seq_aux_weight:
                    aux = sequence_balance_loss(moes, cfg.batch_size)
                    loss = loss + cfg.seq_aux_weight * aux
                    metrics["seq_aux"] = aux.item()
            (loss / cfg.grad_accum).backward()
            metrics["loss"] = loss.item()
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + v / cfg.grad_accum
            for name, m in moes:
                if m.last_routing is not None:
                    step_loads[name] += torch.bincount(m.last_routing[0].flatten(), minlength=len(step_loads[name]))
                    m.last_routing = None
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip else float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        _balance(moes, step_loads, cfg.balance_rate, d)
        for name in load_window:
            load_window[name] += step_loads[name]

        for k in totals:
            totals[k] = parallel.all_reduce(torch.tensor(totals[k]), d, "mean").item()
        loss_value = totals["loss"]
        dt = time.perf_counter() - t0
        record = {"step": step + 1, **{k: round(v, 6) for k, v in totals.items()},
                  "lr": optimizer.param_groups[0]["lr"], "grad_norm": float(grad_norm),
                  "tokens_per_s": tokens_per_step / dt, "mfu": flops_per_token * tokens_per_step / dt / (peak * 1e12)}
        last = step + 1 == cfg.max_steps
        if cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or last):
            last_val = evaluate(model, val, cfg, d, autocast_dtype)
            record["val_loss"] = last_val
            record.update(_load_stats(load_window))
            for name in load_window:
                load_window[name].zero_()
        history.append(record)
        if d.is_main:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if writer is not None:
                for k, v in record.items():
                    if isinstance(v, (int, float)) and k != "step":
                        writer.add_scalar(k, v, step + 1)
        show.update(step + 1, record, cfg.log_every)
        if (step + 1) % cfg.save_every == 0 or last:
            save_checkpoint(model, optimizer, scheduler, step + 1, ckpt_root, cfg, d)
    show.close()
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - t_run

    model_dir = out / "model"
    final = latest_checkpoint(ckpt_root)
    if d.is_main and final is not None:
        _export(final, model_dir)
        from k1 import report as run_report

        run_report.training_section(out, history, cfg, mcfg)
    parallel.barrier(d)
    return TrainResult(out, model_dir, cfg.max_steps, loss_value, last_val,
                       (cfg.max_steps - start_step) * tokens_per_step, seconds, history)


@torch.no_grad()
def evaluate(model, val, cfg: TrainConfig, d: parallel.Dist, autocast_dtype) -> float:
    """The objective's loss (without MTP) over the first eval_batches x ranks micro-batches of the
    validation set: the same examples at every evaluation."""
    objective = get_objective(cfg.objective)
    model.eval()
    total = torch.zeros((), device=d.device)
    n_batches = max(1, min(cfg.eval_batches, val.n // max(1, cfg.batch_size * d.world)))
    for b in range(n_batches):
        first = (b * d.world + d.rank) * cfg.batch_size
        batch = {k: v.to(d.device) for k, v in val.fixed_batch(first, cfg.batch_size).items()}
        with torch.autocast(d.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss, _ = objective(model, batch, mtp_weight=0.0, **cfg.objective_options)
        total += loss.float()
    parallel.all_reduce(total, d)
    model.train()
    return (total / (n_batches * d.world)).item()


def _balance(moes, loads: dict[str, torch.Tensor], rate: float, d: parallel.Dist) -> None:
    """Auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2): raise the bias of under-loaded experts,
    lower it for over-loaded ones, by a fixed step, from the load all ranks saw this step."""
    if not rate:
        return
    for name, m in moes:
        load = parallel.all_reduce(loads[name].float(), d)
        with torch.no_grad():
            m.gate.e_score_correction_bias += rate * torch.sign(load.mean() - load)


def _load_stats(window: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    if not window:
        return {}
    ratio, dead = [], []
    for load in window.values():
        mean = load.float().mean().clamp(min=1e-9)
        ratio.append(round((load.max() / mean).item(), 4))
        dead.append(int((load == 0).sum().item()))
    return {"expert_load_max_over_mean": ratio, "experts_never_chosen": dead}


def save_checkpoint(model, optimizer, scheduler, step: int, root: Path, cfg: TrainConfig, d: parallel.Dist) -> None:
    model_state, optim_state = parallel.full_state(model, optimizer)
    if d.is_main:
        train_state = {
            "step": step,
            "optimizer": optim_state,
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
            "world": d.world,
        }
        target = _step_dir(root, step)
        checkpoint.save(
            checkpoint.StateDictModel(model.config, model_state), target,
            tokenizer=cfg.tokenizer or None,
            write_extra=lambda tmp: torch.save(train_state, tmp / STATE_FILE),
        )
        atomic.write_text(root / LATEST, target.name + "\n")
        _prune(root, cfg.keep_last)
    parallel.barrier(d)


def _restore(found: Path, model, optimizer, scheduler, d: parallel.Dist, out: Path):
    loaded = checkpoint.load(found)
    if loaded.config.vocab_size != model.config.vocab_size or loaded.config.num_hidden_layers != model.config.num_hidden_layers:
        raise K1Error(f"{found}: checkpoint does not match the configured model; use a new out_dir or the same model")
    state = torch.load(found / STATE_FILE, map_location="cpu", weights_only=False)
    model_state = {k: v.float() if v.is_floating_point() else v for k, v in loaded.state_dict().items()}
    parallel.load_full_state(model, optimizer, model_state, state["optimizer"], d)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    step = int(state["step"])
    history = []
    metrics_path = out / "metrics.jsonl"
    if metrics_path.is_file():
        for line in metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if rec.get("step", 0) <= step:
                history.append(rec)
        if d.is_main:
            atomic.write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
    if d.is_main:
        print(f"k1 train: resuming from {found} (step {step})", file=sys.stderr)
    return step, history


def _export(src: Path, dst: Path) -> None:
    """The final model directory, without optimizer state, replaced atomically."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(STATE_FILE))
    atomic.replace_dir(tmp, dst)


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time; metrics.jsonl has everything
        return None
    return SummaryWriter(str(path))


class _Progress:
    """A live bar with loss, tokens/s, MFU and ETA on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.t0, self.start = time.perf_counter(), start
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, rec: dict, every: int) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(1, step - self.start) * (self.total - step)
        text = f"loss {rec['loss']:.4f} | {rec['tokens_per_s']:,.0f} tok/s | MFU {100 * rec['mfu']:.1f}%"
        if "val_loss" in rec:
            text += f" | val {rec['val_loss']:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % max(1, every) == 0 or step == self.total or "val_loss" in rec:
            print(f"step {step}/{self.total} | {text} | ETA {eta:.0f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


from k1 import sft as _sft  # noqa: E402, F401  (registers the "chat" data format; imports this module)
