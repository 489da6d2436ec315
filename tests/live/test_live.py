"""The harness's promises against a real, stochastic model (``make live``).

SmolLM2-135M-Instruct, served on this machine by llama-cpp-python, drives the refund desk
and the release gate N times each (``TETHER_LIVE_N``, default 20), with a different seed
and some temperature every time; every other episode talks to it through a proxy that
mutates a fraction of its answers (an invented tool, broken or mistyped arguments, a 500,
a 429, a stall). Whatever the model does, after every episode the store alone must show:
no effect against a rail or a policy, every action through the stages in order and the
audit trail intact, budgets kept and the episode ended, every malformed call recorded and
answered, no planted secret anywhere, and a replay that renders. Then the server is
stopped and every episode re-executes identically from the record alone.
"""

from __future__ import annotations

import os
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.agents.model import Price
from tether.agents.openai_compat import OpenAIModel
from tether.memory import RandomIds, Store, SystemClock
from tether.memory.events import ModelResponded, agent_stream_id
from tether.runtime.cli import app
from tether.runtime.escalation import Escalations
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.inbox import Inbox
from tether.runtime.model_server import MODEL_NAME, Steer
from tether.runtime.reexecute import reexecute
from tether.runtime.supervisor import EpisodeReport, RootSupervisor
from tether.topologies import Topology
from tether.topologies.loader import Loaded, load_file, load_module

from .conftest import SUMMARY
from .properties import check_episode, summary
from .proxy import KINDS, FaultProxy

pytestmark = pytest.mark.live

N = int(os.environ.get("TETHER_LIVE_N", "20"))
ROOT = Path(__file__).resolve().parents[2]

PLANTED = {
    "TETHER_SECRET_LIVE_KEY": "sk-live-planted-4f9a1c7e2b",
    "TETHER_SECRET_DB_PASS": "db-pass-planted-8d3e6b0a5c",
}
"""Secrets in the environment: the model's API key is a handle to the first; neither
value may reach the store or any output."""

PRICE = Price(Decimal("0.10"), Decimal("0.40"))
"""A price per million tokens, so every turn's reported usage is priced and recorded."""


def examples() -> list[Loaded]:
    return [
        load_module("tether.topologies.demo"),
        load_file(ROOT / "examples" / "release_gate.py"),
    ]


def live(loaded: Loaded, base_url: str, seed: int, timeout_s: float) -> Topology:
    """The example with every agent on the real model (through ``base_url``)."""
    import dataclasses

    model = OpenAIModel(
        MODEL_NAME,
        base_url=base_url,
        api_key="secret://live-key",
        price=PRICE,
        temperature=0.8,
        seed=seed,
        max_tokens=96,
        timeout_s=timeout_s,
        tool_choice=Steer(seed),  # (it says whether to call a tool; the model says the rest)
    )
    return loaded.topology.with_agents(lambda a: dataclasses.replace(a, model=model))


def supervisor(topology: Topology, store: Store) -> RootSupervisor:
    clock, ids = SystemClock(), RandomIds()
    return RootSupervisor(topology, store, LocalHost(Host(topology, store, clock, ids)), clock, ids)


def run_episode(topology: Topology, loaded: Loaded, store: Store) -> EpisodeReport:
    """Run one episode to its end; a person approves whatever waits for approval (the
    rails ran before them, and run again after), and aborts an escalation."""
    report = supervisor(topology, store).start(
        loaded.task or {}, loaded.context, {"kind": "python", "name": topology.name}, loaded.subject
    )
    for _ in range(4):
        if report.status != "waiting":
            break
        inbox, asking = Inbox(store, SystemClock()), Escalations(store, SystemClock())
        for item in inbox.items("pending"):
            if item.request.episode_id == report.episode_id:
                inbox.approve(item.id, "live-suite", "approved by the live suite")
        for x in asking.items():
            if x.request.episode_id == report.episode_id:
                answer = "abort" if "abort" in x.request.options else "not-done"
                asking.decide(x.id, answer, "live-suite", "ended by the live suite")
        report = supervisor(topology, store).resume(report.episode_id)
    return report


def shown(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    return result.output


def test_the_harness_holds_whatever_the_real_model_does(
    model_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    base_url = model_server if isinstance(model_server, str) else model_server.base_url
    db = f"sqlite:///{tmp_path / 'live.db'}"
    ran: list[tuple[Any, Topology, bool]] = []
    injected: Counter[str] = Counter()
    reports = []
    with Store(db) as store:
        for loaded in examples():
            for i in range(N):
                faulty = i % 2 == 1
                if faulty:
                    with FaultProxy(
                        base_url, fraction=0.3, kinds=KINDS, seed=i, stall_s=6.0
                    ) as proxy:
                        topology = live(loaded, proxy.url, seed=i, timeout_s=5.0)
                        report = run_episode(topology, loaded, store)
                    injected.update(proxy.injected)
                else:
                    topology = live(loaded, base_url, seed=i, timeout_s=20.0)
                    report = run_episode(topology, loaded, store)
                episode = str(report.episode_id)
                output = "\n".join(
                    (
                        shown("replay", episode, "--db", db),
                        shown("inbox", "list", "--all", "--db", db),
                        shown("episodes", "--db", db),
                    )
                )
                reports.append(
                    check_episode(
                        store,
                        report.episode_id,
                        topology,
                        secrets=dict(PLANTED),
                        output=output,
                    )
                )
                ran.append((report, topology, faulty))
        # The server goes away: re-execution needs nothing but the record.
        if not isinstance(model_server, str):
            model_server.stop()
            assert not model_server.answers()
        identical = 0
        for report, topology, _ in ran:
            done = reexecute(store, report.episode_id, topology)
            assert done.identical, (report.episode_id, done.divergence)
            turns = sum(
                1
                for name in topology.agents()
                for e in store.read(agent_stream_id(report.episode_id, name))
                if isinstance(e, ModelResponded)
            )
            assert done.fed_back["model_turns"] == turns
            identical += 1
    table = summary(reports)
    faults = ", ".join(f"{k} {injected[k]}" for k in KINDS) or "none"
    SUMMARY.append(
        f"live suite: {len(ran)} episodes ({N} each of refund_desk and release_gate), "
        f"{sum(1 for *_, f in ran if f)} through the fault proxy\n"
        f"faults injected: {faults}\n"
        f"re-executed identically with the server stopped: {identical} of {len(ran)}\n"
        f"{table}"
    )
    violations = [v for r in reports for v in r.violations]
    assert not violations, violations
