"""What every polling activity shares."""

from __future__ import annotations

import time

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError


def sleep_unless_cancelled(seconds: float) -> None:
    """Sleep, returning early on cancellation (raised as CancelledError) or worker shutdown (retryable)."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        activity.wait_for_cancelled_sync(min(remaining, 0.1))
        if activity.is_cancelled():
            raise CancelledError("activity cancelled")
        if activity.is_worker_shutdown():
            raise ApplicationError("worker shutting down; another worker takes over", type="WorkerShutdown")
