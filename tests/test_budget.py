"""The polling budget (activities/budget.py), pure: a simulated day of waiting on a fake clock."""

from __future__ import annotations

import bisect

import pytest

from activities.budget import GITHUB_CAP, JENKINS_CAP, NOTICE_WITHIN, TIGHT_FOR, Pacer, PollSchedule

DAY = 24 * 3600.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


def simulate(
    schedule: PollSchedule, requests_per_poll: int, poll_takes: float = 0.0, length: float = DAY
) -> tuple[list[float], list[float]]:
    """Poll for `length` seconds through a Pacer on a fake clock: (poll start times, request times), both
    relative to the start of the wait. Each poll's requests are spread over `poll_takes` seconds."""
    clock = FakeClock()
    pacer = Pacer(schedule, clock=clock, sleep=clock.sleep)
    start = clock.now
    polls: list[float] = []
    requests: list[float] = []
    while clock.now - start < length:
        polls.append(clock.now - start)
        for i in range(requests_per_poll):
            requests.append(clock.now - start + poll_takes * i / max(1, requests_per_poll))
        clock.now += poll_takes
        pacer.wait(requests_per_poll)
    return polls, requests


def most_in_a_minute(times: list[float], after: float) -> int:
    """The most requests in any 60-second window [t, t+60) that starts at or after `after`."""
    later = [t for t in times if t >= after]
    return max((bisect.bisect_left(later, t + 60.0) - i for i, t in enumerate(later)), default=0)


@pytest.mark.parametrize(
    ("first", "cap", "per_poll", "budget"),
    [
        (1.0, JENKINS_CAP, 1, 2),  # watch_input while the input waits: pendingInputActions
        (1.0, JENKINS_CAP, 2, 2),  # watch_input before the input: pendingInputActions + progressiveText
        (0.5, JENKINS_CAP, 1, 2),  # wait_build_started, wait_build_result, read_diff of a printing build
        (0.5, JENKINS_CAP, 2, 2),  # read_diff of a silent build: progressiveText + pendingInputActions
        (15.0, GITHUB_CAP, 1, 1),  # watch_pr: GET pulls/n
    ],
)
@pytest.mark.parametrize("poll_takes", [0.0, 0.4])
def test_a_day_of_waiting_keeps_the_budget(
    first: float, cap: float, per_poll: int, budget: int, poll_takes: float
) -> None:
    schedule = PollSchedule(first=first, cap=cap)
    polls, requests = simulate(schedule, per_poll, poll_takes)
    assert most_in_a_minute(requests, after=TIGHT_FOR) <= budget
    gaps = [b - a for a, b in zip(polls, polls[1:], strict=False)]
    assert max(gaps) <= NOTICE_WITHIN  # an answer outside deployctl is seen within a minute
    # The first minute is tight: every poll of it comes `first` seconds after the one before.
    assert all(
        g == pytest.approx(max(first, poll_takes)) for a, g in zip(polls, gaps, strict=False) if a < TIGHT_FOR
    )
    # And the day costs what the budget says, not more: about `budget` a minute after the first one.
    assert len(requests) <= 60 / first * per_poll + budget * (DAY - TIGHT_FOR) / 60 + per_poll


def test_the_schedules_figures() -> None:
    jenkins, github = PollSchedule(first=1.0, cap=JENKINS_CAP), PollSchedule(first=15.0, cap=GITHUB_CAP)
    assert [jenkins.pause(t) for t in (0, 30, 59.9, 60, 3600)] == [1.0, 1.0, 1.0, 30.0, 30.0]
    assert jenkins.pause(120, requests=2) == 60.0
    assert jenkins.pause(120, requests=5) == NOTICE_WITHIN  # the notice rule bounds every pause
    assert [github.pause(t) for t in (0, 45, 60, 7200)] == [15.0, 15.0, 60.0, 60.0]
    assert jenkins.requests_per_minute(1) == jenkins.requests_per_minute(2) == 2.0
    assert github.requests_per_minute() == 1.0


def test_each_new_wait_starts_tight_again() -> None:
    """The workflow starts a new watcher after every action: a new Pacer is tight for its first minute."""
    clock = FakeClock()
    schedule = PollSchedule(first=1.0, cap=JENKINS_CAP)
    old = Pacer(schedule, clock=clock, sleep=clock.sleep)
    clock.now += 3600
    old.poll_started()
    assert old.wait(1) == JENKINS_CAP
    new = Pacer(schedule, clock=clock, sleep=clock.sleep)
    assert new.wait(1) == 1.0


def test_a_slow_poll_counts_towards_its_pause() -> None:
    clock = FakeClock()
    pacer = Pacer(PollSchedule(first=1.0, cap=30.0, tight_for=0.0), clock=clock, sleep=clock.sleep)
    start = clock.now
    clock.now += 12.0  # the poll took 12 s
    pacer.wait(1)
    assert clock.now - start == 30.0


def test_at_least_stretches_a_pause_within_the_notice_rule() -> None:
    clock = FakeClock()
    pacer = Pacer(PollSchedule(first=15.0, cap=60.0), clock=clock, sleep=clock.sleep)
    assert pacer.wait(1, at_least=40.0) == 40.0
    assert pacer.wait(1, at_least=600.0) == NOTICE_WITHIN
    assert pacer.wait(1, at_least=600.0, beyond_gap=True) == 600.0


def test_a_schedule_needs_positive_intervals() -> None:
    with pytest.raises(ValueError):
        PollSchedule(first=0.0, cap=30.0)
