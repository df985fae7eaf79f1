"""workflows/trust.py on its own: the verdict on a payload, with signatures made by real `ssh-keygen`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from starter.signing import sign_payload
from tests import keys
from workflows import signing, trust
from workflows.models import PersonSpec

WID, NOW = "deploy-payments-api-kprod-1a2b3c4d", datetime(2026, 12, 1, 18, 30, tzinfo=UTC)
SRE = "U0SRE1"
KEYS = trust.Keys(
    people={
        SRE: PersonSpec(ssh_keys=(keys.public(SRE),)),
        "U0BOB": PersonSpec(ssh_keys=(keys.public("U0BOB"),)),
    },
    bridge=(keys.public(keys.BRIDGE),),
)


def sign(payload: dict, by: str = SRE, action: str = "approve", at: datetime = NOW) -> dict:
    return sign_payload(payload, WID, action, keys.private(by), now=at)


def check(payload: dict, action: str = "approve", used: frozenset[str] = frozenset(), k: trust.Keys = KEYS):
    return trust.check(payload, WID, action, k, NOW, used)


BASE = {"actor": SRE, "step": "deploy_approval", "comment": "ship it"}


def test_a_good_signature_names_the_key():
    payload = sign(BASE)
    v = check(payload)
    assert v.refusal is None and v.identity == f"ssh:{signing.fingerprint(keys.public(SRE))}"
    assert v.key == keys.public(SRE) and v.nonce == payload["nonce"] and v.signature == payload["signature"]
    assert v.body == {
        **{k: x for k, x in payload.items() if k != "signature"},
        "workflow_id": WID,
        "action": "approve",
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (dict(BASE), "unsigned action"),
        ({**sign(BASE), "issued_at": "yesterday"}, "issued_at is missing or not a UTC time"),
        ({**sign(BASE), "issued_at": "2026-12-01T18:30:00"}, "issued_at is missing or not a UTC time"),
        ({**sign(BASE), "nonce": "x"}, "nonce is missing or not 8 to 64 characters"),
        (sign(BASE, at=NOW - timedelta(minutes=12)), "signature is 12m old"),
        (sign(BASE, at=NOW + timedelta(minutes=3)), "signature is dated 3m ahead of the workers' clock"),
        (sign(BASE, by="U0BOB"), "signature does not verify with any key of U0SRE1"),
        ({**sign(BASE), "comment": "ship it now"}, "signature does not verify with any key of U0SRE1"),
        ({**sign(BASE), "sre": None}, "signature does not verify"),  # a field the sender left out stays out
        (sign(BASE, action="reject"), "signature does not verify"),
        (sign({**BASE, "actor": "U0EVE"}, by="U0BOB"), "U0EVE has no signing keys on the workers"),
        (sign({**BASE, "channel": "slack"}), "signature does not verify with the Slack bridge"),
        (sign(BASE, by=keys.BRIDGE), "signed by the Slack bridge's key, which vouches only for channel slack"),
    ],
    ids=[
        "unsigned", "issued_at garbage", "issued_at naive", "short nonce", "stale", "future", "forged actor",
        "tampered", "field added", "other action", "no keys", "forged channel", "bridge key off slack",
    ],
)  # fmt: skip
def test_refusals(payload: dict, reason: str):
    v = check(payload)
    assert v.refusal is not None and v.refusal.startswith(reason), v.refusal
    assert v.identity == "claimed" and v.body is None


def test_a_used_nonce_is_refused_and_a_minute_ahead_is_fine():
    payload = sign(BASE, at=NOW + timedelta(seconds=59))
    assert check(payload).refusal is None
    assert check(payload, used=frozenset({payload["nonce"]})).refusal == (
        "nonce already used: this signed action was sent before"
    )


def test_the_bridge_vouches_for_slack_clicks():
    v = check(sign({**BASE, "channel": "slack"}, by=keys.BRIDGE))
    assert v.refusal is None and v.identity == f"slack-bridge:{signing.fingerprint(keys.public(keys.BRIDGE))}"


def test_claimed_when_signatures_are_not_required():
    v = check(dict(BASE), k=trust.Keys(people={}, bridge=(), require=False))
    assert v == trust.Verdict(identity="claimed")
