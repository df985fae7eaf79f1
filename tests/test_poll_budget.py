"""Light on the systems it watches (issue 15): the polling activities against the Jenkins and GitHub fakes,
with the real clients, a small tight interval and a small cap, counting what the fakes were asked.

The figures are the schedule's own (activities/budget.py); the assertions are on what was asked and in
what order, and on lower bounds of the pauses (a pause never ends early), never on how fast a run was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from activities.github import GithubActivities, rate_limit_spread
from activities.jenkins import JenkinsActivities
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from workflows.models import (
    InputActionInput,
    ReadDiffInput,
    TriggerBuildInput,
    WaitBuildStartedInput,
    WatchInputInput,
    WatchPrInput,
)

pytestmark = pytest.mark.timeout(30)

USER, TOKEN = "deploy-bot", "11c0ffee5e1f0ba5e5ca1ab1e"
GH_TOKEN = "ghp_budget_test_token_1234"
JOB, INPUT_ID = "deploy-budget", "Approve-deploy"
BEGIN, END = "=== DEPLOY DIFF BEGIN ===", "=== DEPLOY DIFF END ==="
DIFF = ["~ image: app:1.4.1 -> app:1.4.2", "  note: déjà vu ✓"]
CONFIGS = "acme/product-configs"

TIGHT, TIGHT_FOR, CAP = 0.01, 0.6, 0.4
#: A pause never ends early; the fake stamps a request a little after the client sent it.
EARLY = 0.03


@pytest.fixture
def fake() -> Iterator[FakeJenkins]:
    with FakeJenkins(users={USER: TOKEN}) as f:
        f.add_job(JOB, parameters=[{"name": "V"}], diff_lines=DIFF, queue_seconds=0.05)
        yield f


@pytest.fixture
def acts(fake: FakeJenkins) -> JenkinsActivities:
    return JenkinsActivities(
        fake.url,
        USER,
        TOKEN,
        timeout=5.0,
        poll_interval=TIGHT,
        watch_interval=TIGHT,
        poll_cap=CAP,
        tight_for=TIGHT_FOR,
    )


def run(fn: Callable[[Any], Any], inp: Any, env: ActivityEnvironment | None = None) -> Any:
    return (env or ActivityEnvironment()).run(fn, inp)


def start_build(fake: FakeJenkins, acts: JenkinsActivities, job: str = JOB) -> int:
    from datetime import UTC, datetime

    queued = run(
        acts.trigger_build, TriggerBuildInput(job=job, params={"V": "1"}, not_before=datetime.now(UTC))
    )
    return run(acts.wait_build_started, WaitBuildStartedInput(job=job, queue_id=queued.queue_id)).number


def wait_state(fake: FakeJenkins, job: str, number: int, state: str) -> None:
    deadline = time.monotonic() + 5
    while fake.builds(job)[number - 1]["state"] != state:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def run_for(seconds: float, fn: Callable[[Any], Any], inp: Any) -> None:
    """Run a watcher for about `seconds`, then cancel it as the workflow does (TRY_CANCEL)."""
    env = ActivityEnvironment()
    timer = threading.Timer(seconds, env.cancel)
    timer.start()
    try:
        with pytest.raises(CancelledError):
            run(fn, inp, env)
    finally:
        timer.cancel()


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in zip(times, times[1:], strict=False)]


# ---------------------------------------------------------------------------------------------------
# Jenkins


def test_watch_input_backs_off_to_the_cap_after_the_tight_period(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    """(b) One request a poll while the input waits: tight at first, then one every CAP seconds."""
    number = start_build(fake, acts)
    wait_state(fake, JOB, number, "paused")
    began = time.time()
    run_for(TIGHT_FOR + 5 * CAP, acts.watch_input, WatchInputInput(job=JOB, number=number, input_id=INPUT_ID))
    ended = time.time()

    polls = [t for t, _ in fake.requests_of("pendingInputActions", JOB, number) if t >= began]
    kinds = {k for t, k, *_ in fake.timeline if t >= began}
    assert kinds == {"pendingInputActions"}  # nothing else is asked while the input waits
    # The fake stamps a request when it arrives, the pacer times a poll from when it starts, and the two
    # clocks differ by each request's own latency: which poll is "the last tight one" is not decided by
    # the fake's stamps near TIGHT_FOR (a tight poll at 0.595 s can arrive at 0.605 s, CI of 2026-12-02).
    # So the shape is asserted instead: short gaps, then CAP gaps for good, and the turn near TIGHT_FOR.
    first, between = polls[0], gaps(polls)
    turn = next(i for i, g in enumerate(between) if g >= CAP - EARLY)
    assert turn >= 3  # the first minute (here TIGHT_FOR) is tight
    assert all(g >= CAP - EARLY for g in between[turn:]), between  # backed off, it stays backed off
    assert abs(polls[turn] - first - TIGHT_FOR) <= 2 * TIGHT + EARLY  # and it backs off when it should
    backed_off = polls[turn + 1 :]
    assert len(backed_off) >= 3
    assert len(backed_off) <= (ended - first - TIGHT_FOR) / CAP + 1


def test_watch_input_before_the_input_costs_two_requests_a_poll(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    """(b) Before the input, a poll asks pendingInputActions and progressiveText (X-More-Data says the
    build runs): the pause after it is two CAPs, so the rate stays one request per CAP."""
    fake.add_job(
        "slow-plan", parameters=[{"name": "V"}], diff_lines=DIFF, queue_seconds=0.05, plan_seconds=30
    )
    number = start_build(fake, acts, "slow-plan")
    began = time.time()
    inp = WatchInputInput(job="slow-plan", number=number, input_id=INPUT_ID, known="not_reached")
    run_for(TIGHT_FOR + 6 * CAP, acts.watch_input, inp)
    mine = [(t, k) for t, k, _, path, _ in fake.timeline if t >= began and "/job/slow-plan/" in path]
    assert {k for _, k in mine} == {"pendingInputActions", "progressiveText"}
    polls = [t for t, k in mine if k == "pendingInputActions"]
    first = polls[0]
    later = [g for t, g in zip(polls[1:], gaps(polls), strict=False) if t - first > TIGHT_FOR + 2 * CAP]
    assert later and all(g >= 2 * CAP - EARLY for g in later), later


def test_the_console_is_read_progressively(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    """(c) read_diff asks progressiveText from the offset it reached, never the whole consoleText."""
    fake.add_job(
        "planning", parameters=[{"name": "V"}], diff_lines=DIFF, queue_seconds=0.05, plan_seconds=0.5
    )
    number = start_build(fake, acts, "planning")
    result = run(acts.read_diff, ReadDiffInput(job="planning", number=number, diff_begin=BEGIN, diff_end=END))
    assert result.diff == "\n".join(DIFF) + "\n"
    starts = [int(q["start"]) for _, q in fake.requests_of("progressiveText", "planning", number)]
    assert starts[0] == 0 and starts == sorted(starts) and starts[-1] > 0, starts
    assert len(set(starts)) >= 2  # it went on from where it was, while the plan ran
    assert fake.count("consoleText") == 0
    # The offsets are Jenkins' (X-Text-Size, bytes): the last start is where the text before the diff ended.
    console = fake.console("planning", number).encode("utf-8")
    assert console[starts[-1] :].decode("utf-8").startswith(BEGIN)


def test_an_answer_in_jenkins_is_noticed_at_the_next_poll(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    """(d) Past the tight period, the input answered in Jenkins is seen by the very next poll, at most one
    CAP later, and the watcher reads only the console's new part to say who answered."""
    fake.add_job("answered", parameters=[{"name": "V"}], diff_lines=DIFF, queue_seconds=0.05, apply_seconds=5)
    number = start_build(fake, acts, "answered")
    wait_state(fake, "answered", number, "paused")
    answered_at: list[float] = []

    def answer() -> None:
        answered_at.append(time.time())
        fake.answer_input("answered", number, by="alice")

    timer = threading.Timer(TIGHT_FOR + 2.5 * CAP, answer)
    timer.start()
    try:
        result = run(acts.watch_input, WatchInputInput(job="answered", number=number, input_id=INPUT_ID))
    finally:
        timer.join()
    assert (result.state, result.answered_by, result.answer) == ("answered", "alice", "proceed")
    after = [t for t, _ in fake.requests_of("pendingInputActions", "answered", number) if t > answered_at[0]]
    assert len(after) == 1  # the first poll after the answer saw it
    assert after[0] - answered_at[0] <= CAP + 0.5
    starts = [int(q["start"]) for _, q in fake.requests_of("progressiveText", "answered", number)]
    assert fake.count("consoleText") == 0 and starts == sorted(starts)


def test_input_action_waits_for_the_input_within_the_budget(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    """The effect is immediate once the input is there; the wait for it is paced like any other."""
    fake.add_job(
        "later",
        parameters=[{"name": "V"}],
        diff_lines=DIFF,
        queue_seconds=0.05,
        plan_seconds=TIGHT_FOR + 3 * CAP,
    )
    number = start_build(fake, acts, "later")
    result = run(
        acts.input_action, InputActionInput(job="later", number=number, input_id=INPUT_ID, decision="proceed")
    )
    assert result.done
    posted = next(t for t, k, m, *_ in fake.timeline if k == "input" and m == "POST")
    # (after the POST it reads the pending inputs once more at once, to confirm: not a wait)
    polls = [t for t, _ in fake.requests_of("pendingInputActions", "later", number) if t < posted]
    first = polls[0]
    later = [g for t, g in zip(polls[1:], gaps(polls), strict=False) if t - first > TIGHT_FOR + 2 * CAP]
    assert all(g >= 2 * CAP - EARLY for g in later), later  # pending + progressiveText a poll
    assert fake.count("consoleText") == 0
    assert len([r for r in fake.requests if r[0] == "POST" and "/input/" in r[1]]) == 1


def test_a_long_pause_heartbeats_and_is_cancelled_at_once(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    """Production pauses (30 s) heartbeat every few seconds and end on cancellation, not at their end."""
    number = start_build(fake, acts)
    acts = JenkinsActivities(fake.url, USER, TOKEN, timeout=5.0, watch_interval=30.0, tight_for=0.0)
    wait_state(fake, JOB, number, "paused")
    env = ActivityEnvironment()
    beats: list[float] = []
    env.on_heartbeat = lambda *d: beats.append(time.monotonic())
    threading.Timer(4.5, env.cancel).start()
    started = time.monotonic()
    with pytest.raises(CancelledError):
        run(acts.watch_input, WatchInputInput(job=JOB, number=number, input_id=INPUT_ID), env)
    assert time.monotonic() - started < 10.0  # not the 30 s pause
    assert len(beats) >= 2 and max(gaps([started, *beats])) <= 2.5, beats  # HEARTBEAT_EVERY is 2 s
    assert fake.count("pendingInputActions", JOB, number) == 1


# ---------------------------------------------------------------------------------------------------
# GitHub


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=GH_TOKEN) as f:
        f.add_repo(CONFIGS, files={"channel-gov/x.yaml": "version: 1\n"})
        f.create_branch(CONFIGS, "deployctl/x")
        f.commit_file(CONFIGS, "deployctl/x", "channel-gov/x.yaml", "version: 2\n")
        yield f


def gh_acts(github: FakeGitHub, **kw: Any) -> GithubActivities:
    return GithubActivities(
        github.url,
        GH_TOKEN,
        timeout=5,
        **{"watch_interval": TIGHT, "watch_cap": CAP, "tight_for": TIGHT_FOR, **kw},
    )


def pulls_gets(github: FakeGitHub, number: int, since: float = 0.0) -> list[tuple[float, int]]:
    return [
        (t, s)
        for t, m, p, s in github.timeline
        if t >= since and m == "GET" and p.endswith(f"/pulls/{number}")
    ]


def test_watch_pr_asks_one_request_a_poll_and_notices_a_merge(github: FakeGitHub) -> None:
    """(b, d) Only `GET pulls/n` is polled (the repository is not read); past the tight period one every
    CAP; a merge on GitHub is seen by the next poll."""
    number = github.open_pull(CONFIGS, "deployctl/x")
    merged_at: list[float] = []

    def merge() -> None:
        merged_at.append(time.time())
        github.merge_directly(CONFIGS, number, by="alice")

    timer = threading.Timer(TIGHT_FOR + 3.5 * CAP, merge)
    timer.start()
    try:
        state = run(gh_acts(github).watch_pr, WatchPrInput(repo=CONFIGS, number=number))
    finally:
        timer.join()
    assert (state.merged, state.merged_by) == (True, "alice")
    assert {p for _, _, p, _ in github.timeline} == {f"/api/v3/repos/{CONFIGS}/pulls/{number}"}
    polls = [t for t, _ in pulls_gets(github, number)]
    first = polls[0]
    later = [g for t, g in zip(polls[1:], gaps(polls), strict=False) if t - first > TIGHT_FOR + CAP]
    assert later and all(g >= CAP - EARLY for g in later), later
    assert len([t for t in polls if t > merged_at[0]]) == 1


def test_watch_pr_waits_out_a_secondary_rate_limit(github: FakeGitHub) -> None:
    """(e) A 403 secondary rate limit with Retry-After does not fail the watch: it waits that long, polls
    again, and returns the merge once the limit has lifted."""
    number = github.open_pull(CONFIGS, "deployctl/x")
    github.rate_limit_next(retry_after=1, status=403, times=2)
    threading.Timer(2.5, lambda: github.merge_directly(CONFIGS, number, by="alice")).start()
    state = run(gh_acts(github).watch_pr, WatchPrInput(repo=CONFIGS, number=number))
    assert state.merged
    answers = pulls_gets(github, number)
    assert [s for _, s in answers[:3]] == [403, 403, 200]
    assert answers[-1][1] == 200
    assert all(g >= 1.0 - EARLY for g in gaps([t for t, _ in answers[:3]]))  # Retry-After: 1, honoured


def test_watch_pr_slows_down_when_few_requests_are_left(github: FakeGitHub) -> None:
    """With less than 10% of the hour's requests left, the pauses spread what is left until the reset
    (here 100 left for 30 s: about 0.3 s each, not the tight 0.01 s)."""
    number = github.open_pull(CONFIGS, "deployctl/x")
    github.set_rate_limit(remaining=100, limit=5000, reset_in=30)
    run_for(1.5, gh_acts(github, tight_for=60.0).watch_pr, WatchPrInput(repo=CONFIGS, number=number))
    polls = [t for t, _ in pulls_gets(github, number)]
    assert len(polls) >= 2 and all(g >= 0.25 for g in gaps(polls)), gaps(polls)
    assert github.rate_remaining < 100  # each request spent one, as on GitHub


def test_rate_limit_spread() -> None:
    assert rate_limit_spread(remaining=4000, limit=5000, reset=1000.0, now=0.0) == 0.0
    assert rate_limit_spread(remaining=100, limit=5000, reset=1000.0, now=0.0) == 10.0
    assert rate_limit_spread(remaining=0, limit=5000, reset=90.0, now=30.0) == 60.0
    assert rate_limit_spread(remaining=-1, limit=-1, reset=0.0, now=0.0) == 0.0  # no headers seen yet


# ---------------------------------------------------------------------------------------------------
# progressiveText as the fake speaks it, and as the activities read it


def test_the_fake_answers_progressive_text_as_stapler_does(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    import requests

    number = start_build(fake, acts)
    wait_state(fake, JOB, number, "paused")
    url = f"{fake.url}/job/{JOB}/{number}/logText/progressiveText"
    auth = (USER, TOKEN)
    whole = fake.console(JOB, number).encode("utf-8")
    first = requests.get(url, params={"start": 0}, auth=auth, timeout=5)
    assert first.content == whole and first.headers["X-Text-Size"] == str(len(whole))
    assert first.headers["X-More-Data"] == "true"  # paused at its input: still running
    again = requests.get(url, params={"start": len(whole)}, auth=auth, timeout=5)
    assert again.content == b"" and again.headers["X-Text-Size"] == str(len(whole))
    past = requests.get(url, params={"start": len(whole) + 100}, auth=auth, timeout=5)
    assert past.content == whole  # "text rolled over": from 0
    fake.answer_input(JOB, number, by="alice")
    wait_state(fake, JOB, number, "finished")
    done = requests.get(url, params={"start": len(whole)}, auth=auth, timeout=5)
    assert "X-More-Data" not in done.headers and b"Approved by alice" in done.content


def test_console_follows_the_offsets_jenkins_gives() -> None:
    from activities.jenkins import Console

    console = Console()
    console.add(0, b"a\nb\n", 10, more=True)  # 10 bytes of raw log (console notes stripped from the body)
    assert (console.text, console.offset, console.more, console.grew) == ("a\nb\n", 10, True, True)
    console.add(10, b"", 10, more=True)
    assert (console.text, console.grew) == ("a\nb\n", False)
    console.add(10, "c ✓\n".encode(), 16, more=False)
    assert (console.text, console.offset, console.more) == ("a\nb\nc ✓\n", 16, False)
    console.add(16, b"fresh\n", 6, more=True)  # the log started over: Jenkins answered from 0
    assert (console.text, console.offset) == ("fresh\n", 6)


def test_a_proxy_that_drops_x_more_data_does_not_end_the_build(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    """Without `X-More-Data` the log looks complete; the build's own `building` is asked, and wins."""
    fake.add_job("proxied", parameters=[{"name": "V"}], diff_lines=DIFF, queue_seconds=0.05, plan_seconds=0.4)
    number = start_build(fake, acts, "proxied")
    fake.drop_headers = {"x-more-data"}
    try:
        result = run(
            acts.read_diff, ReadDiffInput(job="proxied", number=number, diff_begin=BEGIN, diff_end=END)
        )
    finally:
        fake.drop_headers = set()
    assert result.diff == "\n".join(DIFF) + "\n"
    assert fake.count("build", "proxied", number) >= 2  # it asked, and kept polling


# ---------------------------------------------------------------------------------------------------
# A simulated day at the production figures, counted on the fakes


class SimulatedDay:
    """Simulated time for the watchers' Pacer: a pause advances the clock at once. Each HTTP request the
    fake serves is stamped with the simulated time of the poll it belongs to (`stamp`). At `answer_at`
    (simulated) `answer` runs, as a person acting outside deployctl; at `end` the next pause raises
    CancelledError, as the workflow's cancellation of a watcher does."""

    def __init__(
        self,
        timeline: list[Any],
        end: float,
        answer_at: float | None = None,
        answer: Callable[[], None] | None = None,
    ) -> None:
        self.now = 0.0
        self.end, self.answer_at, self.answer = end, answer_at, answer
        self.answered: float | None = None
        self._timeline = timeline
        self._marks = [(0.0, len(timeline))]  # (simulated time, requests the fake had served by then)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds
        if self.now >= self.end:
            raise CancelledError("the simulated day is over")
        if self.answered is None and self.answer_at is not None and self.now >= self.answer_at:
            assert self.answer is not None
            self.answered = self.answer_at  # the person answers then; the next poll is at `now`
            self.answer()
        self._marks.append((self.now, len(self._timeline)))

    def stamp(self, first: int) -> list[float]:
        """The simulated times of the fake's requests from index `first` on."""
        marks = self._marks + [(self.now, len(self._timeline))]
        out: list[float] = []
        for (t, a), (_, b) in zip(marks, marks[1:], strict=False):
            out += [t] * (b - max(a, first)) if b > first else []
        return out


def most_in_a_minute(times: list[float], after: float) -> int:
    """The most requests in any 60-second window that starts at or after `after` (simulated seconds)."""
    later = sorted(t for t in times if t >= after)
    j, best = 0, 0
    for i, t in enumerate(later):
        while j < len(later) and later[j] < t + 60.0:
            j += 1
        best = max(best, j - i)
    return best


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> Callable[..., SimulatedDay]:
    """Make the watchers' Pacers run on a SimulatedDay (what the activities sleep between polls only)."""
    import activities.budget
    import activities.github
    import activities.jenkins

    def make(timeline: list[Any], end: float, **kw: Any) -> SimulatedDay:
        day = SimulatedDay(timeline, end, **kw)

        def pacer(schedule: Any) -> activities.budget.Pacer:
            return activities.budget.Pacer(schedule, clock=day.clock, sleep=day.sleep)

        monkeypatch.setattr(activities.jenkins, "Pacer", pacer)
        monkeypatch.setattr(activities.github, "Pacer", pacer)
        return day

    return make


DAY = 24 * 3600.0


@pytest.mark.parametrize("poll_cap", [None, 300.0], ids=["polling", "webhooks"])
def test_a_day_at_deploy_approval_costs_jenkins_two_requests_a_minute(
    fake: FakeJenkins, acts: JenkinsActivities, simulated: Callable[..., SimulatedDay], poll_cap: float | None
) -> None:
    """Issue 15's budget at the worker's own figures (1 s tight for the first minute, then 30 s per
    request): a day of waiting at the input, every request counted on the Jenkins fake, is at most 2 a
    minute after the first minute (1 per 5 minutes with webhooks configured), and an answer given in
    Jenkins at 23:00 is noticed by the next poll, within a minute."""
    fake.add_job("day", parameters=[{"name": "V"}], diff_lines=DIFF, queue_seconds=0.05, apply_seconds=5)
    number = start_build(fake, acts, "day")
    wait_state(fake, "day", number, "paused")
    prod = JenkinsActivities(fake.url, USER, TOKEN, timeout=5.0)  # the production intervals and cap
    first = len(fake.timeline)
    day = simulated(
        fake.timeline, DAY, answer_at=23 * 3600.0, answer=lambda: fake.answer_input("day", number, by="alice")
    )
    result = run(
        prod.watch_input, WatchInputInput(job="day", number=number, input_id=INPUT_ID, poll_cap=poll_cap)
    )
    assert (result.state, result.answered_by) == ("answered", "alice")
    # noticed by the first poll after the answer: within the minute (within the stretch with webhooks,
    # whose notification is what brings the news then: test_webhooks)
    assert day.answered is not None and 0 <= day.now - day.answered <= (poll_cap or 60.0)
    stamped = list(zip(day.stamp(first), [k for _, k, *_ in fake.timeline[first:]], strict=True))
    polls = [t for t, k in stamped if k == "pendingInputActions"]
    kinds = [k for _, k in stamped]
    assert set(kinds) == {"crumb", "pendingInputActions", "progressiveText"}
    assert kinds.count("crumb") == 1  # python-jenkins asks for a CSRF crumb once per client
    assert kinds.count("progressiveText") <= 2  # only to say who answered, from where it had read
    assert most_in_a_minute(polls, after=60.0) <= (2 if poll_cap is None else 1)
    # 60 tight polls, then one per 30 s (or per poll_cap) until the answer at 23:00
    per_request = poll_cap or 30.0
    assert 60 + (23 * 3600 - 60) / per_request <= len(polls) <= 61 + (23 * 3600 - 60) / per_request + 1, len(
        polls
    )
    later = [t for t in polls if t >= 60.0]
    assert all(b - a >= per_request for a, b in zip(later, later[1:], strict=False))


@pytest.mark.parametrize("poll_cap", [None, 300.0], ids=["polling", "webhooks"])
def test_a_day_at_version_pr_merge_costs_github_one_request_a_minute(
    github: FakeGitHub, simulated: Callable[..., SimulatedDay], poll_cap: float | None
) -> None:
    """GitHub's side: a whole simulated day watching a PR nobody merges, counted on the GitHub fake, is
    4 polls in the first minute and then at most 1 a minute (1 per 5 minutes with webhooks), and every
    request is the one `GET pulls/n`: 1,444 a day, under a token's 5,000 an hour for 14 deploys at once."""
    number = github.open_pull(CONFIGS, "deployctl/x")
    prod = GithubActivities(github.url, GH_TOKEN, timeout=5)  # the production intervals and cap
    first = len(github.timeline)
    day = simulated(github.timeline, DAY)
    with pytest.raises(CancelledError):
        run(prod.watch_pr, WatchPrInput(repo=CONFIGS, number=number, poll_cap=poll_cap))
    asked = github.timeline[first:]
    assert {(m, p) for _, m, p, _ in asked} == {("GET", f"/api/v3/repos/{CONFIGS}/pulls/{number}")}
    times = day.stamp(first)
    assert len(times) == len(asked)
    assert most_in_a_minute(times, after=60.0) <= 1
    if poll_cap is None:
        assert 4 + 1439 <= len(asked) <= 4 + 1440 + 1, len(asked)
    else:
        assert len(asked) <= 4 + (DAY - 60) / poll_cap + 1, len(asked)
