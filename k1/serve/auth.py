"""API keys for `k1 serve`: a small SQLite store of salted hashes, scopes, rate limits and quotas.

    k1 keys create --name alice --scopes chat,completions --rate 60 --quota 200000
    k1 keys list
    k1 keys revoke alice

A key looks like `k1-<id>-<secret>`: the id (public, shown by `k1 keys list`) finds the record, the
256-bit secret is checked against scrypt(secret, per-key salt) with a constant-time compare. The
secret is printed once at creation and stored nowhere. Because scrypt is slow on purpose, a server
remembers keys it has verified (in memory, by a keyed hash); revocation is still read from the
store on every request, so `k1 keys revoke` takes effect at once.

Rate limits are per key, in requests per minute (a token bucket in the server's memory). Quotas
are tokens (prompt + completion) per UTC day, kept in the store so they survive restarts.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import hmac
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from k1.errors import K1Error, did_you_mean

from .limits import KEY_CACHE_SIZE, MAX_KEY_CHARS

SCOPES = ("chat", "completions", "admin")
# scrypt cost: ~40 ms and 16 MiB per check on a laptop core; the cache keeps it off the hot path.
SCRYPT = dict(n=2**14, r=8, p=1, dklen=32)
KEY_PREFIX = "k1"
_KEY = re.compile(r"^k1-([0-9a-f]{12})-([0-9a-f]{64})$")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
    scopes TEXT NOT NULL, rate REAL, quota INTEGER, created TEXT NOT NULL, revoked TEXT
);
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL, day TEXT NOT NULL, tokens INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (key_id, day)
);
"""


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    scopes: tuple[str, ...]
    rate: float | None
    """Requests per minute; None: unlimited."""
    quota: int | None
    """Tokens per UTC day; None: unlimited."""
    created: str
    revoked: str | None

    def public(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "rate": self.rate,
            "quota": self.quota,
            "created": self.created,
            "revoked": self.revoked,
        }


def parse_scopes(text: str | list[str]) -> tuple[str, ...]:
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not items:
        raise K1Error(f"--scopes is empty; give one or more of {', '.join(SCOPES)}")
    for s in items:
        if s not in SCOPES:
            raise K1Error(f"unknown scope {s!r}{did_you_mean(s, SCOPES)}")
    return tuple(dict.fromkeys(items))


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **SCRYPT)


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def seconds_to_midnight() -> int:
    now = dt.datetime.now(dt.UTC)
    midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil((midnight - now).total_seconds()))


class KeyStore:
    """The key file (SQLite). Each call opens its own connection, so the CLI and a running server
    can use the same file at once."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise K1Error(
                    f"{self.path}: no key store here; create a key with `k1 keys create --store {self.path}`"
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created owner-only before SQLite opens it: the file holds hashes, still nobody's business.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        try:
            with self._db() as db:
                db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise K1Error(f"{self.path}: not a k1 key store ({err})") from None
        self._verified: collections.OrderedDict[bytes, tuple[str, bytes]] = collections.OrderedDict()
        self._cache_key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 10000")
        return _Closing(db)

    # -- management (CLI)

    def create(
        self, name: str, scopes, rate: float | None = None, quota: int | None = None
    ) -> tuple[KeyRecord, str]:
        """A new key: (its record, the key text). The key text is not stored and cannot be shown again."""
        if not _NAME.match(name or ""):
            raise K1Error(f"--name {name!r}: use 1-64 letters, digits or _ . @ -")
        scopes = parse_scopes(scopes)
        if rate is not None and not rate > 0:
            raise K1Error("--rate must be > 0 (requests per minute)")
        if quota is not None and quota < 1:
            raise K1Error("--quota must be >= 1 (tokens per day)")
        key_id, secret = secrets.token_hex(6), secrets.token_hex(32)
        salt = secrets.token_bytes(16)
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                    (key_id, name, salt, _hash(secret, salt), ",".join(scopes), rate, quota, created),
                )
            except sqlite3.IntegrityError:
                raise K1Error(f"a key named {name!r} already exists; choose another --name") from None
        return KeyRecord(key_id, name, scopes, rate, quota, created, None), f"{KEY_PREFIX}-{key_id}-{secret}"

    def list(self) -> list[KeyRecord]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, name, scopes, rate, quota, created, revoked FROM keys ORDER BY created"
            ).fetchall()
        return [self._record(r) for r in rows]

    def revoke(self, id_or_name: str) -> KeyRecord:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        with self._db() as db:
            row = db.execute(
                "SELECT id FROM keys WHERE id = ? OR name = ?", (id_or_name, id_or_name)
            ).fetchone()
            if row is None:
                names = [r[0] for r in db.execute("SELECT name FROM keys")]
                raise K1Error(f"no key with id or name {id_or_name!r}{did_you_mean(id_or_name, names)}")
            db.execute("UPDATE keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (now, row[0]))
        return self.get(row[0])

    def get(self, key_id: str) -> KeyRecord | None:
        with self._db() as db:
            row = db.execute(
                "SELECT id, name, scopes, rate, quota, created, revoked FROM keys WHERE id = ?", (key_id,)
            ).fetchone()
        return self._record(row) if row else None

    @staticmethod
    def _record(row) -> KeyRecord:
        return KeyRecord(row[0], row[1], tuple(row[2].split(",")), row[3], row[4], row[5], row[6])

    # -- checking (server)

    def verify(self, key: str, *, slow: bool = True) -> KeyRecord | None:
        """The live record of a valid, unrevoked key; None otherwise. With slow=False a key not
        verified before is not hashed (None): a caller can then do the slow check off its loop."""
        if not key or len(key) > MAX_KEY_CHARS:
            return None
        m = _KEY.match(key)
        if not m:
            return None
        key_id, secret = m.groups()
        with self._db() as db:
            row = db.execute(
                "SELECT id, name, scopes, rate, quota, created, revoked, salt, hash FROM keys WHERE id = ?",
                (key_id,),
            ).fetchone()
        if row is None or row[6] is not None:
            return None
        stored = row[8]
        tag = hmac.new(self._cache_key, key.encode(), hashlib.sha256).digest()
        with self._lock:
            hit = self._verified.get(tag)
            if hit is not None:
                self._verified.move_to_end(tag)
        if hit is None or hit[0] != key_id or not hmac.compare_digest(hit[1], stored):
            if not slow or not hmac.compare_digest(_hash(secret, row[7]), stored):
                return None
            with self._lock:
                self._verified[tag] = (key_id, stored)
                while len(self._verified) > KEY_CACHE_SIZE:
                    self._verified.popitem(last=False)
        return self._record(row[:7])

    def is_cached(self, key: str) -> bool:
        """Was this exact key verified before (checking it again needs no scrypt)?"""
        tag = hmac.new(self._cache_key, key.encode(), hashlib.sha256).digest()
        with self._lock:
            return tag in self._verified

    def used_today(self, key_id: str) -> int:
        with self._db() as db:
            row = db.execute(
                "SELECT tokens FROM usage WHERE key_id = ? AND day = ?", (key_id, today())
            ).fetchone()
        return row[0] if row else 0

    def add_usage(self, key_id: str, tokens: int) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO usage VALUES (?, ?, ?, 1) ON CONFLICT (key_id, day) DO UPDATE SET "
                "tokens = tokens + excluded.tokens, requests = requests + 1",
                (key_id, today(), int(tokens)),
            )


class _Closing:
    """sqlite3's context manager commits but does not close; this one does both."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()


class Limited(Exception):
    """A rate limit or quota says no; retry_after in seconds."""

    def __init__(self, message: str, retry_after: int, code: str):
        super().__init__(message)
        self.retry_after, self.code = retry_after, code


class Limiter:
    """Per-key request rate (token bucket, in memory) and daily token quota (in the store).

    Quota tokens a request may still spend are reserved when it starts (prompt + n * max_tokens),
    so concurrent requests of one key cannot overdraw it; the real count is booked at the end."""

    def __init__(self, store: KeyStore):
        self.store = store
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, time)
        self._reserved: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def check_rate(self, key: KeyRecord) -> None:
        if not key.rate:
            return
        per_s = key.rate / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key.id, (key.rate, now))
            tokens = min(key.rate, tokens + (now - then) * per_s)
            if tokens < 1:
                self._buckets[key.id] = (tokens, now)
                wait = math.ceil((1 - tokens) / per_s)
                raise Limited(
                    f"rate limit of {key.rate:g} requests per minute reached", wait, "rate_limit_exceeded"
                )
            self._buckets[key.id] = (tokens - 1, now)

    def reserve(self, key: KeyRecord, prompt_tokens: int, n: int, max_tokens: int) -> tuple[int, int]:
        """Reserve quota for a request: (max_tokens it may use, tokens reserved). A request asking for
        more than is left gets the rest (its answer ends with finish_reason "length")."""
        if key.quota is None:
            return max_tokens, 0
        with self._lock:
            left = key.quota - self.store.used_today(key.id) - self._reserved[key.id]
            per_choice = (left - prompt_tokens) // max(1, n)
            if per_choice < 1:
                raise self.quota_error(key)
            max_tokens = min(max_tokens, per_choice)
            amount = prompt_tokens + n * max_tokens
            self._reserved[key.id] += amount
        return max_tokens, amount

    def settle(self, key: KeyRecord, reserved: int, used: int) -> None:
        if key.quota is not None:
            with self._lock:
                self._reserved[key.id] -= reserved
                if self._reserved[key.id] <= 0:
                    del self._reserved[key.id]
        self.store.add_usage(key.id, used)

    def quota_error(self, key: KeyRecord) -> Limited:
        return Limited(f"daily token quota of {key.quota} reached", seconds_to_midnight(), "quota_exceeded")
