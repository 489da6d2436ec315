"""Secrets as handles: a canary planted as a secret never reaches a persisted byte or a
printed line, even through a tool that echoes it, fails with it, or records it."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from tether.agents import ScriptedModel, ToolContext, call, say, tool
from tether.agents.secrets import MappingSecrets, reveal
from tether.memory import SequentialIds, StepClock, Store, load_timeline
from tether.memory.errors import TransientToolError
from tether.runtime.cli import app
from tether.runtime.handles import LocalHost
from tether.runtime.host import Host
from tether.runtime.supervisor import RootSupervisor
from tether.topologies import Agent, Grant, Role, Supervisor, Topology

CANARY = "canary-9f3b7c21-never-print-me"
OTHER = "db-canary-55e1a0c4d2"


class Login(BaseModel):
    user: str
    password: str


class Key(BaseModel):
    key: str


received: list[str] = []


@tool(open_world=True)
def smtp_send(args: Login, ctx: ToolContext) -> dict[str, Any]:
    """Send mail, logging in with a password (and leaking it every way it can)."""
    received.append(args.password)
    if len(received) == 1:
        raise TransientToolError("smtp_send", f"535 auth failed for {args.user}:{args.password}")
    ctx.record_fact("customer:ada", "mail:last", f"mailed her with {args.password}")
    return {"status": "sent", "debug": f"AUTH PLAIN {args.user}:{args.password}"}


@tool(read_only=True)
def check_login(args: Login, ctx: ToolContext) -> dict[str, Any]:
    """Check a login (it always fails, naming the password in its error)."""
    raise ValueError(f"login {args.user}/{args.password} rejected")


@tool(read_only=True)
def read_config(args: Key, ctx: ToolContext) -> dict[str, Any]:
    """Read a configuration value (a careless tool that reads the secret by itself)."""
    return {"key": args.key, "value": os.environ.get("TETHER_SECRET_SMTP_PASSWORD", "")}


def mailer() -> Topology:
    model = ScriptedModel(
        [
            call("smtp_send", user="bot", password="secret://smtp-password"),
            call("read_config", key="smtp"),
            call("check_login", user="bot", password="secret://smtp-password"),
            # Asking for a secret its grant does not name: denied at the boundaries.
            call("smtp_send", user="bot", password="secret://db-password"),
            say("mail sent"),
        ]
    )
    role = Role(
        "mailer",
        grants=(
            Grant("smtp_send", tier="low", secrets=("smtp-password",)),
            Grant("read_config", tier="low"),
            Grant("check_login", tier="low", secrets=("smtp-password",)),
        ),
    )
    agent = Agent("mailer", role, model, tools=(smtp_send, read_config, check_login))
    return Topology("mail", Supervisor("root", (agent,)))


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_planted_secret_reaches_the_tool_and_nothing_else(
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TETHER_SECRET_SMTP_PASSWORD", CANARY)
    monkeypatch.setenv("TETHER_SECRET_DB_PASSWORD", OTHER)
    received.clear()
    topology = mailer()
    clock, ids = StepClock(), SequentialIds()
    with Store(sqlite_url) as store:
        host = Host(topology, store, clock, ids)
        report = RootSupervisor(topology, store, LocalHost(host), clock, ids).start(
            {"to": "customer:ada"}, {}
        )
        assert report.status == "completed"
        timeline = load_timeline(store, report.episode_id)
    # The tool got the value, on its first attempt and on the retry.
    assert received == [CANARY, CANARY]
    actions = timeline.agents[0].actions
    assert [a.outcome for a in actions] == ["executed", "executed", "failed", "denied"]
    assert "login bot/secret://smtp-password rejected" in actions[2].reason
    assert "secret://db-password is not granted to smtp_send" in actions[3].reason
    episode = str(report.episode_id)
    printed = [
        run("replay", episode, "--db", sqlite_url),
        run("replay", episode, "--json", "--db", sqlite_url),
        run("replay", episode, "--context", "mailer:turn4", "--db", sqlite_url),
        run("facts", "customer:ada", "--history", "--db", sqlite_url),
        run("audit", "export", episode, "--db", sqlite_url),
        run("inbox", "list", "--json", "--db", sqlite_url),
        run("episodes", "--db", sqlite_url),
    ]
    # What was echoed is there, as the handle.
    assert "AUTH PLAIN bot:secret://smtp-password" in printed[1]
    assert "mailed her with secret://smtp-password" in printed[3]
    captured = capsys.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    files = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for secret in (CANARY, OTHER):
        assert secret.encode() not in files  # the database, its WAL, the keys, everything
        assert not any(secret in text for text in printed)
        assert secret not in captured.out + captured.err + logged


def test_a_handle_without_a_value_fails_the_action_in_one_line(sqlite_url: str) -> None:
    received.clear()
    topology = mailer()
    clock, ids = StepClock(), SequentialIds()
    with Store(sqlite_url) as store:
        host = Host(topology, store, clock, ids, secrets=MappingSecrets({}))
        report = RootSupervisor(topology, store, LocalHost(host), clock, ids).start({}, {})
        first = load_timeline(store, report.episode_id).agents[0].actions[0]
    assert first.outcome == "failed" and received == []
    assert "secret://smtp-password: no such secret; set it (e.g. $TETHER_SECRET_SMTP_PASSWORD)" in (
        first.reason
    )


def test_only_a_whole_argument_is_a_handle_and_short_values_are_refused() -> None:
    secrets = MappingSecrets({"api-key": "k-1234567890"})
    revealed = reveal(Login(user="secret://api-key", password="see secret://api-key"), secrets)
    assert revealed == Login(user="k-1234567890", password="see secret://api-key")
    with pytest.raises(Exception, match="shorter than 8 characters"):
        MappingSecrets({"pin": "1234"})
