"""Request bodies of the OpenAI-compatible API, as strict pydantic models.

Unknown fields are refused (extra="forbid"), types are not coerced ("1" is not 1, true is not 1),
NaN and infinities are refused, and every list and string a client controls has a bound. A
request field the server does not implement (presence_penalty, response_format, ...) is therefore
a 400 that names it, not a silent no-op. The server's /openapi schema is built from these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .limits import (
    MAX_COMPLETION_LOGPROBS,
    MAX_MESSAGES,
    MAX_N,
    MAX_PROMPTS,
    MAX_SEED,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TEMPERATURE,
    MAX_TOOL_NAME,
    MAX_TOOLS,
    MAX_TOP_LOGPROBS,
    MAX_USER_CHARS,
)

# Upper bound in the schema; the server's own max_tokens (config) is checked after parsing.
MAX_TOKENS_FIELD = 1 << 20
MAX_ID_CHARS = 128


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class FunctionCall(Strict):
    name: str = Field(max_length=MAX_TOOL_NAME)
    arguments: str


class ToolCall(Strict):
    id: str = Field(max_length=MAX_ID_CHARS)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=MAX_TOOL_NAME)
    tool_calls: list[ToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, max_length=MAX_ID_CHARS)
    reasoning_content: str | None = None


class FunctionDef(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(Strict):
    include_usage: bool = False


class ChatTemplateKwargs(Strict):
    """The only template switch a request may set; the template itself comes from the model dir."""

    enable_thinking: bool | None = None


def _check_stop(value):
    if value is None:
        return value
    items = [value] if isinstance(value, str) else value
    if len(items) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
    for s in items:
        if not s or len(s) > MAX_STOP_CHARS:
            raise ValueError(f"stop strings must have 1..{MAX_STOP_CHARS} characters")
    return value


class Sampling(Strict):
    model: str = Field(max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_FIELD)
    temperature: float | None = Field(None, ge=0, le=MAX_TEMPERATURE)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=MAX_TOKENS_FIELD)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-MAX_SEED - 1, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=MAX_USER_CHARS)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        return _check_stop(v)


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_FIELD)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto"] | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    max_thinking_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS_FIELD)
    """Reasoning tokens allowed before the server closes the think block itself (k1 extension)."""


class CompletionRequest(Sampling):
    prompt: str | list[str] = Field(...)
    logprobs: int | None = Field(None, ge=0, le=MAX_COMPLETION_LOGPROBS)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v):
        if isinstance(v, list) and not 1 <= len(v) <= MAX_PROMPTS:
            raise ValueError(f"prompt lists hold 1..{MAX_PROMPTS} prompts")
        return v
