"""Secrets as handles: agents, models, policies and memory see ``secret://name``, never
the value.

The delegate resolves a handle inside the tool call, and only there: a tool argument whose
whole value is a handle reaches the tool's function as the secret's value. Whatever comes
back out — the result, an error, a fact the tool records — is scrubbed of every secret
value the store knows before anything records it, so a value never reaches model context,
events, audit, effects, CLI output or an exception's message, even from a tool that
echoes it. Which tool may receive which handle is a grant (``Grant.secrets``), checked
at the boundaries.

Values come from the environment by default (``TETHER_SECRET_SMTP_PASSWORD`` holds
``secret://smtp-password``); ``MappingSecrets`` holds them for tests and embedding.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel

from tether.memory.errors import ConfigError

PREFIX = "secret://"
HANDLE = re.compile(r"secret://([a-z0-9][a-z0-9_.-]*)")
MIN_LENGTH = 8
"""A shorter value cannot be told apart from ordinary text when outputs are scrubbed."""


class Secrets(Protocol):
    """Where secret values come from."""

    def resolve(self, name: str) -> str | None:
        """The value of ``secret://name``, or None if there is none."""
        ...

    def known(self) -> Mapping[str, str]:
        """Every value this store can resolve, by name: what outputs are scrubbed of."""
        ...


def _checked(name: str, value: str) -> str:
    if len(value) < MIN_LENGTH:
        raise ConfigError(
            f"secret://{name}: its value is shorter than {MIN_LENGTH} characters and could "
            "not be kept out of outputs; use a longer one"
        )
    return value


class EnvSecrets:
    """Secrets from environment variables: ``secret://smtp-password`` is
    ``$TETHER_SECRET_SMTP_PASSWORD``."""

    def __init__(self, prefix: str = "TETHER_SECRET_") -> None:
        self.prefix = prefix

    def var(self, name: str) -> str:
        """The environment variable that holds ``secret://name``."""
        return self.prefix + re.sub(r"[^A-Za-z0-9]", "_", name).upper()

    def resolve(self, name: str) -> str | None:
        value = os.environ.get(self.var(name))
        return None if value is None else _checked(name, value)

    def known(self) -> Mapping[str, str]:
        return {
            k[len(self.prefix) :].lower().replace("_", "-"): _checked(k, v)
            for k, v in os.environ.items()
            if k.startswith(self.prefix) and v
        }


class MappingSecrets:
    """Secrets held in a mapping of name → value."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = {name: _checked(name, v) for name, v in values.items()}

    def resolve(self, name: str) -> str | None:
        return self.values.get(name)

    def known(self) -> Mapping[str, str]:
        return self.values


def handles(value: Any) -> set[str]:
    """The names of every handle in a value (strings, lists, objects, nested)."""
    if isinstance(value, str):
        return set(HANDLE.findall(value))
    if isinstance(value, BaseModel):
        return handles(value.model_dump(mode="python"))
    if isinstance(value, dict):
        return {n for v in value.values() for n in handles(v)}
    if isinstance(value, list | tuple | set):
        return {n for v in value for n in handles(v)}
    return set()


def reveal(args: BaseModel, secrets: Secrets) -> BaseModel:
    """``args`` with each argument that is exactly a handle replaced by its value, for the
    tool's function alone. ``ConfigError`` names a handle that has no value."""
    changes: dict[str, str] = {}
    for name in type(args).model_fields:
        value = getattr(args, name)
        if isinstance(value, str) and value.startswith(PREFIX):
            match = HANDLE.fullmatch(value)
            found = secrets.resolve(match.group(1)) if match else None
            if found is None:
                raise ConfigError(
                    f"{value}: no such secret; set it (e.g. $TETHER_SECRET_"
                    f"{re.sub(r'[^A-Za-z0-9]', '_', value[len(PREFIX) :]).upper()})"
                )
            changes[name] = found
    return args.model_copy(update=changes) if changes else args


class Scrubber:
    """Replaces every known secret value in text, objects and lists by its handle."""

    def __init__(self, secrets: Secrets) -> None:
        known = secrets.known()
        # The longest first, so a value that contains another is replaced whole.
        self._pairs = sorted(((v, PREFIX + n) for n, v in known.items()), key=lambda p: -len(p[0]))

    def text(self, value: str) -> str:
        for secret, handle in self._pairs:
            if secret in value:
                value = value.replace(secret, handle)
        return value

    def __call__(self, value: Any) -> Any:
        if not self._pairs:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value
