"""A crash plus a `status` query wedged deploys when workers cache workflow runs (a Temporal SDK defect,
docs/replay.md), and the defence in workflows/job_order.py (on by default in worker.py) keeps them going.

The sequence, with the real DeployWorkflow at `pccr_review` and its DM to U0GATE1 held in flight:

1. W1, a workflow-only worker (`python -m tests.test_wedge`: worker.py's `create_worker`, no activities),
   has just completed the task that scheduled the held DM. It is SIGKILLed; W2, a fresh workflow-only
   worker, starts on the same task queue. The activities run in a worker of this process, which outlives W1.
2. `status` is queried while no workflow task is scheduled or running. With a cache, the workflow is
   sticky to W1, and the server offers the query to W1's sticky queue for its schedule-to-start timeout
   (10 s) before it moves it to the normal queue.
3. 3 s later the DM is released and completes. The next workflow task goes to W1's sticky queue (W1 polled
   it less than 10 s ago), where nobody takes it until it times out, 10 s after.
4. The gatekeeper's `approve` Update is sent at once; it waits for that workflow task.
5. At 10 s the query reaches W2 as a legacy query, with a history that ends with the DM's completion. W2
   runs the workflow code for that completion (it schedules the next DM) and answers; the run stays cached.
6. At 13 s the workflow task reaches W2, with the Update. The commands W2 sends are the next DM's activity,
   then the Update's.
7. Replay hands the completion and the Update to the workflow in one activation. The SDK on its own runs
   Updates first, so it expects the Update's commands first: the history fails replay ("Update machine does
   not handle this event: HistoryEvent(id: …, ActivityTaskScheduled)") and the deploy is stuck. With
   `OneJobAtATime` every activation's jobs run one by one, history events' jobs before Updates, so replay
   issues the commands in the order step 6 recorded them, and the deploy goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, TaskQueueKind, TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from starter.client import send_action, start_deploy
from starter.config import ConfigError
from starter.simulators.slack import FakeSlack
from tests.conftest import GATE1, GATE2, OWNER, PARAMS, Deployment, eventually
from tests.test_replay import replayer
from worker import (
    CACHE_ENV,
    MAX_CACHED_WORKFLOWS,
    ONE_JOB_ENV,
    build_activities,
    create_worker,
    one_job_per_activation,
    workflow_cache_size,
)
from workflows.models import Action, ActionInput, DeployStatus, Process, SlackPostInput, SlackPostResult, Step

ROOT = Path(__file__).resolve().parent.parent
# temporalio's own default max_cached_workflows (worker.py's is MAX_CACHED_WORKFLOWS, 100): the wedge and the
# defence do not depend on the size, only on a cache (and its sticky queue) being there.
SDK_DEFAULT_CACHE = 1000
# Seconds from the query to the DM's release: the task the release schedules must reach W1's sticky queue
# within 10 s of W1's last poll, and the query (10 s on that queue) must reach W2 before the task (10 s too).
RELEASE_AFTER = 3.0
UPDATE_MACHINE = "Update machine does not handle this event"


class Gate:
    """Holds the first Slack post to `channel` until released."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.armed = True
        self.held = threading.Event()
        self.release = threading.Event()
        self.completed = threading.Event()

    def wrap(self, real: Callable[[SlackPostInput], SlackPostResult]) -> Callable:
        @activity.defn(name="post_message")
        def post_message(input: SlackPostInput) -> SlackPostResult:
            mine = self.armed and input.channel == self.channel
            if mine:
                self.armed = False
                self.held.set()
                assert self.release.wait(120), "the held Slack post was never released"
            result = real(input)
            if mine:
                self.completed.set()
            return result

        return post_message


class WorkflowWorkerProcess:
    """W1: `create_worker(..., activities=[])` in a process of its own, so it can be SIGKILLed."""

    def __init__(self, env: WorkflowEnvironment, d: Deployment, one_job: bool, log: Path) -> None:
        self.env = {
            **os.environ,
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "DEPLOYCTL_CONFIG": str(d.config_path),
            CACHE_ENV: str(SDK_DEFAULT_CACHE),
            ONE_JOB_ENV: "1" if one_job else "0",
        }
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log, "ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.test_wedge",
                env=self.env,
                cwd=str(ROOT),
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert line.startswith(b"polling"), (line, self.log.read_text()[-2000:])

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


@dataclass
class Run:
    wid: str
    history: WorkflowHistory
    query_seconds: float  # how long the status query of step 2 took
    timeline: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Rig:
    """The workflow workers of this process (W2, and any the test starts after the sequence)."""

    client: Client
    d: Deployment
    workers: list[tuple[Worker, asyncio.Task]] = field(default_factory=list)

    def start(self, one_job: bool) -> None:
        w = create_worker(
            self.client,
            self.d.config,
            task_queue=self.d.task_queue,
            activities=[],
            max_cached_workflows=SDK_DEFAULT_CACHE,
            one_job=one_job,
        )
        self.workers.append((w, asyncio.create_task(w.run())))

    async def stop(self) -> None:
        while self.workers:
            w, task = self.workers.pop()
            await w.shutdown()
            with contextlib.suppress(Exception):
                await task


@contextlib.asynccontextmanager
async def wedge(
    env: WorkflowEnvironment, d: Deployment, tmp_path: Path, one_job: bool
) -> AsyncIterator[tuple[Run, Rig]]:
    """Steps 1-6 of the module docstring, both workflow workers with the SDK's cache; `one_job`: whether
    they run OneJobAtATime. Yields once the Update was accepted and the deploy is at sre_assignment, with
    the activity worker still up."""
    client = env.client
    t0 = time.monotonic()
    timeline: list[tuple[float, str]] = []

    def mark(what: str) -> None:
        timeline.append((round(time.monotonic() - t0, 2), what))

    gate = Gate(GATE1)
    w1 = WorkflowWorkerProcess(env, d, one_job, tmp_path / "w1.log")
    rig = Rig(client, d)
    pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="wedge-activity")
    acts = [gate.wrap(a) if a.__name__ == "post_message" else a for a in build_activities(client, d.config)]
    activities = Worker(
        client, task_queue=d.task_queue, activities=acts, activity_executor=pool, max_concurrent_activities=16
    )
    try:
        async with activities:
            await w1.start()
            mark("W1 polling")
            wid, _ = await start_deploy(
                client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
            )
            handle = client.get_workflow_handle(wid)
            assert await asyncio.to_thread(gate.held.wait, 60), "the DM to U0GATE1 was never sent"
            mark("DM to U0GATE1 held (the task that scheduled it has completed)")
            await w1.kill()
            mark("W1 SIGKILLed")
            rig.start(one_job)
            mark("W2 started")
            sent, answered = time.monotonic(), []

            def on_answer(_: object) -> None:
                answered.append(time.monotonic())
                mark("status answered")

            query = asyncio.create_task(handle.query("status", result_type=DeployStatus))
            query.add_done_callback(on_answer)
            mark("status query sent")
            await asyncio.sleep(RELEASE_AFTER)
            gate.release.set()
            assert await asyncio.to_thread(gate.completed.wait, 30)
            await eventually(lambda: _dm_done(client, wid), 10, 0.02)
            mark("DM completed")
            msg = ActionInput(actor=GATE1, step=Step.PCCR_REVIEW, channel="test", comment="ok")
            update = asyncio.create_task(send_action(client, wid, Action.APPROVE, msg))
            mark("approve Update sent")
            status = await asyncio.wait_for(query, 60)
            assert status.step is Step.PCCR_REVIEW
            await asyncio.wait_for(update, 60)
            mark("approve Update accepted")
            await eventually(lambda: _at(client, wid, Step.SRE_ASSIGNMENT), timeout=30)
            mark("deploy at sre_assignment")
            history = await handle.fetch_history()
            (tmp_path / "history.json").write_text(history.to_json())
            yield Run(wid, history, answered[0] - sent, timeline), rig
    finally:
        print(*(f"{t:6.2f} s  {what}" for t, what in timeline), sep="\n")
        gate.release.set()
        await w1.kill()
        await rig.stop()
        pool.shutdown(wait=False)


async def _at(client: Client, wid: str, step: Step, run_id: str | None = None) -> DeployStatus | None:
    st = await client.get_workflow_handle(wid, run_id=run_id).query("status", result_type=DeployStatus)
    return st if st.step is step else None


def _after(history: WorkflowHistory, event_id: int) -> list[HistoryEvent]:
    return [e for e in history.events if e.event_id > event_id]


def _kinds(events: list[HistoryEvent]) -> list[str]:
    return [EventType.Name(e.event_type).removeprefix("EVENT_TYPE_") for e in events]


def _dm_completed(history: WorkflowHistory, user: str = GATE1) -> int | None:
    """The event id of the completion of the deploy's first DM to `user` (the held one), if any."""
    scheduled = next(
        (
            e.event_id
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == "post_message"
            and f'"channel":"{user}"'.encode()
            in e.activity_task_scheduled_event_attributes.input.payloads[0].data
        ),
        None,
    )
    return next(
        (
            e.event_id
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
            and e.activity_task_completed_event_attributes.scheduled_event_id == scheduled
        ),
        None,
    )


async def _dm_done(client: Client, wid: str, user: str = GATE1) -> bool:
    return _dm_completed(await client.get_workflow_handle(wid).fetch_history(), user) is not None


def _split(run: Run) -> HistoryEvent:
    """Asserts steps 2, 3 and 6 happened as intended (the query and the workflow task each waited out W1's
    sticky queue, and W2's first commands were the next DM's activity, then the Update's acceptance), and
    returns the `WorkflowTaskCompleted` of that task."""
    assert run.query_seconds > 9, run.query_seconds
    done = _dm_completed(run.history)
    assert done is not None
    after = _after(run.history, done)
    assert _kinds(after[:7]) == [
        "WORKFLOW_TASK_SCHEDULED",  # on W1's sticky queue
        "WORKFLOW_TASK_TIMED_OUT",  # nobody polled it for 10 s
        "WORKFLOW_TASK_SCHEDULED",  # on the normal queue: W2 takes it, with the Update
        "WORKFLOW_TASK_STARTED",
        "WORKFLOW_TASK_COMPLETED",
        "ACTIVITY_TASK_SCHEDULED",  # the next DM: from the query's activation
        "WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
    ], _kinds(after)
    sticky, timed_out, _, _, completed, _, _ = after[:7]
    assert (
        sticky.workflow_task_scheduled_event_attributes.task_queue.kind
        == TaskQueueKind.TASK_QUEUE_KIND_STICKY
    )
    assert timed_out.workflow_task_timed_out_event_attributes.timeout_type == (
        TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START
    )
    return completed


async def _rejected(history: WorkflowHistory, one_job: bool) -> str | None:
    """Replay's verdict on `history`: None if it replays, else the non-determinism error."""
    try:
        await replayer(one_job).replay_workflow(history)
    except workflow.NondeterminismError as err:
        return str(err)
    return None


@pytest.mark.timeout(180)
async def test_wedge_reproduces_without_defence(
    env: WorkflowEnvironment, deployment: Deployment, tmp_path: Path, slack: FakeSlack
):
    """Documents the SDK defect (temporalio 1.35.0): with the SDK's own runner the sequence records a history
    that replay rejects, so the deploy is stuck; a reset to the task before the bad one frees it. If this
    test fails at `replay rejects`, the SDK may have fixed the defect: see docs/replay.md."""
    async with wedge(env, deployment, tmp_path, one_job=False) as (run, rig):
        completed = _split(run)
        first = completed.event_id + 1  # the next DM's ActivityTaskScheduled
        why = await _rejected(run.history, one_job=False)
        assert why is not None, (
            "replay rejects: the wedged history replayed. The SDK may have fixed the defect; see "
            "docs/replay.md ('Checking a newer SDK release') for what to run next"
        )
        assert UPDATE_MACHINE in why and f"id: {first}, ActivityTaskScheduled" in why, why

        # The way out (docs/replay.md): reset to the task whose commands are out of order, i.e. to the
        # WorkflowTaskCompleted just before the event the error names. The server keeps everything
        # before it and re-applies the Update (Server 1.32 re-applies Signals and Updates by default); a
        # defended worker serves the new run, and the deploy goes on.
        await rig.stop()
        client, wid = env.client, run.wid
        reset = await client.workflow_service.reset_workflow_execution(
            ResetWorkflowExecutionRequest(
                namespace=client.namespace,
                workflow_execution=WorkflowExecution(workflow_id=wid, run_id=run.history.run_id),
                reason="SDK replay defect (tests/test_wedge.py)",
                workflow_task_finish_event_id=completed.event_id,
                request_id=f"wedge-{wid}",
            )
        )
        rig.start(one_job=True)
        handle = client.get_workflow_handle(wid, run_id=reset.run_id)
        st = await eventually(lambda: _at(client, wid, Step.SRE_ASSIGNMENT, reset.run_id), timeout=30)
        history = await handle.fetch_history()
        (tmp_path / "history-after-reset.json").write_text(history.to_json())
        assert await _rejected(history, one_job=True) is None
        assert st is not None
        approvals = [
            a for a in st.audit if a.step is Step.PCCR_REVIEW and a.action == "approve" and a.accepted
        ]
        assert [a.actor for a in approvals] == [GATE1], st.audit


@pytest.mark.timeout(180)
async def test_wedge_sequence_replays_with_the_defence(
    env: WorkflowEnvironment, deployment: Deployment, tmp_path: Path, slack: FakeSlack
):
    """worker.py's runner (OneJobAtATime), with a cache: the same interleaving, forced the same way,
    records a history that replays, and the deploy goes on. Replayed by the SDK's own runner, that very
    history fails as in the test above: it is the defence, not luck, that makes it replay."""
    async with wedge(env, deployment, tmp_path, one_job=True) as (run, _):
        completed = _split(run)  # the live path split the task exactly as in the wedge
        assert await _rejected(run.history, one_job=True) is None
        why = await _rejected(run.history, one_job=False)
        assert why is not None and UPDATE_MACHINE in why, why
        assert f"id: {completed.event_id + 1}, ActivityTaskScheduled" in why, why
        # The held DM and the next one both went out, and the approve moved the deploy on.
        assert await eventually(lambda: _dm_done(env.client, run.wid, GATE2), 10, 0.05)
        assert len(slack.messages_to(GATE1)) >= 1 and len(slack.messages_to(GATE2)) >= 1
        after = _kinds(_after(run.history, completed.event_id))
        assert "WORKFLOW_EXECUTION_UPDATE_COMPLETED" in after
        assert "WORKFLOW_TASK_FAILED" not in _kinds(run.history.events)


def test_one_job_per_activation_setting():
    assert one_job_per_activation({}) is True  # the defence is on unless switched off
    assert one_job_per_activation({ONE_JOB_ENV: "1"}) is True
    assert one_job_per_activation({ONE_JOB_ENV: "0"}) is False
    for bad in ("yes", "off", "2"):
        with pytest.raises(ConfigError, match=ONE_JOB_ENV):
            one_job_per_activation({ONE_JOB_ENV: bad})


def test_worker_refuses_a_bad_defence_setting_at_start(capsys: pytest.CaptureFixture[str], monkeypatch):
    """`python worker.py` with a setting it cannot read exits 2 with one line, before it connects."""
    import worker

    monkeypatch.setenv(ONE_JOB_ENV, "yes")
    monkeypatch.setenv("JENKINS_TOKEN", "t")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "t")
    assert worker.main(["--config", str(ROOT / "deployctl.example.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"deployctl worker: {ONE_JOB_ENV} must be 1 (the default: the replay defence on) or 0, not 'yes'"
    )


def test_workflow_cache_size_setting():
    # Smaller than the SDK's 1,000, so parked deploys cost little memory; safe with OneJobAtATime
    # (docs/replay.md, bench/RESULTS.md "Parked deploys (issue 15)").
    assert MAX_CACHED_WORKFLOWS == 100
    assert workflow_cache_size({}) == 100
    assert workflow_cache_size({CACHE_ENV: " "}) == 100
    assert workflow_cache_size({CACHE_ENV: "0"}) == 0
    assert workflow_cache_size({CACHE_ENV: "1000"}) == 1000
    for bad in ("-1", "lots", "1.5"):
        with pytest.raises(ConfigError, match=CACHE_ENV):
            workflow_cache_size({CACHE_ENV: bad})


async def _w1() -> None:
    from starter.client import connect
    from starter.config import load_config
    from starter.logs import setup_logging

    setup_logging()
    config = load_config(None)
    client = await connect()
    async with create_worker(client, config, activities=[]):
        print("polling", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_w1())
