"""Token shards: the pipeline's output and the training loop's input.

Writing (inside the pipeline): `ShardWriter` appends each document's token ids plus a separator (EOS)
to a buffer and flushes it as `shards/<split>-<task>-<index>.bin` (raw uint16, or uint32 when the vocabulary
has more than 65,536 entries) with a sidecar `.json` (documents, tokens, sha256). Both are written to a
temporary name and renamed, the sidecar last, so a shard without its sidecar is unfinished and is
never listed. `write_manifest` gathers the sidecars into `manifest.json`.

Reading (in training):

    from k1.data.shard import ShardDataset, read_manifest
    manifest = read_manifest("runs/data/manifest.json")     # validates sizes; K1Error names a bad file
    ds = ShardDataset("runs/data/manifest.json", "train")    # verify=True also checks every sha256
    len(ds), ds.num_tokens                                    # shards, tokens
    tokens = ds[0]                                            # np.memmap of one shard's token ids
    for window in ds.iter_windows(seq_len=2048): ...          # (seq_len + 1) token windows, in order

Documents inside a shard are separated by `manifest["separator_id"]`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from k1.errors import K1Error

MANIFEST_VERSION = 1
SPLITS = ("train", "validation")


# ----------------------------------------------------------------------------------------------
# tokenizer


@dataclass
class TokenizerInfo:
    tokenizer: object
    """A `tokenizers.Tokenizer` (or anything with encode_batch returning objects with .ids)."""
    vocab_size: int
    separator_id: int
    separator: str
    path: str
    sha256: str


def _special_from_config(tok_dir: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = tok_dir / name
        if f.is_file():
            eos = json.loads(f.read_text(encoding="utf-8")).get("eos_token")
            if isinstance(eos, dict):
                eos = eos.get("content")
            if eos:
                return eos
    return None


def load_tokenizer(tok_dir: str | Path, separator: str = "") -> TokenizerInfo:
    """Load a k1 tokenizer directory (a Hugging Face `tokenizer.json` inside): through
    `k1.tokenizer.load` when that module exists, else `tokenizers.Tokenizer.from_file`. The separator
    appended after each document is `separator` if given, else the directory's eos token."""
    tok_dir = Path(tok_dir)
    tj = tok_dir / "tokenizer.json"
    if not tj.is_file():
        raise K1Error(
            f"{tok_dir}: no tokenizer.json there; point [tokenize] tokenizer at a k1 tokenizer directory"
        )
    tok = None
    try:
        from k1 import tokenizer as k1_tokenizer  # written on another branch; optional here
    except ImportError:
        k1_tokenizer = None
    if k1_tokenizer is not None and hasattr(k1_tokenizer, "load"):
        loaded = k1_tokenizer.load(tok_dir)
        # The fast path needs the `tokenizers` object inside k1's wrapper: the variant that reads
        # "<|im_start|>"-like strings in a document as plain text, so corpus text can never forge
        # control tokens (chat roles, end of turn) in the training stream.
        for cand in (
            getattr(loaded, "_plain", None),
            getattr(loaded, "backend", None),
            loaded,
            getattr(loaded, "tokenizer", None),
            getattr(loaded, "_tokenizer", None),
        ):
            if cand is not None and hasattr(cand, "encode_batch") and hasattr(cand, "token_to_id"):
                tok = cand
                break
    if tok is None:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(tj))
        except Exception as err:
            raise K1Error(f"{tj}: cannot load tokenizer ({err})") from err
    sep = separator or _special_from_config(tok_dir) or ""
    if not sep:
        raise K1Error(
            f"{tok_dir}: no eos_token in tokenizer_config.json; set [tokenize] separator in the config"
        )
    sep_id = tok.token_to_id(sep)
    if sep_id is None:
        raise K1Error(
            f"{tok_dir}: separator token {sep!r} is not in the vocabulary; set [tokenize] separator"
        )
    digest = hashlib.sha256(tj.read_bytes()).hexdigest()
    return TokenizerInfo(tok, tok.get_vocab_size(with_added_tokens=True), sep_id, sep, str(tok_dir), digest)


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


# ----------------------------------------------------------------------------------------------
# writing


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shard_name(split: str, rank: int, index: int) -> str:
    return f"{split}-{rank:05d}-{index:05d}.bin"


def finished_shards(out_dir: Path, split: str, rank: int) -> list[dict]:
    """Sidecars of this task's finished shards, in order, stopping at the first gap or bad size."""
    out = []
    index = 0
    while True:
        side = out_dir / (shard_name(split, rank, index) + ".json")
        binf = out_dir / shard_name(split, rank, index)
        if not side.is_file() or not binf.is_file():
            return out
        meta = json.loads(side.read_text())
        if binf.stat().st_size != meta["bytes"]:
            return out
        out.append(meta)
        index += 1


class ShardWriter:
    """Buffers token ids of one split of one task and writes fixed-size shards.

    On a resumed task, shards already finished are kept: the writer is told how many documents they
    hold and skips that many documents (without tokenizing them) before writing anew."""

    def __init__(self, out_dir: Path, split: str, rank: int, dtype: np.dtype, shard_tokens: int):
        self.out_dir, self.split, self.rank, self.dtype = out_dir, split, rank, dtype
        self.shard_tokens = shard_tokens
        self.done = finished_shards(out_dir, split, rank)
        self.skip_docs = sum(m["documents"] for m in self.done)
        self.index = len(self.done)
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.docs = 0
        self.written_tokens = 0
        # Half-written leftovers of a killed run are never used; clear shards beyond the finished ones.
        for stale in out_dir.glob(f"{split}-{rank:05d}-*.bin*"):
            idx = int(stale.name.split("-")[2].split(".")[0])
            if idx >= self.index:
                stale.unlink()
        for tmp in out_dir.glob(f".tmp-{split}-{rank:05d}-*"):
            tmp.unlink()

    def wants(self) -> bool:
        """False while the document belongs to an already finished shard (resume)."""
        if self.skip_docs:
            self.skip_docs -= 1
            return False
        return True

    def add(self, ids: np.ndarray) -> None:
        self.buffer.append(ids)
        self.buffered += len(ids)
        self.docs += 1
        if self.buffered >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.docs:
            return
        data = np.concatenate(self.buffer).astype(self.dtype, copy=False)
        raw = data.tobytes()
        name = shard_name(self.split, self.rank, self.index)
        _atomic_write_bytes(self.out_dir / name, raw)
        meta = {
            "file": name,
            "split": self.split,
            "documents": self.docs,
            "tokens": int(len(data)),
            "bytes": len(raw),
            "dtype": self.dtype.name,
            "sha256": hashlib.sha256(raw).hexdigest(),
        }
        _atomic_write_bytes(self.out_dir / (name + ".json"), json.dumps(meta).encode())
        self.done.append(meta)
        self.written_tokens += len(data)
        self.index += 1
        self.buffer, self.buffered, self.docs = [], 0, 0


SHARD_DIR = "shards"


def write_manifest(out_dir: Path, tasks: int, info: TokenizerInfo, extra: dict) -> dict:
    """Collect every task's finished shards (in out_dir/shards) into out_dir/manifest.json, atomically."""
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        for rank in range(tasks):
            for m in finished_shards(out_dir / SHARD_DIR, split, rank):
                splits[split].append(
                    {**{k: v for k, v in m.items() if k != "split"}, "file": f"{SHARD_DIR}/{m['file']}"}
                )
    manifest = {
        "version": MANIFEST_VERSION,
        "dtype": dtype_for(info.vocab_size).name,
        "vocab_size": info.vocab_size,
        "separator": info.separator,
        "separator_id": info.separator_id,
        "tokenizer": {"path": info.path, "sha256": info.sha256},
        "splits": splits,
        "totals": {
            s: {
                "shards": len(v),
                "documents": sum(m["documents"] for m in v),
                "tokens": sum(m["tokens"] for m in v),
            }
            for s, v in splits.items()
        },
        **extra,
    }
    _atomic_write_bytes(
        out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False).encode()
    )
    return manifest


# ----------------------------------------------------------------------------------------------
# reading


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(manifest_path: str | Path, verify: bool = False) -> dict:
    """Load and check manifest.json: every shard exists with the size its dtype and token count imply
    (and, with verify=True, the recorded sha256). Raises K1Error naming the first bad file."""
    manifest_path = Path(manifest_path)
    if manifest_path.is_dir():
        manifest_path = manifest_path / "manifest.json"
    if not manifest_path.is_file():
        raise K1Error(f"{manifest_path}: no manifest; run `k1 data prepare` first")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise K1Error(f"{manifest_path}: corrupt manifest ({err}); rerun `k1 data prepare`") from err
    if (
        not isinstance(manifest, dict)
        or manifest.get("version") != MANIFEST_VERSION
        or "splits" not in manifest
    ):
        raise K1Error(f"{manifest_path}: not a k1 data manifest (version {MANIFEST_VERSION})")
    itemsize = np.dtype(manifest["dtype"]).itemsize
    root = manifest_path.parent
    for split, shards in manifest["splits"].items():
        for m in shards:
            f = root / m["file"]
            if not f.is_file():
                raise K1Error(f"{f}: shard listed in {manifest_path.name} ({split}) is missing")
            size = f.stat().st_size
            if size != m["tokens"] * itemsize or size != m["bytes"]:
                raise K1Error(f"{f}: shard is {size} bytes, manifest says {m['bytes']}: corrupt or truncated")
            if verify and _sha256_file(f) != m["sha256"]:
                raise K1Error(f"{f}: sha256 does not match the manifest: corrupt shard")
    return manifest


class ShardDataset:
    """The shards of one split as memory-mapped token arrays (no copy, any corpus size)."""

    def __init__(self, manifest_path: str | Path, split: str = "train", verify: bool = False):
        self.manifest = read_manifest(manifest_path, verify=verify)
        if split not in self.manifest["splits"]:
            raise K1Error(
                f"{manifest_path}: no split {split!r}; splits: {', '.join(self.manifest['splits'])}"
            )
        root = Path(manifest_path)
        self.root = root if root.is_dir() else root.parent
        self.split = split
        self.shards = self.manifest["splits"][split]
        self.dtype = np.dtype(self.manifest["dtype"])
        self.separator_id = self.manifest["separator_id"]

    def __len__(self) -> int:
        return len(self.shards)

    @property
    def num_tokens(self) -> int:
        return sum(m["tokens"] for m in self.shards)

    @property
    def num_documents(self) -> int:
        return sum(m["documents"] for m in self.shards)

    def __getitem__(self, i: int) -> np.ndarray:
        m = self.shards[i]
        if m["tokens"] == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.root / m["file"], dtype=self.dtype, mode="r", shape=(m["tokens"],))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def iter_windows(self, seq_len: int) -> Iterator[np.ndarray]:
        """Consecutive (seq_len + 1)-token windows across shard boundaries (inputs and shifted targets)."""
        carry = np.zeros(0, dtype=np.int64)
        for shard in self:
            buf = np.concatenate([carry, np.asarray(shard, dtype=np.int64)])
            n = (len(buf) - 1) // seq_len
            for k in range(n):
                yield buf[k * seq_len : (k + 1) * seq_len + 1]
            carry = buf[n * seq_len :]

    def documents(self, i: int) -> list[np.ndarray]:
        """The documents of shard i, split at the separator (separator dropped)."""
        arr = np.asarray(self[i])
        cuts = np.flatnonzero(arr == self.separator_id)
        out, start = [], 0
        for c in cuts:
            out.append(arr[start:c])
            start = c + 1
        return out


BYTE_EOS = "<|endoftext|>"


def write_byte_tokenizer(out_dir: str | Path) -> Path:
    """A byte-level tokenizer with no merges (256 byte tokens + <|endoftext|>): lets the pipeline run
    before any tokenizer is trained. Deterministic; written once (atomically) and reused."""
    out_dir = Path(out_dir)
    if (out_dir / "tokenizer.json").is_file() and (out_dir / "tokenizer_config.json").is_file():
        return out_dir
    from tokenizers import Tokenizer, decoders, models
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    vocab[BYTE_EOS] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = ByteLevel(add_prefix_space=False)  # GPT-2 word split keeps BPE linear
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BYTE_EOS])
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(out_dir / "tokenizer.json", tok.to_str().encode())
    _atomic_write_bytes(out_dir / "tokenizer_config.json", json.dumps({"eos_token": BYTE_EOS}).encode())
    return out_dir
