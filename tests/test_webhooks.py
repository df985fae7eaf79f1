"""Webhooks (starter/webhooks.py): GitHub's `pull_request` events and Jenkins' notifications become the
Signal `outside_event`, and the open step's watcher reads the real state again at once.

Real servers on 127.0.0.1: the bridge's HTTP front (uvicorn) with the webhook routes mounted, the
session's Temporal dev server, the GitHub and Jenkins simulators. The test worker's watchers poll every
WATCH seconds, so a step that ends within PROMPT seconds was ended by the webhook, not by a poll.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.budget import GITHUB_CAP, TIGHT_FOR, PollSchedule
from activities.github import GithubActivities
from activities.jenkins import JenkinsActivities
from starter.client import build_path, send_action
from starter.devstack import wait_for_step
from starter.http_front import HttpFront, make_front
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from starter.slack_api import make_web_client
from starter.slack_bridge import BridgeApp, create_app
from starter.webhooks import GITHUB_PATH, JENKINS_PATH, TOKEN_HEADER, github_signature, webhook_routes
from tests.conftest import (
    CONFIGS_REPO,
    GITHUB_TOKEN,
    JENKINS_TOKEN,
    OWNER,
    SLACK_TOKEN,
    SRE1,
    Deployment,
    eventually,
    make_deployment,
)
from tests.support import SREG1, act, start_gov, start_oow, status, to_merge, to_trigger
from tests.test_replay import replayer
from tests.test_slack_bridge import SIGNING_SECRET, temporal_factory
from worker import build_activities, create_worker
from workflows import watchers
from workflows.models import (
    OUTSIDE_EVENT,
    WEBHOOK_POLL_CAP,
    Action,
    ActionInput,
    DeployResult,
    Outcome,
    OutsideEvent,
    Step,
)
from workflows.watchers import MAX_RESTARTS

GITHUB_SECRET = "gh-webhook-secret-3f9a"
JENKINS_SECRET = "jenkins-webhook-secret-81cd"
WATCH = 120.0  # seconds between the test worker's watcher polls
PROMPT = 15.0  # a step ended within this long was ended by the webhook (well under WATCH)
WEBHOOKS_ON = "\n[webhooks]\ngithub = true\njenkins = true\n"


@dataclass
class Stack:
    d: Deployment
    url: str  # the bridge's front


@pytest.fixture
def d(
    tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
) -> Deployment:
    return make_deployment(tmp_path, jenkins, slack, github=github, extra=WEBHOOKS_ON)


@pytest_asyncio.fixture
async def slow_worker(client: Client, d: Deployment) -> AsyncIterator[None]:
    """A worker whose watchers poll every WATCH seconds (every other activity as the pool has it)."""
    github = GithubActivities(d.config.github.api_url, GITHUB_TOKEN, watch_interval=WATCH)
    jenkins = JenkinsActivities(
        url=d.config.jenkins.url, user=d.config.jenkins.user, token=JENKINS_TOKEN, watch_interval=WATCH
    )
    acts = [a for a in build_activities(client, d.config) if a.__name__ not in ("watch_pr", "watch_input")]
    async with create_worker(
        client, d.config, task_queue=d.task_queue, activities=[*acts, github.watch_pr, jenkins.watch_input]
    ):
        yield


@pytest.fixture
def front(env: WorkflowEnvironment, d: Deployment, slack: FakeSlack) -> Iterator[str]:
    """The bridge's HTTP front with the webhook routes, both secrets set; its base URL."""
    app, server = _bridge(
        env, d, slack, {"GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "JENKINS_WEBHOOK_SECRET": JENKINS_SECRET}
    )
    yield f"http://127.0.0.1:{server.port}"
    server.stop()
    app.close()


def _bridge(
    env: WorkflowEnvironment, d: Deployment, slack: FakeSlack, secrets: dict[str, str]
) -> tuple[BridgeApp, HttpFront]:
    web = make_web_client(SLACK_TOKEN, slack.url)
    app = create_app(d.config, temporal_factory(env), web, SIGNING_SECRET)
    server = make_front(app, "127.0.0.1", 0, extra_routes=webhook_routes(d.config, app.temporal, secrets))
    server.start()
    return app, server


def pr_event(
    wid: str, number: int, action: str = "closed", merged: bool = True, repo: str = CONFIGS_REPO
) -> bytes:
    """A `pull_request` delivery's body, in the shape GitHub sends (the fields deployctl reads, and some)."""
    return json.dumps(
        {
            "action": action,
            "number": number,
            "pull_request": {
                "number": number,
                "state": "closed" if action == "closed" else "open",
                "merged": merged,
                "head": {"ref": f"deployctl/{wid}", "sha": "0" * 40},
                "base": {"ref": "master"},
            },
            "repository": {"full_name": repo},
            "sender": {"login": "octocat"},
        }
    ).encode()


async def post_github(
    url: str,
    body: bytes,
    event: str = "pull_request",
    signature: str | None = "good",
    delivery: str | None = None,
) -> httpx.Response:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "User-Agent": "GitHub-Hookshot/test",
    }
    if signature == "good":
        headers["X-Hub-Signature-256"] = github_signature(GITHUB_SECRET, body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    async with httpx.AsyncClient() as http:
        return await http.post(url + GITHUB_PATH, content=body, headers=headers)


async def post_jenkins(url: str, body: dict | bytes, token: str | None = JENKINS_SECRET) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers[TOKEN_HEADER] = token
    async with httpx.AsyncClient() as http:
        return await http.post(url + JENKINS_PATH, content=content, headers=headers)


async def outside_signals(client: Client, wid: str) -> int:
    """How many `outside_event` Signals the deploy's history holds."""
    count = 0
    async for e in client.get_workflow_handle(wid).fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            count += e.workflow_execution_signaled_event_attributes.signal_name == OUTSIDE_EVENT
    return count


async def scheduled_inputs(client: Client, wid: str, activity: str) -> list[dict]:
    """The inputs of every `activity` the deploy scheduled, as JSON."""
    found = []
    async for e in client.get_workflow_handle(wid).fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = e.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == activity:
                found.append(json.loads(attrs.input.payloads[0].data))
    return found


def pr_reads(github: FakeGitHub, number: int) -> int:
    return sum(1 for r in list(github.requests) if r[0] == "GET" and r[1].endswith(f"/pulls/{number}"))


async def gov_at_merge(client: Client, d: Deployment) -> tuple[str, int]:
    wid = await start_gov(client, d)
    st = await to_merge(client, wid)
    assert st.version_pr is not None
    return wid, int(st.version_pr.rsplit("/", 1)[1])


# ---------------------------------------------------------------------------------------------- tests


def test_a_build_is_matched_by_the_path_jenkins_gives_its_url():
    assert build_path("deploy-x", 12) == "/job/deploy-x/12/"
    assert build_path("platform/deploy x", 3) == "/job/platform/job/deploy%20x/3/"


def test_the_fallback_stretches_after_the_first_minute_only_when_webhooks_are_configured():
    github = PollSchedule(first=15.0, cap=GITHUB_CAP)
    assert github.stretched(None) == github  # no webhooks: one request a minute after the first
    assert github.pause(10_000.0) == GITHUB_CAP
    stretched = github.stretched(300.0)
    assert stretched.pause(TIGHT_FOR - 1) == 15.0  # the first minute stays tight
    assert stretched.pause(TIGHT_FOR) == 300.0 and stretched.pause(10_000.0, requests=2) == 300.0
    assert stretched.requests_per_minute() == 0.2  # one request per 5 minutes
    slow = PollSchedule(first=600.0, cap=GITHUB_CAP, max_gap=900.0).stretched(300.0)
    assert slow.pause(10_000.0) == 600.0  # a stretch never shortens a pause


async def test_a_bad_or_missing_signature_is_refused_and_signals_nothing(
    client: Client, d: Deployment, slow_worker: None, front: str, github: FakeGitHub
):
    wid, number = await gov_at_merge(client, d)
    await asyncio.sleep(1.0)  # the watcher's first read is done; its next is WATCH s away
    github.merge_directly(CONFIGS_REPO, number, by="octocat")
    body = pr_event(wid, number)
    for signature in (None, "sha256=" + "0" * 64, github_signature("another-secret", body), "sha1=abc"):
        r = await post_github(front, body, signature=signature)
        assert r.status_code == 401, (signature, r.text)
    r = await post_github(
        front, body[:-1] + b"!", signature=github_signature(GITHUB_SECRET, body)
    )  # tampered
    assert r.status_code == 401
    r = await post_github(front, b"{not json", signature="good")
    assert r.status_code == 400
    for token in (None, "", "wrong"):
        r = await post_jenkins(front, {"job": d.job, "build": 1, "event": "input_answered"}, token=token)
        assert r.status_code == 401
    assert (await post_jenkins(front, b"[1, 2]")).status_code == 400
    await asyncio.sleep(1.0)
    assert await outside_signals(client, wid) == 0
    st = await status(client, wid)
    assert st.step is Step.VERSION_PR_MERGE  # nothing told the watcher; its next poll is WATCH s away
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.VERSION_PR_MERGE))
    await client.get_workflow_handle(wid).result()


async def test_a_merge_on_github_is_noticed_at_once_through_the_webhook(
    client: Client, d: Deployment, slow_worker: None, front: str, github: FakeGitHub
):
    wid, number = await gov_at_merge(client, d)
    await asyncio.sleep(1.0)  # the watcher's first read is done; its next is WATCH s away
    github.merge_directly(CONFIGS_REPO, number, by="octocat")
    delivery = str(uuid.uuid4())
    r = await post_github(front, pr_event(wid, number), delivery=delivery)
    assert r.status_code == 200 and r.text.startswith("signalled"), r.text
    st = await wait_for_step(client, wid, Step.TRIGGER, SREG1, timeout=PROMPT)
    noticed = [e for e in st.audit if e.action == "merged_on_github"]
    assert len(noticed) == 1 and noticed[0].actor == "octocat" and noticed[0].channel == "github"
    (note,) = [e for e in st.audit if e.action == "outside_event"]
    assert note.step is Step.VERSION_PR_MERGE and "reading the version PR on GitHub again now" in (
        note.reason or ""
    )
    # The same delivery again (GitHub's redelivery, or a replay) sends nothing.
    r = await post_github(front, pr_event(wid, number), delivery=delivery)
    assert r.status_code == 200 and r.text.startswith("already seen")
    assert await outside_signals(client, wid) == 1
    # With [webhooks] github = true the watcher's fallback stretches to WEBHOOK_POLL_CAP.
    assert {i.get("poll_cap") for i in await scheduled_inputs(client, wid, "watch_pr")} == {WEBHOOK_POLL_CAP}
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.TRIGGER))
    handle = client.get_workflow_handle(wid, result_type=DeployResult)
    assert (await handle.result()).outcome is Outcome.CANCELLED
    await replayer().replay_workflow(await handle.fetch_history())  # the restart path replays


async def test_a_signed_event_for_a_pr_that_is_not_merged_costs_one_read_and_changes_nothing(
    client: Client, d: Deployment, slow_worker: None, front: str, github: FakeGitHub
):
    """The event says "merged"; GitHub says open. The workflow believes GitHub: one extra read, no step."""
    wid, number = await gov_at_merge(client, d)
    await asyncio.sleep(1.0)  # the watcher's first read is done; its next is WATCH s away
    before = pr_reads(github, number)
    r = await post_github(front, pr_event(wid, number, merged=True))
    assert r.status_code == 200 and r.text.startswith("signalled"), r.text
    await eventually(lambda: pr_reads(github, number) > before, timeout=PROMPT)
    await asyncio.sleep(2.0)
    assert pr_reads(github, number) == before + 1
    st = await status(client, wid)
    assert st.step is Step.VERSION_PR_MERGE and st.outcome is None
    assert not [e for e in st.audit if e.action in ("merged_on_github", "closed_on_github")]
    assert SREG1 in st.waiting_on
    await act(client, wid, Action.MERGE, SREG1, Step.VERSION_PR_MERGE)  # the SRE still merges as usual
    await wait_for_step(client, wid, Step.TRIGGER, SREG1)
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.TRIGGER))
    await client.get_workflow_handle(wid).result()


async def test_ping_and_events_that_do_not_matter_send_nothing(
    client: Client, d: Deployment, slow_worker: None, front: str, github: FakeGitHub
):
    wid, number = await gov_at_merge(client, d)
    r = await post_github(
        front, json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1}).encode(), event="ping"
    )
    assert (r.status_code, r.text) == (200, "pong\n")
    for body, event in (
        (pr_event(wid, number, action="opened"), "pull_request"),
        (pr_event(wid, number, repo="someone/else"), "pull_request"),
        (pr_event("not-a-deploy", number), "pull_request"),
        (json.dumps({"ref": "refs/heads/master"}).encode(), "push"),
    ):
        r = await post_github(front, body, event=event)
        assert r.status_code == 200 and r.text.startswith("ignored"), r.text
    r = await post_jenkins(front, {"job": d.job, "build": 1, "event": "started"})
    assert r.status_code == 200 and r.text.startswith("ignored")
    r = await post_jenkins(front, {"job": d.job, "build": 999, "event": "finished"})
    assert r.status_code == 200 and r.text.startswith("no deploy waits")
    # `${env.BUILD_NUMBER}` quoted by a pipeline is decimal text: taken as the number (docs/jenkins.md)
    r = await post_jenkins(front, {"job": d.job, "build": "999", "event": "finished"})
    assert r.status_code == 200 and r.text.startswith("no deploy waits")
    assert await outside_signals(client, wid) == 0
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.VERSION_PR_MERGE))
    await client.get_workflow_handle(wid).result()


async def test_an_input_answered_in_jenkins_is_noticed_at_once_through_the_notification(
    client: Client, d: Deployment, slow_worker: None, front: str, jenkins: FakeJenkins
):
    wid = await start_oow(client, d)
    await to_trigger(client, wid, SRE1)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=30)
    await act(
        client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
    )
    st = await wait_for_step(client, wid, Step.DEPLOY_APPROVAL, SRE1)
    number = st.build.number
    assert number is not None
    await asyncio.sleep(1.0)  # the watcher's first read is done; its next is WATCH s away
    jenkins.answer_input(d.job, number, proceed=True, by="someone-in-jenkins")
    r = await post_jenkins(front, {"job": d.job, "build": number, "event": "input_answered"})
    assert r.status_code == 200 and r.text.startswith(f"signalled: {wid}"), r.text

    async def past_approval() -> bool:
        st = await status(client, wid)
        return st.step is Step.DEPLOYING or st.outcome is not None

    await eventually(past_approval, timeout=PROMPT)
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED
    final = await status(client, wid)
    noticed = [e for e in final.audit if e.action == "answered_in_jenkins"]
    assert len(noticed) == 1 and noticed[0].step is Step.DEPLOY_APPROVAL
    await replayer().replay_workflow(await client.get_workflow_handle(wid).fetch_history())
    assert {i.get("poll_cap") for i in await scheduled_inputs(client, wid, "watch_input")} == {
        WEBHOOK_POLL_CAP
    }


async def test_an_event_at_a_step_without_a_watcher_is_noted_and_ignored(
    client: Client, d: Deployment, slow_worker: None
):
    wid = await start_oow(client, d)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, "U0GATE1")
    handle = client.get_workflow_handle(wid)
    await handle.signal(OUTSIDE_EVENT, OutsideEvent(system="github", detail="pull_request closed #1"))
    await handle.signal(OUTSIDE_EVENT, {"system": "gitlab", "detail": "x" * 5000})  # not an event: noted
    st = await eventually(lambda: _notes(client, wid, 2))
    assert "nothing at pccr_review watches github; ignored" in (st[0].reason or "")
    assert not st[1].accepted and "outside event refused: system" in (st[1].reason or "")
    assert (await status(client, wid)).step is Step.PCCR_REVIEW
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.PCCR_REVIEW))
    await handle.result()


async def test_a_route_without_its_secret_answers_404(
    env: WorkflowEnvironment, d: Deployment, slack: FakeSlack
):
    app, server = _bridge(env, d, slack, {})
    try:
        url = f"http://127.0.0.1:{server.port}"
        assert (await post_github(url, pr_event("deploy-x", 1))).status_code == 404
        assert (await post_jenkins(url, {"job": "j", "build": 1, "event": "finished"})).status_code == 404
    finally:
        server.stop()
        app.close()


async def _notes(client: Client, wid: str, n: int):
    st = await status(client, wid)
    notes = [e for e in st.audit if e.action == "outside_event"]
    return notes if len(notes) >= n else None


async def test_a_flood_of_events_restarts_the_watcher_a_bounded_number_of_times(
    client: Client, d: Deployment, slow_worker: None
):
    wid, number = await gov_at_merge(client, d)
    handle = client.get_workflow_handle(wid)
    for i in range(MAX_RESTARTS + 5):
        await handle.signal(OUTSIDE_EVENT, OutsideEvent(system="github", detail=f"flood {i}"))
    notes = await eventually(lambda: _notes(client, wid, MAX_RESTARTS + 1))
    assert len(notes) == MAX_RESTARTS + 1  # one per restart, then one saying the rest are ignored
    assert "later ones are ignored here" in (notes[-1].reason or "")
    # Events that land together coalesce (a watcher cancelled before it ran schedules nothing): at most
    # one new watch_pr per restart.
    assert 2 <= len(await scheduled_inputs(client, wid, "watch_pr")) <= 1 + MAX_RESTARTS
    st = await status(client, wid)
    assert st.step is Step.VERSION_PR_MERGE and SREG1 in st.waiting_on
    await act(client, wid, Action.MERGE, SREG1, Step.VERSION_PR_MERGE)  # still merges as usual
    await wait_for_step(client, wid, Step.TRIGGER, SREG1)
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.TRIGGER))
    await handle.result()
    await replayer().replay_workflow(await handle.fetch_history())


async def _end_of_a_dropped_watcher(drop: bool) -> list[str]:
    """What asyncio reports of a watcher cancelled and then forgotten, on a loop of its own: the task
    ends with its activity's cancellation (an ActivityError in a workflow; a RuntimeError here)."""
    import gc

    reported: list[str] = []

    async def watcher() -> bool:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise RuntimeError("Activity cancelled") from None
        return True

    loop = asyncio.get_running_loop()
    before = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: reported.append(ctx["message"]))
    try:
        task = asyncio.create_task(watcher())
        await asyncio.sleep(0)
        if drop:
            watchers.drop(task)
        else:
            task.cancel()
        await asyncio.sleep(0.01)
        assert task.done()
        del task
        gc.collect()
    finally:
        loop.set_exception_handler(before)
    return reported


async def test_a_replaced_watcher_ends_without_an_unread_exception():
    """on_outside_event replaces the watcher without awaiting the old one; `drop` takes its end."""
    assert await _end_of_a_dropped_watcher(drop=False) == ["Task exception was never retrieved"]
    assert await _end_of_a_dropped_watcher(drop=True) == []
