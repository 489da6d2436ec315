"""The CLI on bad input: one line naming the problem, a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.memory import StepClock, Store
from tether.runtime.cli import app

from .conftest import ONE_AGENT_FILE


def fails(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output


@pytest.fixture
def empty_store(sqlite_url: str) -> str:
    """The URL of a store that holds nothing yet (a command that reads never makes one)."""
    Store(sqlite_url).close()
    return sqlite_url


@pytest.mark.parametrize("episode", ["nope", "00000000-0000-0000-0000-00000000dead"])
def test_an_unknown_episode_is_named(empty_store: str, episode: str) -> None:
    out = fails("replay", episode, "--db", empty_store)
    assert "no episode" in out and "tether episodes" in out


def test_a_bad_db_url_is_named() -> None:
    out = fails("episodes", "--db", "mysql://x/y")
    assert "--db 'mysql://x/y': unsupported backend 'mysql'" in out


def test_a_password_in_a_bad_url_is_not_printed() -> None:
    out = fails("episodes", "--db", "mysql://root:hunter2@db/x")
    assert "hunter2" not in out and "***" in out


def test_resuming_an_unknown_episode_is_named(empty_store: str) -> None:
    out = fails("resume", "00000000-0000-0000-0000-00000000beef", "--db", empty_store)
    assert "no episode" in out


def test_an_unreachable_db_is_named() -> None:
    out = fails("inbox", "list", "--db", "postgresql://postgres@127.0.0.1:1/test")
    assert "is unavailable" in out


def test_tether_db_is_read_from_the_environment(tmp_path: Path) -> None:
    env = {"TETHER_DB": f"sqlite:///{tmp_path / 'env.db'}"}
    # No store there yet: the error names the URL the environment gave.
    result = CliRunner().invoke(app, ["episodes", "--json"], env=env)
    assert result.exit_code == 1
    assert f"no tether store at sqlite:///{tmp_path / 'env.db'}" in result.output
    # Once there is one, that is the store the command reads.
    Store(env["TETHER_DB"]).close()
    result = CliRunner().invoke(app, ["episodes", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "[]"


def test_a_malformed_topology_file_is_named(tmp_path: Path, sqlite_url: str) -> None:
    f = tmp_path / "fleet.py"
    f.write_text("topology = 1 +\n")
    out = fails("run", str(f), "--db", sqlite_url)
    assert "fleet.py" in out and "SyntaxError" in out


def test_an_invalid_task_is_named(tmp_path: Path, sqlite_url: str) -> None:
    f = tmp_path / "fleet.py"
    f.write_text(ONE_AGENT_FILE)
    assert "--task: not valid JSON" in fails("run", str(f), "--task", "{oops", "--db", sqlite_url)
    assert "--task: must be a JSON object" in fails(
        "run", str(f), "--task", "[1]", "--db", sqlite_url
    )


def test_a_cluster_address_nothing_answers_at_is_named(sqlite_url: str) -> None:
    out = fails("demo", "--address", "127.0.0.1:1", "--db", sqlite_url)
    assert "nothing answers at --address 127.0.0.1:1" in out


def test_an_unknown_approval_is_named(empty_store: str) -> None:
    out = fails("inbox", "approve", "not-an-id", "--db", empty_store)
    assert "no approval request 'not-an-id'" in out


def test_an_empty_inbox_says_so(empty_store: str) -> None:
    result = CliRunner().invoke(app, ["inbox", "list", "--db", empty_store])
    assert result.exit_code == 0
    assert "nothing waits for a person" in result.output


def test_a_bad_url_loses_no_recorded_data(sqlite_url: str) -> None:
    # A typo in --db must not touch the real store.
    with Store(sqlite_url) as store:
        from tether.runtime.inbox import Inbox

        assert Inbox(store, StepClock()).items() == []
    fails("episodes", "--db", "sqlite://")
    assert Path(sqlite_url.removeprefix("sqlite:///")).exists()
