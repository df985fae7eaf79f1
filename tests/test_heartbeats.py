"""Long activities heartbeat well inside their heartbeat timeout ("never stuck, never silent").

The unit tests run `activities.common` under ActivityEnvironment; the last one is the issue's test: a
gov deploy parked a minute at `version_pr_merge`, through the real worker against the fakes, keeps its
`watch_pr` activity on its first attempt. It is the one slow test (about 65 s of real time): the worker's
own `GithubActivities` (a 15 s poll) under the workflow's own 10 s heartbeat timeout, nothing shortened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from activities import common
from activities.common import sleep_unless_cancelled
from starter.client import send_action
from tests.conftest import OWNER, Deployment
from tests.support import start_gov, to_merge
from workflows.models import Action, ActionInput, DeployResult, Outcome, Step


class Beats:
    """An ActivityEnvironment whose heartbeats are recorded with the time they were sent."""

    def __init__(self, heartbeat_timeout: float | None = 10.0, details: list[Any] | None = None) -> None:
        self.env = ActivityEnvironment()
        self.env.info = dataclasses.replace(
            self.env.info,
            heartbeat_timeout=timedelta(seconds=heartbeat_timeout) if heartbeat_timeout else None,
            heartbeat_details=details or [],
        )
        self.sent: list[tuple[float, tuple[Any, ...]]] = []
        self.env.on_heartbeat = lambda *d: self.sent.append((time.monotonic(), d))

    def run(self, fn: Any, *args: Any) -> tuple[float, float]:
        start = time.monotonic()
        self.env.run(fn, *args)
        return start, time.monotonic()

    def longest_silence(self, start: float, end: float) -> float:
        times = [start, *(t for t, _ in self.sent), end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


# ---------------------------------------------------------------------------------------------------
# activities.common


def test_sleep_heartbeats_while_it_sleeps() -> None:
    """A 4.5 s sleep under the deploy's 10 s heartbeat timeout heartbeats at least every 2 s, repeating
    the details the attempt started with (what the server holds), so they are not wiped."""
    beats = Beats(heartbeat_timeout=10.0, details=[{"seen_pending": True}])
    start, end = beats.run(sleep_unless_cancelled, 4.5)
    assert end - start >= 4.5
    assert len(beats.sent) >= 2, beats.sent
    assert beats.longest_silence(start, end) <= common.HEARTBEAT_EVERY + 0.5
    assert all(d == ({"seen_pending": True},) for _, d in beats.sent)


def test_sleep_heartbeats_a_quarter_of_a_short_heartbeat_timeout() -> None:
    beats = Beats(heartbeat_timeout=1.0)
    start, end = beats.run(sleep_unless_cancelled, 1.5)
    assert len(beats.sent) >= 4, beats.sent
    assert beats.longest_silence(start, end) <= 0.5


def test_sleep_repeats_the_last_details() -> None:
    beats = Beats(heartbeat_timeout=1.0, details=[{"from": "the last attempt"}])

    def poll() -> None:
        common.heartbeat({"number": 7})
        sleep_unless_cancelled(0.6)
        common.heartbeat({"number": 8})
        sleep_unless_cancelled(0.6)

    beats.run(poll)
    details = [d for _, d in beats.sent]
    assert details[0] == ({"number": 7},) and details.count(({"number": 8},)) >= 2, details
    assert ({"from": "the last attempt"},) not in details
    cut = details.index(({"number": 8},))
    assert all(d == ({"number": 7},) for d in details[:cut])


def test_sleep_notices_cancellation_promptly() -> None:
    beats = Beats(heartbeat_timeout=10.0)
    threading.Timer(0.3, beats.env.cancel).start()
    start = time.monotonic()
    with pytest.raises(CancelledError):
        beats.env.run(sleep_unless_cancelled, 30.0)
    assert time.monotonic() - start < 1.0


def test_sleep_outside_an_activity_just_sleeps() -> None:
    start = time.monotonic()
    sleep_unless_cancelled(0.2)
    assert 0.2 <= time.monotonic() - start < 1.0
    with common.heartbeating():
        pass


def test_heartbeating_covers_a_blocking_call_then_stops() -> None:
    """A blocking call longer than the heartbeat timeout (a slow request) is heartbeaten through, with
    the last details; no heartbeat is sent once the block is left."""
    beats = Beats(heartbeat_timeout=1.0)

    def slow_call() -> None:
        common.heartbeat({"number": 3})
        with common.heartbeating():
            time.sleep(1.6)

    start, end = beats.run(slow_call)
    assert len(beats.sent) >= 1 + 5, beats.sent
    assert beats.longest_silence(start, end) <= 0.5
    assert all(d == ({"number": 3},) for _, d in beats.sent)
    count = len(beats.sent)
    time.sleep(0.6)
    assert len(beats.sent) == count


def test_heartbeating_gives_up_after_its_limit() -> None:
    """A call that hangs is not kept alive for ever: past `limit` the heartbeat timeout applies again."""
    beats = Beats(heartbeat_timeout=0.4)

    def hanging_call() -> None:
        with common.heartbeating(limit=0.5):
            time.sleep(1.5)

    start, _ = beats.run(hanging_call)
    assert beats.sent and all(t - start < 0.8 for t, _ in beats.sent), beats.sent


# ---------------------------------------------------------------------------------------------------
# The test: a minute at version_pr_merge, one attempt of watch_pr


@pytest.mark.timeout(170)
async def test_a_minute_at_version_pr_merge_is_one_watch_pr_attempt(
    client: Client, deployment: Deployment, worker: None
) -> None:
    d = deployment
    wid = await start_gov(client, d)
    st = await to_merge(client, wid)
    number = int(st.version_pr.rsplit("/", 1)[1])
    handle = client.get_workflow_handle(wid, result_type=DeployResult)

    await asyncio.sleep(62.0)  # six heartbeat timeouts, four polls of the PR

    desc = await handle.describe()
    watches = [p for p in desc.raw_description.pending_activities if p.activity_type.name == "watch_pr"]
    assert len(watches) == 1, desc.raw_description.pending_activities
    watch = watches[0]
    failure = watch.last_failure.message if watch.HasField("last_failure") else None
    print(f"watch_pr after 62 s at version_pr_merge: attempt {watch.attempt}, last failure {failure!r}")
    assert watch.attempt == 1 and failure is None, (watch.attempt, failure)
    last_beat = watch.last_heartbeat_time.ToDatetime(tzinfo=UTC)
    assert datetime.now(UTC) - last_beat < timedelta(seconds=10)  # heartbeating now, not only earlier
    details = await client.data_converter.decode(watch.heartbeat_details.payloads)
    assert details == [{"number": number}]  # the sleep's heartbeats kept the activity's details

    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.VERSION_PR_MERGE))
    assert (await handle.result()).outcome is Outcome.CANCELLED
