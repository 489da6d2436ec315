"""The in-memory store (``memory://``): a whole fleet runs on it in one process, its
transactions nest the way the file's do not need to, and Ray host actors, which are
other processes, are refused it in one line. (The conformance suites run on it too:
``test_store.py``, ``test_recorder_contract.py``.)"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tether.memory import SequentialIds, StepClock, Store, list_episodes
from tether.memory.errors import StoreMissing, StoreUrlError, StreamConflict
from tether.memory.events import TaskAssigned
from tether.memory.forgetting import erase_subject
from tether.runtime import run
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import demo

from .conftest import ONE_AGENT_FILE
from .test_store import _task


def test_a_fleet_runs_in_process_on_a_named_memory_store() -> None:
    # A notebook runs the demo without Ray; a second Store of the same name reads it.
    name = f"memory://notebook-{uuid.uuid4().hex[:8]}"
    with Store(name) as store:
        clock, ids = StepClock(), SequentialIds(1)
        host = Host(demo.topology, store, clock, ids)
        report = RootSupervisor(demo.topology, store, LocalHost(host), clock, ids).start(
            demo.task, demo.context
        )
    with Store(name, mode="existing") as again:
        [episode] = list_episodes(again)
        assert episode.episode_id == report.episode_id


def test_an_anonymous_memory_store_is_its_openers_alone_and_gone_when_closed() -> None:
    stream = uuid.uuid4()
    with Store("memory://") as store:
        store.append([_task(stream, 1)])
        with Store("memory://") as other:
            assert other.read(stream) == []  # another anonymous store: another database
        url = store.url
    with pytest.raises(StoreMissing, match="no tether store at memory://"):
        Store(url, mode="existing")


def test_a_read_or_a_failed_append_inside_a_write_transaction_keeps_its_writes() -> None:
    # The one connection is checked out again inside an open transaction: the inner
    # work joins it through a savepoint, and its failure undoes only itself.
    with Store("memory://") as store:
        taken = uuid.uuid4()
        store.append([_task(taken, 1)])
        snapshots = store.snapshots.table
        with store.writing() as conn:
            conn.execute(
                sa.insert(snapshots).values(stream_id="s", kind="k", position=1, state=b"x")
            )
            with pytest.raises(StreamConflict):
                store.append([_task(uuid.uuid4(), 1), _task(taken, 1)])
            fresh = uuid.uuid4()
            store.append([_task(fresh, 1)])
            with store.engine.connect() as inner:  # a read, rolled back when it closes
                assert inner.execute(sa.select(sa.func.count()).select_from(snapshots)).scalar()
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(snapshots.c.stream_id)).scalars().all() == ["s"]
        assert len(store.read(taken)) == 1 and len(store.read(fresh)) == 1


def test_threads_take_turns_on_the_one_connection() -> None:
    # Twenty threads append and read at once; each sees its own events, none is lost.
    with Store("memory://") as store:
        streams = [uuid.uuid4() for _ in range(20)]
        seen: dict[uuid.UUID, int] = {}

        def work(stream: uuid.UUID) -> None:
            store.append([_task(stream, 1)])
            store.append([_task(stream, 2)])
            seen[stream] = len(store.read(stream))

        threads = [threading.Thread(target=work, args=(s,)) for s in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == {s: 2 for s in streams}


def test_erasure_works_on_a_memory_store() -> None:
    # A unit test of a user's erasure flow needs no file: the scrub vacuums the memory.
    with Store("memory://") as store:
        stream = uuid.uuid4()
        store.append([_task(stream, 1)], subject="customer:ada")
        [before] = store.read(stream)
        assert isinstance(before, TaskAssigned) and before.task["n"] == 1
        erase_subject(
            store, "customer:ada", requested_by="dpo", reason="art. 17", clock=StepClock()
        )
        [after] = store.read(stream)
        assert isinstance(after, TaskAssigned) and after.task == {"erased": "customer:ada"}


def test_ray_host_actors_are_refused_a_memory_store_in_one_line(tmp_path: Path) -> None:
    # Host actors are other processes: they could never open this process's memory.
    with pytest.raises(StoreUrlError) as caught:
        run(demo.topology, db="memory://")
    assert "Ray host actors run in other processes" in str(caught.value)
    fleet = tmp_path / "fleet.py"
    fleet.write_text(ONE_AGENT_FILE)
    result = CliRunner().invoke(app, ["run", str(fleet), "--db", "memory://"])
    assert result.exit_code == 1, result.output
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: --db 'memory://': a memory:// store lives in this process")
    assert "give a SQLite file or PostgreSQL" in line
