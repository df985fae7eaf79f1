"""Slack activities against the fake Slack, through the real slack_sdk WebClient; no Temporal server.

`ActivityEnvironment` runs each sync activity in an activity context. Failure classification is checked
on what a workflow sees: the `ApplicationError`'s type, `non_retryable` and `next_retry_delay`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.request import Request, urlopen

import pytest
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.slack import PERMANENT_ERRORS, SlackActivities
from starter.simulators.slack import FakeSlack, sign_request
from starter.slack_api import make_web_client
from workflows.models import SlackPostInput, SlackUpdateInput, UsergroupInput

pytestmark = pytest.mark.timeout(10)

TOKEN = "xoxb-test-7f3a9c"
BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*deploy* payments to prod"}},
    {
        "type": "actions",
        "block_id": "decide",
        "elements": [
            {"type": "button", "action_id": "approve", "text": {"type": "plain_text", "text": "Approve"}}
        ],
    },
]


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token=TOKEN, users={"U0ALICE": "alice", "U0BOB": "bob", "U0SRE3": "sre3"}) as f:
        yield f


@pytest.fixture
def acts(fake: FakeSlack) -> SlackActivities:
    return SlackActivities(make_web_client(TOKEN, fake.url))


def run(fn: Any, arg: Any) -> Any:
    return ActivityEnvironment().run(fn, arg)


def failure(fn: Any, arg: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        run(fn, arg)
    return info.value


# --------------------------------------------------------------------------------------------------
# Happy paths


def test_post_message_to_a_channel(fake: FakeSlack, acts: SlackActivities) -> None:
    out = run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="deploy started", blocks=BLOCKS))

    assert out.channel == "C0TRIAGE" and out.ts == "1700000000.000100" and not out.reused
    [msg] = fake.messages_to("C0TRIAGE")
    assert (msg["ts"], msg["text"], msg["blocks"], msg["thread_ts"]) == (
        out.ts,
        "deploy started",
        BLOCKS,
        None,
    )
    [req] = fake.calls("chat.postMessage")
    assert req["body"] == {"channel": "C0TRIAGE", "text": "deploy started", "blocks": BLOCKS}


def test_reply_in_thread(fake: FakeSlack, acts: SlackActivities) -> None:
    root = run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="root"))
    reply = run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="step 2", thread_ts=root.ts))

    assert reply.ts > root.ts
    assert [(m["text"], m["thread_ts"]) for m in fake.thread(root.ts)] == [("step 2", root.ts)]
    assert fake.calls("chat.postMessage")[1]["body"]["thread_ts"] == root.ts


def test_dm_by_user_id(fake: FakeSlack, acts: SlackActivities) -> None:
    out = run(acts.post_message, SlackPostInput(channel="U0ALICE", text="you are the SRE"))

    assert out.channel.startswith("D")  # Slack answers with the DM's id
    assert [m["text"] for m in fake.messages_to("U0ALICE")] == ["you are the SRE"]
    assert fake.calls("chat.postMessage")[0]["body"]["channel"] == "U0ALICE"


def test_update_message_replaces_text_and_blocks(fake: FakeSlack, acts: SlackActivities) -> None:
    posted = run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="approve?", blocks=BLOCKS))
    new_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "approved by <@U0BOB>"}}]

    out = run(
        acts.update_message,
        SlackUpdateInput(channel=posted.channel, ts=posted.ts, text="v2", blocks=new_blocks),
    )
    assert (out.channel, out.ts) == (posted.channel, posted.ts)
    assert (fake.message(posted.ts) or {})["blocks"] == new_blocks

    # No blocks: the message becomes plain text, the buttons go away (Slack would keep them otherwise).
    run(acts.update_message, SlackUpdateInput(channel=posted.channel, ts=posted.ts, text="approved"))
    msg = fake.message(posted.ts) or {}
    assert (msg["text"], msg["blocks"]) == ("approved", None)
    assert [h["text"] for h in msg["history"]] == ["approve?", "v2"]
    assert fake.calls("chat.update")[-1]["body"]["blocks"] == []
    assert len(fake.messages) == 1


def test_update_dm_by_user_id_uses_the_dm_channel(fake: FakeSlack, acts: SlackActivities) -> None:
    posted = run(acts.post_message, SlackPostInput(channel="U0BOB", text="approve?"))

    out = run(acts.update_message, SlackUpdateInput(channel="U0BOB", ts=posted.ts, text="done"))

    assert out.channel == posted.channel
    assert fake.calls("chat.update")[0]["body"]["channel"] == posted.channel  # D…, as chat.update needs
    assert (fake.message(posted.ts) or {})["text"] == "done"


def test_update_unknown_ts_is_permanent(fake: FakeSlack, acts: SlackActivities) -> None:
    err = failure(acts.update_message, SlackUpdateInput(channel="C0TRIAGE", ts="1.000001", text="x"))
    assert (err.type, err.non_retryable) == ("SlackError", True)
    assert "message_not_found" in str(err)


def test_usergroup_members(fake: FakeSlack, acts: SlackActivities) -> None:
    fake.set_usergroup("S0SRE", ["U0ALICE", "U0BOB"])

    assert run(acts.usergroup_members, UsergroupInput(usergroup="S0SREGOV")).users == ["U0SRE3"]
    out = run(acts.usergroup_members, UsergroupInput(usergroup="S0SRE"))
    assert (out.usergroup, out.users) == ("S0SRE", ["U0ALICE", "U0BOB"])
    assert fake.calls("usergroups.users.list")[0]["body"] == {"usergroup": "S0SREGOV"}  # a form body

    err = failure(acts.usergroup_members, UsergroupInput(usergroup="S0NOPE"))
    assert (err.type, err.non_retryable, "no_such_subteam" in str(err)) == ("SlackError", True, True)


def test_dedupe_key_posts_once(fake: FakeSlack, acts: SlackActivities) -> None:
    first = run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="root", dedupe_key="wf-1/root"))
    again = run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="root", dedupe_key="wf-1/root"))
    assert (again.ts, again.reused, first.reused) == (first.ts, True, False)

    r1 = run(
        acts.post_message, SlackPostInput(channel="C0TRIAGE", text="a", thread_ts=first.ts, dedupe_key="k")
    )
    r2 = run(
        acts.post_message, SlackPostInput(channel="C0TRIAGE", text="a", thread_ts=first.ts, dedupe_key="k")
    )
    other = run(
        acts.post_message, SlackPostInput(channel="C0TRIAGE", text="b", thread_ts=first.ts, dedupe_key="k2")
    )
    assert r2.ts == r1.ts and r2.reused and other.ts != r1.ts

    dm1 = run(acts.post_message, SlackPostInput(channel="U0ALICE", text="hi", dedupe_key="wf-1/dm"))
    dm2 = run(acts.post_message, SlackPostInput(channel="U0ALICE", text="hi", dedupe_key="wf-1/dm"))
    assert (dm2.ts, dm2.channel, dm2.reused) == (dm1.ts, dm1.channel, True)

    assert len(fake.messages) == 4
    meta = (fake.message(first.ts) or {})["metadata"]
    assert meta == {"event_type": "deployctl_notice", "event_payload": {"dedupe_key": "wf-1/root"}}


# --------------------------------------------------------------------------------------------------
# Failures


def test_invalid_token_is_permanent_and_never_echoed(fake: FakeSlack) -> None:
    bad = SlackActivities(make_web_client("xoxb-wrong-91c2", fake.url))
    err = failure(bad.post_message, SlackPostInput(channel="C0TRIAGE", text="x"))

    assert (err.type, err.non_retryable) == ("SlackError", True)
    assert "invalid_auth" in str(err) and "chat.postMessage" in str(err)
    assert "xoxb-wrong-91c2" not in str(err) + repr(err.details) and TOKEN not in str(err)
    assert err.__cause__ is None  # nothing else (no response dump) travels with the failure
    assert fake.messages == []


def test_missing_token_is_not_authed(fake: FakeSlack) -> None:
    err = failure(
        SlackActivities(make_web_client("", fake.url)).usergroup_members, UsergroupInput(usergroup="S0SREGOV")
    )
    assert (err.type, err.non_retryable, "not_authed" in str(err)) == ("SlackError", True, True)


def test_short_rate_limit_is_retried_inside_the_call(fake: FakeSlack, acts: SlackActivities) -> None:
    fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=0)

    out = run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x"))

    # The client's RateLimitErrorRetryHandler slept Retry-After (+ <1 s jitter) and tried again.
    assert [c["status"] for c in fake.calls("chat.postMessage")] == [429, 200]
    assert [m["ts"] for m in fake.messages] == [out.ts]


def test_long_rate_limit_goes_to_temporal_with_next_retry_delay(
    fake: FakeSlack, acts: SlackActivities
) -> None:
    fake.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=30)

    started = time.monotonic()
    err = failure(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x"))

    assert (err.type, err.non_retryable) == ("SlackRateLimited", False)
    assert err.next_retry_delay == timedelta(seconds=30)
    assert "ratelimited" in str(err)
    assert len(fake.calls("chat.postMessage")) == 1  # no sleeping inside the activity
    assert time.monotonic() - started < 2


def test_rate_limit_still_failing_after_client_retries_is_retryable(
    fake: FakeSlack, acts: SlackActivities
) -> None:
    fake.fail_next("usergroups.users.list", "ratelimited", status=429, retry_after=0, times=3)

    err = failure(acts.usergroup_members, UsergroupInput(usergroup="S0SREGOV"))

    assert (err.type, err.non_retryable) == ("SlackRateLimited", False)
    assert len(fake.calls("usergroups.users.list")) == 3  # first try + max_retry_count=2
    assert err.next_retry_delay is None  # Retry-After: 0 → the retry policy's own backoff


def test_server_error_is_retryable(fake: FakeSlack, acts: SlackActivities) -> None:
    fake.fail_next("chat.postMessage", "internal_error", status=500)

    err = failure(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x"))

    assert (err.type, err.non_retryable, err.next_retry_delay) == ("SlackUnavailable", False, None)
    assert "internal_error" in str(err) and "500" in str(err)
    assert len(fake.calls("chat.postMessage")) == 1  # 5xx is left to Temporal's retry policy
    assert run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x")).ts  # the fault was one-shot


def test_transient_ok_false_code_is_retryable(fake: FakeSlack, acts: SlackActivities) -> None:
    fake.fail_next("chat.update", "fatal_error", status=200)
    posted = run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x"))
    err = failure(acts.update_message, SlackUpdateInput(channel=posted.channel, ts=posted.ts, text="y"))
    assert (err.type, err.non_retryable) == ("SlackUnavailable", False)


def test_channel_not_found_is_permanent(fake: FakeSlack, acts: SlackActivities) -> None:
    err = failure(acts.post_message, SlackPostInput(channel="", text="x"))
    assert (err.type, err.non_retryable, "channel_not_found" in str(err)) == ("SlackError", True, True)

    err = failure(acts.post_message, SlackPostInput(channel="U0NOBODY", text="x"))  # unknown user: no DM
    assert (err.type, err.non_retryable, "channel_not_found" in str(err)) == ("SlackError", True, True)
    assert err.details == ({"method": "chat.postMessage", "error": "channel_not_found", "status": 200},)


@pytest.mark.parametrize("code", sorted(PERMANENT_ERRORS))
def test_permanent_codes_are_not_retried(fake: FakeSlack, acts: SlackActivities, code: str) -> None:
    fake.fail_next("chat.postMessage", code, status=200)
    err = failure(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x"))
    assert (err.type, err.non_retryable, f"failed: {code}" in str(err)) == ("SlackError", True, True)


def test_outage_is_retryable(fake: FakeSlack, acts: SlackActivities) -> None:
    fake.down = True

    err = failure(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x"))

    assert (err.type, err.non_retryable) == ("SlackUnavailable", False)
    assert "http_503" in str(err)  # the HTML error page is not mistaken for a Slack error code
    fake.down = False
    assert run(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x")).ts


def test_unreachable_slack_is_retryable() -> None:
    with FakeSlack(token=TOKEN) as gone:
        url = gone.url  # a port nobody listens on once the fake is stopped
    acts = SlackActivities(make_web_client(TOKEN, url, connection_retries=0))

    err = failure(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x"))

    assert (err.type, err.non_retryable) == ("SlackUnavailable", False)
    assert "unreachable" in str(err) and TOKEN not in str(err)


def test_make_web_client_retry_handlers() -> None:
    client = make_web_client(TOKEN, "http://127.0.0.1:9/api")
    rate = next(h for h in client.retry_handlers if isinstance(h, RateLimitErrorRetryHandler))
    conn = next(h for h in client.retry_handlers if isinstance(h, ConnectionErrorRetryHandler))
    assert (rate.max_retry_count, conn.max_retry_count, len(client.retry_handlers)) == (2, 2, 2)
    assert client.base_url == "http://127.0.0.1:9/api/"


# --------------------------------------------------------------------------------------------------
# The fake itself: what the real client sees


def test_fake_speaks_the_web_api(fake: FakeSlack) -> None:
    client = WebClient(token=TOKEN, base_url=fake.url)
    auth = client.auth_test()
    assert (auth["ok"], auth["user_id"], auth["team_id"]) == (True, "U0BOT", "T0FAKE")
    assert client.users_info(user="U0ALICE")["user"]["name"] == "alice"
    assert client.conversations_open(users="U0BOB")["channel"]["id"] == "D0BOB"
    assert client.chat_postEphemeral(channel="C0TRIAGE", user="U0BOB", text="only you")["message_ts"]
    assert fake.ephemerals[0]["user"] == "U0BOB"

    def error_of(call: Any) -> tuple[int, str]:
        with pytest.raises(SlackApiError) as info:
            call()
        return info.value.response.status_code, info.value.response["error"]

    assert error_of(lambda: client.users_info(user="U0NOBODY")) == (200, "user_not_found")
    assert error_of(lambda: client.api_call("chat.teleport")) == (200, "unknown_method")
    assert error_of(lambda: client.chat_update(channel="C0TRIAGE", ts="9.9", text="x")) == (
        200,
        "message_not_found",
    )
    posted = client.chat_postMessage(channel="U0BOB", text="dm")
    # chat.update wants the DM's D… id, not the user id (Slack's docs say so).
    assert error_of(lambda: client.chat_update(channel="U0BOB", ts=posted["ts"], text="x")) == (
        200,
        "channel_not_found",
    )
    assert error_of(lambda: WebClient(base_url=fake.url).auth_test()) == (200, "not_authed")
    assert error_of(lambda: WebClient(token="xapp-test", base_url=fake.url).auth_test()) == (
        200,
        "not_allowed_token_type",
    )

    fake.fail_next(None, "ratelimited", status=429, retry_after=7)  # None: whichever method comes next
    with pytest.raises(SlackApiError) as info:
        client.auth_test()
    assert info.value.response.status_code == 429 and info.value.response.headers["Retry-After"] == "7"

    fake.fail_next("auth.test", "internal_error", status=500, times=2)
    assert error_of(client.auth_test) == (500, "internal_error")
    assert error_of(client.auth_test) == (500, "internal_error")
    assert client.auth_test()["ok"]


def test_fake_form_bodies_and_increasing_ts(fake: FakeSlack) -> None:
    form = "channel=C0TRIAGE&text=hello&blocks=" + json.dumps(BLOCKS)
    req = Request(
        fake.url + "chat.postMessage",
        data=form.encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urlopen(req) as resp:
        answer = json.loads(resp.read())
    assert answer["ok"] and fake.messages[0]["blocks"] == BLOCKS

    client = WebClient(token=TOKEN, base_url=fake.url)
    ts = [client.chat_postMessage(channel="C0TRIAGE", text=str(i))["ts"] for i in range(5)]
    assert ts == sorted(ts) and len(set(ts)) == 5 and answer["ts"] < ts[0]


def test_wait_for_message_sees_posts_from_other_threads(fake: FakeSlack) -> None:
    client = WebClient(token=TOKEN, base_url=fake.url)
    threading.Timer(0.1, lambda: client.chat_postMessage(channel="C0X", text="late")).start()
    assert fake.wait_for_message(lambda m: m["text"] == "late", channel="C0X", timeout=3)["channel"] == "C0X"
    with pytest.raises(TimeoutError):
        fake.wait_for_message(lambda m: m["text"] == "never", timeout=0.1)


def test_socket_mode_client_gets_an_envelope_and_acks_it(fake: FakeSlack) -> None:
    received: list[SocketModeRequest] = []

    def on_request(client: SocketModeClient, req: SocketModeRequest) -> None:
        received.append(req)
        client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    web = WebClient(token=TOKEN, base_url=fake.url)
    posted = web.chat_postMessage(channel="C0TRIAGE", text="approve?", blocks=BLOCKS)
    sm = SocketModeClient(app_token="xapp-test", web_client=web, auto_reconnect_enabled=False)
    sm.socket_mode_request_listeners.append(on_request)  # type: ignore[arg-type]
    try:
        sm.connect()
        fake.wait_for_socket(timeout=3)
        payload = fake.block_actions_payload(
            user="U0BOB", action_id="approve", value="wf-1", message_ts=posted["ts"]
        )
        eid = fake.send_envelope(payload)

        assert fake.wait_for_ack(eid, timeout=3) == {"envelope_id": eid}
        [req] = received
        assert (req.type, req.payload["actions"][0]["action_id"], req.payload["user"]["id"]) == (
            "interactive",
            "approve",
            "U0BOB",
        )
        assert (
            req.payload["container"]["message_ts"] == posted["ts"]
            and req.payload["message"]["blocks"] == BLOCKS
        )
        assert fake.calls("apps.connections.open")[0]["status"] == 200
    finally:
        fake.close_sockets()  # else the client's close() waits out its 3 s receive timeout
        sm.close()


def test_bolt_socket_mode_handler_end_to_end(fake: FakeSlack) -> None:
    """The Slack bridge's stack: Bolt (auth.test at start), a button handler that acks and updates."""
    web = WebClient(token=TOKEN, base_url=fake.url)
    app = App(client=web)
    clicked: list[str] = []

    @app.action("approve")
    def on_approve(ack: Any, body: dict[str, Any], client: WebClient) -> None:
        ack()
        clicked.append(body["user"]["id"])
        client.chat_update(
            channel=body["channel"]["id"], ts=body["message"]["ts"], text="approved", blocks=[]
        )

    posted = web.chat_postMessage(channel="C0TRIAGE", text="approve?", blocks=BLOCKS)
    handler = SocketModeHandler(app, "xapp-test")
    try:
        handler.connect()
        fake.wait_for_socket(timeout=3)
        eid = fake.send_envelope(
            fake.block_actions_payload(user="U0BOB", action_id="approve", message_ts=posted["ts"])
        )
        assert fake.wait_for_ack(eid, timeout=3) == {"envelope_id": eid}
        updated = fake.wait_for_message(lambda m: m["text"] == "approved", timeout=3)
        assert (updated["ts"], updated["blocks"], clicked) == (posted["ts"], None, ["U0BOB"])
        assert fake.calls("auth.test")
    finally:
        fake.close_sockets()
        handler.close()


def test_response_url_and_signature_helpers(fake: FakeSlack) -> None:
    posted = WebClient(token=TOKEN, base_url=fake.url).chat_postMessage(channel="C0TRIAGE", text="approve?")
    payload = fake.block_actions_payload(user="U0BOB", action_id="reject", message_ts=posted["ts"])
    req = Request(
        payload["response_url"], data=b'{"text": "rejected"}', headers={"Content-Type": "application/json"}
    )
    with urlopen(req) as resp:
        assert json.loads(resp.read()) == {"ok": True}
    assert fake.response_url_posts[0]["body"] == {"text": "rejected"}

    from slack_sdk.signature import SignatureVerifier

    body = b"payload=%7B%7D"
    headers = sign_request(body, "s3cret", timestamp=1_700_000_000)
    verifier = SignatureVerifier(
        "s3cret", clock=type("C", (), {"now": staticmethod(lambda: 1_700_000_010.0)})()
    )
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body + b"x", headers)
