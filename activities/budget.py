"""How often a waiting activity may ask Jenkins or GitHub: one schedule for every polling loop.

A deploy can wait for hours (`deploy_approval` up to 4 h, `version_pr_merge` as long as the SRE takes), and
every waiting deploy has a watcher polling a system other teams depend on. The budget per waiting
activity (issue 15):

- **The first minute is tight.** Right after an action something is likely to change, and each activity
  call starts its own schedule (the workflow starts a new watcher after every action), so the first
  `tight_for` seconds poll every `first` seconds: what the tests and a person at the keyboard see at once.
- **After that, `cap` seconds per request.** A poll that made `k` requests pauses `k * cap` before the
  next one, so the rate is at most `60 / cap` requests a minute whatever a poll costs: Jenkins `cap=30`
  (2 a minute), GitHub `cap=60` (1 a minute). Requests are counted, not polls.
- **Never more than `max_gap` between polls** (60 s): an answer given outside deployctl (the input
  answered in Jenkins, the PR merged on GitHub) is noticed within a minute by polling. The polling loops
  are written so that a poll at the cap makes at most `max_gap / cap` requests (Jenkins: 2, GitHub: 1),
  so this bound never breaks the budget; a poll that had to make more (a console of more than 10,000 new
  lines read in several pieces) is the one exception, and the budget gives way to the notice rule then.
- Effects (trigger, proceed, abort, merge) are never paced: only the pauses of polling loops are.

`PollSchedule.pause` is pure (elapsed time and request count in, seconds out), so a day of waiting is
tested with a fake clock (tests/test_budget.py). `Pacer` applies it in an activity: it remembers when the
wait started and when the current poll started, and sleeps (heartbeating, cancellable) until the next poll
is due, counting the poll's own time towards the pause.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from activities.common import sleep_unless_cancelled

#: The longest pause between two polls of a waiting activity (seconds): the out-of-band notice rule.
NOTICE_WITHIN = 60.0
#: How long a wait polls at its tight interval before it backs off (seconds).
TIGHT_FOR = 60.0
#: Seconds per request once a wait backs off: Jenkins 2 requests a minute, GitHub 1.
JENKINS_CAP = 30.0
GITHUB_CAP = 60.0


@dataclass(frozen=True)
class PollSchedule:
    """The pause before the next poll of a wait, from how long the wait has lasted.

    `first`: the pause while the wait is younger than `tight_for` seconds. After that, `cap` seconds for
    each request the last poll made, and never more than `max_gap`. All in seconds."""

    first: float
    cap: float
    tight_for: float = TIGHT_FOR
    max_gap: float = NOTICE_WITHIN

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap <= 0 or self.tight_for < 0 or self.max_gap <= 0:
            raise ValueError(f"{self}: intervals must be positive")

    def pause(self, elapsed: float, requests: int = 1) -> float:
        """Seconds from the start of a poll to the start of the next one: `elapsed` is how long the wait had
        lasted when the poll started, `requests` how many requests the poll made."""
        if elapsed < self.tight_for:
            return min(self.first, self.max_gap)
        return min(max(self.first, self.cap * max(1, requests)), self.max_gap)

    def stretched(self, poll_cap: float | None) -> PollSchedule:
        """The schedule when webhooks bring the news (the workflow passes `poll_cap`, 300 s, when the
        workers' config says they are set up): the polls are only the fallback, `poll_cap` seconds apart
        once the tight period is over. None: this schedule."""
        if poll_cap is None:
            return self
        return replace(self, cap=max(self.cap, poll_cap), max_gap=max(self.max_gap, poll_cap))

    def requests_per_minute(self, requests_per_poll: int = 1) -> float:
        """The steady rate once the wait backs off (for docs and the benchmark)."""
        return 60.0 * requests_per_poll / self.pause(self.tight_for, requests_per_poll)


class Pacer:
    """One wait's schedule in an activity: `poll_started()` before a poll, `wait(requests)` after it.

    `requests` is what the poll cost (each activity class counts its own HTTP requests). `at_least` lets a
    caller stretch one pause (GitHub's rate-limit headers ask for more room); it is still bounded by the
    schedule's `max_gap` unless `beyond_gap` (a rate limit GitHub imposes cannot be polled through)."""

    def __init__(
        self,
        schedule: PollSchedule,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = sleep_unless_cancelled,
    ) -> None:
        self.schedule = schedule
        self._clock = clock
        self._sleep = sleep
        self.started = clock()
        self._poll_started = self.started

    def poll_started(self) -> None:
        self._poll_started = self._clock()

    def elapsed(self) -> float:
        return self._poll_started - self.started

    def wait(self, requests: int = 1, at_least: float = 0.0, beyond_gap: bool = False) -> float:
        """Sleep until the next poll is due; returns the pause the schedule chose (from the poll's start)."""
        pause = self.schedule.pause(self.elapsed(), requests)
        if at_least > pause:
            pause = at_least if beyond_gap else min(at_least, self.schedule.max_gap)
        remaining = self._poll_started + pause - self._clock()
        if remaining > 0:
            self._sleep(remaining)
        self.poll_started()
        return pause
