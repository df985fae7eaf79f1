"""The `deployctl` CLI (SPEC §5): it parses, prints and exits; `starter/client.py` does the talking to
Temporal (start, act, status, list, audit) and raises the typed refusals. No rule lives here.

Exit codes: 0 done; 2 usage or configuration error; 3 refused (validation, role, policy); 1 anything else.
Every refusal is one line that says why and what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn, TypeVar

import click
import yaml
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from starter.audit import FORMATS as AUDIT_FORMATS
from starter.audit import render_audit as render_audit  # re-exported: `from starter.cli import render_audit`
from starter.client import (
    KEY_ENV,
    Refused,
    Unreadable,
    UsageError,
    action_payload,
    audit_text,
    connect,
    current_step,
    list_deploys,
    read_status,
    send_action,
    signed,
    signing_key,
    start_deploy,
)
from starter.config import Config, ConfigError, load_config
from starter.verify import verify_command
from workflows import messages, policy
from workflows.models import Action, ActionInput, Cloud, Process, Step
from workflows.slack_blocks import DIFF_BOUND
from workflows.steps import sre_group, steps_for

T = TypeVar("T")

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3


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


def _config_or_exit(ctx: click.Context) -> Config:
    try:
        return _config(ctx)
    except ConfigError as err:
        fail(EXIT_USAGE, str(err))


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
        now = datetime.now(UTC)
        if as_json:
            st.waiting_for = messages.waiting_line(st.waiting_for, st.waiting_since, now)
            click.echo(st.model_dump_json(indent=2))
            return
        click.echo("\n".join(messages.status_lines(st, now)))

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
        click.echo(await audit_text(client, workflow_id, fmt, query_timeout=query_timeout))

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
        f"{process.value} deploy of {service} to {environment} ({messages.cloud_text(cloud)}), job {spec.jenkins_job}"
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
        if defn.names_sre:
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


@cli.command()
@click.pass_context
def releases(ctx: click.Context) -> None:
    """Coming release windows and the last day a deploy can be planned into each."""
    config = _config_or_exit(ctx)
    click.echo(render_releases(config, datetime.now(UTC)))


def render_releases(config: Config, now: datetime) -> str:
    lead = config.release.lead_time_days
    coming = sorted((w for w in config.release.windows if w.end > now), key=lambda w: w.start)
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

    sys.exit(devstack.dev_main(_embedded_worker, port, ui_port, ctx.obj.get("config")))


@cli.command()
@click.pass_context
def demo(ctx: click.Context) -> None:
    """The embedded stack on free ports, then a whole scripted deploy; prints the audit and the outcome."""
    from starter import devstack

    sys.exit(devstack.demo_main(_embedded_worker))


@contextlib.asynccontextmanager
async def _embedded_worker(client: Client, config: Config) -> AsyncIterator[None]:
    """The dev stack's worker: worker.py's, imported only by the commands that run one (dev, demo, worker)."""
    from worker import create_worker, ensure_search_attributes

    await ensure_search_attributes(client)
    async with create_worker(client, config):
        yield


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
