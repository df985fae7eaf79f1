"""Slack Block Kit for deploys: the one place that knows how the buttons look and what a click means.

The workflow draws a DM's buttons with `action_blocks`; the Slack bridge reads a click back with
`parse_click` and replaces the clicked message with `done_blocks`. Pure functions over plain data (no
I/O, no clock), so workflow code may import this module.

Each button's label and confirmation come from the step table (workflows/steps.py).

A button carries its meaning in itself, so a click needs nothing but the payload Slack signs:
`action_id` is `deployctl:<action>` and `value` is the compact JSON `{"w": workflow id, "s": step,
"a": action}` (plus `"d": diff sha256` on "Diff is correct" and on "Merge version PR" when the diff
shown is known: the build's diff, the version PR's diff). The SRE
menu is a `users_select`, whose value is the picked user, so the same JSON sits in its actions
block's `block_id`, after `deployctl|`. The step in a button makes a stale one harmless: the workflow
refuses an action for a step that has passed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from workflows import steps
from workflows.models import Action, Click, Step

ACTION_PREFIX = "deployctl:"
BLOCK_PREFIX = "deployctl|"

# Slack's limits (Block Kit reference): a section's text, a button's value, a block_id, a button label.
SECTION_LIMIT = 3000
VALUE_LIMIT = 2000
BLOCK_ID_LIMIT = 255
LABEL_LIMIT = 75
TRUNCATED = "… (truncated; see the console)"

#: The buttons bound to the diff their message shows (`"d"`): the workflow refuses their click when the
#: diff it shows now is another one. By the step table: the actions, but reject, of the steps that show a
#: diff (validate_diff, merge).
DIFF_BOUND = tuple(
    dict.fromkeys(
        a
        for d in steps.ALL
        if d.shows in (steps.Shows.BUILD_DIFF, steps.Shows.PR_DIFF)
        for a in d.actions
        if a is not Action.REJECT
    )
)

SRE_PLACEHOLDER = "Pick the SRE"

# What the done message says someone did (`{sre}`: the SRE they named).
_DONE_VERBS: dict[Action, str] = {
    Action.APPROVE: "approved",
    Action.REJECT: "rejected",
    Action.ASSIGN: "assigned <@{sre}> as the SRE",
    Action.TRIGGER: "triggered the deploy job",
    Action.VALIDATE_DIFF: "confirmed the diff",
    Action.MERGE: "merged the version PR",
    Action.CANCEL: "cancelled the deploy",
}


def label(step: Step, action: Action) -> str:
    """The text of the button for `action` at `step`."""
    found = steps.button(step, action)
    return found.label if found else action.value.replace("_", " ").capitalize()


def button_value(workflow_id: str, step: Step, action: Action, diff_sha256: str | None = None) -> str:
    """The compact JSON a button carries: which deploy, which step, which action."""
    ref: dict[str, str] = {"w": workflow_id, "s": step.value, "a": action.value}
    if diff_sha256:
        ref["d"] = diff_sha256
    return json.dumps(ref, separators=(",", ":"))


def fit(text: str, limit: int = SECTION_LIMIT) -> str:
    """`text` cut to `limit` characters, saying so; a code block cut open is closed again."""
    if len(text) <= limit:
        return text
    room = limit - len(TRUNCATED) - len("\n```\n")
    kept = text[:room]
    if kept.count("```") % 2 == 1:
        kept += "\n```"
    return kept + "\n" + TRUNCATED


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": fit(text)}}


def _button(workflow_id: str, step: Step, action: Action, diff_sha256: str | None) -> dict[str, Any]:
    value = button_value(workflow_id, step, action, diff_sha256 if action in DIFF_BOUND else None)
    if len(value) > VALUE_LIMIT:
        raise ValueError(f"workflow id too long for a Slack button ({len(value)} > {VALUE_LIMIT} characters)")
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label(step, action)[:LABEL_LIMIT]},
        "action_id": f"{ACTION_PREFIX}{action.value}",
        "value": value,
        "style": "danger" if action in (Action.REJECT, Action.CANCEL) else "primary",
    }
    found = steps.button(step, action)
    if found is not None and found.confirm is not None:
        confirm = found.confirm
        button["confirm"] = {
            "title": {"type": "plain_text", "text": confirm.title},
            "text": {"type": "mrkdwn", "text": confirm.text},
            "confirm": {"type": "plain_text", "text": confirm.yes},
            "deny": {"type": "plain_text", "text": "Not now"},
            **({"style": "danger"} if action is Action.REJECT else {}),
        }
    return button


def action_blocks(
    text: str,
    workflow_id: str,
    step: Step,
    actions: Sequence[Action],
    detail: str = "",
    users: Sequence[str] = (),
    *,
    diff_sha256: str | None = None,
) -> list[dict[str, Any]]:
    """The blocks of a DM that asks someone to act at `step`: the text, the detail, one button per action.

    `actions` may be a status's `allowed_actions`: `cancel` is left out (it is not a DM button; the CLI
    offers it). `assign` becomes a users menu ("Pick the SRE"); `users` are the SREs that may be picked,
    listed under it, since Slack's menu cannot be limited to them. `detail` (a diff in a code block, a
    build link) is cut to Slack's 3000-character section limit. `diff_sha256` binds "Diff is correct" and
    "Merge version PR" to the diff shown: the workflow refuses the click if the build's diff, or the
    version PR's, is another one by then.
    """
    blocks = [_section(text)]
    if detail:
        blocks.append(_section(detail))
    shown = [a for a in dict.fromkeys(actions) if a is not Action.CANCEL]
    if Action.ASSIGN in shown:
        block_id = BLOCK_PREFIX + button_value(workflow_id, step, Action.ASSIGN)
        if len(block_id) > BLOCK_ID_LIMIT:
            raise ValueError(
                f"workflow id too long for a Slack menu ({len(block_id)} > {BLOCK_ID_LIMIT} characters)"
            )
        blocks.append(
            {
                "type": "actions",
                "block_id": block_id,
                "elements": [
                    {
                        "type": "users_select",
                        "action_id": f"{ACTION_PREFIX}{Action.ASSIGN.value}",
                        "placeholder": {"type": "plain_text", "text": SRE_PLACEHOLDER},
                    }
                ],
            }
        )
        if users:
            who = ", ".join(f"<@{u}>" for u in users)
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": fit(f"SREs: {who}")}]})
    buttons = [_button(workflow_id, step, a, diff_sha256) for a in shown if a is not Action.ASSIGN]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks


def done_text(actor: str, step: Step, action: Action, when: datetime, sre: str | None = None) -> str:
    """`✅ <@U0GATE1> approved at pccr_review · 2026-11-27 10:00 UTC`."""
    stamp = (when if when.tzinfo is None else when.astimezone(UTC)).strftime("%Y-%m-%d %H:%M")
    verb = _DONE_VERBS[action].format(sre=sre or "?")
    icon = "❌" if action in (Action.REJECT, Action.CANCEL) else "✅"
    return f"{icon} <@{actor}> {verb} at {step.value} · {stamp} UTC"


def done_blocks(text: str, original: str = "") -> list[dict[str, Any]]:
    """The message once acted on: who did what, when (`done_text`); no buttons left.

    `original`: the message's first text (what it asked), kept above so the DM still says which deploy.
    """
    blocks = [_section(original)] if original else []
    blocks.append(_section(text))
    return blocks


# ------------------------------------------------------------------------------------------ clicks


def _ref(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{where} is empty")
    try:
        ref = json.loads(raw)
    except ValueError:
        raise ValueError(f"{where} is not JSON") from None
    if not isinstance(ref, dict):
        raise ValueError(f"{where} is not a JSON object")
    return ref


def parse_click(payload: dict[str, Any]) -> Click | None:
    """The click in a Slack `block_actions` payload, or None when it is not one of deployctl's.

    Raises ValueError with a one-line reason when it claims to be ours but is malformed.
    """
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list):
        return None
    ours = [
        a for a in actions if isinstance(a, dict) and str(a.get("action_id") or "").startswith(ACTION_PREFIX)
    ]
    if not ours:
        return None
    element = ours[0]
    name = str(element["action_id"])[len(ACTION_PREFIX) :]
    try:
        action = Action(name)
    except ValueError:
        raise ValueError(f"unknown action {name!r} in action_id {element['action_id']!r}") from None
    kind = element.get("type")
    sre: str | None = None
    if kind == "users_select":
        block_id = str(element.get("block_id") or "")
        if not block_id.startswith(BLOCK_PREFIX):
            raise ValueError(
                f"the users menu's block_id {block_id[:40]!r} does not start with {BLOCK_PREFIX!r}"
            )
        ref = _ref(block_id[len(BLOCK_PREFIX) :], "the users menu's block_id")
        sre = element.get("selected_user")
        if not isinstance(sre, str) or not sre:
            raise ValueError("no user was picked in the SRE menu")
    elif kind == "button":
        ref = _ref(element.get("value"), "the button's value")
    else:
        raise ValueError(f"unexpected element type {kind!r} for {element['action_id']}")
    if ref.get("a") != action.value:
        raise ValueError(f"action_id says {action.value} but the button says {ref.get('a')!r}")
    workflow_id = ref.get("w")
    if not isinstance(workflow_id, str) or not workflow_id:
        raise ValueError("the button names no deploy (w)")
    try:
        step = Step(str(ref.get("s")))
    except ValueError:
        raise ValueError(f"unknown step {ref.get('s')!r} in the button") from None
    diff = ref.get("d")
    user_id = _obj(payload, "user").get("id")
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("the payload names no user")
    container, channel, message = (_obj(payload, k) for k in ("container", "channel", "message"))
    response_url = payload.get("response_url")
    return Click(
        workflow_id=workflow_id,
        step=step,
        action=action,
        sre=sre,
        diff_sha256=diff if isinstance(diff, str) and diff else None,
        user_id=user_id,
        channel_id=_str(container.get("channel_id")) or _str(channel.get("id")),
        message_ts=_str(container.get("message_ts")) or _str(message.get("ts")),
        response_url=_str(response_url),
    )


def _obj(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
