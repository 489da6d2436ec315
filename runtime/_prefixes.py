"""Ids a person types: a whole id or, as git does, a unique prefix of it.

Resolved by the CLI against what the store holds, before anything runs; the runtime
itself only ever takes whole ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from itertools import pairwise

from tether.memory.errors import AmbiguousId, ConfigError, TetherError

MIN_PREFIX = 4
"""Hex digits a prefix needs: fewer would name a different id as the store grows."""
SHOWN = 3
"""Matches an ambiguous prefix lists."""


def resolve(
    given: str,
    kind: str,
    known: Callable[[], Iterable[uuid.UUID]],
    missing: Callable[[str], TetherError],
) -> uuid.UUID:
    """The id ``given`` names: itself when whole, else the one ``known`` id it starts
    (dashes and case aside). ``missing(given)`` when it starts none, ``AmbiguousId`` when
    it starts several; ``known`` is only asked for a prefix."""
    text = given.strip()
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    digits = text.replace("-", "").lower()
    if not digits or any(c not in "0123456789abcdef" for c in digits):
        raise missing(given)
    if len(digits) < MIN_PREFIX:
        raise ConfigError(
            f"{given!r} is too short for {_a(kind)} id: give at least {MIN_PREFIX} of its "
            "characters"
        )
    matches = sorted({i for i in known() if i.hex.startswith(digits)})
    if not matches:
        raise missing(given)
    if len(matches) > 1:
        raise AmbiguousId(given, kind, [str(m) for m in matches], _abbreviated(matches))
    return matches[0]


def _abbreviated(matches: list[uuid.UUID]) -> str:
    """The first matches, each cut where it parts from the others (six digits at least)."""
    hexes = [m.hex for m in matches]
    shared = max(
        next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
        for a, b in pairwise(hexes)
    )
    digits = max(shared + 1, 6)
    cut = [_dashed(m, digits) + ".." for m in matches[:SHOWN]]
    return ", ".join(cut + (["..."] if len(matches) > SHOWN else []))


def _dashed(u: uuid.UUID, digits: int) -> str:
    """The first ``digits`` hex digits of ``u`` as it is printed, dashes included."""
    text, seen = str(u), 0
    for end, c in enumerate(text, 1):
        seen += c != "-"
        if seen == digits:
            return text[:end]
    return text


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun
