"""The Slack bridge (`deployctl slack`): button clicks become Updates, `/deploy status` reads the query.

Bolt (`slack_bolt.App`, sync) receives what Slack sends, over HTTP on POST `/slack/events` (signature
and five-minute freshness checked by Bolt's RequestVerification before any listener runs: a bad request
is answered 401 and never reaches Temporal) or over Socket Mode when `SLACK_APP_TOKEN` is set.

Over HTTP a verified request is acted on once: its (timestamp, signature) goes into a `ReplayCache`
for as long as it would pass the freshness check, and a repeat is answered 200 (`X-Slack-No-Retry: 1`)
without reaching a listener. The HTTP front is `starter.http_front`: one Starlette app on uvicorn, with
`/healthz` and room for more routes; it bounds how long a request may take to arrive (`READ_TIMEOUT`),
its size (`MAX_BODY`, 413 from the headers alone) and the connections at once.

`/deploy status` answers only the deploy's people (its requester, code owners, the people and groups on
its rosters, its SRE); anyone else, and anyone asking about a deploy that does not exist, gets the same
one line.

A click is acknowledged first (Slack wants its answer within three seconds, whatever Temporal does),
then sent as the Update the button names, with the clicker's id from the signed payload as the actor.
The workflow judges it; the bridge holds no rule. A refusal (wrong person, self-approval, stale step,
finished deploy, a second click on a step already acted on) comes back to the clicker as an ephemeral
message and changes nothing; an accepted click replaces the buttons with who did what, when. Slack's
retries and double clicks are therefore harmless: the step guard accepts one action per step.

Temporal calls run on one asyncio loop in a background thread (`TemporalRunner`); Bolt's listener
threads hand them over with `asyncio.run_coroutine_threadsafe`. (The HTTP front's own loop only reads
requests and hands each to Bolt's `dispatch` in a worker thread: it never waits on Temporal.) Outbound
Slack calls go through the WebClient of `starter.slack_api.make_web_client` (429 Retry-After
handling), as the worker's are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, TypeVar

from slack_bolt import Ack, App, BoltRequest, BoltResponse, Respond
from slack_bolt.error import BoltError
from slack_bolt.middleware import Middleware
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from starlette.routing import BaseRoute
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from starter import webhooks
from starter.client import Refused, connect, deploy_opening, query_status, send_action
from starter.config import Config, ConfigError, secret
from starter.http_front import EVENTS_PATH, make_front
from starter.slack_api import make_web_client
from workflows import messages
from workflows.models import ActionInput, Click, DeployStatus
from workflows.slack_blocks import ACTION_PREFIX, done_blocks, done_text, parse_click

T = TypeVar("T")

log = logging.getLogger("deployctl.slack")

BRIDGE_KEY_ENV = "DEPLOYCTL_BRIDGE_KEY"  # the bridge's private key: it signs the clicks it verified (SPEC §9)
COMMAND = "/deploy"
UPDATE_TIMEOUT = 60.0  # an Update needs a worker; do not hold a listener thread longer than this
QUERY_TIMEOUT = 20.0  # the whole `/deploy status` look-up: the query, then the history if need be
QUERY_RPC_TIMEOUT = 10.0  # the status query alone (no worker: it waits this long, then the history)
REPLAY_WINDOW = 300  # seconds Bolt accepts a request's timestamp either side of now (INTEGRATIONS §3)
REPLAY_CACHE_SIZE = 10_000  # verified requests remembered at most (Slack sends a few a minute)
MAX_SHOWN_ID = 120  # characters of a workflow id echoed back

HELP = (
    "*deployctl* — deploys wait on the people named in their DMs; click a button there to act.\n"
    f"• `{COMMAND} status <workflow id>`: where a deploy stands, who it waits on, its links\n"
    f"• `{COMMAND} help`: this text\n"
    "Anything else (cancel, audit, list) is in the CLI: `deployctl --help`."
)

TemporalFactory = Callable[[], Awaitable[Client]]


class TemporalRunner:
    """One asyncio loop in a daemon thread, holding the Temporal client (connected on first use)."""

    def __init__(self, factory: TemporalFactory) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._lock: asyncio.Lock | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="deployctl-temporal", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        """Whether the Temporal client exists yet (it is made on the first click or /deploy status)."""
        return self._client is not None

    async def _get(self) -> Client:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                self._client = await self._factory()
            return self._client

    def run(self, call: Callable[[Client], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Run `call(client)` on the loop and wait for it; TimeoutError after `timeout` seconds."""

        async def go() -> T:
            return await call(await self._get())

        future = asyncio.run_coroutine_threadsafe(go(), self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"Temporal did not answer within {timeout:.0f}s") from None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()


class ReplayCache:
    """The verified HTTP requests seen, by (timestamp, signature), for as long as they could pass
    Bolt's five-minute freshness check: from the later of their timestamp and their arrival, `window`
    seconds (plus one). Bounded: past `max_size` the oldest go first. Thread-safe (Bolt's dispatch runs
    in the HTTP front's worker threads).
    """

    def __init__(
        self,
        window: float = REPLAY_WINDOW,
        max_size: int = REPLAY_CACHE_SIZE,
        clock: Callable[[], float] = time.time,  # the wall clock, as Bolt's check uses
    ) -> None:
        self._window, self._max, self._clock = window, max_size, clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()  # key -> when it may be forgotten
        self._lock = threading.Lock()

    def first(self, timestamp: str, signature: str) -> bool:
        """True the first time this (timestamp, signature) is seen (it is remembered from now on); False
        for a repeat while it is remembered."""
        now = self._clock()
        try:
            sent = float(timestamp)
        except ValueError:
            sent = now
        key = (timestamp, signature)
        with self._lock:
            while self._seen:  # forget from the oldest; one kept longer may hold a few expired behind it
                oldest, until = next(iter(self._seen.items()))
                if until > now:
                    break
                del self._seen[oldest]
            known = self._seen.get(key)
            if known is not None and known > now:
                return False
            self._seen.pop(key, None)
            self._seen[key] = max(sent, now) + self._window + 1
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class _ReplayGuard(Middleware):
    """After Bolt verified the signature (its own middleware runs first): a repeat of a request already
    acted on is answered 200 and goes no further. Only HTTP requests carry signatures to key on; Socket
    Mode's envelopes are Slack's own, acknowledged by envelope id."""

    def __init__(self, cache: ReplayCache) -> None:
        self._cache = cache

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        timestamp = _header(req, "x-slack-request-timestamp")
        signature = _header(req, "x-slack-signature")
        if req.mode != "http" or not timestamp or not signature or self._cache.first(timestamp, signature):
            return next()
        retry = _header(req, "x-slack-retry-num")
        log.info(
            "a request already acted on came again (timestamp %s%s): answered 200, not acted on",
            timestamp,
            f", Slack's retry {retry}" if retry else "",
        )
        return BoltResponse(status=200, body="", headers={"X-Slack-No-Retry": "1"})


def _header(req: BoltRequest, name: str) -> str:
    values = req.headers.get(name) or []
    return str(values[0]) if values else ""


class BridgeApp(App):
    """The Bolt app, plus what it needs closed (the Temporal loop) and the HTTP replay cache."""

    temporal: TemporalRunner
    replays: ReplayCache

    def close(self) -> None:
        self.temporal.close()


def create_app(
    config: Config,
    temporal_client_factory: TemporalFactory,
    web_client: WebClient,
    signing_secret: str | None,
    *,
    token_verification_enabled: bool = True,
    bridge_key: str | None = None,
) -> BridgeApp:
    """The Slack app: `deployctl:*` clicks and `/deploy`. With token verification, Bolt checks the bot
    token with `auth.test` now (a BoltError when Slack refuses it).

    `signing_secret` may be None only for Socket Mode (which Slack authenticates by the app token):
    then HTTP requests are checked against a random secret nobody knows, so none can pass.
    """
    _quiet_token_warning()
    app = BridgeApp(
        name="deployctl",
        client=web_client,
        signing_secret=signing_secret or secrets.token_hex(32),
        token_verification_enabled=token_verification_enabled,
        process_before_response=False,  # ack() answers Slack at once; the listener goes on in a thread
    )
    app.temporal = TemporalRunner(temporal_client_factory)
    app.replays = ReplayCache()
    app.use(_ReplayGuard(app.replays))
    bridge = _Bridge(
        app.temporal, web_client, bridge_key or os.environ.get(BRIDGE_KEY_ENV, "").strip() or None
    )
    usage = HELP + f"\nThe Temporal Web UI: {config.ui_url}"

    @app.action({"type": "block_actions", "action_id": re.compile("^" + re.escape(ACTION_PREFIX))})
    def on_click(ack: Ack, body: dict[str, Any]) -> None:
        ack()  # first: Slack's three seconds do not wait for Temporal
        bridge.click(body)

    @app.command(COMMAND)
    def on_command(ack: Ack, command: dict[str, Any], respond: Respond) -> None:
        words = str(command.get("text") or "").split()
        if len(words) == 2 and words[0].lower() == "status":
            ack()
            user = str(command.get("user_id") or "")  # from the request whose signature Bolt verified
            respond(text=bridge.status_text(words[1], user), response_type="ephemeral")
        else:
            ack(text=usage, response_type="ephemeral")

    return app


class _TokenFromClient(logging.Filter):
    """Bolt warns that its env token is unused when a client is given: here that is the point."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`token` will be unused" not in record.getMessage()


def _quiet_token_warning() -> None:
    bolt = logging.getLogger("slack_bolt.App")
    if not any(isinstance(f, _TokenFromClient) for f in bolt.filters):
        bolt.addFilter(_TokenFromClient())


class _Bridge:
    def __init__(self, temporal: TemporalRunner, web: WebClient, key: str | None) -> None:
        self._temporal = temporal
        self._web = web
        self._key = key  # the bridge's own private key: it signs what it verified came from Slack

    # ---------------------------------------------------------------------------------------- clicks

    def click(self, body: dict[str, Any]) -> None:
        try:
            click = parse_click(body)
        except ValueError as err:
            user, channel, url = _where(body)
            log.warning("malformed deployctl click from %s: %s", user, err)
            self._tell(user, channel, url, f":warning: This button is malformed ({err}); nothing was done.")
            return
        if click is None:
            return
        msg = ActionInput(
            actor=click.user_id,  # from the payload whose signature Bolt verified
            step=click.step,
            sre=click.sre,
            diff_sha256=click.diff_sha256,
            channel="slack",
        )
        try:
            self._temporal.run(
                lambda client: send_action(
                    client, click.workflow_id, click.action, msg, key=self._key, sign=self._key is not None
                ),
                UPDATE_TIMEOUT,
            )
        except Refused as err:
            log.info("%s %s on %s refused: %s", click.user_id, click.action.value, click.workflow_id, err)
            self._tell_click(click, f":no_entry: Not done on `{click.workflow_id}`: {err}")
            return
        except Exception as err:  # Temporal unreachable, no worker, unknown deploy: say so, act on nothing
            log.warning("%s on %s not delivered: %s", click.action.value, click.workflow_id, err)
            self._tell_click(click, f":warning: Not done on `{click.workflow_id}`: {_trouble(err)}")
            return
        log.info(
            "%s %s accepted at %s on %s", click.user_id, click.action.value, click.step, click.workflow_id
        )
        self._mark_done(click, body)

    def _mark_done(self, click: Click, body: dict[str, Any]) -> None:
        line = done_text(click.user_id, click.step, click.action, datetime.now(UTC), click.sre)
        blocks = done_blocks(line, original=_first_text(body))
        if click.channel_id and click.message_ts:
            try:
                self._web.chat_update(channel=click.channel_id, ts=click.message_ts, text=line, blocks=blocks)
                return
            except SlackApiError as err:
                log.warning("chat.update of %s failed: %s", click.message_ts, err.response.get("error"))
            except OSError as err:
                log.warning("chat.update of %s failed: %s", click.message_ts, err)
        if click.response_url:
            self._respond(click.response_url, text=line, blocks=blocks, replace_original=True)

    def _tell_click(self, click: Click, text: str) -> None:
        self._tell(click.user_id, click.channel_id, click.response_url, text)

    def _tell(self, user: str | None, channel: str | None, response_url: str | None, text: str) -> None:
        """An ephemeral message to the clicker: chat.postEphemeral, else the response_url."""
        if user and channel:
            try:
                self._web.chat_postEphemeral(channel=channel, user=user, text=text)
                return
            except SlackApiError as err:
                log.warning("chat.postEphemeral to %s failed: %s", user, err.response.get("error"))
            except OSError as err:
                log.warning("chat.postEphemeral to %s failed: %s", user, err)
        if response_url:
            self._respond(response_url, text=text, response_type="ephemeral", replace_original=False)

    @staticmethod
    def _respond(url: str, **message: Any) -> None:
        try:
            Respond(response_url=url)(**message)
        except Exception as err:  # the last way to answer; log and give up
            log.warning("response_url post failed: %s", err)

    # --------------------------------------------------------------------------------------- /deploy

    def status_text(self, workflow_id: str, user: str) -> str:
        """`/deploy status` for `user`: the summary when they are one of the deploy's people
        (`deploy_people`); otherwise, and when there is no such deploy, one line that says nothing
        about it, the same for every id."""
        if not user or len(workflow_id) > 255:  # longer than any deploy id deployctl makes
            return not_part_text(workflow_id)
        try:
            seen = self._temporal.run(lambda client: _look_up(client, workflow_id, user), QUERY_TIMEOUT)
        except Exception as err:  # Temporal unreachable: true of every id, so it tells nothing of this one
            if isinstance(err, RPCError) and err.status is RPCStatusCode.NOT_FOUND:
                return not_part_text(workflow_id)
            why = f"{err}; try again, or use the CLI" if isinstance(err, TimeoutError) else _trouble(err)
            return f":warning: deployctl cannot read deploys right now: {why}"
        st, trouble, people = seen
        if user not in people:
            return not_part_text(workflow_id)
        if st is None:
            return f":warning: No status for `{_shown(workflow_id)}` right now: {_trouble(trouble)}"
        return status_summary(st)


_Seen = tuple[DeployStatus | None, BaseException | None, frozenset[str]]


async def _look_up(client: Client, workflow_id: str, user: str) -> _Seen:
    """The deploy's status (or why the query failed) and its people, as far as needed to tell whether
    `user` is one of them: the status first; the history (requester, the workers' code owners) only when
    the status does not name them, or did not come. NOT_FOUND (no such deploy) propagates."""
    st: DeployStatus | None = None
    trouble: BaseException | None = None
    try:
        st = await query_status(client, workflow_id, rpc_timeout=QUERY_RPC_TIMEOUT)
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise
        trouble = err
    except Exception as err:  # WorkflowQueryFailedError, a timeout: no worker answered
        trouble = err
    people = deploy_people(st)
    if user in people:
        return st, None, people
    try:
        intent, _, rules = await deploy_opening(client, workflow_id)
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise
        log.warning("history of %s not read: %s", workflow_id, err)
        return st, trouble or err, people
    requester = [intent.actor] if intent is not None else []
    owners = rules.service.code_owners if rules is not None and rules.service is not None else ()
    return st, trouble, deploy_people(st, requester, owners)


def deploy_people(
    st: DeployStatus | None, requester: Iterable[str] = (), code_owners: Iterable[str] = ()
) -> frozenset[str]:
    """Who may see a deploy's status: its requester and code owners, everyone eligible on any of its
    rosters or in any group resolved there, and its assigned SRE."""
    people = {*requester, *code_owners}
    if st is not None:
        people.update(e.actor for e in st.audit if e.action == "start" and e.accepted)  # the requester
        for roster in st.rosters:
            people.update(roster.eligible)
            for members in roster.groups.values():
                people.update(members)
        if st.sre:
            people.add(st.sre)
    return frozenset(p for p in people if p)


def not_part_text(workflow_id: str) -> str:
    """The one line for someone who is not one of a deploy's people, and for a deploy that does not
    exist: nothing about the deploy, not even whether there is one."""
    return (
        f":lock: You are not part of deploy `{_shown(workflow_id)}`: `{COMMAND} status` answers only a "
        "deploy's requester, code owners, rosters and SRE."
    )


def _shown(workflow_id: str) -> str:
    """An id someone typed, echoed as text: no markup, no closing backtick, bounded."""
    text = workflow_id if len(workflow_id) <= MAX_SHOWN_ID else workflow_id[:MAX_SHOWN_ID] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


def status_summary(st: DeployStatus) -> str:
    """The `/deploy status` answer: step, who it waits on, outcome, links."""
    return "\n".join(messages.status_lines(st, datetime.now(UTC), "slack"))


def _where(body: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """Who clicked, in which channel, and the response_url, from any block_actions payload."""
    user, container, channel = (_obj(body, k) for k in ("user", "container", "channel"))
    url = body.get("response_url")
    return (
        user.get("id") or None,
        container.get("channel_id") or channel.get("id") or None,
        url if isinstance(url, str) and url else None,
    )


def _first_text(body: dict[str, Any]) -> str:
    """The first section's text of the clicked message (what it asked), to keep above the done line."""
    for block in _obj(body, "message").get("blocks") or []:
        if isinstance(block, dict) and block.get("type") == "section":
            text = _obj(block, "text").get("text")
            if isinstance(text, str):
                return text
    return ""


def _obj(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    return value if isinstance(value, dict) else {}


def _trouble(err: BaseException | None) -> str:
    """One line for a failure that is not a refusal."""
    if isinstance(err, WorkflowQueryFailedError):
        return f"its workers could not answer ({err}); try again, or use the CLI"
    if isinstance(err, RPCError):
        if err.status is RPCStatusCode.NOT_FOUND:
            return "no such deploy (check the workflow id)"
        return f"Temporal said: {err.message}; try again, or use the CLI"
    if isinstance(err, TimeoutError):
        return f"{err} (are the workers running?); it may still happen: check `{COMMAND} status`"
    return f"deployctl could not reach Temporal ({type(err).__name__}: {err}); try again, or use the CLI"


# ---------------------------------------------------------------------------------------------- main


def bridge_key_file(config: Config, env: dict[str, str] | None = None) -> str | None:
    """$DEPLOYCTL_BRIDGE_KEY, the private key the bridge signs clicks with. Required unless the config
    takes identities as claimed: without it every click would be refused as unsigned."""
    path = (os.environ if env is None else env).get(BRIDGE_KEY_ENV, "").strip()
    if not path:
        if config.security.require_signed_actions:
            raise ConfigError(
                f"{BRIDGE_KEY_ENV} is not set: the workers accept only signed actions; give the bridge a "
                "private key file and list its public half in [slack] bridge_keys (docs/operations.md)"
            )
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"{BRIDGE_KEY_ENV}={path}: no such key file")
    return path


def run_bridge(host: str, port: int, config: Config, *, extra_routes: Sequence[BaseRoute] = ()) -> int:
    """Run the bridge until SIGINT/SIGTERM: Socket Mode with SLACK_APP_TOKEN, else HTTP on host:port
    (`starter.http_front`, with the webhooks (`starter.webhooks`) and `extra_routes` mounted beside
    /slack/events and /healthz). In Socket Mode, host:port serves the webhooks when a webhook secret is set.

    Missing secrets raise ConfigError (the CLI exits 2); returns the exit code otherwise.
    """
    bot_token = secret("SLACK_BOT_TOKEN")
    app_token = secret("SLACK_APP_TOKEN", required=False)
    signing_secret = None if app_token else secret("SLACK_SIGNING_SECRET")
    assert bot_token is not None
    bridge_key = bridge_key_file(config)
    logging.basicConfig(
        level=os.environ.get("DEPLOYCTL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    web = make_web_client(bot_token, config.slack.api_url)
    try:
        app = create_app(config, connect, web, signing_secret, bridge_key=bridge_key)
    except BoltError as err:  # auth.test refused the token
        raise ConfigError(f"SLACK_BOT_TOKEN was refused by Slack at {config.slack.api_url}: {err}") from None
    except OSError as err:
        print(f"deployctl: cannot reach Slack at {config.slack.api_url}: {err}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # The webhooks (starter/webhooks.py) share the HTTP front; in Socket Mode the front serves only for them
    # (its /slack/events then checks against a secret nobody knows, so no Slack request passes there).
    routes = [*webhooks.webhook_routes(config, app.temporal), *extra_routes]
    try:
        if app_token:
            if not webhooks.configured():
                return _run_socket_mode(app, app_token, web, stop)
            try:
                front = make_front(app, host, port, extra_routes=routes)
            except OSError as err:
                print(
                    f"deployctl: cannot listen on {host}:{port} for webhooks ({err.strerror})",
                    file=sys.stderr,
                )
                return 1
            front.start()
            print(f"deployctl slack: webhooks on http://{host}:{front.port}/webhooks/", file=sys.stderr)
            try:
                return _run_socket_mode(app, app_token, web, stop)
            finally:
                front.stop()
        return _run_http(app, host, port, stop, routes)
    finally:
        app.close()


def _run_socket_mode(app: App, app_token: str, web: WebClient, stop: threading.Event) -> int:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    handler = SocketModeHandler(app, app_token, web_client=web)
    try:
        handler.connect()
    except (SlackApiError, OSError) as err:
        print(f"deployctl: Socket Mode connection failed: {err}", file=sys.stderr)
        return 1
    print("deployctl slack: connected over Socket Mode; Ctrl-C stops", file=sys.stderr, flush=True)
    while not stop.wait(1):
        pass
    handler.close()
    return 0


def _run_http(
    app: App, host: str, port: int, stop: threading.Event, extra_routes: Sequence[BaseRoute] = ()
) -> int:
    try:
        front = make_front(app, host, port, extra_routes=extra_routes)
    except OSError as err:
        print(f"deployctl: cannot listen on {host}:{port} ({err.strerror}); pass --port", file=sys.stderr)
        return 1
    front.start()
    limits = front.limits
    where = f"http://{host}:{front.port}{EVENTS_PATH}"
    print(
        f"deployctl slack: listening on {where} (headers and body within {limits.read_timeout:g}s each, "
        f"bodies up to {limits.max_body} bytes, {limits.limit_concurrency} connections); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    while not stop.wait(1):
        pass
    front.stop()
    return 0
