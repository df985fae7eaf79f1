"""A worker killed with SIGKILL mid-deploy: another one finishes it, and no effect happens twice."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.cli import send_action, start_deploy
from starter.devstack import wait_for_step
from tests.conftest import GATE1, OWNER, PARAMS, SRE1, eventually, make_deployment
from tests.fakes.jenkins import FakeJenkins
from tests.fakes.slack import FakeSlack
from workflows.models import Action, ActionInput, DeployResult, Outcome, Process, Step

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """`python worker.py` in its own process, as production runs it."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        config_path: Path,
        secrets: dict[str, str],
        *args: str,
        log: Path | None = None,
    ) -> None:
        self.env = {
            **os.environ,
            **secrets,
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "DEPLOYCTL_CONFIG": str(config_path),
        }
        self.args, self.log = args, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        out = open(self.log, "ab") if self.log else None  # noqa: SIM115 - the child owns it
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "worker.py"),
            *self.args,
            env=self.env,
            cwd=str(ROOT),
            stdout=out or asyncio.subprocess.DEVNULL,
            stderr=out or asyncio.subprocess.DEVNULL,
        )
        if out:
            out.close()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                await self.kill()


@pytest_asyncio.fixture
async def processes() -> AsyncIterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for p in started:
        await p.stop()


async def test_worker_killed_at_a_step_boundary_and_inside_trigger(
    env: WorkflowEnvironment,
    tmp_path: Path,
    jenkins: FakeJenkins,
    slack: FakeSlack,
    secrets: dict,
    processes: list[WorkerProcess],
):
    d = make_deployment(tmp_path, jenkins, slack, queue_seconds=3.0)  # the build sits in the queue
    client: Client = env.client
    worker = WorkerProcess(env, d.config_path, secrets)
    processes.append(worker)
    await worker.start()
    wid, _ = await start_deploy(client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER)

    async def act(action: Action, actor: str, step: Step, **extra: str) -> None:
        await wait_for_step(client, wid, step, actor, timeout=60)
        await send_action(client, wid, action, ActionInput(actor=actor, step=step, **extra))

    await act(Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await worker.kill()  # at a step boundary: the review is approved, assignment not yet asked for
    await worker.start()
    await act(Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SRE1)
    await act(Action.APPROVE, SRE1, Step.CLEARANCE)
    await act(Action.TRIGGER, OWNER, Step.TRIGGER)
    # Kill it right after Jenkins took the POST, while the build still waits in the queue.
    await eventually(lambda: jenkins.queued(d.job) or jenkins.builds(d.job), timeout=30)
    await worker.kill()
    await worker.start()
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=90)
    await act(Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256)
    await act(Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()

    assert result.outcome is Outcome.SUCCEEDED
    posts = [r for r in jenkins.requests if r[0] == "POST" and f"/job/{d.job}/buildWithParameters" in r[1]]
    assert len(posts) == 1
    builds = jenkins.builds(d.job)
    assert len(builds) == 1 and builds[0]["params"] == PARAMS and builds[0]["result"] == "SUCCESS"
    triage = [m for m in slack.messages_to("C0TRIAGE") if not m.get("thread_ts") and wid in m["text"]]
    assert 1 <= len(triage) <= 2, "a notification may repeat once after a crash, never more"
