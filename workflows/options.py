"""The activity option sets, named by what they are (not by the system they talk to)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

# A short call (Jenkins, GitHub, the deploy lock): retried with backoff for up to 30 minutes, then the
# deploy fails with the system's reason.
SHORT_CALL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "schedule_to_close_timeout": timedelta(minutes=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
    ),
}
# A long poll (a queue, a console, an input, a result, a PR): polls inside and heartbeats on every poll
# (well inside the heartbeat timeout), so a dead worker's attempt is retried within seconds, not hours.
LONG_POLL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(hours=12),
    "heartbeat_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
    ),
}
# After this many failed tries of a short call or a long poll, the deploy says in its thread, once, what
# it waits for and why (status `waiting_for` says it all along); the activity goes on retrying.
QUIET_TRIES = 4
# A failure that means "later", not "no": the system asks to be called again after a while (GitHub's
# primary and secondary rate limits; activities/github.py raises it with `next_retry_delay` set). It never
# fails a deploy: when the wait asked for ends past a call's schedule-to-close, Temporal gives the
# activity up at once, and `calls.call` waits that long itself, says so, and calls again.
GITHUB_RATE_LIMITED = "GithubRateLimited"
RATE_LIMITED = frozenset({GITHUB_RATE_LIMITED})
# How long such a wait lasts when the failure does not say ("wait for at least one minute", GitHub's docs).
RATE_LIMIT_WAIT = timedelta(minutes=1)
# A best-effort notice (Slack, the PCCR issue's comments and labels): never blocks a deploy; a few tries,
# then a note in the audit trail.
NOTICE: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=20),
    "schedule_to_close_timeout": timedelta(minutes=3),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=6
    ),
}


def cause(err: BaseException) -> str:
    """The innermost message of an activity failure: what the activity said went wrong."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)
