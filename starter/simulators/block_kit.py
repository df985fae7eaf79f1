"""What Slack refuses in a message's `blocks`: the Block Kit limits the Slack simulator enforces.

Slack answers a message whose blocks break a limit with `{"ok": false, "error": "invalid_blocks",
"errors": [...], "response_metadata": {"messages": ["[ERROR] ..."]}}`, each line naming the offending
place with `[json-pointer:/blocks/N/...]`; blocks that are not a JSON array of objects get
`invalid_blocks_format`. The limits and their sources are in docs/slack.md ("What Slack refuses").

`block_kit_errors(blocks)` returns those lines (empty: Slack accepts the blocks). It checks what
deployctl's messages use or could break (block count and types, section text and fields, header
text, actions elements, buttons and their confirm dialogs, context elements, block_id, text object
types); it is not the whole Block Kit schema.
"""

from __future__ import annotations

from typing import Any

MAX_BLOCKS = 50  # per message (100 in modals and Home tabs)
SECTION_TEXT = 3000
SECTION_FIELDS = 10
SECTION_FIELD_TEXT = 2000
HEADER_TEXT = 150
ACTIONS_ELEMENTS = 25
CONTEXT_ELEMENTS = 10
BLOCK_ID = 255
ACTION_ID = 255
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
BUTTON_URL = 3000
CONFIRM = {"title": 100, "text": 300, "confirm": 30, "deny": 30}
MESSAGE_TEXT = 40_000  # top-level `text`: longer is truncated (a warning), not refused

#: The layout block types slack_sdk 3.48's `Block.parse` knows, which mirror Slack's Block Kit reference.
BLOCK_TYPES = frozenset(
    {
        "actions",
        "alert",
        "auth_provider",
        "call",
        "card",
        "carousel",
        "container",
        "context",
        "context_actions",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "plan",
        "rich_text",
        "section",
        "table",
        "task_card",
        "video",
    }
)
TEXT_TYPES = ("plain_text", "mrkdwn")

TRUNCATED_WARNING = (
    "[WARN] Your message was truncated but still posted. The `text` field accepts up to 40,000 characters."
)


class BlocksRefused(Exception):
    """Slack's answer to blocks it refuses: `error` and the lines of `errors`."""

    def __init__(self, error: str, errors: list[str]) -> None:
        super().__init__(f"{error}: {'; '.join(errors)}")
        self.error = error
        self.errors = errors


def check_blocks(blocks: Any) -> None:
    """Raise `BlocksRefused` where Slack would refuse `blocks` (None or [] means no blocks: fine)."""
    if blocks is None:
        return
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise BlocksRefused(
            "invalid_blocks_format", ["must be an array of block objects [json-pointer:/blocks]"]
        )
    errors = block_kit_errors(blocks)
    if errors:
        raise BlocksRefused("invalid_blocks", errors)


def block_kit_errors(blocks: list[dict[str, Any]]) -> list[str]:
    errors: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        errors.append(f"no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    for i, block in enumerate(blocks):
        errors.extend(_block_errors(block, f"/blocks/{i}"))
    return errors


def _too_long(value: Any, limit: int, where: str) -> list[str]:
    if isinstance(value, str) and len(value) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{where}]"]
    return []


def _text_object(obj: Any, limit: int, where: str, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return [f"must be a text object [json-pointer:{where}]"]
    allowed = ("plain_text",) if plain_only else TEXT_TYPES
    if obj.get("type") not in allowed:
        return [f"unsupported type: {obj.get('type')} [json-pointer:{where}/type]"]
    return _too_long(obj["text"], limit, f"{where}/text")


def _too_many(items: Any, limit: int, where: str) -> list[str]:
    if not isinstance(items, list):
        return [f"must be an array [json-pointer:{where}]"]
    if len(items) > limit:
        return [f"no more than {limit} items allowed [json-pointer:{where}]"]
    return []


def _block_errors(block: dict[str, Any], where: str) -> list[str]:
    kind = block.get("type")
    if kind not in BLOCK_TYPES:
        return [f"unsupported type: {kind} [json-pointer:{where}/type]"]
    errors = _too_long(block.get("block_id"), BLOCK_ID, f"{where}/block_id")
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(f"must provide text or fields [json-pointer:{where}]")
        if "text" in block:
            errors += _text_object(block["text"], SECTION_TEXT, f"{where}/text")
        if "fields" in block:
            errors += _too_many(block["fields"], SECTION_FIELDS, f"{where}/fields")
            for j, f in enumerate(block["fields"] if isinstance(block["fields"], list) else []):
                errors += _text_object(f, SECTION_FIELD_TEXT, f"{where}/fields/{j}")
        if isinstance(block.get("accessory"), dict):
            errors += _element_errors(block["accessory"], f"{where}/accessory")
    elif kind == "header":
        errors += _text_object(block.get("text"), HEADER_TEXT, f"{where}/text", plain_only=True)
    elif kind == "actions":
        elements = block.get("elements")
        errors += _too_many(elements, ACTIONS_ELEMENTS, f"{where}/elements")
        for j, e in enumerate(elements if isinstance(elements, list) else []):
            errors += _element_errors(e, f"{where}/elements/{j}")
    elif kind == "context":
        errors += _too_many(block.get("elements"), CONTEXT_ELEMENTS, f"{where}/elements")
    return errors


def _element_errors(element: Any, where: str) -> list[str]:
    if not isinstance(element, dict):
        return [f"must be an element object [json-pointer:{where}]"]
    errors = _too_long(element.get("action_id"), ACTION_ID, f"{where}/action_id")
    if element.get("type") == "button":
        errors += _text_object(element.get("text"), BUTTON_TEXT, f"{where}/text", plain_only=True)
        errors += _too_long(element.get("value"), BUTTON_VALUE, f"{where}/value")
        errors += _too_long(element.get("url"), BUTTON_URL, f"{where}/url")
    confirm = element.get("confirm")
    if isinstance(confirm, dict):
        for key, limit in CONFIRM.items():
            errors += _text_object(
                confirm.get(key), limit, f"{where}/confirm/{key}", plain_only=key != "text"
            )
    return errors
