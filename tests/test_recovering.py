"""An action sent while a deploy recovers from a worker crash: the server turns Updates away while the
deploy's workflow task is being retried ("Workflow Task in failed state"). `send_action` sends it again
for a while, then refuses with one line; the server's refusal never reaches the person as a traceback.

The failing workflow task is real: a workflow on the dev server whose task fails (as a task held by a
killed worker does) until the test lets it through.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from starter.client import TASK_RETRYING, Refused, send_action
from workflows.models import Action, ActionInput, ActionResult, Step

BROKEN = {"now": True}  # read by the workflow below (unsandboxed): its task fails while this is True


@workflow.defn(name="RecoveringDeploy")
class RecoveringDeploy:
    def __init__(self) -> None:
        self.approved = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.approved)

    @workflow.signal
    def poke(self) -> None:
        if BROKEN["now"]:
            raise RuntimeError("this workflow task fails, as one held by a killed worker times out")

    @workflow.update(name="approve")
    def approve(self, msg: Any) -> ActionResult:
        self.approved = True
        return ActionResult(accepted=True, step=Step.PCCR_REVIEW, action=Action.APPROVE, message="ok")


@asynccontextmanager
async def failing_deploy(client: Client) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    """A running workflow whose workflow task fails and is being retried (attempt 2 or more)."""
    BROKEN["now"] = True
    queue = f"tq-recovering-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        client, task_queue=queue, workflows=[RecoveringDeploy], workflow_runner=UnsandboxedWorkflowRunner()
    )
    async with worker:
        handle = await client.start_workflow(
            RecoveringDeploy.run, id=f"deploy-recovering-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
        await handle.signal(RecoveringDeploy.poke)
        for _ in range(100):
            desc = await handle.describe()
            if desc.raw_description.pending_workflow_task.attempt >= 2:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the workflow task was never retried")
        yield handle


MSG = ActionInput(actor="U0GATE1", step=Step.PCCR_REVIEW, channel="test")


async def test_an_action_while_the_task_is_retried_is_sent_again(client: Client) -> None:
    async with failing_deploy(client) as handle:
        wid = handle.id
        # What the server says to a bare Update now: this is what `send_action` recovers from.
        with pytest.raises(RPCError, match=TASK_RETRYING):
            await handle.execute_update("approve", MSG, result_type=ActionResult)
        BROKEN["now"] = False  # the server's next try of the task goes through (its backoff grows)
        result = await send_action(client, wid, Action.APPROVE, MSG, pauses=(1.0,) * 40)
        assert result.accepted
        await handle.result()


async def test_an_action_while_the_task_keeps_failing_is_refused_in_one_line(client: Client) -> None:
    async with failing_deploy(client) as handle:
        wid = handle.id
        with pytest.raises(Refused) as err:
            await send_action(client, wid, Action.APPROVE, MSG, pauses=(0.2, 0.2))
        reason = str(err.value)
        assert (
            "\n" not in reason and "recovering from a worker crash" in reason and "nothing changed" in reason
        )
        await handle.terminate("test over")
