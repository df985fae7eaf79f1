"""What every polling activity shares: heartbeats that outlive a wait, and a sleep that heartbeats.

The long activities run under a short heartbeat timeout (10 s, `workflows.options.LONG_POLL`): an
attempt that goes that long without a heartbeat is timed out and retried, however well it is doing. So
nothing here stays silent longer than `HEARTBEAT_EVERY` (or a quarter of the heartbeat timeout, if that
is shorter):
- `sleep_unless_cancelled` heartbeats while it sleeps;
- `heartbeating()` heartbeats from a helper thread while a blocking call (an HTTP request and its
  client's own retries) runs, for a bounded time, so a call that hangs still times the attempt out.

A heartbeat replaces the details the server keeps for the activity (what its next attempt reads in
`activity.info().heartbeat_details`). These heartbeats repeat the last details sent through
`heartbeat()` in this attempt, or, before any, the details this attempt started with: they never wipe or
change them. Activities whose details matter should therefore heartbeat through `heartbeat()`, not
`temporalio.activity.heartbeat`.

Outside an activity (a plain call in a script or a test) the sleep just sleeps and the rest does nothing.

And what every activity class shares about secrets (SPEC §2, §10): a client's error text may carry a
URL with credentials or the token itself, and what an activity raises lands in the workflow's history,
its `outcome_reason` and the Slack thread. `scrub()` takes them out of a text; `scrubbed()` out of an
error; each class passes every message built from a client's error through one of them, with its own
token(s).
"""

from __future__ import annotations

import contextvars
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

#: The longest a sleep or a blocking call goes without a heartbeat (seconds).
HEARTBEAT_EVERY = 2.0
#: How long `heartbeating()` keeps an attempt alive around one blocking call, at most (seconds).
KEEP_ALIVE_LIMIT = 60.0
#: A watcher's first minute (seconds): it polls at its worker's own interval throughout it.
FIRST_MINUTE = 60.0


def watch_pause(interval: float, poll_cap: float | None, started: float, now: float | None = None) -> float:
    """Seconds a watcher sleeps before its next read: the worker's `interval` for the first minute of the
    attempt (monotonic `started`), then `poll_cap` (webhooks are configured: they bring news sooner, the
    polls are only the fallback) but never less than `interval`. `poll_cap` None: `interval` throughout.

    The simplest stretch; a polling budget (a schedule with a tight first minute and a cap) may replace
    it, keeping `poll_cap` as the cap to use when webhooks are configured."""
    if poll_cap is None:
        return interval
    elapsed = (time.monotonic() if now is None else now) - started
    return interval if elapsed < FIRST_MINUTE else max(interval, poll_cap)


class _Beats:
    """The details of one attempt's last heartbeat (one attempt runs in one worker thread)."""

    def __init__(self, info: activity.Info) -> None:
        self.info = info
        self.details: tuple[Any, ...] = tuple(info.heartbeat_details)


_local = threading.local()


def _beats() -> _Beats:
    info = activity.info()
    beats: _Beats | None = getattr(_local, "beats", None)
    if beats is None or beats.info is not info:  # a new attempt (each has its own Info) in this thread
        beats = _Beats(info)
        _local.beats = beats
    return beats


def heartbeat_every() -> float:
    """Seconds between heartbeats: `HEARTBEAT_EVERY`, or a quarter of the heartbeat timeout if shorter."""
    timeout = activity.info().heartbeat_timeout
    if timeout is None:
        return HEARTBEAT_EVERY
    return max(0.05, min(HEARTBEAT_EVERY, timeout.total_seconds() / 4))


def heartbeat(*details: Any) -> None:
    """`temporalio.activity.heartbeat`, its details remembered for the sleeps and keep-alives that follow."""
    _beats().details = details
    activity.heartbeat(*details)


def last_heartbeat_details() -> Sequence[Any]:
    """What the last heartbeat of this attempt carried (through `heartbeat()`), else what it started with."""
    return _beats().details


def sleep_unless_cancelled(seconds: float) -> None:
    """Sleep, heartbeating (the last details) every `heartbeat_every()` seconds; return early on
    cancellation (raised as CancelledError) or worker shutdown (retryable)."""
    if not activity.in_activity():
        time.sleep(max(0.0, seconds))
        return
    beats, every = _beats(), heartbeat_every()
    now = time.monotonic()
    deadline, next_beat = now + seconds, now + every
    while True:
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            return
        if now >= next_beat:
            activity.heartbeat(*beats.details)  # also how a cancellation request reaches this attempt
            next_beat = now + every
        activity.wait_for_cancelled_sync(max(0.0, min(remaining, next_beat - now, 0.1)))
        if activity.is_cancelled():
            raise CancelledError("activity cancelled")
        if activity.is_worker_shutdown():
            raise ApplicationError("worker shutting down; another worker takes over", type="WorkerShutdown")


@contextmanager
def heartbeating(limit: float = KEEP_ALIVE_LIMIT) -> Iterator[None]:
    """Heartbeat (the last details) every `heartbeat_every()` seconds from a helper thread while the block
    runs, for at most `limit` seconds: a blocking call that takes longer than the heartbeat timeout (a slow
    answer, a client's own retries) does not time the attempt out, but one that hangs past `limit` does.
    Cancellation is not noticed inside the block; check for it after it."""
    if not activity.in_activity() or activity.info().heartbeat_timeout is None:
        yield  # (a short call has no heartbeat timeout: nothing to keep alive, no heartbeats to send)
        return
    beats, every = _beats(), heartbeat_every()
    done = threading.Event()

    def beat() -> None:
        deadline = time.monotonic() + limit
        while not done.wait(every) and time.monotonic() < deadline:
            try:
                activity.heartbeat(*beats.details)
            except Exception:  # the attempt is over (or the worker is going): nothing left to keep alive
                return

    helper = threading.Thread(
        target=contextvars.copy_context().run, args=(beat,), name="deployctl-heartbeat", daemon=True
    )
    helper.start()
    try:
        yield
    finally:
        done.set()
        helper.join()


# ---------------------------------------------------------------------------------------------------
# Secrets out of error text

#: What stands in for a secret or a URL's user name and password.
MASK = "***"

#: `scheme://userinfo@`: the userinfo runs to the last `@` before the URL's path, query, fragment or the
#: end of the word (as `urllib.parse.urlsplit` and urllib3 split an authority).
_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.\-]*://)[^/?#\s]*@")


def _secret_pattern(secret: str) -> str:
    """A regex for `secret` as it may appear in text: each character as itself or percent-encoded (its
    UTF-8 bytes, hex in either case; `+` for a space, as in a form), so `quote()`, `quote_plus()` and
    partly encoded forms are all found."""
    out = []
    for ch in secret:
        forms = [re.escape(ch), "".join(f"%(?i:{b:02x})" for b in ch.encode("utf-8", "surrogatepass"))]
        if ch == " ":
            forms.append(r"\+")
        out.append("(?:" + "|".join(forms) + ")")
    return "".join(out)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without credentials: every value of `secrets` (and its URL-quoted forms) becomes `***`,
    and every URL's user name and password too (`scheme://user:pass@host` → `scheme://***@host`).
    Empty secrets are ignored."""
    values = sorted({s for s in secrets if s}, key=len, reverse=True)  # the longest first, where they overlap
    if values:
        text = re.sub("|".join(_secret_pattern(v) for v in values), MASK, text)
    return _USERINFO.sub(lambda m: m[1] + MASK + "@", text)


def _scrub_value(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {_scrub_value(k, secrets): _scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_value(v, secrets) for v in value)
    return value


def scrubbed(error: BaseException, secrets: Iterable[str] = ()) -> BaseException:
    """`error` as it may leave an activity: an ApplicationError whose message or (text) details hold a
    secret or a URL's credentials is rebuilt with them scrubbed (same type, retryability, retry delay and
    category; no cause); any other error, and one with nothing to scrub, is returned as it is."""
    if not isinstance(error, ApplicationError):
        return error
    values = [s for s in secrets if s]
    message = scrub(error.message, values)
    details = tuple(_scrub_value(d, values) for d in error.details)
    if message == error.message and details == tuple(error.details):
        return error
    return ApplicationError(
        message,
        *details,
        type=error.type,
        non_retryable=error.non_retryable,
        next_retry_delay=error.next_retry_delay,
        category=error.category,
    )
