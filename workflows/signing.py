"""Verifying signed actions: SSH signatures (OpenSSH's SSHSIG, what `ssh-keygen -Y sign` makes).

A person signs what they do with the SSH key they already have (a file, ssh-agent, a hardware key), so
nothing new needs issuing or rotating; the deploy checks the signature against the public keys on record.
The signed text binds the action to one deploy and one action name (`signed_body`), so a signature
cannot be replayed on another deploy or turned into another action.

Everything here is pure: no I/O, no subprocess, no clock, because it runs inside Temporal workflow code
and must give the same answer on replay. Input from outside is hostile: any malformed signature raises
`BadSignature` with a one-line reason, never another exception.

In workflow code, import this module under `workflow.unsafe.imports_passed_through()` (and list
`cryptography` among the worker's passthrough modules): the sandbox cannot import cryptography's Rust
extension a second time. What the module does at import (`_warm`) keeps verify from importing anything later.

Formats: OpenSSH PROTOCOL.sshsig (the signature), RFC 4253 §6.6 / RFC 5656 §3.1 / RFC 8332 (keys and
signature blobs). Supported: ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa (signed as rsa-sha2-512 or -256).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

PREFIX = "deployctl-action-v1\n"
NAMESPACE = "deployctl"

MAX_ARMORED = 16 * 1024  # an RSA-16384 signature is under 5 KiB armored; more is not a signature
BEGIN = "-----BEGIN SSH SIGNATURE-----"
END = "-----END SSH SIGNATURE-----"
MAGIC = b"SSHSIG"
HASHES: dict[str, Any] = {"sha512": hashlib.sha512, "sha256": hashlib.sha256}
RSA_BITS = (1024, 16384)  # OpenSSH's floor; OpenSSL's ceiling (bounds the work a key on record costs)

ED25519 = "ssh-ed25519"
ECDSA_P256 = "ecdsa-sha2-nistp256"
RSA = "ssh-rsa"
# The signature algorithms each key type may sign with. ssh-rsa signatures (SHA-1) are refused.
SIGNATURE_TYPES: dict[str, tuple[str, ...]] = {
    ED25519: (ED25519,),
    ECDSA_P256: (ECDSA_P256,),
    RSA: ("rsa-sha2-512", "rsa-sha2-256"),
}
RSA_HASHES: dict[str, hashes.HashAlgorithm] = {
    "rsa-sha2-512": hashes.SHA512(),
    "rsa-sha2-256": hashes.SHA256(),
}
# Made once, at import: ECDSA() imports from cryptography inside its __init__, and an import at verify time
# would run inside Temporal's sandbox (see _warm).
_ECDSA_P256 = ec.ECDSA(hashes.SHA256())
_PKCS1 = padding.PKCS1v15()
_P256 = ec.SECP256R1()

CryptoKey = Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class BadSignature(Exception):
    """The signature does not prove that one of the given keys signed the message; str() says why."""


@dataclass(frozen=True)
class PublicKey:
    """One SSH public key: its type name, its wire blob (what signatures embed and fingerprints hash)."""

    type: str
    blob: bytes
    key: CryptoKey = field(compare=False, repr=False)


class _Malformed(Exception):
    """Internal: the wire data ran out or held something impossible."""


class _Reader:
    """Reads SSH wire encoding (RFC 4251 §5); every read is bounded by what is left."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Malformed(f"wants {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def string(self) -> bytes:
        return self.take(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError as err:
            raise _Malformed("a name is not ASCII") from err

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise _Malformed("negative integer")
        return int.from_bytes(raw, "big")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise _Malformed(f"{len(self.data) - self.pos} bytes of trailing data")


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _quote(text: str, limit: int = 40) -> str:
    """Text taken from a signature lands in a reason: one line (repr escapes), short."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


# --- the signed text ---------------------------------------------------------------------------------


def signed_body(payload: Mapping[str, Any], workflow_id: str, action: str) -> dict[str, Any]:
    """What is signed: the payload as sent minus its signature, bound to this deploy and this action.

    Nothing is filled in or dropped, so the signer and the verifier agree on the bytes without sharing
    a schema. The payload's own workflow_id/action keys, if any, give way to the real ones.
    """
    body = {k: v for k, v in payload.items() if k != "signature"}
    body["workflow_id"] = workflow_id
    body["action"] = action
    return body


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: a versioned prefix, then the body as sorted, compact JSON."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (PREFIX + text).encode("utf-8")


# --- public keys -------------------------------------------------------------------------------------


def parse_public_key(line: str) -> PublicKey:
    """An OpenSSH public key line ("ssh-ed25519 AAAA… comment"); ValueError says what is wrong."""
    if not isinstance(line, str):
        raise ValueError(f"a public key line is text, not {type(line).__name__}")
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line (want: TYPE BASE64 [COMMENT])")
    kind, b64 = parts[0], parts[1]
    if kind not in SIGNATURE_TYPES:
        raise ValueError(
            f"key type {_quote(kind)} is not supported (use one of: {', '.join(SIGNATURE_TYPES)})"
        )
    try:
        blob = base64.b64decode(b64.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise ValueError(f"the {kind} key is not valid base64") from None
    return _key_from_blob(blob, expect=kind)


def _key_from_blob(blob: bytes, expect: str | None = None) -> PublicKey:
    """Decode a key's wire blob; ValueError for anything malformed, unsupported or of the wrong type."""
    try:
        r = _Reader(blob)
        kind = r.text()
        if expect is not None and kind != expect:
            raise ValueError(f"the key line says {expect} but its data holds a {_quote(kind)} key")
        key = _crypto_key(kind, r)
        r.end()
    except _Malformed as err:
        raise ValueError(f"the key data is malformed ({err})") from None
    return PublicKey(kind, blob, key)


def _crypto_key(kind: str, r: _Reader) -> CryptoKey:
    if kind == ED25519:
        raw = r.string()
        if len(raw) != 32:
            raise ValueError(f"an ed25519 key is 32 bytes, not {len(raw)}")
        return Ed25519PublicKey.from_public_bytes(raw)
    if kind == ECDSA_P256:
        curve, point = r.text(), r.string()
        if curve != "nistp256":
            raise ValueError(f"an {ECDSA_P256} key is on nistp256, not {_quote(curve)}")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(_P256, point)
        except ValueError:
            raise ValueError("the ECDSA key's point is not on the curve") from None
    if kind == RSA:
        e, n = r.mpint(), r.mpint()
        if not RSA_BITS[0] <= n.bit_length() <= RSA_BITS[1]:
            raise ValueError(f"an RSA key has {RSA_BITS[0]} to {RSA_BITS[1]} bits, not {n.bit_length()}")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise ValueError("the RSA key's numbers are invalid") from None
    raise ValueError(f"key type {_quote(kind)} is not supported")


def fingerprint(key: str | PublicKey) -> str:
    """OpenSSH's fingerprint ("SHA256:…", as `ssh-keygen -lf` prints it): what people compare by eye."""
    blob = parse_public_key(key).blob if isinstance(key, str) else key.blob
    return _fingerprint(blob)


def _fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


# --- signatures --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sshsig:
    """A parsed SSHSIG blob, not yet checked."""

    publickey: bytes
    namespace: bytes
    reserved: bytes
    hash_algorithm: str
    signature: bytes


def verify(armored: str, message: bytes, keys: Sequence[str]) -> str:
    """The line in `keys` whose key signed `message` in namespace deployctl; else BadSignature.

    Lines in `keys` that are not valid supported keys match nothing (the reason counts them), so one
    bad line on record does not lock everyone out.
    """
    sig = _parse(_unarmor(armored))
    namespace = sig.namespace.decode("utf-8", "replace")
    if namespace != NAMESPACE:
        raise BadSignature(f"signature namespace is {_quote(namespace)}, not {NAMESPACE!r}")
    if sig.hash_algorithm not in HASHES:
        raise BadSignature(f"signature hash algorithm is {_quote(sig.hash_algorithm)}, not sha512 or sha256")
    line, key = _signer(sig.publickey, keys)
    sig_type, raw = _signature_blob(sig.signature)
    if sig_type not in SIGNATURE_TYPES[key.type]:
        raise BadSignature(f"signature type {_quote(sig_type)} does not match the {key.type} key")
    if not _valid(key, sig_type, raw, _signed_data(sig, message)):
        raise BadSignature("signature does not verify")
    return line


def _unarmor(armored: str) -> bytes:
    """The blob between the armor lines. Size is checked first, so nothing big is ever decoded."""
    if not isinstance(armored, str):
        raise BadSignature(f"signature is not an SSH signature (it is {type(armored).__name__}, not text)")
    if len(armored) > MAX_ARMORED:
        raise BadSignature(f"signature is over {MAX_ARMORED // 1024} KiB; an SSH signature is far smaller")
    text = armored.strip()
    if not (text.startswith(BEGIN) and text.endswith(END)) or len(text) < len(BEGIN) + len(END):
        raise BadSignature("signature is not an SSH signature (no BEGIN/END SSH SIGNATURE armor)")
    inner = "".join(text[len(BEGIN) : len(text) - len(END)].split())
    try:
        blob = base64.b64decode(inner.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise BadSignature("signature is not an SSH signature (its armor does not hold base64)") from None
    if not blob.startswith(MAGIC):
        raise BadSignature("signature is not an SSH signature (no SSHSIG magic)")
    return blob


def _parse(blob: bytes) -> _Sshsig:
    try:
        r = _Reader(blob)
        r.take(len(MAGIC))
        version = r.uint32()
        if version != 1:
            raise BadSignature(f"signature is SSHSIG version {version}, not 1")
        sig = _Sshsig(r.string(), r.string(), r.string(), r.text(), r.string())
        r.end()
    except _Malformed as err:
        raise BadSignature(f"signature is truncated or malformed ({err})") from None
    return sig


def _signer(blob: bytes, keys: Sequence[str]) -> tuple[str, PublicKey]:
    """The key on record whose blob is the one the signature embeds (so the signer is named, not guessed)."""
    unreadable = 0
    for line in keys:
        try:
            key = parse_public_key(line)
        except ValueError:
            unreadable += 1
            continue
        if key.blob == blob:
            return line, key
    note = f"; {unreadable} of their key lines could not be read" if unreadable else ""
    raise BadSignature(f"signed by a key that is not one of theirs ({_fingerprint(blob)}){note}")


def _signature_blob(data: bytes) -> tuple[str, bytes]:
    try:
        r = _Reader(data)
        sig_type, raw = r.text(), r.string()
        r.end()
    except _Malformed as err:
        raise BadSignature(f"signature is truncated or malformed ({err})") from None
    return sig_type, raw


def _signed_data(sig: _Sshsig, message: bytes) -> bytes:
    """PROTOCOL.sshsig: what the key signs is the message's hash wrapped with the namespace."""
    digest = HASHES[sig.hash_algorithm](message).digest()
    return (
        MAGIC
        + _string(sig.namespace)
        + _string(sig.reserved)
        + _string(sig.hash_algorithm.encode("ascii"))
        + _string(digest)
    )


def _valid(key: PublicKey, sig_type: str, raw: bytes, data: bytes) -> bool:
    try:
        if isinstance(key.key, Ed25519PublicKey):
            key.key.verify(raw, data)
        elif isinstance(key.key, ec.EllipticCurvePublicKey):
            key.key.verify(_ecdsa_der(raw), data, _ECDSA_P256)
        else:
            width = (key.key.key_size + 7) // 8
            if len(raw) > width:
                return False
            # OpenSSH may send a signature shorter than the modulus; it is left-padded to verify.
            key.key.verify(raw.rjust(width, b"\0"), data, _PKCS1, RSA_HASHES[sig_type])
    except (InvalidSignature, ValueError, _Malformed):
        return False
    return True


def _ecdsa_der(raw: bytes) -> bytes:
    """RFC 5656 §3.1.2: the ECDSA signature is mpint r, mpint s; cryptography wants DER."""
    r = _Reader(raw)
    sig_r, sig_s = r.mpint(), r.mpint()
    r.end()
    return encode_dss_signature(sig_r, sig_s)


# --- warming cryptography's lazy lookups ---------------------------------------------------------------

# A key of each type that nothing signs with (RFC 8032's first test key, P-256's generator, an odd modulus).
_WARM_KEYS = (
    _string(ED25519.encode())
    + _string(bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")),
    _string(ECDSA_P256.encode())
    + _string(b"nistp256")
    + _string(
        bytes.fromhex(
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"
        )
    ),
    _string(RSA.encode())
    + _string((65537).to_bytes(3, "big"))
    + _string(b"\0" + ((1 << 1023) | 1).to_bytes(128, "big")),
)


def _warm() -> None:
    """Run every verification path once, at import, so no lazy import is left for inside a workflow.

    cryptography's Rust core looks some Python objects up on first use (InvalidSignature, the hash and
    padding classes). Inside Temporal's sandbox that first use re-imports them into the sandbox's module
    table, which cannot load the Rust extension a second time, and the worker process aborts on the first
    bad signature. The worker should pass `cryptography` through its sandbox anyway; this keeps a bad
    signature a refusal even when it does not.
    """
    for blob in _WARM_KEYS:
        key = _key_from_blob(blob)
        data = _signed_data(_Sshsig(blob, NAMESPACE.encode(), b"", "sha512", b""), b"")
        for sig_type in SIGNATURE_TYPES[key.type]:
            raw = _string(b"\1") + _string(b"\1") if key.type == ECDSA_P256 else b"\1" * 64
            _valid(key, sig_type, raw, data)


_warm()
