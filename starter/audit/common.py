"""What the renderers share: times, the cloud, identities (SPEC §9) and the record's links."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from starter.audit.collect import AuditRecord
from workflows.messages import NO_CLOUD as NO_CLOUD  # the cloud as every face says it
from workflows.models import SYSTEM, AuditEntry


def _iso(t: datetime | None) -> str:
    if t is None:
        return "-"
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- identities (SPEC §9)

#: The kinds of identity, in the order the summary names them, each with what it means.
IDENTITY_KINDS: tuple[tuple[str, str], ...] = (
    ("verified", "ssh: signed with a key of the actor"),
    ("bridge-verified", "slack-bridge: a Slack click the bridge verified and signed"),
    ("out-of-band", "jenkins:/github: done outside deployctl"),
    ("claimed", "claimed: nobody checked"),
    ("deployctl", "deployctl's own entries"),
)
OUT_OF_POLICY = "⚠ out of policy"


def identity_kind(identity: str) -> str:
    """verified | bridge-verified | out-of-band | claimed | deployctl | other."""
    if identity.startswith("ssh:"):
        return "verified"
    if identity.startswith("slack-bridge:"):
        return "bridge-verified"
    if identity.startswith(("jenkins:", "github:")):
        return "out-of-band"
    if identity == "claimed":
        return "claimed"
    if identity == SYSTEM:
        return "deployctl"
    return "other"


def identity_counts(entries: Iterable[AuditEntry]) -> dict[str, int]:
    """How many entries of each kind (every kind named, zeros too), `other` when there are any, and how
    many are out of policy."""
    counts = {kind: 0 for kind, _ in IDENTITY_KINDS}
    oop = 0
    for e in entries:
        kind = identity_kind(e.identity)
        counts[kind] = counts.get(kind, 0) + 1
        oop += e.out_of_policy
    counts["out_of_policy"] = oop
    return counts


def identity_summary(entries: Iterable[AuditEntry]) -> str:
    """One line counting the entries by identity; it doubles as the legend of the identity column.
    Only counts and fixed words: nothing in it comes from people."""
    counts = identity_counts(entries)
    items = []
    for kind, meaning in IDENTITY_KINDS:
        item = f"{counts[kind]} {kind} ({meaning}"
        if kind == "out-of-band":
            item += f"; {counts['out_of_policy']} {OUT_OF_POLICY}"
        items.append(item + ")")
    if counts.get("other"):
        items.append(f"{counts['other']} other (an identity this deployctl does not know)")
    return "identities: " + " · ".join(items)


def _identity_text(e: AuditEntry) -> str:
    return e.identity + (f" {OUT_OF_POLICY}" if e.out_of_policy else "")


def _params(r: AuditRecord) -> dict[str, str]:
    st = r.status
    return dict(st.pccr.params) if st.pccr and st.pccr.params else dict(r.params)


def _slack(r: AuditRecord) -> str | None:
    thread = r.status.slack_thread
    if not thread:
        return None
    return f"{r.triage_channel} thread {thread}" if r.triage_channel else f"thread {thread}"


def links(r: AuditRecord) -> dict[str, str | None]:
    st = r.status
    return {
        "pccr": st.pccr.url if st.pccr and st.pccr.url else None,
        "version_pr": st.version_pr,
        "build": st.build.url,
        "web_ui": st.ui_url,
        "slack_thread": _slack(r),
    }


_LINK_NAMES = {
    "pccr": "PCCR",
    "version_pr": "Version PR",
    "build": "Build",
    "web_ui": "Web UI",
    "slack_thread": "Slack thread",
}
