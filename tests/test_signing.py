"""SSH signatures for signed actions, checked against the real OpenSSH tools in both directions.

ssh-keygen signs and `workflows.signing.verify` checks; `starter.signing` signs and `ssh-keygen -Y verify`
checks. Hostile signatures (tampered, foreign, truncated, huge) are refused with a reason a person can
act on. Needs /usr/bin/ssh-keygen (openssh-client); no Temporal server.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from starter import signing as signer
from workflows import signing
from workflows.signing import BadSignature

SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
pytestmark = pytest.mark.skipif(not Path(SSH_KEYGEN).exists(), reason="needs ssh-keygen (openssh-client)")

WF, OTHER_WF = "deploy-payments-api-7f3a", "deploy-payments-api-0000"
PAYLOAD: dict[str, Any] = {"actor": "U0SRE1", "step": "deploy_approval", "comment": "ship it"}
NOW = datetime(2026, 12, 1, 18, 30, tzinfo=UTC)
NONCE = "9f2c4e1a0b7d6c35"
KINDS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa": ["-t", "ecdsa", "-b", "256"],
    "rsa": ["-t", "rsa", "-b", "2048"],
}
ONE_LINE = re.compile(r"[^\n]+")


@dataclass(frozen=True)
class Key:
    path: Path
    line: str  # the public key line, as it would be on record


def _keygen(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    done = subprocess.run(
        [SSH_KEYGEN, *args], input=stdin, capture_output=True, check=False, env=env, timeout=30
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def _new_key(directory: Path, kind: str, name: str) -> Key:
    path = directory / name
    _keygen("-q", *KINDS[kind], "-N", "", "-C", name, "-f", str(path))
    return Key(path, path.with_name(name + ".pub").read_text().strip())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """One key of each supported type, plus a stranger's, made by ssh-keygen."""
    d = tmp_path_factory.mktemp("keys")
    made = {kind: _new_key(d, kind, f"sre-{kind}") for kind in KINDS}
    made["stranger"] = _new_key(d, "ed25519", "stranger")
    return made


def keygen_sign(key: Key, message: bytes, namespace: str = "deployctl", *options: str) -> str:
    return _keygen("-Y", "sign", "-n", namespace, *options, "-f", str(key.path), stdin=message).decode()


def keygen_verify(tmp: Path, key: Key, message: bytes, armored: str) -> subprocess.CompletedProcess[bytes]:
    allowed, sig = tmp / "allowed_signers", tmp / "msg.sig"
    allowed.write_text(f"sre@example.com {key.line}\n")
    sig.write_text(armored)
    return subprocess.run(
        [
            SSH_KEYGEN,
            "-Y",
            "verify",
            "-f",
            str(allowed),
            "-I",
            "sre@example.com",
            "-n",
            "deployctl",
            "-s",
            str(sig),
        ],
        input=message,
        capture_output=True,
        check=False,
        timeout=30,
    )


def message_for(payload: dict[str, Any], workflow_id: str = WF, action: str = "approve") -> bytes:
    return signing.canonical(signing.signed_body(payload, workflow_id, action))


def reason(armored: Any, message: bytes, keys: list[str]) -> str:
    """The refusal's text, checked to be one line."""
    with pytest.raises(BadSignature) as err:
        signing.verify(armored, message, keys)
    text = str(err.value)
    assert ONE_LINE.fullmatch(text), text
    return text


# --- hand-built SSHSIG blobs (for what ssh-keygen will not make) --------------------------------------


def s(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(4, "big") + raw


def unarmor(armored: str) -> bytes:
    lines = armored.strip().splitlines()
    return base64.b64decode("".join(lines[1:-1]))


def armor(blob: bytes) -> str:
    b64 = base64.b64encode(blob).decode()
    body = "\n".join(b64[i : i + 70] for i in range(0, len(b64), 70))
    return f"-----BEGIN SSH SIGNATURE-----\n{body}\n-----END SSH SIGNATURE-----\n"


def sshsig(
    pub_blob: bytes,
    signature: bytes,
    namespace: str = "deployctl",
    hash_alg: str = "sha512",
    version: int = 1,
) -> bytes:
    return (
        b"SSHSIG"
        + version.to_bytes(4, "big")
        + s(pub_blob)
        + s(namespace)
        + s(b"")
        + s(hash_alg)
        + s(signature)
    )


def signed_data(message: bytes, hash_alg: str = "sha512", namespace: str = "deployctl") -> bytes:
    import hashlib

    digest = hashlib.new(hash_alg, message).digest()
    return b"SSHSIG" + s(namespace) + s(b"") + s(hash_alg) + s(digest)


def rsa_sign(key: Key, message: bytes, sig_type: str, algorithm: hashes.HashAlgorithm) -> str:
    """An SSHSIG by the RSA key with a chosen signature algorithm (ssh-keygen always uses rsa-sha2-512)."""
    private = serialization.load_ssh_private_key(key.path.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    raw = private.sign(signed_data(message), padding.PKCS1v15(), algorithm)
    return armor(sshsig(signing.parse_public_key(key.line).blob, s(sig_type) + s(raw)))


# --- the signed text ----------------------------------------------------------------------------------


def test_signed_body_drops_the_signature_and_binds_the_deploy_and_action() -> None:
    sent = {**PAYLOAD, "signature": "x", "workflow_id": "forged", "action": "cancel"}
    body = signing.signed_body(sent, WF, "approve")
    assert body == {**PAYLOAD, "workflow_id": WF, "action": "approve"}
    assert sent["workflow_id"] == "forged" and "signature" in sent  # the payload itself is left alone


def test_canonical_is_the_prefix_then_sorted_compact_utf8_json() -> None:
    got = signing.canonical({"b": 1, "a": "café ✓", "c": None})
    assert got == 'deployctl-action-v1\n{"a":"café ✓","b":1,"c":null}'.encode()


# --- ssh-keygen signs, we verify -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_ssh_keygen_signatures_verify(keys: dict[str, Key], kind: str) -> None:
    message = message_for(PAYLOAD)
    armored = keygen_sign(keys[kind], message)
    on_record = [keys["stranger"].line, keys[kind].line]
    assert signing.verify(armored, message, on_record) == keys[kind].line


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_sha256_message_hash_verifies(keys: dict[str, Key], kind: str) -> None:
    message = message_for(PAYLOAD)
    armored = keygen_sign(keys[kind], message, "deployctl", "-O", "hashalg=sha256")
    assert b"sha256" in unarmor(armored)
    assert signing.verify(armored, message, [keys[kind].line]) == keys[kind].line


def test_rsa_sha2_256_signatures_verify_here_and_in_ssh_keygen(keys: dict[str, Key], tmp_path: Path) -> None:
    message = message_for(PAYLOAD)
    armored = rsa_sign(keys["rsa"], message, "rsa-sha2-256", hashes.SHA256())
    assert keygen_verify(tmp_path, keys["rsa"], message, armored).returncode == 0  # the blob is built right
    assert signing.verify(armored, message, [keys["rsa"].line]) == keys["rsa"].line


def test_sha1_rsa_signatures_are_refused(keys: dict[str, Key]) -> None:
    message = message_for(PAYLOAD)
    armored = rsa_sign(keys["rsa"], message, "ssh-rsa", hashes.SHA1())
    assert (
        reason(armored, message, [keys["rsa"].line])
        == "signature type 'ssh-rsa' does not match the ssh-rsa key"
    )


@pytest.mark.parametrize("kind", list(KINDS))
def test_fingerprint_is_ssh_keygens(keys: dict[str, Key], kind: str) -> None:
    listed = _keygen("-lf", str(keys[kind].path.with_name(keys[kind].path.name + ".pub"))).decode().split()
    assert signing.fingerprint(keys[kind].line) == listed[1]
    assert signing.fingerprint(signing.parse_public_key(keys[kind].line)) == listed[1]


# --- we sign, ssh-keygen verifies ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_sign_payload_verifies_in_ssh_keygen_and_here(
    keys: dict[str, Key], kind: str, tmp_path: Path
) -> None:
    signed = signer.sign_payload(PAYLOAD, WF, "approve", str(keys[kind].path), now=NOW, nonce=NONCE)
    assert signed == {
        **PAYLOAD,
        "issued_at": "2026-12-01T18:30:00Z",
        "nonce": NONCE,
        "signature": signed["signature"],
    }
    message = message_for(signed)
    checked = keygen_verify(tmp_path, keys[kind], message, signed["signature"])
    assert checked.returncode == 0, checked.stderr
    assert b'Good "deployctl" signature for sre@example.com' in checked.stdout
    assert signing.verify(signed["signature"], message, [keys[kind].line]) == keys[kind].line


def test_sign_payload_defaults_now_and_a_fresh_nonce(keys: dict[str, Key]) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    one = signer.sign_payload(PAYLOAD, WF, "approve", str(keys["ed25519"].path))
    two = signer.sign_payload(PAYLOAD, WF, "approve", str(keys["ed25519"].path))
    issued = datetime.strptime(one["issued_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= issued <= datetime.now(UTC)
    assert re.fullmatch(r"[0-9a-f]{16}", one["nonce"]) and one["nonce"] != two["nonce"]


def test_sign_payload_writes_issued_at_in_utc(keys: dict[str, Key]) -> None:
    key = str(keys["ed25519"].path)
    at_plus_2 = datetime(2026, 12, 1, 20, 30, 59, 999, tzinfo=timezone(timedelta(hours=2)))
    assert (
        signer.sign_payload(PAYLOAD, WF, "approve", key, now=at_plus_2)["issued_at"] == "2026-12-01T18:30:59Z"
    )
    naive = datetime(2026, 12, 1, 18, 30)
    assert signer.sign_payload(PAYLOAD, WF, "approve", key, now=naive)["issued_at"] == "2026-12-01T18:30:00Z"


def test_a_start_is_signed_as_action_start(keys: dict[str, Key]) -> None:
    signed = signer.sign_payload(
        {"actor": "U0OWNER"}, WF, "start", str(keys["ecdsa"].path), now=NOW, nonce=NONCE
    )
    assert signing.verify(signed["signature"], message_for(signed, action="start"), [keys["ecdsa"].line])
    assert "does not verify" in reason(
        signed["signature"], message_for(signed, action="approve"), [keys["ecdsa"].line]
    )


# --- refusals --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(keys: dict[str, Key]) -> dict[str, Any]:
    """One approval signed with the ed25519 key, by starter.signing."""
    return signer.sign_payload(PAYLOAD, WF, "approve", str(keys["ed25519"].path), now=NOW, nonce=NONCE)


def test_tampered_message_does_not_verify(keys: dict[str, Key], signed: dict[str, Any]) -> None:
    message = message_for(signed) + b" "
    assert reason(signed["signature"], message, [keys["ed25519"].line]) == "signature does not verify"


def test_comment_changed_after_signing_does_not_verify(keys: dict[str, Key], signed: dict[str, Any]) -> None:
    tampered = {**signed, "comment": "ship it (and also drop the database)"}
    assert (
        reason(signed["signature"], message_for(tampered), [keys["ed25519"].line])
        == "signature does not verify"
    )


def test_signature_for_one_deploy_or_action_does_not_verify_for_another(
    keys: dict[str, Key], signed: dict[str, Any]
) -> None:
    line = [keys["ed25519"].line]
    assert signing.verify(signed["signature"], message_for(signed, WF, "approve"), line) == line[0]
    assert (
        reason(signed["signature"], message_for(signed, OTHER_WF, "approve"), line)
        == "signature does not verify"
    )
    assert reason(signed["signature"], message_for(signed, WF, "cancel"), line) == "signature does not verify"


def test_signed_by_a_key_that_is_not_theirs(keys: dict[str, Key]) -> None:
    message = message_for(PAYLOAD)
    armored = keygen_sign(keys["stranger"], message)
    got = reason(armored, message, [keys["ed25519"].line, keys["rsa"].line])
    assert got == f"signed by a key that is not one of theirs ({signing.fingerprint(keys['stranger'].line)})"


def test_unreadable_key_lines_match_nothing_and_are_counted(
    keys: dict[str, Key], signed: dict[str, Any]
) -> None:
    message = message_for(signed)
    on_record = ["not a key", keys["ed25519"].line]
    assert signing.verify(signed["signature"], message, on_record) == keys["ed25519"].line
    got = reason(signed["signature"], message, ["not a key", keys["rsa"].line])
    assert got.startswith("signed by a key that is not one of theirs (SHA256:")
    assert got.endswith("; 1 of their key lines could not be read")


def test_wrong_namespace(keys: dict[str, Key]) -> None:
    message = message_for(PAYLOAD)
    armored = keygen_sign(keys["ed25519"], message, "git")
    assert reason(armored, message, [keys["ed25519"].line]) == "signature namespace is 'git', not 'deployctl'"


def test_bit_flipped_in_the_signature(keys: dict[str, Key], signed: dict[str, Any]) -> None:
    blob = bytearray(unarmor(signed["signature"]))
    blob[-5] ^= 0x10  # inside the ed25519 signature bytes, the blob's last field
    got = reason(armor(bytes(blob)), message_for(signed), [keys["ed25519"].line])
    assert got == "signature does not verify"


def test_bit_flipped_in_the_embedded_key(keys: dict[str, Key], signed: dict[str, Any]) -> None:
    blob = bytearray(unarmor(signed["signature"]))
    blob[40] ^= 0x01  # inside the ed25519 public key (magic 6 + version 4 + len 4 + type 15 + len 4 = 33)
    got = reason(armor(bytes(blob)), message_for(signed), [keys["ed25519"].line])
    assert got.startswith("signed by a key that is not one of theirs (SHA256:")
    assert signing.fingerprint(keys["ed25519"].line) not in got


def test_truncated_armor(keys: dict[str, Key], signed: dict[str, Any]) -> None:
    armored = signed["signature"]
    cut = armored[: len(armored) // 2]
    assert reason(cut, message_for(signed), [keys["ed25519"].line]) == (
        "signature is not an SSH signature (no BEGIN/END SSH SIGNATURE armor)"
    )


def test_truncated_blob(keys: dict[str, Key], signed: dict[str, Any]) -> None:
    blob = unarmor(signed["signature"])
    got = reason(armor(blob[:-10]), message_for(signed), [keys["ed25519"].line])
    assert got == "signature is truncated or malformed (wants 83 bytes, 73 left)"


def test_trailing_bytes_are_refused(keys: dict[str, Key], signed: dict[str, Any]) -> None:
    blob = unarmor(signed["signature"])
    got = reason(armor(blob + b"\0"), message_for(signed), [keys["ed25519"].line])
    assert got == "signature is truncated or malformed (1 bytes of trailing data)"


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [
        ("", "signature is not an SSH signature (no BEGIN/END SSH SIGNATURE armor)"),
        ("ship it", "signature is not an SSH signature (no BEGIN/END SSH SIGNATURE armor)"),
        (
            "-----BEGIN SSH SIGNATURE-----",
            "signature is not an SSH signature (no BEGIN/END SSH SIGNATURE armor)",
        ),
        (armor(b"")[:-1], "signature is not an SSH signature (no SSHSIG magic)"),
        (armor(b"-----BEGIN PGP SIGNATURE-----"), "signature is not an SSH signature (no SSHSIG magic)"),
        (
            "-----BEGIN SSH SIGNATURE-----\nnot*base64!\n-----END SSH SIGNATURE-----",
            "signature is not an SSH signature (its armor does not hold base64)",
        ),
        (
            "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\u00e9\u2713\n-----END SSH SIGNATURE-----",
            "signature is not an SSH signature (its armor does not hold base64)",
        ),
        (None, "signature is not an SSH signature (it is NoneType, not text)"),
        (["-----BEGIN SSH SIGNATURE-----"], "signature is not an SSH signature (it is list, not text)"),
    ],
)
def test_garbage(keys: dict[str, Key], garbage: Any, expected: str) -> None:
    assert reason(garbage, b"anything", [keys["ed25519"].line]) == expected


def test_a_blob_claiming_a_huge_length(keys: dict[str, Key]) -> None:
    blob = b"SSHSIG" + (1).to_bytes(4, "big") + b"\xff\xff\xff\xff" + b"x" * 40
    got = reason(armor(blob), b"anything", [keys["ed25519"].line])
    assert got == "signature is truncated or malformed (wants 4294967295 bytes, 40 left)"


def test_a_signature_over_16_kib_is_refused_before_decoding(keys: dict[str, Key]) -> None:
    huge = armor(b"SSHSIG" + b"\0" * 13_000)
    assert len(huge) > 16 * 1024
    assert reason(huge, b"anything", [keys["ed25519"].line]) == (
        "signature is over 16 KiB; an SSH signature is far smaller"
    )


def test_other_versions_and_hash_algorithms_are_refused(keys: dict[str, Key], signed: dict[str, Any]) -> None:
    pub = signing.parse_public_key(keys["ed25519"].line).blob
    inner = unarmor(signed["signature"])[-(4 + 83) :][4:]  # the signature field, as ssh-keygen made it
    line = [keys["ed25519"].line]
    v2 = armor(sshsig(pub, inner, version=2))
    assert reason(v2, message_for(signed), line) == "signature is SSHSIG version 2, not 1"
    md5 = armor(sshsig(pub, inner, hash_alg="md5"))
    assert reason(md5, message_for(signed), line) == "signature hash algorithm is 'md5', not sha512 or sha256"
    as_ecdsa = armor(sshsig(pub, s("ecdsa-sha2-nistp256") + s(b"\0" * 64)))
    assert reason(as_ecdsa, message_for(signed), line) == (
        "signature type 'ecdsa-sha2-nistp256' does not match the ssh-ed25519 key"
    )


def test_random_corruption_never_raises_anything_but_bad_signature(
    keys: dict[str, Key], signed: dict[str, Any]
) -> None:
    """Hostile input of any shape is a refusal, never a crash: flip, cut and splice bytes of real blobs."""
    rng = random.Random(1234)
    message = message_for(signed)
    on_record = [k.line for k in keys.values()]
    blobs = [unarmor(signed["signature"])] + [
        unarmor(keygen_sign(keys[k], message)) for k in ("ecdsa", "rsa")
    ]
    refused = 0
    for _ in range(600):
        blob = bytearray(rng.choice(blobs))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(blob))
            match rng.randrange(3):
                case 0:
                    blob[i] ^= 1 << rng.randrange(8)
                case 1:
                    del blob[i:]
                    blob += b"\xff" * rng.randrange(5)
                case _:
                    blob[i : i + 4] = rng.randbytes(4)
        try:
            signing.verify(armor(bytes(blob)), message, on_record)
        except BadSignature as err:
            assert ONE_LINE.fullmatch(str(err))
            refused += 1
    assert refused == 600


# --- public keys -----------------------------------------------------------------------------------------


def test_parse_public_key(keys: dict[str, Key]) -> None:
    key = signing.parse_public_key(keys["ecdsa"].line)
    assert key.type == "ecdsa-sha2-nistp256"
    assert key.blob == base64.b64decode(keys["ecdsa"].line.split()[1])
    no_comment = " ".join(keys["ecdsa"].line.split()[:2])
    assert signing.parse_public_key(no_comment + "\n") == key


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", "not an OpenSSH public key line (want: TYPE BASE64 [COMMENT])"),
        ("ssh-ed25519", "not an OpenSSH public key line (want: TYPE BASE64 [COMMENT])"),
        (
            "ssh-dss AAAAB3NzaC1kc3M= old",
            "key type 'ssh-dss' is not supported (use one of: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa)",
        ),
        ("ssh-ed25519 not!base64", "the ssh-ed25519 key is not valid base64"),
        (
            "ssh-ed25519 " + base64.b64encode(s("ssh-ed25519") + s(b"\1" * 31)).decode(),
            "an ed25519 key is 32 bytes, not 31",
        ),
        (
            "ssh-ed25519 " + base64.b64encode(s("ssh-ed25519")).decode(),
            "the key data is malformed (wants 4 bytes, 0 left)",
        ),
    ],
)
def test_parse_public_key_refusals(line: str, expected: str) -> None:
    with pytest.raises(ValueError) as err:
        signing.parse_public_key(line)
    assert str(err.value) == expected


def test_a_key_line_whose_data_is_another_type(keys: dict[str, Key]) -> None:
    lying = "ssh-rsa " + keys["ed25519"].line.split()[1]
    with pytest.raises(
        ValueError, match=r"^the key line says ssh-rsa but its data holds a 'ssh-ed25519' key$"
    ):
        signing.parse_public_key(lying)


# --- the signing side -------------------------------------------------------------------------------------


def test_throwaway_key_signs_and_matches_ssh_keygen(tmp_path: Path) -> None:
    path, line = signer.throwaway_key(tmp_path / "k", "U0SRE1")
    assert path == tmp_path / "k" / "U0SRE1"
    assert path.stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(r"ssh-ed25519 AAAA[A-Za-z0-9+/=]+ U0SRE1", line)
    assert (tmp_path / "k" / "U0SRE1.pub").read_text().strip() == line
    assert _keygen("-y", "-f", str(path)).decode().split()[:2] == line.split()[:2]  # ssh-keygen reads it
    signed = signer.sign_payload(PAYLOAD, WF, "approve", str(path), now=NOW, nonce=NONCE)
    assert signing.verify(signed["signature"], message_for(signed), [line]) == line


def test_throwaway_key_overwrites_with_mode_0600(tmp_path: Path) -> None:
    (tmp_path / "dev").write_text("old")
    (tmp_path / "dev").chmod(0o644)
    path, line = signer.throwaway_key(tmp_path, "dev")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_public_key_of(keys: dict[str, Key], tmp_path: Path) -> None:
    key = keys["rsa"]
    pub = str(key.path) + ".pub"
    assert signer.public_key_of(str(key.path)) == key.line  # from KEY.pub
    assert signer.public_key_of(pub) == key.line  # a public key file is its own line
    lone = tmp_path / "lone"
    shutil.copy(key.path, lone)
    lone.chmod(0o600)
    derived = signer.public_key_of(str(lone))  # no lone.pub: ssh-keygen -y derives it
    assert derived.split()[:2] == key.line.split()[:2]
    named = tmp_path / "agent-key"  # a public key file not named *.pub is known by its content
    named.write_text(key.line + "\n")
    assert signer.public_key_of(str(named)) == key.line


def test_public_key_of_refuses_unsupported_keys(tmp_path: Path) -> None:
    pub = tmp_path / "old.pub"
    pub.write_text("ssh-dss AAAAB3NzaC1kc3M= old\n")
    with pytest.raises(
        signer.SigningError, match=r"^cannot sign with .*old\.pub: key type 'ssh-dss' is not supported"
    ):
        signer.public_key_of(str(pub))


def test_sign_message_reports_ssh_keygens_reason(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(signer.SigningError) as err:
        signer.sign_message(b"x", missing)
    assert (
        str(err.value)
        == f"cannot sign with {missing}: Couldn't load public key {missing}: No such file or directory"
    )


def test_sign_message_without_ssh_keygen(tmp_path: Path, keys: dict[str, Key]) -> None:
    with pytest.raises(signer.SigningError) as err:
        signer.sign_message(b"x", str(keys["ed25519"].path), env={"PATH": str(tmp_path)})
    assert str(err.value) == (
        f"cannot sign with {keys['ed25519'].path}: ssh-keygen is not installed (install openssh-client)"
    )


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private ssh-agent, its socket in tmp_path; killed at the end."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent/ssh-add are not installed (openssh-client)")
    sock = tmp_path / "agent.sock"
    out = subprocess.run(
        ["ssh-agent", "-s", "-a", str(sock)], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", out).group(1))  # type: ignore[union-attr]
    auth_sock = re.search(r"SSH_AUTH_SOCK=([^;]+)", out).group(1)  # type: ignore[union-attr]
    env = {**os.environ, "SSH_AUTH_SOCK": auth_sock, "SSH_AGENT_PID": str(pid)}
    try:
        yield env
    finally:
        os.kill(pid, signal.SIGTERM)


def test_signing_through_ssh_agent_with_only_the_public_key(agent: dict[str, str], tmp_path: Path) -> None:
    key = _new_key(tmp_path, "ed25519", "in-agent")
    added = subprocess.run(
        ["ssh-add", str(key.path)], env=agent, capture_output=True, check=False, timeout=10
    )
    assert added.returncode == 0, added.stderr
    key.path.unlink()  # from here on only the agent holds the private half
    message = message_for(PAYLOAD)
    pub = str(key.path) + ".pub"
    armored = signer.sign_message(message, pub, env=agent)
    assert signing.verify(armored, message, [key.line]) == key.line
    assert keygen_verify(tmp_path, key, message, armored).returncode == 0
    no_agent = {k: v for k, v in agent.items() if k != "SSH_AUTH_SOCK"}
    with pytest.raises(signer.SigningError, match=r"^cannot sign with .*in-agent\.pub: "):
        signer.sign_message(message, pub, env=no_agent)


SANDBOX_PROBE = """
import builtins, json, sys
from workflows import signing

real_import = builtins.__import__

def no_late_imports(name, *args, **kwargs):
    if name.startswith(("cryptography", "_cffi_backend")):
        raise ImportError(f"late import of {name}")
    return real_import(name, *args, **kwargs)

builtins.__import__ = no_late_imports
out = []
for armored, message, line in json.load(sys.stdin):
    for m in (message, message + "x"):
        try:
            out.append(signing.verify(armored, m.encode(), [line]) == line)
        except signing.BadSignature as err:
            out.append(str(err))
print(json.dumps(out))
"""


def test_verify_imports_nothing_once_imported(keys: dict[str, Key]) -> None:
    """Temporal's sandbox intercepts every import a workflow makes, and cryptography cannot be imported
    into it a second time: a late import (ECDSA() imports in its __init__; the Rust core looks up
    InvalidSignature on first use) failed the workflow task or aborted the worker on a bad signature.
    A fresh interpreter, imports refused after `import workflows.signing`, shows none is left."""
    cases = []
    for kind in KINDS:
        message = message_for(PAYLOAD, action=kind)
        cases.append([keygen_sign(keys[kind], message), message.decode(), keys[kind].line])
    done = subprocess.run(
        [sys.executable, "-c", SANDBOX_PROBE],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == [True, "signature does not verify"] * len(KINDS)
