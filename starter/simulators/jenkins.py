"""A stateful fake Jenkins: a real HTTP server on 127.0.0.1 that speaks the parts of Jenkins' API that
deployctl and python-jenkins use (see /work/shared/INTEGRATIONS.md §1).

It models one pipeline shape, the deploy job:

    queued (queue_seconds) → build #N starts → header, parameter echo → after plan_seconds the diff block
    (diff_begin, diff_lines, diff_end) → paused at the `input` step `input_id`
    → proceed: "Approved by USER", apply (apply_seconds) → "Finished: <final_result>"
    → abort / stop: "Rejected by USER" / "Aborted by USER" → "Finished: ABORTED"

State moves lazily: every request and every test hook first advances the simulation to "now", so there
is no timer thread. Timestamps are real epoch milliseconds, as in Jenkins.

Deliberate choices where Jenkins behaviour is configurable or version dependent:
- Users are `{user: api_token}`; every authenticated request is API-token authenticated. A wrong token
  gets 401 "Invalid password/token for user: X" (what Jenkins' BasicHeaderProcessor answers), no
  credentials get 403 "Authentication required" (anonymous without Overall/Read), on every URL,
  `GET /` and `/crumbIssuer/api/json` included. `X-Jenkins` is on every response.
- `crumbs=True` or `"enforce"` (default): a crumb is required on every POST, even token-authenticated
  ones, so the client's crumb handling is exercised. `crumbs="token-exempt"`: real Jenkins ≥ 2.96
  (API-token requests need no crumb). `crumbs=False`: no crumb issuer (404), nothing enforced.
- A POST that would queue a build identical to a waiting queue item (same job, same parameters) gets
  201 with that item's Location, as Jenkins' queue does.
- Answering an input that is not pending gets 400 with an HTML error page.
- Password parameters as Jenkins core keeps them (`PasswordParameterDefinition`/`PasswordParameterValue`):
  `buildWithParameters` takes the value in plain text from the query string or the form body; no
  `api/json` ever shows it back (a build's or queue item's parameter, and the definition's default,
  carry `name` and no `value`), and a queue item's `params` text shows `NAME=****`.
- Inputs are named as Jenkins names them: an explicit `id:` capitalised, or (`input_id=FROM_MESSAGE`,
  a pipeline's `input message: '…'` without `id:`) the capitalised MD5 hex of the message.
  `parallel_inputs` are further inputs pending at the same time, as parallel branches give; answering
  one lets the build go on once none is left; aborting one ends the build ABORTED (a simplification:
  real Jenkins fails that branch and, without failFast, the others keep waiting).
- `logText/progressiveText?start=N` answers as Stapler's `LargeText.doProgressText` does (docs/jenkins.md):
  the text from byte offset N, `X-Text-Size` the next offset, `X-More-Data: true` while the build runs.
- Every request is kept in `timeline` with its kind (`request_kind`: `pendingInputActions`,
  `progressiveText`, `consoleText`, `build`, `queue item`…), so a test can count what a wait cost:
  `count(kind, job, number)`, `requests_of(…)`, `kinds()`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from starter.simulators import server
from starter.simulators.server import LocalServer, QuietHandler, Request

JENKINS_VERSION = "2.479"
#: Stapler's `LargeText.MAX_LINES_READ`: the most lines one progressiveText answer carries while a build runs.
PROGRESSIVE_MAX_LINES = 10000

_PARAM_TYPES = {
    "string": "StringParameterDefinition",
    "choice": "ChoiceParameterDefinition",
    "boolean": "BooleanParameterDefinition",
    "text": "TextParameterDefinition",
    "password": "PasswordParameterDefinition",
}
_VALUE_CLASSES = {
    "StringParameterDefinition": "hudson.model.StringParameterValue",
    "ChoiceParameterDefinition": "hudson.model.StringParameterValue",
    "BooleanParameterDefinition": "hudson.model.BooleanParameterValue",
    "TextParameterDefinition": "hudson.model.TextParameterValue",
    "PasswordParameterDefinition": "hudson.model.PasswordParameterValue",
}
_JOB_CLASS = "org.jenkinsci.plugins.workflow.job.WorkflowJob"
_RUN_CLASS = "org.jenkinsci.plugins.workflow.job.WorkflowRun"
_FOLDER_CLASS = "com.cloudbees.hudson.plugins.folder.Folder"
_DESCRIBE_STATUS = {
    "SUCCESS": "SUCCESS",
    "FAILURE": "FAILED",
    "UNSTABLE": "UNSTABLE",
    "ABORTED": "ABORTED",
    "NOT_BUILT": "NOT_EXECUTED",
}


def _ms(t: float) -> int:
    return int(t * 1000)


def _html(title: str, message: str) -> bytes:
    return (
        f"<!DOCTYPE html><html><head><title>{title} [Jenkins]</title></head>"
        f"<body><div id='main-panel'><h1>{title}</h1><p>{message}</p></div></body></html>"
    ).encode()


#: `add_job(input_id=FROM_MESSAGE)`: the pipeline's input has no `id:`, so Jenkins names it itself.
FROM_MESSAGE = "(from the message)"


def jenkins_input_id(message: str) -> str:
    """The id Jenkins gives an `input` without `id:`: `capitalize(Util.getDigestOf(message))`."""
    digest = hashlib.md5(message.encode("utf-8")).hexdigest()
    return digest[:1].upper() + digest[1:]


@dataclass
class _Job:
    name: str
    parameters: list[dict[str, Any]]
    diff_lines: list[str] | None
    final_result: str
    queue_seconds: float
    input_id: str | None
    input_message: str
    parallel_inputs: dict[str, str]  # id → message of further inputs pending with the first
    diff_begin: str
    diff_end: str
    plan_seconds: float
    apply_seconds: float
    next_number: int = 1
    builds: dict[int, _Build] = field(default_factory=dict)

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def path(self) -> str:
        """`/job/a/job/b/`, the job's path under the context root."""
        return "/" + "".join(f"job/{quote(p, safe='')}/" for p in self.name.split("/"))


@dataclass
class _QueueItem:
    id: int
    job: _Job
    params: dict[str, str]
    user: str
    in_queue_since: float
    state: str = "waiting"  # waiting | left | cancelled
    build_number: int | None = None
    forgotten: bool = False


@dataclass
class _Build:
    job: _Job
    number: int
    params: dict[str, str]
    queue_id: int
    user: str
    started: float
    console: list[str] = field(default_factory=list)
    state: str = "running"  # running | paused | finished
    phase: str = "plan"  # plan | input | apply | done
    result: str | None = None
    paused_since: float | None = None
    pause_ms: int = 0
    apply_done_at: float | None = None
    finished: float | None = None
    answered_by: str | None = None
    pending: list[str] = field(default_factory=list)  # the ids of the inputs it waits at


@dataclass
class _FailRule(server.FailRule):
    delay: float = 0.0  # > 0: not an error, the right answer this many seconds late


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html;charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering


class _Request(Request):
    def form(self) -> dict[str, str]:
        ctype = self.headers.get("Content-Type", "") or ""
        if self.body and "application/x-www-form-urlencoded" in ctype:
            return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))
        return {}


class FakeJenkins(LocalServer):
    """A fake Jenkins on `ThreadingHTTPServer` in a daemon thread. See the module docstring."""

    def __init__(
        self,
        port: int = 0,
        users: dict[str, str] | None = None,
        crumbs: bool | str = True,
    ) -> None:
        if crumbs not in (True, False, "enforce", "token-exempt"):
            raise ValueError(f"crumbs must be True, False, 'enforce' or 'token-exempt', not {crumbs!r}")
        super().__init__(port)
        self.users = dict(users) if users is not None else {"deploy-bot": "token"}
        self.crumbs = crumbs
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        #: Every request as (epoch seconds, kind, method, path, query): `request_kind` names the kinds.
        self.timeline: list[tuple[float, str, str, str, dict[str, str]]] = []
        #: Response headers (lower-case names) left out, as a proxy in front of Jenkins might.
        self.drop_headers: set[str] = set()
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._queue: dict[int, _QueueItem] = {}
        self._next_queue_id = 1
        self._fail_rules: list[_FailRule] = []
        self._crumb_salt = hashlib.sha256(str(time.time_ns()).encode()).hexdigest()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeJenkins:
        fake = self

        class Handler(QuietHandler):
            disable_nagle_algorithm = True
            server_version = "Jetty(12.0.13)"

            def _handle(self) -> None:
                rsp = fake._serve(self.read_request(_Request))
                if rsp.delay:  # a slow Jenkins: the work is done, the answer comes too late
                    time.sleep(rsp.delay)
                jenkins = (("X-Jenkins", JENKINS_VERSION), ("X-Hudson", "1.395"))
                after = {k: v for k, v in rsp.headers.items() if k.lower() not in fake.drop_headers}
                self.reply(rsp.status, rsp.body, rsp.content_type, before=jenkins, after=after)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle

        return self._listen(Handler, "fake-jenkins")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- configuration and test hooks --------------------------------------------------------------

    def add_job(
        self,
        name: str,
        parameters: list[dict[str, Any]] | None = None,
        diff_lines: list[str] | None = None,
        final_result: str = "SUCCESS",
        queue_seconds: float = 0.2,
        input_id: str | None = "Approve-deploy",
        diff_begin: str = "=== DEPLOY DIFF BEGIN ===",
        diff_end: str = "=== DEPLOY DIFF END ===",
        *,
        input_message: str = "Deploy to production?",
        parallel_inputs: tuple[str, ...] = (),
        plan_seconds: float = 0.0,
        apply_seconds: float = 0.0,
        next_build_number: int = 1,
    ) -> None:
        """Define a pipeline job. `diff_lines=None` prints no diff block; `input_id=None` has no input step;
        `input_id=FROM_MESSAGE` is an input without `id:`; `parallel_inputs` are the messages of further
        inputs (without `id:`) pending at the same time.

        `parameters`: `[{"name", "type" ("string"|"choice"|"boolean"|"text"|"password" or the Jenkins
        class name), "default", "choices"}]`.
        """
        defs = []
        for p in parameters or []:
            ptype = p.get("type") or "string"
            ptype = _PARAM_TYPES.get(ptype.lower(), ptype)
            d = {"name": p["name"], "type": ptype, "default": p.get("default"), "choices": p.get("choices")}
            if ptype == "ChoiceParameterDefinition" and d["default"] is None and d["choices"]:
                d["default"] = d["choices"][0]
            defs.append(d)
        with self._lock:
            self._jobs[name] = _Job(
                name=name,
                parameters=defs,
                diff_lines=list(diff_lines) if diff_lines is not None else None,
                final_result=final_result,
                queue_seconds=queue_seconds,
                input_id=(
                    jenkins_input_id(input_message)
                    if input_id == FROM_MESSAGE
                    else (input_id[:1].upper() + input_id[1:])
                    if input_id
                    else None
                ),
                input_message=input_message,
                parallel_inputs={jenkins_input_id(m): m for m in parallel_inputs},
                diff_begin=diff_begin,
                diff_end=diff_end,
                plan_seconds=plan_seconds,
                apply_seconds=apply_seconds,
                next_number=next_build_number,
            )

    def builds(self, job: str) -> list[dict[str, Any]]:
        """Every build of `job`, oldest first: number, params, result, state, queue_id, url, answered_by."""
        with self._lock:
            self._advance()
            j = self._job(job)
            return [
                {
                    "number": b.number,
                    "params": dict(b.params),
                    "result": b.result,
                    "state": b.state,
                    "queue_id": b.queue_id,
                    "url": self._build_url(b),
                    "answered_by": b.answered_by,
                }
                for b in sorted(j.builds.values(), key=lambda b: b.number)
            ]

    def queued(self, job: str) -> list[dict[str, Any]]:
        """The items of `job` still waiting in the queue: id, params."""
        with self._lock:
            self._advance()
            return [
                {"id": q.id, "params": dict(q.params)}
                for q in self._queue.values()
                if q.job.name == job and q.state == "waiting"
            ]

    def console(self, job: str, number: int) -> str:
        with self._lock:
            self._advance()
            return "".join(line + "\n" for line in self._job(job).builds[number].console)

    def fail_next(
        self,
        status: int = 500,
        method: str | None = "POST",
        path_contains: str = "buildWithParameters",
        times: int = 1,
        after_effect: bool = True,
    ) -> None:
        """Answer the next `times` matching requests with `status`. With `after_effect` the request is
        processed first (the build is queued, the input answered…) and only the answer is lost."""
        with self._lock:
            self._fail_rules.append(_FailRule(status, method, path_contains, times, after_effect))

    def count(self, kind: str | None = None, job: str | None = None, number: int | None = None) -> int:
        """How many requests of `kind` (`request_kind`; None: all) this fake served, for `job` (and build
        `number`) if given."""
        return len(self.requests_of(kind, job, number))

    def requests_of(
        self, kind: str | None = None, job: str | None = None, number: int | None = None
    ) -> list[tuple[float, dict[str, str]]]:
        """The requests of `kind` (None: all), for `job` and build `number` if given: (epoch seconds, query)."""
        prefix = None
        if job is not None:
            prefix = "/" + "".join(f"job/{quote(p, safe='')}/" for p in job.split("/"))
            if number is not None:
                prefix += f"{number}/"
        with self._lock:
            return [
                (t, dict(q))
                for t, k, _, path, q in self.timeline
                if (kind is None or k == kind) and (prefix is None or path.startswith(prefix))
            ]

    def kinds(self) -> dict[str, int]:
        """How many requests of each kind this fake served."""
        out: dict[str, int] = {}
        with self._lock:
            for _, k, *_ in self.timeline:
                out[k] = out.get(k, 0) + 1
        return out

    def answer_input(
        self, job: str, number: int, proceed: bool = True, by: str = "someone", input_id: str | None = None
    ) -> None:
        """A person answers the pending input (`input_id`, or every one) in the Jenkins UI."""
        with self._lock:
            self._advance()
            b = self._job(job).builds[number]
            if b.state != "paused":
                raise ValueError(f"{job} #{number} has no pending input (state {b.state})")
            self._answer(b, proceed, by, input_id)

    def set_result(self, job: str, final_result: str) -> None:
        """The result the job's unfinished and future builds end with when they are not aborted."""
        with self._lock:
            self._job(job).final_result = final_result

    def forget_queue_item(self, queue_id: int) -> None:
        """Simulate the ~5 minutes after which a left queue item 404s."""
        with self._lock:
            self._advance()
            self._queue[queue_id].forgotten = True

    # -- simulation --------------------------------------------------------------------------------

    def _job(self, name: str) -> _Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise KeyError(f"no job {name!r} in the fake") from None

    def _job_url(self, job: _Job) -> str:
        return self.url + job.path

    def _build_url(self, b: _Build) -> str:
        return f"{self._job_url(b.job)}{b.number}/"

    def _advance(self) -> None:
        now = time.time()
        for item in list(self._queue.values()):
            due = item.in_queue_since + item.job.queue_seconds
            if item.state == "waiting" and now >= due:
                self._start_build(item, due)
        for job in self._jobs.values():
            for b in job.builds.values():
                if b.state == "running" and b.phase == "plan" and now >= b.started + job.plan_seconds:
                    self._plan(b, b.started + job.plan_seconds)
                if b.state == "running" and b.phase == "apply" and b.apply_done_at is not None:
                    if now >= b.apply_done_at:
                        self._finish(b, b.job.final_result, b.apply_done_at)

    def _start_build(self, item: _QueueItem, at: float) -> None:
        job = item.job
        number = job.next_number
        job.next_number += 1
        b = _Build(
            job=job, number=number, params=dict(item.params), queue_id=item.id, user=item.user, started=at
        )
        b.console += [
            f"Started by user {item.user}",
            "[Pipeline] Start of Pipeline",
            "[Pipeline] node",
            f"Running on Jenkins in /var/jenkins_home/workspace/{job.name.replace('/', '_')}",
            "[Pipeline] {",
            "[Pipeline] stage",
            "[Pipeline] { (Plan)",
            "[Pipeline] echo",
            "Parameters:",
            *(f"  {d}" for d in self._short_descriptions(job, b.params)),
            "[Pipeline] sh",
            "+ ./deploy.sh plan",
        ]
        job.builds[number] = b
        item.state = "left"
        item.build_number = number

    def _plan(self, b: _Build, at: float) -> None:
        job = b.job
        if job.diff_lines is not None:
            b.console += [job.diff_begin, *job.diff_lines, job.diff_end]
        b.console += ["[Pipeline] }", "[Pipeline] // stage"]
        if job.input_id:
            b.console += [
                "[Pipeline] stage",
                "[Pipeline] { (Approve)",
                "[Pipeline] input",
                job.input_message,
                "Proceed or Abort",
            ]
            b.console += [line for m in job.parallel_inputs.values() for line in (m, "Proceed or Abort")]
            b.pending = [job.input_id, *job.parallel_inputs]
            b.state, b.phase, b.paused_since = "paused", "input", at
        else:
            self._apply(b, at)

    def _apply(self, b: _Build, at: float) -> None:
        b.console += ["[Pipeline] stage", "[Pipeline] { (Apply)", "[Pipeline] sh", "+ ./deploy.sh apply"]
        b.console += [f"applying {len(b.job.diff_lines or [])} change(s)"]
        b.state, b.phase, b.apply_done_at = "running", "apply", at + b.job.apply_seconds
        if b.job.apply_seconds <= 0:
            self._finish(b, b.job.final_result, at)

    def _answer(self, b: _Build, proceed: bool, by: str, input_id: str | None = None) -> None:
        now = time.time()
        if proceed and input_id is not None and len(b.pending) > 1:  # a parallel branch goes on
            b.pending.remove(input_id)
            b.console += [f"Approved by {by}"]
            return
        b.pending = []
        b.answered_by = by
        if b.paused_since is not None:
            b.pause_ms += _ms(now - b.paused_since)
            b.paused_since = None
        if proceed:
            b.console += [f"Approved by {by}", "[Pipeline] }", "[Pipeline] // stage"]
            self._apply(b, now)
        else:
            b.console += [f"Rejected by {by}", "[Pipeline] }", "[Pipeline] // stage"]
            self._finish(b, "ABORTED", now)

    def _stop(self, b: _Build, by: str) -> None:
        if b.state == "finished":
            return
        now = time.time()
        if b.paused_since is not None:
            b.pause_ms += _ms(now - b.paused_since)
            b.paused_since = None
        b.console += [f"Aborted by {by}"]
        self._finish(b, "ABORTED", now)

    def _finish(self, b: _Build, result: str, at: float) -> None:
        if result in ("FAILURE", "UNSTABLE") and b.phase == "apply":
            b.console += ["ERROR: script returned exit code 1"]
        b.console += [
            "[Pipeline] }",
            "[Pipeline] // node",
            "[Pipeline] End of Pipeline",
            f"Finished: {result}",
        ]
        b.state, b.phase, b.result, b.finished = "finished", "done", result, at

    # -- HTTP --------------------------------------------------------------------------------------

    def _serve(self, req: _Request) -> _Response:
        with self._lock:
            self.requests.append(req.recorded())
            self.timeline.append(
                (time.time(), request_kind(req.method, req.path), req.method, req.path, dict(req.query))
            )
            rule = self._match_fail_rule(req)
            if rule is not None and not rule.after_effect:
                return self._error_response(rule.status)
            self._advance()
            try:
                rsp = self._dispatch(req)
            except Exception as exc:  # a bug in the fake: answer like Jenkins' "Oops!" page
                rsp = _Response(
                    500, _html("Oops!", f"A problem occurred while processing the request: {exc!r}")
                )
            if rule is not None and rule.delay:
                self.slow_answers += 1
                return dataclasses.replace(rsp, delay=rule.delay)
            if rule is not None:
                return self._error_response(rule.status)
            return rsp

    def chaos(
        self, rate: float, seed: int = 0, path_contains: str = "", slow: float = 0.0, delay: float = 3.0
    ) -> None:
        """From now on answer a share `rate` of the requests whose path holds `path_contains` with a 5xx,
        half of them after doing the work (the answer is lost), half before. `rate=0` stops it.

        With `slow`, that share of the faulty requests is served correctly but answered `delay` seconds
        late instead, so a client with a shorter timeout gives up after Jenkins did the work."""
        import random

        with self._lock:
            self._chaos = (rate, random.Random(seed), path_contains)
            self._slow = (slow, delay)
            self.slow_answers = 0

    def _match_fail_rule(self, req: _Request) -> _FailRule | None:
        rng = server.chaos_strikes(getattr(self, "_chaos", None), req)
        if rng is not None:
            if rng.random() < self._slow[0]:
                return _FailRule(200, None, "", 1, True, delay=self._slow[1])
            return server.chaos_failure(_FailRule, rng)
        return server.take_fail_rule(self._fail_rules, req)

    @staticmethod
    def _error_response(status: int) -> _Response:
        title = {500: "Oops!", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        return _Response(status, _html(title.get(status, f"Error {status}"), "A problem occurred."))

    def _authenticate(self, req: _Request) -> _Response | None:
        header = req.headers.get("Authorization") or ""
        if not header.startswith("Basic "):
            return _Response(
                403,
                _html("Authentication required", "You are authenticated as: anonymous"),
                headers={
                    "X-You-Are-Authenticated-As": "anonymous",
                    "X-Required-Permission": "hudson.model.Hudson.Read",
                },
            )
        try:
            user, _, token = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return _Response(401, _html("Error 401", "Malformed HTTP basic Authorization header"))
        expected = self.users.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), token.encode()):
            return _Response(
                401,
                _html("Error 401 Unauthorized", f"Invalid password/token for user: {user}"),
                headers={"WWW-Authenticate": 'Basic realm="Jenkins"'},
            )
        req.user = user
        return None

    def _crumb_for(self, user: str) -> str:
        return hashlib.sha256(f"{self._crumb_salt}:{user}".encode()).hexdigest()

    def _check_crumb(self, req: _Request) -> _Response | None:
        if req.method != "POST" or self.crumbs in (False, "token-exempt"):
            return None
        assert req.user is not None
        sent = (
            req.headers.get("Jenkins-Crumb")
            or req.query.get("Jenkins-Crumb")
            or req.form().get("Jenkins-Crumb")
        )
        if sent and hmac.compare_digest(sent, self._crumb_for(req.user)):
            return None
        return _Response(403, _html("Error 403", "No valid crumb was included in the request"))

    def _dispatch(self, req: _Request) -> _Response:
        denied = self._authenticate(req)
        if denied is not None:
            return denied
        segs = [unquote(s) for s in req.path.split("/") if s]
        if segs[:2] == ["crumbIssuer", "api"]:
            if self.crumbs is False:
                return _Response(404, _html("Not Found", "Not Found"))
            assert req.user is not None
            return self._json(
                {
                    "_class": "hudson.security.csrf.DefaultCrumbIssuer",
                    "crumb": self._crumb_for(req.user),
                    "crumbRequestField": "Jenkins-Crumb",
                },
                headers={"Set-Cookie": f"JSESSIONID.fake={self._crumb_for(req.user)[:16]}; Path=/; HttpOnly"},
            )
        bad_crumb = self._check_crumb(req)
        if bad_crumb is not None:
            return bad_crumb
        if not segs:
            return _Response(200, _html("Dashboard", "Welcome to Jenkins!"))
        if segs == ["api", "json"]:
            return self._json(self._root_doc(req.query), req.query)
        if segs[:3] == ["me", "api", "json"]:
            return self._json(
                {
                    "_class": "hudson.model.User",
                    "absoluteUrl": f"{self.url}/user/{req.user}",
                    "description": None,
                    "fullName": req.user,
                    "id": req.user,
                    "property": [],
                },
                req.query,
            )
        if segs[0] == "queue":
            return self._queue_route(req, segs[1:])
        if segs[0] == "job":
            return self._job_route(req, segs)
        return _Response(404, _html("Not Found", "Not Found"))

    def _json(
        self, doc: Any, query: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> _Response:
        if query and query.get("tree"):
            doc = _apply_tree(doc, _parse_tree(query["tree"]))
        return _Response(200, json.dumps(doc).encode(), "application/json;charset=utf-8", headers or {})

    @staticmethod
    def _require_post(req: _Request) -> _Response | None:
        if req.method != "POST":
            return _Response(405, _html("Error 405", "This URL requires POST"), headers={"Allow": "POST"})
        return None

    # -- /queue ------------------------------------------------------------------------------------

    def _queue_route(self, req: _Request, rest: list[str]) -> _Response:
        if rest == ["api", "json"]:
            items = [self._queue_item_doc(q) for q in self._queue.values() if q.state == "waiting"]
            return self._json(
                {"_class": "hudson.model.Queue", "discoverableItems": [], "items": items}, req.query
            )
        if len(rest) == 4 and rest[0] == "item" and rest[2:] == ["api", "json"] and rest[1].isdigit():
            q = self._queue.get(int(rest[1]))
            if q is None or q.forgotten:
                return _Response(404, _html("Not Found", "Not Found"))
            return self._json(self._queue_item_doc(q), req.query)
        if rest == ["cancelItem"]:
            if (denied := self._require_post(req)) is not None:
                return denied
            qid = req.query.get("id") or req.form().get("id") or ""
            q = self._queue.get(int(qid)) if qid.isdigit() else None
            if q is None or q.state != "waiting":
                return _Response(404, _html("Not Found", "Provided queue item is no longer in the queue"))
            q.state = "cancelled"
            return _Response(204)
        return _Response(404, _html("Not Found", "Not Found"))

    def _params_action(self, job: _Job, params: dict[str, str]) -> dict[str, Any]:
        types = {d["name"]: d["type"] for d in job.parameters}
        values = []
        for k, v in params.items():
            ptype = types.get(k, "StringParameterDefinition")
            value: Any = v
            if ptype == "BooleanParameterDefinition":
                value = v.lower() == "true"
            entry = {"_class": _VALUE_CLASSES.get(ptype, "hudson.model.StringParameterValue"), "name": k}
            if ptype != "PasswordParameterDefinition":
                entry["value"] = value
            values.append(entry)
        return {"_class": "hudson.model.ParametersAction", "parameters": values}

    @staticmethod
    def _short_descriptions(job: _Job, params: dict[str, str]) -> list[str]:
        """`ParameterValue.getShortDescription()`: `NAME=value`, a password as `NAME=****` (Jenkins core's
        PasswordParameterValue). The queue item's `params` lists these; the pipeline echoes them too (a
        job that echoes a password itself would print it: real Jenkins masks nothing in `echo`)."""
        types = {d["name"]: d["type"] for d in job.parameters}
        return [
            f"{k}=****" if types.get(k) == "PasswordParameterDefinition" else f"{k}={v}"
            for k, v in params.items()
        ]

    @staticmethod
    def _cause_action(user: str) -> dict[str, Any]:
        return {
            "_class": "hudson.model.CauseAction",
            "causes": [
                {
                    "_class": "hudson.model.Cause$UserIdCause",
                    "shortDescription": f"Started by user {user}",
                    "userId": user,
                    "userName": user,
                }
            ],
        }

    def _queue_item_doc(self, q: _QueueItem) -> dict[str, Any]:
        job = q.job
        actions: list[dict[str, Any]] = [self._cause_action(q.user)]
        if q.params:
            actions.insert(0, self._params_action(job, q.params))
        doc: dict[str, Any] = {
            "actions": actions,
            "blocked": False,
            "buildable": False,
            "id": q.id,
            "inQueueSince": _ms(q.in_queue_since),
            "params": "".join(f"\n{d}" for d in self._short_descriptions(job, q.params)),
            "stuck": False,
            "task": {
                "_class": _JOB_CLASS,
                "name": job.short_name,
                "url": self._job_url(job),
                "color": "blue",
            },
            "url": f"queue/item/{q.id}/",
        }
        if q.state == "waiting":
            left = max(0.0, q.in_queue_since + job.queue_seconds - time.time())
            doc.update(
                {
                    "_class": "hudson.model.Queue$WaitingItem",
                    "timestamp": _ms(q.in_queue_since + job.queue_seconds),
                    "why": f"In the quiet period. Expires in {left:.2f} sec",
                }
            )
        else:
            executable = None
            if q.state == "left" and q.build_number is not None:
                b = job.builds[q.build_number]
                executable = {"_class": _RUN_CLASS, "number": b.number, "url": self._build_url(b)}
            doc.update(
                {
                    "_class": "hudson.model.Queue$LeftItem",
                    "cancelled": q.state == "cancelled",
                    "executable": executable,
                    "why": None,
                }
            )
        return {"_class": doc.pop("_class"), **doc}

    # -- /job --------------------------------------------------------------------------------------

    def _job_route(self, req: _Request, segs: list[str]) -> _Response:
        parts: list[str] = []
        i = 0
        job: _Job | None = None
        while i + 1 < len(segs) and segs[i] == "job":
            parts.append(segs[i + 1])
            i += 2
            name = "/".join(parts)
            if name in self._jobs:
                job = self._jobs[name]
                break
            if not any(j.startswith(name + "/") for j in self._jobs):
                return _Response(404, _html("Not Found", "Not Found"))
        rest = segs[i:]
        if job is None:
            folder = "/".join(parts)
            if parts and rest in ([], ["api", "json"]):
                return self._json(self._folder_doc(folder), req.query)
            return _Response(404, _html("Not Found", "Not Found"))
        if rest in ([], ["api", "json"]):
            if not rest:
                return _Response(200, _html(job.short_name, "Pipeline"))
            depth = 2 if req.query.get("tree") else int(req.query.get("depth") or 0)
            return self._json(self._job_doc(job, depth), req.query)
        if rest == ["buildWithParameters"] or rest == ["build"]:
            if (denied := self._require_post(req)) is not None:
                return denied
            return self._schedule(req, job, with_parameters=rest[0] == "buildWithParameters")
        if rest[0].isdigit():
            b = job.builds.get(int(rest[0]))
            if b is None:
                return _Response(404, _html("Not Found", "Not Found"))
            return self._build_route(req, b, rest[1:])
        return _Response(404, _html("Not Found", "Not Found"))

    def _folder_doc(self, folder: str) -> dict[str, Any]:
        prefix = folder + "/"
        children: dict[str, dict[str, Any]] = {}
        for name, j in self._jobs.items():
            if not name.startswith(prefix):
                continue
            child = name[len(prefix) :].split("/", 1)[0]
            full = prefix + child
            if full in self._jobs:
                children[child] = {
                    "_class": _JOB_CLASS,
                    "name": child,
                    "url": self._job_url(j),
                    "color": "blue",
                }
            else:
                path = "/" + "".join(f"job/{quote(p, safe='')}/" for p in full.split("/"))
                children[child] = {"_class": _FOLDER_CLASS, "name": child, "url": self.url + path}
        path = "/" + "".join(f"job/{quote(p, safe='')}/" for p in folder.split("/"))
        return {
            "_class": _FOLDER_CLASS,
            "name": folder.rsplit("/", 1)[-1],
            "fullName": folder,
            "url": self.url + path,
            "jobs": list(children.values()),
        }

    def _root_doc(self, query: dict[str, str]) -> dict[str, Any]:
        top: dict[str, dict[str, Any]] = {}
        for name, j in self._jobs.items():
            first = name.split("/", 1)[0]
            if first == name:
                top[first] = {"_class": _JOB_CLASS, "name": first, "url": self._job_url(j), "color": "blue"}
            else:
                top[first] = {
                    "_class": _FOLDER_CLASS,
                    "name": first,
                    "url": f"{self.url}/job/{quote(first, safe='')}/",
                }
        return {
            "_class": "hudson.model.Hudson",
            "assignedLabels": [{"name": "built-in"}],
            "mode": "NORMAL",
            "nodeDescription": "the Jenkins controller's built-in node",
            "nodeName": "",
            "numExecutors": 2,
            "jobs": list(top.values()),
            "quietingDown": False,
            "url": self.url + "/",
            "useCrumbs": self.crumbs is not False,
            "useSecurity": True,
        }

    def _param_definitions(self, job: _Job) -> list[dict[str, Any]]:
        out = []
        for d in job.parameters:
            cls = d["type"]
            default: dict[str, Any] = {"_class": _VALUE_CLASSES.get(cls, "hudson.model.StringParameterValue")}
            default["name"] = d["name"]
            if cls == "BooleanParameterDefinition":
                default["value"] = str(d["default"]).lower() == "true"
            elif cls != "PasswordParameterDefinition":
                default["value"] = "" if d["default"] is None else str(d["default"])
            entry: dict[str, Any] = {
                "_class": f"hudson.model.{cls}",
                "defaultParameterValue": default,
                "description": "",
                "name": d["name"],
                "type": cls,
            }
            if d["choices"] is not None:
                entry["choices"] = list(d["choices"])
            out.append(entry)
        return out

    def _job_doc(self, job: _Job, depth: int) -> dict[str, Any]:
        builds = sorted(job.builds.values(), key=lambda b: -b.number)

        def ref(b: _Build | None) -> dict[str, Any] | None:
            if b is None:
                return None
            if depth >= 1:
                return self._build_doc(b)
            return {"_class": _RUN_CLASS, "number": b.number, "url": self._build_url(b)}

        def last(pred: Any) -> dict[str, Any] | None:
            return ref(next((b for b in builds if pred(b)), None))

        waiting = [q for q in self._queue.values() if q.job is job and q.state == "waiting"]
        color = "notbuilt"
        if builds:
            color = {"SUCCESS": "blue", "FAILURE": "red", "UNSTABLE": "yellow", "ABORTED": "aborted"}.get(
                next((b.result for b in builds if b.result), "") or "", "notbuilt"
            )
            if builds[0].state != "finished":
                color += "_anime"
        doc: dict[str, Any] = {
            "_class": _JOB_CLASS,
            "actions": [{}, {"_class": "org.jenkinsci.plugins.displayurlapi.actions.JobDisplayAction"}],
            "description": "",
            "displayName": job.short_name,
            "fullDisplayName": job.name.replace("/", " » "),
            "fullName": job.name,
            "name": job.short_name,
            "url": self._job_url(job),
            "buildable": True,
            "builds": [ref(b) for b in builds],
            "color": color,
            "firstBuild": ref(builds[-1] if builds else None),
            "inQueue": bool(waiting),
            "keepDependencies": False,
            "lastBuild": ref(builds[0] if builds else None),
            "lastCompletedBuild": last(lambda b: b.state == "finished"),
            "lastFailedBuild": last(lambda b: b.result == "FAILURE"),
            "lastSuccessfulBuild": last(lambda b: b.result in ("SUCCESS", "UNSTABLE")),
            "nextBuildNumber": job.next_number,
            "property": [],
            "queueItem": self._queue_item_doc(waiting[0]) if waiting and depth >= 1 else None,
            "concurrentBuild": True,
            "resumeBlocked": False,
        }
        if job.parameters:
            doc["property"].append(
                {
                    "_class": "hudson.model.ParametersDefinitionProperty",
                    "parameterDefinitions": self._param_definitions(job),
                }
            )
        return doc

    def _schedule(self, req: _Request, job: _Job, with_parameters: bool) -> _Response:
        assert req.user is not None
        sent = {
            k: v
            for k, v in {**req.form(), **req.query}.items()
            if k not in ("token", "delay", "Jenkins-Crumb")
        }
        if not with_parameters and job.parameters:
            form = req.form()
            if "json" not in form:
                return _Response(400, _html("Error", "This page expects a form submission"))
            sent = {p["name"]: str(p.get("value")) for p in json.loads(form["json"]).get("parameter", [])}
        params: dict[str, str] = {}
        for d in job.parameters:
            value = sent.get(d["name"])
            if value is None:
                value = "" if d["default"] is None else str(d["default"])
            if d["type"] == "ChoiceParameterDefinition" and d["choices"] and value not in d["choices"]:
                return _Response(400, _html("Error", f"Illegal choice for parameter {d['name']}: {value}"))
            if d["type"] == "BooleanParameterDefinition":
                value = "true" if value.lower() == "true" else "false"
            params[d["name"]] = value
        for q in self._queue.values():
            if q.job is job and q.state == "waiting" and q.params == params:
                return _Response(201, headers={"Location": f"{self.url}/queue/item/{q.id}/"})
        qid = self._next_queue_id
        self._next_queue_id += 1
        self._queue[qid] = _QueueItem(
            id=qid, job=job, params=params, user=req.user, in_queue_since=time.time()
        )
        self._advance()
        return _Response(201, headers={"Location": f"{self.url}/queue/item/{qid}/"})

    # -- /job/X/N ----------------------------------------------------------------------------------

    def _build_doc(self, b: _Build) -> dict[str, Any]:
        actions: list[dict[str, Any]] = [self._cause_action(b.user)]
        if b.params:
            actions.insert(0, self._params_action(b.job, b.params))
        if b.job.input_id and b.phase != "plan":
            actions.append({"_class": "org.jenkinsci.plugins.workflow.support.steps.input.InputAction"})
        end = b.finished if b.finished is not None else time.time()
        building = b.state != "finished"
        return {
            "_class": _RUN_CLASS,
            "actions": actions,
            "artifacts": [],
            "building": building,
            "description": None,
            "displayName": f"#{b.number}",
            "duration": 0 if building else _ms(end - b.started),
            "estimatedDuration": -1,
            "executor": None,
            "fullDisplayName": f"{b.job.name.replace('/', ' » ')} #{b.number}",
            "id": str(b.number),
            "inProgress": building,
            "keepLog": False,
            "number": b.number,
            "queueId": b.queue_id,
            "result": b.result,
            "timestamp": _ms(b.started),
            "url": self._build_url(b),
            "changeSets": [],
            "culprits": [],
        }

    def _build_route(self, req: _Request, b: _Build, rest: list[str]) -> _Response:
        build_path = f"{b.job.path}{b.number}/"
        if rest == ["api", "json"]:
            return self._json(self._build_doc(b), req.query)
        if rest == ["consoleText"]:
            text = "".join(line + "\n" for line in b.console)
            return _Response(200, text.encode(), "text/plain;charset=utf-8")
        if rest == ["logText", "progressiveText"]:
            return self._progressive_text(req, b)
        if rest in ([], ["console"]):
            return _Response(200, _html(f"{b.job.short_name} #{b.number}", "Console Output"))
        if rest == ["wfapi", "pendingInputActions"]:
            pending = []
            messages: dict[str, str] = {b.job.input_id or "": b.job.input_message, **b.job.parallel_inputs}
            for iid in b.pending if b.state == "paused" else []:
                pending.append(
                    {
                        "id": iid,
                        "proceedText": "Proceed",
                        "message": messages.get(iid, ""),
                        "inputs": [],
                        "proceedUrl": f"{build_path}wfapi/inputSubmit?inputId={iid}",
                        "abortUrl": f"{build_path}input/{iid}/abort",
                        "redirectApprovalUrl": f"{build_path}input/",
                    }
                )
            return self._json(pending, req.query)
        if rest == ["wfapi", "describe"]:
            return self._json(self._describe(b, build_path), req.query)
        if rest == ["wfapi", "inputSubmit"]:
            if (denied := self._require_post(req)) is not None:
                return denied
            return self._input(req, b, req.query.get("inputId", ""), "proceed")
        if (
            len(rest) == 3
            and rest[0] == "input"
            and rest[2] in ("proceedEmpty", "proceed", "submit", "abort")
        ):
            if (denied := self._require_post(req)) is not None:
                return denied
            return self._input(req, b, rest[1], rest[2])
        if rest == ["stop"]:
            if (denied := self._require_post(req)) is not None:
                return denied
            assert req.user is not None
            self._stop(b, req.user)
            return _Response(302, headers={"Location": self._build_url(b)})
        return _Response(404, _html("Not Found", "Not Found"))

    def _progressive_text(self, req: _Request, b: _Build) -> _Response:
        """`logText/progressiveText?start=N` as Stapler's `LargeText.doProgressText` answers it: the log from
        byte offset N (0 if N is past the end: "text rolled over"); while the build runs only whole lines,
        at most MAX_LINES_READ of them; `X-Text-Size` the offset to ask for next; `X-More-Data: true` while
        the build runs (the log is not complete)."""
        try:
            start = int(req.query.get("start") or 0)
        except ValueError:  # Long.parseLong throws: Jenkins' "Oops!" page
            return _Response(500, _html("Oops!", "java.lang.NumberFormatException"))
        data = "".join(line + "\n" for line in b.console).encode("utf-8")
        if start > len(data) or start < 0:
            start = 0
        completed = b.state == "finished"
        chunk = data[start:]
        if not completed:
            lines = chunk.split(b"\n")[:-1][:PROGRESSIVE_MAX_LINES]  # whole lines only
            chunk = b"".join(line + b"\n" for line in lines)
        headers = {"X-Text-Size": str(start + len(chunk))}
        if not completed:
            headers["X-More-Data"] = "true"
        return _Response(200, chunk, "text/plain;charset=UTF-8", headers)

    def _input(self, req: _Request, b: _Build, input_id: str, verb: str) -> _Response:
        assert req.user is not None
        if b.state != "paused" or input_id not in b.pending:
            return _Response(400, _html("Error", f"No pending input with id {input_id} in this build"))
        if verb == "submit":
            self._answer(b, "proceed" in req.form(), req.user, input_id)
            return _Response(302, headers={"Location": f"{self._build_url(b)}console"})
        self._answer(b, verb != "abort", req.user, input_id)
        return _Response(200)

    def _describe(self, b: _Build, build_path: str) -> dict[str, Any]:
        now = time.time()
        if b.state == "paused":
            status = "PAUSED_PENDING_INPUT"
        elif b.state == "running":
            status = "IN_PROGRESS"
        else:
            status = _DESCRIBE_STATUS.get(b.result or "", "FAILED")
        end = b.finished if b.finished is not None else now
        pause = b.pause_ms + (_ms(now - b.paused_since) if b.paused_since is not None else 0)
        links: dict[str, Any] = {"self": {"href": f"{build_path}wfapi/describe"}}
        if b.state == "paused":
            links["pendingInputActions"] = {"href": f"{build_path}wfapi/pendingInputActions"}
        stages = [{"id": "6", "name": "Plan", "status": "SUCCESS" if b.phase != "plan" else status}]
        if b.job.input_id and b.phase != "plan":
            stages.append(
                {"id": "14", "name": "Approve", "status": status if b.phase == "input" else "SUCCESS"}
            )
        if b.phase in ("apply", "done") and (b.answered_by is None or b.result != "ABORTED"):
            stages.append({"id": "20", "name": "Apply", "status": status})
        return {
            "_links": links,
            "id": str(b.number),
            "name": f"#{b.number}",
            "status": status,
            "startTimeMillis": _ms(b.started),
            "endTimeMillis": _ms(end),
            "durationMillis": _ms(end - b.started),
            "queueDurationMillis": _ms(b.job.queue_seconds),
            "pauseDurationMillis": pause,
            "stages": stages,
        }


# -- what a request is, for counting -----------------------------------------------------------------

_BUILD_KINDS = {
    "api/json": "build",
    "consoleText": "consoleText",
    "logText/progressiveText": "progressiveText",
    "wfapi/pendingInputActions": "pendingInputActions",
    "wfapi/describe": "describe",
    "wfapi/inputSubmit": "input",
    "stop": "stop",
}


def request_kind(method: str, path: str) -> str:
    """The kind of a request, by its path: `crumb`, `me`, `root`, `queue`, `queue item`, `job`, `trigger`,
    `build`, `consoleText`, `progressiveText`, `pendingInputActions`, `describe`, `input` (a POST that
    answers an input), `stop`, or `other`. Folders are seen through (`job/a/job/b/…`)."""
    segs = [s for s in path.split("/") if s]
    if segs[:1] == ["crumbIssuer"]:
        return "crumb"
    if segs[:1] == ["me"]:
        return "me"
    if segs in ([], ["api", "json"]):
        return "root"
    if segs[:2] == ["queue", "item"]:
        return "queue item"
    if segs[:1] == ["queue"]:
        return "queue"
    i = 0
    while i + 1 < len(segs) and segs[i] == "job":
        i += 2
    if i == 0:
        return "other"
    rest = segs[i:]
    if rest in ([], ["api", "json"]):
        return "job"
    if rest[0] in ("build", "buildWithParameters"):
        return "trigger"
    if rest[0].isdigit():
        tail = "/".join(rest[1:])
        if tail.startswith("input/"):
            return "input"
        return _BUILD_KINDS.get(tail, "other")
    return "other"


# -- the `tree` query parameter ---------------------------------------------------------------------

_TreeSpec = dict[str, tuple["_TreeSpec | None", "slice | None"]]


def _parse_tree(text: str) -> _TreeSpec:
    """Parse Jenkins' `tree=` syntax: `a,b[c,d[e]]{0,10}`."""
    pos = 0
    name_re = re.compile(r"[^,\[\]{}]*")

    def parse_list() -> _TreeSpec:
        nonlocal pos
        out: _TreeSpec = {}
        while pos <= len(text):
            m = name_re.match(text, pos)
            assert m is not None
            name, pos = m.group().strip(), m.end()
            sub: _TreeSpec | None = None
            rng: slice | None = None
            if pos < len(text) and text[pos] == "[":
                pos += 1
                sub = parse_list()
                pos += 1  # the closing ]
            if pos < len(text) and text[pos] == "{":
                end = text.index("}", pos)
                rng = _parse_range(text[pos + 1 : end])
                pos = end + 1
            if name:
                out[name] = (sub, rng)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            break
        return out

    return parse_list()


def _parse_range(spec: str) -> slice:
    if "," not in spec:
        n = int(spec)
        return slice(n, n + 1)
    lo, hi = spec.split(",", 1)
    return slice(int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)


def _apply_tree(value: Any, spec: _TreeSpec) -> Any:
    if isinstance(value, list):
        return [_apply_tree(v, spec) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    if "_class" in value:
        out["_class"] = value["_class"]
    for name, (sub, rng) in spec.items():
        if name not in value:
            continue
        v = value[name]
        if rng is not None and isinstance(v, list):
            v = v[rng]
        out[name] = _apply_tree(v, sub) if sub is not None else _leaf(v)
    return out


def _leaf(value: Any) -> Any:
    """A field named without a sub-tree: objects collapse to their `_class`, as Jenkins does."""
    if isinstance(value, dict):
        return {"_class": value["_class"]} if "_class" in value else {}
    if isinstance(value, list):
        return [_leaf(v) for v in value]
    return value
