"""A stateful fake of the Slack Web API (and of Socket Mode) for tests, on the standard library only.

It is a real HTTP server on 127.0.0.1, so the real `slack_sdk.WebClient` talks to it exactly as it talks
to slack.com: `WebClient(token="xoxb-test", base_url=fake.url)`. What it speaks was checked against the
slack_sdk 3.48 source and the Slack method docs (see /work/shared/INTEGRATIONS.md §3):

* Every call is `POST /api/{method}` with `Authorization: Bearer <token>`; the body is JSON for
  chat.postMessage / chat.update / chat.postEphemeral and a form for the rest. A `token` body field is
  accepted too, as Slack does. A GET with a query string works as well.
* Answers are HTTP 200 with `{"ok": true, ...}` or `{"ok": false, "error": "..."}`, except injected
  faults (`fail_next`) and outages (`down`). A 429 carries a `Retry-After` header, as Slack's does.
* A user id (U…/W…) as `channel` in chat.postMessage posts to the bot's DM with that user; the answer
  carries the DM channel id (D…), and chat.update must be given that D… id, as Slack documents.
* chat.update keeps the previous blocks when `blocks` is absent and clears them with `blocks: []`.
* Blocks Slack refuses are refused (`block_kit.py`: 50 blocks, 3,000 characters of section text, 10
  fields of 2,000, header 150, 25 actions elements, button text 75 and value 2,000, block_id 255,
  unknown block types) with `invalid_blocks` and Slack's `response_metadata.messages`; blocks that are
  not an array of objects get `invalid_blocks_format`. A top-level `text` past 40,000 characters is
  cut there and the answer carries Slack's `message_truncated` warning. See docs/slack.md.
* `apps.connections.open` (app token `xapp-…`) returns a `ws://` URL on the same port; a small
  RFC 6455 server there says `hello`, answers pings, pushes envelopes (`send_envelope`) and records
  the client's acks (`acks`, `wait_for_ack`). slack_sdk's builtin SocketModeClient and Bolt's
  SocketModeHandler connect to it (they use plain TCP when the port is not 443).

State and test hooks: `messages`, `messages_to(channel)`, `thread(ts)`, `ephemerals`, `requests`,
`fail_next(...)`, `down`, `wait_for_message(...)`, `block_actions_payload(...)`; Socket Mode:
`wait_for_socket`, `send_envelope`, `acks`, `wait_for_ack`, `disconnect_sockets`, `close_sockets`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starter.simulators.block_kit import MESSAGE_TEXT, TRUNCATED_WARNING, BlocksRefused, check_blocks
from starter.simulators.server import LocalServer, QuietHandler

DEFAULT_USERGROUPS: dict[str, list[str]] = {"S0SREGOV": ["U0SRE3"]}

TEAM_ID = "T0FAKE"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0FAKE"

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TS_BASE_US = 1_700_000_000_000_000  # ts values are "1700000000.000100", "1700000000.000200", ...

# Methods that take an app-level token (xapp-…); all others take the bot token (xoxb-…).
_APP_TOKEN_METHODS = {"apps.connections.open"}


class SlackApiFault(Exception):
    """Raised inside a method handler: the call answers `{"ok": false, "error": code}`.

    `errors` (Block Kit refusals) go into the answer as `errors` and, each with `[ERROR] `, as
    `response_metadata.messages`, as Slack's `invalid_blocks` answers carry them.
    """

    def __init__(self, error: str, errors: list[str] | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.errors = errors or []


@dataclass
class _Fault:
    method: str | None  # None: any method
    error: str
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class _WsConn:
    sock: socket.socket
    ticket: str
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    def send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n <= 125:
            header += bytes([n])
        elif n <= 0xFFFF:
            header += bytes([126]) + struct.pack("!H", n)
        else:
            header += bytes([127]) + struct.pack("!Q", n)
        with self.send_lock:
            if self.closed:
                raise ConnectionError("socket mode connection is closed")
            self.sock.sendall(header + payload)

    def send_json(self, obj: Any) -> None:
        self.send_frame(0x1, json.dumps(obj).encode())

    def close(self) -> None:
        with self.send_lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def sign_request(body: bytes, signing_secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack puts on an interactivity POST: `v0=` + HMAC-SHA256 of `v0:{ts}:{body}`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    sig = "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        "Content-Type": "application/x-www-form-urlencoded",
    }


class FakeSlack(LocalServer):
    """A fake Slack workspace behind a real HTTP server. See the module docstring.

    `users`: None accepts any U…/W… id; otherwise only these ids exist (an iterable of ids, or a
    mapping id → display name). `channels`: None accepts any C…/G… id; otherwise only these exist.
    """

    def __init__(
        self,
        port: int = 0,
        token: str = "xoxb-test",
        usergroups: Mapping[str, Iterable[str]] | None = None,
        users: Iterable[str] | Mapping[str, str] | None = None,
        *,
        channels: Iterable[str] | None = None,
        app_token: str = "xapp-test",
    ) -> None:
        self.token = token
        self.app_token = app_token
        groups = DEFAULT_USERGROUPS if usergroups is None else usergroups
        self.usergroups: dict[str, list[str]] = {k: list(v) for k, v in groups.items()}
        self.users: dict[str, str] | None
        if users is None:
            self.users = None
        elif isinstance(users, Mapping):
            self.users = dict(users)
        else:
            self.users = {u: u.lower() for u in users}
        self.channels: set[str] | None = None if channels is None else set(channels)
        self.archived: set[str] = set()
        self.down = False

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._messages: list[dict[str, Any]] = []
        self._ephemerals: list[dict[str, Any]] = []
        self._requests: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._ts_counter = itertools.count(1)
        self._ws_conns: list[_WsConn] = []
        self._acks: list[dict[str, Any]] = []
        self._ws_tickets: set[str] = set()
        self._response_url_posts: list[dict[str, Any]] = []

        super().__init__(port)

    # ---------------------------------------------------------------------------------------------
    # Lifecycle

    def start(self) -> FakeSlack:
        return self._listen(_make_handler(self), "fake-slack")

    def _before_stop(self) -> None:
        with self._lock:
            conns, self._ws_conns = self._ws_conns, []
        for conn in conns:
            conn.close()

    @property
    def url(self) -> str:
        """The WebClient `base_url`."""
        return f"http://127.0.0.1:{self._port}/api/"

    # ---------------------------------------------------------------------------------------------
    # Test hooks: what happened

    @property
    def messages(self) -> list[dict[str, Any]]:
        """Every message posted, in order: channel, ts, text, blocks, thread_ts, metadata, user, history.

        `history` holds the earlier versions ({text, blocks}) replaced by chat.update. Copies.
        """
        with self._lock:
            return copy.deepcopy(self._messages)

    def messages_to(self, channel: str) -> list[dict[str, Any]]:
        """Messages in `channel`, thread replies included. A user id means that user's DM."""
        cid = self._dm_id(channel) if channel[:1] in ("U", "W") else channel
        return [m for m in self.messages if m["channel"] == cid]

    def message(self, ts: str) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["ts"] == ts), None)

    def thread(self, ts: str) -> list[dict[str, Any]]:
        """The replies to the message `ts` (not the parent), oldest first."""
        return [m for m in self.messages if m["thread_ts"] == ts and m["ts"] != ts]

    @property
    def ephemerals(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._ephemerals)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every API call received: method, body (parsed), status, error (None when ok)."""
        with self._lock:
            return copy.deepcopy(self._requests)

    def calls(self, method: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == method]

    @property
    def response_url_posts(self) -> list[dict[str, Any]]:
        """JSON bodies POSTed to the `response_url` of payloads built by `block_actions_payload`."""
        with self._lock:
            return copy.deepcopy(self._response_url_posts)

    def wait_for_message(
        self,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        channel: str | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Block until a message (in `channel`, matching `predicate`) exists; return it (a copy)."""
        cid = None if channel is None else (self._dm_id(channel) if channel[:1] in ("U", "W") else channel)

        def find() -> dict[str, Any] | None:
            for m in self._messages:
                if (cid is None or m["channel"] == cid) and (predicate is None or predicate(m)):
                    return copy.deepcopy(m)
            return None

        deadline = time.monotonic() + timeout
        with self._changed:
            while (found := find()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching Slack message within {timeout}s")
                self._changed.wait(left)
            return found

    # ---------------------------------------------------------------------------------------------
    # Test hooks: what goes wrong

    def fail_next(
        self,
        method: str | None = "chat.postMessage",
        error: str = "ratelimited",
        status: int = 429,
        retry_after: int | None = 1,
        times: int = 1,
    ) -> None:
        """The next `times` calls of `method` (None: of any method) fail.

        `status=429` answers with a `Retry-After: retry_after` header; `status=500`/`503` is a server
        error; `status=200` is an ordinary `{"ok": false, "error": error}` answer.
        """
        with self._lock:
            self._faults.append(_Fault(method, error, status, retry_after, times))

    def chaos(self, rate: float, seed: int = 0) -> None:
        """From now on answer a share `rate` of the calls with 429 (Retry-After: 1), a 500, or Slack's
        transient `ok:false` answers on a 200 (`internal_error`, `fatal_error`). 0 stops it."""
        import random

        with self._lock:
            self._chaos = (rate, random.Random(seed))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_usergroup(self, usergroup: str, members: Iterable[str]) -> None:
        with self._lock:
            self.usergroups[usergroup] = list(members)

    # ---------------------------------------------------------------------------------------------
    # Test hooks: Socket Mode

    @property
    def acks(self) -> list[dict[str, Any]]:
        """Every JSON message the Socket Mode client sent (acks: `{"envelope_id", "payload"?}`)."""
        with self._lock:
            return copy.deepcopy(self._acks)

    @property
    def socket_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._ws_conns if not c.closed)

    def wait_for_socket(self, timeout: float = 5.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.socket_connections < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no Socket Mode connection within {timeout}s")
                self._changed.wait(left)

    def send_envelope(
        self,
        payload: dict[str, Any],
        type: str = "interactive",
        *,
        accepts_response_payload: bool = False,
        envelope_id: str | None = None,
    ) -> str:
        """Push an envelope to the newest live Socket Mode connection; return its envelope_id."""
        eid = envelope_id or str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": eid,
            "payload": payload,
            "type": type,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        with self._lock:
            live = [c for c in self._ws_conns if not c.closed]
        if not live:
            raise ConnectionError("no Socket Mode client is connected")
        live[-1].send_json(envelope)
        return eid

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for a in self._acks:
                    if a.get("envelope_id") == envelope_id:
                        return copy.deepcopy(a)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no ack for envelope {envelope_id} within {timeout}s")
                self._changed.wait(left)

    def disconnect_sockets(self, reason: str = "refresh_requested") -> None:
        """Send Slack's `disconnect` message to every live connection (clients reconnect)."""
        with self._lock:
            live = [c for c in self._ws_conns if not c.closed]
        for c in live:
            c.send_json({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-applink"}})

    def close_sockets(self, code: int = 1001) -> None:
        """Drop every Socket Mode connection from the server side (a close frame, then the socket)."""
        with self._lock:
            live = [c for c in self._ws_conns if not c.closed]
        for c in live:
            try:
                c.send_frame(0x8, struct.pack("!H", code))
            except (OSError, ConnectionError):
                pass
            c.close()

    def block_actions_payload(
        self,
        *,
        user: str,
        action_id: str,
        message_ts: str,
        value: str = "",
        block_id: str | None = None,
        username: str | None = None,
    ) -> dict[str, Any]:
        """A `block_actions` payload for a button click on the posted message `message_ts`.

        It has the fields INTEGRATIONS §3 lists; `message.blocks` are the message's current blocks and
        `response_url` points at this fake (see `response_url_posts`).
        """
        msg = self.message(message_ts)
        if msg is None:
            raise KeyError(f"no message with ts {message_ts}")
        n = next(self._ts_counter)
        action_ts = self._ts(n)
        return {
            "type": "block_actions",
            "user": {"id": user, "username": username or self._user_name(user), "team_id": TEAM_ID},
            "api_app_id": APP_ID,
            "team": {"id": TEAM_ID, "domain": "fake"},
            "channel": {"id": msg["channel"], "name": msg["channel"].lower()},
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": msg["channel"],
                "is_ephemeral": False,
            },
            "message": {
                "type": "message",
                "ts": message_ts,
                "text": msg["text"],
                "blocks": msg["blocks"] or [],
                "user": BOT_USER_ID,
                "bot_id": BOT_ID,
            },
            "response_url": f"http://127.0.0.1:{self._port}/actions/{TEAM_ID}/{n}/{uuid.uuid4().hex}",
            "trigger_id": f"{n}.{TEAM_ID}.{uuid.uuid4().hex}",
            "actions": [
                {
                    "type": "button",
                    "action_id": action_id,
                    "block_id": block_id or "actions",
                    "value": value,
                    "action_ts": action_ts,
                    "text": {"type": "plain_text", "text": action_id},
                }
            ],
        }

    # ---------------------------------------------------------------------------------------------
    # The Web API

    @staticmethod
    def _ts(n: int) -> str:
        us = _TS_BASE_US + n * 100
        return f"{us // 1_000_000}.{us % 1_000_000:06d}"

    @staticmethod
    def _dm_id(user: str) -> str:
        return "D" + user[1:]

    def _user_name(self, user: str) -> str:
        if self.users is not None and user in self.users:
            return self.users[user]
        return user.lower()

    def _user_exists(self, user: str) -> bool:
        return self.users is None or user in self.users

    def _resolve_channel(self, channel: Any, *, allow_user: bool) -> str:
        """The conversation id `channel` names, or SlackApiFault("channel_not_found")."""
        if not isinstance(channel, str) or not channel:
            raise SlackApiFault("channel_not_found")
        if channel[0] in ("U", "W"):
            if not allow_user or not self._user_exists(channel):
                raise SlackApiFault("channel_not_found")
            return self._dm_id(channel)
        if channel[0] == "D":
            if not self._user_exists("U" + channel[1:]):
                raise SlackApiFault("channel_not_found")
            return channel
        if channel[0] == "#":  # a channel name: give it a stable id
            return "C" + hashlib.sha1(channel.encode()).hexdigest()[:8].upper()
        if channel[0] in ("C", "G"):
            if self.channels is not None and channel not in self.channels:
                raise SlackApiFault("channel_not_found")
            return channel
        raise SlackApiFault("channel_not_found")

    def _find(self, channel: str, ts: Any) -> dict[str, Any]:
        for m in self._messages:
            if m["ts"] == ts and m["channel"] == channel:
                return m
        raise SlackApiFault("message_not_found")

    @staticmethod
    def _public(m: dict[str, Any], include_metadata: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "message",
            "user": m["user"],
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "text": m["text"],
            "ts": m["ts"],
            "team": TEAM_ID,
        }
        if m["blocks"]:
            out["blocks"] = copy.deepcopy(m["blocks"])
        if m["thread_ts"]:
            out["thread_ts"] = m["thread_ts"]
        if m["history"]:
            out["edited"] = {"user": m["user"], "ts": m["edited_ts"]}
        if include_metadata and m.get("metadata"):
            out["metadata"] = copy.deepcopy(m["metadata"])
        return out

    def handle(self, method: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
        """Answer one authenticated call (the HTTP layer handles faults and outages first)."""
        handler = _METHODS.get(method)
        if handler is None:
            raise SlackApiFault("unknown_method")
        if not token:
            raise SlackApiFault("not_authed")
        wants_app_token = method in _APP_TOKEN_METHODS
        if token not in (self.token, self.app_token):
            raise SlackApiFault("invalid_auth")
        if (token == self.app_token) != wants_app_token:
            raise SlackApiFault("not_allowed_token_type")
        with self._changed:
            result = handler(self, body)
            self._changed.notify_all()
        return {"ok": True, **result}

    def _auth_test(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake.slack.com/",
            "team": "Fake Workspace",
            "user": "deployctl",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    @staticmethod
    def _check_message(body: dict[str, Any]) -> list[str]:
        """Refuse blocks Slack refuses (`invalid_blocks`, `invalid_blocks_format`); cut a top-level
        `text` past 40,000 characters, as Slack does, and return the warning Slack then gives."""
        try:
            check_blocks(body.get("blocks"))
        except BlocksRefused as e:
            raise SlackApiFault(e.error, e.errors) from None
        text = body.get("text")
        if isinstance(text, str) and len(text) > MESSAGE_TEXT:
            body["text"] = text[:MESSAGE_TEXT]
            return [TRUNCATED_WARNING]
        return []

    @staticmethod
    def _warned(answer: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
        if warnings:
            answer["warning"] = "message_truncated"
            answer["response_metadata"] = {"messages": warnings, "warnings": ["message_truncated"]}
        return answer

    def _post_message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(body.get("channel"), allow_user=True)
        if channel in self.archived:
            raise SlackApiFault("is_archived")
        warnings = self._check_message(body)
        text = body.get("text") or ""
        blocks = body.get("blocks") or None
        if not text and not blocks:
            raise SlackApiFault("no_text")
        thread_ts = body.get("thread_ts") or None
        ts = self._ts(next(self._ts_counter))
        msg: dict[str, Any] = {
            "channel": channel,
            "ts": ts,
            "text": text,
            "blocks": blocks,
            "thread_ts": thread_ts,
            "metadata": body.get("metadata") or None,
            "user": BOT_USER_ID,
            "history": [],
            "edited_ts": None,
        }
        self._messages.append(msg)
        return self._warned({"channel": channel, "ts": ts, "message": self._public(msg)}, warnings)

    def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        # chat.update wants the D… id of a DM, never a user id (Slack's docs say so).
        channel = self._resolve_channel(body.get("channel"), allow_user=False)
        msg = self._find(channel, body.get("ts"))
        if "text" not in body and "blocks" not in body:
            raise SlackApiFault("no_text")
        warnings = self._check_message(body)
        msg["history"].append({"text": msg["text"], "blocks": copy.deepcopy(msg["blocks"])})
        if "text" in body:
            msg["text"] = body["text"] or ""
        if "blocks" in body:  # absent: keep the old blocks; []: remove them
            msg["blocks"] = body["blocks"] or None
        if "metadata" in body:
            msg["metadata"] = body["metadata"] or None
        msg["edited_ts"] = self._ts(next(self._ts_counter))
        answer = {"channel": channel, "ts": msg["ts"], "text": msg["text"], "message": self._public(msg)}
        return self._warned(answer, warnings)

    def _post_ephemeral(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(body.get("channel"), allow_user=False)
        user = body.get("user")
        if not user or not self._user_exists(user):
            raise SlackApiFault("user_not_found")
        if not body.get("text") and not body.get("blocks"):
            raise SlackApiFault("no_text")
        self._check_message(body)
        ts = self._ts(next(self._ts_counter))
        self._ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "ts": ts,
                "text": body.get("text") or "",
                "blocks": body.get("blocks") or None,
                "thread_ts": body.get("thread_ts") or None,
            }
        )
        return {"message_ts": ts}

    def _users_info(self, body: dict[str, Any]) -> dict[str, Any]:
        user = body.get("user")
        if not user or not self._user_exists(user):
            raise SlackApiFault("user_not_found")
        name = self._user_name(user)
        return {
            "user": {
                "id": user,
                "team_id": TEAM_ID,
                "name": name,
                "real_name": name,
                "deleted": False,
                "is_bot": False,
                "profile": {"real_name": name, "display_name": name},
            }
        }

    def _usergroup_users(self, body: dict[str, Any]) -> dict[str, Any]:
        group = body.get("usergroup")
        if not group or group not in self.usergroups:
            raise SlackApiFault("no_such_subteam")
        return {"users": list(self.usergroups[group])}

    def _conversations_open(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("channel"):
            return {"channel": {"id": self._resolve_channel(body["channel"], allow_user=False)}}
        users = [u for u in str(body.get("users") or "").split(",") if u]
        if not users:
            raise SlackApiFault("users_list_not_supplied")
        for u in users:
            if not self._user_exists(u):
                raise SlackApiFault("user_not_found")
        if len(users) == 1:
            return {"no_op": True, "already_open": True, "channel": {"id": self._dm_id(users[0])}}
        digest = hashlib.sha1(",".join(sorted(users)).encode()).hexdigest()[:8].upper()
        return {"no_op": True, "already_open": True, "channel": {"id": "G" + digest}}

    def _conversations_history(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(body.get("channel"), allow_user=False)
        limit = int(body.get("limit") or 100)
        meta = _truthy(body.get("include_all_metadata"))
        top = [m for m in self._messages if m["channel"] == channel and m["thread_ts"] in (None, m["ts"])]
        top.reverse()  # newest first, as Slack answers
        page = top[:limit]
        return {
            "messages": [self._public(m, meta) for m in page],
            "has_more": len(top) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_replies(self, body: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve_channel(body.get("channel"), allow_user=False)
        ts = body.get("ts")
        try:
            parent = self._find(channel, ts)
        except SlackApiFault:
            raise SlackApiFault("thread_not_found") from None
        limit = int(body.get("limit") or 1000)
        meta = _truthy(body.get("include_all_metadata"))
        replies = [
            m for m in self._messages if m["channel"] == channel and m["thread_ts"] == ts and m is not parent
        ]
        thread = [parent, *replies]
        return {
            "messages": [self._public(m, meta) for m in thread[:limit]],
            "has_more": len(thread) > limit,
            "response_metadata": {"next_cursor": ""},
        }

    def _apps_connections_open(self, body: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._ws_tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self._port}/link/?ticket={ticket}&app_id={APP_ID}"}

    # ---------------------------------------------------------------------------------------------
    # Socket Mode (called from the HTTP handler thread that owns the connection)

    def _ws_session(self, handler: BaseHTTPRequestHandler, ticket: str) -> None:
        conn = _WsConn(sock=handler.connection, ticket=ticket)
        with self._changed:
            self._ws_conns.append(conn)
            live = sum(1 for c in self._ws_conns if not c.closed)
            self._changed.notify_all()
        rfile = handler.rfile
        try:
            conn.send_json(
                {
                    "type": "hello",
                    "num_connections": live,
                    "debug_info": {"host": "fake-applink", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": APP_ID},
                }
            )
            while not conn.closed:
                frame = _read_frame(rfile)
                if frame is None:
                    break
                opcode, data = frame
                if opcode == 0x8:  # close: answer it and stop
                    try:
                        conn.send_frame(0x8, data[:2])
                    except (OSError, ConnectionError):
                        pass
                    break
                if opcode == 0x9:  # ping
                    conn.send_frame(0xA, data)
                elif opcode == 0x1:
                    try:
                        msg = json.loads(data.decode())
                    except ValueError:
                        continue
                    with self._changed:
                        self._acks.append(msg)
                        self._changed.notify_all()
        except (OSError, ConnectionError):
            pass
        finally:
            conn.close()
            with self._changed:
                self._changed.notify_all()


def _truthy(v: Any) -> bool:
    return v in (True, 1, "1", "true", "True")


def _read_exact(rfile: Any, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = rfile.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _read_frame(rfile: Any) -> tuple[int, bytes] | None:
    """One client frame (RFC 6455 §5.2: clients always mask); fragments are joined."""
    opcode_first: int | None = None
    payload = b""
    while True:
        head = _read_exact(rfile, 2)
        if head is None:
            return None
        fin, opcode = head[0] & 0x80, head[0] & 0x0F
        masked, n = head[1] & 0x80, head[1] & 0x7F
        if n == 126:
            ext = _read_exact(rfile, 2)
            if ext is None:
                return None
            n = struct.unpack("!H", ext)[0]
        elif n == 127:
            ext = _read_exact(rfile, 8)
            if ext is None:
                return None
            n = struct.unpack("!Q", ext)[0]
        key = _read_exact(rfile, 4) if masked else b""
        if key is None:
            return None
        data = _read_exact(rfile, n) if n else b""
        if data is None:
            return None
        if masked:
            data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        if opcode >= 0x8:  # control frames are never fragmented
            return opcode, data
        if opcode_first is None:
            opcode_first = opcode
        payload += data
        if fin:
            return opcode_first, payload


_METHODS: dict[str, Callable[[FakeSlack, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": FakeSlack._auth_test,
    "chat.postMessage": FakeSlack._post_message,
    "chat.update": FakeSlack._update,
    "chat.postEphemeral": FakeSlack._post_ephemeral,
    "users.info": FakeSlack._users_info,
    "usergroups.users.list": FakeSlack._usergroup_users,
    "conversations.open": FakeSlack._conversations_open,
    "conversations.history": FakeSlack._conversations_history,
    "conversations.replies": FakeSlack._conversations_replies,
    "apps.connections.open": FakeSlack._apps_connections_open,
}


def _parse_body(content_type: str, raw: bytes, query: str) -> dict[str, Any]:
    body: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    ctype = content_type.split(";")[0].strip().lower()
    if raw:
        if ctype == "application/json":
            parsed = json.loads(raw.decode("utf-8"))
            if isinstance(parsed, dict):
                body.update(parsed)
        else:  # application/x-www-form-urlencoded (slack_sdk's default for non-JSON calls)
            body.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    for key in ("blocks", "attachments", "metadata"):  # form bodies carry these as JSON strings
        if isinstance(body.get(key), str):
            try:
                body[key] = json.loads(body[key])
            except ValueError:  # blocks that are not JSON: Slack's `invalid_blocks_format`
                raise SlackApiFault(
                    "invalid_blocks_format" if key == "blocks" else f"invalid_{key}"
                ) from None
    return body


def _make_handler(fake: FakeSlack) -> type[QuietHandler]:
    class Handler(QuietHandler):
        server_version = "FakeSlack/1.0"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path.rstrip("/") == "/link" and self.headers.get("Upgrade", "").lower() == "websocket":
                self._upgrade(dict(parse_qsl(parts.query)).get("ticket", ""))
                return
            self._api()

        def do_POST(self) -> None:
            if urlsplit(self.path).path.startswith("/actions/"):
                raw = self.read_body()
                try:
                    posted = json.loads(raw.decode() or "{}")
                except ValueError:
                    posted = {"raw": raw.decode(errors="replace")}
                with fake._changed:
                    fake._response_url_posts.append({"path": self.path, "body": posted})
                    fake._changed.notify_all()
                self.reply_json(200, {"ok": True})
                return
            self._api()

        def _api(self) -> None:
            parts = urlsplit(self.path)
            raw = self.read_body()
            if not parts.path.startswith("/api/"):
                self.reply(404, b"Not Found", "text/plain")
                return
            method = parts.path[len("/api/") :]
            record: dict[str, Any] = {"method": method, "body": {}, "status": 200, "error": None}
            with fake._lock:
                fake._requests.append(record)
            try:
                body = _parse_body(self.headers.get("Content-Type", ""), raw, parts.query)
            except (SlackApiFault, ValueError) as e:
                err = e.error if isinstance(e, SlackApiFault) else "invalid_json"
                self._answer_error(record, 200, err)
                return
            auth = self.headers.get("Authorization", "")
            token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
            token = token or body.pop("token", None)
            body.pop("token", None)
            record["body"] = body

            if fake.down:
                record.update(status=503, error="service_unavailable")
                self.reply(503, b"<html><body>503 Service Unavailable</body></html>", "text/html")
                return
            fault = self._take_fault(method)
            if fault is not None:
                extra = {}
                if fault.status == 429 and fault.retry_after is not None:
                    extra["Retry-After"] = str(fault.retry_after)
                self._answer_error(record, fault.status, fault.error, extra)
                return
            try:
                result = fake.handle(method, body, token)
            except SlackApiFault as e:
                self._answer_error(record, 200, e.error, errors=e.errors)
                return
            self.reply_json(200, result)

        def _answer_error(
            self,
            record: dict[str, Any],
            status: int,
            error: str,
            extra: dict[str, str] | None = None,
            errors: list[str] | None = None,
        ) -> None:
            record.update(status=status, error=error)
            answer: dict[str, Any] = {"ok": False, "error": error}
            if errors:
                answer["errors"] = errors
                answer["response_metadata"] = {"messages": [f"[ERROR] {e}" for e in errors]}
            self.reply_json(status, answer, after=extra or {})

        @staticmethod
        def _take_fault(method: str) -> _Fault | None:
            with fake._lock:
                chaos = getattr(fake, "_chaos", None)
                if chaos and chaos[0] > 0 and chaos[1].random() < chaos[0]:
                    return chaos[1].choice(
                        [
                            _Fault(None, "ratelimited", 429, 1, 1),
                            _Fault(None, "internal_error", 500, None, 1),
                            _Fault(None, "internal_error", 200, None, 1),  # ok:false on a 200
                            _Fault(None, "fatal_error", 200, None, 1),
                        ]
                    )
                for f in fake._faults:
                    if f.method is None or f.method == method:
                        f.remaining -= 1
                        if f.remaining <= 0:
                            fake._faults.remove(f)
                        return f
            return None

        def _upgrade(self, ticket: str) -> None:
            key = self.headers.get("Sec-WebSocket-Key", "")
            with fake._lock:
                known = ticket in fake._ws_tickets
                fake._ws_tickets.discard(ticket)
            if not key or not known:
                self.reply(401, b"invalid ticket", "text/plain")
                return
            accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            fake._ws_session(self, ticket)

    return Handler
