"""Argument provenance: where each value an agent passes to a tool came from.

A model's tool call is text; tether does not trust it to say where its values came from.
It knows instead everything the agent was shown, and from where: the operator's task,
the episode's context (records from the system), tool results (system data or untrusted
content, as each tool declares), notes from another agent. Each argument is traced to the
most trusted place it appears in: a record's field holding exactly that value, or else
a text that contains it (an operator who wrote "confirm to ops@example.com" named that
address, whoever else also mentions it); a value that appears nowhere was made up by the
model.

Origins, most trusted first:

- ``operator``: the task of the operator or user who started the episode;
- ``system``: structured records: the context, results of tools that return system data;
- ``agent``: what another agent wrote when it handed the task over;
- ``untrusted``: content a third party wrote: results of other tools, parts of the task
  the topology declares untrusted (a ticket's text), anything quoted from them;
- ``model``: found nowhere: the model produced it.

Rules (``Provenance`` rails) demand an origin, and maybe a source: "the refund recipient
must come from the customer record", so an instruction injected into a ticket cannot
choose it, whatever the amount.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from tether.topologies.policy import ORIGINS

_RANK = {o: i for i, o in enumerate(ORIGINS)}
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")


@dataclass(frozen=True)
class Origin:
    """Where a value came from."""

    kind: str
    """One of ``ORIGINS``."""
    source: str
    """Where exactly: ``context.customer.email``, ``task.ticket.text``, ``result of
    lookup_order (action 1).total``; empty for ``model``."""

    def as_dict(self) -> dict[str, str]:
        return {"origin": self.kind, "source": self.source}


MADE_UP = Origin("model", "")


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(str(value)).normalize()
        except InvalidOperation:
            return None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return Decimal(value.strip()).normalize()
    return None


def _leaves(value: Any, path: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith((p + ".", p + "[")) for p in prefixes)


class Sources:
    """Everything one agent has been shown, with its origin.

    Exact values and the numbers inside texts are looked up in dictionaries; a value inside
    a text is searched in one string per origin (the texts joined), most trusted first, so
    a check costs one C-speed scan per origin however many results the agent has seen."""

    def __init__(self) -> None:
        self._exact: dict[str, Origin] = {}
        self._numbers: dict[Decimal, Origin] = {}
        self._tokens: dict[Decimal, Origin] = {}
        self._texts: dict[str, list[tuple[str, Origin]]] = {kind: [] for kind in ORIGINS}
        self._joined: dict[str, str] = {}

    def add(self, value: Any, path: str, kind: str, *, untrusted: tuple[str, ...] = ()) -> None:
        """Note what ``value`` (a task, a record, a result) holds, found at ``path``.
        Parts under an ``untrusted`` path (relative to ``path``) are untrusted content."""
        prefixes = tuple(f"{path}.{u}" for u in untrusted)
        for where, leaf in _leaves(value, path):
            origin = Origin("untrusted" if _under(where, prefixes) else kind, where)
            number = _number(leaf)
            if number is not None:
                self._keep(self._numbers, number, origin)
            if isinstance(leaf, str) and leaf.strip():
                self._keep(self._exact, leaf.strip().casefold(), origin)
                if number is None:
                    for m in _NUMBER.findall(leaf):
                        token = _number(m)
                        if token is not None:
                            self._keep(self._tokens, token, origin)
                    self._texts[origin.kind].append((leaf.casefold(), origin))
                    self._joined.pop(origin.kind, None)

    @staticmethod
    def _keep(index: dict[Any, Origin], key: Any, origin: Origin) -> None:
        known = index.get(key)
        if known is None or _RANK[origin.kind] < _RANK[known.kind]:
            index[key] = origin

    def _inside(self, key: str, above: int) -> Origin | None:
        """The most trusted text that contains ``key``, of an origin ranked before ``above``."""
        for kind in ORIGINS[:above]:
            texts = self._texts[kind]
            if not texts:
                continue
            joined = self._joined.get(kind)
            if joined is None:
                joined = self._joined[kind] = "\x00".join(t for t, _ in texts)
            if key in joined:
                return next(o for t, o in texts if key in t)
        return None

    def origin_of(self, value: Any) -> Origin:
        """Where one argument came from (for a list or an object: its least trusted part).

        The most trusted origin that holds the value wins, exactly or inside a text: a result
        that also holds what the operator typed does not make it untrusted. Between the two
        of one origin, the exact field is the more precise source."""
        if isinstance(value, dict | list | tuple):
            found = [self.origin_of(leaf) for _, leaf in _leaves(value, "")]
            return max(found, key=lambda o: _RANK[o.kind], default=MADE_UP)
        number = _number(value)
        if number is not None:
            exact, token = self._numbers.get(number), self._tokens.get(number)
            if exact is None or (token is not None and _RANK[token.kind] < _RANK[exact.kind]):
                return token or MADE_UP
            return exact
        if isinstance(value, str) and value.strip():
            key = value.strip().casefold()
            known = self._exact.get(key)
            # Too short a value is inside too many texts to be traced through any of them.
            if len(key) >= 4:
                inside = self._inside(key, _RANK[known.kind] if known else len(ORIGINS))
                if inside is not None:
                    return inside
            return known or MADE_UP
        return MADE_UP  # None, True, False: chosen, not quoted
