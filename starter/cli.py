"""The `deployctl` CLI (SPEC §5). It starts workflows, sends Updates and reads queries: no rule lives here.

Exit codes: 0 done; 2 usage or configuration error; 3 refused (validation, role, policy); 1 anything else.
Every refusal is one line that says why and what to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import yaml
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from starter.audit import FORMATS as AUDIT_FORMATS
from starter.audit import audit_export
from starter.audit import render_audit as render_audit  # re-exported: `from starter.cli import render_audit`
from starter.config import Config, ConfigError, load_config
from starter.signing import SigningError, sign_payload
from starter.temporal import connect
from starter.verify import verify_command
from workflows import messages, policy
from workflows import search_attributes as sa
from workflows.models import (
    Action,
    ActionInput,
    ActionResult,
    Cloud,
    DeployResult,
    DeployStatus,
    JobParametersInput,
    JobParametersResult,
    Process,
    ReleaseWindow,
    Step,
)
from workflows.slack_blocks import DIFF_BOUND
from workflows.steps import sre_group, steps_for

T = TypeVar("T")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3


class Refused(Exception):
    """A rule said no: exit 3."""


class UsageError(Exception):
    """Bad arguments, files or configuration: exit 2."""


class Unreadable(Exception):
    """A deploy's `status` could not be read (not a deploy, or its status query failed): exit 1."""


def fail(code: int, message: str) -> NoReturn:
    click.echo(f"deployctl: {message}", err=True)
    sys.exit(code)


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Run one command, turning every known failure into its one line and exit code."""
    try:
        return asyncio.run(coro_fn())  # type: ignore[arg-type]
    except Refused as err:
        fail(EXIT_REFUSED, f"refused: {err}")
    except (UsageError, ConfigError) as err:
        fail(EXIT_USAGE, str(err))
    except RPCError as err:
        fail(EXIT_ERROR, _rpc_message(err))
    except Unreadable as err:
        fail(EXIT_ERROR, str(err))
    except RuntimeError as err:
        if "connect" in str(err).lower():
            fail(EXIT_ERROR, f"cannot reach Temporal ({err}); is the server up? set TEMPORAL_ADDRESS")
        raise


def _rpc_message(err: RPCError) -> str:
    if err.status is RPCStatusCode.NOT_FOUND:
        return f"not found: {err.message}"
    return f"Temporal said: {err.message}"


def _config(ctx: click.Context) -> Config:
    return load_config(ctx.obj.get("config"))


def _actor(actor: str | None) -> str:
    actor = actor or os.environ.get("DEPLOYCTL_USER")
    if not actor:
        raise UsageError("who is acting? pass --as USER_ID or set DEPLOYCTL_USER")
    return actor


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


def read_params(path: str) -> dict[str, str]:
    """A params file: a YAML or JSON mapping; every value becomes the text Jenkins receives."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"cannot read params file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"params file {path} is not UTF-8 text") from None
    try:
        raw = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except RecursionError:
        raise UsageError(f"params file {path} is nested too deeply to be a mapping of parameters") from None
    except (ValueError, yaml.YAMLError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UsageError(
            f"params file {path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: {first}"
        ) from None
    try:
        return policy.params_as_text(raw)
    except ValueError as err:
        raise UsageError(f"params file {path}: {err}") from None


def new_workflow_id(service: str, environment: str) -> str:
    return f"deploy-{service}-{environment}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------ commands


@click.group()
@click.option(
    "--config",
    "config_path",
    default=None,
    help="TOML config (default $DEPLOYCTL_CONFIG or ./deployctl.toml)",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Human-gated production deploys as durable Temporal workflows."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


@cli.command()
@click.argument("process", type=click.Choice([p.value for p in Process]))
@click.option("--service", required=True)
@click.option("--env", "environment", required=True)
@click.option("--params", "params_file", required=True, help="YAML or JSON mapping of every job parameter")
@click.option("--version", default=None, help="the version to deploy (gov: required; valkyr: refused)")
@click.option("--release", default=None, help="release window name (release process)")
@click.option("--as", "actor", default=None, help="your Slack user id (or $DEPLOYCTL_USER)")
@click.option("--key", default=None, help=f"signing key (or ${KEY_ENV})")
@click.pass_context
def start(
    ctx: click.Context,
    process: str,
    service: str,
    environment: str,
    params_file: str,
    version: str | None,
    release: str | None,
    actor: str | None,
    key: str | None,
) -> None:
    """Open a PCCR and start its deploy."""
    config = _config_or_exit(ctx)

    async def go() -> None:
        signing_key(key, _actor(actor), strict=True)
        client = await connect()
        wid, link = await start_deploy(
            client,
            config,
            Process(process),
            service,
            environment,
            read_params(params_file),
            version,
            _actor(actor),
            release,
            key=key,
        )
        click.echo(wid)
        click.echo(link)

    run(go)


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
        windows = release_windows(config)
        window, reason = policy.choose_window(
            windows, release, datetime.now(UTC), config.release.lead_time_days
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
        static_summary=f"{process.value.upper()} deploy of {service} to {environment} ({cloud.value}-cloud), opened by {actor}",
        static_details=f"PCCR parameters:\n\n```\n{yaml.safe_dump(shown, sort_keys=True).strip()}\n```",
    )
    await admitted(handle)
    return wid, f"{config.ui_url.rstrip('/')}/namespaces/{client.namespace}/workflows/{wid}"


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
        click.echo(
            f"deployctl: warning: search attributes {', '.join(missing)} are missing; start a worker once "
            "(it creates them) so deploys show in `deployctl list` and the Web UI",
            err=True,
        )
    return not missing


def _config_or_exit(ctx: click.Context) -> Config:
    try:
        return _config(ctx)
    except ConfigError as err:
        fail(EXIT_USAGE, str(err))


async def _inspect_job(client: Client, config: Config, job: str) -> JobParametersResult:
    from temporalio.client import WorkflowFailureError

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


def _action_command(action: Action) -> None:
    name = action.value.replace("_", "-")

    @click.argument("workflow_id")
    @click.option("--as", "actor", default=None, help="your Slack user id (or $DEPLOYCTL_USER)")
    @click.option(
        "--step", default=None, type=click.Choice([s.value for s in Step]), help="default: the current step"
    )
    @click.option("--comment", default=None)
    @click.option("--key", default=None, help=f"signing key (or ${KEY_ENV})")
    @click.pass_context
    def command(
        ctx: click.Context,
        workflow_id: str,
        actor: str | None,
        step: str | None,
        comment: str | None,
        key: str | None,
        sre: str | None = None,
        diff_sha256: str | None = None,
    ) -> None:
        _config_or_exit(ctx)
        run(lambda: _send(action, workflow_id, actor, step, comment, sre, diff_sha256, key))

    if action is Action.ASSIGN:
        command = click.option("--sre", required=True, help="the SRE's Slack user id")(command)
    if action in DIFF_BOUND:  # the diff you were shown; `deployctl status` prints the one shown now
        command = click.option(
            "--diff-sha256",
            "diff_sha256",
            default=None,
            help="refused unless it is the build's diff"
            if action is Action.VALIDATE_DIFF
            else "the version PR's diff your DM showed: refused if it changed since (pass it)",
        )(command)
    cli.command(name=name, help=f"{action.value} at the deploy's current step.")(command)


async def _send(
    action: Action,
    workflow_id: str,
    actor: str | None,
    step: str | None,
    comment: str | None,
    sre: str | None,
    diff_sha256: str | None,
    key: str | None = None,
) -> None:
    who = _actor(actor)
    client = await connect()
    if step is None:
        step = await current_step(client, workflow_id)
    msg = ActionInput(
        actor=who, step=Step(step), comment=comment, sre=sre, diff_sha256=diff_sha256, channel="cli"
    )
    signing_key(key, who, strict=True)
    await send_action(client, workflow_id, action, msg, key=key)
    click.echo(f"{action.value} accepted at {step} on {workflow_id}")


async def read_status(client: Client, workflow_id: str) -> DeployStatus:
    """The deploy's `status`; Unreadable, in one line, when the workflow does not answer it (not found
    stays an RPCError: "not found: …")."""
    try:
        return await client.get_workflow_handle(workflow_id).query("status", result_type=DeployStatus)
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


async def current_step(client: Client, workflow_id: str) -> str:
    return (await read_status(client, workflow_id)).step.value


def action_payload(msg: Any) -> Any:
    """What is sent (and signed): the fields given, nothing filled in; anything else as it is."""
    if isinstance(msg, dict):
        return dict(msg)
    if isinstance(msg, ActionInput):
        return msg.model_dump(mode="json", exclude_none=True)
    return msg


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


for _a in Action:
    _action_command(_a)

cli.add_command(verify_command, name="verify")


@cli.command()
@click.argument(
    "action",
    type=click.Choice(
        [a.value for a in Action] + [a.value.replace("_", "-") for a in Action if "_" in a.value]
    ),
)
@click.argument("workflow_id")
@click.option("--as", "actor", default=None, help="your Slack user id (or $DEPLOYCTL_USER)")
@click.option(
    "--step", default=None, type=click.Choice([s.value for s in Step]), help="default: the current step"
)
@click.option("--comment", default=None)
@click.option("--sre", default=None, help="assign: the SRE's Slack user id")
@click.option("--diff-sha256", "diff_sha256", default=None, help="validate_diff, merge: the diff you saw")
@click.option("--key", default=None, help=f"signing key (or ${KEY_ENV})")
@click.pass_context
def sign(
    ctx: click.Context,
    action: str,
    workflow_id: str,
    actor: str | None,
    step: str | None,
    comment: str | None,
    sre: str | None,
    diff_sha256: str | None,
    key: str | None,
) -> None:
    """Print a signed action payload, for `temporal workflow update execute --input` or `signal --input`."""
    _config_or_exit(ctx)
    name = Action(action.replace("-", "_"))

    async def go() -> None:
        who = _actor(actor)
        chosen = step or await current_step(await connect(), workflow_id)
        msg = ActionInput(
            actor=who,
            step=Step(chosen),
            comment=comment,
            sre=sre,
            diff_sha256=diff_sha256,
            channel="temporal",
        )
        mine = signing_key(key, who)
        if mine is None:
            raise UsageError(f"nothing to sign with: pass --key FILE or set {KEY_ENV}")
        click.echo(json.dumps(signed(action_payload(msg), workflow_id, name.value, mine), ensure_ascii=False))

    run(go)


@cli.command()
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, workflow_id: str, as_json: bool) -> None:
    """Where a deploy stands and who it waits on."""
    _config_or_exit(ctx)

    async def go() -> None:
        client = await connect()
        st = await read_status(client, workflow_id)
        st.waiting_for = messages.waiting_line(st.waiting_for, st.waiting_since, datetime.now(UTC))
        if as_json:
            click.echo(st.model_dump_json(indent=2))
            return
        click.echo(
            f"{st.workflow_id}: {st.process.value} {st.service} → {st.environment} ({st.cloud.value if st.cloud else 'cloud not known yet'}-cloud)"
        )
        click.echo(
            f"step:        {st.step.value}"
            + (f"   outcome: {st.outcome.value} ({st.outcome_reason})" if st.outcome else "")
        )
        click.echo(f"waiting on:  {', '.join(st.waiting_on) or '-'}")
        click.echo(f"may act:     {', '.join(a.value for a in st.allowed_actions) or '-'}")
        if st.waiting_for:
            click.echo(f"waits for:   {st.waiting_for}")
        if st.sre:
            click.echo(f"SRE:         {st.sre}")
        if st.build.url:
            click.echo(f"build:       {st.build.url} (diff sha256 {st.build.diff_sha256 or '-'})")
        click.echo(f"PCCR:        {st.pccr.url if st.pccr else '-'} [{st.pccr.state if st.pccr else '-'}]")
        if st.version_pr:
            shown = (
                f" (head {st.version_pr_head_sha[:12]}, diff sha256 {st.version_pr_diff_sha256 or '-'})"
                if st.version_pr_head_sha
                else ""
            )
            click.echo(f"version PR:  {st.version_pr}{shown}")

    run(go)


@cli.command(name="list")
@click.option("--service", default=None)
@click.option("--env", "environment", default=None)
@click.option("--waiting-on", "waiting_on", default=None)
@click.option("--all", "show_all", is_flag=True, help="include finished deploys")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_(
    ctx: click.Context,
    service: str | None,
    environment: str | None,
    waiting_on: str | None,
    show_all: bool,
    as_json: bool,
) -> None:
    """Deploys, found through their search attributes."""
    _config_or_exit(ctx)

    async def go() -> None:
        client = await connect()
        rows = await list_deploys(client, service, environment, waiting_on, show_all)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        for r in rows:
            click.echo(
                f"{r['workflow_id']}  {r['step'] or '-':<20} {r['outcome'] or 'running':<10} waiting on: {', '.join(r['waiting_on']) or '-'}"
            )

    run(go)


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


@cli.command()
@click.argument("workflow_id")
@click.option("--format", "fmt", type=click.Choice(list(AUDIT_FORMATS)), default="md", show_default=True)
@click.option(
    "--query-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="seconds to wait for a worker to answer the status query before reading the history alone",
)
@click.pass_context
def audit(ctx: click.Context, workflow_id: str, fmt: str, query_timeout: float) -> None:
    """The audit record: the deploy, its PCCR, every action accepted or refused, rosters, diff, links.

    Works for finished deploys too; without a worker it is rebuilt from the workflow's history and says so.
    """
    _config_or_exit(ctx)

    async def go() -> None:
        client = await connect()
        try:
            text = await audit_export(client, workflow_id, fmt, query_timeout=query_timeout)
        except ValueError as err:  # from history: not a deploy's workflow
            raise UsageError(str(err)) from None
        click.echo(text)

    run(go)


@cli.command()
@click.option("--service", required=True)
@click.option("--env", "environment", required=True)
@click.option("--process", type=click.Choice([p.value for p in Process]), default=Process.OOW.value)
@click.pass_context
def plan(ctx: click.Context, service: str, environment: str, process: str) -> None:
    """Who will do what at each step, and how long each may wait, without starting anything."""
    config = _config_or_exit(ctx)
    try:
        click.echo(render_plan(config, service, environment, Process(process)))
    except ConfigError as err:
        fail(EXIT_USAGE, str(err))


def render_plan(config: Config, service: str, environment: str, process: Process) -> str:
    from workflows.messages import human_duration

    spec = config.service(service)
    cloud: Cloud = config.cloud(environment)
    settings = config.settings()
    groups = {name: g.members for name, g in settings.groups.items()}
    parties = policy.Parties(code_owners=spec.code_owners, groups=groups, assigned_sre="<assigned SRE>")
    out = [
        f"{process.value} deploy of {service} to {environment} ({cloud.value}-cloud), job {spec.jenkins_job}"
    ]
    for i, defn in enumerate(steps_for(process, cloud, spec.valkyr), 1):
        if defn.actor is None:
            who = "nobody (automatic)"
        else:
            g = settings.groups.get(defn.actor.value)
            people = policy.eligible(defn, parties)
            who = f"{defn.actor.value}: " + (
                g.mention() if g and g.slack_usergroup else ", ".join(people) or "-"
            )
        if defn.step is Step.SRE_ASSIGNMENT:
            pool = settings.groups.get(sre_group(cloud))
            who += (
                f" -> an SRE from {sre_group(cloud)} (" + (pool.mention() if pool else "not configured") + ")"
            )
        timeout = settings.timeouts.get(defn.step.value)
        limit = (
            f" (times out after {human_duration(timeout.total_seconds())})" if timeout and defn.actor else ""
        )
        actions = "/".join(a.value for a in defn.actions) or "-"
        out.append(f"{i:2}. {defn.step.value:<20} {actions:<22} {who}{limit}\n      {defn.does}")
    return "\n".join(out)


def release_windows(config: Config) -> list[ReleaseWindow]:
    return [ReleaseWindow(name=w.name, start=w.start, end=w.end) for w in config.release.windows]


@cli.command()
@click.pass_context
def releases(ctx: click.Context) -> None:
    """Coming release windows and the last day a deploy can be planned into each."""
    config = _config_or_exit(ctx)
    click.echo(render_releases(config, datetime.now(UTC)))


def render_releases(config: Config, now: datetime) -> str:
    lead = config.release.lead_time_days
    coming = sorted((w for w in release_windows(config) if w.end > now), key=lambda w: w.start)
    if not coming:
        return "no coming release windows; add them to [release] windows"
    ok = policy.eligible_windows(coming, now, lead)
    lines = [f"{'window':<16} {'opens (UTC)':<17} {'closes (UTC)':<17} {'plan by':<11} status"]
    for w in coming:
        status = "open for planning" if w in ok else ("in progress" if w.start <= now else "too late to plan")
        lines.append(
            f"{w.name:<16} {w.start:%Y-%m-%d %H:%M} {w.end:%Y-%m-%d %H:%M} "
            f"{policy.last_planning_day(w, lead):<11} {status}"
        )
    return "\n".join(lines)


@cli.command()
@click.option("--metrics-port", type=int, default=None)
@click.pass_context
def worker(ctx: click.Context, metrics_port: int | None) -> None:
    """Run a worker of the pool (same as `python worker.py`)."""
    import worker as worker_main

    args = ["--metrics-port", str(metrics_port)] if metrics_port else []
    if ctx.obj.get("config"):
        args += ["--config", ctx.obj["config"]]
    sys.exit(worker_main.main(args))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP mode: the address to listen on")
@click.option("--port", type=int, default=3000, show_default=True, help="HTTP mode: the port to listen on")
@click.pass_context
def slack(ctx: click.Context, host: str, port: int) -> None:
    """The Slack bridge: buttons and /deploy. Socket Mode with SLACK_APP_TOKEN, else HTTP on /slack/events."""
    from starter import slack_bridge
    from starter.logs import setup_logging

    config = _config_or_exit(ctx)
    setup_logging()
    try:
        code = slack_bridge.run_bridge(host, port, config)
    except ConfigError as err:
        fail(EXIT_USAGE, str(err))
    sys.exit(code)


@cli.command()
@click.option("--port", type=int, default=7233)
@click.option("--ui-port", type=int, default=8233)
@click.pass_context
def dev(ctx: click.Context, port: int, ui_port: int) -> None:
    """The embedded stack: Temporal dev server (SQLite), Web UI, worker, Jenkins and Slack simulators."""
    from starter import devstack

    sys.exit(devstack.dev_main(port, ui_port, ctx.obj.get("config")))


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """The embedded stack on free ports, then a whole scripted deploy; prints the audit and the outcome."""
    from starter import devstack

    sys.exit(devstack.demo_main())


def main() -> None:
    """Run the CLI, then leave without interpreter finalisation: temporalio's native runtime can crash
    while Python tears down (sdk-python #300), which would turn a finished command into a SIGSEGV."""
    code = 0
    try:
        cli(obj={}, standalone_mode=True)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
