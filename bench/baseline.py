"""The throughput baseline: a bare Temporal workflow doing what a deploy costs Temporal and the fakes, and
nothing else — the physical limit of this box for that much work.

Per deploy it takes the same number of Updates (one per COM_SCRIPT step, each behind a validator that
checks the step), runs the same number of activities, and makes the same number of HTTP calls to the
Jenkins and Slack fakes as the product did in the same bench run (measured, then passed in as `Plan`).
The Jenkins calls drive a real build of the deploy job (trigger, queue, console, input proceed, result)
with the same client library as the product (python-jenkins, slack_sdk), in a thread pool of the same
size; the rest of the calls are padding GETs. No rules, no audit, no search attributes, no notify queue.
Its worker has the product worker's workflow settings, read from the same environment: worker.py's
workflow cache size (`workflow_cache_size()`) and runner (`workflow_runner()`: the same sandbox
pass-through and, by default, each job of an activation on its own).

Run as a worker subprocess: `python -m bench.baseline` (same env as `python worker.py`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

from bench.serve import main, serve_until

STEPS = 6  # Updates per deploy: approve, assign, clearance, trigger, validate_diff, deploy approval
TRIGGER_STEP, APPROVAL_STEP = 3, 5  # 0-based: the Jenkins work follows these Updates
ESSENTIAL = 6  # about what the 5 build-driving activities cost in Jenkins calls (polls vary)


@dataclass
class Plan:
    job: str
    activities: int  # total activities per deploy
    jenkins_calls: int  # total HTTP requests to the Jenkins fake per deploy
    slack_calls: int  # total HTTP requests to the Slack fake per deploy


@dataclass
class Act:
    step: int
    actor: str


@dataclass
class Calls:
    job: str
    count: int = 1  # padding GETs / Slack posts in this activity
    number: int = 0
    queue_id: int = 0


@dataclass
class Done:
    calls: int
    number: int = 0


# --------------------------------------------------------------------------------------- activities


class BaselineActivities:
    def __init__(self, jenkins_url: str, user: str, token: str, slack_url: str, slack_token: str) -> None:
        self._jenkins = (jenkins_url, user, token)
        self._slack = (slack_url, slack_token)
        self._local = threading.local()

    def _j(self) -> Any:
        import jenkins

        c = getattr(self._local, "j", None)
        if c is None:
            url, user, token = self._jenkins
            c = self._local.j = jenkins.Jenkins(url, username=user, password=token, timeout=10)
        return c

    def _s(self) -> Any:
        from slack_sdk import WebClient

        c = getattr(self._local, "s", None)
        if c is None:
            url, token = self._slack
            c = self._local.s = WebClient(token=token, base_url=url)
        return c

    @activity.defn(name="b_slack")
    def slack(self, c: Calls) -> Done:
        for _ in range(c.count):
            self._s().chat_postMessage(channel="C0TRIAGE", text=f"{c.job}: baseline notice")
        return Done(calls=c.count)

    @activity.defn(name="b_get")
    def get(self, c: Calls) -> Done:
        for _ in range(c.count):
            self._j().get_job_info(c.job)
        return Done(calls=c.count)

    @activity.defn(name="b_trigger")
    def trigger(self, c: Calls) -> Done:
        before = self._j().crumb  # python-jenkins fetches the crumb once per client: count it
        qid = self._j().build_job(c.job, {"IMAGE_TAG": "1.4.2", "REPLICAS": "3", "DRY_RUN": "false"})
        return Done(calls=1 + (before is None), number=int(qid))

    @activity.defn(name="b_started")
    def started(self, c: Calls) -> Done:
        calls = 0
        while True:
            calls += 1
            item = self._j().get_queue_item(c.queue_id)
            ex = item.get("executable")
            if ex and ex.get("number") is not None:
                return Done(calls=calls, number=int(ex["number"]))
            time.sleep(0.05)

    @activity.defn(name="b_diff")
    def diff(self, c: Calls) -> Done:
        calls = 0
        while True:
            calls += 1
            text = self._j().get_build_console_output(c.job, c.number)
            if "=== DEPLOY DIFF END ===" in text:
                return Done(calls=calls, number=c.number)
            time.sleep(0.05)

    @activity.defn(name="b_proceed")
    def proceed(self, c: Calls) -> Done:
        import requests

        j = self._j()
        before = j.crumb
        j.jenkins_request(
            requests.Request("POST", f"{j.server}job/{c.job}/{c.number}/input/Approve-deploy/proceedEmpty")
        )
        return Done(calls=1 + (before is None), number=c.number)

    @activity.defn(name="b_result")
    def result(self, c: Calls) -> Done:
        calls = 0
        while True:
            calls += 1
            info = self._j().get_build_info(c.job, c.number)
            if not info.get("building") and info.get("result"):
                return Done(calls=calls, number=c.number)
            time.sleep(0.05)


# ----------------------------------------------------------------------------------------- workflow

CALL = {"start_to_close_timeout": timedelta(seconds=60), "retry_policy": RetryPolicy(maximum_attempts=5)}


@workflow.defn(name="BenchBaseline")
class BaselineWorkflow:
    def __init__(self) -> None:
        self._step = 0
        self._open = False
        self._acts: list[Act] = []

    @workflow.query
    def step(self) -> dict[str, Any]:
        return {"step": self._step, "open": self._open}

    @workflow.update
    def act(self, a: Act) -> str:
        self._open = False
        self._acts.append(a)
        return f"step {a.step} accepted"

    @act.validator
    def _check(self, a: Act) -> None:
        if not self._open or a.step != self._step:
            raise ApplicationError(f"stale step {a.step}, at {self._step}", non_retryable=True)

    @workflow.run
    async def run(self, plan: Plan) -> dict[str, int]:
        # 5 Jenkins activities drive the build: trigger, started, diff (after the trigger Update), proceed,
        # result (after the approval Update); they make about ESSENTIAL calls. The other activities are Slack
        # posts and padding Jenkins GETs, spread over the 7 phases (before each Update and after the last).
        jenkins_acts = 5
        slack_acts = max(min(plan.slack_calls, plan.activities - jenkins_acts - 1), 1)
        pads = max(plan.activities - jenkins_acts - slack_acts, 1)
        slack_calls = _spread(plan.slack_calls, slack_acts)
        pad_calls = _spread(max(plan.jenkins_calls - ESSENTIAL, pads), pads)
        slack_phase, pad_phase = _spread(slack_acts, STEPS + 1), _spread(pads, STEPS + 1)
        done = {"jenkins": 0, "slack": 0, "activities": 0}

        async def call(name: str, c: Calls, kind: str) -> Done:
            r = await workflow.execute_activity(name, c, result_type=Done, **CALL)
            done[kind] += r.calls
            done["activities"] += 1
            return r

        # Like a deploy: an Update's effect (the Jenkins work) runs, the next step opens, and the notices
        # (Slack posts, padding GETs) go out from a queue, in order, while the step waits.
        queue: list[tuple[str, int, str]] = []
        closing = False

        async def notices() -> None:
            while True:
                await workflow.wait_condition(lambda: bool(queue) or closing)
                if not queue:
                    return
                name, count, kind = queue.pop(0)
                await call(name, Calls(plan.job, count=count), kind)

        notifier = asyncio.create_task(notices())
        number = 0
        for phase in range(STEPS + 1):
            if phase == TRIGGER_STEP + 1:
                r = await call("b_trigger", Calls(plan.job), "jenkins")
                r = await call("b_started", Calls(plan.job, queue_id=r.number), "jenkins")
                number = r.number
                await call("b_diff", Calls(plan.job, number=number), "jenkins")
            if phase == APPROVAL_STEP + 1:
                await call("b_proceed", Calls(plan.job, number=number), "jenkins")
                await call("b_result", Calls(plan.job, number=number), "jenkins")
            queue += [("b_slack", slack_calls.pop(), "slack") for _ in range(slack_phase[phase])]
            queue += [("b_get", pad_calls.pop(), "jenkins") for _ in range(pad_phase[phase])]
            if phase < STEPS:
                self._step, self._open = phase, True
                await workflow.wait_condition(lambda: not self._open)
        closing = True
        await notifier
        return done


def _tuning() -> dict[str, Any]:
    """BENCH_POLLERS=N: N workflow and N activity task pollers instead of the SDK's defaults (exploration
    only; the baseline the bench reports runs with the same worker options as the product's worker)."""
    n = int(os.environ.get("BENCH_POLLERS") or 0)
    return {"max_concurrent_workflow_task_polls": n, "max_concurrent_activity_task_polls": n} if n else {}


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ------------------------------------------------------------------------------------------- worker


async def _serve(metrics_port: int | None = None) -> None:
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    from starter.client import connect
    from starter.config import load_config
    from worker import workflow_cache_size, workflow_runner

    config = load_config(None)
    runtime = None
    if metrics_port:  # as worker.py's --metrics-port: the bench reads the workflow cache's counters
        runtime = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{metrics_port}"))
        )
    client = await connect(runtime=runtime)
    acts = BaselineActivities(
        config.jenkins.url,
        config.jenkins.user,
        os.environ["JENKINS_TOKEN"],
        config.slack.api_url,
        os.environ["SLACK_BOT_TOKEN"],
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve_until(
        stop,
        client,
        task_queue=config.task_queue,
        workflows=[BaselineWorkflow],
        activities=[
            acts.slack,
            acts.get,
            acts.trigger,
            acts.started,
            acts.diff,
            acts.proceed,
            acts.result,
        ],
        graceful_shutdown_timeout=timedelta(seconds=5),
        # The product worker's workflow settings, read the same way (DEPLOYCTL_MAX_CACHED_WORKFLOWS,
        # DEPLOYCTL_ONE_JOB_PER_ACTIVATION): its cache size and its runner (the sandbox with worker.py's
        # pass-through modules, and each job of an activation on its own), so the ratio compares workflows,
        # not worker settings.
        max_cached_workflows=workflow_cache_size(),
        workflow_runner=workflow_runner(),
        **_tuning(),
    )


if __name__ == "__main__":
    import sys

    port = int(sys.argv[sys.argv.index("--metrics-port") + 1]) if "--metrics-port" in sys.argv else None
    main(lambda: _serve(port))
