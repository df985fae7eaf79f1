"""Release-window deploys on the time-skipping server: planned two weeks ahead, run inside the window."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.cli import render_releases
from starter.client import Refused, start_deploy
from starter.devstack import wait_for_step
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests.conftest import BIN, GATE1, OWNER, PARAMS, SKIPPED_CLOCK, SRE1, eventually, make_deployment
from tests.support import act, status
from worker import create_worker
from workflows.models import Action, DeployResult, DeployStatus, Outcome, Process, Step


@pytest_asyncio.fixture  # each test its own clock: they jump weeks ahead
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(BIN / "temporal-test-server")
    ) as e:
        yield e


def calendar(now: datetime) -> tuple[str, datetime, datetime]:
    soon = (now + timedelta(days=5)).replace(minute=0, second=0, microsecond=0)
    planned = (now + timedelta(days=16)).replace(minute=0, second=0, microsecond=0)
    later = planned + timedelta(days=14)

    def w(name: str, start: datetime) -> str:
        return f'{{ name = "{name}", start = "{start:%Y-%m-%dT%H:%M:%SZ}", end = "{start + timedelta(hours=4):%Y-%m-%dT%H:%M:%SZ}" }}'

    text = f"\n[release]\nlead_time_days = 14\nwindows = [{w('R-soon', soon)}, {w('R-planned', planned)}, {w('R-later', later)}]\n"
    return text, planned, later


async def _planned_deploy(
    skipping: WorkflowEnvironment, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack
):
    now = datetime.now(UTC)
    text, planned, later = calendar(now)
    d = make_deployment(tmp_path, jenkins, slack, extra=text + SKIPPED_CLOCK)
    return d, planned, later


async def test_release_calendar_and_refusals(
    skipping: WorkflowEnvironment, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, secrets: dict
):
    d, planned, _ = await _planned_deploy(skipping, tmp_path, jenkins, slack)
    table = render_releases(d.config, datetime.now(UTC))
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert rows["R-soon"].endswith("too late to plan")
    assert rows["R-planned"].endswith("open for planning")
    assert (planned - timedelta(days=14)).date().isoformat() in rows["R-planned"]
    client = skipping.client
    with pytest.raises(Refused) as err:
        await start_deploy(
            client, d.config, Process.RELEASE, d.service, "kprod", dict(PARAMS), None, OWNER, "R-soon"
        )
    assert "R-soon opens" in str(err.value) and "the next eligible window is R-planned" in str(err.value)
    with pytest.raises(Refused) as err:
        await start_deploy(
            client, d.config, Process.RELEASE, d.service, "kprod", dict(PARAMS), None, OWNER, "R-nope"
        )
    assert "no release window named R-nope" in str(err.value)


async def test_release_deploy_waits_for_its_window_then_runs_the_oow_tail(
    skipping: WorkflowEnvironment, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, secrets: dict
):
    d, planned, _ = await _planned_deploy(skipping, tmp_path, jenkins, slack)
    client = skipping.client
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.RELEASE, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        st = await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, OWNER)
        assert st.release_window is not None and st.release_window.name == "R-planned"
        assert st.waiting_on == [OWNER]  # the code owner finds the SRE for a release
        await act(client, wid, Action.ASSIGN, OWNER, Step.SRE_ASSIGNMENT, sre=SRE1)
        await act(client, wid, Action.APPROVE, GATE1, Step.RELEASE_ACCEPTANCE)
        await eventually(lambda: _at(client, wid, Step.RELEASE_WINDOW_WAIT))
        await eventually(
            lambda: [
                m
                for m in slack.messages
                if f"workflows/{wid}" in m["text"] and "acceptance for release R-planned" in m["text"]
            ]
        )
        await skipping.sleep(planned - timedelta(hours=23) - datetime.now(UTC))  # a day before the window
        await eventually(
            lambda: [m for m in slack.messages_to(SRE1) if "R-planned opens tomorrow" in m["text"]]
        )
        assert (await status(client, wid)).step is Step.RELEASE_WINDOW_WAIT
        await skipping.sleep(timedelta(hours=24))
        st = await wait_for_step(client, wid, Step.CLEARANCE, SRE1)  # the OOW tail, SRE already assigned
        assert st.pccr.state == "accepted-for-release"
        await act(client, wid, Action.APPROVE, SRE1, Step.CLEARANCE)
        await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
        st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
        await act(
            client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
        )
        await act(client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED
    assert len(jenkins.builds(d.job)) == 1


async def test_a_window_that_closes_first_expires_the_deploy_and_names_the_next(
    skipping: WorkflowEnvironment, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, secrets: dict
):
    d, planned, later = await _planned_deploy(skipping, tmp_path, jenkins, slack)
    client = skipping.client
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.RELEASE, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        await act(client, wid, Action.ASSIGN, OWNER, Step.SRE_ASSIGNMENT, sre=SRE1)
        await act(client, wid, Action.APPROVE, GATE1, Step.RELEASE_ACCEPTANCE)
        await eventually(lambda: _at(client, wid, Step.RELEASE_WINDOW_WAIT))
        await skipping.sleep(planned + timedelta(minutes=5) - datetime.now(UTC))
        await wait_for_step(client, wid, Step.CLEARANCE, SRE1)
        await skipping.sleep(timedelta(hours=4))  # clearance's timeout is a day; the window closes first
        st = await eventually(lambda: _finished(client, wid))
    assert st.outcome is Outcome.EXPIRED
    assert st.outcome_reason == (
        f"release window R-planned closed before clearance was done; the next window is R-later ({later:%Y-%m-%d %H:%M} UTC)"
    )
    assert [m for m in slack.messages_to(OWNER) if "R-later" in m["text"]]


async def _at(client: Client, wid: str, step: Step) -> bool:
    return (await status(client, wid)).step is step


async def _finished(client: Client, wid: str) -> DeployStatus | None:
    st = await status(client, wid)
    return st if st.outcome is not None else None
