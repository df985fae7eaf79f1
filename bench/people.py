"""Scripted people: they start a deploy the way the CLI does and act at each step as soon as the deploy
waits on them (polling the `status` query, as `deployctl status` would), through the same Update path as
the CLI (`send_action`). The baseline's people do the same against the bare baseline workflow."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client

from bench.stack import ENVIRONMENT, OWNER, PARAMS, BenchStack, job_name, service_name
from starter.client import send_action, start_deploy
from starter.devstack import COM_SCRIPT, DIFF, wait_for_step
from workflows.models import ActionInput, DeployResult, DeployStatus, Outcome, Process, Step


@dataclass
class Counters:
    queries: int = 0
    updates: int = 0
    in_flight: int = 0  # deploys started and not yet finished, right now


@dataclass
class DeployRun:
    wid: str
    job: str
    started: float
    ended: float = 0.0
    outcome: str | None = None
    build: int | None = None
    approve_sent: float = 0.0  # deploy_approval: the SRE's Update sent
    approve_accepted: float = 0.0  # … and its answer (accepted) back
    in_flight_at_approve: int = 0  # deploys in flight when the SRE approved
    post_index: int = 0  # jenkins.input_posts index when the SRE approved (where to look for the POST)
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds from start until the person acted
    calls: dict[str, int] = field(default_factory=dict)  # baseline: what it did (jenkins, slack, activities)


async def wait_status(
    client: Client,
    wid: str,
    step: Step,
    actor: str,
    interval: float,
    counters: Counters,
    timeout: float = 300,
) -> DeployStatus:
    """Poll `status` until the deploy waits on `actor` at `step` (devstack's wait, counting the queries)."""

    def counted() -> None:
        counters.queries += 1

    return await wait_for_step(client, wid, step, actor, timeout, interval, on_query=counted)


@contextlib.contextmanager
def job_parameters_read_once():  # type: ignore[no-untyped-def]
    """Within: `start_deploy` reads each job's parameters through the real InspectJob workflow once,
    then reuses them (capacity: a thousand starts need not run a thousand InspectJob workflows)."""
    import starter.client as door

    real = door._inspect_job
    seen: dict[str, Any] = {}

    async def once(client: Client, config: Any, job: str) -> Any:
        if job not in seen:
            seen[job] = await real(client, config, job)
        return seen[job]

    door._inspect_job = once
    try:
        yield
    finally:
        door._inspect_job = real


async def start_product(stack: BenchStack, i: int) -> str:
    wid, _ = await start_deploy(
        stack.client, stack.config, Process.OOW, service_name(i), ENVIRONMENT, dict(PARAMS), None, OWNER
    )
    return wid


async def product_deploy(
    stack: BenchStack, i: int, interval: float, counters: Counters, script=COM_SCRIPT
) -> DeployRun:  # type: ignore[no-untyped-def]
    """One whole OOW com deploy of service i: start, the COM_SCRIPT steps, the result."""
    t0 = time.monotonic()
    counters.in_flight += 1
    try:
        return await _product_deploy(stack, i, interval, counters, script, t0)
    finally:
        counters.in_flight -= 1


async def _product_deploy(stack, i, interval, counters, script, t0) -> DeployRun:  # type: ignore[no-untyped-def]
    client = stack.client
    wid = await start_product(stack, i)
    run = DeployRun(wid=wid, job=job_name(i), started=t0)
    for action, actor, step, extra in script:
        st = await wait_status(client, wid, step, actor, interval, counters)
        fields = {k: (st.build.diff_sha256 or "" if v == DIFF else v) for k, v in extra.items()}
        run.steps[step.value] = time.monotonic() - t0
        if step is Step.DEPLOY_APPROVAL:
            run.post_index = len(stack.jenkins.input_posts)
            run.in_flight_at_approve = counters.in_flight
        sent = time.monotonic()
        await send_action(client, wid, action, ActionInput(actor=actor, step=step, channel="bench", **fields))
        counters.updates += 1
        if step is Step.DEPLOY_APPROVAL:
            run.approve_sent, run.approve_accepted = sent, time.monotonic()
            run.build = st.build.number
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    run.ended = time.monotonic()
    run.outcome = result.outcome.value
    if result.outcome is not Outcome.SUCCEEDED:
        raise RuntimeError(f"{wid} ended {run.outcome}: {result.reason}")
    return run


async def baseline_deploy(
    stack: BenchStack, i: int, plan_args: dict, interval: float, counters: Counters
) -> DeployRun:  # type: ignore[type-arg]
    """The same people against the bare baseline workflow: one Update per COM_SCRIPT step, each sent
    as soon as the `step` query says the workflow waits for it."""
    import uuid

    from bench.baseline import Act, Plan

    client = stack.client
    t0 = time.monotonic()
    wid = f"baseline-{service_name(i)}-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        "BenchBaseline", Plan(job=job_name(i), **plan_args), id=wid, task_queue=stack.task_queue
    )
    run = DeployRun(wid=wid, job=job_name(i), started=t0)
    for k, (_action, actor, step, _extra) in enumerate(COM_SCRIPT):
        while True:
            st = await handle.query("step")
            counters.queries += 1
            if st["step"] == k and st["open"]:
                break
            await asyncio.sleep(interval)
        run.steps[step.value] = time.monotonic() - t0
        await handle.execute_update("act", Act(step=k, actor=actor))
        counters.updates += 1
    done = await handle.result()
    run.ended = time.monotonic()
    run.outcome = "succeeded"
    run.calls = dict(done)
    return run
