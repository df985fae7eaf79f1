"""The Slack bridge: a whole com-cloud deploy driven only by button clicks, and what it refuses.

Clicks are posted to the bridge's HTTP endpoint as Slack posts them (form-encoded `payload=<json>`,
signed with the signing secret), or pushed over the fake's Socket Mode websocket. The buttons come from
the workflow's own DMs (a stand-in with the same buttons for people a step does not wait on, whose
clicks must be refused).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from click.testing import CliRunner
from slack_sdk import WebClient
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter import slack_bridge
from starter.cli import cli
from starter.client import send_action, start_deploy
from starter.devstack import wait_for_step
from starter.http_front import EVENTS_PATH, HttpFront, Limits, make_front
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack, sign_request
from starter.slack_api import make_web_client
from starter.slack_bridge import BridgeApp, ReplayCache, create_app
from tests import keys
from tests.conftest import (
    GATE1,
    GATE2,
    OUTSIDER,
    OWNER,
    PARAMS,
    SLACK_TOKEN,
    SRE1,
    Deployment,
    eventually,
)
from workflows import messages, signing
from workflows.models import (
    Action,
    ActionInput,
    Click,
    Cloud,
    DeployResult,
    DeployStatus,
    Outcome,
    Process,
    Step,
)
from workflows.slack_blocks import (
    BLOCK_PREFIX,
    SECTION_LIMIT,
    TRUNCATED,
    action_blocks,
    done_blocks,
    done_text,
    parse_click,
)
from workflows.steps import oow_steps, release_steps

SIGNING_SECRET = "slack-signing-secret-7d41"

# ------------------------------------------------------------------------------------------ fixtures


@dataclass
class Bridge:
    app: BridgeApp
    url: str  # the bridge's POST /slack/events
    web: WebClient  # a client of the fake, to post the stand-in DMs
    slack: FakeSlack


Factory = Callable[[], Awaitable[Client]]


def temporal_factory(env: WorkflowEnvironment) -> Factory:
    """A fresh client on the bridge's own loop, to the session's dev server."""
    target, namespace = env.client.service_client.config.target_host, env.client.namespace

    async def connect() -> Client:
        return await Client.connect(target, namespace=namespace, data_converter=pydantic_data_converter)

    return connect


@pytest.fixture
def make_bridge(
    env: WorkflowEnvironment, deployment: Deployment, slack: FakeSlack
) -> Iterator[Callable[..., Bridge]]:
    started: list[tuple[BridgeApp, HttpFront]] = []

    def make(factory: Factory | None = None, **limits: Any) -> Bridge:
        web = make_web_client(SLACK_TOKEN, slack.url)
        # Token verification on: Bolt calls auth.test at start-up, against the fake.
        app = create_app(deployment.config, factory or temporal_factory(env), web, SIGNING_SECRET)
        front = make_front(app, "127.0.0.1", 0, limits=Limits(**limits))  # what `deployctl slack` serves
        front.start()
        started.append((app, front))
        return Bridge(app, f"http://127.0.0.1:{front.port}{EVENTS_PATH}", web, slack)

    yield make
    for app, front in started:
        front.stop()
        app.close()


@pytest.fixture
def bridge(make_bridge: Callable[..., Bridge]) -> Bridge:
    return make_bridge()


# ------------------------------------------------------------------------------------------- helpers


async def start(client: Client, d: Deployment) -> str:
    wid, _ = await start_deploy(client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER)
    return wid


async def status(client: Client, wid: str) -> DeployStatus:
    return await client.get_workflow_handle(wid).query("status", result_type=DeployStatus)


async def post_buttons(
    b: Bridge,
    user: str,
    st: DeployStatus,
    users: Sequence[str] = (),
) -> str:
    """The ts of the DM with buttons that the workflow sent `user` for the deploy's current step.

    Someone the step does not wait on gets no such DM; for them (a forwarded or stale button) a stand-in
    DM with the same buttons is posted, so their click can be tried too."""
    if user in st.waiting_on:
        return await own_dm(b.slack, user, st)
    text = f"<@{user}> `{st.workflow_id}` waits on you at `{st.step.value}`"
    detail = f"```\n{st.build.diff}```" if st.step is Step.DIFF_VALIDATION and st.build.diff else ""
    blocks = action_blocks(
        text,
        st.workflow_id,
        st.step,
        st.allowed_actions,
        detail,
        users,
        diff_sha256=st.build.diff_sha256 if st.step is Step.DIFF_VALIDATION else None,
    )
    return str(b.web.chat_postMessage(channel=user, text=text, blocks=blocks)["ts"])


async def own_dm(slack: FakeSlack, user: str, st: DeployStatus, timeout: float = 10.0) -> str:
    """The workflow's own DM to `user` asking for the current step, found by its buttons' values."""
    wanted = f'"w":"{st.workflow_id}","s":"{st.step.value}"'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in reversed(slack.messages_to(user)):
            blocks = m["blocks"] or []
            values = [
                (e.get("value") or "") + (blk.get("block_id") or "")
                for blk in blocks
                if blk["type"] == "actions"
                for e in blk["elements"]
            ]
            if any(wanted in v for v in values):
                return str(m["ts"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"the workflow sent {user} no DM with buttons for {st.step.value}")


def click_payload(slack: FakeSlack, user: str, ts: str, action: Action, sre: str | None = None) -> dict:
    """The block_actions payload Slack sends when `user` clicks `action` (or picks `sre`) on message ts."""
    message = slack.message(ts)
    assert message is not None
    # A button still on screen, or one the message had before an update took it away (a stale click).
    versions = [message["blocks"] or [], *[v["blocks"] or [] for v in reversed(message["history"])]]
    for block in (b for blocks in versions for b in blocks):
        for element in block.get("elements", []) if block["type"] == "actions" else []:
            if element["action_id"] != f"deployctl:{action.value}":
                continue
            payload = slack.block_actions_payload(
                user=user,
                action_id=element["action_id"],
                message_ts=ts,
                value=element.get("value", ""),
                block_id=block.get("block_id"),
            )
            if element["type"] == "users_select":
                clicked = payload["actions"][0]
                payload["actions"][0] = {
                    "type": "users_select",
                    "action_id": element["action_id"],
                    "block_id": block["block_id"],
                    "selected_user": sre,
                    "action_ts": clicked["action_ts"],
                }
            return payload
    raise AssertionError(f"no {action.value} element in message {ts}")


def form(payload: dict) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


async def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, content=body, headers=headers)


async def click(b: Bridge, slack: FakeSlack, user: str, ts: str, action: Action, sre: str | None = None):
    body = form(click_payload(slack, user, ts, action, sre))
    response = await post(b.url, body, sign_request(body, SIGNING_SECRET))
    assert response.status_code == 200, response.text
    return body


async def ephemeral(slack: FakeSlack, user: str, wid: str, says: str) -> dict:
    def find() -> dict | None:
        return next(
            (e for e in slack.ephemerals if e["user"] == user and wid in e["text"] and says in e["text"]),
            None,
        )

    return await eventually(find, timeout=15)


def ephemerals_about(slack: FakeSlack, wid: str) -> list[dict]:
    return [e for e in slack.ephemerals if wid in e["text"]]


def said(slack: FakeSlack, ts: str, prefix: str) -> bool:
    """The message was updated, and every update (the bridge's at once, the workflow's) says `prefix…`."""
    texts = [u["body"]["text"] for u in updates_of(slack, ts)]
    return bool(texts) and all(t.startswith(prefix) for t in texts)


def updates_of(slack: FakeSlack, ts: str) -> list[dict]:
    return [r for r in slack.calls("chat.update") if r["body"].get("ts") == ts]


def accepted(st: DeployStatus) -> list[tuple[str, str, str, str]]:
    return [
        (e.step.value, e.action, e.actor, e.channel)
        for e in st.audit
        if e.accepted and e.actor != "deployctl"
    ]


def slash_body(slack: FakeSlack, user: str, text: str) -> tuple[bytes, str]:
    url = f"http://127.0.0.1:{slack.port}/actions/T0FAKE/cmd/{uuid.uuid4().hex}"
    body = urlencode(
        {
            "token": "deprecated",
            "team_id": "T0FAKE",
            "channel_id": "C0TRIAGE",
            "user_id": user,
            "command": "/deploy",
            "text": text,
            "response_url": url,
            "trigger_id": f"1.T0FAKE.{uuid.uuid4().hex}",
            "api_app_id": "A0FAKE",
        }
    ).encode()
    return body, url


async def ask_status(b: Bridge, slack: FakeSlack, user: str, about: str) -> str:
    """`/deploy status <about>` as `user`: the ephemeral answer's text."""
    body, url = slash_body(slack, user, f"status {about}")
    response = await post(b.url, body, sign_request(body, SIGNING_SECRET))
    assert response.status_code == 200
    answer = await response_posted(slack, url)
    assert answer["response_type"] == "ephemeral"
    return str(answer["text"])


async def response_posted(slack: FakeSlack, url: str) -> dict:
    path = url.split(f":{slack.port}", 1)[1]
    return await eventually(
        lambda: next((p["body"] for p in slack.response_url_posts if p["path"] == path), None), timeout=15
    )


# -------------------------------------------------------------------------------- the whole process


async def test_whole_deploy_by_clicks(
    client: Client,
    deployment: Deployment,
    worker: None,
    bridge: Bridge,
    slack: FakeSlack,
    jenkins: FakeJenkins,
):
    d = deployment
    wid = await start(client, d)
    st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    ts_gate1 = await post_buttons(bridge, GATE1, st)
    ts_gate2 = await post_buttons(bridge, GATE2, st)
    ts_owner = await post_buttons(bridge, OWNER, st)

    # Requests Slack did not sign are refused with 401 before anything reaches Temporal.
    body = form(click_payload(slack, GATE1, ts_gate1, Action.APPROVE))
    forged = sign_request(body, "not-the-signing-secret")
    stale = sign_request(body, SIGNING_SECRET, timestamp=int(time.time()) - 6 * 60)
    unsigned = {"Content-Type": "application/x-www-form-urlencoded"}
    outsider_body = form(click_payload(slack, OUTSIDER, ts_gate1, Action.APPROVE))
    tampered_body = outsider_body.replace(OUTSIDER.encode(), GATE1.encode())
    tampered = sign_request(outsider_body, SIGNING_SECRET)
    for sent, headers in ((body, forged), (body, stale), (body, unsigned), (tampered_body, tampered)):
        response = await post(bridge.url, sent, headers)
        assert response.status_code == 401
    after = await status(client, wid)
    assert after.step is Step.PCCR_REVIEW and after.audit == st.audit
    assert not bridge.app.temporal.connected  # the bridge never even connected to Temporal
    assert updates_of(slack, ts_gate1) == [] and ephemerals_about(slack, wid) == []

    # A wrong user's click: an ephemeral with the reason; the deploy does not change.
    await click(bridge, slack, OWNER, ts_owner, Action.APPROVE)
    note = await ephemeral(slack, OWNER, wid, "separation of duties")
    assert note["channel"] == "D" + OWNER[1:]
    assert (await status(client, wid)).audit == st.audit
    assert updates_of(slack, ts_owner) == []

    # The gatekeeper approves: the buttons give way to who did what, when.
    approve_body = await click(bridge, slack, GATE1, ts_gate1, Action.APPROVE)
    await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE2)
    done = await eventually(lambda: slack.message(ts_gate1)["history"] and slack.message(ts_gate1))
    assert done["text"].startswith(f"✅ <@{GATE1}> approved at pccr_review · ")
    assert done["text"].endswith(" UTC")
    assert all(b["type"] != "actions" for b in done["blocks"])
    assert done["blocks"][-1]["text"]["text"] == done["text"]

    # Slack retries the same click (re-signed, so not a replay the bridge drops): it acts once.
    resigned = sign_request(approve_body, SIGNING_SECRET, timestamp=int(time.time()) + 7)
    response = await post(bridge.url, approve_body, resigned)
    assert response.status_code == 200
    await ephemeral(slack, GATE1, wid, "stale step: the deploy is at sre_assignment, not pccr_review")
    st = await status(client, wid)
    assert [a for a in accepted(st) if a[0] == "pccr_review" and a[1] != "start"] == [
        ("pccr_review", "approve", GATE1, "slack")
    ]
    assert said(
        slack, ts_gate1, f"✅ <@{GATE1}> approved at pccr_review"
    )  # the bridge and the workflow agree

    # An old button for a step that has passed acts on nothing.
    await click(bridge, slack, GATE2, ts_gate2, Action.APPROVE)
    await ephemeral(slack, GATE2, wid, "stale step: the deploy is at sre_assignment, not pccr_review")
    # (GATE2's own DM was closed by the workflow: it says GATE1 approved, and never that GATE2 did.)
    await eventually(lambda: said(slack, ts_gate2, f"✅ <@{GATE1}> approved at pccr_review"))

    # Assign through the users menu: a non-SRE is refused, then the SRE is named.
    ts_assign = await post_buttons(bridge, GATE2, st, users=["U0SRE1", "U0SRE2"])
    await click(bridge, slack, GATE2, ts_assign, Action.ASSIGN, sre=OUTSIDER)
    await ephemeral(slack, GATE2, wid, f"{OUTSIDER} is not in sre")
    await click(bridge, slack, GATE2, ts_assign, Action.ASSIGN, sre=SRE1)
    st = await wait_for_step(client, wid, Step.CLEARANCE, SRE1)
    assert st.sre == SRE1
    await eventually(lambda: f"assigned <@{SRE1}> as the SRE" in slack.message(ts_assign)["text"])

    # The SRE clears the trigger with a double click: one action, one ephemeral for the second.
    ts_clear = await post_buttons(bridge, SRE1, st)
    payloads = [form(click_payload(slack, SRE1, ts_clear, Action.APPROVE)) for _ in range(2)]
    responses = await asyncio.gather(
        *(post(bridge.url, p, sign_request(p, SIGNING_SECRET)) for p in payloads)
    )
    assert [r.status_code for r in responses] == [200, 200]
    st = await wait_for_step(client, wid, Step.TRIGGER, OWNER)
    second = await eventually(lambda: [e for e in ephemerals_about(slack, wid) if e["user"] == SRE1])
    assert len(second) == 1
    assert "takes no action right now" in second[0]["text"] or "stale step" in second[0]["text"]
    assert [a for a in accepted(st) if a[0] == "clearance"] == [("clearance", "approve", SRE1, "slack")]
    await eventually(lambda: said(slack, ts_clear, f"✅ <@{SRE1}> "))

    # The owner triggers the job, then confirms its diff; the SRE approves the deploy.
    await click(bridge, slack, OWNER, await post_buttons(bridge, OWNER, st), Action.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=30)
    ts_diff = await post_buttons(bridge, OWNER, st)
    shown = slack.message(ts_diff)["blocks"][1]["text"]["text"]
    assert st.build.diff and messages.slack_code(st.build.diff) in shown  # as text (SPEC §10)
    await click(bridge, slack, OWNER, ts_diff, Action.VALIDATE_DIFF)
    st = await wait_for_step(client, wid, Step.DEPLOY_APPROVAL, SRE1, timeout=30)
    ts_deploy = await post_buttons(bridge, SRE1, st)
    deploy_body = await click(bridge, slack, SRE1, ts_deploy, Action.APPROVE)
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()

    assert result.outcome is Outcome.SUCCEEDED
    builds = jenkins.builds(d.job)
    assert len(builds) == 1 and builds[0]["params"] == PARAMS and builds[0]["result"] == "SUCCESS"
    final = await status(client, wid)
    assert accepted(final) == [
        ("pccr_review", "start", OWNER, "cli"),
        ("pccr_review", "approve", GATE1, "slack"),
        ("sre_assignment", "assign", GATE2, "slack"),
        ("clearance", "approve", SRE1, "slack"),
        ("trigger", "trigger", OWNER, "slack"),
        ("diff_validation", "validate_diff", OWNER, "slack"),
        ("deploy_approval", "approve", SRE1, "slack"),
    ]
    # Each click was signed by the bridge, which vouches for the clicker Slack verified (SPEC §9).
    bridge_fp = signing.fingerprint(keys.public(keys.BRIDGE))
    clicks = [e for e in final.audit if e.accepted and e.channel == "slack"]
    assert clicks and all(e.identity == f"slack-bridge:{bridge_fp}" and e.signature for e in clicks)
    assert all(e.payload and e.payload["actor"] == e.actor for e in clicks)
    await eventually(
        lambda: slack.message(ts_deploy)["text"].startswith(f"✅ <@{SRE1}> approved at deploy_approval")
    )

    # A click on a finished deploy is refused, and says so.
    resigned = sign_request(deploy_body, SIGNING_SECRET, timestamp=int(time.time()) + 7)
    response = await post(bridge.url, deploy_body, resigned)
    assert response.status_code == 200
    await ephemeral(slack, SRE1, wid, "is finished; approve changes nothing")

    # /deploy status answers ephemerally through the response_url; /deploy help at once.
    body, url = slash_body(slack, GATE1, f"status {wid}")
    response = await post(bridge.url, body, sign_request(body, SIGNING_SECRET))
    assert response.status_code == 200
    answer = await response_posted(slack, url)
    assert answer["response_type"] == "ephemeral"
    assert wid in answer["text"] and "outcome: *succeeded*" in answer["text"]
    assert f"build #{final.build.number}" in answer["text"]
    body, _ = slash_body(slack, GATE1, "what")
    response = await post(bridge.url, body, sign_request(body, SIGNING_SECRET))
    assert response.status_code == 200
    assert response.json()["response_type"] == "ephemeral"
    assert "/deploy status <workflow id>" in response.json()["text"]


async def test_click_is_acked_before_temporal_answers(
    client: Client, deployment: Deployment, worker: None, make_bridge, slack: FakeSlack, env
):
    """Slack gets its 200 while the Temporal side is still stuck; the click acts once it is free."""
    gate = threading.Event()
    connect = temporal_factory(env)

    async def slow_connect() -> Client:
        await asyncio.get_running_loop().run_in_executor(None, gate.wait, 30)
        return await connect()

    b = make_bridge(slow_connect)
    wid = await start(client, deployment)
    st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    ts = await post_buttons(b, GATE1, st)
    try:
        await click(b, slack, GATE1, ts, Action.APPROVE)  # asserts 200
        assert (await status(client, wid)).step is Step.PCCR_REVIEW and not b.app.temporal.connected
    finally:
        gate.set()
    await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE2)
    await eventually(lambda: said(slack, ts, f"✅ <@{GATE1}> approved"))
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.SRE_ASSIGNMENT))


async def test_socket_mode_click_and_status(
    client: Client, deployment: Deployment, worker: None, env, slack: FakeSlack
):
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    web = make_web_client(SLACK_TOKEN, slack.url)
    app = create_app(deployment.config, temporal_factory(env), web, None)  # no signing secret needed
    handler = SocketModeHandler(app, slack.app_token, web_client=web)
    front = make_front(app, "127.0.0.1", 0)
    front.start()
    try:
        wid = await start(client, deployment)
        st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
        # Without a signing secret, no HTTP request passes (not even one signed with the empty key).
        ts = await post_buttons(Bridge(app, "", web, slack), GATE1, st)
        body = form(click_payload(slack, GATE1, ts, Action.APPROVE))
        url = f"http://127.0.0.1:{front.port}{EVENTS_PATH}"
        assert (await post(url, body, sign_request(body, ""))).status_code == 401
        await asyncio.to_thread(handler.connect)
        await asyncio.to_thread(slack.wait_for_socket)
        ts = web.chat_postMessage(
            channel=GATE1, text="review", blocks=action_blocks("review", wid, st.step, st.allowed_actions)
        )["ts"]
        envelope = slack.send_envelope(click_payload(slack, GATE1, ts, Action.APPROVE))
        ack = await asyncio.to_thread(slack.wait_for_ack, envelope)
        assert ack == {"envelope_id": envelope}
        await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE2)
        await eventually(
            lambda: slack.message(ts)["text"].startswith(f"✅ <@{GATE1}> approved at pccr_review")
        )

        command = {
            "team_id": "T0FAKE",
            "channel_id": "C0TRIAGE",
            "user_id": GATE2,
            "command": "/deploy",
            "text": f"status {wid}",
            "response_url": f"http://127.0.0.1:{slack.port}/actions/T0FAKE/cmd/{uuid.uuid4().hex}",
            "trigger_id": "1.T0FAKE.x",
        }
        envelope = slack.send_envelope(command, type="slash_commands", accepts_response_payload=True)
        await asyncio.to_thread(slack.wait_for_ack, envelope)
        answer = await response_posted(slack, command["response_url"])
        assert answer["response_type"] == "ephemeral"
        assert "step: `sre_assignment`" in answer["text"] and f"<@{GATE2}>" in answer["text"]
        await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.SRE_ASSIGNMENT))
    finally:
        front.stop()
        await asyncio.to_thread(handler.close)
        app.close()


# -------------------------------------------- replays, who sees what (slow clients: test_http_front.py)


async def test_a_replayed_request_reaches_temporal_once(
    client: Client, deployment: Deployment, worker: None, bridge: Bridge, slack: FakeSlack
):
    """The same signed request (same timestamp and signature) posted three times at once: one Update.
    The repeats are answered 200 with `X-Slack-No-Retry: 1` (Slack stops retrying what was acted on)
    and never reach Temporal: no refused duplicates in the audit, no ephemeral to the clicker."""
    wid = await start(client, deployment)
    st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    ts = await post_buttons(bridge, GATE1, st)
    body = form(click_payload(slack, GATE1, ts, Action.APPROVE))
    headers = sign_request(body, SIGNING_SECRET)
    retry = {**headers, "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    responses = await asyncio.gather(
        post(bridge.url, body, headers), post(bridge.url, body, headers), post(bridge.url, body, retry)
    )
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert sorted(r.headers.get("x-slack-no-retry", "") for r in responses) == ["", "1", "1"]
    assert [r.text for r in responses if r.headers.get("x-slack-no-retry")] == ["", ""]
    # The cache answers only what verifies: a different body under the same headers is still a 401.
    forged = body.replace(GATE1.encode(), GATE2.encode())
    assert (await post(bridge.url, forged, headers)).status_code == 401

    await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE2)
    await eventually(lambda: said(slack, ts, f"✅ <@{GATE1}> approved at pccr_review"))
    await asyncio.sleep(1.0)  # time enough for a duplicate to have reached the workflow, had one got through
    st = await status(client, wid)
    from_slack = [(e.step.value, e.action, e.actor, e.accepted) for e in st.audit if e.channel == "slack"]
    assert from_slack == [("pccr_review", "approve", GATE1, True)]
    assert ephemerals_about(slack, wid) == []
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.SRE_ASSIGNMENT))


def test_replay_cache_expiry_bounds_and_threads():
    now = [1_000_000.0]
    cache = ReplayCache(window=300, max_size=3, clock=lambda: now[0])
    assert cache.first("1000000", "v0=a") and not cache.first("1000000", "v0=a")
    assert cache.first("1000000", "v0=b") and cache.first("1000001", "v0=a")  # another signature, time
    now[0] += 290
    assert not cache.first("1000000", "v0=a")  # still fresh enough for Bolt, so still a replay
    # Kept until the request could no longer pass the five-minute check, counted from the later of
    # its timestamp and its arrival (a timestamp ahead of our clock is kept the longer).
    assert cache.first(str(int(now[0]) + 200), "v0=ahead")
    now[0] += 20
    assert cache.first("1000000", "v0=a")  # 310 s on: Bolt refuses it as stale, the cache forgot it
    assert not cache.first(str(int(now[0]) + 180), "v0=ahead")
    for i in range(10):
        cache.first(str(int(now[0])), f"v0={i}")
    assert len(cache) == 3  # bounded: the oldest go first

    cache = ReplayCache()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(cache.first("1", "v0=x"))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]


async def test_status_only_for_the_deploys_people(
    client: Client, deployment: Deployment, worker: None, bridge: Bridge, slack: FakeSlack
):
    wid = await start(client, deployment)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)

    async def ask(user: str, about: str) -> str:
        return await ask_status(bridge, slack, user, about)

    # Someone not in the deploy's roster or groups learns nothing about it, not even that it exists.
    outsider = await ask(OUTSIDER, wid)
    assert "not part of" in outsider and len(outsider.splitlines()) == 1
    for detail in ("pccr_review", "step", "waiting", "PCCR", "<@", "<http"):
        assert detail not in outsider
    nowhere = "deploy-nope-kprod-00000000"
    assert (await ask(OUTSIDER, nowhere)).replace(nowhere, wid) == outsider
    # Its people see it: a gatekeeper (in the roster) and the requester (its code owner).
    for user in (GATE1, OWNER):
        text = await ask(user, wid)
        assert "step: `pccr_review`" in text and f"<@{GATE1}>" in text, (user, text)
    # A member's typo (or a deploy that is gone) gets the same line as everyone: nothing to tell apart.
    assert (await ask(GATE1, nowhere)).replace(nowhere, wid) == outsider
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.PCCR_REVIEW))


async def test_status_while_no_worker_answers(
    client: Client, deployment: Deployment, bridge: Bridge, slack: FakeSlack, monkeypatch
):
    """No worker answers the query: the history still names the requester and the workers' code owners,
    who are told why there is no status; anyone else gets the one line, as for a deploy that is not."""
    from worker import create_worker

    async with create_worker(client, deployment.config, task_queue=deployment.task_queue):
        wid = await start(client, deployment)
        await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    monkeypatch.setattr(slack_bridge, "QUERY_RPC_TIMEOUT", 1.0)
    try:
        owner = await ask_status(bridge, slack, OWNER, wid)
        assert owner.startswith(f":warning: No status for `{wid}` right now: ") and "step" not in owner
        outsider = await ask_status(bridge, slack, OUTSIDER, wid)
        assert outsider == slack_bridge.not_part_text(wid)
    finally:
        await client.get_workflow_handle(wid).terminate("test over")


# ------------------------------------------------------------------------------- blocks and clicks


def _elements(blocks: list[dict]) -> list[dict]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def test_every_step_has_its_buttons():
    labels = {}
    for defn in {*oow_steps(Cloud.COM, True), *oow_steps(Cloud.GOV, True), *release_steps(Cloud.COM, True)}:
        blocks = action_blocks("t", "deploy-x-kprod-1", defn.step, [*defn.actions, Action.CANCEL])
        elements = _elements(blocks)
        assert len(elements) == len(defn.actions)  # one per action; cancel is not a DM button
        for element, action in zip(elements, defn.actions, strict=True):
            assert element["action_id"] == f"deployctl:{action.value}"
            if action is Action.ASSIGN:
                assert element["type"] == "users_select"
                assert element["placeholder"]["text"] == "Pick the SRE"
            else:
                assert json.loads(element["value"]) == {
                    "w": "deploy-x-kprod-1",
                    "s": defn.step.value,
                    "a": action.value,
                }
                assert element["style"] == ("danger" if action is Action.REJECT else "primary")
                labels[(defn.step.value, action.value)] = element["text"]["text"]
    assert labels == {
        ("vp_approval", "approve"): "Approve",
        ("vp_approval", "reject"): "Reject",
        ("pccr_review", "approve"): "Approve",
        ("pccr_review", "reject"): "Reject",
        ("release_acceptance", "approve"): "Approve",
        ("release_acceptance", "reject"): "Reject",
        ("clearance", "approve"): "Clear to trigger",
        ("version_pr_merge", "merge"): "Merge version PR",
        ("trigger", "trigger"): "Trigger deploy job",
        ("diff_validation", "validate_diff"): "Diff is correct",
        ("diff_validation", "reject"): "Reject",
        ("deploy_approval", "approve"): "Approve deploy",
        ("deploy_approval", "reject"): "Reject",
    }


def test_blocks_fit_slack_limits():
    diff = "```\n" + "\n".join(f"~ line {i}: " + "x" * 60 for i in range(200)) + "\n```"
    blocks = action_blocks("*review*", "deploy-x-kprod-1", Step.DIFF_VALIDATION, [Action.VALIDATE_DIFF], diff)
    detail = blocks[1]["text"]["text"]
    assert len(detail) <= SECTION_LIMIT and detail.endswith(TRUNCATED)
    assert detail.count("```") % 2 == 0  # the code block is closed again
    assign = action_blocks("pick", "deploy-x-kprod-1", Step.SRE_ASSIGNMENT, [Action.ASSIGN], users=["U0SRE1"])
    block = next(b for b in assign if b["type"] == "actions")
    assert block["block_id"] == BLOCK_PREFIX + '{"w":"deploy-x-kprod-1","s":"sre_assignment","a":"assign"}'
    assert any(b["type"] == "context" and "<@U0SRE1>" in b["elements"][0]["text"] for b in assign)
    with pytest.raises(ValueError, match="too long"):
        action_blocks("t", "w" * 300, Step.SRE_ASSIGNMENT, [Action.ASSIGN])
    done = done_blocks("✅ done", original="asked")
    assert [b["text"]["text"] for b in done] == ["asked", "✅ done"]


def test_the_merge_button_carries_the_diff_it_shows():
    """SPEC §4, §10: "Merge version PR" is bound to the version PR's diff its DM shows, as "Diff is
    correct" is to the build's; the other buttons of a message carry no diff."""
    blocks = action_blocks(
        "t", "deploy-x-kprod-gov-1", Step.VERSION_PR_MERGE, [Action.MERGE], diff_sha256="ef" * 32
    )
    (merge,) = _elements(blocks)
    assert json.loads(merge["value"]) == {
        "w": "deploy-x-kprod-gov-1",
        "s": "version_pr_merge",
        "a": "merge",
        "d": "ef" * 32,
    }
    review = action_blocks("t", "w", Step.PCCR_REVIEW, [Action.APPROVE, Action.REJECT], diff_sha256="ef" * 32)
    assert all("d" not in json.loads(e["value"]) for e in _elements(review))
    unknown = action_blocks("t", "w", Step.VERSION_PR_MERGE, [Action.MERGE])  # a run from before: no "d"
    assert "d" not in json.loads(_elements(unknown)[0]["value"])


def test_done_text():
    when = datetime(2026, 11, 27, 10, 0, 41, tzinfo=UTC)
    assert done_text("U1", Step.PCCR_REVIEW, Action.APPROVE, when) == (
        "✅ <@U1> approved at pccr_review · 2026-11-27 10:00 UTC"
    )
    assert done_text("U1", Step.SRE_ASSIGNMENT, Action.ASSIGN, when, sre="U2").startswith(
        "✅ <@U1> assigned <@U2> as the SRE at sre_assignment"
    )
    assert done_text("U1", Step.DEPLOY_APPROVAL, Action.REJECT, when).startswith("❌ <@U1> rejected")


def _payload(action: dict, **extra: Any) -> dict:
    return {
        "type": "block_actions",
        "user": {"id": "U0GATE1"},
        "container": {"type": "message", "channel_id": "D0GATE1", "message_ts": "1.2"},
        "response_url": "https://hooks.example/x",
        "actions": [action],
        **extra,
    }


def test_parse_click():
    blocks = action_blocks("t", "deploy-x-kprod-1", Step.PCCR_REVIEW, [Action.APPROVE, Action.REJECT])
    button = _elements(blocks)[1]
    got = parse_click(_payload({**button, "block_id": "b", "action_ts": "1"}))
    assert got == Click(
        workflow_id="deploy-x-kprod-1",
        step=Step.PCCR_REVIEW,
        action=Action.REJECT,
        user_id="U0GATE1",
        channel_id="D0GATE1",
        message_ts="1.2",
        response_url="https://hooks.example/x",
    )
    assign = action_blocks("t", "deploy-x-kprod-1", Step.SRE_ASSIGNMENT, [Action.ASSIGN])[1]
    picked = {"type": "users_select", "action_id": "deployctl:assign", "block_id": assign["block_id"]}
    got = parse_click(_payload({**picked, "selected_user": "U0SRE1"}))
    assert got is not None and got.action is Action.ASSIGN and got.sre == "U0SRE1"
    assert got.step is Step.SRE_ASSIGNMENT
    diff = action_blocks("t", "w", Step.DIFF_VALIDATION, [Action.VALIDATE_DIFF], diff_sha256="ab" * 32)
    got = parse_click(_payload(_elements(diff)[0]))
    assert got is not None and got.diff_sha256 == "ab" * 32

    merge = action_blocks("t", "w", Step.VERSION_PR_MERGE, [Action.MERGE], diff_sha256="cd" * 32)
    got = parse_click(_payload(_elements(merge)[0]))
    assert got is not None and got.action is Action.MERGE and got.diff_sha256 == "cd" * 32

    # Not ours: None.
    assert parse_click({"type": "view_submission"}) is None
    assert parse_click(_payload({"type": "button", "action_id": "other", "value": "x"})) is None
    # Ours but malformed: a one-line reason.
    bad = [
        ({"type": "button", "action_id": "deployctl:approve", "value": "not json"}, "not JSON"),
        ({"type": "button", "action_id": "deployctl:launch", "value": "{}"}, "unknown action"),
        (
            {
                "type": "button",
                "action_id": "deployctl:approve",
                "value": '{"w":"w","s":"nope","a":"approve"}',
            },
            "unknown step",
        ),
        (
            {
                "type": "button",
                "action_id": "deployctl:approve",
                "value": '{"w":"w","s":"trigger","a":"trigger"}',
            },
            "action_id says approve",
        ),
        ({**picked}, "no user was picked"),
        ({**picked, "block_id": "x", "selected_user": "U1"}, "does not start with"),
    ]
    for action, reason in bad:
        with pytest.raises(ValueError, match=reason):
            parse_click(_payload(action))
    with pytest.raises(ValueError, match="names no user"):
        parse_click({**_payload(button), "user": {}})


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_slack_needs_its_secrets(deployment: Deployment):
    runner = CliRunner()
    base = ["--config", str(deployment.config_path), "slack", "--port", "0"]
    out = runner.invoke(cli, base, env={"SLACK_BOT_TOKEN": "", "SLACK_APP_TOKEN": ""})
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        "deployctl: SLACK_BOT_TOKEN is not set: export it in this process's environment "
        "(the Slack app's bot token, xoxb-…)"
    ]
    out = runner.invoke(
        cli, base, env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "", "SLACK_SIGNING_SECRET": ""}
    )
    assert out.exit_code == 2
    assert out.output.strip().splitlines()[0].startswith("deployctl: SLACK_SIGNING_SECRET is not set")
    # Signed actions required and no bridge key: every click would be refused, so it does not start.
    out = runner.invoke(
        cli,
        base,
        env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "DEPLOYCTL_BRIDGE_KEY": ""},
    )
    assert out.exit_code == 2
    assert out.output.strip().splitlines()[0].startswith("deployctl: DEPLOYCTL_BRIDGE_KEY is not set")


async def _by_clicks(client: Client, bridge: Bridge, slack: FakeSlack, wid: str, script) -> None:
    """Each step's person clicks its button in the DM the workflow sent them."""
    for user, step, action, sre in script:
        st = await wait_for_step(client, wid, step, user, timeout=60)
        await click(bridge, slack, user, await own_dm(slack, user, st), action, sre)
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    final = await status(client, wid)
    clicks = [e for e in final.audit if e.accepted and e.actor != "deployctl" and e.action != "start"]
    fp = signing.fingerprint(keys.public(keys.BRIDGE))
    assert len(clicks) == len(script) and all(e.identity == f"slack-bridge:{fp}" for e in clicks)


async def test_a_click_on_the_old_merge_dm_is_refused_after_the_branch_moved(
    client: Client, deployment: Deployment, worker: None, bridge: Bridge, slack: FakeSlack, github
):
    """SPEC §10: the merge button is bound to the version PR's diff its DM shows. After the branch moved
    and the SRE was sent the new diff, a click on the old DM's button (still on screen in another
    Slack client, or clicked before Slack removed it) merges nothing; the new DM's button merges."""
    from tests.conftest import CONFIGS_REPO
    from tests.support import SREG1, start_gov, to_merge

    wid = await start_gov(client, deployment)
    st = await to_merge(client, wid)
    pr = next(p for p in github.pulls(CONFIGS_REPO) if p["head"]["ref"] == f"deployctl/{wid}")
    merges = f"/repos/{CONFIGS_REPO}/pulls/{pr['number']}/merge"

    def merge_calls() -> list[str]:
        return [json.loads(b)["sha"] for m, p, _, b in github.requests if m == "PUT" and p.endswith(merges)]

    old = await own_dm(slack, SREG1, st)
    moved = github.commit_file(
        CONFIGS_REPO, f"deployctl/{wid}", "channel-gov/late.yaml", "x: 1\n", by="mallory"
    )
    await click(bridge, slack, SREG1, old, Action.MERGE)  # GitHub refuses: the head it was shown moved
    await ephemeral(slack, SREG1, wid, "GitHub refused the merge")

    def new_dm() -> str | None:
        ts = [m["ts"] for m in slack.messages_to(SREG1) if m["ts"] != old and moved in (m["text"] or "")]
        return str(ts[-1]) if ts else None

    new = await eventually(new_dm)
    master = github.branches(CONFIGS_REPO)["master"]
    await click(bridge, slack, SREG1, old, Action.MERGE)  # the old DM's button, from its first version
    why = await ephemeral(slack, SREG1, wid, "stale: the version PR's diff changed")
    assert "nothing was merged" in why["text"]
    assert merge_calls() == [pr["head"]["sha"]] and github.branches(CONFIGS_REPO)["master"] == master

    await click(bridge, slack, SREG1, new, Action.MERGE)
    await wait_for_step(client, wid, Step.TRIGGER, SREG1)
    assert merge_calls() == [pr["head"]["sha"], moved]
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.TRIGGER))
    await client.get_workflow_handle(wid).result()


async def test_whole_gov_and_release_deploys_by_clicks(
    client: Client, tmp_path, jenkins: FakeJenkins, slack: FakeSlack, github, secrets, make_bridge
):
    """The gov process (version PR merged by the SRE's click) and a release planned, accepted and run
    in its window, every action a signed click through the bridge."""
    from starter.devstack import release_calendar
    from tests.conftest import make_deployment
    from tests.support import SREG1, start_gov
    from worker import create_worker

    bridge = make_bridge()
    d = make_deployment(
        tmp_path, jenkins, slack, github=github, extra=release_calendar(timedelta(seconds=20))
    )
    async with create_worker(client, d.config, task_queue=d.task_queue):
        gov = await start_gov(client, d)
        rel, _ = await start_deploy(
            client, d.config, Process.RELEASE, d.service, "kstg", dict(PARAMS), None, OWNER
        )
        await _by_clicks(
            client, bridge, slack, gov,
            [
                (GATE1, Step.PCCR_REVIEW, Action.APPROVE, None),
                (GATE1, Step.SRE_ASSIGNMENT, Action.ASSIGN, SREG1),
                (SREG1, Step.VERSION_PR_MERGE, Action.MERGE, None),
                (SREG1, Step.TRIGGER, Action.TRIGGER, None),
                (OWNER, Step.DIFF_VALIDATION, Action.VALIDATE_DIFF, None),
                (SREG1, Step.DEPLOY_APPROVAL, Action.APPROVE, None),
            ],
        )  # fmt: skip
        await _by_clicks(
            client, bridge, slack, rel,
            [
                (OWNER, Step.SRE_ASSIGNMENT, Action.ASSIGN, SRE1),
                (GATE1, Step.RELEASE_ACCEPTANCE, Action.APPROVE, None),
                (SRE1, Step.CLEARANCE, Action.APPROVE, None),
                (OWNER, Step.TRIGGER, Action.TRIGGER, None),
                (OWNER, Step.DIFF_VALIDATION, Action.VALIDATE_DIFF, None),
                (SRE1, Step.DEPLOY_APPROVAL, Action.APPROVE, None),
            ],
        )  # fmt: skip
