"""The Slack simulator refuses what Slack refuses (issue 14, 5b), through the real slack_sdk WebClient;
and what deployctl draws (workflows/slack_blocks.py) stays inside those limits.

Each limit: one message just inside it is accepted, one just past it is refused with `invalid_blocks`
and a `response_metadata.messages` line naming the place. The limits and their sources: docs/slack.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.request import Request, urlopen

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from starter.simulators.block_kit import block_kit_errors
from starter.simulators.slack import FakeSlack
from workflows import slack_blocks
from workflows.models import Action, Step

pytestmark = pytest.mark.timeout(10)

TOKEN = "xoxb-limits"
CHANNEL = "C0LIMITS"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(token=TOKEN) as f:
        yield f


@pytest.fixture
def web(fake: FakeSlack) -> WebClient:
    return WebClient(token=TOKEN, base_url=fake.url)


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(text: str = "Go", value: str = "v", **extra: Any) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": "a",
        "value": value,
    } | extra


def actions(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(elements)}


CONFIRM = {
    "title": {"type": "plain_text", "text": "Sure?"},
    "text": {"type": "mrkdwn", "text": "It acts."},
    "confirm": {"type": "plain_text", "text": "Yes"},
    "deny": {"type": "plain_text", "text": "No"},
}

# (name, blocks just inside the limit, blocks just past it, the JSON pointer Slack names)
LIMITS: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]], str]] = [
    ("50 blocks", [section("x")] * 50, [section("x")] * 51, "/blocks"),
    ("section text 3,000", [section("x" * 3000)], [section("x" * 3001)], "/blocks/0/text/text"),
    (
        "section fields: 10",
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 10}],
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}],
        "/blocks/0/fields",
    ),
    (
        "section field text 2,000",
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2000}]}],
        [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}],
        "/blocks/0/fields/0/text",
    ),
    (
        "header text 150",
        [{"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}],
        [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
        "/blocks/0/text/text",
    ),
    ("actions: 25 elements", [actions(*[button()] * 25)], [actions(*[button()] * 26)], "/blocks/0/elements"),
    (
        "button text 75",
        [actions(button("b" * 75))],
        [actions(button("b" * 76))],
        "/blocks/0/elements/0/text/text",
    ),
    (
        "button value 2,000",
        [actions(button(value="v" * 2000))],
        [actions(button(value="v" * 2001))],
        "/blocks/0/elements/0/value",
    ),
    (
        "block_id 255",
        [section("x") | {"block_id": "b" * 255}],
        [section("x") | {"block_id": "b" * 256}],
        "/blocks/0/block_id",
    ),
    (
        "confirm text 300",
        [actions(button(confirm=CONFIRM))],
        [actions(button(confirm=CONFIRM | {"text": {"type": "mrkdwn", "text": "t" * 301}}))],
        "/blocks/0/elements/0/confirm/text/text",
    ),
    (
        "context: 10 elements",
        [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10}],
        [{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}],
        "/blocks/0/elements",
    ),
    (
        "known block types only",
        [{"type": "divider"}],
        [{"type": "sectoin", "text": {"type": "mrkdwn", "text": "typo"}}],
        "/blocks/0/type",
    ),
    (
        "text objects are plain_text or mrkdwn",
        [section("x")],
        [{"type": "section", "text": {"type": "markdown", "text": "x"}}],
        "/blocks/0/text/type",
    ),
]


@pytest.mark.parametrize(("name", "inside", "past", "pointer"), LIMITS, ids=[row[0] for row in LIMITS])
def test_each_limit_refused_on_post_and_update(
    web: WebClient,
    fake: FakeSlack,
    name: str,
    inside: list[dict[str, Any]],
    past: list[dict[str, Any]],
    pointer: str,
) -> None:
    posted = web.chat_postMessage(channel=CHANNEL, text=name, blocks=inside)
    assert posted["ok"] and fake.message(posted["ts"])["blocks"] == inside

    before = len(fake.messages)
    with pytest.raises(SlackApiError) as refused:
        web.chat_postMessage(channel=CHANNEL, text=name, blocks=past)
    answer = refused.value.response
    assert answer["error"] == "invalid_blocks"
    messages = answer["response_metadata"]["messages"]
    assert messages and all(m.startswith("[ERROR] ") for m in messages)
    assert any(m.endswith(f"[json-pointer:{pointer}]") for m in messages), messages
    assert len(fake.messages) == before  # nothing posted

    with pytest.raises(SlackApiError) as refused_update:
        web.chat_update(channel=CHANNEL, ts=posted["ts"], text=name, blocks=past)
    assert refused_update.value.response["error"] == "invalid_blocks"
    assert fake.message(posted["ts"])["blocks"] == inside  # unchanged


def test_a_valid_message_is_still_accepted(web: WebClient, fake: FakeSlack) -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Deploy payments"}},
        section("*payments* 1.4.2 to prod"),
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "*job*\npayments-deploy"}]},
        {"type": "divider"},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "SREs: <@U0SRE1>"}]},
        actions(button("Approve", style="primary"), button("Reject", style="danger", confirm=CONFIRM)),
    ]
    posted = web.chat_postMessage(channel=CHANNEL, text="deploy", blocks=blocks)
    assert fake.message(posted["ts"])["blocks"] == blocks
    updated = web.chat_update(channel=CHANNEL, ts=posted["ts"], text="done", blocks=[])
    assert updated["ok"] and fake.message(posted["ts"])["blocks"] is None


def test_the_ephemeral_is_checked_too(web: WebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        web.chat_postEphemeral(channel=CHANNEL, user="U0X", text="t", blocks=[section("x" * 3001)])
    assert refused.value.response["error"] == "invalid_blocks"


def test_blocks_that_are_not_json_are_invalid_blocks_format(fake: FakeSlack) -> None:
    body = f"channel={CHANNEL}&text=t&blocks=%5Bnot+json".encode()
    request = Request(
        fake.url + "chat.postMessage",
        data=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urlopen(request, timeout=5) as r:
        assert json.loads(r.read()) == {"ok": False, "error": "invalid_blocks_format"}


def test_blocks_not_an_array_of_objects_are_invalid_blocks_format(web: WebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        web.api_call("chat.postMessage", json={"channel": CHANNEL, "text": "t", "blocks": ["section"]})
    assert refused.value.response["error"] == "invalid_blocks_format"


def test_text_past_40000_characters_is_truncated_with_slacks_warning(web: WebClient, fake: FakeSlack) -> None:
    posted = web.chat_postMessage(channel=CHANNEL, text="t" * 40_001)
    assert posted["ok"] and posted["warning"] == "message_truncated"
    assert posted["response_metadata"]["warnings"] == ["message_truncated"]
    assert fake.message(posted["ts"])["text"] == "t" * 40_000
    assert "warning" not in web.chat_postMessage(channel=CHANNEL, text="t" * 40_000).data


# What deployctl draws stays inside Slack's limits, however long what it shows.


@pytest.mark.parametrize("step", list(Step))
def test_every_dm_deployctl_draws_is_accepted(step: Step) -> None:
    long_text = "<@U0X> & `x` " * 2000  # far past a section once escaped or not
    blocks = slack_blocks.action_blocks(
        long_text,
        "deploy-" + "w" * 120,
        step,
        list(Action),
        detail="```" + "d" * 10_000 + "```",
        users=[f"U0SRE{i:04d}" for i in range(400)],
        diff_sha256="a" * 64,
    )
    assert block_kit_errors(blocks) == []
    done = slack_blocks.done_text("U0GATE1", step, Action.APPROVE, datetime(2026, 11, 27, 10, tzinfo=UTC))
    assert block_kit_errors(slack_blocks.done_blocks(done, original=long_text)) == []
