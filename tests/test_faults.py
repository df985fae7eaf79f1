"""Faults: Jenkins answering 30 % 5xx or too late, GitHub 5xx, 409 and 422, Slack 429, 500 and
`ok:false`. Deploys still reach the right outcome with exactly one build and one version PR; faults
that no retry can cure (a bad token, a job that is gone) end the deploy `failed` with the reason."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from starter.client import Refused, send_action, start_deploy
from starter.devstack import wait_for_step
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
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
    Deployment,
    make_deployment,
)
from tests.support import status, to_trigger
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
    # A short client timeout, and a Jenkins that answers a third of its faults 2 s late (after the work).
    d = make_deployment(
        tmp_path, jenkins, slack, github=github, pccr_backend="github", jenkins_extra="timeout = 1"
    )
    jenkins.chaos(0.3, seed=7, path_contains=d.job, slow=0.35, delay=2.0)
    github.chaos(0.3, seed=11)
    slack.chaos(0.3, seed=13)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        com, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        # Answers lost in a race with another attempt: the branch and the PR are there, GitHub says 422.
        github.fail_next(422, "POST", "/git/refs", after_effect=True, message="Reference already exists")
        github.fail_next(422, "POST", "/pulls", after_effect=True, message="A pull request already exists")
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
            # GitHub refuses the first merge: someone pushed to the branch (409). The SRE is told and tries again.
            github.fail_next(
                status=409,
                method="PUT",
                path_contains="/merge",
                after_effect=False,
                message="Head branch was modified. Review and try the merge again.",
            )
            github.chaos(0)  # (so that no 5xx on the merge comes first)
            with pytest.raises(Refused, match="Head branch was modified"):
                await act(gov, Action.MERGE, "U0SREG1", Step.VERSION_PR_MERGE)
            github.chaos(0.3, seed=17)
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
    # The faults really happened: late Jenkins answers, GitHub's conflicts, Slack's ok:false.
    assert any(r[2] == 409 for r in github.statuses) and any(r[2] == 422 for r in github.statuses)
    assert {"internal_error", "fatal_error", "ratelimited"} <= {r["error"] for r in slack.requests}
    assert jenkins.slow_answers > 0


@pytest.mark.parametrize(
    ("code", "says"),
    [(401, "HTTP 401"), (404, "not found")],
    ids=["token-revoked", "job-deleted"],
)
async def test_a_fault_no_retry_can_cure_fails_the_deploy_with_its_reason(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins, code: int, says: str
):
    """Jenkins stops taking the token (401) or the job is deleted (404) before the trigger: the deploy
    ends `failed` at once with Jenkins' reason, instead of retrying for its 30 minutes."""
    d = deployment
    wid, _ = await start_deploy(client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER)
    await to_trigger(client, wid, SRE1)
    jenkins.fail_next(status=code, method=None, path_contains=d.job, times=100, after_effect=False)
    seen = len(jenkins.requests)
    await send_action(client, wid, Action.TRIGGER, ActionInput(actor=OWNER, step=Step.TRIGGER))
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    asked = [r for r in jenkins.requests[seen:] if d.job in r[1]]
    assert result.outcome is Outcome.FAILED
    assert result.reason is not None and says in result.reason and "\n" not in result.reason
    assert len(asked) <= 2, f"a fault no retry can cure was retried: {len(asked)} requests"
    assert jenkins.builds(d.job) == []
    final = await status(client, wid)
    assert final.outcome is Outcome.FAILED and final.outcome_reason == result.reason
