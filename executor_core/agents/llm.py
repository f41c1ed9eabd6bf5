"""The ``llm`` agent: chat completions from an OpenAI-compatible endpoint (DESIGN §12).

Configured by the environment of the process that runs it (a node, or the hub for local
runs), and advertised only when configured:

- ``HIVEMIND_LLM_BASE_URL``: e.g. ``http://127.0.0.1:11434/v1`` (Ollama), vLLM, LiteLLM, OpenAI;
- ``HIVEMIND_LLM_API_KEY``, or ``HIVEMIND_LLM_API_KEY_FILE`` naming a file that holds it;
- ``HIVEMIND_LLM_MODELS``: comma-separated; the first is the default;
- ``HIVEMIND_LLM_TIMEOUT`` (seconds per request, default 120), ``HIVEMIND_LLM_RETRIES``
  (default 2).

The input is plain text (one user message) or a JSON object ``{"model", "system",
"messages", "temperature", "max_tokens"}``. The completion is streamed: its text goes to the
task's log as it arrives (a line at a time, or what came in the last ~100 ms), progress
moves, a cancel closes the stream; the output is the assistant's text. Usage (model, token
counts, time to the first token) is recorded on the context. A 429, a 5xx, a timeout or a
lost connection before any text arrived is retried with backoff; any other 4xx fails at once
with the provider's message. The key is never logged nor put in an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from executor_core.agents.context import AgentContext
from executor_core.types import AgentFailure, ExecutionCancelled

ENV_BASE_URL = "HIVEMIND_LLM_BASE_URL"
ENV_API_KEY = "HIVEMIND_LLM_API_KEY"
ENV_API_KEY_FILE = "HIVEMIND_LLM_API_KEY_FILE"
ENV_MODELS = "HIVEMIND_LLM_MODELS"
ENV_TIMEOUT = "HIVEMIND_LLM_TIMEOUT"
ENV_RETRIES = "HIVEMIND_LLM_RETRIES"

DEFAULT_TIMEOUT = 120.0
DEFAULT_RETRIES = 2
MAX_RETRIES = 10
LOG_INTERVAL = 0.1  # seconds a partial line may wait before it goes to the log
BACKOFF_BASE = 0.5  # seconds before the first retry, doubled for each next one
BACKOFF_MAX = 30.0
ROLES = ("system", "user", "assistant")
INPUT_FIELDS = ("model", "system", "messages", "temperature", "max_tokens")
NO_KEY = "unused"  # local servers take no key, the client insists on one

ERR_NO_MODELS = f"{ENV_MODELS} must name at least one model when {ENV_BASE_URL} is set"
ERR_BASE_URL = f"{ENV_BASE_URL} must be an http(s) URL, got {{url!r}}"
ERR_KEY_FILE = f"{ENV_API_KEY_FILE}={{path!r}} cannot be read: {{exc}}"
ERR_NUMBER = "{name} must be {what}, got {raw!r}"
ERR_WITHOUT_BASE_URL = f"{{name}} is set but {ENV_BASE_URL} is not: the llm agent needs both"
ERR_JSON = "llm agent: the input starts like a JSON object but is not valid JSON: {exc}"
ERR_FIELD = "llm agent: input field {field!r} {problem}"
ERR_UNKNOWN_FIELDS = "llm agent: unknown input field(s) {fields} (expected: {expected})"
ERR_NO_MESSAGES = "llm agent: the input names no messages (give messages or plain text)"
ERR_MODEL = "llm agent: model {model!r} is not served here (models: {models})"
ERR_MODEL_CONFLICT = "llm agent: the input asks for model {asked!r}, the task for {task!r}"
ERR_PROVIDER = "the provider answered HTTP {status}: {message}"
ERR_GAVE_UP = "{error} (gave up after {attempts} attempts)"
ERR_UNREACHABLE = "the provider could not be reached: {message}"
ERR_TIMED_OUT = "the provider did not answer within {seconds:g}s"
ERR_BROKEN_STREAM = "the stream broke after {chars} characters: {message}"


@dataclass(frozen=True)
class LlmConfig:
    base_url: str
    models: tuple[str, ...]
    api_key: str = field(default="", repr=False)
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES

    @property
    def default_model(self) -> str:
        return self.models[0]


def _number(env: Mapping[str, str], name: str, default: float, *, integer: bool) -> float:
    raw = env.get(name, "")
    if raw == "":
        return default
    what = f"a whole number from 0 to {MAX_RETRIES}" if integer else "a number of seconds above 0"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ValueError(ERR_NUMBER.format(name=name, what=what, raw=raw)) from None
    ok = 0 <= value <= MAX_RETRIES if integer else math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(ERR_NUMBER.format(name=name, what=what, raw=raw))
    return value


def llm_config_from_env(env: Mapping[str, str] | None = None) -> LlmConfig | None:
    """The llm agent's configuration, None when it is not configured, ValueError when it is
    configured wrongly (the host refuses to start)."""
    env = os.environ if env is None else env
    base_url = env.get(ENV_BASE_URL, "").strip()
    if not base_url:
        for name in (ENV_MODELS, ENV_API_KEY, ENV_API_KEY_FILE):
            if env.get(name, "").strip():
                raise ValueError(ERR_WITHOUT_BASE_URL.format(name=name))
        return None
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(ERR_BASE_URL.format(url=base_url))
    models = tuple(dict.fromkeys(m.strip() for m in env.get(ENV_MODELS, "").split(",")))
    models = tuple(m for m in models if m)
    if not models:
        raise ValueError(ERR_NO_MODELS)
    key = env.get(ENV_API_KEY, "")
    path = env.get(ENV_API_KEY_FILE, "")
    if path:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(ERR_KEY_FILE.format(path=path, exc=exc.strerror)) from None
    return LlmConfig(
        base_url=base_url.rstrip("/"),
        models=models,
        api_key=key,
        timeout=_number(env, ENV_TIMEOUT, DEFAULT_TIMEOUT, integer=False),
        retries=int(_number(env, ENV_RETRIES, DEFAULT_RETRIES, integer=True)),
    )


@dataclass(frozen=True)
class Completion:
    """One chat completion request, checked."""

    model: str
    messages: list[dict[str, str]]
    temperature: float | None = None
    max_tokens: int | None = None


def parse_input(text: str, config: LlmConfig, task_model: str = "") -> Completion:
    """The run's input as a request, or AgentFailure saying what is wrong (before any call)."""
    if not text.lstrip().startswith("{"):
        return Completion(_model(task_model, "", config), [{"role": "user", "content": text}])
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AgentFailure(ERR_JSON.format(exc=exc)) from None
    if not isinstance(data, dict):
        raise AgentFailure(ERR_JSON.format(exc="not an object"))
    unknown = sorted(set(data) - set(INPUT_FIELDS))
    if unknown:
        raise AgentFailure(
            ERR_UNKNOWN_FIELDS.format(fields=", ".join(unknown), expected=", ".join(INPUT_FIELDS))
        )
    asked = data.get("model", "")
    if not isinstance(asked, str):
        raise AgentFailure(ERR_FIELD.format(field="model", problem="must be a string"))
    messages: list[dict[str, str]] = []
    system = data.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise AgentFailure(ERR_FIELD.format(field="system", problem="must be a string"))
        messages.append({"role": "system", "content": system})
    given = data.get("messages", [])
    if not isinstance(given, list):
        raise AgentFailure(ERR_FIELD.format(field="messages", problem="must be a list"))
    for i, message in enumerate(given):
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or message["role"] not in ROLES
            or not isinstance(message["content"], str)
        ):
            problem = (
                f"item {i} must be an object {{role, content}} with role one of "
                f"{', '.join(ROLES)} and content a string"
            )
            raise AgentFailure(ERR_FIELD.format(field="messages", problem=problem))
        messages.append({"role": message["role"], "content": message["content"]})
    if not any(m["role"] != "system" for m in messages):
        raise AgentFailure(ERR_NO_MESSAGES)
    temperature = data.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise AgentFailure(ERR_FIELD.format(field="temperature", problem="must be from 0 to 2"))
    max_tokens = data.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        problem = "must be a whole number above 0"
        raise AgentFailure(ERR_FIELD.format(field="max_tokens", problem=problem))
    return Completion(
        _model(task_model, asked, config),
        messages,
        float(temperature) if temperature is not None else None,
        max_tokens,
    )


def _model(task_model: str, asked: str, config: LlmConfig) -> str:
    if task_model and asked and task_model != asked:
        raise AgentFailure(ERR_MODEL_CONFLICT.format(asked=asked, task=task_model))
    model = asked or task_model or config.default_model
    if model not in config.models:
        raise AgentFailure(ERR_MODEL.format(model=model, models=", ".join(config.models)))
    return model


class LogStream:
    """Streamed text → log lines: each complete line at once, a partial one once it waited
    LOG_INTERVAL (so a long line shows while it is written). Use it on the event loop."""

    def __init__(self, ctx: AgentContext, interval: float = LOG_INTERVAL) -> None:
        self._ctx = ctx
        self._interval = interval
        self._pending = ""
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str) -> None:
        *lines, rest = (self._pending + text).split("\n")
        if lines:
            self._ctx.log(*lines)
        self._pending = rest
        if not rest:
            self._cancel_timer()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self.flush)

    def flush(self) -> None:
        self._cancel_timer()
        if self._pending:
            self._ctx.log(self._pending)
            self._pending = ""

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Retryable(Exception):
    """A failure worth another attempt; ``delay`` is what the provider asked for, if anything."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class LlmAgent:
    """See the module docstring."""

    name = "llm"

    def __init__(self, config: LlmConfig) -> None:
        self.config = config

    @property
    def models(self) -> tuple[str, ...]:
        return self.config.models

    async def run(self, input: str, ctx: AgentContext) -> str:
        request = parse_input(input, self.config, ctx.model)
        ctx.record_usage(model=request.model)
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await _until_cancelled(self._complete(request, ctx), ctx)
            except Retryable as exc:
                if attempt == attempts:
                    message = ERR_GAVE_UP.format(error=exc, attempts=attempts)
                    raise AgentFailure(self._scrub(message)) from None
                delay = min(BACKOFF_MAX, exc.delay or BACKOFF_BASE * 2 ** (attempt - 1))
                ctx.log(f"[llm: {self._scrub(str(exc))}; retrying in {delay:g}s]")
                await ctx.sleep(delay)
        raise AssertionError("unreachable")

    async def _complete(self, request: Completion, ctx: AgentContext) -> str:
        import openai  # the agent exists without the package until it is used

        client = openai.AsyncOpenAI(
            base_url=self.config.base_url,
            api_key=self.config.api_key or NO_KEY,
            timeout=self.config.timeout,
            max_retries=0,  # retried here, with the log told why
        )
        options: dict[str, Any] = {}
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["max_tokens"] = request.max_tokens
        started = time.monotonic()
        text: list[str] = []
        chars = 0
        log = LogStream(ctx)
        try:
            stream = await client.chat.completions.create(
                model=request.model,
                messages=request.messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
                **options,
            )
            async with stream:
                async for chunk in stream:
                    if chunk.usage is not None:
                        ctx.record_usage(
                            model=chunk.model or request.model,
                            prompt_tokens=chunk.usage.prompt_tokens,
                            completion_tokens=chunk.usage.completion_tokens,
                        )
                    for choice in chunk.choices:
                        piece = choice.delta.content if choice.delta else None
                        if not piece:
                            continue
                        if not text:
                            ctx.record_usage(first_token_ms=_ms_since(started))
                        text.append(piece)
                        chars += len(piece)
                        log.add(piece)
                        ctx.progress(_progress(len(text), request.max_tokens), "streaming")
        except openai.APIStatusError as exc:
            message = ERR_PROVIDER.format(status=exc.status_code, message=_provider_message(exc))
            if text:
                raise AgentFailure(self._scrub(message)) from None
            if exc.status_code in (408, 429) or exc.status_code >= 500:
                raise Retryable(message, _retry_after(exc)) from None
            raise AgentFailure(self._scrub(message)) from None
        except openai.APITimeoutError:
            message = ERR_TIMED_OUT.format(seconds=self.config.timeout)
            if text:
                raise AgentFailure(ERR_BROKEN_STREAM.format(chars=chars, message=message)) from None
            raise Retryable(message) from None
        except openai.APIConnectionError as exc:
            message = ERR_UNREACHABLE.format(message=_cause(exc))
            if text:
                raise AgentFailure(
                    self._scrub(ERR_BROKEN_STREAM.format(chars=chars, message=message))
                ) from None
            raise Retryable(message) from None
        finally:
            log.flush()
            await client.close()
        ctx.record_usage(total_ms=_ms_since(started))
        ctx.progress(100.0, "done")
        return "".join(text)

    def _scrub(self, text: str) -> str:
        """The provider's words, without our key should it echo it."""
        key = self.config.api_key
        return text.replace(key, "[key]") if key else text


async def _until_cancelled(work: Coroutine[Any, Any, str], ctx: AgentContext) -> str:
    """``work``, stopped (its stream closed) as soon as the run is cancelled."""
    task = asyncio.ensure_future(work)
    cancelled = asyncio.ensure_future(ctx.wait_cancelled())
    try:
        await asyncio.wait({task, cancelled}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        cancelled.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ExecutionCancelled(f"session {ctx.session_id} was cancelled")
    return task.result()


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _progress(chunks: int, max_tokens: int | None) -> float:
    """Moves with every chunk: toward max_tokens when known, else ever slower toward 95%."""
    if max_tokens:
        return min(99.0, 100.0 * chunks / max_tokens)
    return 95.0 * chunks / (chunks + 200)


def _provider_message(exc: Any) -> str:
    """The message in an OpenAI-style error body, else the body, else the status text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    response = getattr(exc, "response", None)
    text = ""
    if response is not None:
        try:
            text = response.text.strip()
        except Exception:
            text = ""
    return text[:500] or getattr(exc, "message", "") or "no message"


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    raw = response.headers.get("retry-after") if response is not None else None
    try:
        value = float(raw) if raw else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None and str(cause) else str(exc) or type(exc).__name__
