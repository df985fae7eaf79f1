"""Webhooks: GitHub's `pull_request` events and the Jenkins deploy job's notifications become the Signal
`outside_event` to the deploy they concern, so a merge or an input answered elsewhere is noticed within
a second or two instead of at the watcher's next poll.

Routes, mounted on the Slack bridge's HTTP front (`starter.http_front`: its bounds hold for them too):
- `POST /webhooks/github`: a repository webhook of the configs repo, content type `application/json`,
  event "Pull requests", secret `GITHUB_WEBHOOK_SECRET`. `X-Hub-Signature-256` must be `sha256=` + the
  hex HMAC-SHA256 of the raw body under the secret (checked with `hmac.compare_digest` before a byte of
  the body is parsed). `ping` is answered 200. A `pull_request` event whose action is `closed` (merged or
  not) or `synchronize`, on the configs repo, from a head branch `deployctl/<workflow id>` (the branch the
  deploy opened its version PR from, workflows/lifecycle.py) signals that deploy. An `X-GitHub-Delivery`
  seen before is answered 200 and sends nothing.
- `POST /webhooks/jenkins`: the deploy job's notification (docs/jenkins.md has the Groovy line), a JSON
  body `{"job": "platform/deploy-x", "build": 12, "event": "input_answered"}` with the shared secret
  `JENKINS_WEBHOOK_SECRET` in `X-Deployctl-Token`. Events `input_waiting`, `input_answered` and
  `finished` signal the running deploy at `deploy_approval` whose build that is (found through Temporal:
  the deploys at that step, then each one's own status, `client.deploys_at_build`).

Answers: no secret in the environment → 404 (the route is off, and the bridge logged why at start);
missing or wrong signature or token → 401; not JSON, or not the expected shape → 400; a GitHub
content type other than JSON → 415; Temporal unreachable → 503 (GitHub shows a failed delivery, which can
be redelivered); anything else 200 with a line saying what was done. No refusal sends anything to
Temporal. Bodies are bounded by the front (1 MiB, `http_front.MAX_BODY`): GitHub may send up to 25 MB,
but a `pull_request` payload is tens of KiB; a larger delivery is refused 413 and the watcher's poll
still notices the change.

**Trust.** A webhook can do nothing a poll could not. The Signal carries no verdict, only "look again
now" (`OutsideEvent`: the system and a line of detail); the workflow then reads the PR it opened, or the
build it triggered, through its own watcher activity, and believes only that. So the signature guards
against noise, not against a forged verdict: a forged event (even one signed with a leaked secret, or a
PR from a fork whose branch is named `deployctl/<id>`) costs at most one extra read of GitHub or Jenkins.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.client import Client

from starter.client import deploys_at_build, signal_outside_event
from starter.config import Config, secret
from workflows.models import OutsideEvent

log = logging.getLogger("deployctl.webhooks")

T = TypeVar("T")

GITHUB_PATH = "/webhooks/github"
JENKINS_PATH = "/webhooks/jenkins"
TOKEN_HEADER = "X-Deployctl-Token"
BRANCH_PREFIX = "deployctl/"  # the version PR's head branch: deployctl/<workflow id>
PR_ACTIONS = ("closed", "synchronize")  # merged or closed; new commits on the head (the SRE's diff moved)
JENKINS_EVENTS = ("input_waiting", "input_answered", "finished")
TEMPORAL_TIMEOUT = 15.0  # seconds for the look-up and the Signal; then 503
DELIVERIES_KEPT = 10_000  # X-GitHub-Delivery ids remembered (a replay of an older one costs one read)
WORKFLOW_ID = re.compile(r"^deploy-[A-Za-z0-9._-]{1,200}$")


class Runner(Protocol):
    """What runs a Temporal call for a route: the bridge's `TemporalRunner` (its own loop and client)."""

    def run(self, call: Callable[[Client], Coroutine[Any, Any, T]], timeout: float) -> T: ...


class JenkinsNotice(BaseModel):
    """The body the deploy job POSTs (docs/jenkins.md)."""

    model_config = ConfigDict(extra="ignore")

    job: str = Field(min_length=1, max_length=300, pattern=r"^[^\s]+$")
    build: int = Field(ge=1, lt=1 << 31)
    event: str = Field(min_length=1, max_length=40)


def github_signature(secret_value: str, body: bytes) -> str:
    """What GitHub sends in `X-Hub-Signature-256` for `body` under the webhook's secret."""
    return "sha256=" + hmac.new(secret_value.encode(), body, hashlib.sha256).hexdigest()


class _Seen:
    """Delivery ids already acted on, the oldest forgotten first."""

    def __init__(self, size: int = DELIVERIES_KEPT) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._ids

    def add(self, key: str) -> None:
        with self._lock:
            self._ids[key] = None
            while len(self._ids) > self._size:
                self._ids.popitem(last=False)


def _obj(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _text(status: int, line: str) -> Response:
    return PlainTextResponse(line + "\n", status_code=status)


def webhook_routes(config: Config, temporal: Runner, env: Mapping[str, str] | None = None) -> list[BaseRoute]:
    """`POST /webhooks/github` and `POST /webhooks/jenkins`, with their secrets read from `env` (default
    `os.environ`) now. A route whose secret is unset answers 404; the log says so once, here."""
    environ = os.environ if env is None else env
    github_secret = secret("GITHUB_WEBHOOK_SECRET", environ, required=False)
    jenkins_secret = secret("JENKINS_WEBHOOK_SECRET", environ, required=False)
    for name, value, path in (
        ("GITHUB_WEBHOOK_SECRET", github_secret, GITHUB_PATH),
        ("JENKINS_WEBHOOK_SECRET", jenkins_secret, JENKINS_PATH),
    ):
        if value is None:
            log.info("%s is not set: POST %s answers 404 (no webhook from there)", name, path)
    seen = _Seen()
    configs_repo = config.github.configs_repo.lower()

    async def call(fn: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        return await run_in_threadpool(temporal.run, fn, TEMPORAL_TIMEOUT)

    async def signal(workflow_id: str, event: OutsideEvent) -> str:
        return await call(lambda client: signal_outside_event(client, workflow_id, event))

    async def github(request: Request) -> Response:
        if github_secret is None:
            log.info("GitHub webhook refused: GITHUB_WEBHOOK_SECRET is not set")
            return _text(404, "not found")
        body = await request.body()
        given = request.headers.get("x-hub-signature-256", "")
        if not given or not hmac.compare_digest(
            given.encode(), github_signature(github_secret, body).encode()
        ):
            log.warning("GitHub webhook refused: %s X-Hub-Signature-256", "wrong" if given else "no")
            return _text(401, "bad or missing X-Hub-Signature-256")
        kind = request.headers.get("x-github-event", "")
        delivery = request.headers.get("x-github-delivery", "")[:100]
        if kind == "ping":
            return _text(200, "pong")
        if not request.headers.get("content-type", "").startswith("application/json"):
            return _text(415, "set the webhook's content type to application/json")
        try:
            payload = json.loads(body)
        except ValueError:
            return _text(400, "the body is not JSON")
        if not isinstance(payload, dict):
            return _text(400, "the body is not a JSON object")
        if kind != "pull_request":
            return _text(200, f"ignored: event {kind[:40]!r} (only pull_request matters)")
        action = payload.get("action")
        pr, repo = _obj(payload, "pull_request"), _obj(payload, "repository")
        head = _obj(pr, "head")
        ref, number, full_name = head.get("ref"), pr.get("number"), repo.get("full_name")
        if not isinstance(ref, str) or not isinstance(number, int) or not isinstance(full_name, str):
            return _text(400, "not a pull_request payload (pull_request.head.ref, number, repository)")
        if action not in PR_ACTIONS:
            return _text(200, f"ignored: action {str(action)[:40]!r}")
        if full_name.lower() != configs_repo:
            return _text(200, f"ignored: {full_name[:140]} is not the configs repo")
        workflow_id = ref[len(BRANCH_PREFIX) :] if ref.startswith(BRANCH_PREFIX) else ""
        if not WORKFLOW_ID.match(workflow_id):
            return _text(200, "ignored: not a deployctl branch")
        if delivery and delivery in seen:
            return _text(200, f"already seen: delivery {delivery}")
        merged = " (merged)" if action == "closed" and pr.get("merged") is True else ""
        detail = f"pull_request {action}{merged} #{number}" + (f", delivery {delivery}" if delivery else "")
        event = OutsideEvent(system="github", detail=detail[:200])
        try:
            what = await signal(workflow_id, event)
        except Exception as err:  # Temporal unreachable or slow: GitHub shows the failure; redeliver
            log.warning("GitHub webhook for %s not passed on: %s", workflow_id, err)
            return _text(503, "Temporal did not answer; redeliver later")
        if delivery:
            seen.add(delivery)
        log.info("GitHub webhook %s → %s: %s", detail, workflow_id, what)
        return _text(200, f"{what}: {workflow_id}")

    async def jenkins(request: Request) -> Response:
        if jenkins_secret is None:
            log.info("Jenkins webhook refused: JENKINS_WEBHOOK_SECRET is not set")
            return _text(404, "not found")
        body = await request.body()
        given = request.headers.get(TOKEN_HEADER.lower(), "")
        if not given or not hmac.compare_digest(given.encode(), jenkins_secret.encode()):
            log.warning("Jenkins webhook refused: %s %s", "wrong" if given else "no", TOKEN_HEADER)
            return _text(401, f"bad or missing {TOKEN_HEADER}")
        try:
            notice = JenkinsNotice.model_validate_json(body)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return _text(400, f'bad notification: {where}: {first["msg"]} (send {{"job", "build", "event"}})')
        if notice.event not in JENKINS_EVENTS:
            return _text(200, f"ignored: event {notice.event!r} (only {', '.join(JENKINS_EVENTS)} matter)")
        detail = f"{notice.event}: {notice.job} #{notice.build}"
        event = OutsideEvent(system="jenkins", detail=detail[:200])
        try:
            found = await call(lambda client: deploys_at_build(client, notice.job, notice.build))
            results = [(wid, await signal(wid, event)) for wid in found]
        except Exception as err:
            log.warning("Jenkins webhook for %s #%s not passed on: %s", notice.job, notice.build, err)
            return _text(503, "Temporal did not answer; send again later")
        log.info("Jenkins webhook %s → %s", detail, results or "no deploy")
        if not results:
            return _text(200, f"no deploy waits at deploy_approval on {notice.job} #{notice.build}")
        return _text(200, "; ".join(f"{what}: {wid}" for wid, what in results))

    return [
        Route(GITHUB_PATH, github, methods=["POST"]),
        Route(JENKINS_PATH, jenkins, methods=["POST"]),
    ]


Kind = Literal["github", "jenkins"]


def configured(env: Mapping[str, str] | None = None) -> list[Kind]:
    """The webhooks whose secret is set in `env` (default `os.environ`)."""
    environ = os.environ if env is None else env
    kinds: list[Kind] = []
    if secret("GITHUB_WEBHOOK_SECRET", environ, required=False):
        kinds.append("github")
    if secret("JENKINS_WEBHOOK_SECRET", environ, required=False):
        kinds.append("jenkins")
    return kinds
