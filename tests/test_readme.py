"""The README's Python code runs, in order, as a newcomer would run it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_examples_run(
    ray_session: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in blocks:
        # dont_inherit: the README runs as a user's script would, without this module's
        # ``from __future__ import annotations``.
        exec(compile(block, str(README), "exec", dont_inherit=True), namespace)
    from tether.runtime import EpisodeReport

    report = namespace["report"]
    assert isinstance(report, EpisodeReport)
    assert report.status == "completed"
    printed = capsys.readouterr().out
    # The payment to ACME ran; the one to the attacker was stopped at the boundaries.
    assert "clerk pay executed" in printed
    assert "clerk pay denied [('boundaries', 'deny'), ('record', 'denied')]" in printed
    # Every execution attempt is on record: the payment ran in one.
    assert "clerk pay ['attempt 1']" in printed
    # The side-effect declarations read as they say.
    pay_once, wire = namespace["pay_once"], namespace["wire"]
    assert pay_once.idempotent and pay_once.reconcile is None  # type: ignore[attr-defined]
    assert not wire.idempotent and wire.reconcile is namespace["wired"]  # type: ignore[attr-defined]
