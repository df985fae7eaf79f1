"""A diagnostic worker for `python -m bench.memory`: the product's workflows and activities (worker.py's
WORKFLOWS and build_activities) with another workflow runner or cache size, to see where a parked
deploy's memory goes. It is not the product's worker; the capacity benchmark runs `python worker.py`.

BENCH_RUNNER: `sandbox` (the SDK default, as worker.py), `passthrough` (sandbox, with the project's
`workflows` and `activities` packages passed through), `helpers` (sandbox, passing through only the
helper modules deploy.py imports inside `imports_passed_through()` but that still get re-imported:
workflows.policy, .slack_blocks, .messages, .search_attributes), `unsandboxed`. BENCH_CACHE: max_cached_workflows.
SIGUSR1 appends to $BENCH_CLASSES how many times each dataclass / pydantic model class was built since
start-up: a class built once per workflow run means its module is re-imported into every sandbox.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import signal
from typing import Any

from pydantic._internal import _model_construction

BUILT: collections.Counter[str] = collections.Counter()
_new = _model_construction.ModelMetaclass.__new__
_process_class = dataclasses._process_class  # type: ignore[attr-defined]


def _count_model(mcs, name, bases, ns, *args, **kwargs):  # type: ignore[no-untyped-def]
    BUILT[f"pydantic model {ns.get('__module__')}.{name}"] += 1
    return _new(mcs, name, bases, ns, *args, **kwargs)


def _count_dataclass(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
    BUILT[f"dataclass {cls.__module__}.{cls.__qualname__}"] += 1
    return _process_class(cls, *args, **kwargs)


_model_construction.ModelMetaclass.__new__ = _count_model  # type: ignore[method-assign]
dataclasses._process_class = _count_dataclass  # type: ignore[attr-defined]


def _dump() -> None:
    with open(os.environ["BENCH_CLASSES"], "a") as f:
        f.write("---\n")
        for k, v in BUILT.most_common(30):
            f.write(f"{v} {k}\n")


async def _serve() -> None:
    from temporalio.worker import UnsandboxedWorkflowRunner
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

    from bench.serve import serve_until
    from starter.client import connect
    from starter.config import load_config
    from worker import WORKFLOWS, build_activities

    config = load_config(None)
    client = await connect()
    kw: dict[str, Any] = {}
    runner = os.environ.get("BENCH_RUNNER", "sandbox")
    if runner == "unsandboxed":
        kw["workflow_runner"] = UnsandboxedWorkflowRunner()
    elif runner == "passthrough":
        restrictions = SandboxRestrictions.default.with_passthrough_modules("workflows", "activities")
        kw["workflow_runner"] = SandboxedWorkflowRunner(restrictions=restrictions)
    elif runner == "helpers":  # only the modules deploy.py means to pass through, but re-imports
        helpers = (
            "workflows.policy",
            "workflows.slack_blocks",
            "workflows.messages",
            "workflows.search_attributes",
        )
        restrictions = SandboxRestrictions.default.with_passthrough_modules(*helpers)
        kw["workflow_runner"] = SandboxedWorkflowRunner(restrictions=restrictions)
    if os.environ.get("BENCH_CACHE"):
        kw["max_cached_workflows"] = int(os.environ["BENCH_CACHE"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, _dump)
    await serve_until(
        stop,
        client,
        task_queue=config.task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(client, config),
        **kw,
    )


if __name__ == "__main__":
    from bench.serve import main

    main(_serve)
