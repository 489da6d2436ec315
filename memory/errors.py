"""Every error tether raises, as one tree under ``TetherError``.

Users catch families, not strings. An error carries its evidence as attributes and has
no side effects. Signals (an action needs approval, an agent handed off, a budget ran
out inside the gate) are values or events, never these exceptions.

    TetherError
    ├── ConfigError                 bad input from a person: fix the named field
    │   ├── TopologyError           a fleet definition; lists every problem with its path
    │   ├── StoreUrlError           a --db / TETHER_DB value that is not a usable URL
    │   ├── TopologyLoadError       a topology file that cannot be imported or has no fleet
    │   ├── AuditKeyError           an audit signing or public key file that cannot be used
    │   ├── PolicyError             a policy (Python, TOML or YAML) with problems, with paths
    │   └── AmbiguousId             an id prefix that starts more than one id
    ├── StoreError                  the event store
    │   ├── StoreMissing            no tether store at the URL (a typo, another app's database)
    │   ├── StoreNotInitialised     a database of other tables; --init adds tether's to it
    │   ├── StoreUnavailable        the database cannot be reached or opened
    │   │   └── StoreReadOnly       the database can be read, not written
    │   ├── StreamConflict          another writer appended to the same stream first
    │   ├── StoreCorrupt            a stored record cannot be decoded (names stream and position)
    │   ├── StoreFormatError        the database was written by an incompatible tether
    │   │   ├── StoreOutdated       an older schema; `tether db upgrade` brings it up to date
    │   │   └── StoreTooNew         a schema made by a newer tether
    │   ├── LeaseLost               a runner whose episode lease was taken over: refused
    │   └── AuditTampered           the audit trail's last record was not written by tether
    ├── NotFound                    a named thing does not exist
    │   ├── EpisodeNotFound
    │   └── ApprovalNotFound
    ├── EpisodeErased               an erased episode can be replayed, not run again
    ├── EpisodeLeased               another runner holds the episode's lease: nothing ran
    ├── EpisodeEnded                the episode was completed, failed or cancelled: it cannot run
    ├── TopologyChanged             the topology changed since the episode started
    ├── ApprovalError               an approval cannot be decided as asked (already decided)
    ├── EvidenceError               an evidence bundle that does not verify
    ├── ModelError                  a model could not produce a turn
    │   ├── TransientModelError     raised by models for failures worth retrying
    │   └── ScriptExhausted         the scripted model has no turn left for a request
    ├── ToolError                   a tool raised while executing
    │   └── TransientToolError      raised by tools for failures worth retrying
    ├── BudgetExhausted             a batch of agents a spawn budget cannot start
    └── HostError                   a Ray host actor failed or could not be reached
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class TetherError(Exception):
    """Root of every error tether raises."""


class ConfigError(TetherError):
    """Bad input from a person; the message names the field and the fix."""


class TopologyError(ConfigError):
    """A fleet definition with one or more problems, each with its path."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        head = f"topology has {count} problem{'s' if count != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class StoreUrlError(ConfigError):
    """A store URL that cannot be used."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"--db {url!r}: {reason}; use SQLAlchemy's URL form, e.g. "
            "sqlite:///.tether/tether.db or postgresql://postgres@127.0.0.1:5432/test"
        )


class TopologyLoadError(ConfigError):
    """A topology file that cannot be loaded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class AuditKeyError(ConfigError):
    """An audit key file that cannot be read or is not an Ed25519 key."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"audit key {path}: {reason}")


class PolicyError(ConfigError):
    """A policy with one or more problems, each with its path."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        count = len(self.problems)
        head = f"{source}: policy has {count} problem{'s' if count != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))


class AmbiguousId(ConfigError):
    """A prefix a person typed for an id starts more than one of them."""

    def __init__(self, prefix: str, kind: str, matches: Sequence[str], shown: str) -> None:
        self.prefix = prefix
        self.kind = kind
        self.matches = tuple(matches)
        """Every id it starts, whole."""
        super().__init__(
            f"ambiguous: {prefix!r} matches {len(self.matches)} {kind}s ({shown}); "
            "give more of the id"
        )


class StoreError(TetherError):
    """The event store failed."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or opened."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"store {url} is unavailable: {reason}")


class StoreMissing(StoreError):
    """No tether store at the URL: nothing there, or a database without tether's tables.
    Commands that read (or act on what was recorded) create nothing in its place."""

    def __init__(self, url: str, tables: Sequence[str] | None) -> None:
        self.url = url
        self.tables = None if tables is None else tuple(tables)
        """The tables found there instead; None: there is no database (no such file)."""
        if self.tables is None:
            found = "no such file"
        elif not self.tables:
            found = "an empty database"
        else:
            count = len(self.tables)
            found = (
                f"it holds {count} other table{'s' if count != 1 else ''}: {_listed(self.tables)}"
            )
        super().__init__(f"no tether store at {url} ({found}); check --db")


class StoreNotInitialised(StoreError):
    """A database that holds other tables and no tether store: tether adds its tables
    to it only when told to (``--init``; ``Store(url, mode="init")``)."""

    def __init__(self, url: str, tables: Sequence[str]) -> None:
        self.url = url
        self.tables = tuple(tables)
        count = len(self.tables)
        super().__init__(
            f"{url} holds {count} other table{'s' if count != 1 else ''} "
            f"({_listed(self.tables)}) and no tether store; check --db, or give --init to "
            "add tether's tables to it"
        )


class StoreReadOnly(StoreUnavailable):
    """The database can be read but not written (a read-only file or directory, SQLite's
    ``mode=ro``, a read-only PostgreSQL transaction); nothing of the refused write was
    written."""

    def __init__(self, url: str, reason: str, fix: str = "give a --db you may write to") -> None:
        self.url = url
        self.reason = reason
        self.fix = fix
        """What to change; the store's backend knows (``Backend.read_only_fix``)."""
        StoreError.__init__(self, f"store {url} is read-only ({reason}); {fix}")


def _listed(names: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


class StreamConflict(StoreError):
    """Another writer appended to one of the streams first."""

    def __init__(self, stream_ids: Sequence[str], reason: str) -> None:
        self.stream_ids = tuple(stream_ids)
        super().__init__(f"conflicting append to stream(s) {', '.join(self.stream_ids)}: {reason}")


class StoreCorrupt(StoreError):
    """A stored record cannot be decoded; other streams stay readable."""

    def __init__(self, stream_id: str, position: int, reason: str) -> None:
        self.stream_id = stream_id
        self.position = position
        super().__init__(f"stream {stream_id} position {position} cannot be decoded: {reason}")


class StoreFormatError(StoreError):
    """The event table has another shape than this tether writes."""

    def __init__(self, table: str, missing: list[str], extra: list[str]) -> None:
        self.table = table
        self.missing = missing
        self.extra = extra
        super().__init__(
            f"table {table} was written by an incompatible tether (missing columns {missing}, "
            f"unknown {extra}); point --db at a new database, or migrate this one"
        )


class StoreOutdated(StoreFormatError):
    """The store's schema is older than this tether's: it is opened only once upgraded,
    which changes the database, so only when asked (``tether db upgrade``)."""

    def __init__(self, url: str, found: str, head: str) -> None:
        self.url = url
        self.found = found
        """The store's schema revision (or what stands for it, for an unversioned store)."""
        self.head = head
        """The revision this tether writes."""
        StoreError.__init__(
            self,
            f"store {url} has schema {found}; this tether needs {head}: upgrade it "
            f"with 'tether db upgrade --db {url}' (back it up first)",
        )


class StoreTooNew(StoreFormatError):
    """The store's schema revision is unknown here: a newer tether made it."""

    def __init__(self, url: str, found: str, head: str) -> None:
        self.url = url
        self.found = found
        self.head = head
        StoreError.__init__(
            self,
            f"store {url} has schema {found}, made by a newer tether (this one knows up to "
            f"{head}); upgrade tether to open it",
        )


class AuditTampered(StoreError):
    """The audit trail's last record was not signed by a key holder: tether will not chain
    (and so sign) onto it. Nothing of the refused append was written."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(
            f"audit trail record {seq}: {reason}; nothing more is written until it is "
            "investigated (tether audit verify)"
        )


class NotFound(TetherError):
    """A named thing does not exist."""


class EpisodeNotFound(NotFound):
    """No episode has this id."""

    def __init__(self, episode_id: str) -> None:
        self.episode_id = episode_id
        super().__init__(f"no episode {episode_id!r}; `tether episodes` lists them")


class ApprovalNotFound(NotFound):
    """No approval request has this id."""

    def __init__(self, approval_id: str) -> None:
        self.approval_id = approval_id
        super().__init__(f"no approval request {approval_id!r}; `tether inbox list` shows them")


class EpisodeErased(TetherError):
    """The episode's personal data was erased: it can be replayed, not resumed, forked or
    re-executed (its inputs are gone)."""

    def __init__(self, episode_id: str, subject: str) -> None:
        self.episode_id = episode_id
        self.subject = subject
        super().__init__(
            f"episode {episode_id} was about {subject!r}, whose data was erased; it can be "
            "replayed (`tether replay`), not run again"
        )


class EpisodeLeased(TetherError):
    """Another runner holds the episode's lease; nothing was run or recorded."""

    def __init__(self, lease: Any) -> None:
        self.lease = lease
        """The lease as it stands (``tether.memory.leases.Lease``)."""
        super().__init__(
            f"episode {lease.episode_id} is being run by {lease.holder()} "
            f"(lease until {lease.expires_at()}); wait, or 'tether resume --take-over'"
        )


class LeaseLost(StoreError):
    """This runner's lease on an episode was taken over (or its fencing token is stale):
    the store refused what it tried to record, and it must stop."""

    def __init__(self, episode_id: str, token: int, current: Any = None) -> None:
        self.episode_id = episode_id
        self.token = token
        self.current = current
        """The lease as it stands now, if known."""
        who = f" by {current.owner} ({current.holder()})" if current else ""
        super().__init__(
            f"episode {episode_id}: this runner's lease (token {token}) was taken over{who}; "
            "nothing more was recorded by this runner"
        )


class EpisodeEnded(TetherError):
    """The episode already ended (completed, failed or cancelled); it cannot run again."""

    def __init__(self, episode_id: str, how: str) -> None:
        self.episode_id = episode_id
        self.how = how
        super().__init__(f"episode {episode_id} {how}; it cannot run again")


class TopologyChanged(TetherError):
    """The episode's topology (its file or its policy) changed since the episode started."""

    def __init__(self, episode_id: str, changes: Sequence[str]) -> None:
        self.episode_id = episode_id
        self.changes = tuple(changes)
        super().__init__(
            f"episode {episode_id}: {'; '.join(self.changes)} since it started; "
            "resume it under the changed topology with --accept-changed (recorded), or see "
            "what the change does with 'tether replay --reexecute'"
        )


class ApprovalError(TetherError):
    """An approval request cannot be decided as asked."""

    def __init__(self, approval_id: str, reason: str) -> None:
        self.approval_id = approval_id
        self.reason = reason
        super().__init__(f"approval {approval_id}: {reason}")


class EvidenceError(TetherError):
    """An evidence bundle that is malformed or does not verify against the given key."""


class ModelError(TetherError):
    """A model could not produce a turn."""


class TransientModelError(ModelError):
    """A model call failed in a way worth retrying: a rate limit, a timeout, a 5xx."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        """Seconds the provider asked to wait (``Retry-After``), if it said."""
        super().__init__(message)


class ScriptExhausted(ModelError):
    """The scripted model was asked for a turn it does not have."""

    def __init__(self, agent: str, turn: int, scripted: int) -> None:
        self.agent = agent
        self.turn = turn
        self.scripted = scripted
        super().__init__(
            f"scripted model for agent {agent!r} has {scripted} turn(s); turn {turn} was requested"
        )


class ToolError(TetherError):
    """A tool raised while executing."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"tool {tool!r} failed: {reason}")


class TransientToolError(ToolError):
    """A tool failure worth retrying (a timeout, a 503); tools raise it themselves."""


class BudgetExhausted(TetherError):
    """A request that the budget cannot cover (starting more agents than a supervisor's
    spawn budget allows); nothing of it was recorded."""


class HostError(TetherError):
    """A Ray host actor failed or could not be reached."""

    def __init__(self, host: str, reason: str) -> None:
        self.host = host
        self.reason = reason
        super().__init__(f"host {host}: {reason}")
