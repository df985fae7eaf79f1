"""Slack activities: post, update and read user groups through one `slack_sdk.WebClient`.

The worker builds the client once (`starter.slack_api.make_web_client`) and the activities share it; they are sync
`def`s, so the worker runs them in its thread pool. Failures are classified here, where they happen:

* 429 / `ratelimited`: retryable `SlackRateLimited`, with `next_retry_delay` = the `Retry-After` seconds.
  Short waits (<= `max_rate_limit_wait` s) are first retried inside the call by the client's
  `RateLimitErrorRetryHandler` (up to 2 times); a longer wait is handed to Temporal at once instead of
  pinning a worker thread.
* HTTP 5xx, Slack's transient codes (`internal_error`, `fatal_error`, `service_unavailable`,
  `request_timeout`) and network errors: retryable `SlackUnavailable`.
* Any other `ok: false` (invalid_auth, not_authed, channel_not_found, not_in_channel, is_archived,
  message_not_found, no_such_subteam, missing_scope, account_inactive, user_not_found, ...):
  `SlackError`, non-retryable, with the Slack error code in the message.

The token never appears in a message: errors are rebuilt from the method name, the HTTP status and the
Slack error code, and scrubbed (`activities.common.scrubbed`: message and details) of the client's token,
plain or URL-quoted, and of any URL's user name and password.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.common import scrubbed
from starter.slack_api import retry_after_seconds
from workflows.models import (
    SlackPostInput,
    SlackPostResult,
    SlackUpdateInput,
    UsergroupInput,
    UsergroupResult,
)

# The metadata event type that marks our messages (used to find one already posted: `dedupe_key`).
METADATA_EVENT_TYPE = "deployctl_notice"

# ok:false codes worth retrying (Slack's own transient failures). Every other ok:false code is permanent.
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)

# The permanent codes we expect (the test suite checks each; any other non-transient code is treated alike).
PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
        "not_allowed_token_type",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "message_not_found",
        "cant_update_message",
        "no_such_subteam",
        "user_not_found",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_blocks_format",  # blocks that are not a JSON array of objects: sending again cannot help
        "invalid_arguments",
    }
)


class SlackActivities:
    """Slack calls as activities. Built once by the worker with a shared WebClient."""

    def __init__(self, client: WebClient) -> None:
        self._client = client

    # ---------------------------------------------------------------------------------------------

    @activity.defn
    def post_message(self, input: SlackPostInput) -> SlackPostResult:
        """chat.postMessage. A user id (U…) as channel posts to the bot's DM with that user.

        With `dedupe_key`, a message of ours already carrying that key (in the thread, or among the
        channel's latest messages) is returned instead of posting again (`reused=True`).
        """
        metadata = None
        if input.dedupe_key:
            found = self._find_posted(input.channel, input.thread_ts, input.dedupe_key)
            if found is not None:
                activity.logger.info("Slack message for %s already posted: %s", input.dedupe_key, found.ts)
                return found
            metadata = {"event_type": METADATA_EVENT_TYPE, "event_payload": {"dedupe_key": input.dedupe_key}}
        resp = self._call(
            "chat.postMessage",
            lambda: self._client.chat_postMessage(
                channel=input.channel,
                text=input.text,
                blocks=input.blocks,
                thread_ts=input.thread_ts,
                metadata=metadata,
            ),
        )
        return SlackPostResult(channel=resp["channel"], ts=resp["ts"])

    @activity.defn
    def update_message(self, input: SlackUpdateInput) -> SlackPostResult:
        """chat.update. The message becomes exactly `text` + `blocks`: `blocks=None` removes old blocks
        (buttons included). A user id as channel is resolved to its DM id, which chat.update needs.
        """
        channel = self._dm_channel(input.channel)
        resp = self._call(
            "chat.update",
            lambda: self._client.chat_update(
                channel=channel, ts=input.ts, text=input.text, blocks=input.blocks if input.blocks else []
            ),
        )
        return SlackPostResult(channel=resp["channel"], ts=resp["ts"])

    @activity.defn
    def usergroup_members(self, input: UsergroupInput) -> UsergroupResult:
        """usergroups.users.list: the user ids of a Slack user group (needs `usergroups:read`)."""
        resp = self._call(
            "usergroups.users.list", lambda: self._client.usergroups_users_list(usergroup=input.usergroup)
        )
        return UsergroupResult(usergroup=input.usergroup, users=list(resp["users"] or []))

    # ---------------------------------------------------------------------------------------------

    def _dm_channel(self, channel: str) -> str:
        if channel[:1] not in ("U", "W"):
            return channel
        resp = self._call("conversations.open", lambda: self._client.conversations_open(users=channel))
        return str(resp["channel"]["id"])

    def _find_posted(self, channel: str, thread_ts: str | None, key: str) -> SlackPostResult | None:
        cid = self._dm_channel(channel)
        if thread_ts:
            resp = self._call(
                "conversations.replies",
                lambda: self._client.conversations_replies(
                    channel=cid, ts=thread_ts, include_all_metadata=True, limit=200
                ),
            )
        else:
            resp = self._call(
                "conversations.history",
                lambda: self._client.conversations_history(channel=cid, include_all_metadata=True, limit=50),
            )
        for msg in resp["messages"] or []:
            meta = msg.get("metadata") or {}
            if (
                meta.get("event_type") == METADATA_EVENT_TYPE
                and (meta.get("event_payload") or {}).get("dedupe_key") == key
            ):
                return SlackPostResult(channel=cid, ts=msg["ts"], reused=True)
        return None

    def _call(self, method: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except SlackApiError as err:
            raise scrubbed(self._classify_api_error(method, err), self._secrets()) from None
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets, refused
            raise scrubbed(
                ApplicationError(
                    f"Slack {method} unreachable: {type(err).__name__}: {err}",
                    {"method": method, "error": type(err).__name__, "status": None},
                    type="SlackUnavailable",
                ),
                self._secrets(),
            ) from None

    def _classify_api_error(self, method: str, err: SlackApiError) -> ApplicationError:
        resp = err.response
        status = int(getattr(resp, "status_code", 0) or 0)
        data = getattr(resp, "data", None)
        code = data.get("error") if isinstance(data, dict) else None
        if not isinstance(code, str) or not code or " " in code:  # e.g. an HTML 503 page
            code = f"http_{status}"
        details = {"method": method, "error": code, "status": status}
        if status == 429 or code in ("ratelimited", "rate_limited"):
            wait = retry_after_seconds(getattr(resp, "headers", None))
            return ApplicationError(
                f"Slack {method} rate limited: {code} (HTTP {status}, Retry-After {wait}s)",
                details,
                type="SlackRateLimited",
                next_retry_delay=timedelta(seconds=wait) if wait else None,
            )
        if status >= 500 or code in TRANSIENT_ERRORS:
            return ApplicationError(
                f"Slack {method} failed: {code} (HTTP {status})",
                details,
                type="SlackUnavailable",
            )
        return ApplicationError(
            f"Slack {method} failed: {code}", details, type="SlackError", non_retryable=True
        )

    def _secrets(self) -> tuple[str, ...]:
        """The client's token: what no message may carry."""
        return (self._client.token,) if self._client.token else ()
