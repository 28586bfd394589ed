"""Settings of a distillation job: one TOML file (recipes/distill_demo.toml), one table per part.

    out_dir, method ("logit" | "sequence"), online        top level
    [teacher]   who teaches: a k1 or transformers directory, or an OpenAI-compatible endpoint
    [capture]   logit distillation: which tokens, top k, value dtype, shard size
    [generate]  sequence-level distillation: prompts, modes, samples, verifier, selection
    [kd]        the loss: forward_kl | reverse_kl | jsd, temperature, ce_weight, beta, chunk
    [train]     any k1.train.TrainConfig key for the student ([train.model] picks its size)

Unknown keys are rejected with the valid ones; `--set table.key=value` overrides any of them.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from k1.errors import ConfigError, K1Error, did_you_mean

METHODS = ("logit", "sequence")
MODES = ("think", "non_think")
VALUE_DTYPES = ("fp16", "bf16")
SELECTIONS = ("per_mode", "overall")
MAX_TOP_K = 1024


@dataclass
class TeacherConfig:
    path: str = ""
    """A k1 model directory, a transformers causal-LM directory, or an endpoint's base URL (.../v1)."""
    kind: str = "auto"
    """k1 | hf | openai; auto: a URL is openai, an A.X K1 directory k1, another model directory hf."""
    model: str = ""
    """Endpoint: the served model's name (the `model` field of each request)."""
    tokenizer: str = ""
    """The teacher's tokenizer directory, when the teacher's own directory has none (endpoints)."""
    allowed_hosts: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])
    """Endpoint hosts data may be sent to ("*.corp.example" matches subdomains); loopback by default."""
    api_key_env: str = ""
    """Name of the environment variable that holds the endpoint's API key (never the key itself)."""
    concurrency: int = 4
    """Endpoint requests in flight at once."""
    max_retries: int = 6
    """Retries per request on 429 / 5xx / timeouts, with exponential backoff and jitter."""
    timeout_s: float = 120.0
    """Seconds before one request is given up (and retried)."""
    device: str = "auto"
    """Local teachers: cpu, cuda, cuda:N; auto: the GPU when there is one."""
    dtype: str = "auto"
    """Local teachers: float32 | bfloat16 | float16; auto: bfloat16 on a GPU, float32 on a CPU."""


@dataclass
class CaptureConfig:
    data: str = ""
    """Token data to run the teacher over: a `k1 data prepare` manifest, or a .npy array of token ids."""
    val_data: str = ""
    """Validation tokens (same forms); empty: the manifest's validation split, or val_fraction of data."""
    val_fraction: float = 0.05
    """Share of windows held out when data has no validation split (never shown to the teacher)."""
    seq_len: int = 256
    """Tokens per window (the student trains on the same windows)."""
    top_k: int = 32
    """Teacher tokens kept per position; the rest is one leftover-mass bucket."""
    dtype: str = "fp16"
    """Storage of the teacher's log-probs: fp16 (more precise) or bf16 (wider range)."""
    temperature: float = 1.0
    """Teacher softmax temperature; the [kd] temperature must equal it."""
    batch_size: int = 8
    """Windows per teacher call (local teachers) or requests per round (endpoints)."""
    max_windows: int = 0
    """Capture at most this many windows (0: all of the training split)."""
    windows_per_shard: int = 512
    """Windows per shard file: the unit of resuming."""
    val_windows: int = 256
    """Validation windows stored with the capture (tokens only), so training needs only the capture."""


@dataclass
class GenerateConfig:
    prompts: str = "synth:arithmetic"
    """synth:<task> (k1.synth, with n, seed, levels) or a .jsonl of {id, messages | question, answer | tests}."""
    n: int = 200
    """synth: problems to generate."""
    levels: str = "1..4"
    """synth: difficulty levels."""
    seed: int = 0
    """synth problems and sampling."""
    modes: list[str] = field(default_factory=lambda: list(MODES))
    """Think / non-think: which modes the teacher answers in."""
    samples: int = 2
    """Answers per prompt and mode (the shortest correct one is kept)."""
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    batch_size: int = 16
    """Local teachers: prompts per generation batch."""
    verifier: str = "auto"
    """auto | math | code | none (auto: math when a record has an integer answer, code when it has tests)."""
    select: str = "per_mode"
    """per_mode: the shortest correct answer per prompt in each mode; overall: one per prompt."""
    code_timeout_s: float = 5.0
    """code verifier: seconds per test run."""


@dataclass
class KDConfig:
    loss: str = "forward_kl"
    """forward_kl | reverse_kl | jsd (k1.objectives.KD_LOSSES)."""
    temperature: float = 1.0
    """Softmax temperature of both sides; the loss is scaled by temperature^2."""
    ce_weight: float = 0.5
    """Weight of the cross-entropy on the real next token; 1 - ce_weight goes to the distillation loss."""
    beta: float = 0.5
    """jsd: the mixture weight of the teacher (0.5: Jensen-Shannon)."""
    chunk: int = 0
    """Target rows whose logits the loss holds at once (k1.objectives.linear_kd); 0: about 64 MiB of them."""


@dataclass
class DistillConfig:
    out_dir: str = "runs/distill"
    """capture/, sequence/, student/ and distill.md go here."""
    method: str = "logit"
    """logit: top-k logit distillation (same tokenizer); sequence: the teacher's verified answers (any tokenizer)."""
    online: bool = False
    """logit: run the teacher in the training process on every batch instead of capturing first."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig keys for the student ([train] and [train.model] tables)."""
    source: str = "config"

    @classmethod
    def from_toml(cls, path: str | os.PathLike, overrides: list[str] | None = None) -> DistillConfig:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise K1Error(f"{path}: no such config file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise K1Error(f"{path}: invalid TOML ({err})") from None
        return cls.from_dict(raw, source=str(path), overrides=overrides)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], source: str = "config", overrides: list[str] | None = None
    ) -> DistillConfig:
        from k1.train import _parse_value

        raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
        for item in overrides or []:
            key, sep, text = item.partition("=")
            if not sep:
                raise ConfigError(f"--set {item!r}: expected key=value (table.key=value for a table)")
            *tables, leaf = key.split(".")
            target = raw
            for t in tables:
                target = target.setdefault(t, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"--set {item!r}: {t} is not a table")
            target[leaf] = _parse_value(text)
        tables = {
            "teacher": TeacherConfig,
            "capture": CaptureConfig,
            "generate": GenerateConfig,
            "kd": KDConfig,
        }
        top = [f.name for f in fields(cls) if f.name != "source"]
        values: dict[str, Any] = {"source": source}
        for key, value in raw.items():
            if key not in top:
                raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean(key, top)}")
            if key in tables:
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: {key} must be a table ([{key}])")
                valid = [f.name for f in fields(tables[key])]
                for k in value:
                    if k not in valid:
                        raise ConfigError(f"{source}: unknown key {key}.{k}{did_you_mean(k, valid)}")
                values[key] = tables[key](**value)
            elif key == "train":
                if not isinstance(value, dict):
                    raise ConfigError(f"{source}: train must be a table ([train])")
                values[key] = value
            else:
                values[key] = value
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"{self.source}: {msg}")

        from k1.objectives import KD_LOSSES

        need(self.method in METHODS, f"method {self.method!r}; valid: {', '.join(METHODS)}")
        t, c, g, kd = self.teacher, self.capture, self.generate, self.kd
        need(bool(t.path), "teacher.path is empty: a model directory or an endpoint URL")
        need(
            t.kind in ("auto", "k1", "hf", "openai"), f"teacher.kind {t.kind!r}; valid: auto, hf, k1, openai"
        )
        need(isinstance(t.allowed_hosts, list), "teacher.allowed_hosts must be a list of host names")
        need(c.top_k >= 1 and c.top_k <= MAX_TOP_K, f"capture.top_k must be in 1..{MAX_TOP_K}")
        need(c.dtype in VALUE_DTYPES, f"capture.dtype {c.dtype!r}; valid: {', '.join(VALUE_DTYPES)}")
        need(
            c.seq_len > 1 and c.batch_size > 0 and c.windows_per_shard > 0,
            "capture.seq_len > 1, batch_size and windows_per_shard > 0",
        )
        need(c.temperature > 0 and kd.temperature > 0, "temperatures must be positive")
        need(c.max_windows >= 0 and c.val_windows >= 0, "capture.max_windows and val_windows must be >= 0")
        need(0 < c.val_fraction < 1, "capture.val_fraction must be in (0, 1)")
        need(kd.loss in KD_LOSSES, f"kd.loss {kd.loss!r}{did_you_mean(kd.loss, list(KD_LOSSES))}")
        need(0 <= kd.ce_weight <= 1, "kd.ce_weight must be in [0, 1]")
        need(0 < kd.beta < 1, "kd.beta must be in (0, 1) (use forward_kl / reverse_kl for the ends)")
        need(kd.chunk >= 0, "kd.chunk must be >= 0 (0: automatic)")
        need(
            bool(g.modes) and all(m in MODES for m in g.modes),
            f"generate.modes: a list of {', '.join(MODES)}",
        )
        need(
            g.samples >= 1 and g.max_new_tokens >= 1 and g.batch_size >= 1,
            "generate.samples, max_new_tokens, batch_size >= 1",
        )
        need(g.select in SELECTIONS, f"generate.select {g.select!r}; valid: {', '.join(SELECTIONS)}")
        need(g.temperature >= 0 and 0 < g.top_p <= 1, "generate.temperature >= 0 and 0 < top_p <= 1")
        if self.method == "logit" and not self.online:
            need(
                c.temperature == kd.temperature,
                f"kd.temperature {kd.temperature} differs from capture.temperature {c.temperature}: the "
                "capture stores the teacher at its temperature; set both the same",
            )
        reserved = {"data", "data_format", "objective", "objective_options", "teacher", "teacher_top_k"}
        for key in self.train:
            need(
                key not in reserved,
                f"train.{key} is set by distill (from [capture] / [generate] / [kd]); remove it",
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return d
