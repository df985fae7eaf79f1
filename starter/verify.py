"""`deployctl verify FILE`: re-check every signature of an `audit --format json` export, offline (SPEC §9).

The export records, for each accepted signed entry, what was signed (`payload`: the body as sent, with the
deploy's `workflow_id` and the `action`), the `signature` and the public `key` it verified with. Here each
one is checked again with `workflows.signing` against that key alone, and the entry is checked to say
what was signed: the same deploy, action, actor, step and comment, and an identity naming that key's
fingerprint. So an export edited after the fact (a comment reworded, an entry moved to another deploy, a
key swapped) fails, and says where.

What this proves: the holder of each recorded key signed exactly that payload for this deploy. Whether a
key belongs to the person it names is the workers' config's word (`[people.*] ssh_keys`): compare the
fingerprints with the keys you trust. Every entry can also be checked without deployctl, with plain
`ssh-keygen -Y verify` (`ssh_keygen_check_command`, or `deployctl verify FILE --explain N`).

Exit codes: 0 every signature verifies (or there are none), 3 some do not, 2 the file is not an export.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click

from workflows import signing

SIGNED_PREFIXES = ("ssh:", "slack-bridge:")  # identities that say a signature verified
SLACK = "slack"
MAX_FILE = 64 * 1024 * 1024  # an export is kilobytes; this bounds what is read into memory
SAFE_PRINCIPAL = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
FALLBACK_PRINCIPAL = "deployctl-signer"  # an allowed_signers principal when the actor's id is not a safe one
MESSAGE, SIGNATURE, ALLOWED = "message", "message.sig", "allowed_signers"


class NotAnExport(ValueError):
    """The data is not an `audit --format json` export; str() is one line that says why."""


@dataclass(frozen=True)
class Failure:
    """One signed entry that does not verify, and every reason it does not."""

    index: int
    time: str
    action: str
    actor: str
    reasons: tuple[str, ...]

    def line(self) -> str:
        return f"{_where(self.index, self.time, self.action, self.actor)}: {'; '.join(self.reasons)}"


@dataclass(frozen=True)
class VerifyReport:
    workflow_id: str
    total: int  # signed entries (and entries whose identity claims a signature)
    verified: int
    failures: list[Failure] = field(default_factory=list)
    entries: int = 0  # all entries in the export

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        line = f"{self.verified}/{self.total} signatures verify"
        if self.total == 0:
            line += " (no signed entries: identities are claimed)"
        return line

    def lines(self) -> list[str]:
        """What `deployctl verify` prints: each failing entry, then the count."""
        return [f.line() for f in self.failures] + [self.summary()]


# ----------------------------------------------------------------------------------------- checking


def _where(index: int, time: str, action: str, actor: str) -> str:
    return f"audit[{index}] {time} {action} by {actor}"


def _text(value: object) -> str:
    """A value from the file for a one-line report: repr-escaped when it is not plain one-line text."""
    if isinstance(value, str) and value.isprintable() and len(value) <= 80:
        return value
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _shown(value: object) -> str:
    """A value as JSON (so text is quoted and None is null), one printable line, short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        if not text.isprintable():
            text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _entries(data: Mapping[str, Any]) -> tuple[str, list[Mapping[str, Any]]]:
    if not isinstance(data, Mapping):
        raise NotAnExport(f"not an audit export: the file holds a JSON {type(data).__name__}, not an object")
    wid = data.get("workflow_id")
    audit = data.get("audit")
    if not isinstance(wid, str) or not wid or not isinstance(audit, list):
        raise NotAnExport(
            "not an audit export: no workflow_id and audit list (make one with `deployctl audit ID --format json`)"
        )
    for i, entry in enumerate(audit):
        if not isinstance(entry, Mapping):
            raise NotAnExport(f"not an audit export: audit[{i}] is not an object")
    return wid, audit


def claims_signature(entry: Mapping[str, Any]) -> bool:
    """An entry that carries a signature or its evidence, or an accepted one whose identity says it was
    signed (the workflow keeps the evidence of every accepted signed entry; a refused one keeps none)."""
    identity = entry.get("identity")
    return (
        entry.get("signature") is not None
        or entry.get("payload") is not None
        or entry.get("key") is not None
        or (
            entry.get("accepted") is True
            and isinstance(identity, str)
            and identity.startswith(SIGNED_PREFIXES)
        )
    )


def check_entry(entry: Mapping[str, Any], workflow_id: str) -> list[str]:
    """Why one signed entry does not verify (empty: it does)."""
    signature, payload, key = entry.get("signature"), entry.get("payload"), entry.get("key")
    if not isinstance(signature, str) or not signature:
        return ["the entry carries no signature, yet its identity or evidence says it was signed"]
    if not isinstance(payload, Mapping):
        return ["the entry carries no payload (what was signed), so there is nothing to check"]
    if not isinstance(key, str) or not key:
        return ["the entry carries no key to check its signature with"]
    reasons: list[str] = []
    try:
        signing.verify(signature, signing.canonical(payload), [key])
    except signing.BadSignature as err:
        why = str(err).replace("signed by a key that is not one of theirs", "it was made by another key", 1)
        reasons.append(f"the signature does not verify with the entry's key: {why}")
    except (TypeError, ValueError) as err:  # a payload json.dumps cannot write: nothing was signed over it
        reasons.append(f"the payload cannot be the signed text: {err}")

    def differs(name: str, signed: object, recorded: object) -> None:
        if signed != recorded:
            reasons.append(f"signed {name} {_shown(signed)} but the entry says {_shown(recorded)}")

    if payload.get("workflow_id") != workflow_id:
        reasons.append(
            f"signed for deploy {_shown(payload.get('workflow_id'))}, not this export's {_shown(workflow_id)}"
        )
    differs("action", payload.get("action"), entry.get("action"))
    differs("actor", payload.get("actor"), entry.get("actor"))
    if "step" in payload:  # a start's intent names no step
        differs("step", payload.get("step"), entry.get("step"))
    differs("comment", payload.get("comment"), entry.get("comment"))
    reasons += _identity_reasons(entry.get("identity"), key, payload)
    return reasons


def _identity_reasons(identity: object, key: str, payload: Mapping[str, Any]) -> list[str]:
    if not isinstance(identity, str) or not identity.startswith(SIGNED_PREFIXES):
        return [f"identity {_shown(identity)} does not name a key, yet the entry carries a signature"]
    prefix, _, named = identity.partition(":")
    try:
        actual = signing.fingerprint(key)
    except ValueError as err:
        return [f"the entry's key is not a public key line: {err}"]
    reasons = []
    if named != actual:
        reasons.append(f"identity names key {_shown(named)} but the entry's key is {actual}")
    bridged = payload.get("channel") == SLACK
    if prefix == "slack-bridge" and not bridged:
        reasons.append("identity says the Slack bridge signed it, but the signed channel is not slack")
    elif prefix == "ssh" and bridged:
        reasons.append("signed as a Slack click (channel slack), but the identity names a person's key")
    return reasons


def verify_export(data: Mapping[str, Any]) -> VerifyReport:
    """Check every signed entry of an `audit --format json` export; NotAnExport when it is not one."""
    wid, audit = _entries(data)
    failures: list[Failure] = []
    total = 0
    nonces: dict[str, int] = {}
    for i, entry in enumerate(audit):
        if not claims_signature(entry):
            continue
        total += 1
        reasons = check_entry(entry, wid)
        payload = entry.get("payload")
        nonce = payload.get("nonce") if isinstance(payload, Mapping) else None
        if isinstance(nonce, str):
            if nonce in nonces:  # the deploy refuses a nonce used before: a copied entry
                reasons.append(f"its nonce is audit[{nonces[nonce]}]'s too: the deploy accepts a nonce once")
            else:
                nonces[nonce] = i
        if reasons:
            failures.append(
                Failure(
                    index=i,
                    time=_text(entry.get("time")),
                    action=_text(entry.get("action")),
                    actor=_text(entry.get("actor")),
                    reasons=tuple(reasons),
                )
            )
    return VerifyReport(
        workflow_id=wid, total=total, verified=total - len(failures), failures=failures, entries=len(audit)
    )


# ------------------------------------------------------------------------------ plain ssh-keygen


def principal(entry: Mapping[str, Any]) -> str:
    """The allowed_signers principal for an entry: its actor, when that is a plain id."""
    actor = entry.get("actor")
    return actor if isinstance(actor, str) and SAFE_PRINCIPAL.fullmatch(actor) else FALLBACK_PRINCIPAL


def _evidence(entry: Mapping[str, Any]) -> tuple[bytes, str, str]:
    """The message bytes, the armored signature and the key of a signed entry; ValueError if it is not."""
    signature, payload, key = entry.get("signature"), entry.get("payload"), entry.get("key")
    if not isinstance(signature, str) or not isinstance(payload, Mapping) or not isinstance(key, str):
        raise ValueError("the entry carries no signature, payload and key to check")
    key = " ".join(key.split())  # one line in allowed_signers, whatever the export held
    return signing.canonical(payload), signature.strip() + "\n", key


def allowed_signers_line(entry: Mapping[str, Any]) -> str:
    _, _, key = _evidence(entry)
    return f'{principal(entry)} namespaces="{signing.NAMESPACE}" {key}\n'


def ssh_keygen_check_command(entry: Mapping[str, Any], directory: str | Path | None = None) -> str:
    """How to check one entry with plain `ssh-keygen -Y verify`, without deployctl.

    With `directory` (where `write_explain_files` put the files): the one command. Without: a shell script
    that writes the three files into the current directory, then runs it. The message is the bytes that
    were signed: `"deployctl-action-v1\\n"` + the payload as sorted, compact JSON (`signing.canonical`).
    ssh-keygen prints `Good "deployctl" signature for <actor> with <type> key SHA256:…` and exits 0 when
    the signature verifies.
    """
    message, signature, _ = _evidence(entry)
    who = principal(entry)
    if directory is not None:
        d = Path(directory)
        return (
            f"ssh-keygen -Y verify -f {shlex.quote(str(d / ALLOWED))} -I {shlex.quote(who)} "
            f"-n {signing.NAMESPACE} -s {shlex.quote(str(d / SIGNATURE))} < {shlex.quote(str(d / MESSAGE))}"
        )
    return "\n".join(
        [
            f"# audit entry: {_text(entry.get('action'))} by {_text(entry.get('actor'))} at "
            f"{_text(entry.get('time'))}, identity {_text(entry.get('identity'))}",
            "# the message is what was signed: the prefix line, then the payload as sorted compact JSON",
            f"printf '%s' {shlex.quote(allowed_signers_line(entry))} > {ALLOWED}",
            f"printf '%s' {shlex.quote(message.decode('utf-8'))} > {MESSAGE}",
            f"printf '%s' {shlex.quote(signature)} > {SIGNATURE}",
            f"ssh-keygen -Y verify -f {ALLOWED} -I {shlex.quote(who)} -n {signing.NAMESPACE} "
            f"-s {SIGNATURE} < {MESSAGE}",
        ]
    )


def write_explain_files(entry: Mapping[str, Any], directory: str | Path) -> dict[str, Path]:
    """Write the message, signature and allowed_signers files of one entry into `directory`."""
    message, signature, _ = _evidence(entry)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = {MESSAGE: d / MESSAGE, SIGNATURE: d / SIGNATURE, ALLOWED: d / ALLOWED}
    paths[MESSAGE].write_bytes(message)
    paths[SIGNATURE].write_text(signature, encoding="ascii", errors="replace")
    paths[ALLOWED].write_text(allowed_signers_line(entry), encoding="utf-8")
    return paths


# ---------------------------------------------------------------------------------------- command


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"deployctl: {message}", err=True)
    sys.exit(code)


def load_export(file: str) -> Mapping[str, Any]:
    """The export in FILE ('-': stdin) as JSON; NotAnExport with one line when it cannot be read."""
    try:
        if file == "-":
            raw = sys.stdin.buffer.read(MAX_FILE + 1)
        else:
            with open(file, "rb") as f:
                raw = f.read(MAX_FILE + 1)
    except OSError as err:
        raise NotAnExport(f"cannot read {file}: {err.strerror or err}") from None
    if len(raw) > MAX_FILE:
        raise NotAnExport(f"{file} is over {MAX_FILE // (1024 * 1024)} MiB: not an audit export")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise NotAnExport(f"{file} is not UTF-8 text: not an audit export") from None
    except json.JSONDecodeError as err:
        raise NotAnExport(f"{file} is not JSON (line {err.lineno}: {err.msg})") from None
    except RecursionError:
        raise NotAnExport(f"{file} nests too deep to be an audit export") from None
    _entries(data)
    return data


@click.command("verify")
@click.argument("file", metavar="FILE")
@click.option(
    "--explain",
    type=int,
    metavar="N",
    default=None,
    help="write entry audit[N]'s message, signature and allowed_signers files and print the ssh-keygen command",
)
@click.option(
    "--out",
    "out_dir",
    metavar="DIR",
    default=None,
    help="with --explain: the directory for the files (default: a new temporary directory)",
)
def verify_command(file: str, explain: int | None, out_dir: str | None) -> None:
    """Re-check every signature of an `audit --format json` export offline, against the keys it recorded.

    Prints `N/N signatures verify` (exit 0), or each entry that does not and `K/N signatures verify`
    (exit 3). Exit 2 when FILE is not an export.
    """
    try:
        data = load_export(file)
        report = verify_export(data)
    except NotAnExport as err:
        _fail(2, str(err))
    if explain is not None:
        _explain(data, report, explain, out_dir)
        return
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 3)


def _explain(data: Mapping[str, Any], report: VerifyReport, n: int, out_dir: str | None) -> None:
    """`--explain N`: the files and the plain ssh-keygen command for one entry; exit 3 if it fails here."""
    audit = data["audit"]
    if not 0 <= n < len(audit):
        have = f"entries audit[0] to audit[{len(audit) - 1}]" if audit else "no entries"
        _fail(2, f"--explain {n}: the export has {have}")
    entry = audit[n]
    where = _where(n, _text(entry.get("time")), _text(entry.get("action")), _text(entry.get("actor")))
    try:
        _evidence(entry)
    except ValueError as err:
        _fail(2, f"--explain {n}: {where}: {err} (identity {_text(entry.get('identity'))})")
    try:
        directory = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="deployctl-verify-"))
        write_explain_files(entry, directory)
    except OSError as err:
        _fail(2, f"--explain {n}: cannot write the files: {err.strerror or err}")
    failure = next((f for f in report.failures if f.index == n), None)
    click.echo(f"{where}, identity {_text(entry.get('identity'))}")
    click.echo(
        f"  {directory / MESSAGE}: the signed bytes (the prefix line, then the payload as sorted JSON)"
    )
    click.echo(f"  {directory / SIGNATURE}: the SSH signature")
    click.echo(f"  {directory / ALLOWED}: {principal(entry)} and the key the entry recorded")
    click.echo("check it with plain OpenSSH:")
    click.echo(ssh_keygen_check_command(entry, directory))
    if failure is None:
        click.echo("deployctl verify: this entry verifies")
        return
    click.echo(f"deployctl verify: this entry FAILS: {'; '.join(failure.reasons)}")
    sys.exit(3)
