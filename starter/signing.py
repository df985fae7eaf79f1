"""Signing actions with the person's own SSH key, through `ssh-keygen -Y sign` (the verifying side is
`workflows.signing`).

ssh-keygen does the signing rather than this process because it reaches every key a person may hold: a
key file (asking for its passphrase on the terminal), a key in ssh-agent, a hardware key. The private
key never passes through deployctl.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from workflows import signing

SSH_KEYGEN = "ssh-keygen"
SIGN_TIMEOUT = 120.0  # a hardware key waits for a touch; a passphrase prompt waits for a person
PUBLIC_PREFIXES = ("ssh-", "ecdsa-", "sk-")
ISSUED_AT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class SigningError(Exception):
    """Signing could not happen; str() is one line that names the key and what went wrong."""


def sign_message(message: bytes, key: str, env: Mapping[str, str] | None = None) -> str:
    """The armored SSH signature of `message` in namespace deployctl, made by ssh-keygen.

    `key` is an OpenSSH private key file, or a public key file whose private half is in ssh-agent
    (then `-U` tells ssh-keygen to sign through the agent). `env`, like subprocess's, replaces the
    environment ssh-keygen sees (e.g. to point SSH_AUTH_SOCK at an agent); it should keep PATH.
    """
    args = ["-Y", "sign", "-n", signing.NAMESPACE, "-f", key]
    if _is_public_key_file(key):
        args.insert(4, "-U")
    return _ssh_keygen(args, key, message, env, SIGN_TIMEOUT).decode("ascii", "replace")


def sign_payload(
    payload: Mapping[str, Any],
    workflow_id: str,
    action: str,
    key: str,
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """`payload` plus issued_at, nonce and a signature over it for this deploy and action.

    issued_at and the nonce are signed too, so the deploy can refuse stale and replayed actions. A naive
    `now` is taken as UTC.
    """
    when = datetime.now(UTC) if now is None else now
    when = when.astimezone(UTC) if when.tzinfo is not None else when.replace(tzinfo=UTC)
    out = {k: v for k, v in payload.items() if k != "signature"}
    out["issued_at"] = when.strftime(ISSUED_AT_FORMAT)
    out["nonce"] = secrets.token_hex(8) if nonce is None else nonce
    message = signing.canonical(signing.signed_body(out, workflow_id, action))
    out["signature"] = sign_message(message, key)
    return out


def public_key_of(key: str) -> str:
    """The public key line of a key file: the file itself if it is one, else KEY.pub, else ssh-keygen -y.

    The line is checked to be a key the deploy can verify, so an unsupported key fails here, not later.
    """
    if _is_public_key_file(key):
        line = _first_line(Path(key))
    elif Path(key + ".pub").is_file():
        line = _first_line(Path(key + ".pub"))
    else:
        line = _ssh_keygen(["-y", "-f", key], key, None, None, SIGN_TIMEOUT).decode("ascii", "replace")
    line = line.strip()
    try:
        signing.parse_public_key(line)
    except ValueError as err:
        raise SigningError(f"cannot sign with {key}: {err}") from None
    return line


def throwaway_key(directory: Path, name: str) -> tuple[Path, str]:
    """A new unencrypted Ed25519 key at directory/name (mode 0600, as ssh-keygen insists) and name.pub.

    For `deployctl dev`/`demo` and the tests, where nobody has a key on record yet.
    """
    directory.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    line = f"{public.decode('ascii')} {name}"
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        f.write(pem)
    path.with_name(name + ".pub").write_text(line + "\n", encoding="ascii")
    return path, line


def _is_public_key_file(key: str) -> bool:
    """A public key file by name (*.pub) or by content (one "ssh-… AAAA…" line, no PEM armor)."""
    if key.endswith(".pub"):
        return True
    try:
        with open(key, "rb") as f:
            head = f.read(64)
    except OSError:
        return False  # ssh-keygen reports the missing or unreadable file in its own words
    return head.lstrip().decode("ascii", "replace").startswith(PUBLIC_PREFIXES)


def _first_line(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise SigningError(f"cannot sign with {path}: {err.strerror or err}") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise SigningError(f"cannot sign with {path}: the file holds no public key")
    return lines[0]


def _ssh_keygen(
    args: list[str], key: str, stdin: bytes | None, env: Mapping[str, str] | None, timeout: float
) -> bytes:
    """Run ssh-keygen; its stdout, or SigningError with the first line of what it said went wrong."""
    try:
        done = subprocess.run(
            [SSH_KEYGEN, *args],
            input=stdin,
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise SigningError(
            f"cannot sign with {key}: ssh-keygen is not installed (install openssh-client)"
        ) from None
    except subprocess.TimeoutExpired:
        raise SigningError(f"cannot sign with {key}: ssh-keygen did not finish in {timeout:.0f} s") from None
    if done.returncode != 0 or not done.stdout.strip():
        raise SigningError(f"cannot sign with {key}: {_reason(done.stderr, done.returncode)}")
    return done.stdout


def _reason(stderr: bytes, returncode: int) -> str:
    """ssh-keygen's first line that says something: it also prints progress ("Signing data on …")."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("Signing data on"):
            return line
    return f"ssh-keygen exited with status {returncode}"
