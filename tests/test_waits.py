"""Never stuck, never silent: a deploy either moves or says plainly what it waits for.

End to end on the dev server with the Jenkins, GitHub and Slack fakes: the Jenkins `input` as Jenkins
names it, a configured input that is not the one pending, a Jenkins that keeps failing, and a merge that
GitHub refuses (the DMs stay, the step's clock does not restart).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from temporalio.client import Client

from starter.client import Refused, send_action, start_deploy
from starter.devstack import wait_for_step
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FROM_MESSAGE, FakeJenkins, jenkins_input_id
from starter.simulators.slack import FakeSlack
from tests.conftest import CONFIGS_REPO, GATE1, OWNER, PARAMS, SRE1, Deployment, eventually, make_deployment
from tests.support import SREG1, act, start_gov, status, to_merge, to_trigger
from worker import create_worker
from workflows.models import Action, ActionInput, DeployResult, DeployStatus, Outcome, Process, Step

MESSAGE = "Deploy to prod?"


@asynccontextmanager
async def running(client: Client, d: Deployment) -> AsyncIterator[None]:
    async with create_worker(client, d.config, task_queue=d.task_queue):
        yield


async def start(client: Client, d: Deployment, env: str = "kprod", version: str | None = None) -> str:
    wid, _ = await start_deploy(client, d.config, Process.OOW, d.service, env, dict(PARAMS), version, OWNER)
    return wid


async def to_deploy_approval(client: Client, wid: str) -> DeployStatus:
    await to_trigger(client, wid, SRE1)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=30)
    await act(
        client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
    )
    return await wait_for_step(client, wid, Step.DEPLOY_APPROVAL, SRE1, timeout=30)


def thread_texts(slack: FakeSlack, wid: str) -> list[str]:
    roots = [m for m in slack.messages_to("C0TRIAGE") if not m.get("thread_ts") and wid in m["text"]]
    return [m["text"] for m in slack.thread(roots[0]["ts"])] if roots else []


async def test_an_input_jenkins_named_itself_is_answered(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
) -> None:
    """`input message: 'Deploy to prod?'` without `id:`: no input_id configured (the default), deployctl
    answers the build's one pending input, whatever Jenkins named it."""
    d = make_deployment(tmp_path, jenkins, slack, github=github, input_id=FROM_MESSAGE, input_message=MESSAGE)
    assert d.config.jenkins.input_id is None and d.config.service(d.service).input_id is None
    async with running(client, d):
        wid = await start(client, d)
        st = await to_deploy_approval(client, wid)
        assert st.waiting_for == f"{SRE1} to approve or reject at deploy_approval"
        await act(client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    number = st.build.number
    answered = [
        r[1] for r in jenkins.requests if r[0] == "POST" and f"/job/{d.job}/" in r[1] and "/input/" in r[1]
    ]
    assert answered == [f"/job/{d.job}/{number}/input/{jenkins_input_id(MESSAGE)}/proceedEmpty"]


async def test_a_configured_input_that_is_not_pending_is_said_at_once(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
) -> None:
    """The bug: with `input_id = "Approve-deploy"` and a job whose input Jenkins named itself, the SRE's
    approve was accepted and then the deploy sat at deploy_approval for good, saying nothing."""
    d = make_deployment(
        tmp_path,
        jenkins,
        slack,
        github=github,
        input_id=FROM_MESSAGE,
        input_message=MESSAGE,
        jenkins_extra='input_id = "Approve-deploy"',
    )
    iid = jenkins_input_id(MESSAGE)
    async with running(client, d):
        wid = await start(client, d)
        st = await to_deploy_approval(client, wid)
        why = f"build #{st.build.number} waits at input `{iid}`, not the configured `Approve-deploy`"
        # Said at once, before anyone acts: status (and so the Web UI), the thread, the audit trail.
        st = await eventually(lambda: _waiting_for(client, wid, why), timeout=15)
        assert st.step is Step.DEPLOY_APPROVAL and st.waiting_on == [SRE1]
        await eventually(lambda: any(why in t for t in thread_texts(slack, wid)))
        assert [e.reason for e in st.audit if e.action == "input_unclear"] == [why]
        meta = await client.get_workflow_handle(wid).query("__temporal_workflow_metadata")
        assert why in str(meta)
        # The SRE approves: nothing is answered in Jenkins, and the refusal says why; the step waits on.
        await send_action(
            client, wid, Action.APPROVE, ActionInput(actor=SRE1, step=Step.DEPLOY_APPROVAL, channel="test")
        )
        st = await eventually(lambda: _refused_approve(client, wid), timeout=15)
        refusal = [e for e in st.audit if e.action == "approve" and not e.accepted]
        assert refusal[0].reason == f"Jenkins input not answered: {why}"
        assert st.step is Step.DEPLOY_APPROVAL and st.waiting_on == [SRE1]
        assert st.waiting_for == f"Jenkins input not answered: {why}"
        assert not [
            r for r in jenkins.requests if r[0] == "POST" and f"/job/{d.job}/" in r[1] and "/input/" in r[1]
        ]
        # Answered by hand in Jenkins, the deploy follows the build.
        jenkins.answer_input(d.job, st.build.number, proceed=True, by="alice")
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED, result.reason


async def _waiting_for(client: Client, wid: str, line: str) -> DeployStatus | None:
    st = await status(client, wid)
    return st if st.waiting_for == line else None


async def _refused_approve(client: Client, wid: str) -> DeployStatus | None:
    st = await status(client, wid)
    return (
        st
        if any(e.action == "approve" and not e.accepted for e in st.audit)
        and not st.waiting_for.startswith("Jenkins: answering")
        else None
    )  # type: ignore[union-attr]


async def test_a_github_that_keeps_failing_is_said_once_and_nobody_is_asked_yet(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
) -> None:
    """A gov deploy whose version PR GitHub keeps refusing to open (502): pccr_review asks nobody until
    the PR exists; status says what it waits for, and after a few tries the thread hears it once."""
    d = make_deployment(tmp_path, jenkins, slack, github=github)
    # 4 tries fail (then the thread hears it), 2 more while status says so, then GitHub recovers.
    github.fail_next(status=502, method="POST", path_contains="/git/refs", times=6, after_effect=False)
    async with running(client, d):
        wid = await start_gov(client, d)
        st = await eventually(lambda: _waiting_for_prefix(client, wid, "failing after 4 tries"), timeout=40)
        assert st.waiting_for.startswith(f"GitHub: opening the version PR in {CONFIGS_REPO}: failing")  # type: ignore[union-attr]
        assert "502" in st.waiting_for  # type: ignore[operator]
        assert st.step is Step.PCCR_REVIEW and st.waiting_on == [] and st.version_pr is None
        assert Action.APPROVE not in st.allowed_actions
        assert not [m for m in slack.messages_to(GATE1) if wid in m["text"]]  # nobody asked yet
        st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1, timeout=60)
        assert st.version_pr is not None and st.pccr is not None  # what the gatekeepers review exists
        assert st.waiting_for == f"{GATE1}, U0GATE2 to approve or reject at pccr_review"
        await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=st.step, channel="test"))
        await client.get_workflow_handle(wid, result_type=DeployResult).result()
    notes = [e for e in st.audit if e.action == "waiting"]
    assert len(notes) == 1 and "failing after 4 tries" in (notes[0].reason or "")
    told = [
        m for m in slack.messages_to("C0TRIAGE") if "failing after 4 tries" in m["text"] and wid in m["text"]
    ]
    assert len(told) == 1


async def _waiting_for_prefix(client: Client, wid: str, part: str) -> DeployStatus | None:
    st = await status(client, wid)
    return st if st.waiting_for and part in st.waiting_for else None


async def test_a_refused_merge_keeps_the_dms_and_the_clock(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
) -> None:
    """GitHub refuses the SRE's merge: the DM keeps its buttons (it never said "merged"), status says why
    it waits, and the step still expires when it opened + its timeout, not later."""
    d = make_deployment(tmp_path, jenkins, slack, github=github, timeouts={"version_pr_merge": "24s"})
    async with running(client, d):
        wid = await start_gov(client, d)
        st = await to_merge(client, wid)
        opened = next(r.time for r in st.rosters if r.step is Step.VERSION_PR_MERGE)
        pr = github.pulls(CONFIGS_REPO)[-1]
        github.set_mergeable(CONFIGS_REPO, pr["number"], False, reason="dirty")
        await asyncio.sleep(8)  # well into the step
        with pytest.raises(Refused, match="GitHub refused the merge"):  # the refusal comes back to the SRE
            await send_action(
                client,
                wid,
                Action.MERGE,
                ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, channel="test"),
            )
        st = await status(client, wid)
        assert st.waiting_for and st.waiting_for.startswith("GitHub refused the merge: ")
        assert st.waiting_on == [SREG1]
        dm = next(m for m in slack.messages_to(SREG1) if "version_pr_merge" in m["text"] and wid in m["text"])
        assert any(b["type"] == "actions" for b in dm["blocks"]), (
            "the DM lost its buttons before GitHub answered"
        )
        assert "merged" not in dm["text"].split("\n")[-1]
        await _expired_24s_after(client, wid, opened, "the refusal restarted its clock")


async def test_a_moved_branch_asks_again_and_keeps_the_clock(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
) -> None:
    """A commit pushed to the version PR's branch after the SRE's DM: the merge is refused, the SRE gets
    the new head and its diff, and the step still expires when it opened + its timeout, not later."""
    d = make_deployment(tmp_path, jenkins, slack, github=github, timeouts={"version_pr_merge": "24s"})
    async with running(client, d):
        wid = await start_gov(client, d)
        st = await to_merge(client, wid)
        opened = next(r.time for r in st.rosters if r.step is Step.VERSION_PR_MERGE)
        await asyncio.sleep(8)  # well into the step
        moved = github.commit_file(CONFIGS_REPO, f"deployctl/{wid}", "channel-gov/late.yaml", "x: 1\n")
        with pytest.raises(Refused, match="Head branch was modified"):
            await send_action(
                client,
                wid,
                Action.MERGE,
                ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, channel="test"),
            )
        await eventually(
            lambda: [
                m for m in slack.messages_to(SREG1) if wid in m["text"] and f"commit `{moved}`" in m["text"]
            ]
        )
        st = await eventually(lambda: _waiting_on(client, wid, SREG1))
        assert st.step is Step.VERSION_PR_MERGE
        await _expired_24s_after(client, wid, opened, "asking again restarted its clock")


async def _waiting_on(client: Client, wid: str, who: str) -> DeployStatus | None:
    st = await status(client, wid)
    return st if st.waiting_on == [who] else None


def test_waiting_line_shows_how_long() -> None:
    from datetime import UTC, datetime, timedelta

    from workflows.messages import waiting_line

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    line = "Jenkins build #12 has not reached its input yet"
    assert waiting_line(line, now - timedelta(minutes=4), now) == f"{line} (4m)"
    assert waiting_line(None, now, now) is None


async def _expired_24s_after(client: Client, wid: str, opened: datetime, why: str) -> None:
    """The deploy expired when its 24 s step, opened at `opened`, timed out; not 8 s or more later (`why`)."""
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    desc = await client.get_workflow_handle(wid).describe()
    assert result.outcome is Outcome.EXPIRED
    assert desc.close_time is not None
    waited = (desc.close_time - opened).total_seconds()
    assert 24 <= waited < 24 + 8 - 1, f"expired {waited:.1f}s after the step opened: {why}"


async def test_a_rate_limit_longer_than_a_short_call_waits_for_the_reset_and_says_so(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
) -> None:
    """The SRE merges while GitHub's primary rate limit resets 45 minutes ahead: longer than a short
    call's 30 minutes, so Temporal gives the merge activity up at its first try (the next one would come
    too late). A rate limit slows a deploy down and never fails it: the merge is accepted, the deploy
    waits for the reset (status and, once, its thread say so), asks GitHub nothing meanwhile, and a
    cancel still ends it at once."""
    d = make_deployment(tmp_path, jenkins, slack, github=github)
    async with running(client, d):
        wid = await start_gov(client, d)
        await to_merge(client, wid)
        github.rate_limit_next(reset_in=45 * 60, method="PUT", path_contains="/merge")
        res = await send_action(
            client, wid, Action.MERGE, ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, channel="test")
        )
        assert "rate limit" in res.message, res.message
        st = await eventually(lambda: _waiting_for_prefix(client, wid, "rate limit"), timeout=20)
        assert st.outcome is None and st.step is Step.VERSION_PR_MERGE
        assert st.waiting_for.startswith(f"GitHub: merging version PR #{st.version_pr.split('/')[-1]}")  # type: ignore[union-attr]
        assert "rate limited; deployctl tries again at " in st.waiting_for  # type: ignore[operator]
        ours = f"/pulls/{st.version_pr.split('/')[-1]}/merge"  # type: ignore[union-attr]  # the fake is shared

        def merges() -> list[int]:
            return [code for m, p, code in github.statuses if m == "PUT" and p.endswith(ours)]

        assert merges() == [403]
        await asyncio.sleep(3)  # no second try before the reset
        assert merges() == [403]
        st = await status(client, wid)
        assert st.outcome is None, st.outcome_reason
        told = [m for m in thread_texts(slack, wid) if "rate limit" in m]
        assert len(told) == 1 and "tries again at " in told[0] and re.search(r"\(in 4[56]m\)", told[0]), told
        await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=st.step, channel="test"))
        done = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert done.outcome is Outcome.CANCELLED, done.reason
    notes = [e for e in done.status.audit if e.action == "waiting"] if done.status else []
    assert len(notes) == 1 and "rate limit" in (notes[0].reason or "")
