"""One deploy at a time per service and environment past `trigger`: a durable FIFO lock workflow.

A deploy asks for the lock (signal-with-start, through an activity) when its trigger is accepted; the lock
answers with a `lock_update` Signal: queued behind whom, or granted. The deploy gives it back when it
ends, whatever its outcome. The lock is a workflow, so it survives worker and server restarts.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from workflows.models import LockRequest, LockState, LockUpdate

LOCK_UPDATE = "lock_update"


def lock_id(service: str, environment: str) -> str:
    return f"lock-deploy-{service}-{environment}"


@workflow.defn(name="DeployLock")
class DeployLockWorkflow:
    @workflow.init
    def __init__(self, state: LockState) -> None:
        self._holder = state.holder
        self._queue = list(state.queue)
        self._dirty = True

    @workflow.signal
    def acquire(self, req: LockRequest) -> None:
        if req.deploy_id != self._holder and req.deploy_id not in self._queue:
            self._queue.append(req.deploy_id)
            self._dirty = True

    @workflow.signal
    def release(self, req: LockRequest) -> None:
        if req.deploy_id == self._holder:
            self._holder = None
        elif req.deploy_id in self._queue:
            self._queue.remove(req.deploy_id)
        self._dirty = True

    @workflow.query
    def state(self) -> LockState:
        return LockState(holder=self._holder, queue=list(self._queue))

    @workflow.run
    async def run(self, state: LockState) -> None:
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False
            if self._holder is None and self._queue:
                self._holder = self._queue.pop(0)
                await self._tell(self._holder, LockUpdate(granted=True))
            for waiting in list(self._queue):
                await self._tell(waiting, LockUpdate(granted=False, holder=self._holder))
            if self._holder is None and not self._queue:
                # Idle: linger a little for late requests, then end (a later request starts a new run).
                try:
                    await workflow.wait_condition(lambda: self._dirty, timeout=timedelta(minutes=1))
                    continue
                except TimeoutError:
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(LockState(holder=self._holder, queue=self._queue))

    async def _tell(self, deploy_id: str, update: LockUpdate) -> None:
        try:
            await workflow.get_external_workflow_handle(deploy_id).signal(LOCK_UPDATE, update)
        except FailureError:
            # The deploy is gone (ended or terminated): it holds nothing any more.
            if self._holder == deploy_id:
                self._holder = None
                self._dirty = True
            elif deploy_id in self._queue:
                self._queue.remove(deploy_id)
