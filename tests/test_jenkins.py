"""The Jenkins activities, run with ActivityEnvironment and the real python-jenkins client against
FakeJenkins (a real HTTP server speaking Jenkins' API). No Temporal server needed."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jenkins
import pytest
import requests
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.jenkins import JenkinsActivities, choose_input
from starter.simulators.jenkins import FROM_MESSAGE, FakeJenkins, jenkins_input_id
from workflows.models import (
    AbortBuildInput,
    BuildResultInput,
    InputActionInput,
    JobParametersInput,
    ReadDiffInput,
    TriggerBuildInput,
    WaitBuildStartedInput,
    WatchInputInput,
)

pytestmark = pytest.mark.timeout(15)

USER = "deploy-bot"
TOKEN = "11c0ffee5e1f0ba5e5ca1ab1e"
JOB = "deploy-payments-api"
FOLDER_JOB = "platform/deploy-x"
INPUT_ID = "Approve-deploy"
BEGIN, END = "=== DEPLOY DIFF BEGIN ===", "=== DEPLOY DIFF END ==="
PARAMS: list[dict[str, Any]] = [
    {"name": "SERVICE", "type": "string", "default": "payments-api"},
    {"name": "ENV", "type": "choice", "choices": ["staging", "prod"]},
    {"name": "DRY_RUN", "type": "boolean", "default": False},
    {"name": "VERSION"},
]
WANTED = {"SERVICE": "payments-api", "ENV": "prod", "DRY_RUN": "false", "VERSION": "1.2.3"}
DIFF = [
    "--- a/values.yaml",
    "+++ b/values.yaml",
    "-version: 1.2.2",
    "+version: 1.2.3",
    "  note: déjà vu ✓",
    "",
]


@pytest.fixture
def fake() -> Iterator[FakeJenkins]:
    with FakeJenkins(users={USER: TOKEN, "alice": "alice-token-123"}) as f:
        f.add_job(JOB, parameters=PARAMS, diff_lines=DIFF, queue_seconds=0.05)
        f.add_job(FOLDER_JOB, parameters=PARAMS[:2], diff_lines=["+replicas: 3"], queue_seconds=0.05)
        yield f


@pytest.fixture
def acts(fake: FakeJenkins) -> JenkinsActivities:
    return JenkinsActivities(fake.url, USER, TOKEN, timeout=5.0, poll_interval=0.05, watch_interval=0.05)


def run(fn: Callable[[Any], Any], inp: Any, env: ActivityEnvironment | None = None) -> Any:
    return (env or ActivityEnvironment()).run(fn, inp)


def app_error(fn: Callable[[Any], Any], inp: Any, type_: str, non_retryable: bool) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        run(fn, inp)
    err = info.value
    assert (err.type, err.non_retryable) == (type_, non_retryable), str(err)
    assert TOKEN not in str(err)
    return err


def posts(fake: FakeJenkins, contains: str) -> list[tuple[str, str, dict[str, str], str]]:
    return [r for r in fake.requests if r[0] == "POST" and contains in r[1]]


def now() -> datetime:
    return datetime.now(UTC)


def trigger(acts: JenkinsActivities, job: str = JOB, params: dict[str, str] | None = None, **kw: Any) -> Any:
    inp = TriggerBuildInput(
        job=job, params=WANTED if params is None else params, not_before=kw.get("not_before", now())
    )
    return run(acts.trigger_build, inp)


def start(acts: JenkinsActivities, job: str = JOB, params: dict[str, str] | None = None) -> int:
    """Trigger and wait until the build runs; returns its number."""
    queued = trigger(acts, job, params)
    ref = run(acts.wait_build_started, WaitBuildStartedInput(job=job, queue_id=queued.queue_id))
    return ref.number


def wait_paused(fake: FakeJenkins, job: str, number: int) -> None:
    deadline = time.monotonic() + 5
    while fake.builds(job)[number - 1]["state"] != "paused":
        assert time.monotonic() < deadline
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------------
# Reading the job


def test_job_parameters_are_read_from_the_job(acts: JenkinsActivities) -> None:
    result = run(acts.job_parameters, JobParametersInput(job=JOB))
    got = {p.name: (p.type, p.default, p.choices) for p in result.parameters}
    assert got == {
        "SERVICE": ("StringParameterDefinition", "payments-api", None),
        "ENV": ("ChoiceParameterDefinition", "staging", ["staging", "prod"]),
        "DRY_RUN": ("BooleanParameterDefinition", "false", None),
        "VERSION": ("StringParameterDefinition", "", None),
    }
    assert [p.name for p in result.parameters] == ["SERVICE", "ENV", "DRY_RUN", "VERSION"]


# ---------------------------------------------------------------------------------------------------
# Triggering exactly once


def test_trigger_starts_exactly_one_build_with_exactly_the_params(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    queued = trigger(acts)
    assert queued.queue_id is not None and not queued.reused
    ref = run(acts.wait_build_started, WaitBuildStartedInput(job=JOB, queue_id=queued.queue_id))
    assert ref.number == 1 and ref.url == f"{fake.url}/job/{JOB}/1/"
    [build] = fake.builds(JOB)
    assert build["params"] == WANTED
    [post] = posts(fake, "buildWithParameters")
    assert post[2] == WANTED  # the parameters went in the query string, as python-jenkins sends them


def test_500_after_queueing_then_retry_reuses_the_queued_item(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    fake.add_job("slow", parameters=PARAMS, diff_lines=DIFF, queue_seconds=2.0)
    fake.fail_next(status=500, path_contains="buildWithParameters", after_effect=True)
    app_error(
        acts.trigger_build,
        TriggerBuildInput(job="slow", params=WANTED, not_before=now()),
        "JenkinsUnavailable",
        False,
    )
    assert len(fake.queued("slow")) == 1  # Jenkins did queue it before answering 500

    retry = trigger(acts, "slow")
    assert retry.reused and retry.queue_id == fake.queued("slow")[0]["id"]
    assert len(posts(fake, "buildWithParameters")) == 1
    assert len(fake.queued("slow")) == 1 and fake.builds("slow") == []


def test_500_after_queueing_then_retry_reuses_the_started_build(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    not_before = now()
    fake.fail_next(status=500, path_contains="buildWithParameters", after_effect=True)
    app_error(
        acts.trigger_build,
        TriggerBuildInput(job=JOB, params=WANTED, not_before=not_before),
        "JenkinsUnavailable",
        False,
    )
    time.sleep(0.15)  # the item leaves the queue: the retry must find the build

    retry = run(acts.trigger_build, TriggerBuildInput(job=JOB, params=WANTED, not_before=not_before))
    assert retry.reused and retry.number == 1 and retry.queue_id is not None
    assert retry.url == f"{fake.url}/job/{JOB}/1/"
    assert len(fake.builds(JOB)) == 1 and fake.queued(JOB) == []
    assert len(posts(fake, "buildWithParameters")) == 1


def test_a_retry_after_a_successful_post_reuses_the_build(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    """The worker died right after the POST: the activity runs again with the same input."""
    inp = TriggerBuildInput(job=JOB, params=WANTED, not_before=now())
    first = run(acts.trigger_build, inp)
    second = run(acts.trigger_build, inp)  # still queued
    assert second.reused and second.queue_id == first.queue_id
    run(acts.wait_build_started, WaitBuildStartedInput(job=JOB, queue_id=first.queue_id))
    third = run(acts.trigger_build, inp)  # started
    assert third.reused and third.number == 1 and third.queue_id == first.queue_id
    assert len(fake.builds(JOB)) == 1
    assert len(posts(fake, "buildWithParameters")) == 1


def test_builds_before_not_before_or_with_other_params_are_not_reused(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    first = start(acts)
    other = trigger(acts, params={**WANTED, "VERSION": "1.2.4"})
    assert not other.reused
    later = trigger(acts, not_before=now() + timedelta(seconds=10))  # a new deploy with the same parameters
    assert not later.reused
    assert len(posts(fake, "buildWithParameters")) == 3
    time.sleep(0.15)
    assert [b["number"] for b in fake.builds(JOB)] == [first, 2, 3]


def test_a_baseline_tells_an_earlier_identical_build_from_ours(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    """Two deploys with the same parameters, seconds apart: the second's baseline excludes the first's build."""
    first = start(acts)
    baseline = run(acts.trigger_baseline, JobParametersInput(job=JOB))
    assert baseline.last_build == first and baseline.queued == []
    inp = TriggerBuildInput(
        job=JOB, params=WANTED, not_before=now() - timedelta(minutes=1), baseline=baseline
    )
    ours = run(acts.trigger_build, inp)
    assert not ours.reused
    again = run(acts.trigger_build, inp)  # a retry after the POST reuses ours, not the earlier one
    assert again.reused and again.queue_id == ours.queue_id
    assert len(posts(fake, "buildWithParameters")) == 2


def test_params_must_match_the_job_definition(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    missing = {k: v for k, v in WANTED.items() if k != "VERSION"}
    err = app_error(
        acts.trigger_build,
        TriggerBuildInput(job=JOB, params=missing, not_before=now()),
        "JobParametersMismatch",
        True,
    )
    assert "VERSION" in str(err)
    err = app_error(
        acts.trigger_build,
        TriggerBuildInput(job=JOB, params={**WANTED, "EXTRA": "x"}, not_before=now()),
        "JobParametersMismatch",
        True,
    )
    assert "EXTRA" in str(err)
    assert posts(fake, "build") == []


def test_job_without_parameters_is_built_once(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    fake.add_job("plain", diff_lines=DIFF, queue_seconds=0.05)
    assert run(acts.job_parameters, JobParametersInput(job="plain")).parameters == []
    number = start(acts, "plain", {})
    assert trigger(acts, "plain", {}).reused
    assert [r[1] for r in posts(fake, "/job/plain/")] == ["/job/plain/build"]
    assert [(b["number"], b["params"]) for b in fake.builds("plain")] == [(number, {})]


def test_folder_job_end_to_end(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    params = {"SERVICE": "x", "ENV": "staging"}
    assert [p.name for p in run(acts.job_parameters, JobParametersInput(job=FOLDER_JOB)).parameters] == [
        "SERVICE",
        "ENV",
    ]
    number = start(acts, FOLDER_JOB, params)
    [post] = posts(fake, "buildWithParameters")
    assert post[1] == "/job/platform/job/deploy-x/buildWithParameters"
    assert trigger(acts, FOLDER_JOB, params).reused
    diff = run(acts.read_diff, ReadDiffInput(job=FOLDER_JOB, number=number, diff_begin=BEGIN, diff_end=END))
    assert diff.diff == "+replicas: 3\n"
    assert diff.console_url == f"{fake.url}/job/platform/job/deploy-x/{number}/console"
    inp = InputActionInput(job=FOLDER_JOB, number=number, input_id=INPUT_ID, decision="proceed")
    assert run(acts.input_action, inp).done
    assert run(acts.wait_build_result, BuildResultInput(job=FOLDER_JOB, number=number)).result == "SUCCESS"
    assert [(b["params"], b["result"]) for b in fake.builds(FOLDER_JOB)] == [(params, "SUCCESS")]


def test_500_without_effect_is_retryable_and_queues_nothing(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    fake.fail_next(status=503, path_contains="buildWithParameters", after_effect=False)
    app_error(
        acts.trigger_build,
        TriggerBuildInput(job=JOB, params=WANTED, not_before=now()),
        "JenkinsUnavailable",
        False,
    )
    assert fake.queued(JOB) == [] and fake.builds(JOB) == []
    assert not trigger(acts).reused
    assert len(fake.queued(JOB)) == 1


# ---------------------------------------------------------------------------------------------------
# Queue


def test_cancelled_queue_item_is_non_retryable(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    fake.add_job("slow", parameters=PARAMS, diff_lines=DIFF, queue_seconds=5.0)
    queued = trigger(acts, "slow")
    run(acts.abort_build, AbortBuildInput(job="slow", queue_id=queued.queue_id, input_id=INPUT_ID))
    assert fake.queued("slow") == []
    app_error(
        acts.wait_build_started,
        WaitBuildStartedInput(job="slow", queue_id=queued.queue_id),
        "BuildCancelled",
        True,
    )
    run(
        acts.abort_build, AbortBuildInput(job="slow", queue_id=queued.queue_id, input_id=INPUT_ID)
    )  # idempotent
    assert fake.builds("slow") == []


def test_forgotten_queue_item_falls_back_to_the_builds_queue_id(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    queued = trigger(acts)
    other = trigger(acts, params={**WANTED, "VERSION": "9"})
    time.sleep(0.15)
    fake.forget_queue_item(queued.queue_id)
    fake.forget_queue_item(other.queue_id)
    ref = run(acts.wait_build_started, WaitBuildStartedInput(job=JOB, queue_id=queued.queue_id))
    assert ref.number == next(b["number"] for b in fake.builds(JOB) if b["queue_id"] == queued.queue_id)
    app_error(acts.wait_build_started, WaitBuildStartedInput(job=JOB, queue_id=999), "QueueItemGone", False)


# ---------------------------------------------------------------------------------------------------
# The diff


def test_read_diff_waits_for_the_block_and_hashes_it(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    fake.add_job("planning", parameters=PARAMS, diff_lines=DIFF, queue_seconds=0.05, plan_seconds=0.3)
    number = start(acts, "planning")
    assert BEGIN not in fake.console("planning", number)  # not printed yet: read_diff has to poll
    result = run(acts.read_diff, ReadDiffInput(job="planning", number=number, diff_begin=BEGIN, diff_end=END))
    expected = "--- a/values.yaml\n+++ b/values.yaml\n-version: 1.2.2\n+version: 1.2.3\n  note: déjà vu ✓\n\n"
    assert result.diff == expected
    assert result.diff_sha256 == hashlib.sha256(expected.encode("utf-8")).hexdigest()
    assert result.console_url == f"{fake.url}/job/planning/{number}/console"


def test_no_diff_is_non_retryable(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    fake.add_job("silent", parameters=PARAMS, diff_lines=None, queue_seconds=0.05)  # pauses at input
    fake.add_job("silent-no-input", parameters=PARAMS, diff_lines=None, queue_seconds=0.05, input_id=None)
    for job in ("silent", "silent-no-input"):
        number = start(acts, job)
        err = app_error(
            acts.read_diff,
            ReadDiffInput(job=job, number=number, diff_begin=BEGIN, diff_end=END),
            "NoDiff",
            True,
        )
        assert ("waiting at its input step" in str(err)) == (job == "silent")


# ---------------------------------------------------------------------------------------------------
# The input step


def test_input_proceed_ends_in_success(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    fake.add_job("applying", parameters=PARAMS, diff_lines=DIFF, queue_seconds=0.05, apply_seconds=1.0)
    number = start(acts, "applying")
    wait_paused(fake, "applying", number)
    result = run(
        acts.input_action,
        InputActionInput(job="applying", number=number, input_id=INPUT_ID, decision="proceed"),
    )
    assert result.done and not result.answered_elsewhere
    assert fake.builds("applying")[0]["state"] == "running"  # applying: wait_build_result polls
    final = run(acts.wait_build_result, BuildResultInput(job="applying", number=number))
    assert (final.number, final.result) == (number, "SUCCESS")
    assert fake.builds("applying")[0]["answered_by"] == USER
    assert len(posts(fake, f"/input/{INPUT_ID}/proceedEmpty")) == 1


def test_input_abort_ends_aborted(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    number = start(acts)
    wait_paused(fake, JOB, number)
    result = run(
        acts.input_action, InputActionInput(job=JOB, number=number, input_id=INPUT_ID, decision="abort")
    )
    assert result.done and not result.answered_elsewhere
    assert run(acts.wait_build_result, BuildResultInput(job=JOB, number=number)).result == "ABORTED"
    assert f"Rejected by {USER}" in fake.console(JOB, number)


def test_input_retry_after_our_own_answer_was_lost_is_done(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    number = start(acts)
    wait_paused(fake, JOB, number)
    inp = InputActionInput(job=JOB, number=number, input_id=INPUT_ID, decision="proceed")
    fake.fail_next(status=502, path_contains="/input/", after_effect=True)
    app_error(acts.input_action, inp, "JenkinsUnavailable", False)
    again = run(acts.input_action, inp)
    assert again.done and not again.answered_elsewhere
    assert len(posts(fake, "/input/")) == 1
    assert fake.builds(JOB)[0]["result"] == "SUCCESS"


def test_input_answered_directly_in_jenkins(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    fake.add_job("applying", parameters=PARAMS, diff_lines=DIFF, queue_seconds=0.05, apply_seconds=1.0)
    number = start(acts, "applying")
    wait_paused(fake, "applying", number)
    watch = WatchInputInput(job="applying", number=number, input_id=INPUT_ID)
    timer = threading.Timer(0.3, fake.answer_input, args=("applying", number), kwargs={"by": "alice"})
    timer.start()
    try:
        watched = run(acts.watch_input, watch)  # returns once alice answered
    finally:
        timer.join()
    assert not watched.pending and watched.build_result is None  # still applying

    answer = run(
        acts.input_action,
        InputActionInput(job="applying", number=number, input_id=INPUT_ID, decision="proceed"),
    )
    assert not answer.done and answer.answered_elsewhere
    assert "Approved by alice" in answer.detail
    assert posts(fake, "/input/") == []

    assert run(acts.wait_build_result, BuildResultInput(job="applying", number=number)).result == "SUCCESS"
    watched = run(acts.watch_input, watch)
    assert not watched.pending and watched.build_result == "SUCCESS"


def test_input_rejected_in_jenkins_is_answered_elsewhere(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    number = start(acts)
    wait_paused(fake, JOB, number)
    fake.answer_input(JOB, number, proceed=False, by="alice")
    watched = run(acts.watch_input, WatchInputInput(job=JOB, number=number, input_id=INPUT_ID))
    assert not watched.pending and watched.build_result == "ABORTED"
    for decision in ("proceed", "abort"):
        answer = run(
            acts.input_action, InputActionInput(job=JOB, number=number, input_id=INPUT_ID, decision=decision)
        )
        assert not answer.done and answer.answered_elsewhere and "Rejected by alice" in answer.detail


def test_watch_input_honours_cancellation(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    number = start(acts)
    wait_paused(fake, JOB, number)
    env = ActivityEnvironment()
    heartbeats: list[Any] = []
    env.on_heartbeat = heartbeats.append
    timer = threading.Timer(0.3, env.cancel)
    timer.start()
    try:
        with pytest.raises(CancelledError):
            run(acts.watch_input, WatchInputInput(job=JOB, number=number, input_id=INPUT_ID), env)
    finally:
        timer.join()
    assert heartbeats and heartbeats[-1]["seen_pending"] is True
    assert fake.builds(JOB)[0]["state"] == "paused"


# ---------------------------------------------------------------------------------------------------
# Abort


def test_abort_build_is_idempotent(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    fake.add_job(
        "no-input", parameters=PARAMS, diff_lines=DIFF, queue_seconds=0.05, input_id=None, apply_seconds=5
    )
    paused = start(acts)
    wait_paused(fake, JOB, paused)
    running = start(acts, "no-input")
    for _ in range(2):
        run(acts.abort_build, AbortBuildInput(job=JOB, number=paused, input_id=INPUT_ID))
        run(acts.abort_build, AbortBuildInput(job="no-input", number=running, input_id=INPUT_ID))
    assert fake.builds(JOB)[0]["result"] == "ABORTED"
    assert fake.builds("no-input")[0]["result"] == "ABORTED"
    assert len(posts(fake, "/input/")) == 1 and len(posts(fake, "/stop")) == 1


# ---------------------------------------------------------------------------------------------------
# Errors


def test_bad_token_is_non_retryable_auth(fake: FakeJenkins) -> None:
    bad = JenkinsActivities(fake.url, USER, "wrong-token-0123", poll_interval=0.05)
    err = app_error(bad.job_parameters, JobParametersInput(job=JOB), "JenkinsAuth", True)
    assert (
        "401" in str(err) and fake.url in str(err) and USER in str(err) and "wrong-token-0123" not in str(err)
    )
    err = app_error(
        bad.trigger_build, TriggerBuildInput(job=JOB, params=WANTED, not_before=now()), "JenkinsAuth", True
    )
    assert fake.queued(JOB) == []


def test_forbidden_is_non_retryable_auth(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    fake.fail_next(status=403, method="POST", path_contains="buildWithParameters", after_effect=False)
    err = app_error(
        acts.trigger_build, TriggerBuildInput(job=JOB, params=WANTED, not_before=now()), "JenkinsAuth", True
    )
    assert "403" in str(err)


def test_unknown_job_is_non_retryable_not_found(acts: JenkinsActivities) -> None:
    app_error(acts.job_parameters, JobParametersInput(job="nope"), "JenkinsNotFound", True)
    app_error(acts.job_parameters, JobParametersInput(job="platform/nope"), "JenkinsNotFound", True)
    app_error(
        acts.trigger_build,
        TriggerBuildInput(job="nope", params={}, not_before=now()),
        "JenkinsNotFound",
        True,
    )
    app_error(acts.wait_build_result, BuildResultInput(job=JOB, number=42), "JenkinsNotFound", True)


def test_gateway_errors_on_reads_are_retryable(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    # python-jenkins' get_job_info turns any HTTPError into "does not exist": the status must still count.
    # A read is tried again in the activity a few times (a flaky Jenkins does not restart long polls)…
    fake.fail_next(status=503, method="GET", path_contains=f"/job/{JOB}/api/json", after_effect=False)
    assert run(acts.job_parameters, JobParametersInput(job=JOB)).parameters
    reads = [r for r in fake.requests if r[0] == "GET" and f"/job/{JOB}/api/json" in r[1]]
    assert len(reads) == 2
    # …and when it keeps failing, the failure is retryable for Temporal.
    fake.fail_next(
        status=503, method="GET", path_contains=f"/job/{JOB}/api/json", times=4, after_effect=False
    )
    app_error(acts.job_parameters, JobParametersInput(job=JOB), "JenkinsUnavailable", False)
    assert run(acts.job_parameters, JobParametersInput(job=JOB)).parameters


def test_unreachable_jenkins_is_retryable() -> None:
    with FakeJenkins() as gone:
        url = gone.url
    acts = JenkinsActivities(url, USER, TOKEN, timeout=2.0)
    app_error(acts.job_parameters, JobParametersInput(job=JOB), "JenkinsUnreachable", False)


def test_stale_crumb_is_retryable_and_refreshed(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    run(acts.job_parameters, JobParametersInput(job=JOB))  # the client caches its crumb
    fake._crumb_salt = "restarted"  # Jenkins restarted: the cached crumb is no longer valid
    app_error(
        acts.trigger_build, TriggerBuildInput(job=JOB, params=WANTED, not_before=now()), "JenkinsCrumb", False
    )
    assert not trigger(acts).reused
    assert len(fake.queued(JOB)) + len(fake.builds(JOB)) == 1


@pytest.mark.parametrize("crumbs", [True, "token-exempt", False])
def test_crumb_modes(crumbs: bool | str) -> None:
    with FakeJenkins(users={USER: TOKEN}, crumbs=crumbs) as fake:
        fake.add_job(JOB, parameters=PARAMS, diff_lines=DIFF, queue_seconds=0.01)
        acts = JenkinsActivities(fake.url, USER, TOKEN, poll_interval=0.02)
        number = start(acts)
        wait_paused(fake, JOB, number)
        assert run(
            acts.input_action, InputActionInput(job=JOB, number=number, input_id=INPUT_ID, decision="proceed")
        ).done
        assert fake.builds(JOB)[0]["result"] == "SUCCESS"
        crumb_requests = [r for r in fake.requests if r[1] == "/crumbIssuer/api/json"]
        assert len(crumb_requests) == 1  # fetched once per client and thread


# ---------------------------------------------------------------------------------------------------
# The fake itself, as python-jenkins sees it


def test_fake_speaks_jenkins_to_python_jenkins(fake: FakeJenkins) -> None:
    anonymous = jenkins.Jenkins(fake.url)
    with pytest.raises(jenkins.BadHTTPException):  # get_version skips auth: anonymous gets 403
        anonymous.get_version()
    assert (fake.requests[-1][:2]) == ("GET", "/")
    client = jenkins.Jenkins(fake.url, username=USER, password=TOKEN)
    assert client.get_whoami()["id"] == USER
    assert client.get_version() == "2.479"
    assert client.get_info()["mode"] == "NORMAL"
    assert {j["name"] for j in client.get_info()["jobs"]} == {JOB, "platform"}
    assert client.get_job_info("platform/deploy-x")["fullName"] == FOLDER_JOB

    fake.add_job("slow", parameters=PARAMS, queue_seconds=0.3)
    qid = client.build_job("slow", {"ENV": "prod", "VERSION": "2"})
    assert client.build_job("slow", {"ENV": "prod", "VERSION": "2"}) == qid  # Jenkins merges identical items
    waiting = client.get_queue_item(qid)
    assert waiting["_class"] == "hudson.model.Queue$WaitingItem" and "executable" not in waiting
    [item] = client.get_queue_info()
    assert item["task"]["url"] == f"{fake.url}/job/slow/" and "\nENV=prod" in item["params"]
    time.sleep(0.35)
    left = client.get_queue_item(qid)
    assert left["_class"] == "hudson.model.Queue$LeftItem" and left["executable"]["number"] == 1
    build = client.get_build_info("slow", 1)
    assert build["building"] and build["result"] is None
    params = next(a["parameters"] for a in build["actions"] if a.get("parameters"))
    assert {p["name"]: p["value"] for p in params} == {
        "SERVICE": "payments-api",
        "ENV": "prod",
        "DRY_RUN": False,
        "VERSION": "2",
    }
    assert client.get_build_stages("slow", 1)["status"] == "PAUSED_PENDING_INPUT"
    assert "Proceed or Abort" in client.get_build_console_output("slow", 1)
    deep = client.get_job_info("slow", depth=1)
    assert deep["builds"][0]["timestamp"] > 0 and deep["nextBuildNumber"] == 2

    pending_url = f"{fake.url}/job/slow/1/wfapi/pendingInputActions"
    [pending] = client.jenkins_request(requests.Request("GET", pending_url)).json()
    assert pending["id"] == INPUT_ID and pending["abortUrl"] == f"/job/slow/1/input/{INPUT_ID}/abort"
    with pytest.raises(requests.HTTPError):  # @RequirePOST
        client.jenkins_request(
            requests.Request("GET", f"{fake.url}/job/slow/1/input/{INPUT_ID}/proceedEmpty")
        )
    client.jenkins_request(
        requests.Request(
            "POST", f"{fake.url}/job/slow/1/input/{INPUT_ID}/submit", data={"proceed": "Proceed"}
        )
    )
    assert client.get_build_info("slow", 1)["result"] == "SUCCESS"
    with pytest.raises(requests.HTTPError) as settled:  # answering a settled input
        client.jenkins_request(requests.Request("POST", f"{fake.url}/job/slow/1/input/{INPUT_ID}/abort"))
    assert settled.value.response.status_code == 400


# ---------------------------------------------------------------------------------------------------
# The input as Jenkins names it (issue "Never stuck, never silent" §1)

MESSAGE = "Deploy to prod?"
_MD5 = hashlib.md5(MESSAGE.encode()).hexdigest()
MESSAGE_ID = _MD5[:1].upper() + _MD5[1:]  # Jenkins: capitalize(Util.getDigestOf(message))


def test_choose_input_reads_the_id_from_the_build() -> None:
    one = [{"id": MESSAGE_ID}]
    two = [{"id": MESSAGE_ID}, {"id": "Approve-db"}]
    assert choose_input([], None, 12) == (None, None)
    assert choose_input(one, None, 12) == (MESSAGE_ID, None)
    assert choose_input(two, "approve-db", 12) == ("Approve-db", None)  # Jenkins capitalises ids
    assert choose_input(one, "Approve-deploy", 12) == (
        None,
        f"build #12 waits at input `{MESSAGE_ID}`, not the configured `Approve-deploy`",
    )
    target, why = choose_input(two, None, 12)
    assert target is None and why is not None
    assert why.startswith(f"build #12 waits at 2 inputs (`{MESSAGE_ID}`, `Approve-db`)") and "\n" not in why


def paused_without_id(fake: FakeJenkins, acts: JenkinsActivities, job: str = "noid", **more: Any) -> int:
    """A build of a job whose `input message: MESSAGE` has no `id:`, paused at it; its number."""
    fake.add_job(
        job,
        parameters=PARAMS,
        diff_lines=DIFF,
        queue_seconds=0.05,
        input_id=FROM_MESSAGE,
        input_message=MESSAGE,
        **more,
    )
    number = start(acts, job)
    wait_paused(fake, job, number)
    return number


def test_an_input_without_id_is_answered_when_none_is_configured(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    assert MESSAGE_ID == "E00852fe0d8ceae8acd28998fd008071" == jenkins_input_id(MESSAGE)
    # The documented example (pipeline-input-step docs): "Is the build okay?" → Ef95dd500ae6ed3b27b89fb852296d12
    assert jenkins_input_id("Is the build okay?") == "Ef95dd500ae6ed3b27b89fb852296d12"
    number = paused_without_id(fake, acts)
    watched = run(
        acts.watch_input, WatchInputInput(job="noid", number=number, known="not_reached", settle_seconds=0)
    )
    assert (watched.state, watched.pending) == ("pending", True)
    done = run(acts.input_action, InputActionInput(job="noid", number=number, decision="proceed"))
    assert done.done and done.refused is None
    assert [r[1] for r in posts(fake, "/input/")] == [f"/job/noid/{number}/input/{MESSAGE_ID}/proceedEmpty"]
    assert fake.builds("noid")[0]["result"] == "SUCCESS"


def test_a_configured_input_that_is_not_pending_is_said_at_once(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    """The bug: the SRE's approve was accepted, then the worker polled for `Approve-deploy` for good."""
    number = paused_without_id(fake, acts)
    why = f"build #{number} waits at input `{MESSAGE_ID}`, not the configured `Approve-deploy`"
    started = time.monotonic()
    result = run(
        acts.input_action, InputActionInput(job="noid", number=number, input_id=INPUT_ID, decision="proceed")
    )
    assert (result.done, result.refused) == (False, why)
    watched = run(acts.watch_input, WatchInputInput(job="noid", number=number, input_id=INPUT_ID))
    assert (watched.state, watched.detail) == ("unclear", why)
    assert time.monotonic() - started < 3  # at once, not after a poll loop
    assert posts(fake, "/input/") == []  # nothing answered
    assert fake.builds("noid")[0]["state"] == "paused"


def test_several_pending_inputs_and_none_configured(fake: FakeJenkins, acts: JenkinsActivities) -> None:
    number = paused_without_id(fake, acts, "parallel", parallel_inputs=("Deploy the database too?",))
    result = run(acts.input_action, InputActionInput(job="parallel", number=number, decision="proceed"))
    assert not result.done and result.refused and "waits at 2 inputs" in result.refused
    assert posts(fake, "/input/") == []
    # Configured, it answers that one; the other branch still waits (it is not ours to answer).
    other = jenkins_input_id("Deploy the database too?")
    ours = run(
        acts.input_action,
        InputActionInput(job="parallel", number=number, input_id=MESSAGE_ID, decision="proceed"),
    )
    assert ours.done and ours.refused is None
    assert [r[1] for r in posts(fake, "/input/")] == [
        f"/job/parallel/{number}/input/{MESSAGE_ID}/proceedEmpty"
    ]
    watched = run(acts.watch_input, WatchInputInput(job="parallel", number=number, input_id=MESSAGE_ID))
    assert watched.state == "answered" or watched.detail.endswith(
        f"`{other}`, not the configured `{MESSAGE_ID}`"
    )
    # Aborting the build aborts every input it waits at.
    run(acts.abort_build, AbortBuildInput(job="parallel", number=number))
    assert fake.builds("parallel")[0]["result"] == "ABORTED"


def test_watch_input_reports_a_build_that_has_not_reached_its_input(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    fake.add_job("slowplan", parameters=PARAMS, diff_lines=DIFF, queue_seconds=0.05, plan_seconds=3.0)
    number = start(acts, "slowplan")
    started = time.monotonic()
    watched = run(acts.watch_input, WatchInputInput(job="slowplan", number=number, settle_seconds=0.3))
    assert time.monotonic() - started >= 0.3
    assert (watched.state, watched.detail) == (
        "not_reached",
        f"Jenkins build #{number} has not reached its input yet",
    )
    # Told it is not reached yet, the watcher returns once the input waits.
    watched = run(acts.watch_input, WatchInputInput(job="slowplan", number=number, known="not_reached"))
    assert watched.state == "pending"
