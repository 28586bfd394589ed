"""User-facing errors.

Anything a user can cause (a bad path, a malformed file, an unknown config key) raises `K1Error`
with a one-line message that names the file, line or key and says what to do. The CLI prints that
line and exits with status 2; a traceback means a bug in k1, not a mistake by the user.
"""

from __future__ import annotations


class K1Error(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(K1Error, ValueError):
    """An unknown preset, an unknown key, or a value out of range."""


class CheckpointError(K1Error):
    """A model directory that is missing, incomplete, or does not match its config."""


def did_you_mean(name: str, valid: list[str] | tuple[str, ...]) -> str:
    """'; valid: a, b, c' plus the closest match, for error messages about unknown names."""
    import difflib

    close = difflib.get_close_matches(name, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}; valid: {', '.join(sorted(valid))}"
