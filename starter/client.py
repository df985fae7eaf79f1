"""The one door to Temporal: what the CLI, the Slack bridge, the dev stack and bench use to connect, start
a deploy, act on it, read its status, list deploys and fetch what its audit needs.

It raises typed errors and prints nothing but one warning on stderr; `starter/cli.py` parses, prints and
maps them to exit codes (SPEC §5): Refused (a rule said no: 3), UsageError (bad arguments, files or
configuration: 2), Unreadable (a status that could not be read: 1). All three are DeployctlError.
Connecting is the SDK's environment configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TLS variables, profiles) with pydantic payloads, the same for every part, workers too.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import ApplicationError
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from starter.audit import audit_export, opening
from starter.config import Config
from starter.signing import SigningError, sign_payload
from workflows import messages, policy
from workflows import search_attributes as sa
from workflows.models import (
    OUTSIDE_EVENT,
    Action,
    ActionInput,
    ActionResult,
    DeployResult,
    DeployStatus,
    JobParametersInput,
    JobParametersResult,
    OutsideEvent,
    Process,
    Rules,
    StartIntent,
)
from workflows.steps import steps_for

# ------------------------------------------------------------------------------------------- errors


class DeployctlError(Exception):
    """What the client library raises on purpose; each kind has its exit code at the CLI."""


class Refused(DeployctlError):
    """A rule said no: exit 3."""


class UsageError(DeployctlError):
    """Bad arguments, files or configuration: exit 2."""


class Unreadable(DeployctlError):
    """A deploy's `status` could not be read (not a deploy, or its status query failed): exit 1."""


# --------------------------------------------------------------------------------------- connecting


def connect_config(env: Mapping[str, str] | None = None) -> dict:
    config = dict(ClientConfig.load_client_connect_config(override_env_vars=env))
    config.setdefault("target_host", "127.0.0.1:7233")
    config.setdefault("namespace", "default")
    return config


async def connect(env: Mapping[str, str] | None = None, runtime: Runtime | None = None) -> Client:
    config = connect_config(env)
    return await Client.connect(**config, data_converter=pydantic_data_converter, runtime=runtime)


# ---------------------------------------------------------------------------------------- signing


KEY_ENV = "DEPLOYCTL_SIGNING_KEY"


def signing_key(key: str | None, actor: str, strict: bool = False) -> str | None:
    """The key that signs for `actor`: `--key`, else $DEPLOYCTL_SIGNING_KEY; None: send unsigned.

    A private key file, or the public half of a key held by ssh-agent (as git's user.signingkey). A
    directory holds one private key per user id, named by it: the embedded stack's throwaway keys, for
    one shell acting as several people."""
    path = key or os.environ.get(KEY_ENV, "").strip() or None
    if path is None:
        return None
    where = Path(path).expanduser()
    if where.is_dir():
        # Only a plain user id names a file there: not a path ("../x"), not one past a file name's length.
        mine = where / actor if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", actor) else None
        if mine is not None and mine.is_file():
            return str(mine)
        if strict:  # at the CLI a missing key is a usage error, not a silent unsigned send
            raise UsageError(f"{path} holds no key for {actor}: pass --key FILE")
        return None  # none of theirs: sent unsigned
    if not where.exists():
        raise UsageError(f"signing key {path} not found: pass --key FILE or set {KEY_ENV}")
    return str(where)


def signed(payload: dict[str, Any], workflow_id: str, action: str, key: str | None) -> dict[str, Any]:
    """`payload` signed for one deploy and one action (SPEC §9), or as it is when there is no key."""
    if key is None:
        return payload
    try:
        return sign_payload(payload, workflow_id, action, key)
    except SigningError as err:
        raise UsageError(str(err)) from None


def action_payload(msg: Any) -> Any:
    """What is sent (and signed): the fields given, nothing filled in; anything else as it is."""
    if isinstance(msg, dict):
        return dict(msg)
    if isinstance(msg, ActionInput):
        return msg.model_dump(mode="json", exclude_none=True)
    return msg


# ---------------------------------------------------------------------------------------- starting


def new_workflow_id(service: str, environment: str) -> str:
    return f"deploy-{service}-{environment}-{uuid.uuid4().hex[:8]}"


async def start_deploy(
    client: Client,
    config: Config,
    process: Process,
    service: str,
    environment: str,
    params: dict[str, str],
    version: str | None,
    actor: str,
    release: str | None = None,
    key: str | None = None,
) -> tuple[str, str]:
    """Check what the local config allows (early, friendly refusals), then start the deploy with the
    caller's signed intent and wait for the workers' verdict on it: theirs is the one that counts.

    Returns its workflow id and Web UI link. Raises Refused, UsageError or ConfigError.
    """
    spec = config.service(service)
    cloud = config.cloud(environment)
    window = None
    if process is Process.RELEASE:
        window, reason = policy.choose_window(
            list(config.release.windows), release, datetime.now(UTC), config.release.lead_time_days
        )
        if window is None:
            raise Refused(reason or "no release window")
    elif release:
        raise UsageError("--release goes with `start release`")
    reason = policy.start_refusal(cloud, spec.valkyr, version, service, actor, spec.code_owners)
    if reason:
        raise Refused(reason)
    defs = await _inspect_job(client, config, spec.jenkins_job)
    reason = policy.params_refusal(defs.parameters, params, spec.jenkins_job)
    if reason:
        raise Refused(reason if reason.endswith("params file") else reason + "; fix the params file")
    shown = policy.shown_params(params, policy.password_names(defs.parameters))
    indexed = await has_search_attributes(client)
    wid = new_workflow_id(service, environment)
    first = steps_for(process, cloud, spec.valkyr)[0].step
    intent: dict[str, Any] = {
        "process": process.value,
        "service": service,
        "environment": environment,
        "params": params,
        "actor": actor,
        "channel": "cli",
    }
    if version is not None:
        intent["version"] = version
    if release is not None:
        intent["release"] = release
    handle = await client.start_workflow(
        "Deploy",
        signed(intent, wid, "start", signing_key(key, actor)),
        id=wid,
        result_type=DeployResult,
        task_queue=config.task_queue,
        search_attributes=None
        if not indexed
        else TypedSearchAttributes(
            [
                SearchAttributePair(sa.SERVICE, service),
                SearchAttributePair(sa.ENVIRONMENT, environment),
                SearchAttributePair(sa.CLOUD, cloud.value),
                SearchAttributePair(sa.STEP, first.value),
            ]
        ),
        static_summary=f"{messages.deploy_name(service, environment, process)} ({messages.cloud_text(cloud)}), opened by {actor}",
        static_details=f"PCCR parameters:\n\n```\n{yaml.safe_dump(shown, sort_keys=True).strip()}\n```",
    )
    await admitted(handle)
    return wid, messages.ui_link(config.ui_url, client.namespace, wid)


async def admitted(handle: Any) -> None:
    """Wait for the workers' verdict on a start; Refused (the deploy opened nothing) with its reason."""
    try:
        await handle.execute_update("admission", result_type=str)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise Refused(cause.message if isinstance(cause, ApplicationError) else str(cause or err)) from None
    except RPCError as err:
        if "completed" not in err.message.lower():
            raise
        result = await handle.result()  # refused before the update arrived
        raise Refused(result.reason or f"the workers ended the deploy {result.outcome.value}") from None


async def has_search_attributes(client: Client) -> bool:
    """Whether the namespace has deployctl's search attributes (the worker creates them at start-up)."""
    try:
        have = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as err:
        if err.status in (RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.PERMISSION_DENIED):
            return False
        raise
    missing = [k.name for k in sa.ALL if k.name not in have.custom_attributes]
    if missing:
        print(
            f"deployctl: warning: search attributes {', '.join(missing)} are missing; start a worker once "
            "(it creates them) so deploys show in `deployctl list` and the Web UI",
            file=sys.stderr,
        )
    return not missing


async def _inspect_job(client: Client, config: Config, job: str) -> JobParametersResult:
    try:
        return await client.execute_workflow(
            "InspectJob",
            JobParametersInput(job=job),
            id=f"inspect-job-{uuid.uuid4().hex[:8]}",
            task_queue=config.task_queue,
            result_type=JobParametersResult,
        )
    except WorkflowFailureError as err:
        cause: BaseException = err
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise Refused(f"cannot read the parameters of Jenkins job {job}: {cause}") from None


# ------------------------------------------------------------------------------------------ acting


#: The server turns Updates away while a deploy's workflow task is being retried (a worker died holding
#: it; the retry comes after the task's 10 s timeout). Nothing changed, so the action is sent again.
TASK_RETRYING = "Workflow Task in failed state"


RETRY_WHILE_RECOVERING = (1.0, 2.0, 3.0, 5.0, 5.0)  # seconds between tries: ~16 s in all


async def send_action(
    client: Client,
    workflow_id: str,
    action: Action,
    msg: ActionInput | dict[str, Any],
    pauses: tuple[float, ...] = RETRY_WHILE_RECOVERING,
    *,
    key: str | None = None,
    sign: bool = True,
) -> ActionResult:
    """Send one action as an Update, signed with `key` (else $DEPLOYCTL_SIGNING_KEY; `sign=False` sends
    `msg` exactly as given); a refusal becomes Refused with the workflow's one-line reason.

    While the deploy recovers from a worker crash (the server says its workflow task is being retried)
    the same Update is sent again after each of `pauses`, then refused with what to do."""
    payload = action_payload(msg)
    actor = payload.get("actor") if isinstance(payload, dict) else None
    if sign and isinstance(actor, str) and "signature" not in payload:
        payload = signed(payload, workflow_id, action.value, signing_key(key, actor))
    for pause in (*pauses, None):
        try:
            return await client.get_workflow_handle(workflow_id).execute_update(
                action.value, payload, result_type=ActionResult
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "Refused":
                raise Refused(cause.message) from None
            raise Refused(str(cause or err)) from None
        except RPCError as err:
            if "completed" in err.message.lower():
                raise Refused(f"{workflow_id} is finished; {action.value} changes nothing") from None
            if TASK_RETRYING not in err.message:
                raise
            if pause is None:
                raise Refused(
                    f"{workflow_id} is recovering from a worker crash (its workflow task is being retried) "
                    f"and took no {action.value}; nothing changed: try again in a minute, and if it persists "
                    "see docs/replay.md"
                ) from None
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------------------- reading


async def query_status(client: Client, workflow_id: str, *, rpc_timeout: float | None = None) -> DeployStatus:
    """The deploy's `status` query as the SDK answers it: WorkflowQueryFailedError or RPCError as they come."""
    return await client.get_workflow_handle(workflow_id).query(
        "status",
        result_type=DeployStatus,
        rpc_timeout=None if rpc_timeout is None else timedelta(seconds=rpc_timeout),
    )


async def read_status(client: Client, workflow_id: str) -> DeployStatus:
    """The deploy's `status`; Unreadable, in one line, when the workflow does not answer it (not found
    stays an RPCError: "not found: …")."""
    try:
        return await query_status(client, workflow_id)
    except WorkflowQueryFailedError as err:
        raise Unreadable(
            f"cannot read the status of {workflow_id}: {policy.one_line(str(err), 300)}"
        ) from None
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise
        raise Unreadable(
            f"cannot read the status of {workflow_id}: {policy.one_line(err.message, 300)}"
        ) from None


async def deploy_result(client: Client, workflow_id: str) -> DeployResult:
    """The deploy's result (its outcome, and its final status when it fits), once it has ended."""
    return await client.get_workflow_handle(workflow_id, result_type=DeployResult).result()


async def current_step(client: Client, workflow_id: str) -> str:
    return (await read_status(client, workflow_id)).step.value


def list_query(service: str | None, environment: str | None, waiting_on: str | None, show_all: bool) -> str:
    def q(v: str) -> str:
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"

    parts = ["WorkflowType = 'Deploy'"]
    if service:
        parts.append(f"DeployService = {q(service)}")
    if environment:
        parts.append(f"DeployEnvironment = {q(environment)}")
    if waiting_on:
        parts.append(f"DeployWaitingOn = {q(waiting_on)}")
    if not show_all:
        parts.append("ExecutionStatus = 'Running'")
    return " AND ".join(parts)


async def list_deploys(
    client: Client, service: str | None, environment: str | None, waiting_on: str | None, show_all: bool
) -> list[dict[str, Any]]:
    rows = []
    async for wf in client.list_workflows(list_query(service, environment, waiting_on, show_all)):
        attrs = wf.typed_search_attributes
        rows.append(
            {
                "workflow_id": wf.id,
                "service": attrs.get(sa.SERVICE),
                "environment": attrs.get(sa.ENVIRONMENT),
                "cloud": attrs.get(sa.CLOUD),
                "step": attrs.get(sa.STEP),
                "waiting_on": list(attrs.get(sa.WAITING_ON) or []),
                "outcome": attrs.get(sa.OUTCOME),
                "status": wf.status.name.lower() if wf.status else None,
                "started": wf.start_time.isoformat() if wf.start_time else None,
            }
        )
    return rows


async def audit_text(client: Client, workflow_id: str, fmt: str, *, query_timeout: float = 10.0) -> str:
    """`deployctl audit`: the audit record rendered as `fmt`; UsageError when the workflow is not a deploy's."""
    try:
        return await audit_export(client, workflow_id, fmt, query_timeout=query_timeout)
    except ValueError as err:  # from history: not a deploy's workflow
        raise UsageError(str(err)) from None


async def deploy_opening(
    client: Client, workflow_id: str
) -> tuple[StartIntent | None, datetime | None, Rules | None]:
    """From the deploy's history: its start's intent and time, and the first rules the workers gave it."""
    handle = client.get_workflow_handle(workflow_id)
    return await opening(handle.fetch_history_events(page_size=50), client.data_converter)


# ------------------------------------------------------------------------------------ outside events


#: Running deploys at deploy_approval looked at, at most, to find the one a Jenkins build belongs to.
MAX_APPROVALS_SCANNED = 100


async def signal_outside_event(client: Client, workflow_id: str, event: OutsideEvent) -> str:
    """Send Signal `outside_event` to deploy `workflow_id` (it then reads GitHub or Jenkins again); what
    happened, in a few words: "signalled", "not a deploy", "no such deploy", "finished". Other RPC errors
    (Temporal unreachable) are raised."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        described = await handle.describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return "no such deploy"
        raise
    if described.workflow_type != "Deploy":
        return "not a deploy"
    if described.close_time is not None:
        return "finished"
    try:
        await handle.signal(OUTSIDE_EVENT, event)
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND or "completed" in err.message.lower():
            return "finished"
        raise
    return "signalled"


def build_path(job: str, number: int) -> str:
    """The path a Jenkins build's URL ends with: `platform/deploy-x` #12 → `/job/platform/job/deploy-x/12/`."""
    segments = "".join(f"/job/{quote(part, safe='')}" for part in job.strip("/").split("/"))
    return f"{segments}/{number}/"


async def deploys_at_build(client: Client, job: str, number: int) -> list[str]:
    """The running deploys at `deploy_approval` whose build is `job` #`number` (by each one's own status:
    the build URL Jenkins gave it). Needs deployctl's search attributes in the namespace."""
    query = "WorkflowType = 'Deploy' AND ExecutionStatus = 'Running' AND DeployStep = 'deploy_approval'"
    path = build_path(job, number)
    found: list[str] = []
    async for wf in client.list_workflows(query, limit=MAX_APPROVALS_SCANNED):
        try:
            st = await query_status(client, wf.id, rpc_timeout=5.0)
        except (WorkflowQueryFailedError, RPCError):
            continue
        url = st.build.url or ""
        if st.build.number == number and urlsplit(url).path.endswith(path):
            found.append(wf.id)
    return found
