"""`k1 serve`: an OpenAI-compatible, access-controlled server that keeps data on the premises.

    k1 keys create --name alice --scopes chat           # prints the key once
    k1 serve runs/sft/model                             # 127.0.0.1:8000, audit.jsonl beside you
    k1 audit verify audit.jsonl

Modules: app (routes, access gate, responses), auth (key store, rate limits, quotas), audit
(hash-chained JSONL log), limits (every bound, named), schemas (strict request models), parse
(reasoning / answer / tool-call splitting), config (ServeConfig). The model runs in
`k1.engine.Engine`. See docs/serve.md.
"""

from __future__ import annotations

from .config import ServeConfig

__all__ = ["ServeConfig", "create_app", "Server", "run"]


def __getattr__(name):
    # FastAPI and torch load only when a server is built, so `k1 keys` / `k1 audit` stay quick.
    if name in ("create_app", "Server", "run"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'k1.serve' has no attribute {name!r}")
