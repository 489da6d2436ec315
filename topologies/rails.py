"""Rails: boundaries on a tool's arguments or calls, declared on an agent and checked at
the gate's boundaries stage before anything else."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class AllowedValues:
    """Rail: an argument must be one of a set of values (recipients, hosts, paths)."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument."""
    values: tuple[str, ...] = ()
    """Values allowed outright."""
    from_context: str | None = None
    """A dotted path into the episode's trusted context whose value is also allowed
    (``customer.email``): the set comes from records, never from text."""

    @property
    def rule_id(self) -> str:
        return f"allow:{self.tool}.{self.field}"


@dataclass(frozen=True)
class SpendCap:
    """Rail: caps on a numeric argument, per call and summed over the agent's episode."""

    tool: str
    """The tool whose argument is capped."""
    field: str
    """The argument (``amount``)."""
    per_call: Decimal | None = None
    """Largest value one call may carry; None = no per-call cap."""
    per_episode: Decimal | None = None
    """Largest sum over the agent's executed calls in the episode; None = no cap."""
    per_fleet: Decimal | None = None
    """Largest sum over every agent's executed calls of this tool in the episode: one cap
    the whole fleet shares, checked before each call; None = no cap."""

    @property
    def rule_id(self) -> str:
        return f"cap:{self.tool}.{self.field}"


@dataclass(frozen=True)
class AllowedDomains:
    """Rail: the domain of an email address, or the host of a URL, must be one of these
    (or a subdomain of one)."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument (``to``, ``url``)."""
    domains: tuple[str, ...]
    """Domains allowed (``example.com`` also allows ``mail.example.com``)."""

    @property
    def rule_id(self) -> str:
        return f"domain:{self.tool}.{self.field}"


@dataclass(frozen=True)
class AllowedPaths:
    """Rail: a file path must lie inside one of these directories, once ``..`` and
    symbolic links are resolved."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument (``path``)."""
    roots: tuple[str, ...]
    """Directories allowed, with everything below them."""

    @property
    def rule_id(self) -> str:
        return f"path:{self.tool}.{self.field}"


@dataclass(frozen=True)
class Forbidden:
    """Rail: an argument must not be one of these values, nor match these patterns."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument."""
    values: tuple[str, ...] = ()
    """Values refused (compared without regard to case)."""
    patterns: tuple[str, ...] = ()
    """Regular expressions refused wherever they match in the value."""

    @property
    def rule_id(self) -> str:
        return f"forbid:{self.tool}.{self.field}"


@dataclass(frozen=True)
class RateLimit:
    """Rail: at most ``calls`` executed calls of a tool by the agent within any
    ``per_s`` seconds."""

    tool: str
    """The tool."""
    calls: int
    """Calls allowed in the window."""
    per_s: float
    """The window, in seconds."""

    @property
    def rule_id(self) -> str:
        return f"rate:{self.tool}"


@dataclass(frozen=True)
class ReadOnly:
    """Rail: the agent may use only read-only tools among those matching ``tool`` (a glob:
    ``crm_*`` for one integration, ``*`` for all)."""

    tool: str = "*"
    """Which tools (a glob)."""

    @property
    def rule_id(self) -> str:
        return f"read-only:{self.tool}"


@dataclass(frozen=True)
class Provenance:
    """Rail: an argument must come from where the rule says (``runtime/_provenance.py``):
    the operator's task, the system's records, never text a third party wrote."""

    tool: str
    """The tool whose argument is checked."""
    field: str
    """The argument (``recipient``)."""
    origins: tuple[str, ...] = ("operator", "system")
    """Origins allowed: operator, system, agent, untrusted, model."""
    source: str | None = None
    """Also demand this source, or a part of it (``context.customer``: the customer
    record; ``result of lookup_order``: that tool's results)."""

    @property
    def rule_id(self) -> str:
        return f"origin:{self.tool}.{self.field}"


Rail = (
    AllowedValues
    | SpendCap
    | Provenance
    | AllowedDomains
    | AllowedPaths
    | Forbidden
    | RateLimit
    | ReadOnly
)
RAILS = (AllowedValues, SpendCap, Provenance, AllowedDomains, AllowedPaths, Forbidden, RateLimit)
"""Rails on one tool's argument (or, for RateLimit, its calls); ReadOnly takes a glob."""
