"""Workers killed with SIGKILL at every step boundary of every process: the deploys finish, and no
effect happens twice."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from starter.client import Refused, send_action, start_deploy
from starter.devstack import (
    COM_SCRIPT,
    DIFF,
    GOV_SCRIPT,
    RELEASE_SCRIPT,
    Script,
    release_calendar,
)
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests.conftest import (
    CONFIGS_REPO,
    DIFF_LINES,
    JOB_PARAMETERS,
    OWNER,
    PARAMS,
    PCCR_REPO,
    VERSION_FILE,
    eventually,
    make_deployment,
)
from tests.test_replay import replayer
from worker import CACHE_ENV, MAX_CACHED_WORKFLOWS
from workflows import search_attributes as sa
from workflows.models import Action, ActionInput, DeployResult, DeployStatus, Outcome, Process, Step

ROOT = Path(__file__).resolve().parent.parent


class WorkerProcess:
    """`python worker.py` in its own process, as production runs it."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        config_path: Path,
        secrets: dict[str, str],
        *args: str,
        log: Path | None = None,
    ) -> None:
        self.env = {
            **os.environ,
            **secrets,
            "TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "DEPLOYCTL_CONFIG": str(config_path),
        }
        self.args, self.log = args, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        out = open(self.log, "ab") if self.log else None  # noqa: SIM115 - the child owns it
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "worker.py"),
            *self.args,
            env=self.env,
            cwd=str(ROOT),
            stdout=out or asyncio.subprocess.DEVNULL,
            stderr=out or asyncio.subprocess.DEVNULL,
        )
        if out:
            out.close()

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except TimeoutError:
                await self.kill()


@pytest_asyncio.fixture
async def processes() -> AsyncIterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for p in started:
        await p.stop()


def _service(name: str, job: str) -> str:
    return f'\n[services.{name}]\ncode_owners = ["{OWNER}"]\njenkins_job = "{job}"\n'


def _as_posted(m: dict) -> tuple[str, str | None, str, str]:
    """A Slack message as it was first posted (before any chat.update), to tell a repeat from another."""
    first = (m.get("history") or [m])[0]
    return m["channel"], m["thread_ts"], first["text"], json.dumps(first.get("blocks"), sort_keys=True)


class Crasher:
    """Kills the worker with SIGKILL and starts a new one, one crash at a time, and counts them."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker, self.lock = worker, asyncio.Lock()
        self.crashes: list[str] = []
        self.turned_away: list[str] = []  # actions the server refused while a workflow task was retried

    async def __call__(self, where: str) -> None:
        async with self.lock:
            await self.worker.kill()
            self.crashes.append(where)
            await self.worker.start()


async def status_when_up(client: Client, wid: str, timeout: float = 120) -> DeployStatus:
    """The status query, tried again while the worker is being restarted."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.get_workflow_handle(wid).query("status", result_type=DeployStatus)
        except RPCError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


# How the scripted people see where a deploy stands while workers die under it. By default through the
# `status` query, as `deployctl status`, Slack's `/deploy status` and the Web UI do: a fresh worker then
# answers queries right after every kill, the interleaving that wedged deploys before worker.py ran
# workflows one job at a time (workflows/job_order.py, docs/replay.md, tests/test_wedge.py); the worker
# log is checked for non-determinism at the end. With DEPLOYCTL_CRASH_QUERIES=0 through the server alone
# (`describe`: the DeployStep and DeployWaitingOn search attributes, as `deployctl list` and the Web UI's
# list show them) and the diff's sha256 from the Slack DM, as a person reads it.
BY_QUERY = os.environ.get("DEPLOYCTL_CRASH_QUERIES", "1") != "0"
DIFF_SHA = re.compile(r"diff sha256 `([0-9a-f]{64})`")


@dataclass
class Seen:
    running: bool
    step: Step | None
    waiting_on: list[str]
    diff_sha256: str | None


async def observe(client: Client, slack: FakeSlack, wid: str) -> Seen:
    if BY_QUERY:
        st = await status_when_up(client, wid)
        return Seen(st.outcome is None, st.step, st.waiting_on, st.build.diff_sha256)
    d = await client.get_workflow_handle(wid).describe()
    attrs = d.typed_search_attributes
    step = attrs.get(sa.STEP)
    dms = [json.dumps(m) for m in slack.messages if wid in json.dumps(m)]
    shas = [found for m in dms for found in DIFF_SHA.findall(m)]
    return Seen(
        d.status is WorkflowExecutionStatus.RUNNING,
        Step(step) if step else None,
        list(attrs.get(sa.WAITING_ON) or []),
        shas[-1] if shas else None,
    )


async def drive(
    client: Client, slack: FakeSlack, wid: str, script: Script, job: str, jenkins: FakeJenkins, crash: Crasher
) -> None:
    """Act through `script`, crashing the worker after every accepted action (a step boundary), once
    while the trigger's build waits in Jenkins' queue, and once while a release waits for its window."""
    for action, actor, step, extra in script:
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, f"{wid} never reached {step.value} for {actor}"
            seen = await observe(client, slack, wid)
            assert seen.running, f"{wid} ended at {seen.step}"
            if seen.step is step and actor in seen.waiting_on:
                fields = {k: (seen.diff_sha256 or "" if v == DIFF else v) for k, v in extra.items()}
                try:
                    msg = ActionInput(actor=actor, step=step, channel="test", **fields)
                    await send_action(client, wid, action, msg)
                    break
                except Refused as err:
                    # What a person saw may be ahead of what the next worker has caught up with (or,
                    # for the diff, the DM not yet posted); it says so, and a person would try again.
                    if "recovering from a worker crash" in str(err):  # send_action's retries ran out
                        crash.turned_away.append(f"{wid}: {action.value} at {step.value}")
                    else:
                        assert "takes no action right now" in str(err) or "diff" in str(err), str(err)
                except RPCError as err:
                    # A worker killed while it held the deploy's workflow task leaves the task to be
                    # retried after its 10 s timeout; while an attempt after the first is pending the
                    # server turns Updates away. Nothing changed, and a person would try again.
                    if "Workflow Task in failed state" not in err.message:
                        raise
                    crash.turned_away.append(f"{wid}: {action.value} at {step.value}")
            await asyncio.sleep(0.2)
        if action is Action.TRIGGER:
            # (a crash in another deploy may hold up the trigger for an activity timeout or two)
            await eventually(lambda: jenkins.queued(job) or jenkins.builds(job), timeout=180)
            await crash(f"{wid}: inside trigger")
        await crash(f"{wid}: after {step.value}")
        if step is Step.RELEASE_ACCEPTANCE:
            seen = await observe(client, slack, wid)
            if seen.step is Step.RELEASE_WINDOW_WAIT:
                await crash(f"{wid}: in release_window_wait")


@pytest.mark.timeout(600)
async def test_sigkill_at_every_step_boundary_of_every_process(
    env: WorkflowEnvironment,
    tmp_path: Path,
    jenkins: FakeJenkins,
    slack: FakeSlack,
    github: FakeGitHub,
    secrets: dict,
    processes: list[WorkerProcess],
):
    """An OOW com, an OOW gov and a release deploy, each on its own service, share one worker that is
    killed at every step boundary of each, inside each trigger, and while the release waits for its
    window. Each deploy succeeds with one build, one PCCR and (gov) one version PR; no Slack message
    or PCCR comment is sent more than twice."""
    tag = uuid.uuid4().hex[:6]
    gov_svc, rel_svc = f"gov-{tag}", f"rel-{tag}"
    gov_job, rel_job = f"deploy-{gov_svc}", f"deploy-{rel_svc}"
    for job in (gov_job, rel_job):
        jenkins.add_job(job, parameters=JOB_PARAMETERS, diff_lines=DIFF_LINES, queue_seconds=3.0)
    github.commit_file(
        CONFIGS_REPO, "master", f"channel-gov/{gov_svc}.yaml", VERSION_FILE.format(service=gov_svc)
    )
    extra = _service(gov_svc, gov_job) + _service(rel_svc, rel_job) + release_calendar(timedelta(seconds=75))
    d = make_deployment(
        tmp_path, jenkins, slack, github=github, pccr_backend="github", extra=extra, queue_seconds=3.0
    )
    client: Client = env.client
    worker = WorkerProcess(env, d.config_path, secrets, log=tmp_path / "worker.log")
    processes.append(worker)
    await worker.start()
    crash = Crasher(worker)
    slack_seen, pccrs_seen = len(slack.messages), len(github.issues(PCCR_REPO))

    com, _ = await start_deploy(client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER)
    gov, _ = await start_deploy(
        client, d.config, Process.OOW, gov_svc, "kprod-gov", dict(PARAMS), "1.4.2", OWNER
    )
    rel, _ = await start_deploy(client, d.config, Process.RELEASE, rel_svc, "kstg", dict(PARAMS), None, OWNER)
    try:
        await asyncio.gather(
            drive(client, slack, com, COM_SCRIPT, d.job, jenkins, crash),
            drive(client, slack, gov, GOV_SCRIPT, gov_job, jenkins, crash),
            drive(client, slack, rel, RELEASE_SCRIPT, rel_job, jenkins, crash),
        )
        outcomes = [
            (await client.get_workflow_handle(w, result_type=DeployResult).result()).outcome
            for w in (com, gov, rel)
        ]
    finally:  # the histories, for the replay below or to see what went wrong
        histories = [await client.get_workflow_handle(w).fetch_history() for w in (com, gov, rel)]
        for name, h in zip(("com", "gov", "release"), histories, strict=True):
            (tmp_path / f"{name}.json").write_text(h.to_json())

    log = (tmp_path / "worker.log").read_text()
    assert "Nondeterminism" not in log and "Failing workflow task" not in log
    for h in histories:  # what the crashed workers recorded replays on today's code
        await replayer().replay_workflow(h)
    audits = [(await status_when_up(client, w)).model_dump_json() for w in (com, gov, rel)]
    for name, token in secrets.items():  # no token in a history, a log line or an audit, crashes or not
        assert not [t for t in (log, *audits, *(h.to_json() for h in histories)) if token in t], name

    assert outcomes == [Outcome.SUCCEEDED] * 3
    boundaries = len(COM_SCRIPT) + len(GOV_SCRIPT) + len(RELEASE_SCRIPT)
    assert len(crash.crashes) >= boundaries + 3  # every boundary, plus once inside each trigger
    for job in (d.job, gov_job, rel_job):
        posts = [r for r in jenkins.requests if r[0] == "POST" and f"/job/{job}/buildWithParameters" in r[1]]
        builds = jenkins.builds(job)
        assert len(posts) == 1 and len(builds) == 1, job
        assert builds[0]["params"] == PARAMS and builds[0]["result"] == "SUCCESS"
    prs = [p for p in github.pulls(CONFIGS_REPO) if gov in p["head"]["ref"]]
    assert len(prs) == 1 and prs[0]["merged"]
    assert not [p for p in github.pulls(CONFIGS_REPO) if com in p["head"]["ref"] or rel in p["head"]["ref"]]
    pccrs = github.issues(PCCR_REPO)[pccrs_seen:]
    for wid in (com, gov, rel):
        mine = [i for i in pccrs if wid in i["body"]]
        assert len(mine) == 1, f"{wid}: {len(mine)} PCCRs"
        comments = Counter(mine[0]["comments"])
        assert comments and max(comments.values()) <= 2, comments.most_common(3)
    sent = Counter(_as_posted(m) for m in slack.messages[slack_seen:])
    assert len(sent) > 3 * len(COM_SCRIPT)  # the deploys' notices really went through the fake
    twice = [(k, n) for k, n in sent.items() if n > 1]
    assert all(n <= 2 for _, n in twice), twice
    print(
        f"{len(crash.crashes)} crashes, {sum(sent.values())} Slack messages, {len(twice)} sent twice, "
        f"{len(crash.turned_away)} actions turned away while a workflow task was retried; "
        f"watched through {'status queries' if BY_QUERY else 'describe'}, "
        f"{CACHE_ENV}={os.environ.get(CACHE_ENV, f'(unset: {MAX_CACHED_WORKFLOWS})')}"
    )
