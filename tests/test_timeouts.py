"""Timeouts, reminders and a Slack outage, on the time-skipping test server (days pass in seconds)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.cli import start_deploy
from tests.conftest import BIN, GATE1, GATE2, OWNER, PARAMS, SLACK_TOKEN, make_deployment
from tests.fakes.jenkins import FakeJenkins
from tests.fakes.slack import FakeSlack
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
    d = make_deployment(tmp_path, jenkins, own_slack, timeouts={"pccr_review": "3d"})
    client: Client = skipping.client
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
        st = await client.get_workflow_handle(wid).query("status", result_type=DeployStatus)
    assert result.outcome is Outcome.EXPIRED
    assert result.reason == "nobody acted at pccr_review within 3d"
    texts = [m["text"] for m in own_slack.messages if wid in m["text"] or m.get("thread_ts")]
    reminders = [i for i, t in enumerate(texts) if t.startswith("Reminder:")]
    escalation = [i for i, t in enumerate(texts) if t.startswith("Escalation:")]
    ended = [i for i, t in enumerate(texts) if "ended *expired*" in t]
    assert len(reminders) == 2 and len(escalation) == 1 and len(ended) == 1  # one reminder per gatekeeper
    assert max(reminders) < escalation[0] < ended[0], "reminder, then escalation, then expiry"
    for gatekeeper in (GATE1, GATE2):
        assert [m for m in own_slack.messages_to(gatekeeper) if m["text"].startswith("Reminder:")]
    assert "expires in 1.5d" in next(t for t in texts if t.startswith("Reminder:"))
    assert st.pccr.state == "expired" and jenkins.builds(d.job) == []


async def test_a_slack_outage_never_blocks_or_fails_a_deploy(
    skipping: WorkflowEnvironment, tmp_path: Path, jenkins: FakeJenkins, own_slack: FakeSlack, secrets: dict
):
    own_slack.down = True
    d = make_deployment(tmp_path, jenkins, own_slack, timeouts={"pccr_review": "2h"})
    client: Client = skipping.client
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
        st = await client.get_workflow_handle(wid).query("status", result_type=DeployStatus)
    assert result.outcome is Outcome.EXPIRED  # it went on to its timeout, unblocked by Slack
    failed = [e for e in st.audit if e.action == "notify_failed"]
    assert failed and all(e.channel == "slack" and not e.accepted for e in failed)
    assert "not sent" in failed[0].reason
    assert own_slack.messages == []
