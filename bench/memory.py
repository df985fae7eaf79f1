"""Where a parked deploy's memory goes: `python -m bench.memory [--parked N] [--variants ...]`.

Parks N deploys at pccr_review against a worker subprocess in each variant and prints the worker's RSS
per parked deploy, the worker CPU it took to park them, and which classes were rebuilt once per workflow
run (their modules are re-imported into every workflow sandbox). Variants (bench/probe_worker.py):
`worker.py` (the product's worker itself), `sandbox` (same runner as worker.py), `passthrough` (the
`workflows` and `activities` packages passed through the sandbox), `helpers` (only the helper modules
deploy.py already means to pass through), `unsandboxed`, and `NAME:SIZE` for a
max_cached_workflows of SIZE. A diagnostic for bench/RESULTS.md, not one of the three benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from bench.people import Counters, job_parameters_read_once, start_product, wait_status
from bench.run import parked_count, settle
from bench.stack import GATE, bench_stack, wait_until
from workflows.models import Step


async def variant(name: str, parked: int) -> str:
    runner, _, cache = name.partition(":")
    async with bench_stack(1) as stack:
        if runner == "worker.py":
            w = stack.start_worker("product")
        else:
            classes = stack.workdir / f"classes-{runner}.txt"
            w = stack.start_worker(
                "probe", {"BENCH_RUNNER": runner, "BENCH_CACHE": cache, "BENCH_CLASSES": str(classes)}
            )
        wid = await start_product(stack, 0)
        await wait_status(stack.client, wid, Step.PCCR_REVIEW, GATE, 0.5, Counters())
        await settle(w)
        rss0, cpu0, t0 = w.rss_kb() / 1024, w.cpu_seconds(), time.monotonic()
        sem = asyncio.Semaphore(20)

        async def one() -> str:
            async with sem:
                return await start_product(stack, 0)

        with job_parameters_read_once():
            await asyncio.gather(*(one() for _ in range(parked)))

        async def all_parked() -> bool:
            stack.check_workers()
            return await parked_count(stack) >= parked + 1

        await wait_until(all_parked, 900, 1.0, "all parked")
        took = time.monotonic() - t0
        await settle(w)
        rss1, cpu = w.rss_kb() / 1024, w.cpu_seconds() - cpu0
        rebuilt = ""
        if runner != "worker.py":
            os.kill(w.pid, signal.SIGUSR1)
            await asyncio.sleep(1)
            last = classes.read_text().rsplit("---\n", 1)[-1].splitlines()
            per_run = [line.split(" ", 1)[1] for line in last if int(line.split(" ", 1)[0]) >= parked]
            rebuilt = "; rebuilt per workflow run: " + (", ".join(per_run) or "none")
        return (
            f"{name:<16} 1 parked {rss0:6.1f} MB, {parked + 1} parked {rss1:6.1f} MB -> "
            f"{(rss1 - rss0) / parked * 1024:4.0f} KB per parked deploy; worker CPU {cpu / parked * 1000:3.0f} ms "
            f"per deploy parked ({took:.0f} s){rebuilt}"
        )


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    p.add_argument("--parked", type=int, default=200)
    p.add_argument(
        "--variants",
        nargs="+",
        default=["worker.py", "sandbox", "helpers", "passthrough", "unsandboxed", "sandbox:100"],
    )
    args = p.parse_args()

    async def go() -> None:
        for v in args.variants:
            print(await variant(v, args.parked), flush=True)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
