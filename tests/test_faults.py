"""Faults: Jenkins and GitHub answering 30 % 5xx (some after doing the work), Slack 429s and 500s.
Deploys still reach the right outcome with exactly one build and one version PR."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from starter.cli import send_action, start_deploy
from starter.devstack import wait_for_step
from tests.conftest import (
    CONFIGS_REPO,
    GATE1,
    GITHUB_TOKEN,
    JENKINS_TOKEN,
    OWNER,
    PARAMS,
    PCCR_REPO,
    SLACK_TOKEN,
    SRE1,
    make_deployment,
)
from tests.fakes.github import FakeGitHub
from tests.fakes.jenkins import FakeJenkins
from tests.fakes.slack import FakeSlack
from worker import create_worker
from workflows.models import Action, ActionInput, DeployResult, Outcome, Process, Step


@pytest.fixture
def unreliable() -> Iterator[tuple[FakeJenkins, FakeSlack, FakeGitHub]]:
    with (
        FakeJenkins(users={"deploy-bot": JENKINS_TOKEN}) as jenkins,
        FakeSlack(token=SLACK_TOKEN, usergroups={"S0SREGOV": ["U0SREG1"]}) as slack,
        FakeGitHub(token=GITHUB_TOKEN) as github,
    ):
        github.add_repo(CONFIGS_REPO, files={"README.md": "configs\n"})
        github.add_repo(PCCR_REPO)
        yield jenkins, slack, github


@pytest.mark.timeout(420)
async def test_deploys_reach_their_outcome_through_flaky_services(
    client: Client, tmp_path: Path, unreliable: tuple[FakeJenkins, FakeSlack, FakeGitHub], secrets: dict
):
    jenkins, slack, github = unreliable
    d = make_deployment(tmp_path, jenkins, slack, github=github, pccr_backend="github")
    jenkins.chaos(0.3, seed=7, path_contains=d.job)
    github.chaos(0.3, seed=11)
    slack.chaos(0.3, seed=13)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        com, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        gov, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod-gov", dict(PARAMS), "1.4.2", OWNER
        )

        async def act(wid: str, action: Action, actor: str, step: Step, **extra: str) -> None:
            await wait_for_step(client, wid, step, actor, timeout=240)
            await send_action(client, wid, action, ActionInput(actor=actor, step=step, **extra))

        async def com_deploy() -> None:
            await act(com, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
            await act(com, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SRE1)
            await act(com, Action.APPROVE, SRE1, Step.CLEARANCE)
            await act(com, Action.TRIGGER, OWNER, Step.TRIGGER)
            st = await wait_for_step(client, com, Step.DIFF_VALIDATION, OWNER, timeout=240)
            await act(
                com, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
            )
            await act(com, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)

        async def gov_deploy() -> None:
            await act(gov, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
            await act(gov, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre="U0SREG1")
            await act(gov, Action.MERGE, "U0SREG1", Step.VERSION_PR_MERGE)
            await wait_for_step(client, gov, Step.TRIGGER, "U0SREG1", timeout=240)
            await send_action(client, gov, Action.CANCEL, ActionInput(actor=OWNER, step=Step.TRIGGER))

        await asyncio.gather(com_deploy(), gov_deploy())
        results = [
            (await client.get_workflow_handle(w, result_type=DeployResult).result()).outcome
            for w in (com, gov)
        ]
    assert results == [Outcome.SUCCEEDED, Outcome.CANCELLED]
    builds = jenkins.builds(d.job)
    assert len(builds) == 1 and builds[0]["params"] == PARAMS and builds[0]["result"] == "SUCCESS"
    prs = [p for p in github.pulls(CONFIGS_REPO) if gov in p["head"]["ref"]]
    assert len(prs) == 1 and prs[0]["merged"]
    issues = [i for i in github.issues(PCCR_REPO) if com in i["body"] or gov in i["body"]]
    assert len(issues) == 2  # one PCCR each, never two, despite lost answers
    roots = [m for m in slack.messages_to("C0TRIAGE") if not m.get("thread_ts") and com in m["text"]]
    assert len(roots) <= 1  # a lost answer may hide a post; a retried one is not posted twice
