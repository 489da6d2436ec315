"""Group commit: appends that arrive together share one transaction.

Many agents in one process append at once; each append would otherwise pay for its own
transaction. The first appender to find no commit under way becomes the leader: it takes
every batch queued so far, writes them in one transaction, hands each appender its result,
and goes on while more have queued. The others wait. An append returns only after the
transaction holding it committed; if that transaction fails, its appenders are told so
and nothing of theirs was written.

When a grouped transaction fails on a conflict, the leader writes the group's batches one
by one, so only the conflicting appender gets the conflict. A write may also refuse one
batch alone (a writer whose episode lease was taken over) and commit the rest: its result
for that batch is the error its appender gets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

B = TypeVar("B")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[B, R]):
    batch: B
    done: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None


class GroupCommit(Generic[B, R]):
    """Serializes writes and groups those that queue up behind one another."""

    def __init__(
        self,
        write: Callable[[list[B]], Sequence[R | BaseException]],
        isolate: Callable[[BaseException], bool],
    ) -> None:
        self._write = write
        self._isolate = isolate
        self._lock = threading.Lock()
        self._queue: list[_Waiting[B, R]] = []
        self._leading = False
        self.transactions = 0
        """Transactions written so far (for tests and the benchmark)."""

    @property
    def queued(self) -> int:
        """Appends waiting behind the transaction under way."""
        with self._lock:
            return len(self._queue)

    def submit(self, batch: B) -> R:
        """Write ``batch``; return once its transaction committed, or raise its error."""
        me: _Waiting[B, R] = _Waiting(batch)
        with self._lock:
            self._queue.append(me)
            lead = not self._leading
            if lead:
                self._leading = True
        if lead:
            self._lead()
        else:
            me.done.wait()
        if me.error is not None:
            raise me.error
        assert me.result is not None
        return me.result

    def _lead(self) -> None:
        try:
            while True:
                with self._lock:
                    group, self._queue = self._queue, []
                    if not group:
                        self._leading = False
                        return
                self._commit(group)
        except BaseException:
            # The leader itself is dying (KeyboardInterrupt, a crash hook): hand the lead
            # back so queued appenders are not left waiting on a leader that is gone.
            with self._lock:
                self._leading = False
                orphans, self._queue = self._queue, []
            for w in orphans:
                w.error = RuntimeError("group commit abandoned: its leader failed")
                w.done.set()
            raise

    def _commit(self, group: list[_Waiting[B, R]]) -> None:
        try:
            self.transactions += 1
            results = self._write([w.batch for w in group])
        except BaseException as e:
            if len(group) > 1 and isinstance(e, Exception) and self._isolate(e):
                for w in group:
                    self._commit([w])
                return
            for w in group:
                w.error = e
                w.done.set()
            if not isinstance(e, Exception):
                raise
            return
        for w, r in zip(group, results, strict=True):
            if isinstance(r, BaseException):
                w.error = r
            else:
                w.result = r
            w.done.set()
