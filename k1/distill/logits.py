"""Logit capture: the teacher's top-k over a token stream, in compact shards the student trains on.

    k1 distill capture recipes/distill_demo.toml      # resumable: run it again after a stop

The token data is cut into the windows the training loop would cut (seq_len + 1 tokens, the same
train / validation split), and the teacher scores every training window once. Output, under
`<out_dir>/capture/`:

    manifest.json                 what was captured, by what, with the producing config; the list of
                                  finished shards (the resume point) and the capture's cost figures
    shard-00000.safetensors ...   per window: tokens (seq_len + 1), topk_ids (seq_len, k),
                                  topk_logprobs (seq_len, k; fp16 or bf16), leftover (seq_len; fp32)
    validation.safetensors        held-out windows (tokens only) for the student's validation loss

Each shard is written to a temporary file and renamed, then the manifest is replaced: a kill leaves
the manifest naming only complete shards. Running again with the same settings continues after the
last one; with other settings it stops and names the key that differs.

The "kd" data format (k1.train.DATA_FORMATS) reads a capture, or, with TrainConfig.teacher set,
runs a local teacher on each batch instead (online distillation).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from k1.distill.config import CaptureConfig, DistillConfig, TeacherConfig
from k1.distill.teachers import Teacher, check_same_tokenizer, load_teacher
from k1.errors import ConfigError, K1Error

FORMAT = "k1-kd-topk"
VERSION = 1
MANIFEST = "manifest.json"
VALIDATION = "validation.safetensors"
# Capture settings that change what the shards hold; a resumed capture must match them all.
SAME_KEYS = (
    "data",
    "val_data",
    "val_fraction",
    "seq_len",
    "top_k",
    "dtype",
    "temperature",
    "windows_per_shard",
)
TEACHER_KEYS = ("kind", "path", "model", "vocab_size", "fingerprint")
# Open shard files kept around while sampling windows at random.
OPEN_SHARDS = 16


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _id_dtype(vocab: int) -> torch.dtype:
    return torch.uint16 if vocab <= 1 << 16 else torch.int32


def token_windows(c: CaptureConfig, seed: int = 0):
    """(train, validation) TokenWindows over the capture's data, split as the training loop splits it."""
    from k1.train import TrainConfig, token_sources

    cfg = TrainConfig(
        data=c.data, val_data=c.val_data, val_fraction=c.val_fraction, seq_len=c.seq_len, seed=seed
    )
    train, val, _ = token_sources(cfg)
    return train, val


def _data_tokenizer(data: str) -> str | None:
    """The tokenizer directory a `k1 data prepare` manifest names, when it still exists."""
    p = Path(data)
    p = p / "manifest.json" if p.is_dir() else p
    if p.suffix != ".json" or not p.is_file():
        return None
    try:
        tok = json.loads(p.read_text(encoding="utf-8")).get("tokenizer") or {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    path = tok.get("path") if isinstance(tok, dict) else None
    return path if path and Path(path).is_dir() else None


def read_manifest(capture_dir: str | Path) -> dict:
    p = Path(capture_dir)
    f = p / MANIFEST if p.is_dir() else p
    if not f.is_file():
        raise K1Error(f"{p}: not a capture directory (no {MANIFEST}); make one with `k1 distill capture`")
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise K1Error(f"{f}: not valid JSON ({err})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise K1Error(f"{f}: not a k1 logit capture (format {FORMAT!r}); make one with `k1 distill capture`")
    return m


def _check_resumable(old: dict, settings: dict, teacher: dict, out: Path) -> None:
    for key in SAME_KEYS:
        if old["settings"].get(key) != settings.get(key):
            raise K1Error(
                f"{out} holds a capture made with capture.{key} = {old['settings'].get(key)!r}, not "
                f"{settings.get(key)!r}: use another out_dir, or --overwrite to start again"
            )
    for key in TEACHER_KEYS:
        if old["teacher"].get(key) != teacher.get(key):
            raise K1Error(
                f"{out} holds a capture from another teacher ({key}: {old['teacher'].get(key)!r} vs "
                f"{teacher.get(key)!r}): use another out_dir, or --overwrite to start again"
            )


class _Progress:
    def __init__(self, total: int, done: int, what: str, enabled: bool = True):
        self.total, self.done, self.what = total, done, what
        self.enabled = enabled
        self.t0, self.start = time.perf_counter(), done
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=done, desc=what, unit="win", dynamic_ncols=True, file=sys.stderr
            )
        self.last = 0.0

    def update(self, done: int, tokens_per_s: float) -> None:
        self.done = done
        if self.bar is not None:
            self.bar.set_postfix_str(f"{tokens_per_s:,.0f} tok/s", refresh=False)
            self.bar.update(done - self.bar.n)
        elif self.enabled and (time.perf_counter() - self.last > 10 or done == self.total):
            self.last = time.perf_counter()
            print(
                f"{self.what}: {done}/{self.total} windows | {tokens_per_s:,.0f} tok/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def capture(
    cfg: DistillConfig, teacher: Teacher | None = None, overwrite: bool = False, progress: bool = True
) -> dict:
    """Capture the teacher's top-k over cfg.capture.data into <out_dir>/capture; returns the manifest."""
    c = cfg.capture
    if not c.data:
        raise ConfigError(f"{cfg.source}: capture.data is empty: the token data to run the teacher over")
    out = Path(cfg.out_dir) / "capture"
    train, val = token_windows(c)
    teacher = teacher or load_teacher(cfg.teacher)
    info = teacher.describe()
    data_tok = _data_tokenizer(c.data)
    if data_tok and info.get("fingerprint"):
        from k1.distill.teachers import tokenizer_fingerprint

        got = tokenizer_fingerprint(data_tok)
        if got is not None and got[0] != info["fingerprint"]:
            raise K1Error(
                f"{c.data} was tokenized with {data_tok} ({got[1]} tokens), not with the teacher's tokenizer "
                f"({info.get('tokenizer')}, {info.get('tokenizer_size')} tokens): tokenize it with the teacher's"
            )
    limit = info.get("tokenizer_size") or info.get("vocab_size")
    target = train.n if not c.max_windows else min(train.n, c.max_windows)
    settings = {k: getattr(c, k) for k in SAME_KEYS}

    if overwrite and out.exists():
        trash = out.with_name(f".{out.name}.trash-{os.getpid()}")
        os.replace(out, trash)
        shutil.rmtree(trash, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        _check_resumable(manifest, settings, info, out)
    else:
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "settings": settings,
            "teacher": info,
            "windows_in_data": train.n,
            "shards": [],
            "complete": False,
        }
    manifest.update(config=cfg.to_dict(), target_windows=target)

    if not (out / VALIDATION).is_file():
        m = min(val.n, c.val_windows)
        rows = (
            np.stack([val.window(i).astype(np.int64) for i in range(m)])
            if m
            else np.zeros((0, c.seq_len + 1))
        )
        _save_tensors(out / VALIDATION, {"tokens": torch.from_numpy(rows).to(torch.int32)})
        manifest["validation_windows"] = m
    _write_json(out / MANIFEST, _with_stats(manifest, c))

    done = sum(s["windows"] for s in manifest["shards"])
    show = _Progress(target, done, "capture", progress)
    t_session = time.perf_counter()
    tokens_session = 0
    id_dtype = _id_dtype(max(limit or 0, 1))
    value_dtype = torch.float16 if c.dtype == "fp16" else torch.bfloat16
    try:
        while done < target:
            count = min(c.windows_per_shard, target - done)
            t0 = time.perf_counter()
            parts = {"tokens": [], "topk_ids": [], "topk_logprobs": [], "leftover": []}
            for start in range(done, done + count, c.batch_size):
                stop = min(done + count, start + c.batch_size)
                windows = np.stack([train.window(w).astype(np.int64) for w in range(start, stop)])
                if limit and int(windows.max()) >= limit:
                    raise K1Error(
                        f"{c.data}: token id {int(windows.max())} is outside the teacher's vocabulary "
                        f"({limit}); the data was tokenized with another tokenizer"
                    )
                top = teacher.top_k(windows, c.top_k, c.temperature, limit)
                parts["tokens"].append(torch.from_numpy(windows))
                parts["topk_ids"].append(torch.from_numpy(top.ids))
                # fp16 cannot hold log-probs below -65504; -inf (padding) stays -inf.
                lp = torch.from_numpy(top.logprobs)
                parts["topk_logprobs"].append(torch.where(torch.isneginf(lp), lp, lp.clamp(min=-6e4)))
                parts["leftover"].append(torch.from_numpy(top.leftover))
                tokens_session += (stop - start) * c.seq_len
                show.update(stop, tokens_session / max(1e-9, time.perf_counter() - t_session))
            tensors = {
                "tokens": torch.cat(parts["tokens"]).to(
                    id_dtype if id_dtype == torch.uint16 else torch.int32
                ),
                "topk_ids": torch.cat(parts["topk_ids"]).to(id_dtype),
                "topk_logprobs": torch.cat(parts["topk_logprobs"]).to(value_dtype),
                "leftover": torch.cat(parts["leftover"]).float(),
            }
            name = f"shard-{len(manifest['shards']):05d}.safetensors"
            _save_tensors(out / name, tensors, {"first_window": str(done)})
            seconds = time.perf_counter() - t0
            manifest["shards"].append(
                {
                    "file": name,
                    "first": done,
                    "windows": count,
                    "bytes": (out / name).stat().st_size,
                    "seconds": round(seconds, 4),
                    "max_id": int(max(int(x.max()) for x in parts["topk_ids"])),
                }
            )
            done += count
            manifest["complete"] = done >= target
            _write_json(out / MANIFEST, _with_stats(manifest, c))
    finally:
        show.close()
    manifest["complete"] = True
    manifest = _with_stats(manifest, c)
    _write_json(out / MANIFEST, manifest)
    return manifest


def _with_stats(manifest: dict, c: CaptureConfig) -> dict:
    shards = manifest["shards"]
    windows = sum(s["windows"] for s in shards)
    tokens = windows * c.seq_len
    seconds = sum(s["seconds"] for s in shards)
    size = sum(s["bytes"] for s in shards)
    manifest["stats"] = {
        "windows": windows,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "seconds_per_1k_tokens": round(1000 * seconds / tokens, 5) if tokens else None,
        "bytes": size,
        "bytes_per_token": round(size / tokens, 2) if tokens else None,
    }
    return manifest


# ------------------------------------------------------------------------------------- reading


class CapturedWindows:
    """Training samples from a capture: window perm_epoch[g mod n] as in k1.train.TokenWindows, with
    the teacher's top-k for each of its positions."""

    def __init__(self, capture_dir: str | Path, seed: int):
        self.dir = Path(capture_dir)
        self.manifest = read_manifest(self.dir)
        self.shards = self.manifest["shards"]
        self.starts = np.array([s["first"] for s in self.shards] + [sum(s["windows"] for s in self.shards)])
        self.n = int(self.starts[-1])
        self.seed = seed
        self._perm: tuple[int, np.ndarray] | None = None
        self._open: OrderedDict[str, object] = OrderedDict()
        for s in self.shards:
            if not (self.dir / s["file"]).is_file():
                raise K1Error(f"{self.dir / s['file']}: listed in {MANIFEST} but missing; capture again")

    def _file(self, name: str):
        from safetensors import SafetensorError, safe_open

        f = self._open.get(name)
        if f is None:
            try:
                f = safe_open(str(self.dir / name), framework="pt")
            except (SafetensorError, OSError) as err:
                raise K1Error(f"{self.dir / name}: unreadable shard ({err}); capture again") from None
            self._open[name] = f
            if len(self._open) > OPEN_SHARDS:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(name)
        return f

    def window(self, w: int) -> dict[str, torch.Tensor]:
        s = int(np.searchsorted(self.starts, w, side="right") - 1)
        f, i = self._file(self.shards[s]["file"]), w - int(self.starts[s])
        return {k: f.get_slice(k)[i : i + 1] for k in ("tokens", "topk_ids", "topk_logprobs", "leftover")}

    def _stack(self, windows: list[int]) -> dict[str, torch.Tensor]:
        rows = [self.window(w) for w in windows]
        return {
            "input_ids": torch.cat([r["tokens"] for r in rows]).to(torch.int64),
            "teacher_ids": torch.cat([r["topk_ids"] for r in rows]).to(torch.int64),
            "teacher_logprobs": torch.cat([r["topk_logprobs"] for r in rows]),
            "teacher_leftover": torch.cat([r["leftover"] for r in rows]),
        }

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        out = []
        for g in range(first, first + count):
            epoch, i = divmod(g, self.n)
            if self._perm is None or self._perm[0] != epoch:
                self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
            out.append(int(self._perm[1][i]))
        return self._stack(out)

    def fixed_batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        return self._stack([(first + j) % self.n for j in range(count)])

    def max_token_id(self) -> int:
        return max(
            int(self._file(s["file"]).get_slice("tokens")[:].to(torch.int64).max()) for s in self.shards[:4]
        )


class OnlineTeacherWindows:
    """Token windows with the teacher's top-k computed on the fly (online distillation)."""

    def __init__(self, base, teacher: Teacher, k: int, temperature: float, limit: int | None):
        self.base, self.teacher, self.k, self.temperature, self.limit = base, teacher, k, temperature, limit
        self.n = base.n

    def _with_teacher(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        top = self.teacher.top_k(b["input_ids"].numpy(), self.k, self.temperature, self.limit)
        return {
            **b,
            "teacher_ids": torch.from_numpy(top.ids),
            "teacher_logprobs": torch.from_numpy(top.logprobs),
            "teacher_leftover": torch.from_numpy(top.leftover),
        }

    def batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        return self._with_teacher(self.base.batch(first, count))

    def fixed_batch(self, first: int, count: int) -> dict[str, torch.Tensor]:
        return self._with_teacher(self.base.fixed_batch(first, count))

    def max_token_id(self) -> int:
        return self.base.max_token_id()


def _student_tokenizer(cfg) -> str | None:
    if cfg.tokenizer:
        return cfg.tokenizer
    if Path(cfg.model).is_dir() and (Path(cfg.model) / "tokenizer.json").is_file():
        return cfg.model
    return None


def _student_vocab(cfg) -> int | None:
    if Path(cfg.model).is_dir():
        try:
            return int(
                json.loads((Path(cfg.model) / "config.json").read_text(encoding="utf-8"))["vocab_size"]
            )
        except (OSError, KeyError, ValueError, TypeError):
            return None
    v = cfg.model_overrides.get("vocab_size")
    return int(v) if v else None


def kd_sources(cfg):
    """The "kd" data format: (train, validation, vocabulary size) for k1.train.run.

    Offline (cfg.teacher empty): `data` is a capture directory. Online: `data` is token data and
    cfg.teacher a local model directory scored on every batch."""
    from k1.train import TokenWindows, open_tokens, token_sources

    temperature = float(cfg.objective_options.get("temperature", 1.0))
    if cfg.teacher:
        if cfg.teacher.startswith(("http://", "https://")):
            raise K1Error(
                "online distillation runs a local teacher; capture from an endpoint first "
                "(`k1 distill capture`) and train on the capture"
            )
        teacher = load_teacher(TeacherConfig(path=cfg.teacher))
        info = teacher.describe()
        check_same_tokenizer(info, _student_tokenizer(cfg), _student_vocab(cfg))
        train, val, vocab = token_sources(cfg)
        limit = info.get("tokenizer_size") or info.get("vocab_size")
        return (
            OnlineTeacherWindows(train, teacher, cfg.teacher_top_k, temperature, limit),
            val,
            limit or vocab,
        )

    manifest = read_manifest(cfg.data)
    s = manifest["settings"]
    if not manifest.get("complete"):
        done = sum(x["windows"] for x in manifest["shards"])
        raise K1Error(
            f"{cfg.data}: the capture is unfinished ({done} of {manifest.get('target_windows')} windows); "
            "run `k1 distill capture` again to finish it"
        )
    if cfg.seq_len != s["seq_len"]:
        raise ConfigError(
            f"seq_len {cfg.seq_len}: the capture in {cfg.data} has windows of seq_len {s['seq_len']}"
        )
    if abs(temperature - s["temperature"]) > 1e-9:
        raise ConfigError(
            f"objective temperature {temperature} differs from the capture's ({s['temperature']}); "
            "the teacher is stored at its temperature: use the same one, or capture again"
        )
    check_same_tokenizer(manifest["teacher"], _student_tokenizer(cfg), _student_vocab(cfg))
    train = CapturedWindows(cfg.data, cfg.seed)
    if cfg.val_data:
        val = TokenWindows(
            open_tokens(cfg.val_data, "validation")[0], cfg.seq_len, cfg.seed + 1, cfg.val_data
        )
    else:
        from safetensors import safe_open

        with safe_open(str(Path(cfg.data) / VALIDATION), framework="pt") as f:
            rows = f.get_tensor("tokens").numpy()
        if len(rows) == 0:
            raise K1Error(f"{cfg.data}: the capture holds no validation windows; set val_data")
        val = TokenWindows(list(rows), cfg.seq_len, cfg.seed + 1, str(Path(cfg.data) / VALIDATION))
    t = manifest["teacher"]
    return train, val, t.get("tokenizer_size") or t.get("vocab_size")
