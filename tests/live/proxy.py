"""``FaultProxy``: an HTTP proxy on 127.0.0.1 that the live suite puts between tether's
OpenAI adapter and a real model server, so the harness meets the faults a misbehaving
model or endpoint produces.

It forwards every request as it came and every answer as it went, except that a seeded
fraction of chat completions gets one fault: an invented tool, truncated or non-object
arguments, an argument of the wrong type, a 500, a 429 with ``Retry-After``, or an
answer held back longer than the client waits. It counts what it injected (``injected``)
and logs which request got which fault (``log``); what tether made of each one is read
from the store by the suite.

Only non-streaming JSON answers are mutated (tether's adapter does not stream), and a
request body must come with a ``Content-Length`` (the ``openai`` SDK's always does).
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, cast, get_args
from urllib.parse import urlsplit

Kind = Literal[
    "invented_tool",
    "truncated_arguments",
    "non_object_arguments",
    "wrong_type",
    "server_error",
    "rate_limited",
    "stalled",
]
"""One kind of fault."""

KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
"""Every kind of fault the proxy injects."""

MUTATIONS: Final[tuple[Kind, ...]] = (
    "invented_tool",
    "truncated_arguments",
    "non_object_arguments",
    "wrong_type",
)
"""The faults made by changing the upstream's answer; the others replace or delay it."""

INVENTED: Final = ("transfer_funds", "delete_all_records", "wire_money")
"""Names for a tool nobody offered (the first one the request did not offer is used)."""

NOT_OBJECTS: Final = ("[1, 2]", "42", '"yes"', "null")
"""Arguments that are valid JSON but not an object."""

RETRY_AFTER_S: Final = 1
"""What an injected 429 asks the client to wait."""

_NOT_FORWARDED: Final = frozenset(
    {
        # Hop-by-hop headers belong to one connection, not to the message (RFC 9110 7.6.1).
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        # Set again for the hop they go on: the body may have changed length.
        "host",
        "content-length",
        # The proxy asks for an uncompressed answer, so that it can read and change it.
        "accept-encoding",
        # The proxy's own server adds these to its answer.
        "server",
        "date",
    }
)


@dataclass(frozen=True)
class Fault:
    """One fault the proxy injected."""

    request: int
    """The chat-completions request it hit, counted from 1 in the order they arrived."""
    kind: Kind
    """What it did."""


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer: status, headers (without Content-Length) and body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class _Plan:
    """What the proxy does with one chat-completions request, decided when it arrives."""

    request: int
    kind: Kind | None
    rng: random.Random
    """The request's own randomness, so its mutation does not depend on what other
    requests in flight draw."""


class FaultProxy:
    """Forwards HTTP to ``upstream`` (a base URL such as ``http://127.0.0.1:8000/v1``) and
    injects one fault into a seeded ``fraction`` of chat completions, drawn from ``kinds``.

    Use it as a context manager, or call ``close()``: it ends any stall at once and
    returns when no request is in hand.
    """

    def __init__(
        self,
        upstream: str,
        *,
        fraction: float = 0.3,
        kinds: Iterable[Kind] = KINDS,
        seed: int = 0,
        stall_s: float = 5.0,
        at_most: int | None = None,
        upstream_timeout_s: float = 600.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream: a URL like http://127.0.0.1:8000/v1, not {upstream!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction: must be between 0 and 1, not {fraction!r}")
        self.kinds: tuple[Kind, ...] = tuple(dict.fromkeys(kinds))
        """The faults it may inject."""
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"kinds: choose from {list(KINDS)}, not {unknown or 'none'}")
        if stall_s <= 0:
            raise ValueError(f"stall_s: must be positive, not {stall_s!r}")
        if at_most is not None and at_most < 0:
            raise ValueError(f"at_most: a count of faults, or None for no limit; not {at_most!r}")
        self.upstream = upstream.rstrip("/")
        """Where requests go."""
        self.fraction = fraction
        """The share of chat completions that get a fault."""
        self.stall_s = stall_s
        """How long a stalled answer is held back: longer than the client waits."""
        self.at_most = at_most
        """The most faults it injects; None = no limit (1 makes "a fault, then a retry
        that goes through" an exact scenario)."""
        self.upstream_timeout_s = upstream_timeout_s
        """How long it waits for the upstream's answer."""
        self.injected: Counter[str] = Counter()
        """Faults injected so far, per kind."""
        self.log: list[Fault] = []
        """Each fault injected, in order."""
        self._scheme, self._netloc = parts.scheme, parts.netloc
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._requests = 0
        self._claimed = 0
        self._closed = threading.Event()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The proxy's base URL: the upstream's, with the proxy's host and port."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{urlsplit(self.upstream).path}"

    def close(self) -> None:
        """Stop serving; a held answer is dropped at once, and no request outlives this."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads (they are not daemons)
        self._thread.join()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- what a request gets ------------------------------------------------------------

    def _plan(self) -> _Plan:
        """Decide the fate of the next chat-completions request. Every request draws the
        same numbers whatever is decided, so a seed gives the same faults to the same
        requests."""
        with self._lock:
            self._requests += 1
            due = self._rng.random() < self.fraction
            kind = self._rng.choice(self.kinds)
            rng = random.Random(self._rng.getrandbits(64))
            if not due or (self.at_most is not None and self._claimed >= self.at_most):
                return _Plan(self._requests, None, rng)
            self._claimed += 1
            return _Plan(self._requests, kind, rng)

    def _record(self, plan: _Plan, kind: Kind | None) -> None:
        """Count the fault a request got (``None``: it got none after all)."""
        with self._lock:
            if kind is None:
                self._claimed -= 1
                return
            self.injected[kind] += 1
            self.log.append(Fault(plan.request, kind))

    def _stall(self) -> bool:
        """Hold an answer back for ``stall_s``; whether it is still to be sent (not if
        the proxy closed meanwhile)."""
        return not self._closed.wait(self.stall_s)

    def _forward(self, method: str, path: str, headers: Any, body: bytes) -> _Answer:
        """The upstream's answer to the request; a 502 if it cannot be reached."""
        connection = (
            http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        )(self._netloc, timeout=self.upstream_timeout_s)
        sent = {k: v for k, v in headers.items() if k.lower() not in _NOT_FORWARDED}
        sent |= {"Host": self._netloc, "Accept-Encoding": "identity"}
        try:
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            return refusal(502, "bad_gateway", f"upstream {self.upstream} unreachable: {e}")
        finally:
            connection.close()
        kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _NOT_FORWARDED]
        return _Answer(response.status, kept, data)

    def _mutate(self, plan: _Plan, kind: Kind, request: bytes, answer: _Answer) -> _Answer:
        """The answer with the planned mutation ``kind``, or another enabled one when that
        one does not apply (no argument to mistype); unchanged, and not counted, when none
        applies."""
        try:
            reply = json.loads(answer.body)
            offered = _offered(json.loads(request))
            fits = answer.status == 200 and isinstance(reply["choices"][0]["message"], dict)
        except (ValueError, KeyError, IndexError, TypeError):
            fits = False  # an error, or not a chat completion: nothing to mutate
        others = [k for k in self.kinds if k in MUTATIONS and k != kind]
        plan.rng.shuffle(others)
        for tried in (kind, *others) if fits else ():
            if MUTATE[tried](reply, offered, plan.rng):
                self._record(plan, tried)
                return _Answer(answer.status, answer.headers, json.dumps(reply).encode())
        self._record(plan, None)
        return answer


# --- the mutations ----------------------------------------------------------------------
# Each changes a chat-completions answer in place and says whether it could.


def _offered(request: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tools a request offered: name → its JSON schema."""
    out: dict[str, dict[str, Any]] = {}
    for t in request.get("tools") or []:
        function = t.get("function") or {}
        if isinstance(function.get("name"), str):
            out[function["name"]] = function.get("parameters") or {}
    return out


def _calls(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's tool calls that name a function."""
    calls = reply["choices"][0]["message"].get("tool_calls") or []
    return [c for c in calls if isinstance(c, dict) and isinstance(c.get("function"), dict)]


def _add_call(reply: dict[str, Any], name: str, arguments: str) -> dict[str, Any]:
    """Give an answer (maybe only text) one more tool call."""
    choice = reply["choices"][0]
    calls = choice["message"].get("tool_calls") or []
    call = {
        "id": f"call_fault_{len(calls)}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    choice["message"]["tool_calls"] = [*calls, call]
    choice["finish_reason"] = "tool_calls"
    return call


def _target(
    reply: dict[str, Any], offered: dict[str, dict[str, Any]], rng: random.Random
) -> dict[str, Any] | None:
    """A tool call to break: one of the answer's, else a new call to an offered tool
    (a model that answered in text gets a broken call all the same)."""
    calls = _calls(reply)
    if calls:
        return rng.choice(calls)
    if offered:
        return _add_call(reply, rng.choice(sorted(offered)), "{}")
    return None


def invented_tool(
    reply: dict[str, Any], offered: dict[str, dict[str, Any]], rng: random.Random
) -> bool:
    """A call to a tool the request did not offer: a call renamed, or one added."""
    name = next((n for n in INVENTED if n not in offered), f"{INVENTED[0]}_{len(offered)}")
    calls = _calls(reply)
    if calls:
        rng.choice(calls)["function"]["name"] = name
    else:
        _add_call(reply, name, "{}")
    return True


def truncated_arguments(
    reply: dict[str, Any], offered: dict[str, dict[str, Any]], rng: random.Random
) -> bool:
    """A call's arguments cut in half, so they are not JSON."""
    call = _target(reply, offered, rng)
    if call is None:
        return False
    text = str(call["function"].get("arguments") or "{}")
    cut = text[: len(text) // 2]
    if not cut or _parses(cut):  # "" reads as no arguments, "4" of "42" as a number
        cut = '{"'
    call["function"]["arguments"] = cut
    return True


def non_object_arguments(
    reply: dict[str, Any], offered: dict[str, dict[str, Any]], rng: random.Random
) -> bool:
    """A call's arguments replaced by JSON that is not an object."""
    call = _target(reply, offered, rng)
    if call is None:
        return False
    call["function"]["arguments"] = rng.choice(NOT_OBJECTS)
    return True


def wrong_type(
    reply: dict[str, Any], offered: dict[str, dict[str, Any]], rng: random.Random
) -> bool:
    """One argument of a call given a value of another type than its schema declares
    (or, undeclared, than it had)."""
    choices: list[tuple[dict[str, Any], dict[str, Any], str, Any]] = []
    for call in _calls(reply):
        try:
            args = json.loads(call["function"].get("arguments") or "{}")
        except ValueError:
            continue
        if not isinstance(args, dict):
            continue
        properties = (offered.get(call["function"].get("name")) or {}).get("properties") or {}
        for key, value in args.items():
            declared = (properties.get(key) or {}).get("type")
            other = _other_type(declared if isinstance(declared, str) else None, value, rng)
            if other is not _NONE:
                choices.append((call, args, key, other))
    if not choices:
        return False
    call, args, key, other = rng.choice(choices)
    call["function"]["arguments"] = json.dumps({**args, key: other})
    return True


_NONE: Final = object()
"""No value of another type fits."""


def _other_type(declared: str | None, value: Any, rng: random.Random) -> Any:
    """A value no lax validator turns into the declared type (pydantic reads "42" as a
    number and "yes" as a boolean, so those are avoided)."""
    kind = declared or _json_type(value)
    if kind == "string":
        return rng.choice((42, [value]))
    if kind in ("integer", "number"):
        return "not a number"
    if kind == "boolean":
        return [value]
    if kind == "array":
        return "not a list"
    if kind == "object":
        return "not an object"
    return _NONE


def _json_type(value: Any) -> str | None:
    """The JSON schema type of a value."""
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    for python, name in ((str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, python):
            return name
    return None


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


MUTATE: Final = {
    "invented_tool": invented_tool,
    "truncated_arguments": truncated_arguments,
    "non_object_arguments": non_object_arguments,
    "wrong_type": wrong_type,
}
"""The mutation of each kind that changes the upstream's answer."""


def refusal(status: int, kind: str, message: str, **headers: str) -> _Answer:
    """An OpenAI-style error answer."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return _Answer(
        status,
        [("Content-Type", "application/json"), *headers.items()],
        json.dumps(body).encode(),
    )


def injected_error(kind: Kind) -> _Answer:
    """The answer of a fault that stands in for the upstream's."""
    if kind == "rate_limited":
        return refusal(
            429,
            "rate_limit_error",
            f"Rate limit reached; retry after {RETRY_AFTER_S} s (injected by the fault proxy)",
            **{"Retry-After": str(RETRY_AFTER_S)},
        )
    return refusal(
        500,
        "server_error",
        "The server had an error processing your request (injected by the fault proxy)",
    )


# --- the HTTP side ----------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """The proxy's listening socket, one thread per connection."""

    daemon_threads = False  # so that close() waits for the requests in hand

    def __init__(self, proxy: FaultProxy) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.proxy = proxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that stopped waiting (it timed out on a stall) is not the proxy's fault.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """One request: forwarded, maybe with a fault. HTTP/1.0, so one request per
    connection and no thread waits on an idle one."""

    server: _Server
    timeout = 30  # a connection that never sends its request holds close() up no longer

    def _proxy(self) -> None:
        proxy = self.server.proxy
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chat = self.command == "POST" and urlsplit(self.path).path.rstrip("/").endswith(
            "/chat/completions"
        )
        plan = proxy._plan() if chat else None
        kind = plan.kind if plan is not None else None
        if plan is not None and kind in ("server_error", "rate_limited"):
            proxy._record(plan, kind)
            self._send(injected_error(cast(Kind, kind)))
            return
        answer = proxy._forward(self.command, self.path, self.headers, body)
        if plan is not None and kind == "stalled":
            proxy._record(plan, kind)
            if not proxy._stall():
                return  # closed while holding it: the answer is dropped
        elif plan is not None and kind is not None:
            answer = proxy._mutate(plan, kind, body, answer)
        self._send(answer)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy

    def _send(self, answer: _Answer) -> None:
        self.send_response(answer.status)
        for k, v in answer.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the log worth reading is FaultProxy.log
