"""One activity on the outside world, run so that a deploy never waits in silence."""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, RetryState

from workflows import messages, notices, trail, view
from workflows.options import QUIET_TRIES, cause
from workflows.outbox import NoticeKind
from workflows.state import DeployState


async def call(
    s: DeployState,
    method: Any,
    arg: Any,
    *,
    what: str,
    summary: str | None,
    options: dict[str, Any],
    shown: bool = True,
    **extra: Any,
) -> Any:
    """Run one activity on the outside world and return its result.

    While it runs, status `waiting_for` says `what` (unless `shown` is False: a watcher in the
    background). After QUIET_TRIES failed tries the deploy says once, in its thread and audit trail,
    what keeps failing and why, and status says so too; the activity then goes on under `options`'
    own retry policy, so a deploy never waits in silence on a system that keeps refusing."""
    before = s.activity_wait
    if shown:
        s.activity_wait = (what, workflow.now())
        view.publish(s)
    quiet = dict(
        options, retry_policy=dataclasses.replace(options["retry_policy"], maximum_attempts=QUIET_TRIES)
    )
    try:
        result = await workflow.execute_activity_method(method, arg, summary=summary, **quiet, **extra)
    except ActivityError as err:
        if err.retry_state is not RetryState.MAXIMUM_ATTEMPTS_REACHED:
            raise
        line = f"{what}: failing after {QUIET_TRIES} tries ({cause(err)}); deployctl keeps trying"
        trail.note(s, line, "waiting")
        notices.say(s, NoticeKind.THREAD, f"{s.name} waits. {messages.slack_escape(line)}.")
        if shown:
            s.activity_wait = (line, workflow.now())
            view.publish(s)
        result = await workflow.execute_activity_method(method, arg, summary=summary, **options, **extra)
    if shown:
        s.activity_wait = before
        view.publish(s)
    return result
