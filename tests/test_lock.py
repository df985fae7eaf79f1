"""One deploy at a time per service and environment past trigger, across a worker restart."""

from __future__ import annotations

from temporalio.client import Client

from starter.client import send_action, start_deploy
from starter.devstack import wait_for_step
from starter.simulators.jenkins import FakeJenkins
from tests.conftest import OWNER, PARAMS, SRE1, SRE2, Deployment, eventually
from tests.support import act, status, to_trigger
from worker import create_worker
from workflows.lock import lock_id
from workflows.models import (
    Action,
    ActionInput,
    DeployResult,
    DeployStatus,
    LockState,
    Outcome,
    Process,
    Step,
)


async def test_second_deploy_waits_for_the_first_across_a_worker_restart(
    client: Client, deployment: Deployment, jenkins: FakeJenkins, secrets: dict
):
    d = deployment
    async with create_worker(client, d.config, task_queue=d.task_queue):
        first, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        second, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        await to_trigger(client, first, SRE1)
        await to_trigger(client, second, SRE2)
        await send_action(client, first, Action.TRIGGER, ActionInput(actor=OWNER, step=Step.TRIGGER))
        await wait_for_step(client, first, Step.DIFF_VALIDATION, OWNER)
        await send_action(client, second, Action.TRIGGER, ActionInput(actor=OWNER, step=Step.TRIGGER))
        st = await eventually(lambda: _blocked(client, second))
        assert st.blocked_by == first and st.step is Step.TRIGGER and st.waiting_on == []
    # The worker goes away and a new one comes: the lock and the queue are durable.
    async with create_worker(client, d.config, task_queue=d.task_queue):
        lock = await client.get_workflow_handle(lock_id(d.service, "kprod")).query(
            "state", result_type=LockState
        )
        assert lock.holder == first and lock.queue == [second]
        assert len(jenkins.builds(d.job)) == 1, "no second build while the first deploy runs"
        st = await status(client, first)
        await act(
            client, first, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
        )
        await act(client, first, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
        assert (
            await client.get_workflow_handle(first, result_type=DeployResult).result()
        ).outcome is Outcome.SUCCEEDED
        st = await wait_for_step(client, second, Step.DIFF_VALIDATION, OWNER)  # its build started by itself
        assert st.blocked_by is None
        builds = jenkins.builds(d.job)
        assert [b["result"] for b in builds] == ["SUCCESS", None] and builds[1]["number"] == st.build.number
        await send_action(client, second, Action.CANCEL, ActionInput(actor=OWNER, step=Step.DIFF_VALIDATION))
        assert (
            await client.get_workflow_handle(second, result_type=DeployResult).result()
        ).outcome is Outcome.CANCELLED
        lock = await client.get_workflow_handle(lock_id(d.service, "kprod")).query(
            "state", result_type=LockState
        )
        assert lock.holder is None and lock.queue == []


async def _blocked(client: Client, wid: str) -> DeployStatus | None:
    st = await status(client, wid)
    return st if st.blocked_by else None
