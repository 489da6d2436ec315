"""The live suite's fixtures: one real model server for the session (``make live``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

SUMMARY: list[str] = []
"""What the live suite reports at the end (the per-property table), printed by the
terminal summary so ``make live`` shows it."""


@pytest.fixture(scope="session")
def model_server() -> Iterator[Any]:
    """The small model on llama-cpp-python, started once (or the one at
    ``TETHER_LIVE_BASE_URL``): tests stop it themselves when they need it gone."""
    from tether.runtime.model_server import ModelServer

    given = os.environ.get("TETHER_LIVE_BASE_URL")
    if given:
        yield given
        return
    with ModelServer() as server:
        yield server


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for block in SUMMARY:
        terminalreporter.write_line("")
        for line in block.splitlines():
            terminalreporter.write_line(line)
