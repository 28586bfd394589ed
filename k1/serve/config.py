"""Settings of `k1 serve`: a dataclass, a TOML file a user can copy (recipes/serve.toml), CLI overrides."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from k1.config import QUANTIZATION_MODES
from k1.errors import ConfigError, did_you_mean

from . import limits


def default_keys_path() -> str:
    return os.environ.get("K1_KEYS", str(Path.home() / ".k1" / "keys.sqlite"))


@dataclass
class ServeConfig:
    model: str = ""
    """Model directory (Hugging Face A.X K1 layout with tokenizer files)."""
    model_name: str = ""
    """Name clients put in `model`; empty: the directory's name."""
    host: str = "127.0.0.1"
    """Interface to bind. Only this machine by default; put a TLS proxy in front before opening it up."""
    port: int = 8000
    keys: str = ""
    """API key store (SQLite); empty: $K1_KEYS or ~/.k1/keys.sqlite."""
    audit: str = "audit.jsonl"
    """Audit log (hash-chained JSONL); one line per request."""
    audit_text: bool = False
    """Also log prompt and output text (PII-scrubbed). Off: only ids, counts, times and status."""
    max_seqs: int = limits.DEFAULT_MAX_SEQS
    """Sequences decoded at once (latent-cache slots)."""
    max_context: int = 0
    """Prompt + output tokens per sequence; 0: the model's max_position_embeddings."""
    max_queue: int = limits.DEFAULT_MAX_QUEUE
    """Requests waiting for a slot; beyond it the server answers 503 with Retry-After."""
    max_tokens: int = limits.DEFAULT_MAX_TOKENS
    """Largest max_tokens a request may ask for (and the default for chat)."""
    max_thinking_tokens: int = limits.DEFAULT_MAX_THINKING_TOKENS
    """Reasoning cap when a request sets none (0: no reasoning; the think block is closed at once)."""
    enable_thinking: bool = True
    """Default of chat_template_kwargs.enable_thinking."""
    speculative: str = "auto"
    """auto: MTP speculative decoding when the model has MTP weights; off; mtp: require it."""
    spec_max_batch: int = 2
    """Speculate only while at most this many sequences run (0: always); raise it on a GPU, where a
    step stays bound by weight reads up to larger batches (measure with bench/serve_speed.py)."""
    dtype: str = ""
    """Weights dtype (float32, bfloat16); empty: as stored."""
    quantize: str = ""
    """Weight-only quantization: "int8" (half the memory of bf16 weights, faster decoding on a
    CPU, outputs within a stated tolerance); empty: none."""
    pack_weights: bool = True
    """bf16 weights on a CPU: keep a second copy packed for oneDNN (decode steps of several
    sequences faster, at the weights' memory again; docs/model.md). No effect on other dtypes,
    int8 or a GPU."""
    device: str = "cpu"
    threads: int = 0
    """torch CPU threads; 0: torch's default."""

    def validate(self) -> None:
        if not self.model:
            raise ConfigError("no model directory given: `k1 serve MODEL_DIR`")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not in 1..65535")
        if self.max_seqs < 1 or self.max_queue < 0 or self.max_tokens < 1 or self.max_context < 0:
            raise ConfigError("need max_seqs >= 1, max_queue >= 0, max_tokens >= 1, max_context >= 0")
        if self.spec_max_batch < 0:
            raise ConfigError("spec_max_batch must be >= 0 (0: speculate at any batch size)")
        if self.max_thinking_tokens < 0:
            raise ConfigError("max_thinking_tokens must be >= 0")
        if self.quantize and self.quantize not in QUANTIZATION_MODES:
            raise ConfigError(f"quantize {self.quantize!r}{did_you_mean(self.quantize, QUANTIZATION_MODES)} (or empty: none)")
        if self.speculative not in ("auto", "off", "mtp"):
            raise ConfigError(
                f"speculative {self.speculative!r}{did_you_mean(self.speculative, ['auto', 'off', 'mtp'])}"
            )

    @property
    def keys_path(self) -> str:
        return self.keys or default_keys_path()

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> ServeConfig:
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in raw:
            if key not in valid:
                raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean(key, valid)}")
        return cls(**raw)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> ServeConfig:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: cannot read serve config ({err})") from None
        return cls.from_dict(raw.get("serve", raw), source=str(path))
