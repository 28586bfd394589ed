"""Append-only, hash-chained audit log of every request the server answers (JSONL).

Each line is one JSON object; its `hash` is SHA-256 over the line's other fields (canonical JSON),
and its `prev` is the previous line's hash (64 zeros for the first), with a `seq` that counts up
from 0. Changing, inserting, reordering or deleting a line breaks the chain at that line:

    k1 audit verify runs/serve/audit.jsonl      # ok: 1532 lines, head 3f9a...  / line 17: ...

Lines are written with one write() and fsync'd, so a kill in mid-write can only leave a torn last
line; `verify` accepts a log up to its last whole line and reports the torn tail, and a server
that reopens the log cuts the torn tail off and records that it did (with the dropped bytes' hash).

What the chain cannot show is a log cut off at a line boundary, or rewritten from some line on by
someone who recomputes every later hash: compare the head hash `verify` prints (also on /metrics)
with a copy kept elsewhere. Prompt and output text are logged only when the server is started
with --audit-text, and then after the data pipeline's PII scrubber (k1.data.scrub).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from k1.errors import K1Error

GENESIS = "0" * 64
_TAIL_BLOCK = 1 << 16


def canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def line_hash(record: dict) -> str:
    """Hash of a record without its own `hash` field (it includes `prev`, which makes the chain)."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def redact(text: str) -> str:
    from k1.data.pii import scrub

    return scrub(text)[0]


@dataclass
class Verification:
    ok: bool
    lines: int
    """Whole lines that verified."""
    head: str
    """Hash of the last good line (GENESIS for an empty log)."""
    bad_line: int | None = None
    """1-based number of the first line that does not verify."""
    reason: str = ""
    torn_bytes: int = 0
    """Bytes after the last newline (an interrupted write)."""

    def summary(self, path: str | os.PathLike) -> str:
        torn = (
            f"; ignored a torn last line of {self.torn_bytes} bytes (interrupted write)"
            if self.torn_bytes
            else ""
        )
        if self.ok:
            return f"ok: {path}: {self.lines} lines, head {self.head}{torn}"
        return f"{path}:{self.bad_line}: {self.reason} (lines 1-{self.lines} verify){torn}"


def verify(path: str | os.PathLike) -> Verification:
    """Check the whole chain; point at the first line that breaks it."""
    path = Path(path)
    if not path.is_file():
        raise K1Error(f"{path}: no audit log here; give the file `k1 serve --audit` writes")
    prev, seq, good = GENESIS, 0, 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                return Verification(True, good, prev, torn_bytes=len(raw))
            try:
                record = json.loads(raw.decode("utf-8"))
            except ValueError:
                return Verification(False, good, prev, number, "not a JSON line")
            if not isinstance(record, dict) or not isinstance(record.get("hash"), str):
                return Verification(False, good, prev, number, "no hash field")
            if record.get("prev") != prev:
                return Verification(
                    False,
                    good,
                    prev,
                    number,
                    "prev does not match the previous line's hash (a line was removed, inserted or reordered)",
                )
            if record.get("seq") != seq:
                return Verification(
                    False, good, prev, number, f"seq is {record.get('seq')!r}, expected {seq}"
                )
            if line_hash(record) != record["hash"]:
                return Verification(False, good, prev, number, "hash mismatch (the line was changed)")
            prev, seq, good = record["hash"], seq + 1, good + 1
    return Verification(True, good, prev)


def _last_line(f, size: int) -> tuple[bytes, int]:
    """(last whole line, bytes after it) of a file open for reading, reading backwards in blocks."""
    pos, buf = size, b""
    while pos > 0:
        step = min(_TAIL_BLOCK, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        end = buf.rfind(b"\n")
        if end < 0:
            continue
        start = buf.rfind(b"\n", 0, end)
        if start >= 0 or pos == 0:
            torn = len(buf) - end - 1
            return buf[start + 1 : end + 1], torn
    return b"", len(buf)


class AuditLog:
    """The writer: one process appends; lines are whole, chained and fsync'd."""

    def __init__(self, path: str | os.PathLike, text: bool = False):
        self.path = Path(path)
        self.text = text
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        size = os.fstat(self._fd).st_size
        with open(self.path, "rb") as f:
            last, torn = _last_line(f, size)
        self.prev, self.seq = GENESIS, 0
        if last:
            try:
                record = json.loads(last.decode("utf-8"))
                self.prev, self.seq = record["hash"], int(record["seq"]) + 1
            except (ValueError, KeyError, TypeError):
                os.close(self._fd)
                raise K1Error(
                    f"{self.path}: the last line is not an audit record; run `k1 audit verify {self.path}`"
                ) from None
        if torn:
            # A kill mid-write left part of a line: cut it (it never completed) and say so in the log.
            with open(self.path, "rb") as f:
                f.seek(size - torn)
                dropped = f.read()
            os.ftruncate(self._fd, size - torn)
            self.write(
                {
                    "event": "recovered_torn_line",
                    "dropped_bytes": torn,
                    "dropped_sha256": hashlib.sha256(dropped).hexdigest(),
                }
            )

    def write(self, record: dict) -> str:
        """Append one record (seq, time, prev and hash are added); returns its hash."""
        with self._lock:
            full = {
                "seq": self.seq,
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
                **record,
                "prev": self.prev,
            }
            full["hash"] = line_hash(full)
            data = json.dumps(full, ensure_ascii=False).encode("utf-8") + b"\n"
            size = os.fstat(self._fd).st_size
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except OSError:
                os.ftruncate(self._fd, size)  # e.g. disk full: leave no half line for the next write
                raise
            self.prev, self.seq = full["hash"], self.seq + 1
            return full["hash"]

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
