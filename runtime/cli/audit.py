"""Policy files and the signed audit trail: check, verify, export, keys."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from tether.memory.audit import AuditKey, key_id, load_public_key, public_pem, resolve_key_path
from tether.memory.coverage import verify_trail
from tether.memory.episodes import load_timeline
from tether.memory.errors import AuditKeyError, EvidenceError
from tether.memory.store import Store
from tether.runtime.cli._render import _count, _esc, err, out
from tether.runtime.cli._shared import Db, Json, _episode_id, handled
from tether.runtime.evidence import export_bundle, verify_bundle
from tether.topologies.policy import Policy


@handled
def policy_check(
    file: Annotated[Path, typer.Argument(help="A policy file (.toml, .yaml or .yml).")],
) -> None:
    """Validate a policy file: every problem at once, each with its path; exit 1 if any."""

    policy = Policy.load(file)
    effects = sorted({r.effect for r in policy.rules})
    out.print(
        f"{file}: {_count(len(policy.rules), 'rule')} ({', '.join(effects) or 'none'}), valid",
        markup=False,
    )


PublicKeys = Annotated[
    list[Path] | None,
    typer.Option(
        "--key",
        help="A public key (PEM) to check signatures with; repeat for rotated keys. "
        "Default: the public half of the signing key file.",
    ),
]


AuditKeyFile = Annotated[
    Path | None,
    typer.Option(
        "--audit-key",
        help="The Ed25519 key file that signs the audit trail (as `tether --audit-key`, "
        "which this overrides).",
    ),
]


def _signing_key_file(audit_key: Path | None, *, public_too: bool = False) -> Path:
    """The signing key file an audit command uses; ``AuditKeyError`` saying where it looked
    and how to name one if it is not there (these commands never make one)."""

    path = resolve_key_path(audit_key)
    if path.exists():
        return path
    if audit_key is not None:
        whence = "given with --audit-key"
    elif os.environ.get("TETHER_AUDIT_KEY"):
        whence = "named by TETHER_AUDIT_KEY or tether --audit-key"
    else:
        whence = "the default, under the current directory"
    how = "pass the key that signed the trail with --audit-key PATH"
    if public_too:
        how += " (or its public half with --key PUB.pem, from `tether audit key` where it is)"
    raise AuditKeyError(str(path), f"no such file ({whence}); {how}")


def _public_keys(paths: list[Path] | None, audit_key: Path | None = None) -> dict[str, Any]:
    """The public keys to check signatures with: key id → (key, the file it came from)."""

    if not paths:
        path = _signing_key_file(audit_key, public_too=True)
        return {(k := AuditKey.load(path)).id: (k.public, str(path))}
    keys = {}
    for path in paths:
        public = load_public_key(_read_key(path), str(path))
        keys[key_id(public)] = (public, str(path))
    return keys


def _read_key(path: Path) -> bytes:

    try:
        return path.read_bytes()
    except OSError as e:
        raise AuditKeyError(str(path), e.strerror or str(e)) from e


@handled
def audit_verify(
    db: Db = None, key: PublicKeys = None, audit_key: AuditKeyFile = None, as_json: Json = False
) -> None:
    """Check the whole trail, and the trail against the events: exit 0 if intact, 1 naming
    the first record that breaks it or the first decision event without its record."""

    with Store(db, mode="existing") as store:
        keys = _public_keys(key, audit_key)
        verdict = verify_trail(store, {k: public for k, (public, _) in keys.items()})
    if as_json:
        out.print_json(data=asdict(verdict) | {"intact": verdict.intact})
    elif verdict.intact:
        out.print(
            f"audit trail intact: {_count(verdict.records, 'record')}, "
            f"{_count(verdict.signatures, 'signature')}, key {', '.join(keys)}; "
            f"{_count(verdict.decisions or 0, 'decision event')}, each accounted for"
        )
    elif verdict.foreign_key is not None:
        given = "; ".join(f"{k}, {source}" for k, (_, source) in keys.items())
        if verdict.signatures == 0:
            said = (
                f"audit trail signed by key {verdict.foreign_key}, not the key given "
                f"({given}): no sign of tampering, the wrong key; pass the key that signed "
                "it with --audit-key PATH, or its public half with --key PUB.pem"
            )
        else:
            said = (
                f"audit trail checked up to record {verdict.records}; record {verdict.bad} "
                f"is signed by key {verdict.foreign_key}, not the key given ({given}): if "
                "the key was rotated, pass each public key (--key old.pem --key new.pem)"
            )
        err.print(f"[bold red]error:[/] {_esc(said)}", markup=True)
    elif verdict.gap:
        err.print(
            f"[bold red]audit trail does not match the events:[/] {_esc(verdict.gap)}",
            markup=True,
        )
    else:
        err.print(
            f"[bold red]audit trail broken at record {verdict.bad}:[/] "
            f"{_esc(verdict.problem)} ({_count(verdict.records, 'record')} before it "
            f"{'is' if verdict.records == 1 else 'are'} intact)",
            markup=True,
        )
    if not verdict.intact:
        raise typer.Exit(1)


@handled
def audit_export(
    episode: Annotated[str, typer.Argument(help="The episode's id.")],
    db: Db = None,
    audit_key: AuditKeyFile = None,
) -> None:
    """Print an episode's evidence bundle (a signed DSSE envelope) as JSON."""

    episode_id = _episode_id(episode, db)
    key = AuditKey.load(_signing_key_file(audit_key))
    with Store(db, mode="existing") as store:
        load_timeline(store, episode_id)  # EpisodeNotFound for an unknown id
        bundle = export_bundle(store, str(episode_id), key, datetime.now(UTC))
    sys.stdout.write(json.dumps(bundle, indent=2) + "\n")


@handled
def audit_verify_bundle(
    bundle: Annotated[Path, typer.Argument(help="An evidence bundle from `tether audit export`.")],
    key: Annotated[Path, typer.Option("--key", help="The signer's public key (PEM).")],
) -> None:
    """Check an evidence bundle with the public key alone: exit 0 if it is intact."""

    [(public, _)] = _public_keys([key]).values()
    try:
        data = json.loads(bundle.read_text())
    except OSError as e:
        raise EvidenceError(f"{bundle}: {e.strerror or e}") from e
    except ValueError as e:
        raise EvidenceError(f"{bundle}: not JSON ({e})") from e
    checked = verify_bundle(data, public)
    out.print(
        f"evidence intact: episode {checked.episode}, {_count(checked.records, 'record')}, "
        f"signed by key {checked.key}"
    )


@handled
def audit_key_public(audit_key: AuditKeyFile = None) -> None:
    """Print the signing key's public half (PEM), creating the key if it does not exist."""

    path = resolve_key_path(audit_key)
    key = AuditKey.load(path, create=True)
    sys.stdout.write(public_pem(key.public).decode())
    err.print(f"key {key.id} ({path})")
