"""One activity on the outside world, run so that a deploy never waits in silence."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from workflows import messages, notices, trail, view
from workflows.options import QUIET_TRIES, RATE_LIMIT_WAIT, RATE_LIMITED, cause
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
    own retry policy, so a deploy never waits in silence on a system that keeps refusing.

    A rate limit (options.RATE_LIMITED) slows the deploy down and never fails it: when the activity
    gives up on one (the wait the system asked for ends past the call's schedule-to-close, so Temporal
    ends it at the first try), the deploy waits that long on a timer, says so once, and calls again."""
    before = s.activity_wait

    def show(line: str) -> None:  # status `waiting_for`, unless the call runs in the background
        if shown:
            s.activity_wait = (line, workflow.now())
            view.publish(s)

    def tell(line: str, note: str) -> None:  # once per call and cause: the audit trail and the thread
        trail.note(s, note, "waiting")
        notices.say(s, NoticeKind.THREAD, f"{s.name} waits. {messages.slack_escape(line)}.")

    async def tries(quiet: bool) -> Any:
        """QUIET_TRIES quiet tries, then (said once) the rest of `options`' policy; without `quiet` (a
        rate limit was said already) only the latter."""
        if quiet:
            first = dict(options, retry_policy=replace(options["retry_policy"], maximum_attempts=QUIET_TRIES))
            try:
                return await workflow.execute_activity_method(method, arg, summary=summary, **first, **extra)
            except ActivityError as err:
                if err.retry_state is not RetryState.MAXIMUM_ATTEMPTS_REACHED:
                    raise
                line = f"{what}: failing after {QUIET_TRIES} tries ({cause(err)}); deployctl keeps trying"
                tell(line, line)
                show(line)
        return await workflow.execute_activity_method(method, arg, summary=summary, **options, **extra)

    show(what)
    told = False
    while True:
        try:
            result = await tries(quiet=not told)
            break
        except ActivityError as err:
            limit = rate_limit(err)
            if limit is None:
                raise
            wait = max(limit.next_retry_delay or RATE_LIMIT_WAIT, timedelta(seconds=1))
            secs = wait.total_seconds()
            shown_wait = messages.human_duration(math.ceil(secs / 60) * 60 if secs > 60 else secs)
            again = workflow.now() + wait
            line = f"{what}: rate limited; deployctl tries again at {again:%H:%M} UTC (in {shown_wait})"
            if not told:
                told = True
                tell(line, f"{line}. {cause(err)}")
            s.rate_limited = line
            show(line)
            await workflow.sleep(wait)
            s.rate_limited = None
    if shown:
        s.activity_wait = before
        view.publish(s)
    return result


def rate_limit(err: BaseException) -> ApplicationError | None:
    """The rate-limit failure behind an activity's failure, whatever its retry state (the last try's
    failure, or the cause of a schedule-to-close timeout); None when it is something else."""
    e: BaseException | None = err
    while e is not None:
        if isinstance(e, ApplicationError) and e.type in RATE_LIMITED:
            return e
        e = e.__cause__
    return None
