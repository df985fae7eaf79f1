"""Who sent an action: its SSH signature checked against the workers' keys (SPEC §9). Pure code.

An action (or a start) is accepted only when its signature, over the payload exactly as sent plus the
deploy's id and the action's name, verifies with a key of its `actor` (or, for channel `slack`, with a
key of the Slack bridge, which vouches for the click it verified), `issued_at` is recent and the nonce
is new in this deploy. With `require_signed_actions = false` nothing is checked and every identity is
`claimed`. No I/O, no clock: the workflow passes `workflow.now()`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from workflows import signing
from workflows.messages import human_duration
from workflows.models import PersonSpec, Rules

#: How far ahead of the workflow's clock `issued_at` may be (the signer's clock runs fast).
CLOCK_SKEW = timedelta(minutes=1)
CLAIMED = "claimed"
SLACK = "slack"


@dataclass(frozen=True)
class Verdict:
    """What the signature check found: the identity, the key and signed body when it verified, or why not."""

    identity: str = CLAIMED
    refusal: str | None = None
    key: str | None = None
    body: dict[str, Any] | None = None
    signature: str | None = None
    nonce: str | None = None


@dataclass(frozen=True)
class Keys:
    """The keys the workers trust right now: each person's, and the Slack bridge's."""

    people: Mapping[str, PersonSpec]
    bridge: tuple[str, ...]
    require: bool = True
    max_age: timedelta = timedelta(minutes=5)

    @classmethod
    def of(cls, rules: Rules) -> Keys:
        return cls(
            people=rules.people,
            bridge=rules.bridge_keys,
            require=rules.require_signed,
            max_age=rules.max_signature_age,
        )


def parse_time(text: object) -> datetime | None:
    """`issued_at` as UTC: RFC 3339 with `Z` or an offset; None when it is not one."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.astimezone(UTC)


def check(
    payload: Mapping[str, Any],
    workflow_id: str,
    action: str,
    keys: Keys,
    now: datetime,
    used_nonces: Collection[str],
) -> Verdict:
    """The verdict on one payload (an action's or a start's) as it was sent."""
    if not keys.require:
        return Verdict()
    actor = payload.get("actor")
    signature = payload.get("signature")
    if not isinstance(signature, str) or not signature:
        return Verdict(refusal="unsigned action: sign it with `deployctl --key` or `deployctl sign`")
    issued = parse_time(payload.get("issued_at"))
    if issued is None:
        return Verdict(refusal="issued_at is missing or not a UTC time like 2026-12-01T18:30:00Z")
    nonce = payload.get("nonce")
    if not isinstance(nonce, str) or not 8 <= len(nonce) <= 64:
        return Verdict(refusal="nonce is missing or not 8 to 64 characters")
    age = now - issued
    if age > keys.max_age:
        return Verdict(
            refusal=f"signature is {_span(age)} old (at most {human_duration(keys.max_age.total_seconds())}): "
            "sign it again"
        )
    if -age > CLOCK_SKEW:
        return Verdict(
            refusal=f"signature is dated {_span(-age)} ahead of the workers' clock: check the signer's clock"
        )
    body = signing.signed_body(payload, workflow_id, action)
    message = signing.canonical(body)
    bridge = payload.get("channel") == SLACK
    if bridge:
        candidates, prefix, whose = keys.bridge, "slack-bridge", "the Slack bridge"
    else:
        person = keys.people.get(str(actor))
        candidates, prefix, whose = (person.ssh_keys if person else ()), "ssh", f"any key of {actor}"
    if not candidates:
        if bridge:
            return Verdict(
                refusal="channel slack, but the workers trust no Slack bridge key ([slack] bridge_keys)"
            )
        return Verdict(refusal=f"{actor} has no signing keys on the workers ([people.{actor}] ssh_keys)")
    try:
        key = signing.verify(signature, message, candidates)
    except signing.BadSignature as err:
        if not bridge and keys.bridge and _verifies(signature, message, keys.bridge):
            return Verdict(refusal="signed by the Slack bridge's key, which vouches only for channel slack")
        return Verdict(refusal=f"signature does not verify with {whose}: {err}")
    if nonce in used_nonces:  # (after the signature: only a genuine payload sent again gets here)
        return Verdict(refusal="nonce already used: this signed action was sent before")
    return Verdict(
        identity=f"{prefix}:{signing.fingerprint(key)}", key=key, body=body, signature=signature, nonce=nonce
    )


def _span(delta: timedelta) -> str:
    """A whole number of the largest unit, as people say it: 45s, 12m, 3h, 2d."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _verifies(signature: str, message: bytes, keys: tuple[str, ...]) -> bool:
    try:
        signing.verify(signature, message, keys)
    except signing.BadSignature:
        return False
    return True
