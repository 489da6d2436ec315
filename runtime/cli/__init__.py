"""The ``tether`` command: run fleets, decide approvals, replay episodes.

Every command takes ``--db URL`` (or ``TETHER_DB``). Bad input gets one line naming the
problem and a non-zero exit, never a traceback. This module is the command tree: each
command is written in its family's module and registered here, in the order ``--help``
lists them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tether.runtime.cli import audit, episodes, inbox, memory, status

app = typer.Typer(
    help="tether: run a fleet of AI agents safely, and replay what it did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
inbox_app = typer.Typer(
    help="The approvals inbox: actions waiting for a person.", no_args_is_help=True
)
app.add_typer(inbox_app, name="inbox")
policy_app = typer.Typer(help="Policies an operator writes in TOML or YAML.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
audit_app = typer.Typer(
    help="The signed audit trail of every decision, and evidence bundles for auditors.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")
db_app = typer.Typer(
    help="The store's schema: upgrade a store an older tether made.", no_args_is_help=True
)
app.add_typer(db_app, name="db")


@app.callback()
def _options(
    audit_key: Annotated[
        Path | None,
        typer.Option(
            "--audit-key",
            envvar="TETHER_AUDIT_KEY",
            show_envvar=True,
            help="The Ed25519 key file that signs the audit trail (default "
            ".tether/audit.key; created if missing by the commands that record, never by "
            "`audit verify`). Keep it apart from the database.",
        ),
    ] = None,
) -> None:
    if audit_key is not None:
        os.environ["TETHER_AUDIT_KEY"] = str(audit_key.expanduser().resolve())


# Running episodes, then looking back at them.
app.command()(episodes.demo)
app.command("run")(episodes.run_file)
app.command()(episodes.validate)
app.command()(episodes.resume)
app.command()(episodes.cancel)
app.command()(episodes.fork)
app.command()(episodes.episodes)
app.command()(episodes.replay)
app.command()(episodes.diff)
# What the fleet remembers, and forgetting it.
app.command()(memory.facts)
app.command()(memory.forget)
app.command()(memory.redact)
app.command()(memory.retain)
db_app.command("upgrade")(memory.db_upgrade)
# The approvals inbox.
inbox_app.command("list")(inbox.inbox_list)
inbox_app.command("escalations")(inbox.inbox_escalations)
inbox_app.command("retry")(inbox.inbox_retry)
inbox_app.command("accept")(inbox.inbox_accept)
inbox_app.command("abort")(inbox.inbox_abort)
inbox_app.command("resolve")(inbox.inbox_resolve)
inbox_app.command("show")(inbox.inbox_show)
inbox_app.command("digest")(inbox.inbox_digest)
inbox_app.command("approve")(inbox.inbox_approve)
inbox_app.command("deny")(inbox.inbox_deny)
app.command()(status.status)
# Policies and the audit trail.
policy_app.command("check")(audit.policy_check)
audit_app.command("verify")(audit.audit_verify)
audit_app.command("export")(audit.audit_export)
audit_app.command("verify-bundle")(audit.audit_verify_bundle)
audit_app.command("key")(audit.audit_key_public)


def main() -> None:
    """Entry point of the ``tether`` script."""
    app()
