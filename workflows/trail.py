"""The audit trail and the outcome: what every part of a running deploy records, and how it ends."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from workflows import trust
from workflows.models import SYSTEM, AuditEntry, Outcome, Step
from workflows.state import DeployState

MAX_REFUSED = (
    200  # refused actions kept in the audit trail; more are only counted (status `refused_not_kept`)
)


def record(s: DeployState, entry: AuditEntry) -> None:
    """Into the audit trail. Refused actions beyond MAX_REFUSED are counted, not kept: a flood of them
    cannot grow the status past what Temporal carries (SPEC §10)."""
    if not entry.accepted and entry.actor != SYSTEM:
        if s.refused_kept >= MAX_REFUSED:
            s.refused_dropped += 1
            return
        s.refused_kept += 1
    s.audit.append(entry)


def note(
    s: DeployState,
    text: str,
    action: str = "note",
    channel: str = SYSTEM,
    step: Step | None = None,
    accepted: bool = True,
) -> None:
    """An entry by deployctl itself in the audit trail: `text` is its reason."""
    what = {"action": action, "channel": channel, "accepted": accepted, "reason": text}
    record(s, AuditEntry(time=workflow.now(), step=step or s.step, actor=SYSTEM, identity=SYSTEM, **what))


def evidence(verdict: trust.Verdict, accepted: bool) -> dict[str, Any]:
    """What an accepted signed entry keeps so anyone can check it again (`deployctl verify`)."""
    if not accepted or verdict.body is None:
        return {}
    return {"payload": verdict.body, "signature": verdict.signature, "key": verdict.key}


def finish(s: DeployState, outcome: Outcome, reason: str) -> None:
    """The deploy's outcome, once: the first one set stands, and no step takes actions after it."""
    if s.outcome is None:
        s.outcome, s.reason = outcome, reason
        s.busy = True
