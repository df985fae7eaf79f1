"""Asking the per-service-and-environment lock for a turn: a signal-with-start through the client."""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client

from workflows.lock import lock_id
from workflows.models import LockCall, LockRequest, LockState


class LockActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn
    async def request_lock(self, call: LockCall) -> None:
        """Start the lock workflow if it is not running and ask it for the lock (idempotent)."""
        await self._client.start_workflow(
            "DeployLock",
            LockState(),
            id=lock_id(call.service, call.environment),
            task_queue=activity.info().task_queue,
            start_signal="acquire",
            start_signal_args=[LockRequest(deploy_id=call.deploy_id)],
            static_summary=f"one deploy at a time: {call.service} in {call.environment}",
        )
