"""The worker pool entry point: `python worker.py [--metrics-port P]` (also `deployctl worker`).

Wires config, clients, activities and workflows onto the task queue. Secrets come from the environment
only. SIGTERM/SIGINT stop polling, let running activities finish (up to the graceful timeout), then exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.github import GithubActivities
from activities.jenkins import JenkinsActivities
from activities.locks import LockActivities
from activities.rules import RulesActivities
from activities.slack import SlackActivities
from starter.client import connect
from starter.config import Config, ConfigError, load_config, secret
from starter.logs import setup_logging
from starter.slack_api import make_web_client
from workflows import search_attributes as sa
from workflows.deploy import DeployWorkflow
from workflows.inspect_job import InspectJobWorkflow
from workflows.job_order import OneJobAtATime
from workflows.lock import DeployLockWorkflow

log = logging.getLogger("deployctl.worker")

WORKFLOWS = [DeployWorkflow, InspectJobWorkflow, DeployLockWorkflow]

# Side-effect-free modules the workflows use: shared by every workflow run instead of being re-imported into
# each run's sandbox (about 3/4 of a parked deploy's memory, bench/RESULTS.md). The workflow modules
# themselves stay sandboxed, so their own code is still checked for non-determinism.
PURE_MODULES = (
    "workflows.models",
    "workflows.steps",
    "workflows.policy",
    "workflows.messages",
    "workflows.slack_blocks",
    "workflows.search_attributes",
    "workflows.signing",
    "workflows.trust",
    "workflows.job_order",
    "workflows.outbox",
    "cryptography",
    "activities",
    "pydantic",
    "yaml",
)

# The workflow cache: a worker keeps up to MAX_CACHED_WORKFLOWS runs in memory between their workflow tasks
# (with a sticky task queue per worker); a run it does not hold is rebuilt from its history when its next
# task comes, about 0.1 s for a deploy parked at a step. 100, not temporalio's default of 1,000: a cached run
# costs a few hundred KB, so a worker caching 1,000 parked deploys used about 510 MiB RSS, while with 100 one
# worker holding 5,000 parked deploys used 187 MiB and one more approve on a deploy parked long
# before (not cached, so replayed) took 101 ms at p50 and 196 ms at p99 (bench/RESULTS.md, "Parked deploys
# (issue 15)"). Eviction and replay are safe because of the replay defence below. Two workers hold 200 runs
# between them, more than the deploys people act on at once (the throughput bench runs 100 at once on two
# workers), so a larger cache costs memory and saves only the replays of deploys that waited long.
# With the SDK's own runner, a `status` query that a fresh worker answers while a workflow task waits on a
# killed worker's sticky queue can leave that worker's cached run ahead of its history, and the deploy is
# stuck (a Temporal SDK defect in temporalio 1.35.0: docs/replay.md, tests/test_wedge.py). The defence is
# the runner (`workflow_runner()`): OneJobAtATime hands each job of an activation to the workflow on its
# own, history events before Updates (workflows/job_order.py), so a task whose jobs a query split issues
# the commands replay expects. It is on unless DEPLOYCTL_ONE_JOB_PER_ACTIVATION=0, and must be the same on
# every worker and replayer of a task queue. DEPLOYCTL_MAX_CACHED_WORKFLOWS=0 (no cache) is not needed for
# it and costs about ten times the CPU (bench/RESULTS.md).
MAX_CACHED_WORKFLOWS = 100
CACHE_ENV = "DEPLOYCTL_MAX_CACHED_WORKFLOWS"
ONE_JOB_ENV = "DEPLOYCTL_ONE_JOB_PER_ACTIVATION"


def build_activities(client: Client, config: Config, env: Mapping[str, str] | None = None) -> list:
    """The activity callables, with their clients built once from the config and the environment."""
    jenkins = JenkinsActivities(
        url=config.jenkins.url,
        user=config.jenkins.user,
        token=secret("JENKINS_TOKEN", env) or "",
        timeout=config.jenkins.timeout,
    )
    slack = SlackActivities(make_web_client(secret("SLACK_BOT_TOKEN", env) or "", config.slack.api_url))
    github = GithubActivities(config.github.api_url, secret("GITHUB_TOKEN", env, required=False) or "")
    return [
        jenkins.job_parameters,
        jenkins.trigger_baseline,
        jenkins.trigger_build,
        jenkins.wait_build_started,
        jenkins.read_diff,
        jenkins.input_action,
        jenkins.watch_input,
        jenkins.wait_build_result,
        jenkins.abort_build,
        slack.post_message,
        slack.update_message,
        slack.usergroup_members,
        github.open_version_pr,
        github.pr_state,
        github.pr_diff,
        github.watch_pr,
        github.merge_pr,
        github.close_pr,
        github.open_pccr_issue,
        github.comment_pccr,
        github.set_pccr_labels,
        github.close_pccr,
        LockActivities(client).request_lock,
        RulesActivities(client, config.source, github).load_rules,
    ]


def one_job_per_activation(environ: Mapping[str, str] | None = None) -> bool:
    """Whether workflows run each job of an activation on its own (workflows/job_order.py; docs/replay.md):
    on unless $DEPLOYCTL_ONE_JOB_PER_ACTIVATION is 0. Every worker and replayer of a task queue must agree."""
    raw = (os.environ if environ is None else environ).get(ONE_JOB_ENV, "").strip()
    if raw not in ("", "0", "1"):
        raise ConfigError(f"{ONE_JOB_ENV} must be 1 (the default: the replay defence on) or 0, not {raw!r}")
    return raw != "0"


def workflow_runner(one_job: bool | None = None) -> WorkflowRunner:
    """The sandbox every worker and replayer runs the workflows in. `one_job`: None reads
    `one_job_per_activation()`."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PURE_MODULES)
    if one_job_per_activation() if one_job is None else one_job:
        return SandboxedWorkflowRunner(restrictions=restrictions, runner_class=OneJobAtATime)
    return SandboxedWorkflowRunner(restrictions=restrictions)


def workflow_cache_size(environ: Mapping[str, str] | None = None) -> int:
    """How many workflow runs a worker caches: $DEPLOYCTL_MAX_CACHED_WORKFLOWS, else MAX_CACHED_WORKFLOWS."""
    raw = (os.environ if environ is None else environ).get(CACHE_ENV, "").strip()
    if not raw:
        return MAX_CACHED_WORKFLOWS
    try:
        size = int(raw)
    except ValueError:
        size = -1
    if size < 0:
        raise ConfigError(f"{CACHE_ENV} must be a whole number >= 0 (0: no workflow cache), not {raw!r}")
    return size


def create_worker(
    client: Client,
    config: Config,
    env: Mapping[str, str] | None = None,
    *,
    task_queue: str | None = None,
    executor: ThreadPoolExecutor | None = None,
    max_cached_workflows: int | None = None,
    activities: Sequence[Callable] | None = None,
    one_job: bool | None = None,
) -> Worker:
    """One worker of the pool. Activities are blocking client calls, run in a thread pool.

    `max_cached_workflows`: None reads `workflow_cache_size()` (MAX_CACHED_WORKFLOWS unless the environment
    says otherwise).
    `activities`: None registers every activity; `[]` makes a workflow-only worker."""
    acts = build_activities(client, config, env) if activities is None else list(activities)
    pool = (
        (executor or ThreadPoolExecutor(max_workers=64, thread_name_prefix="deployctl-activity"))
        if acts
        else None
    )
    return Worker(
        client,
        task_queue=task_queue or config.task_queue,
        workflows=WORKFLOWS,
        workflow_runner=workflow_runner(one_job),
        activities=acts,
        activity_executor=pool,
        max_concurrent_activities=64,
        max_cached_workflows=workflow_cache_size() if max_cached_workflows is None else max_cached_workflows,
        graceful_shutdown_timeout=timedelta(seconds=20),
    )


_KIND = {
    SearchAttributeIndexedValueType.KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SearchAttributeIndexedValueType.KEYWORD_LIST: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


async def ensure_search_attributes(client: Client) -> list[str]:
    """Create the custom search attributes where missing. Returns the names it added."""
    have = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {
        key.name: _KIND[key.indexed_value_type] for key in sa.ALL if key.name not in have.custom_attributes
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


async def serve(config: Config, metrics_port: int | None = None) -> None:
    runtime = None
    if metrics_port:
        runtime = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{metrics_port}"))
        )
    client = await connect(runtime=runtime)
    try:
        added = await ensure_search_attributes(client)
        if added:
            log.info("created search attributes %s", ", ".join(added))
    except Exception as err:  # Temporal Cloud: attributes are created in its console, not by workers
        log.warning("could not check search attributes (%s); create them as the README says", err)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=64, thread_name_prefix="deployctl-activity") as pool:
        cache, one_job = workflow_cache_size(), one_job_per_activation()
        worker = create_worker(client, config, executor=pool, max_cached_workflows=cache, one_job=one_job)
        async with worker:
            log.info(
                "worker polling task queue %s (workflow cache: %s; %s)",
                config.task_queue,
                f"{cache} runs, sticky queues on" if cache else "off, every task replays its history",
                "each activation's jobs one at a time: the replay defence is on"
                if one_job
                else f"the replay defence is OFF ({ONE_JOB_ENV}=0): see docs/replay.md",
            )
            await stop.wait()
            log.info("shutting down: finishing running tasks")


def needs_github(config: Config) -> bool:
    """GitHub is needed for gov-cloud version PRs and for PCCRs kept as GitHub issues."""
    gov = any(e.cloud.value == "gov" for e in config.environments.values())
    return gov or config.change_requests.backend == "github"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="worker.py", description="The deployctl worker pool.")
    parser.add_argument(
        "--config", default=None, help="TOML config (default $DEPLOYCTL_CONFIG or ./deployctl.toml)"
    )
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on /metrics")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        config = load_config(args.config)
        workflow_cache_size()
        one_job_per_activation()
        secret("JENKINS_TOKEN")
        secret("SLACK_BOT_TOKEN")
        if needs_github(config):
            secret("GITHUB_TOKEN")
    except ConfigError as err:
        print(f"deployctl worker: {err}", file=sys.stderr)
        return 2
    asyncio.run(serve(config, args.metrics_port))
    return 0


if __name__ == "__main__":
    code = main()
    # Leave without interpreter finalisation: temporalio's native runtime can crash in it (sdk-python #300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
