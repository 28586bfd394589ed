"""Every limit the server enforces, in one place. Requests beyond them get a 4xx, never a 5xx.

`ServeConfig` (k1/serve/config.py) copies the adjustable ones as defaults; the rest are fixed.
"""

from __future__ import annotations

# -- request bodies and fields
MAX_BODY_BYTES = 1 << 20  # 1 MiB of JSON per request
MAX_MESSAGES = 256
MAX_TOOLS = 64
MAX_TOOL_NAME = 64
MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 64
MAX_N = 8  # choices per request
MAX_PROMPTS = 16  # prompts in one /v1/completions request
MAX_TOP_LOGPROBS = 20  # chat (OpenAI's limit)
MAX_COMPLETION_LOGPROBS = 5  # /v1/completions (OpenAI's limit)
MAX_USER_CHARS = 256
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 2.0

# -- generation (defaults of ServeConfig; the engine also caps by its context)
DEFAULT_MAX_TOKENS = 4096  # largest max_tokens a request may ask for
DEFAULT_COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
DEFAULT_MAX_THINKING_TOKENS = 2048  # reasoning cap when a request names none
DEFAULT_MAX_SEQS = 8
DEFAULT_MAX_QUEUE = 64

# -- time
RETRY_AFTER_BUSY_S = 2  # Retry-After on 503 (queue full)
DISCONNECT_POLL_S = 0.25  # how often a waiting request checks that its client is still there
SHUTDOWN_GRACE_S = 5

# -- keys
KEY_CACHE_SIZE = 1024  # verified keys remembered in memory (scrypt is slow on purpose)
MAX_KEY_CHARS = 200  # a longer Authorization value is refused before any hashing
AUTH_FAILURES_PER_MINUTE = 20  # per client address; then 429 without hashing (scrypt costs CPU)
AUTH_FAILURE_CLIENTS = 4096  # addresses tracked for that
