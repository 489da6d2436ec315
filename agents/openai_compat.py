"""``OpenAIModel``: any OpenAI-compatible chat-completions endpoint, through the official
``openai`` SDK with a ``base_url`` (OpenAI itself, vLLM, Ollama, LiteLLM, a gateway).

It maps tether's request to the wire format (messages, tool calls and their results,
tools as functions) and the answer back (text, tool calls, token usage). Failures are
sorted for the agent loop, which retries and records the attempts: a rate limit (429,
with its ``Retry-After``), a timeout, a lost connection or a 5xx is transient; any other
error status is not. The SDK's own retries are off, so every attempt is tether's and is
counted on the turn.

Tests cannot reach a network model by accident: with ``TETHER_MODELS_OFFLINE=1`` (the
test suite sets it) a model whose endpoint is not on this machine refuses to call it.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from tether.agents.secrets import PREFIX, EnvSecrets
from tether.memory.errors import ConfigError, ModelError, TransientModelError

from .model import Message, ModelRequest, ModelTurn, Price, ToolCall, Usage

OFFLINE = "TETHER_MODELS_OFFLINE"
"""Set to 1 to refuse every model endpoint that is not on this machine."""

MAX_RETRY_AFTER_S = 120.0
"""The longest ``Retry-After`` honoured; a longer one is a failure, not a wait."""


class OpenAIModel:
    """A chat-completions model behind an OpenAI-compatible endpoint."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        price: Price | None = None,
        timeout_s: float = 60.0,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        tool_choice: str | Callable[[ModelRequest], str | None] | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("OpenAIModel model: give the model's name, e.g. 'gpt-4.1-mini'")
        self.model = model
        """The model's name at the endpoint."""
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        """The endpoint (``http://localhost:8000/v1`` for vLLM, ``.../11434/v1`` for Ollama)."""
        self.api_key = api_key
        """None: ``$OPENAI_API_KEY`` (a local server takes any key). A handle
        (``secret://openai``) is resolved only when the client connects, in the process
        that calls the model, from ``$TETHER_SECRET_OPENAI`` (``agents/secrets.py``):
        the key itself is never part of the topology, the record or a Ray message."""
        self.price = price
        """What its tokens cost (the agent's ``price`` overrides it); None = unpriced."""
        self.timeout_s = timeout_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        """Asked of the endpoint for reproducible sampling, where it supports it."""
        self.tool_choice = tool_choice
        """``auto``, ``none``, ``required``, or a tool's name (that tool must be called),
        or a function of the request that says which, turn by turn; None: the endpoint's
        default. Asked only when the turn offers tools."""
        self._client: Any = None

    @property
    def name(self) -> str:
        return self.model

    def __getstate__(self) -> dict[str, Any]:
        # The topology travels to Ray workers by value; the HTTP client does not.
        return {**self.__dict__, "_client": None}

    def respond(self, request: ModelRequest) -> ModelTurn:
        import openai

        client = self._connect()
        extra: dict[str, Any] = {}
        if request.tools:
            extra["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
            choice = self.choose(request)
            if choice is not None:
                extra["tool_choice"] = (
                    choice
                    if choice in ("auto", "none", "required")
                    else {"type": "function", "function": {"name": choice}}
                )
        if self.max_tokens is not None:
            extra["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        if self.seed is not None:
            extra["seed"] = self.seed
        try:
            response = client.chat.completions.create(
                model=self.model, messages=[wire(m) for m in request.messages], **extra
            )
        except openai.RateLimitError as e:
            wait = retry_after(e.response.headers)
            if wait is not None and wait > MAX_RETRY_AFTER_S:
                raise ModelError(
                    f"{self.model}: rate limited for {wait:g} s (Retry-After), more than the "
                    f"{MAX_RETRY_AFTER_S:g} s tether waits"
                ) from e
            raise TransientModelError(
                f"{self.model}: 429 rate limited: {_said(e)}", retry_after=wait
            ) from e
        except openai.InternalServerError as e:
            raise TransientModelError(f"{self.model}: {e.status_code}: {_said(e)}") from e
        except (openai.APITimeoutError, openai.APIConnectionError) as e:
            raise TransientModelError(f"{self.model}: {type(e).__name__}: {e}") from e
        except openai.APIStatusError as e:
            raise ModelError(f"{self.model}: {e.status_code}: {_said(e)}") from e
        except openai.OpenAIError as e:
            raise ModelError(f"{self.model}: {type(e).__name__}: {e}") from e
        if not response.choices:
            raise ModelError(f"{self.model}: the endpoint answered with no choice")
        message = response.choices[0].message
        calls = tuple(
            ToolCall(c.function.name, arguments(c.function.arguments), c.id)
            for c in (message.tool_calls or [])
            if getattr(c, "function", None) is not None
        )
        usage = response.usage
        return ModelTurn(
            text=message.content or "",
            tool_calls=calls,
            usage=Usage(usage.prompt_tokens, usage.completion_tokens) if usage else Usage(),
        )

    def _connect(self) -> Any:
        if os.environ.get(OFFLINE, "").strip() not in ("", "0") and not local(self.base_url):
            raise ModelError(
                f"{self.model}: network model calls are off ({OFFLINE}=1) and {self.base_url} "
                f"is not on this machine; unset {OFFLINE} to allow it"
            )
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self._key() or os.environ.get("OPENAI_API_KEY") or "not-needed",
                timeout=self.timeout_s,
                max_retries=0,  # tether retries, and records each attempt
            )
        return self._client

    def choose(self, request: ModelRequest) -> str | None:
        """The tool choice to ask for on this turn."""
        if callable(self.tool_choice):
            return self.tool_choice(request)
        return self.tool_choice

    def _key(self) -> str | None:
        """The API key: given, or resolved from its handle."""
        if self.api_key is None or not self.api_key.startswith(PREFIX):
            return self.api_key
        secrets = EnvSecrets()
        value = secrets.resolve(self.api_key[len(PREFIX) :])
        if value is None:
            raise ModelError(
                f"{self.model}: api_key {self.api_key} is not set; export "
                f"{secrets.var(self.api_key[len(PREFIX) :])}"
            )
        return value


def wire(m: Message) -> dict[str, Any]:
    """One message of tether's context in the chat-completions format."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.call_id or "", "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in m.tool_calls
        ]
    return out


def arguments(text: str | None) -> dict[str, Any]:
    """A tool call's arguments; text that is not a JSON object is kept as it came, and
    the gate's boundaries refuse it with a message the model can act on."""
    try:
        found = json.loads(text or "{}")
    except json.JSONDecodeError:
        return cast(dict[str, Any], text)
    return found if isinstance(found, dict) else cast(dict[str, Any], text)


def retry_after(headers: Any) -> float | None:
    """Seconds a ``Retry-After`` (or ``retry-after-ms``) header asks to wait."""
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None  # an HTTP date, or garbage: back off as usual
    return None


def local(url: str) -> bool:
    """Whether an endpoint is on this machine (loopback)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _said(e: Any) -> str:
    """The error message the endpoint gave."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(e, "message", e))
