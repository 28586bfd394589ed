"""A small client for OpenAI-compatible endpoints (vLLM, SGLang, k1 serve): the "openai" teacher.

Deny by default: the endpoint's host must be on the config's allow-list, checked before any
request, so that prompts and corpus text leave the premises only where the user said they may.
Requests run with bounded concurrency (an asyncio semaphore over one httpx connection pool) and
are retried with exponential backoff and jitter on 429, 5xx, timeouts and dropped connections;
`Retry-After` is honoured up to the backoff ceiling. Anything else (400, 401, 404...) is a
one-line error naming the status and what the server said.

    client = EndpointClient("http://127.0.0.1:8000/v1", allowed_hosts=["127.0.0.1"])
    client.post_many("/chat/completions", payloads, on_result=lambda i, body: ...)

Resuming is the caller's part: results are handed over one by one as they arrive, and the callers
in k1.distill append each to a jsonl keyed by its id before the next is taken.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from k1.errors import K1Error

# Statuses worth another try: rate limits and server-side trouble.
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# A response larger than this is refused (a runaway server must not fill the memory).
MAX_RESPONSE_BYTES = 64 << 20
MAX_CONCURRENCY = 256
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_host(url: str, allowed_hosts: Sequence[str], key: str = "teacher.allowed_hosts") -> str:
    """The URL's host if the allow-list names it (exactly, or by a "*.example.com" suffix pattern);
    otherwise a K1Error that names the host and the config key to change."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise K1Error(f"teacher endpoint {url!r}: expected an http(s) URL such as http://127.0.0.1:8000/v1")
    if parts.username or parts.password:
        raise K1Error(
            f"teacher endpoint {parts.hostname}: credentials in the URL; put the API key in an environment "
            "variable and name it in teacher.api_key_env"
        )
    host = parts.hostname.lower().rstrip(".")
    for pattern in allowed_hosts:
        pattern = str(pattern).lower().rstrip(".")
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return host
    listed = ", ".join(map(str, allowed_hosts)) or "nothing"
    raise K1Error(
        f"teacher endpoint host {host!r} is not allowed ({key} lists {listed}); data would leave for "
        f"that host: add {host!r} to {key} only if it may"
    )


@dataclass
class EndpointClient:
    base_url: str
    allowed_hosts: Sequence[str] = LOOPBACK
    api_key: str | None = None
    concurrency: int = 4
    max_retries: int = 6
    timeout_s: float = 120.0
    backoff_s: float = 0.5
    """First retry waits about this long; each further one twice as long (with +-50% jitter)."""
    max_backoff_s: float = 30.0
    allow_key: str = "teacher.allowed_hosts"
    """The config key named in the refusal message."""

    def __post_init__(self) -> None:
        # Before anything else, so a refused host never sees a request.
        self.host = check_host(self.base_url, self.allowed_hosts, self.allow_key)
        self.base_url = self.base_url.rstrip("/")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise K1Error(f"teacher.concurrency {self.concurrency}: choose 1..{MAX_CONCURRENCY}")
        if self.max_retries < 0 or self.timeout_s <= 0:
            raise K1Error("teacher.max_retries must be >= 0 and teacher.timeout_s > 0")
        self.retries_done = 0

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.max_backoff_s, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.5)

    async def _post(self, client, sem: asyncio.Semaphore, path: str, payload: dict) -> dict:
        import httpx

        url = self.base_url + path
        last = ""
        for attempt in range(self.max_retries + 1):
            async with sem:
                try:
                    resp = await client.post(url, json=payload, headers=self._headers())
                except (httpx.TimeoutException, httpx.TransportError) as err:
                    resp, last = None, f"{type(err).__name__}"
            if resp is not None:
                if resp.status_code == 200:
                    if len(resp.content) > MAX_RESPONSE_BYTES:
                        raise K1Error(f"{url}: response of {len(resp.content):,} bytes is over the limit")
                    try:
                        body = resp.json()
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        body = None
                    if isinstance(body, dict):
                        return body
                    last = "a 200 response that is not a JSON object"
                elif resp.status_code in RETRY_STATUSES:
                    last = f"HTTP {resp.status_code}"
                else:
                    detail = resp.text[:200].replace("\n", " ")
                    hint = (
                        "; check the key in the variable teacher.api_key_env names"
                        if resp.status_code in (401, 403)
                        else ""
                    )
                    raise K1Error(f"{url}: HTTP {resp.status_code} ({detail}){hint}")
            if attempt == self.max_retries:
                break
            self.retries_done += 1
            await asyncio.sleep(
                self._wait(attempt, resp.headers.get("retry-after") if resp is not None else None)
            )
        raise K1Error(
            f"{url}: gave up after {self.max_retries + 1} tries (last: {last}); run the same command again "
            "to resume, or raise teacher.max_retries / teacher.timeout_s"
        )

    def post_many(self, path: str, payloads: Sequence[dict], on_result: Callable[[int, dict], None]) -> None:
        """POST each payload to base_url + path, at most `concurrency` at a time; on_result(i, body) is
        called (in this thread) as each response arrives, in completion order."""
        if payloads:
            asyncio.run(self._post_all(path, payloads, on_result))

    async def _post_all(self, path: str, payloads: Sequence[dict], on_result) -> None:
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        # trust_env=False: no proxy from the environment may carry the data to another host.
        async with httpx.AsyncClient(
            timeout=self.timeout_s, limits=limits, trust_env=False, follow_redirects=False
        ) as client:

            async def one(i: int):
                return i, await self._post(client, sem, path, payloads[i])

            tasks = [asyncio.create_task(one(i)) for i in range(len(payloads))]
            try:
                for done in asyncio.as_completed(tasks):
                    i, body = await done
                    on_result(i, body)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)


def api_key_from_env(name: str) -> str | None:
    """The key from the environment variable the config names (keys never sit in config files)."""
    if not name:
        return None
    value = os.environ.get(name)
    if not value:
        raise K1Error(f"teacher.api_key_env names {name!r}, but that environment variable is empty or unset")
    return value
