"""Operability: the worker's Prometheus metrics, its JSON logs, and no secret anywhere after a full run."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.client import send_action, start_deploy
from starter.devstack import free_port, wait_for_step
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests.conftest import GATE1, OWNER, PARAMS, SRE1, eventually, make_deployment
from tests.test_crash import WorkerProcess
from workflows.models import Action, ActionInput, DeployResult, DeployStatus, Outcome, Process, Step


async def test_metrics_logs_and_no_secret_after_a_full_run(
    env: WorkflowEnvironment,
    tmp_path: Path,
    jenkins: FakeJenkins,
    slack: FakeSlack,
    github: FakeGitHub,
    secrets: dict[str, str],
):
    d = make_deployment(tmp_path, jenkins, slack, github=github)
    client: Client = env.client
    port, log = free_port(), tmp_path / "worker.log"
    worker = WorkerProcess(env, d.config_path, secrets, "--metrics-port", str(port), log=log)
    await worker.start()
    try:
        wid, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )

        async def act(action: Action, actor: str, step: Step, **extra: str) -> DeployStatus:
            st = await wait_for_step(client, wid, step, actor, timeout=60)
            await send_action(client, wid, action, ActionInput(actor=actor, step=step, **extra))
            return st

        await act(Action.APPROVE, GATE1, Step.PCCR_REVIEW)
        await act(Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SRE1)
        await act(Action.APPROVE, SRE1, Step.CLEARANCE)
        await act(Action.TRIGGER, OWNER, Step.TRIGGER)
        st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=60)
        await act(Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256)
        await act(Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
        assert result.outcome is Outcome.SUCCEEDED

        async def scrape() -> str | None:
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            return text if "deployctl_deploys_finished" in text else None

        metrics = await eventually(scrape, timeout=30, interval=0.5)
        history = (await client.get_workflow_handle(wid).fetch_history()).to_json()
    finally:
        await worker.stop()

    finished = [line for line in metrics.splitlines() if line.startswith("deployctl_deploys_finished")]
    assert any('outcome="succeeded"' in line and 'process="oow"' in line for line in finished), finished
    assert any(line.startswith("deployctl_deploys_started") for line in metrics.splitlines())
    assert any(
        line.startswith("deployctl_step_wait") and 'step="pccr_review"' in line
        for line in metrics.splitlines()
    )
    assert "temporal_workflow_completed" in metrics  # the SDK's own runtime metrics are there too
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(doc["msg"].startswith("worker polling task queue") for doc in docs)
    assert all({"time", "level", "logger", "msg"} <= set(doc) for doc in docs)
    for name, value in secrets.items():
        assert value not in log.read_text(), f"{name} leaked into the worker's log"
        assert value not in history, f"{name} leaked into the workflow history"
        assert value not in st.model_dump_json(), f"{name} leaked into the status/audit"
