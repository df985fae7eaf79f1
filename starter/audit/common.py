"""What the renderers share: times, the cloud, the header's facts, identities (SPEC §9) and the record's
links."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from starter.audit.collect import AuditRecord
from workflows.messages import NO_CLOUD as NO_CLOUD  # the cloud as every face says it
from workflows.messages import Fact, Span, status_facts
from workflows.models import SYSTEM, AuditEntry


def _iso(t: datetime | None) -> str:
    if t is None:
        return "-"
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the header: where the deploy stands, as every face says it, then what only the audit knows

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def audit_now(r: AuditRecord) -> datetime:
    """The "now" the header is said at (the audit has no clock): when the deploy closed, else the last
    time the record holds (an action, a Signal or Update received, a roster, since when it waits, its
    start). So a running deploy's "waits for … (4m)" is as of its last event, not as of the export."""
    st = r.status
    times = [e.time for e in st.audit] + [a.time for a in r.received] + [ro.time for ro in st.rosters]
    times += [t for t in (st.waiting_since, r.started) if t is not None]
    # With no time at all there is no `waiting_since` either, and `now` ages nothing.
    return r.closed or max(times, default=_EPOCH)


def header_facts(r: AuditRecord) -> list[Fact]:
    """The header's lines: `status_facts` (what the CLI, Slack and the Web UI say, in their words), the
    workflow id on its own line after the first, then what only the audit has: who opened the deploy and
    when, when it closed, the build's result, the version, the release window, the workers' config."""
    st = r.status
    live = status_facts(st, audit_now(r))
    extra = [Fact("opened_by", "opened by", (Span(r.opened_by or "-", "user"),) + _at(r.started))]
    if r.closed:
        extra.append(Fact("closed", "closed at", (Span(_iso(r.closed)),)))
    if st.build.result:
        extra.append(Fact("build_result", "build result", (Span(st.build.result, "said"),)))
    if st.version:
        extra.append(Fact("version", "version", (Span(st.version, "said"),)))
    if st.release_window:
        w = st.release_window
        window = (Span(w.name, "said"), Span(f" {_iso(w.start)} – {_iso(w.end)}"))
        extra.append(Fact("release_window", "release window", window))
    if st.config_sha256:
        extra.append(Fact("config_sha256", "workers' config sha256", (Span(st.config_sha256, "code"),)))
    wid = Fact("workflow_id", "workflow id", (Span(st.workflow_id, "code"),))
    return [live[0], wid, *live[1:], *extra]


def _at(t: datetime | None) -> tuple[Span, ...]:
    return (Span(f" at {_iso(t)}"),) if t else ()


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
