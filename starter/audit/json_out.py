"""The JSON export: `audit` (and `rosters`) exactly as `status --json` has them, plus the rest."""

from __future__ import annotations

from typing import Any

from starter.audit.collect import AuditRecord
from starter.audit.common import _iso, _params, identity_counts, links


def audit_document(r: AuditRecord) -> dict[str, Any]:
    """The JSON export: `audit` (and `rosters`) exactly as `status --json` has them, plus the rest."""
    st = r.status
    doc = st.model_dump(mode="json")
    out: dict[str, Any] = {
        "workflow_id": st.workflow_id,
        "source": r.source,
        "from_history": r.from_history,
        "process": doc["process"],
        "cloud": doc["cloud"],
        "service": st.service,
        "environment": st.environment,
        "opened_by": r.opened_by,
        "started": _iso(r.started) if r.started else None,
        "closed": _iso(r.closed) if r.closed else None,
        "execution": r.execution,
        "step": doc["step"],
        "waiting_on": doc["waiting_on"],
        "outcome": doc["outcome"],
        "outcome_reason": st.outcome_reason,
        "pccr": doc["pccr"],
        "params": _params(r),
        "build": doc["build"],
        "diff_sha256": st.build.diff_sha256,
        "version": st.version,
        "version_pr": st.version_pr,
        "sre": st.sre,
        "release_window": doc["release_window"],
        "slack_thread": st.slack_thread,
        "links": links(r),
        "config_sha256": st.config_sha256,
        "identities": identity_counts(st.audit),
        "rosters": doc["rosters"],
        "audit": doc["audit"],  # every AuditEntry field: identity, payload, signature, key, out_of_policy
    }
    if r.from_history:
        out["received"] = [a.model_dump(mode="json") for a in r.received]
    return out
