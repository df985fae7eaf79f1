"""Reading a deploy into an `AuditRecord`: the `status` query, which a worker answers from history even
for finished deploys, plus who opened the deploy and when (the first history event) and the triage channel
of the rules it read. When no worker answers the query, the record is rebuilt from the workflow's history
alone (`record_from_history`): its start intent, the rules the workers gave it (the first `load_rules`
result), its result, the search attributes it set, the results of its Jenkins/GitHub/Slack activities
and the Signals and Updates it received. That record says so in every format.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHistory,
    WorkflowQueryFailedError,
)
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode

from workflows import search_attributes as sa
from workflows.messages import ui_link
from workflows.models import (
    Action,
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

FROM_QUERY = "status query"
FROM_HISTORY = "from history (no worker answered the status query)"
ACTIONS = frozenset(a.value for a in Action)  # the Signals and Updates people send
WORKFLOW_TYPE = "Deploy"
# The activities whose results the history fallback reads, by their activity type names (starter/ may not
# import activities/; tests/test_audit.py checks each against its `@activity.defn`).
LOAD_RULES = "load_rules"
JOB_PARAMETERS = "job_parameters"
READ_DIFF = "read_diff"
TRIGGER_BUILD = "trigger_build"
WAIT_BUILD_STARTED = "wait_build_started"
WAIT_BUILD_RESULT = "wait_build_result"
OPEN_VERSION_PR = "open_version_pr"
OPEN_PCCR_ISSUE = "open_pccr_issue"
POST_MESSAGE = "post_message"
_ROOT_POST = POST_MESSAGE + ":root"  # the post that opened the triage thread (an internal tag, not a type)

ADMISSION = "admission"  # the Update `deployctl start` waits on for the workers' verdict
# Activities a deploy runs while it judges its start; any other one means the start was admitted.
ADMITTING = frozenset({LOAD_RULES, JOB_PARAMETERS})
RULES_SCAN = 500  # history events read for the first rules when the status query answered


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


async def fetch_audit(client: Client, workflow_id: str, *, query_timeout: float = 10.0) -> AuditRecord:
    """The audit record of a deploy, running or finished. A finished deploy's comes from its result (the
    final status, audit trail and rosters: no worker, no replay); a running one's, or one that ended
    otherwise or before its result carried the status, from the `status` query; and from history alone
    when no worker answers that query within `query_timeout` seconds (or the query fails)."""
    handle = client.get_workflow_handle(workflow_id)
    desc = await handle.describe()
    st = await final_status(client, workflow_id, desc)
    if st is None:
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
        record.closed = desc.close_time
        record.execution = desc.status.name.lower() if desc.status else None
    record.generated = datetime.now(UTC)
    return record


async def final_status(
    client: Client, workflow_id: str, desc: WorkflowExecutionDescription
) -> DeployStatus | None:
    """The status a completed deploy returned with its result; None for any other run (running, failed,
    terminated, timed out, another workflow type) and for a result from before it carried the status."""
    if desc.workflow_type != WORKFLOW_TYPE or desc.status is not WorkflowExecutionStatus.COMPLETED:
        return None
    handle = client.get_workflow_handle(workflow_id, run_id=desc.run_id, result_type=DeployResult)
    try:
        result = await handle.result(follow_runs=False)
    except ValidationError:  # a result this code cannot read: read the deploy as if it had not finished
        return None
    return result.status


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
            if a.activity_type.name == POST_MESSAGE and thread is None:
                post = await _first(converter, a.input, SlackPostInput)
                triage = (rules.settings if rules else DeploySettings()).triage_channel
                if post is not None and post.thread_ts is None and post.channel == triage:
                    scheduled[ev.event_id] = _ROOT_POST
        elif kind == "activity_task_completed_event_attributes":
            c = ev.activity_task_completed_event_attributes
            name = scheduled.get(c.scheduled_event_id, "")
            if name == LOAD_RULES:
                read = await _first(converter, c.result, Rules)
                if read is not None:
                    config_sha = read.config_sha256
                    if rules is None:
                        rules, rules_time = read, _time(ev)
            elif name == JOB_PARAMETERS:
                defs = await _first(converter, c.result, JobParametersResult)
                if defs is not None:
                    secrets = password_names(defs.parameters)
            elif name == READ_DIFF:
                diff = await _first(converter, c.result, ReadDiffResult)
                if diff is not None:
                    build.diff, build.diff_sha256 = diff.diff, diff.diff_sha256
            elif name == TRIGGER_BUILD:
                tb = await _first(converter, c.result, TriggerBuildResult)
                if tb is not None:
                    build.queue_id = tb.queue_id
                    build.number, build.url = tb.number or build.number, tb.url or build.url
            elif name == WAIT_BUILD_STARTED:
                ref = await _first(converter, c.result, BuildRef)
                if ref is not None:
                    build.number, build.url = ref.number, ref.url or build.url
            elif name == WAIT_BUILD_RESULT:
                res = await _first(converter, c.result, BuildResult)
                if res is not None:
                    build.result = res.result
            elif name == OPEN_VERSION_PR:
                pr = await _first(converter, c.result, VersionPr)
                if pr is not None:
                    version_pr = pr.url
            elif name == OPEN_PCCR_ISSUE:
                issue = await _first(converter, c.result, IssueRef) or issue
            elif name == _ROOT_POST and thread is None:
                posted = await _first(converter, c.result, SlackPostResult)
                if posted is not None:
                    thread = posted.ts
        elif kind == "upsert_workflow_search_attributes_event_attributes":
            fields = ev.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if sa.STEP.name in fields:
                value = converter.payload_converter.from_payloads([fields[sa.STEP.name]])[0]
                step = Step(value) if value in Step._value2member_map_ else step
            if sa.WAITING_ON.name in fields:
                value = converter.payload_converter.from_payloads([fields[sa.WAITING_ON.name]])[0]
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
    if step is None:  # no DeployStep search attribute was set: the first step, as the workflow starts it
        step = steps_for(intent.process, cloud or Cloud.COM, valkyr)[0].step
    window: ReleaseWindow | None = None
    if rules is not None and ruled and intent.process is Process.RELEASE and rules_time is not None:
        # The window the workflow chose when it read these rules (the same pure rule, at that time).
        window = choose_window(rules.windows, intent.release, rules_time, rules.lead_time_days)[0]

    ui = ui_link(s.ui_url, s.namespace, workflow_id)
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
