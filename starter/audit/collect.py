"""`deployctl audit`: the record an auditor needs, as Markdown, JSON or one self-contained HTML page.

Two halves:

- reading (`fetch_audit`): the `status` query, which a worker answers from history even for finished
  deploys, plus who opened the deploy and when (the first history event) and the triage channel of the
  rules it read. When no worker answers the query, the record is rebuilt from the workflow's history alone
  (`record_from_history`): its start intent, the rules the workers gave it (the first `load_rules`
  result), its result, the search attributes it set, the results of its Jenkins/GitHub/Slack activities
  and the Signals and Updates it received. That record says so in every format.
- rendering (`render_audit(st, fmt)`): pure functions over a `DeployStatus` (or an `AuditRecord`), no I/O
  and no clock. Everything taken from people (actors, comments, reasons) or from Jenkins/GitHub is escaped
  for the format it lands in; the HTML page has inline CSS and an inline SVG, no scripts, and loads nothing.
  Identities (SPEC §9) are shown apart from actors, with a count of each kind: verified by a key of the
  actor (`ssh:`), by the Slack bridge (`slack-bridge:`), out of band (`jenkins:`/`github:`, some out of
  policy), claimed, and deployctl's own entries.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory, WorkflowQueryFailedError
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode

from workflows.models import (
    Action,
    AuditEntry,
    BuildInfo,
    BuildRef,
    BuildResult,
    Cloud,
    DeployResult,
    DeploySettings,
    DeployStatus,
    IssueRef,
    JobParametersResult,
    Outcome,
    Pccr,
    Process,
    ReadDiffResult,
    ReleaseWindow,
    Rules,
    SlackPostInput,
    SlackPostResult,
    StartIntent,
    Step,
    TriggerBuildResult,
    VersionPr,
)
from workflows.policy import choose_window, password_names, shown_params
from workflows.steps import steps_for

FORMATS = ("md", "json", "html")
FROM_QUERY = "status query"
FROM_HISTORY = "from history (no worker answered the status query)"
SYSTEM = "deployctl"  # the workflow's own entries (notes, notify_failed, …)
ACTIONS = frozenset(a.value for a in Action)  # the Signals and Updates people send
WORKFLOW_TYPE = "Deploy"
LOAD_RULES = "load_rules"
ADMISSION = "admission"  # the Update `deployctl start` waits on for the workers' verdict
# Activities a deploy runs while it judges its start; any other one means the start was admitted.
ADMITTING = frozenset({LOAD_RULES, "job_parameters"})
RULES_SCAN = 500  # history events read for the first rules when the status query answered
NO_CLOUD = "cloud not known yet"


class ReceivedAction(BaseModel):
    """A Signal or Update the history shows the deploy received. Only the fallback has these: without
    a worker nobody re-evaluates the rules, so a Signal's acceptance is unknown; an Update in the history
    passed its validator, and `result` says whether its handler completed."""

    time: datetime
    kind: str  # signal | update
    action: str
    actor: str | None = None
    step: str | None = None
    channel: str | None = None
    comment: str | None = None
    sre: str | None = None
    result: str | None = None  # update: "completed" or "failed: …"; signal: None (not re-evaluated)


class AuditRecord(BaseModel):
    """What `render_audit` renders: the status document plus what only the history knows."""

    status: DeployStatus
    source: str = FROM_QUERY
    opened_by: str | None = None
    started: datetime | None = None
    closed: datetime | None = None
    execution: str | None = None  # the Temporal execution status: running, completed, failed, …
    triage_channel: str | None = None
    params: dict[str, str] = Field(default_factory=dict)  # the deploy's input (the PCCR's, when known)
    received: list[ReceivedAction] = Field(default_factory=list)
    generated: datetime | None = None

    @property
    def from_history(self) -> bool:
        return self.source == FROM_HISTORY


# ------------------------------------------------------------------------------------------- reading


async def fetch_audit(client: Client, workflow_id: str, *, query_timeout: float = 10.0) -> AuditRecord:
    """The audit record of a deploy, running or finished; from history alone when no worker answers the
    `status` query within `query_timeout` seconds (or the query fails)."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        st = await handle.query(
            "status", result_type=DeployStatus, rpc_timeout=timedelta(seconds=query_timeout)
        )
    except WorkflowQueryFailedError:
        st = None
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise
        st = None
    if st is None:
        history = await handle.fetch_history()
        record = await record_from_history(workflow_id, history.events, client.data_converter)
    else:
        record = AuditRecord(status=st, params=dict(st.pccr.params) if st.pccr else {})
        events = handle.fetch_history_events(page_size=50)
        intent, started, rules = await opening(events, client.data_converter)
        if intent is not None:
            record.opened_by = intent.actor
            # (a password parameter is never shown: a start refused for carrying one keeps it in its input)
            record.params = record.params or shown_params(intent.params, st.secret_params)
        record.started = started
        if rules is not None:
            record.triage_channel = rules.settings.triage_channel
        desc = await handle.describe()
        record.closed = desc.close_time
        record.execution = desc.status.name.lower() if desc.status else None
    record.generated = datetime.now(UTC)
    return record


async def audit_export(client: Client, workflow_id: str, fmt: str, *, query_timeout: float = 10.0) -> str:
    """`deployctl audit WORKFLOW_ID --format FMT`, as a function."""
    return render_audit(await fetch_audit(client, workflow_id, query_timeout=query_timeout), fmt)


def _time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


async def _decode(converter: DataConverter, payloads: Any) -> list[Any]:
    """The values of a Payloads message, as plain JSON values (no type hints: nothing is assumed)."""
    items = list(payloads.payloads) if payloads is not None else []
    return await converter.decode(items) if items else []


async def _first(converter: DataConverter, payloads: Any, model: type[BaseModel]) -> Any:
    values = await _decode(converter, payloads)
    if not values:
        return None
    try:
        return model.model_validate(values[0])
    except ValidationError:
        return None


async def _started_input(event: HistoryEvent, converter: DataConverter) -> StartIntent | None:
    """The start's intent as sent (SPEC §9: a plain mapping, signed); None when it is not one."""
    if not event.HasField("workflow_execution_started_event_attributes"):
        return None
    return await _first(converter, event.workflow_execution_started_event_attributes.input, StartIntent)


async def _lenient_intent(event: HistoryEvent, converter: DataConverter) -> StartIntent:
    """A start the workflow refused as malformed: what can be read of it, the rest placeholders (as the
    workflow itself does), so its record still renders."""
    values = await _decode(converter, event.workflow_execution_started_event_attributes.input)
    raw = values[0] if values and isinstance(values[0], dict) else {}

    def text(key: str, default: str) -> str:
        value = raw.get(key)
        return value[:100] if isinstance(value, str) and value else default

    process = raw.get("process")
    params = raw.get("params")
    return StartIntent.model_construct(
        process=Process(process)
        if isinstance(process, str) and process in Process._value2member_map_
        else Process.OOW,
        service=text("service", "unknown"),
        environment=text("environment", "unknown"),
        params={str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {},
        version=raw.get("version") if isinstance(raw.get("version"), str) else None,
        actor=text("actor", "unknown"),
    )


async def opening(
    events: AsyncIterator[HistoryEvent], converter: DataConverter
) -> tuple[StartIntent | None, datetime | None, Rules | None]:
    """From a running history: the start's intent and time, and the first rules the workers gave it
    (read within the first RULES_SCAN events; None before the rules are read)."""
    intent: StartIntent | None = None
    started: datetime | None = None
    scheduled: set[int] = set()
    seen = 0
    async for event in events:
        seen += 1
        if started is None:
            started = _time(event)
            intent = await _started_input(event, converter)
            if intent is None and event.HasField("workflow_execution_started_event_attributes"):
                intent = await _lenient_intent(event, converter)
        kind = event.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            if event.activity_task_scheduled_event_attributes.activity_type.name == LOAD_RULES:
                scheduled.add(event.event_id)
        elif kind == "activity_task_completed_event_attributes":
            done = event.activity_task_completed_event_attributes
            if done.scheduled_event_id in scheduled:
                rules = await _first(converter, done.result, Rules)
                if rules is not None:
                    return intent, started, rules
        if seen >= RULES_SCAN:
            break
    return intent, started, None


_CLOSING = {
    "workflow_execution_completed_event_attributes": "completed",
    "workflow_execution_failed_event_attributes": "failed",
    "workflow_execution_timed_out_event_attributes": "timed_out",
    "workflow_execution_terminated_event_attributes": "terminated",
    "workflow_execution_canceled_event_attributes": "canceled",
    "workflow_execution_continued_as_new_event_attributes": "continued_as_new",
}


async def record_from_history(
    workflow_id: str, events: Sequence[HistoryEvent] | WorkflowHistory, converter: DataConverter
) -> AuditRecord:
    """Rebuild what can be rebuilt of a deploy's record from its history alone (no worker, no replay).

    The start's intent says what was asked; the first `load_rules` result says what the workers' config
    gave it (settings, cloud, the service's steps). Before the rules were read, or when the start was
    refused, the cloud is not known and the settings are the defaults."""
    evs = list(events.events if isinstance(events, WorkflowHistory) else events)
    if not evs:
        raise ValueError(f"{workflow_id} has no history")
    first = evs[0]
    if not first.HasField("workflow_execution_started_event_attributes"):
        raise ValueError(f"{workflow_id} is not a deploy: its first event is not a workflow start")
    wf_type = first.workflow_execution_started_event_attributes.workflow_type.name
    if wf_type != WORKFLOW_TYPE:
        raise ValueError(f"{workflow_id} is not a deploy: it is a {wf_type or 'nameless'} workflow")
    intent = await _started_input(first, converter) or await _lenient_intent(first, converter)

    rules: Rules | None = None  # the first rules read: what the deploy runs by
    rules_time: datetime | None = None
    config_sha: str | None = None  # the last rules read
    admitted: bool | None = None  # the `admission` Update's verdict, when it was asked
    opened = False  # an activity beyond judging the start ran: it was admitted
    step: Step | None = None
    waiting: list[str] = []
    build = BuildInfo()
    secrets: list[str] = []  # the job's password parameters, as the workers read them
    issue: IssueRef | None = None
    version_pr: str | None = None
    thread: str | None = None
    outcome: Outcome | None = None
    reason: str | None = None
    execution = "running"
    closed: datetime | None = None
    received: list[ReceivedAction] = []
    scheduled: dict[int, str] = {}  # activity scheduled event id -> activity type
    updates: dict[str, ReceivedAction] = {}  # update id -> the action it carried
    admissions: set[str] = set()  # update ids of `admission`

    for ev in evs[1:]:
        kind = ev.WhichOneof("attributes")
        if kind == "activity_task_scheduled_event_attributes":
            a = ev.activity_task_scheduled_event_attributes
            scheduled[ev.event_id] = a.activity_type.name
            opened = opened or a.activity_type.name not in ADMITTING
            if a.activity_type.name == "post_message" and thread is None:
                post = await _first(converter, a.input, SlackPostInput)
                triage = (rules.settings if rules else DeploySettings()).triage_channel
                if post is not None and post.thread_ts is None and post.channel == triage:
                    scheduled[ev.event_id] = "post_message:root"
        elif kind == "activity_task_completed_event_attributes":
            c = ev.activity_task_completed_event_attributes
            name = scheduled.get(c.scheduled_event_id, "")
            if name == LOAD_RULES:
                read = await _first(converter, c.result, Rules)
                if read is not None:
                    config_sha = read.config_sha256
                    if rules is None:
                        rules, rules_time = read, _time(ev)
            elif name == "job_parameters":
                defs = await _first(converter, c.result, JobParametersResult)
                if defs is not None:
                    secrets = password_names(defs.parameters)
            elif name == "read_diff":
                diff = await _first(converter, c.result, ReadDiffResult)
                if diff is not None:
                    build.diff, build.diff_sha256 = diff.diff, diff.diff_sha256
            elif name == "trigger_build":
                tb = await _first(converter, c.result, TriggerBuildResult)
                if tb is not None:
                    build.queue_id = tb.queue_id
                    build.number, build.url = tb.number or build.number, tb.url or build.url
            elif name == "wait_build_started":
                ref = await _first(converter, c.result, BuildRef)
                if ref is not None:
                    build.number, build.url = ref.number, ref.url or build.url
            elif name == "wait_build_result":
                res = await _first(converter, c.result, BuildResult)
                if res is not None:
                    build.result = res.result
            elif name == "open_version_pr":
                pr = await _first(converter, c.result, VersionPr)
                if pr is not None:
                    version_pr = pr.url
            elif name == "open_pccr_issue":
                issue = await _first(converter, c.result, IssueRef) or issue
            elif name == "post_message:root" and thread is None:
                posted = await _first(converter, c.result, SlackPostResult)
                if posted is not None:
                    thread = posted.ts
        elif kind == "upsert_workflow_search_attributes_event_attributes":
            fields = ev.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if "DeployStep" in fields:
                value = converter.payload_converter.from_payloads([fields["DeployStep"]])[0]
                step = Step(value) if value in Step._value2member_map_ else step
            if "DeployWaitingOn" in fields:
                value = converter.payload_converter.from_payloads([fields["DeployWaitingOn"]])[0]
                waiting = [str(v) for v in value or []]
        elif (
            kind == "workflow_execution_signaled_event_attributes"
            and ev.workflow_execution_signaled_event_attributes.signal_name in ACTIONS
        ):  # people's actions only, not the deploy lock's internal signals
            sig = ev.workflow_execution_signaled_event_attributes
            values = await _decode(converter, sig.input)
            received.append(_received(_time(ev), "signal", sig.signal_name, values[0] if values else None))
        elif kind == "workflow_execution_update_accepted_event_attributes":
            acc = ev.workflow_execution_update_accepted_event_attributes
            update_id = acc.protocol_instance_id or acc.accepted_request.meta.update_id
            if acc.accepted_request.input.name == ADMISSION:
                admissions.add(update_id)
            elif acc.accepted_request.input.name in ACTIONS:
                values = await _decode(converter, acc.accepted_request.input.args)
                action = _received(
                    _time(ev), "update", acc.accepted_request.input.name, values[0] if values else None
                )
                received.append(action)
                updates[update_id] = action
        elif kind == "workflow_execution_update_completed_event_attributes":
            done = ev.workflow_execution_update_completed_event_attributes
            failed = done.outcome.HasField("failure")
            if done.meta.update_id in admissions:
                admitted = not failed
            found = updates.get(done.meta.update_id)
            if found is not None:
                found.result = f"failed: {done.outcome.failure.message}" if failed else "completed"
        elif kind in _CLOSING:
            execution, closed = _CLOSING[kind], _time(ev)
            if kind == "workflow_execution_completed_event_attributes":
                res = await _first(
                    converter, ev.workflow_execution_completed_event_attributes.result, DeployResult
                )
                if res is not None:
                    outcome, reason = res.outcome, res.reason
            elif kind == "workflow_execution_failed_event_attributes":
                reason = (
                    f"the workflow failed: {ev.workflow_execution_failed_event_attributes.failure.message}"
                )
            elif kind == "workflow_execution_terminated_event_attributes":
                reason = f"terminated: {ev.workflow_execution_terminated_event_attributes.reason or 'no reason given'}"
            else:
                reason = f"the workflow execution ended {execution.replace('_', ' ')}"

    # Admitted: the admission Update said so, or the deploy went on to open something. A start refused by
    # its rules (or its signature) opened nothing: its cloud is as unknown as before the rules were read.
    if admitted is None:
        admitted = opened
    ruled = rules is not None and rules.refusal is None and admitted
    s = rules.settings if rules is not None and ruled else DeploySettings()
    cloud: Cloud | None = rules.cloud if rules is not None and ruled else None
    valkyr = bool(rules and ruled and rules.service and rules.service.valkyr)
    if step is None:  # no DeployStep was set: the first step, as the workflow starts it
        step = steps_for(intent.process, cloud or Cloud.COM, valkyr)[0].step
    window: ReleaseWindow | None = None
    if rules is not None and ruled and intent.process is Process.RELEASE and rules_time is not None:
        # The window the workflow chose when it read these rules (the same pure rule, at that time).
        window = choose_window(rules.windows, intent.release, rules_time, rules.lead_time_days)[0]

    ui = f"{s.ui_url.rstrip('/')}/namespaces/{s.namespace}/workflows/{workflow_id}"
    pccr: Pccr | None = None
    if ruled:
        pccr = Pccr(
            id=workflow_id,
            url=ui,
            state="unknown",
            params=shown_params(intent.params, secrets),
            backend=s.pccr_backend,
        )
        if s.pccr_backend != "builtin":
            pccr = pccr.model_copy(update={"url": issue.url if issue else ""})
        if issue is not None:
            pccr = pccr.model_copy(update={"url": issue.url, "number": issue.number})

    # The assigned SRE, when an assign Update completed (a Signal's acceptance is not known here).
    sre = next((a.sre for a in reversed(received) if a.action == "assign" and a.result == "completed"), None)
    st = DeployStatus(
        workflow_id=workflow_id,
        process=intent.process,
        cloud=cloud,
        service=intent.service,
        environment=intent.environment,
        step=step,
        waiting_on=[] if closed else waiting,
        allowed_actions=[],
        pccr=pccr,
        build=build,
        version_pr=version_pr,
        version=intent.version,
        release_window=window,
        outcome=outcome,
        outcome_reason=reason,
        slack_thread=thread,
        ui_url=ui,
        sre=sre,
        config_sha256=config_sha,
        secret_params=secrets,
    )
    return AuditRecord(
        status=st,
        source=FROM_HISTORY,
        opened_by=intent.actor,
        started=_time(first),
        closed=closed,
        execution=execution,
        triage_channel=s.triage_channel,
        params=shown_params(intent.params, secrets),
        received=received,
    )


def _received(time: datetime, kind: str, name: str, payload: Any) -> ReceivedAction:
    p = payload if isinstance(payload, dict) else {}

    def text(key: str) -> str | None:
        value = p.get(key)
        return None if value is None else str(value)

    return ReceivedAction(
        time=time,
        kind=kind,
        action=name,
        actor=text("actor"),
        step=text("step"),
        channel=text("channel"),
        comment=text("comment"),
        sre=text("sre"),
    )


# ----------------------------------------------------------------------------------------- rendering


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


def _iso(t: datetime | None) -> str:
    if t is None:
        return "-"
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cloud(st: DeployStatus) -> str:
    """ "com-cloud", or that the workers' rules have not said yet (or the start was refused)."""
    return f"{st.cloud.value}-cloud" if st.cloud is not None else NO_CLOUD


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


# -- Markdown


# Markdown (CommonMark with GitHub's extensions, as cmark-gfm renders it) gives meaning to these inline.
_MD_PUNCT = frozenset("\\`*[]~|$")
_MD_ENTITY = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# An e-mail address becomes a mailto link whatever is escaped in it: it goes in a code span, whose text is
# never a link. Nothing the pattern matches needs escaping there (no & < > | \\ or backtick).
_EMAIL = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9._-]+")


def _md_run(text: str) -> str:
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch in _MD_ENTITY:
            out.append(_MD_ENTITY[ch])
        elif ch in _MD_PUNCT:
            out.append("\\" + ch)
        elif ch == "_":  # inert between two letters or digits (snake_case stays readable); else escaped
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append(ch if inner else "\\_")
        elif ch == ":" and text.startswith("//", i + 1):  # https://… would become a link
            out.append("\\:")
        elif ch == "." and text[max(0, i - 3) : i].lower() == "www":  # so would www.…
            out.append("\\.")
        elif ch == "#" and not text[i:].strip("#"):  # a heading's closing sequence would be dropped
            out.append("\\#")
        else:
            out.append(ch)
    return "".join(out)


def _md(value: object) -> str:
    """A value from outside (people, Jenkins, GitHub, the workflow id) as Markdown text that renders as
    exactly that text: one line, no markup, no link, no HTML. Every character Markdown gives meaning to
    inline is backslash-escaped, `&<>` become entities (so the raw file holds no HTML either), `://` and
    `www.` cannot start a link, and an e-mail address is put in a code span (escapes cannot stop it being
    a mailto link). Pipes are escaped, so it is also a safe table cell."""
    text = "" if value is None else str(value)
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").strip()
    out, pos = [], 0
    for m in _EMAIL.finditer(text):
        out += [_md_run(text[pos : m.start()]), f"`{m.group(0)}`"]
        pos = m.end()
    out.append(_md_run(text[pos:]))
    return "".join(out)


def _fence(text: str) -> str:
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _groups_text(groups: dict[str, list[str]]) -> str:
    return "; ".join(f"{name}: {', '.join(members) or '-'}" for name, members in groups.items())


def render_md(r: AuditRecord) -> str:
    st = r.status
    outcome = st.outcome.value if st.outcome else "running"
    lines = [f"# Audit of {_md(st.workflow_id)}", ""]
    if r.from_history:
        lines += [
            f"> **{FROM_HISTORY}**: rebuilt from the workflow's input, result and events; the audit "
            "trail and rosters live in the workflow's state and need a worker to be read.",
            "",
        ]
    lines += [
        f"- deploy: {st.process.value} {_md(st.service)} → {_md(st.environment)} ({_cloud(st)})",
        f"- workflow id: {_md(st.workflow_id)}",
        f"- opened by: {_md(r.opened_by) or '-'}" + (f" at {_iso(r.started)}" if r.started else ""),
        f"- outcome: {outcome}" + (f" ({_md(st.outcome_reason)})" if st.outcome_reason else ""),
        f"- step: {st.step.value}" + (f" (closed {_iso(r.closed)})" if r.closed else ""),
        f"- PCCR: {_md(st.pccr.url if st.pccr else '') or '-'} ({_md(st.pccr.state if st.pccr else '') or '-'})",
        f"- build: {_md(st.build.url) or '-'} result {_md(st.build.result) or '-'} "
        f"diff sha256 {_md(st.build.diff_sha256) or '-'}",
        f"- SRE: {_md(st.sre) or '-'}",
    ]
    if st.version:
        lines.append(f"- version: {_md(st.version)}")
    if st.release_window:
        w = st.release_window
        lines.append(f"- release window: {_md(w.name)} {_iso(w.start)} – {_iso(w.end)}")
    if st.waiting_on and not st.outcome:
        lines.append(f"- waiting on: {_md(', '.join(st.waiting_on))}")
    if st.config_sha256:
        lines.append(f"- workers' config sha256: {_md(st.config_sha256)}")
    lines += ["", "## Links", ""]
    lines += [f"- {_LINK_NAMES[k]}: {_md(v) or '-'}" for k, v in links(r).items()]

    lines += ["", "## PCCR", ""]
    if st.pccr:
        p = st.pccr
        lines += [
            f"- id: {_md(p.id)}" + (f" (issue #{p.number})" if p.number else ""),
            f"- backend: {_md(p.backend)}",
            f"- state: {_md(p.state)}",
            f"- link: {_md(p.url) or '-'}",
        ]
        if p.vp_approved_by:
            lines.append(f"- VP approval: {_md(p.vp_approved_by)}")
    params = _params(r)
    lines += ["", "| parameter | value |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in params.items()] or ["| - | - |"]

    lines += [
        "",
        "## Actions",
        "",
        identity_summary(st.audit),
        "",
        "| time | step | action | actor | identity | role | channel | accepted | reason | comment |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in st.audit:
        lines.append(
            f"| {e.time.isoformat(timespec='seconds')} | {e.step.value} | {_md(e.action)} | {_md(e.actor)} "
            f"| {_md(_identity_text(e))} | {_md(e.role)} | {_md(e.channel)} | {'yes' if e.accepted else 'no'} "
            f"| {_md(e.reason)} | {_md(e.comment)} |"
        )
    if r.from_history:
        lines += [
            "",
            "### Signals and Updates received (from history; acceptance not re-evaluated)",
            "",
            "| time | kind | action | actor | step | channel | comment | result |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for a in r.received:
            lines.append(
                f"| {a.time.isoformat(timespec='seconds')} | {a.kind} | {_md(a.action)} | {_md(a.actor)} "
                f"| {_md(a.step)} | {_md(a.channel)} | {_md(a.comment)} | {_md(a.result) or 'unknown'} |"
            )

    lines += ["", "## Rosters", "", "| step started | eligible | groups |", "|---|---|---|"]
    lines += [
        f"| {r_.time.isoformat(timespec='seconds')} {r_.step.value} | {_md(', '.join(r_.eligible)) or '-'} "
        f"| {_md(_groups_text(r_.groups)) or '-'} |"
        for r_ in st.rosters
    ]

    lines += ["", "## Diff", "", f"sha256: {_md(st.build.diff_sha256) or '-'}", ""]
    if st.build.diff is not None:
        fence = _fence(st.build.diff)
        lines += [f"{fence}diff", st.build.diff.rstrip("\n"), fence]
    else:
        lines.append("(no diff: the build did not print one, or the deploy did not get that far)")
    return "\n".join(lines)


# -- HTML


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _a(url: str | None, text: str | None = None) -> str:
    """A plain link when the URL is http(s); anything else is shown as text, never as a link."""
    if not url:
        return "-"
    if url.startswith(("http://", "https://")):
        return f'<a href="{_e(url)}" rel="noreferrer noopener">{_e(text or url)}</a>'
    return _e(url)


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --ok:#1a7f37; --no:#cf222e; --bar:#b6d4fe; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); }
code, pre, .mono { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
table.kv th { width: 180px; }
tr.refused td { background: #ffebe9; } tr.system td { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; color: #fff; }
.badge.succeeded { background: var(--ok); } .badge.running { background: #0969da; }
.badge.failed, .badge.rejected, .badge.cancelled, .badge.expired, .badge.unknown { background: var(--no); }
.source { padding: 8px 12px; border-radius: 6px; background: #fff8c5; border: 1px solid #d4a72c; }
.yes { color: var(--ok); font-weight: 600; } .no { color: var(--no); font-weight: 600; }
.oop { color: var(--no); font-weight: 600; white-space: nowrap; } td.identity { word-break: break-all; }
.identities { color: var(--muted); }
pre { background: var(--bg); border: 1px solid var(--line); padding: 10px; overflow-x: auto; white-space: pre; }
.timeline { border: 1px solid var(--line); border-radius: 6px; padding: 8px; overflow-x: auto; }
.timeline svg { max-width: 100%; height: auto; }
.legend span { margin-right: 18px; color: var(--muted); }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
"""


def render_html(r: AuditRecord) -> str:
    st = r.status
    outcome = st.outcome.value if st.outcome else ("unknown" if r.closed else "running")
    kv: list[tuple[str, str]] = [
        ("workflow id", f"<code>{_e(st.workflow_id)}</code>"),
        ("service", _e(st.service)),
        ("environment", _e(st.environment)),
        ("cloud", _e(st.cloud.value if st.cloud is not None else NO_CLOUD)),
        ("process", _e(st.process.value)),
        ("opened by", _e(r.opened_by or "-") + (f" at {_e(_iso(r.started))}" if r.started else "")),
        ("outcome", f'<span class="badge {_e(outcome)}">{_e(outcome)}</span> {_e(st.outcome_reason or "")}'),
        ("step", _e(st.step.value) + (f" (closed {_e(_iso(r.closed))})" if r.closed else "")),
        ("assigned SRE", _e(st.sre or "-")),
    ]
    if st.version:
        kv.append(("version", _e(st.version)))
    if st.release_window:
        w = st.release_window
        kv.append(("release window", f"{_e(w.name)}: {_e(_iso(w.start))} – {_e(_iso(w.end))}"))
    if st.waiting_on and not st.outcome:
        kv.append(("waiting on", _e(", ".join(st.waiting_on))))
    if st.blocked_by:
        kv.append(("waits for", _e(st.blocked_by)))
    if st.config_sha256:
        kv.append(("workers' config sha256", f"<code>{_e(st.config_sha256)}</code>"))

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Audit of {_e(st.workflow_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<header><h1>Audit of <code>{_e(st.workflow_id)}</code></h1>",
        f"<p>{_e(st.process.value)} deploy of <b>{_e(st.service)}</b> to <b>{_e(st.environment)}</b> "
        f'({_e(_cloud(st))}) — <span class="badge {_e(outcome)}">{_e(outcome)}</span></p>',
    ]
    if r.from_history:
        parts.append(
            f'<p class="source" id="source"><b>{_e(FROM_HISTORY)}</b>: rebuilt from the workflow\'s input, '
            "result and events; the audit trail and rosters live in the workflow's state and need a worker.</p>"
        )
    parts.append("</header>")
    parts += ['<section id="deploy"><h2>Deploy</h2><table class="kv">']
    parts += [f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in kv]
    parts.append("</table></section>")

    parts += ['<section id="links"><h2>Links</h2><table class="kv">']
    for key, value in links(r).items():
        cell = _e(value) if key == "slack_thread" and value else _a(value)
        parts.append(f"<tr><th>{_LINK_NAMES[key]}</th><td>{cell}</td></tr>")
    parts.append("</table></section>")

    parts += ['<section id="timeline"><h2>Timeline</h2><div class="timeline">', timeline_svg(r), "</div>"]
    parts.append(
        '<p class="legend"><span style="color:#1a7f37">● accepted</span><span style="color:#cf222e">○ refused</span>'
        "<span>◆ deployctl (system)</span><span>bars: from when a step started to when the next one did</span></p>"
        "</section>"
    )

    parts += ['<section id="pccr"><h2>PCCR</h2>']
    if st.pccr:
        p = st.pccr
        parts += [
            '<table class="kv">',
            f"<tr><th>id</th><td>{_e(p.id)}{f' (issue #{p.number})' if p.number else ''}</td></tr>",
            f"<tr><th>link</th><td>{_a(p.url)}</td></tr>",
            f"<tr><th>backend</th><td>{_e(p.backend)}</td></tr>",
            f"<tr><th>state</th><td>{_e(p.state)}</td></tr>",
        ]
        if p.vp_approved_by:
            parts.append(f"<tr><th>VP approval</th><td>{_e(p.vp_approved_by)}</td></tr>")
        parts.append("</table>")
    parts.append('<table class="params"><tr><th>parameter</th><th>value</th></tr>')
    parts += [
        f"<tr><td><code>{_e(k)}</code></td><td><code>{_e(v)}</code></td></tr>" for k, v in _params(r).items()
    ]
    parts.append("</table></section>")

    parts += [
        '<section id="actions"><h2>Actions</h2>',
        f'<p class="identities" id="identities">{_e(identity_summary(st.audit))}</p>',
        '<table class="audit">',
        "<tr><th>time (UTC)</th><th>step</th><th>action</th><th>actor</th><th>identity</th><th>role</th>"
        "<th>channel</th><th>accepted</th><th>reason</th><th>comment</th></tr>",
    ]
    for e in st.audit:
        cls = "system" if e.actor == SYSTEM else ("accepted" if e.accepted else "refused")
        ok = '<span class="yes">yes</span>' if e.accepted else '<span class="no">no</span>'
        oop = f' <span class="oop">{_e(OUT_OF_POLICY)}</span>' if e.out_of_policy else ""
        parts.append(
            f'<tr class="{cls}"><td class="mono">{_e(_iso(e.time))}</td><td>{_e(e.step.value)}</td>'
            f"<td>{_e(e.action)}</td><td>{_e(e.actor)}</td>"
            f'<td class="identity" data-kind="{_e(identity_kind(e.identity))}"><code>{_e(e.identity)}</code>{oop}</td>'
            f"<td>{_e(e.role or '')}</td><td>{_e(e.channel)}</td>"
            f"<td>{ok}</td><td>{_e(e.reason or '')}</td><td>{_e(e.comment or '')}</td></tr>"
        )
    if not st.audit:
        parts.append('<tr><td colspan="10">no audit trail in this record</td></tr>')
    parts.append("</table>")
    if r.from_history:
        parts += [
            "<h3>Signals and Updates received (from history; acceptance not re-evaluated)</h3>",
            '<table class="received"><tr><th>time (UTC)</th><th>kind</th><th>action</th><th>actor</th>'
            "<th>step</th><th>channel</th><th>comment</th><th>result</th></tr>",
        ]
        parts += [
            f'<tr><td class="mono">{_e(_iso(a.time))}</td><td>{_e(a.kind)}</td><td>{_e(a.action)}</td>'
            f"<td>{_e(a.actor or '')}</td><td>{_e(a.step or '')}</td><td>{_e(a.channel or '')}</td>"
            f"<td>{_e(a.comment or '')}</td><td>{_e(a.result or 'unknown')}</td></tr>"
            for a in r.received
        ]
        parts.append("</table>")
    parts.append("</section>")

    parts += [
        '<section id="rosters"><h2>Rosters</h2><table class="rosters">',
        "<tr><th>step</th><th>started (UTC)</th><th>eligible</th><th>groups as resolved then</th></tr>",
    ]
    for ro in st.rosters:
        groups = "<br>".join(f"<b>{_e(n)}</b>: {_e(', '.join(m) or '-')}" for n, m in ro.groups.items())
        parts.append(
            f'<tr><td>{_e(ro.step.value)}</td><td class="mono">{_e(_iso(ro.time))}</td>'
            f"<td>{_e(', '.join(ro.eligible) or '-')}</td><td>{groups or '-'}</td></tr>"
        )
    if not st.rosters:
        parts.append('<tr><td colspan="4">no rosters in this record</td></tr>')
    parts.append("</table></section>")

    parts += [
        '<section id="diff"><h2>Diff</h2>',
        f"<p>sha256: <code>{_e(st.build.diff_sha256 or '-')}</code>"
        + (
            f" — build #{_e(st.build.number)} {_a(st.build.url)} result {_e(st.build.result or '-')}"
            if st.build.number
            else ""
        )
        + "</p>",
        f"<pre>{_e(st.build.diff)}</pre>" if st.build.diff is not None else "<p>(no diff)</p>",
        "</section>",
        f"<footer>deployctl audit — source: {_e(r.source)}"
        + (f" — generated {_e(_iso(r.generated))}" if r.generated else "")
        + "</footer>",
        "</body></html>",
    ]
    return "\n".join(parts)


# -- the timeline picture

LABEL_W, CHART_W, ROW_H, TOP, AXIS_H, RIGHT = 200, 720, 72, 28, 40, 90
CHAR_W = 6.6  # an estimate of the width of one character of the 11px labels


class _Mark(BaseModel):
    time: datetime
    step: str
    kind: str  # accepted | refused | system | received
    label: str
    title: str


def _marks(r: AuditRecord) -> list[_Mark]:
    marks = [
        _Mark(
            time=e.time,
            step=e.step.value,
            kind="system" if e.actor == SYSTEM else ("accepted" if e.accepted else "refused"),
            label=e.actor,
            title=(
                f"{_iso(e.time)} {e.step.value}: {e.action} by {e.actor}"
                + (f" as {e.role}" if e.role else "")
                + f" via {e.channel} [{_identity_text(e)}] — {'accepted' if e.accepted else 'refused'}"
                + (f": {e.reason}" if e.reason else "")
                + (f" — “{e.comment}”" if e.comment else "")
            ),
        )
        for e in r.status.audit
    ]
    for a in r.received:
        failed = (a.result or "").startswith("failed")
        marks.append(
            _Mark(
                time=a.time,
                step=a.step or "",
                kind="refused" if failed else ("accepted" if a.result == "completed" else "received"),
                label=a.actor or "?",
                title=f"{_iso(a.time)} {a.step or '?'}: {a.kind} {a.action} from {a.actor or '?'} — {a.result or 'acceptance unknown'}",
            )
        )
    return sorted(marks, key=lambda m: m.time)


class _Lane(BaseModel):
    step: str
    start: datetime
    end: datetime | None = None
    eligible: list[str] = Field(default_factory=list)
    roster: bool = True  # False: no roster was recorded for it (a lane made from its actions)
    marks: list[_Mark] = Field(default_factory=list)


def _lanes(r: AuditRecord, marks: Iterable[_Mark]) -> list[_Lane]:
    lanes = [
        _Lane(step=ro.step.value, start=ro.time, eligible=list(ro.eligible))
        for ro in sorted(r.status.rosters, key=lambda ro: ro.time)
    ]
    for m in marks:
        # The lane of the mark's step that had started by then (the latest such); else a lane of its own.
        home = None
        for lane in lanes:
            if lane.step == m.step and lane.start <= m.time:
                home = lane
        if home is None:
            home = next((lane for lane in lanes if lane.step == m.step), None)
        if home is None:
            home = _Lane(step=m.step or "?", start=m.time, roster=False)
            lanes.append(home)
            lanes.sort(key=lambda lane: lane.start)
        home.marks.append(m)
    for i, lane in enumerate(lanes):
        lane.end = lanes[i + 1].start if i + 1 < len(lanes) else None
    return lanes


def _fmt_tick(t: datetime, span: timedelta) -> str:
    t = t.astimezone(UTC)
    if span < timedelta(seconds=20):
        return t.strftime("%H:%M:%S.%f")[:-3]
    if span < timedelta(days=1):
        return t.strftime("%H:%M:%S")
    return t.strftime("%m-%d %H:%M")


def timeline_svg(r: AuditRecord) -> str:
    """One lane per step in the order they started: a bar until the next step started (or the end), a
    filled marker per accepted action, a hollow red one per refused action, labelled with the actor."""
    marks = _marks(r)
    lanes = _lanes(r, marks)
    if not lanes:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40" role="img" aria-label="no steps">'
            '<text x="8" y="24" font-size="13">no steps recorded</text></svg>'
        )
    times = [lane.start for lane in lanes] + [m.time for m in marks]
    t0 = min(times)
    end = r.closed or max(times)
    end = max(end, max(times))
    span = max(end - t0, timedelta(seconds=1))

    def x(t: datetime) -> float:
        return round(LABEL_W + (t - t0) / span * CHART_W, 1)

    width = LABEL_W + CHART_W + RIGHT
    height = TOP + ROW_H * len(lanes) + AXIS_H
    outcome = r.status.outcome.value if r.status.outcome else ("ended" if r.closed else "now")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline-svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of {_e(r.status.workflow_id)}" '
        'font-family="DejaVu Sans, system-ui, sans-serif">',
        f"<title>Timeline of {_e(r.status.workflow_id)}</title>",
    ]
    for i in range(0, len(lanes), 2):
        out.append(f'<rect x="0" y="{TOP + ROW_H * i}" width="{width}" height="{ROW_H}" fill="#f6f8fa"/>')
    # The axis: five ticks from the first step to the end, with vertical grid lines.
    axis_y = TOP + ROW_H * len(lanes)
    for i in range(5):
        t = t0 + span * (i / 4)
        xi = x(t)
        out.append(f'<line x1="{xi}" y1="{TOP - 6}" x2="{xi}" y2="{axis_y}" stroke="#eaeef2"/>')
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        out.append(
            f'<text x="{xi}" y="{axis_y + 16}" font-size="11" fill="#59636e" text-anchor="{anchor}">'
            f"{_e(_fmt_tick(t, span))}</text>"
        )
    out.append(
        f'<text x="{LABEL_W}" y="{axis_y + 32}" font-size="11" fill="#59636e">UTC, {_e(_iso(t0))} → {_e(_iso(end))}</text>'
    )
    for i, lane in enumerate(lanes):
        y = TOP + ROW_H * i
        yc = y + ROW_H / 2
        x1 = x(lane.start)
        x2 = x(lane.end or end)
        bar_w = max(x2 - x1, 3)
        current = lane.end is None and r.status.outcome is None and r.closed is None
        out.append(f'<g class="lane" data-step="{_e(lane.step)}">')
        out.append(
            f'<text x="{LABEL_W - 12}" y="{yc - 2}" font-size="13" font-weight="600" text-anchor="end">'
            f"{_e(lane.step)}</text>"
        )
        who = ", ".join(lane.eligible) or ("nobody waited on" if lane.roster else "roster unknown")
        if len(who) > 30:
            who = who[:29] + "…"
        out.append(
            f'<text x="{LABEL_W - 12}" y="{yc + 13}" font-size="10.5" fill="#59636e" text-anchor="end">'
            f"{_e(who)}<title>eligible: {_e(', '.join(lane.eligible) or '-')}</title></text>"
        )
        dash = ' stroke-dasharray="4 3"' if current else ""
        out.append(
            f'<rect class="bar" x="{x1}" y="{yc - 7}" width="{round(bar_w, 1)}" height="14" rx="3" '
            f'fill="#b6d4fe" stroke="#0969da" stroke-width="1"{dash}>'
            f"<title>{_e(lane.step)}: {_e(_iso(lane.start))} → {_e(_iso(lane.end) if lane.end else outcome)}</title></rect>"
        )
        # Labels go in four slots (above, below, further above, further below), the first one free.
        slots = [yc - 12, yc + 21, yc - 24, yc + 33]
        busy_until = [float("-inf")] * len(slots)
        for m in lane.marks:
            xm = x(m.time)
            if m.kind == "system":
                out.append(
                    f'<path class="mark system" d="M{xm} {yc - 4} L{xm + 4} {yc} L{xm} {yc + 4} L{xm - 4} {yc} Z" '
                    f'fill="#8c959f"><title>{_e(m.title)}</title></path>'
                )
                continue
            if m.kind == "accepted":
                shape = 'fill="#1a7f37" stroke="#ffffff" stroke-width="1.5"'
            elif m.kind == "refused":
                shape = 'fill="#ffffff" stroke="#cf222e" stroke-width="2.5"'
            else:
                shape = 'fill="#ffffff" stroke="#59636e" stroke-width="2" stroke-dasharray="2 2"'
            out.append(
                f'<circle class="mark {m.kind}" cx="{xm}" cy="{yc}" r="6.5" {shape}><title>{_e(m.title)}</title></circle>'
            )
            w = len(m.label) * CHAR_W
            left = xm - w / 2
            slot = next((k for k, busy in enumerate(busy_until) if left > busy + 4), None)
            if slot is None:
                slot = min(range(len(slots)), key=lambda k: busy_until[k])
            busy_until[slot] = left + w
            color = "#cf222e" if m.kind == "refused" else "#1f2328"
            # Near an edge the label runs inwards from the marker instead of being centred on it.
            anchor, xt = "middle", xm
            if left < LABEL_W - 4:
                anchor, xt = "start", round(xm - 6, 1)
            elif left + w > width - 4:
                anchor, xt = "end", round(xm + 6, 1)
            out.append(
                f'<text class="actor" x="{xt}" y="{slots[slot]}" font-size="11" text-anchor="{anchor}" fill="{color}">'
                f"{_e(m.label)}</text>"
            )
        out.append("</g>")
    xe = x(end)
    out.append(
        f'<line x1="{xe}" y1="{TOP - 10}" x2="{xe}" y2="{axis_y}" stroke="#59636e" stroke-dasharray="3 3"/>'
        f'<text x="{xe + 6}" y="{TOP - 12}" font-size="12" font-weight="600" fill="#1f2328">{_e(outcome)}</text>'
    )
    out.append("</svg>")
    return "\n".join(out)
