"""Jenkins activities: read a job's parameters, start the deploy build once, read its diff, answer or
watch its `input` step, wait for its result, abort it.

`JenkinsActivities` is built once by the worker and holds one python-jenkins client per worker thread
(its `requests.Session` is not thread-safe). Every activity is a sync `def` run by the worker's thread
pool, takes one model and returns one model. The polling activities heartbeat on every poll and notice
cancellation cooperatively between polls (`no_thread_cancel_exception=True`: no exception is injected
into a thread in the middle of a request on its client).

Light on Jenkins (issue 15): every polling loop (`wait_build_started`, `read_diff`, `input_action` while
the build has not reached its input, `watch_input`, `wait_build_result`) paces itself with
`activities.budget`: tight (`poll_interval` / `watch_interval`) for the first minute of each call, then
`poll_cap` seconds (30) per request the poll made, so a waiting deploy asks Jenkins at most twice a minute
and never waits more than 60 s between polls. The console is read incrementally (`logText/progressiveText`
from the offset reached, never the whole `consoleText` again), and its `X-More-Data` header tells whether
the build still runs, so a poll costs one request while the input waits and two at most otherwise. POSTs
(trigger, proceed, abort, stop) are never delayed.

Failures are classified where they happen:
- 401/403 → non-retryable `JenkinsAuth` (names the URL and user, never the token); a 403 "No valid
  crumb" is retryable `JenkinsCrumb` and the cached crumb is dropped so the retry fetches a fresh one.
- 404 → non-retryable `JenkinsNotFound`; other 4xx → non-retryable `JenkinsRejected`.
- 429 → retryable, honouring `Retry-After`; 5xx → retryable `JenkinsUnavailable`; connection errors and
  timeouts → retryable `JenkinsUnreachable`.
Every message built from a client's error is scrubbed (`activities.common.scrub`): it carries neither the
token (plain or URL-quoted) nor a URL's user name and password.

Password parameters (SPEC §10): `trigger_build` is given their names only. It reads each value from
`DEPLOYCTL_PARAM_<NAME>` in this worker's environment when it runs (`workflows.policy.secret_env`), sends
them in the POST's form body (never in a URL, which proxies and access logs keep), and scrubs them from
every error it raises, as it does the token. Jenkins never shows a password value back (`api/json`
lists the parameter with no `value`), so matching a build's parameters treats a hidden value as a match.
python-jenkins reports statuses in three ways (`JenkinsException("…[403]…")`, `NotFoundException`, or its
own "does not exist" re-raised from either); the status is recovered from the exception chain.

How the input step's answer is attributed: Jenkins prints "Approved by NAME" / "Rejected by NAME" (and
"Aborted by NAME" for a stop) in the console, NAME being the user's display name. An answer counts as
ours when NAME is our user id or its full name (read from `/me/api/json`) and its verb matches our
decision; any other answer is reported as `answered_elsewhere`.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlencode, urlsplit

import jenkins
import requests
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from activities.budget import JENKINS_CAP, TIGHT_FOR, Pacer, PollSchedule
from activities.common import heartbeat, heartbeating, scrub, scrubbed, sleep_unless_cancelled
from workflows.models import (
    AbortBuildInput,
    BuildRef,
    BuildResult,
    BuildResultInput,
    InputActionInput,
    InputActionResult,
    InputState,
    JobParameter,
    JobParametersInput,
    JobParametersResult,
    ReadDiffInput,
    ReadDiffResult,
    TriggerBaseline,
    TriggerBuildInput,
    TriggerBuildResult,
    WaitBuildStartedInput,
    WatchInputInput,
    WatchInputResult,
)
from workflows.policy import is_password, param_text, secret_env

T = TypeVar("T")

#: A build of ours may carry a timestamp slightly before `not_before` (clock skew between us and Jenkins).
NOT_BEFORE_SKEW = timedelta(seconds=2)

#: What trigger_build reads of the job: its parameter definitions and its recent builds' parameters.
_TRIGGER_TREE = (
    "property[parameterDefinitions[name,type,defaultParameterValue[value],choices]],"
    "builds[number,url,timestamp,queueId,actions[parameters[name,value]]]{0,100}"
)
_QUEUE_ID_TREE = "builds[number,url,queueId]{0,100}"
_STATUS_IN_MESSAGE = re.compile(r"\[(\d{3})\]")
_ANSWER_LINE = re.compile(r"^(Approved|Rejected|Aborted) by (.+?)\s*$")
_ANSWER_KIND = {"Approved": "proceed", "Rejected": "abort", "Aborted": "stop"}
_TAGS = re.compile(r"<[^>]+>")


# ---------------------------------------------------------------------------------------------------
# Pure helpers (unit-testable, no I/O)


def job_path(job: str) -> str:
    """`platform/deploy-x` → `job/platform/job/deploy-x/` (relative to the Jenkins root)."""
    return "".join(f"job/{quote(part, safe='')}/" for part in job.split("/"))


def input_url_id(input_id: str) -> str:
    """The input step's id as it appears in URLs: Jenkins upper-cases the first letter."""
    return input_id[:1].upper() + input_id[1:]


def choose_input(
    pending: list[dict[str, Any]], configured: str | None, number: int
) -> tuple[str | None, str | None]:
    """Which of a build's pending inputs deployctl answers.

    `(id, None)`: that one. `(None, None)`: none is pending. `(None, why)`: it is unclear, and `why` says so
    in one line: several are pending and none is configured, or the configured one is not among them.
    Jenkins names an input without `id:` itself (the capitalised MD5 of its message), so the id is read
    from the build, never assumed."""
    ids = [str(p["id"]) for p in pending if p.get("id")]
    if not ids:
        return None, None
    shown = ", ".join(f"`{i}`" for i in ids)
    if configured:
        want = input_url_id(configured)
        if want in ids:
            return want, None
        return None, f"build #{number} waits at input {shown}, not the configured `{want}`"
    if len(ids) == 1:
        return ids[0], None
    return None, (
        f"build #{number} waits at {len(ids)} inputs ({shown}) and no input_id is configured: "
        "set input_id for the service to the one deployctl answers"
    )


def extract_diff(console: str, begin: str, end: str) -> list[str] | None:
    """The console lines strictly between the first `begin` marker line and the next `end` marker line,
    or None while the block is not complete. Marker lines match after stripping surrounding whitespace."""
    lines = [line.rstrip("\r") for line in console.split("\n")]
    start = next((i for i, line in enumerate(lines) if line.strip() == begin.strip()), None)
    if start is None:
        return None
    stop = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == end.strip()), None)
    if stop is None:
        return None
    return lines[start + 1 : stop]


def diff_text(lines: list[str]) -> str:
    """The diff as hashed: the lines joined with "\\n" plus a final "\\n"."""
    return "\n".join(lines) + "\n"


def parameter_definitions(job_info: dict[str, Any]) -> list[JobParameter]:
    """The `parameterDefinitions` of a job's `api/json` (in `property`, or `actions` on old Jenkins)."""
    holders = [*(job_info.get("property") or []), *(job_info.get("actions") or [])]
    for holder in holders:
        if isinstance(holder, dict) and holder.get("parameterDefinitions"):
            out: list[JobParameter] = []
            for d in holder["parameterDefinitions"]:
                default = d.get("defaultParameterValue")
                choices = d.get("choices")
                out.append(
                    JobParameter(
                        name=d["name"],
                        type=d.get("type")
                        or str(d.get("_class", "")).rsplit(".", 1)[-1]
                        or "StringParameterDefinition",
                        default=param_text(default.get("value")) if isinstance(default, dict) else None,
                        choices=[str(c) for c in choices] if isinstance(choices, list) else None,
                    )
                )
            return out
    return []


def action_params(obj: dict[str, Any]) -> dict[str, str | None]:
    """The parameters of a build or queue item (`actions[].parameters`); password values read as None."""
    for action in obj.get("actions") or []:
        if isinstance(action, dict) and isinstance(action.get("parameters"), list):
            return {p["name"]: param_text(p.get("value")) for p in action["parameters"] if "name" in p}
    return {}


def same_params(found: dict[str, str | None], wanted: dict[str, str]) -> bool:
    """Exactly the same names, and the same values (a value Jenkins hides, like a password, matches)."""
    return set(found) == set(wanted) and all(v is None or v == wanted[k] for k, v in found.items())


def url_job_part(url: str) -> str:
    """The `/job/…` part of a Jenkins URL's path, decoded: compares URLs whatever the root URL is."""
    path = unquote(urlsplit(url).path)
    i = path.find("/job/")
    return path[i:] if i >= 0 else path


def first_answer(console: str) -> tuple[str, str, str] | None:
    """The first "Approved by X" / "Rejected by X" / "Aborted by X" line: (kind, who, line)."""
    for raw in console.split("\n"):
        line = raw.rstrip("\r")
        m = _ANSWER_LINE.match(line)
        if m:
            return _ANSWER_KIND[m.group(1)], m.group(2), line
    return None


def http_status(exc: BaseException) -> int | None:
    rsp = _http_response(exc)
    if rsp is not None:
        return rsp.status_code
    e: BaseException | None = exc
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, jenkins.NotFoundException):
            return 404
        if isinstance(e, jenkins.JenkinsException):
            m = _STATUS_IN_MESSAGE.search(str(e))
            if m:
                return int(m.group(1))
        e = e.__cause__ or e.__context__
    return None


def _http_response(exc: BaseException) -> requests.Response | None:
    e: BaseException | None = exc
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, requests.HTTPError) and e.response is not None:
            return e.response
        e = e.__cause__ or e.__context__
    return None


@dataclass
class Console:
    """What one activity attempt has read of a build's console so far (`logText/progressiveText`): the text,
    the byte offset to ask for next (Jenkins' `X-Text-Size`), and whether the build still runs
    (`X-More-Data: true`). Kept in a local variable: a retried attempt starts again from 0."""

    text: str = ""
    offset: int = 0
    more: bool = True
    grew: bool = False  # the last read brought new text

    def add(self, start: int, body: bytes, next_offset: int | None, more: bool) -> None:
        """One answer to `progressiveText?start=start`. Jenkins sends whole lines while the build runs, so a
        chunk never ends inside a UTF-8 sequence; a next offset below `start` means the log started over
        (Stapler answers from 0 when `start` is past the end)."""
        chunk = body.decode("utf-8", "replace")
        end = next_offset if next_offset is not None else start + len(body)
        if end < start:
            self.text = chunk  # rolled over: Jenkins answered from 0
        else:
            self.text += chunk
        self.grew = bool(chunk)
        self.offset, self.more = end, more


#: Stapler sends at most this many lines in one progressiveText answer while a build runs.
PROGRESSIVE_MAX_LINES = 10000
#: How many progressiveText requests one read makes at most to catch up with a long console.
CATCH_UP_READS = 20

# A read meeting one of these is tried again in the activity after these pauses (seconds).
TRANSIENT = ("JenkinsUnavailable", "JenkinsUnreachable")
READ_RETRY_PAUSES = (0.2, 0.5, 1.0)


# ---------------------------------------------------------------------------------------------------
# The activities


class JenkinsActivities:
    def __init__(
        self,
        url: str,
        user: str,
        token: str,
        timeout: float = 10.0,
        *,
        poll_interval: float = 0.5,
        watch_interval: float = 1.0,
        poll_cap: float = JENKINS_CAP,
        tight_for: float = TIGHT_FOR,
    ) -> None:
        """`poll_interval` (the waits for a build, its diff, its result) and `watch_interval` (the input at
        `deploy_approval`) are the tight pauses of a wait's first `tight_for` seconds; after that a wait
        pauses `poll_cap` seconds per request it made (`activities.budget`: 2 requests a minute)."""
        self.url = url.rstrip("/")
        self.user = user
        self._token = token
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.watch_interval = watch_interval
        self.poll_cap = poll_cap
        self.tight_for = tight_for
        self._local = threading.local()
        self._our_names: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"JenkinsActivities(url={scrub(self.url)!r}, user={self.user!r})"

    # -- plumbing ----------------------------------------------------------------------------------

    def _pacer(self, first: float, stretch: float | None = None) -> Pacer:
        """The schedule of one wait (one activity call): `first` seconds apart for `tight_for`, then
        `poll_cap` seconds per request; `stretch` seconds apart instead when webhooks bring the news
        (`PollSchedule.stretched`)."""
        return Pacer(
            PollSchedule(first=first, cap=self.poll_cap, tight_for=self.tight_for).stretched(stretch)
        )

    def _requests(self) -> int:
        """How many HTTP requests this worker thread has sent to Jenkins (a poll's cost is the difference)."""
        return int(getattr(self._local, "requests", 0))

    def _count_request(self) -> None:
        self._local.requests = self._requests() + 1

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = jenkins.Jenkins(self.url, username=self.user, password=self._token, timeout=self.timeout)
            self._local.client = client
        return client

    def _scrub(self, text: str) -> str:
        """`text` without our token and without any URL's user name and password."""
        return scrub(text, (self._token,))

    def _failure(self, exc: BaseException, what: str, secrets: tuple[str, ...] = ()) -> BaseException:
        """Turn whatever the client raised into a classified ApplicationError (see module docstring),
        its message scrubbed of our token, of `secrets` and of any URL's credentials (it reaches the
        history)."""
        return scrubbed(self._classify(exc, what), (self._token, *secrets))

    def _classify(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, ApplicationError | CancelledError):
            return exc
        rsp = _http_response(exc)
        status = http_status(exc)
        body = self._scrub(" ".join(_TAGS.sub(" ", rsp.text).split())[:200]) if rsp is not None else ""
        where = f"Jenkins at {self.url}"
        if status in (401, 403):
            if "No valid crumb" in body or "No valid crumb" in str(exc):
                self._client().crumb = None
                return ApplicationError(
                    f"{what}: {where} rejected the CSRF crumb (HTTP 403); a fresh one is fetched on retry",
                    type="JenkinsCrumb",
                )
            return ApplicationError(
                f"{what}: {where} refused user {self.user!r} (HTTP {status}). Check that the configured "
                "API token is valid for that user and that the user may read, build and answer the job.",
                type="JenkinsAuth",
                non_retryable=True,
            )
        if status == 404:
            return ApplicationError(
                f"{what}: not found on {where} (HTTP 404)", type="JenkinsNotFound", non_retryable=True
            )
        if status == 429:
            delay = None
            if rsp is not None and (rsp.headers.get("Retry-After") or "").strip().isdigit():
                delay = timedelta(seconds=int(rsp.headers["Retry-After"].strip()))
            return ApplicationError(
                f"{what}: {where} is rate limiting (HTTP 429)",
                type="JenkinsThrottled",
                next_retry_delay=delay,
            )
        if status is not None and 400 <= status < 500:
            return ApplicationError(
                f"{what}: {where} rejected the request (HTTP {status}): {body}",
                type="JenkinsRejected",
                non_retryable=True,
            )
        if status is not None and status >= 500:
            return ApplicationError(f"{what}: {where} answered HTTP {status}", type="JenkinsUnavailable")
        if isinstance(exc, requests.ConnectionError | requests.Timeout | jenkins.TimeoutException):
            return ApplicationError(
                f"{what}: {where} is unreachable: {self._scrub(str(exc))}", type="JenkinsUnreachable"
            )
        return ApplicationError(f"{what}: {type(exc).__name__}: {self._scrub(str(exc))}", type="JenkinsError")

    def _call(
        self, what: str, fn: Callable[[Any], T], read: bool = False, secrets: tuple[str, ...] = ()
    ) -> T:
        """One call to Jenkins, its failure classified (and scrubbed of `secrets`, values the call sends).
        A read (idempotent) that meets a transient failure (5xx, connection) is tried again here a few
        times first, so a flaky Jenkins does not restart a long poll from Temporal's growing backoff;
        writes are retried only by Temporal, after their checks."""
        for pause in (*READ_RETRY_PAUSES, None) if read else (None,):
            try:
                self._count_request()
                with heartbeating(limit=2 * self.timeout + 5):  # a slow answer must not time the attempt out
                    return fn(self._client())
            except Exception as exc:
                failure = self._failure(exc, what, secrets)
                transient = isinstance(failure, ApplicationError) and failure.type in TRANSIENT
                if pause is not None and transient:
                    sleep_unless_cancelled(pause)
                    continue
                if failure is exc:
                    raise
                raise failure from None
        raise AssertionError("unreachable")

    def _call_or_none(self, what: str, fn: Callable[[Any], T]) -> T | None:
        """Like _call, but a 404 gives None."""
        try:
            return self._call(what, fn, read=True)
        except ApplicationError as err:
            if err.type == "JenkinsNotFound":
                return None
            raise

    def _request(self, method: str, path: str, what: str) -> requests.Response:
        """A request python-jenkins has no method for, through its `jenkins_request` (auth + crumb)."""
        return self._call(
            what, lambda c: c.jenkins_request(requests.Request(method, c.server + path)), read=method == "GET"
        )

    def _get_json(self, path: str, what: str) -> Any:
        rsp = self._request("GET", path, what)
        try:
            return rsp.json()
        except ValueError:
            raise ApplicationError(
                self._scrub(f"{what}: Jenkins at {self.url} answered with non-JSON"), type="JenkinsError"
            ) from None

    def _build_info(self, job: str, number: int, what: str) -> dict[str, Any]:
        return self._call(what, lambda c: c.get_build_info(job, number), read=True)

    def _read_console(self, job: str, number: int, console: Console, what: str) -> Console:
        """Read what the console printed since `console.offset` (`logText/progressiveText?start=N`, as
        Jenkins' own console page does; docs/jenkins.md) into `console`. One request, or a few more only
        to catch up with more than PROGRESSIVE_MAX_LINES new lines."""
        grew = False
        for _ in range(CATCH_UP_READS):
            start = console.offset
            rsp = self._request("GET", f"{job_path(job)}{number}/logText/progressiveText?start={start}", what)
            size = (rsp.headers.get("X-Text-Size") or "").strip()
            more = (rsp.headers.get("X-More-Data") or "").strip().lower() == "true"
            console.add(start, rsp.content, int(size) if size.isdigit() else None, more)
            grew = grew or console.grew
            if not more or rsp.content.count(b"\n") < PROGRESSIVE_MAX_LINES:
                break
        console.grew = grew
        return console

    def _ended(self, job: str, number: int, console: Console, what: str) -> dict[str, Any] | None:
        """The build's `api/json` if it is over, else None. While `X-More-Data` says the log goes on, the
        build runs and nothing more is asked; once it stops saying so the build is read, and a build that
        still shows `building` (a proxy that drops the header) counts as running."""
        if console.more:
            return None
        info = self._build_info(job, number, what)
        return None if info.get("building") else info

    def _pending_inputs(self, job: str, number: int, what: str) -> list[dict[str, Any]]:
        pending = self._get_json(f"{job_path(job)}{number}/wfapi/pendingInputActions", what)
        return [p for p in pending or [] if isinstance(p, dict)]

    def _post_input(self, job: str, number: int, input_id: str, verb: str, what: str) -> bool:
        """POST input/ID/verb. False when Jenkins refuses because the input is settled (400/404/409)."""
        path = f"{job_path(job)}{number}/input/{quote(input_id, safe='')}/{verb}"
        self._count_request()
        try:
            with heartbeating(limit=2 * self.timeout + 5):  # the POST, and the crumb it may fetch first
                self._client().jenkins_request(requests.Request("POST", self._client().server + path))
            return True
        except Exception as exc:
            if http_status(exc) in (400, 404, 409):
                return False
            raise self._failure(exc, what) from None

    def _names_of_us(self) -> frozenset[str]:
        if self._our_names is None:
            me = self._call("reading /me", lambda c: c.get_whoami(), read=True)
            self._our_names = frozenset(n for n in (self.user, me.get("id"), me.get("fullName")) if n)
        return self._our_names

    def _find_build_by_queue_id(self, job: str, queue_id: int, what: str) -> BuildRef | None:
        info = self._get_json(f"{job_path(job)}api/json?tree={quote(_QUEUE_ID_TREE)}", what)
        for b in info.get("builds") or []:
            if b and b.get("queueId") == queue_id:
                return BuildRef(job=job, number=b["number"], url=b.get("url"))
        return None

    # -- activities --------------------------------------------------------------------------------

    @activity.defn
    def job_parameters(self, inp: JobParametersInput) -> JobParametersResult:
        """The parameters the job defines, read from the job itself."""
        info = self._call(f"reading job {inp.job!r}", lambda c: c.get_job_info(inp.job), read=True)
        return JobParametersResult(job=inp.job, parameters=parameter_definitions(info))

    @activity.defn
    def trigger_build(self, inp: TriggerBuildInput) -> TriggerBuildResult:
        """Start the job with exactly `params`, never twice.

        Before POSTing it looks for a queue item of the job with exactly these parameters, then for a build
        with exactly these parameters whose timestamp is at or after `not_before` (less NOT_BEFORE_SKEW), and
        reuses what it finds. The queue is read before the builds, so an item that leaves the queue
        between the two reads is seen as a build. A retry after "500 after queueing", or after the worker
        died right after the POST, therefore reuses the build. (Two attempts running at the same moment
        are also covered while queued: Jenkins merges an identical parameterised item into the waiting one.)

        The parameter names must be exactly those the job defines: Jenkins silently drops unknown ones and
        fills in defaults for missing ones, which would start a build with other parameters than asked.
        `inp.secret_params` must be password parameters of the job (a secret is never sent to a parameter
        Jenkins would show); their values come from this worker's environment (`_worker_secrets`).
        """
        job = inp.job
        what = f"triggering {job!r}"
        queue = self._call(what, lambda c: c.get_queue_info(), read=True)
        info = self._get_json(f"{job_path(job)}api/json?tree={quote(_TRIGGER_TREE)}", what)

        definitions = parameter_definitions(info)
        self._check_secret_params(inp, definitions, what)
        # Jenkins never shows a password's value back: a queue item or build matches on its name alone.
        wanted = {**inp.params, **dict.fromkeys(inp.secret_params, "")}
        defined = [p.name for p in definitions]
        unknown, missing = sorted(set(wanted) - set(defined)), sorted(set(defined) - set(wanted))
        if unknown or missing:
            raise ApplicationError(
                f"{what}: the parameters do not match the job's definition (unknown: {unknown or 'none'}; "
                f"missing: {missing or 'none'}); Jenkins would drop or default them",
                type="JobParametersMismatch",
                non_retryable=True,
            )

        ours = url_job_part(f"/{job_path(job)}")
        before = inp.baseline
        in_queue = [
            item
            for item in queue
            if url_job_part((item.get("task") or {}).get("url") or "") == ours
            and same_params(action_params(item), wanted)
            and not (before and item.get("id") in before.queued)
        ]
        if in_queue:
            item = min(in_queue, key=lambda i: i["id"])
            activity.logger.info("Reusing queue item %s of %s (same parameters)", item["id"], job)
            return TriggerBuildResult(queue_id=item["id"], reused=True)

        not_before = inp.not_before if inp.not_before.tzinfo else inp.not_before.replace(tzinfo=UTC)
        since_ms = (not_before - NOT_BEFORE_SKEW).timestamp() * 1000
        started = [
            b
            for b in info.get("builds") or []
            if b
            and same_params(action_params(b), wanted)
            and (
                (b["number"] > before.last_build and b.get("queueId") not in before.queued)
                if before
                else (b.get("timestamp") or 0) >= since_ms
            )
        ]
        if started:
            b = min(started, key=lambda b: b["number"])
            activity.logger.info(
                "Reusing build %s #%s (same parameters, started after not_before)", job, b["number"]
            )
            return TriggerBuildResult(
                queue_id=b.get("queueId"), number=b["number"], url=b.get("url"), reused=True
            )

        if inp.secret_params:
            secrets = self._worker_secrets(inp, what)  # read now, not before: nothing else needs them
            queue_id = self._call(
                what,
                lambda c: self._build_with_secrets(c, job, inp.params, secrets),
                secrets=tuple(secrets.values()),
            )
        else:
            queue_id = self._call(what, lambda c: c.build_job(job, wanted or None))
        activity.logger.info("Triggered %s: queue item %s", job, queue_id)
        return TriggerBuildResult(queue_id=queue_id, reused=False)

    @staticmethod
    def _check_secret_params(inp: TriggerBuildInput, definitions: list[JobParameter], what: str) -> None:
        """Non-retryable `SecretParamNotPassword` when one of `inp.secret_params` is not (or no longer) a
        password parameter of the job: the worker's secret would go where Jenkins shows it."""
        kinds = {p.name: p for p in definitions}
        not_password = sorted(n for n in inp.secret_params if n not in kinds or not is_password(kinds[n]))
        if not_password:
            raise ApplicationError(
                f"{what}: {', '.join(not_password)} is no longer a password parameter of the job; the "
                "worker's secret is not sent to a parameter Jenkins shows",
                type="SecretParamNotPassword",
                non_retryable=True,
            )

    @staticmethod
    def _worker_secrets(inp: TriggerBuildInput, what: str) -> dict[str, str]:
        """The values of the password parameters `inp.secret_params`, from this process's environment.
        Non-retryable `SecretParamMissing` when a variable is unset or blank on this worker; the error
        names the variables, never a value."""
        values: dict[str, str] = {}
        missing: list[str] = []
        for name in inp.secret_params:
            value = os.environ.get(secret_env(name), "")
            if value.strip():
                values[name] = value
            else:
                missing.append(secret_env(name))
        if missing:
            names = [n for n in inp.secret_params if secret_env(n) in missing]
            one = len(missing) == 1
            raise ApplicationError(
                f"{what}: this worker has no {', '.join(missing)} in its environment (the value of password "
                f"parameter{'' if one else 's'} {', '.join(names)} of the job): set {'it' if one else 'them'} "
                "on every worker and restart the workers",
                type="SecretParamMissing",
                non_retryable=True,
            )
        return values

    @staticmethod
    def _build_with_secrets(c: Any, job: str, params: dict[str, str], secrets: dict[str, str]) -> int:
        """`build_job`, but the password parameters go in the form body, the others in the query string
        as python-jenkins sends them. Jenkins reads both (`buildWithParameters` takes each parameter from
        the request's parameters, query or form); only a URL is written to access logs."""
        url = f"{c.server}{job_path(job)}buildWithParameters" + (f"?{urlencode(params)}" if params else "")
        response = c.jenkins_request(requests.Request("POST", url, data=secrets))
        location = response.headers.get("Location")
        if not location:
            raise jenkins.EmptyResponseException(
                f"Header 'Location' not found in response from server[{c.server}]"
            )
        return int(location.rstrip("/").split("/")[-1])

    @activity.defn
    def trigger_baseline(self, inp: JobParametersInput) -> TriggerBaseline:
        """The job's last build number and queued items now, before this deploy triggers it: whatever
        `trigger_build` later finds beyond them with our parameters is ours (a retry reuses it)."""
        job = inp.job
        what = f"reading the builds of {job!r}"
        queue = self._call(what, lambda c: c.get_queue_info(), read=True)
        info = self._get_json(f"{job_path(job)}api/json?tree={quote('builds[number]{0,1}')}", what)
        ours = url_job_part(f"/{job_path(job)}")
        queued = [
            int(item["id"])
            for item in queue
            if url_job_part((item.get("task") or {}).get("url") or "") == ours
        ]
        builds = info.get("builds") or []
        return TriggerBaseline(
            job=job, last_build=max((b["number"] for b in builds if b), default=0), queued=queued
        )

    @activity.defn(no_thread_cancel_exception=True)
    def wait_build_started(self, inp: WaitBuildStartedInput) -> BuildRef:
        """Poll the queue item until it has an executable. Cancelled → non-retryable `BuildCancelled`.

        Jenkins forgets a left queue item about 5 minutes after it started; if the item 404s, the build is
        looked up by its `queueId` among the job's last 100 builds. If that finds nothing either, a retryable
        `QueueItemGone` is raised (the activity's timeouts bound the retries).
        """
        what = f"waiting for queue item {inp.queue_id} of {inp.job!r}"
        pacer = self._pacer(self.poll_interval)
        while True:
            heartbeat({"queue_id": inp.queue_id})
            before = self._requests()
            item = self._call_or_none(what, lambda c: c.get_queue_item(inp.queue_id))
            if item is None:
                ref = self._find_build_by_queue_id(inp.job, inp.queue_id, what)
                if ref is not None:
                    return ref
                raise ApplicationError(
                    f"{what}: the queue item is gone and no recent build of the job has that queueId",
                    type="QueueItemGone",
                )
            if item.get("cancelled"):
                raise ApplicationError(
                    f"{what}: the queue item was cancelled", type="BuildCancelled", non_retryable=True
                )
            executable = item.get("executable")
            if executable and executable.get("number") is not None:
                return BuildRef(job=inp.job, number=executable["number"], url=executable.get("url"))
            pacer.wait(self._requests() - before)

    @activity.defn(no_thread_cancel_exception=True)
    def read_diff(self, inp: ReadDiffInput) -> ReadDiffResult:
        """Poll the console until the diff block is complete. A build that ends, or pauses at an input,
        without a complete block → non-retryable `NoDiff`.

        Each poll reads only what the console printed since the last one (`progressiveText`), which also
        says whether the build still runs; the pending inputs are asked for only when the console did not
        grow (a build paused at its input prints nothing), so a poll costs one request, two at most."""
        what = f"reading the diff of {inp.job} #{inp.number}"
        console = Console()
        pacer = self._pacer(self.poll_interval)
        while True:
            heartbeat({"number": inp.number})
            before = self._requests()
            self._read_console(inp.job, inp.number, console, what)
            lines = extract_diff(console.text, inp.diff_begin, inp.diff_end)
            if lines is None:
                why = None
                if (info := self._ended(inp.job, inp.number, console, what)) is not None:
                    why = f"the build ended ({info.get('result')})"
                elif not console.grew and self._pending_inputs(inp.job, inp.number, what):
                    why = "the build is waiting at its input step"
                if why is not None:
                    # The block may have been printed between the two reads: look once more.
                    self._read_console(inp.job, inp.number, console, what)
                    lines = extract_diff(console.text, inp.diff_begin, inp.diff_end)
                    if lines is None:
                        raise ApplicationError(
                            f"{what}: {why} without printing a diff between {inp.diff_begin!r} and {inp.diff_end!r}",
                            type="NoDiff",
                            non_retryable=True,
                        )
            if lines is not None:
                text = diff_text(lines)
                info = self._build_info(inp.job, inp.number, what)
                build_url = info.get("url") or f"{self.url}/{job_path(inp.job)}{inp.number}/"
                return ReadDiffResult(
                    diff=text,
                    diff_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                    console_url=build_url + "console",
                )
            pacer.wait(self._requests() - before)

    @activity.defn(no_thread_cancel_exception=True)
    def input_action(self, inp: InputActionInput) -> InputActionResult:
        """Answer the build's input step (proceed or abort), once.

        The input is the configured one, or with none configured the build's one pending input, whatever
        Jenkins named it (`choose_input`); when that is unclear it answers nothing and returns `refused`
        with the reason at once. Else it POSTs `input/ID/proceedEmpty` or `input/ID/abort` and confirms
        by re-reading `pendingInputActions`. If nothing is pending, the console tells who answered: our
        own answer (an earlier attempt whose reply was lost) gives `done=True`; anyone else's, or a build
        that ended unanswered, gives `done=False, answered_elsewhere=True`. While the build runs and has
        not reached the input yet, it waits (heartbeating).
        """
        what = f"answering the input of {inp.job} #{inp.number}"
        posted: str | None = None  # the input this attempt answered
        rechecks = 0
        console = Console()
        pacer = self._pacer(self.poll_interval)
        while True:
            heartbeat({"number": inp.number, "posted": posted is not None})
            before = self._requests()
            pending = self._pending_inputs(inp.job, inp.number, what)
            if posted is None:
                target, unclear = choose_input(pending, inp.input_id, inp.number)
                if unclear is not None:
                    return InputActionResult(done=False, refused=unclear)
                if target is not None:
                    verb = "proceedEmpty" if inp.decision == "proceed" else "abort"
                    self._post_input(inp.job, inp.number, target, verb, what)
                    activity.logger.info("Sent %s to input %s of %s #%s", verb, target, inp.job, inp.number)
                    posted = target
                    continue
            elif any(p.get("id") == posted for p in pending):
                rechecks += 1
                if rechecks >= 3:
                    raise ApplicationError(
                        self._scrub(
                            f"{what}: Jenkins at {self.url} took the answer but input {posted} is still "
                            f"pending; user {self.user!r} may not be allowed to answer it (submitter list, "
                            "Job/Build, Job/Cancel)"
                        ),
                        type="JenkinsInputRejected",
                        non_retryable=True,
                    )
                sleep_unless_cancelled(self.poll_interval / 2)
                continue
            settled = self._input_settlement(inp, posted or inp.input_id or "", console, what)
            if settled is not None:
                return settled
            pacer.wait(self._requests() - before)  # waiting for the build to reach its input

    def _input_settlement(
        self, inp: InputActionInput, iid: str, console: Console, what: str
    ) -> InputActionResult | None:
        """Nothing is pending: who answered? None when the build has not reached the input yet."""
        answer = first_answer(self._read_console(inp.job, inp.number, console, what).text)
        if answer is not None:
            kind, who, line = answer
            wanted = ("proceed",) if inp.decision == "proceed" else ("abort", "stop")
            if kind in wanted and who in self._names_of_us():
                return InputActionResult(done=True, detail=f"input {iid} of {inp.job} #{inp.number}: {line}")
            return InputActionResult(
                done=False,
                answered_elsewhere=True,
                detail=f"input {iid} of {inp.job} #{inp.number} was already answered in Jenkins: {line}",
                answered_by=who,
            )
        if (info := self._ended(inp.job, inp.number, console, what)) is not None:
            return InputActionResult(
                done=False,
                answered_elsewhere=True,
                detail=f"{inp.job} #{inp.number} ended ({info.get('result')}) with input {iid} unanswered",
            )
        return None

    @activity.defn(no_thread_cancel_exception=True)
    def watch_input(self, inp: WatchInputInput) -> WatchInputResult:
        """Watch the build at `deploy_approval`; return as soon as what Jenkins shows differs from what the
        workflow knows (`inp.known`), so the deploy always says what it waits for:

        - `answered`: our input is no longer pending and was seen pending (remembered in the heartbeat
          details across attempts), or the console shows an answer: someone answered in Jenkins;
        - `ended`: the build is over (`build_result`);
        - `unclear`: inputs are pending but which one is ours is not (`detail` says why, `choose_input`);
        - `pending`: our input waits;
        - `not_reached`: the build runs and has not reached its input yet; reported only once that has
          lasted `settle_seconds`, so a build on its way to the input costs no extra round trip.

        Reads at once, then as the budget paces it (`_pacer`: every `watch_interval` seconds for the first
        minute of the attempt, then `poll_cap` seconds per request; `inp.poll_cap` seconds apart when webhooks
        are configured, `PollSchedule.stretched`). Heartbeats on every poll;
        honours cancellation (the workflow cancels it when the SRE answers through deployctl, and
        restarts it when a Jenkins notification says something changed).
        """
        what = f"watching the input of {inp.job} #{inp.number}"
        details = activity.info().heartbeat_details
        last = details[0] if details and isinstance(details[0], dict) else {}
        seen_pending = bool(last.get("seen_pending"))
        not_reached_since: float | None = last.get("not_reached_since")
        console = Console()
        pacer = self._pacer(self.watch_interval, inp.poll_cap)
        while True:
            before = self._requests()
            pending = self._pending_inputs(inp.job, inp.number, what)
            target, unclear = choose_input(pending, inp.input_id, inp.number)
            state: InputState
            detail = ""
            if target is not None:
                state, seen_pending = "pending", True
            elif unclear is not None:
                state, detail = "unclear", unclear
            else:
                answer = first_answer(self._read_console(inp.job, inp.number, console, what).text)
                if (info := self._ended(inp.job, inp.number, console, what)) is not None:
                    result = info.get("result")
                    return WatchInputResult(
                        build_result=result,
                        state="ended",
                        detail=f"build #{inp.number} ended {result}",
                        answered_by=answer[1] if answer else None,
                        answer=answer[0] if answer else None,
                    )
                if seen_pending or answer is not None:
                    return WatchInputResult(
                        state="answered",
                        detail=f"build #{inp.number}'s input was answered"
                        + (f": {answer[2]}" if answer else ""),
                        answered_by=answer[1] if answer else None,
                        answer=answer[0] if answer else None,
                    )
                state, detail = "not_reached", f"Jenkins build #{inp.number} has not reached its input yet"
            not_reached_since = (not_reached_since or time.time()) if state == "not_reached" else None
            settled = not_reached_since is None or time.time() - not_reached_since >= inp.settle_seconds
            changed = state != inp.known or (state == "unclear" and detail != inp.known_detail)
            if changed and settled:
                return WatchInputResult(state=state, detail=detail)
            heartbeat({"seen_pending": seen_pending, "not_reached_since": not_reached_since})
            pacer.wait(self._requests() - before)

    @activity.defn(no_thread_cancel_exception=True)
    def wait_build_result(self, inp: BuildResultInput) -> BuildResult:
        """Poll the build until it is over and has a result."""
        what = f"waiting for the result of {inp.job} #{inp.number}"
        pacer = self._pacer(self.poll_interval)
        while True:
            heartbeat({"number": inp.number})
            before = self._requests()
            info = self._build_info(inp.job, inp.number, what)
            if not info.get("building") and info.get("result"):
                return BuildResult(number=inp.number, result=info["result"], url=info.get("url"))
            pacer.wait(self._requests() - before)

    @activity.defn
    def abort_build(self, inp: AbortBuildInput) -> None:
        """Stop whatever runs, idempotently: cancel the queue item if still queued, else abort the pending
        input (ours, or whichever input is pending), else POST /stop if the build is running. Nothing to do
        when it is already over, or when the queue item is gone and no build of the job carries its id."""
        what = f"aborting {inp.job} (build {inp.number}, queue item {inp.queue_id})"
        number = inp.number
        if number is None and inp.queue_id is not None:
            queue_id = inp.queue_id
            for _ in range(2):
                item = self._call_or_none(what, lambda c: c.get_queue_item(queue_id))
                if item is None:
                    ref = self._find_build_by_queue_id(inp.job, queue_id, what)
                    number = ref.number if ref else None
                    break
                if item.get("cancelled"):
                    return
                executable = item.get("executable")
                if executable and executable.get("number") is not None:
                    number = executable["number"]
                    break
                self._call(what, lambda c: c.cancel_queue(queue_id))
                activity.logger.info("Cancelled queue item %s of %s", queue_id, inp.job)
                # and look again: it may have started in the meantime
        if number is None:
            return
        build = number
        pending = self._pending_inputs(inp.job, build, what)
        if pending:  # every pending input: with parallel branches, one aborted input may leave others waiting
            for target in pending:
                self._post_input(inp.job, build, str(target.get("id")), "abort", what)
                activity.logger.info("Aborted input %s of %s #%s", target.get("id"), inp.job, build)
            return
        info = self._build_info(inp.job, build, what)
        if info.get("building"):
            self._call(what, lambda c: c.stop_build(inp.job, build))
            activity.logger.info("Stopped %s #%s", inp.job, build)
