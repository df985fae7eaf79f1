"""Timeouts, reminders and a Slack outage, on the time-skipping test server (days pass in seconds)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.client import start_deploy
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests.conftest import (
    BIN,
    GATE1,
    GATE2,
    OWNER,
    PARAMS,
    SKIPPED_CLOCK,
    SLACK_TOKEN,
    eventually,
    make_deployment,
)
from worker import create_worker
from workflows.models import DeployResult, DeployStatus, Outcome, Process


@pytest_asyncio.fixture(scope="module")
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(BIN / "temporal-test-server")
    ) as e:
        yield e


@pytest.fixture
def own_slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=SLACK_TOKEN, usergroups={"S0SREGOV": ["U0SREG1"]}) as fake:
        yield fake


async def test_review_expires_after_a_reminder_and_an_escalation(
    skipping: WorkflowEnvironment, tmp_path: Path, jenkins: FakeJenkins, own_slack: FakeSlack, secrets: dict
):
    d = make_deployment(tmp_path, jenkins, own_slack, timeouts={"pccr_review": "3d"}, extra=SKIPPED_CLOCK)
    client: Client = skipping.client

    def sent(prefix: str) -> list[dict]:
        return [m for m in own_slack.messages if m["text"].startswith(prefix)]

    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        handle = client.get_workflow_handle(wid, result_type=DeployResult)
        await eventually(lambda: sent("<@U0GATE2> OOW deploy"))  # the review DMs are out
        await skipping.sleep(timedelta(days=1, hours=11))
        assert sent("Reminder:") == [] and sent("Escalation:") == []
        await skipping.sleep(timedelta(hours=2))  # 1.5 days: a reminder to each gatekeeper
        await eventually(lambda: len(sent("Reminder:")) == 2)
        assert sent("Escalation:") == []
        await skipping.sleep(timedelta(hours=18))  # 2.25 days: an escalation in the thread
        await eventually(lambda: len(sent("Escalation:")) == 1)
        assert (await handle.query("status", result_type=DeployStatus)).outcome is None
        await skipping.sleep(timedelta(hours=18))  # 3 days: expired
        result = await eventually(lambda: _result_if_done(handle))
        st = await handle.query("status", result_type=DeployStatus)
    assert result.outcome is Outcome.EXPIRED
    assert result.reason == "nobody acted at pccr_review within 3d"
    for gatekeeper in (GATE1, GATE2):
        assert [m for m in own_slack.messages_to(gatekeeper) if m["text"].startswith("Reminder:")]
    assert "expires in 1.5d" in sent("Reminder:")[0]["text"]
    assert "expires in 18h" in sent("Escalation:")[0]["text"]
    root = sent("<@U0GATE1> <@U0GATE2> <@U0OWNER1> requesting review")[0]
    assert sent("Escalation:")[0]["thread_ts"] == root["ts"]
    assert any("ended *expired*" in m["text"] for m in own_slack.thread(root["ts"]))
    assert st.pccr.state == "expired" and jenkins.builds(d.job) == []


async def _result_if_done(handle) -> DeployResult | None:
    desc = await handle.describe()
    if desc.status is None or desc.status.name == "RUNNING":
        return None
    return await handle.result()


async def test_a_slack_outage_never_blocks_or_fails_a_deploy(
    skipping: WorkflowEnvironment, tmp_path: Path, jenkins: FakeJenkins, own_slack: FakeSlack, secrets: dict
):
    own_slack.down = True
    d = make_deployment(tmp_path, jenkins, own_slack, timeouts={"pccr_review": "2h"}, extra=SKIPPED_CLOCK)
    client: Client = skipping.client
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        handle = client.get_workflow_handle(wid, result_type=DeployResult)
        for _ in range(30):  # Slack retries back off; every hop skips their backoff and then the timeout
            await skipping.sleep(timedelta(minutes=10))
            if await _result_if_done(handle):
                break
        result = await eventually(lambda: _result_if_done(handle))
        st = await handle.query("status", result_type=DeployStatus)
    assert result.outcome is Outcome.EXPIRED  # it went on to its timeout, unblocked by Slack
    failed = [e for e in st.audit if e.action == "notify_failed"]
    assert failed and all(e.channel == "slack" and not e.accepted for e in failed)
    assert "not sent" in failed[0].reason
    assert own_slack.messages == []
