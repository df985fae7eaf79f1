"""`deployctl audit`: the record an auditor needs, as Markdown, JSON or one self-contained HTML page.

Two halves:

- reading (`collect`): `fetch_audit` and, when no worker answers, `record_from_history`.
- rendering (`render_audit(st, fmt)`): pure functions over a `DeployStatus` (or an `AuditRecord`), no I/O
  and no clock, one module per format (`md`, `json_out`, `html` with its SVG timeline). Everything taken
  from people (actors, comments, reasons) or from Jenkins/GitHub is escaped for the format it lands in; the
  HTML page has inline CSS and an inline SVG, no scripts, and loads nothing. Identities (SPEC §9) are shown
  apart from actors, with a count of each kind: verified by a key of the actor (`ssh:`), by the Slack
  bridge (`slack-bridge:`), out of band (`jenkins:`/`github:`, some out of policy), claimed, and
  deployctl's own entries.
"""

from __future__ import annotations

import json

from temporalio.client import Client

from starter.audit.collect import (
    ACTIONS,
    ADMISSION,
    ADMITTING,
    FROM_HISTORY,
    FROM_QUERY,
    LOAD_RULES,
    RULES_SCAN,
    WORKFLOW_TYPE,
    AuditRecord,
    ReceivedAction,
    fetch_audit,
    opening,
    record_from_history,
)
from starter.audit.common import (
    IDENTITY_KINDS,
    NO_CLOUD,
    OUT_OF_POLICY,
    SYSTEM,
    identity_counts,
    identity_kind,
    identity_summary,
    links,
)
from starter.audit.html import CSS, render_html, timeline_svg
from starter.audit.json_out import audit_document
from starter.audit.md import _md, render_md
from workflows.models import DeployStatus

FORMATS = ("md", "json", "html")

__all__ = [
    "ACTIONS",
    "ADMISSION",
    "ADMITTING",
    "CSS",
    "FORMATS",
    "FROM_HISTORY",
    "FROM_QUERY",
    "IDENTITY_KINDS",
    "LOAD_RULES",
    "NO_CLOUD",
    "OUT_OF_POLICY",
    "RULES_SCAN",
    "SYSTEM",
    "WORKFLOW_TYPE",
    "AuditRecord",
    "ReceivedAction",
    "_md",
    "audit_document",
    "audit_export",
    "fetch_audit",
    "identity_counts",
    "identity_kind",
    "identity_summary",
    "links",
    "opening",
    "record_from_history",
    "render_audit",
    "render_html",
    "render_md",
    "timeline_svg",
]


def render_audit(st: DeployStatus | AuditRecord, fmt: str) -> str:
    """The audit report of a deploy as `md`, `json` or `html`. Pure: no I/O, no clock."""
    record = st if isinstance(st, AuditRecord) else AuditRecord(status=st)
    if fmt == "json":
        return json.dumps(audit_document(record), indent=2, ensure_ascii=False)
    if fmt == "html":
        return render_html(record)
    if fmt == "md":
        return render_md(record)
    raise ValueError(f"unknown audit format {fmt!r}; use one of {', '.join(FORMATS)}")


async def audit_export(client: Client, workflow_id: str, fmt: str, *, query_timeout: float = 10.0) -> str:
    """`deployctl audit WORKFLOW_ID --format FMT`, as a function."""
    return render_audit(await fetch_audit(client, workflow_id, query_timeout=query_timeout), fmt)
