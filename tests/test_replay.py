"""Replay safety: every committed history in tests/histories/ replays against today's workflow code.

A change that alters the commands a running deploy would issue (activities, timers, child workflows,
signals to other workflows, their order) fails here unless it is behind `workflow.patched()`. See
docs/replay.md; refresh the histories with `python -m tests.record_histories`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner

from tests.record_histories import HISTORIES, VARIANTS, load_history
from worker import workflow_runner
from workflows.deploy import DeployWorkflow
from workflows.inspect_job import InspectJobWorkflow
from workflows.lock import DeployLockWorkflow

FILES = sorted(HISTORIES.glob("*.json"))


def replayer(one_job: bool = True) -> Replayer:
    """What replays a deploy's history: the workers' own runner (`one_job`: workflows/job_order.py on)."""
    return Replayer(
        workflows=[DeployWorkflow, InspectJobWorkflow, DeployLockWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(one_job),
    )


def test_every_variant_has_a_committed_history():
    missing = sorted(set(VARIANTS) - {p.stem for p in FILES})
    assert not missing, f"tests/histories/ lacks {', '.join(missing)}: run `python -m tests.record_histories`"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_history_replays_without_nondeterminism(path: Path):
    history = load_history(path)
    if path.stem in VARIANTS:  # the recorder's runs all end; an exported history may be of a running one
        assert history.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    await replayer().replay_workflow(history)  # raises on non-determinism or a failed workflow task


@workflow.defn(name="DeployLock", sandboxed=False)
class _LockThatTimesFirst:
    """The DeployLock with one command changed: it starts a timer before it answers anyone."""

    @workflow.run
    async def run(self, state: object) -> None:
        await workflow.sleep(timedelta(seconds=1))


async def test_replay_catches_a_changed_command_order():
    """The guard has teeth: a workflow that issues other commands than its history fails replay."""
    changed = Replayer(
        workflows=[_LockThatTimesFirst],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    with pytest.raises(workflow.NondeterminismError):
        await changed.replay_workflow(load_history(HISTORIES / "lock.json"))
