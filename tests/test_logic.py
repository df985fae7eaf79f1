"""The fast tier: the real DeployWorkflow on stub activities (tests/stubs.py), on the time-skipping server.

These test the workflow's logic: the order of its effects, its timers, its policy and what it does with
what Jenkins and GitHub report. Actions go through the CLI's own path (`send_action`, signed with each
person's key). The end-to-end tests through the HTTP fakes test the wiring.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.client import send_action, start_deploy
from tests.conftest import BIN, GATE1, GATE2, OUTSIDER, OWNER, PARAMS, SRE1, eventually
from tests.stubs import BUILD_NUMBER, HEAD, MOVED_HEAD, Stubs, Tier, rules_of, stub_worker, tier_config
from tests.support import SREG1, refused, status
from workflows.models import (
    Action,
    ActionInput,
    DeployResult,
    DeployStatus,
    MergePrResult,
    Outcome,
    Process,
    Step,
    WatchInputResult,
)

pytestmark = pytest.mark.timeout(60)


@pytest_asyncio.fixture
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own (about half a second to start): its clock is global, so
    what one test leaves behind (the deploy lock's lingering minute, a watcher whose cancel is still on
    its way) would hold the next test's clock still."""
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(BIN / "temporal-test-server")
    ) as e:
        yield e


@pytest_asyncio.fixture
async def tier(skipping: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Tier]:
    """The test's own service and task queue, with a worker on the stubs for the whole test."""
    config, service = tier_config(tmp_path)
    stubs = Stubs(rules=rules_of(config), client=skipping.client)
    async with stub_worker(skipping.client, config, stubs):
        yield Tier(config, service, stubs)


async def at(c: Client, wid: str, step: Step, actor: str) -> DeployStatus:
    """Once the deploy waits on `actor` at `step` (polled every 20 ms: this tier has no HTTP to wait on)."""
    return await eventually(lambda: _waits(c, wid, step, actor), timeout=10, interval=0.02)


async def _waits(c: Client, wid: str, step: Step, actor: str) -> DeployStatus | None:
    st = await status(c, wid)
    assert st.outcome is None, f"{wid} ended {st.outcome} at {st.step.value}: {st.outcome_reason}"
    return st if st.step is step and actor in st.waiting_on else None


async def act(c: Client, wid: str, action: Action, actor: str, step: Step, **extra: str) -> None:
    """Wait until the deploy waits on `actor` at `step`, then act there, signed, as the CLI does."""
    await at(c, wid, step, actor)
    await send_action(c, wid, action, ActionInput(actor=actor, step=step, channel="test", **extra))


async def start(env: WorkflowEnvironment, t: Tier, environment: str = "kprod") -> str:
    version = "1.4.2" if environment == "kprod-gov" else None
    wid, _ = await start_deploy(
        env.client, t.config, Process.OOW, t.service, environment, dict(PARAMS), version, OWNER
    )
    return wid


async def to_approval(env: WorkflowEnvironment, t: Tier, wid: str) -> None:
    """A com deploy through review, assignment of SRE1, clearance, trigger and the diff, up to the
    deploy job's input (whose watcher is running by then)."""
    c = env.client
    await act(c, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(c, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SRE1)
    await act(c, wid, Action.APPROVE, SRE1, Step.CLEARANCE)
    await act(c, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    st = await at(c, wid, Step.DIFF_VALIDATION, OWNER)
    assert st.build.diff_sha256
    await act(c, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256)
    await at(c, wid, Step.DEPLOY_APPROVAL, SRE1)
    await eventually(lambda: "watch_input" in t.stubs.names(), timeout=10, interval=0.02)


async def result(env: WorkflowEnvironment, wid: str) -> DeployResult:
    return await env.client.get_workflow_handle(wid, result_type=DeployResult).result()


# Each step that waits on people reads the rules again as it opens (a roster change reaches it).
COM_SEQUENCE = [
    "job_parameters",  # the CLI's InspectJob, before it starts the deploy
    "load_rules",  # admission: the workers' rules
    "job_parameters",  # admission: the PCCR holds every parameter the job defines
    "load_rules",  # pccr_review
    "load_rules",  # sre_assignment
    "load_rules",  # clearance
    "load_rules",  # trigger
    "request_lock",
    "trigger_baseline",
    "trigger_build",
    "wait_build_started",  # it was queued
    "read_diff",
    "load_rules",  # diff_validation
    "load_rules",  # deploy_approval
    "watch_input",
    "input_action",  # the SRE's approval answers the input
    "wait_build_result",
]


async def test_a_whole_oow_com_deploy_succeeds_with_its_effects_in_order(
    skipping: WorkflowEnvironment, tier: Tier
):
    wid = await start(skipping, tier)
    await to_approval(skipping, tier, wid)
    await act(skipping.client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
    res = await result(skipping, wid)
    assert res.outcome is Outcome.SUCCEEDED and res.reason == f"build #{BUILD_NUMBER} ended SUCCESS"
    stubs = tier.stubs
    assert stubs.names() == COM_SEQUENCE
    (build,) = stubs.inputs("trigger_build")
    assert build.params == PARAMS and build.job == f"deploy-{tier.service}"
    (answer,) = stubs.inputs("input_action")
    assert answer.decision == "proceed" and answer.number == BUILD_NUMBER
    st = await status(skipping.client, wid)
    accepted = [(e.action, e.actor, e.step) for e in st.audit if e.accepted and e.actor != "deployctl"]
    assert accepted[1:] == [
        ("approve", GATE1, Step.PCCR_REVIEW),
        ("assign", GATE1, Step.SRE_ASSIGNMENT),
        ("approve", SRE1, Step.CLEARANCE),
        ("trigger", OWNER, Step.TRIGGER),
        ("validate_diff", OWNER, Step.DIFF_VALIDATION),
        ("approve", SRE1, Step.DEPLOY_APPROVAL),
    ]
    assert st.pccr is not None and st.pccr.state == "done"
    assert any("ended *succeeded*" in m.text for m in stubs.posted())


async def test_a_step_nobody_acts_on_reminds_escalates_then_expires(
    skipping: WorkflowEnvironment, tier: Tier
):
    """pccr_review's default 3d: a reminder at half of it, an escalation at three quarters, then expired."""
    c, stubs = skipping.client, tier.stubs
    wid = await start(skipping, tier)
    await at(c, wid, Step.PCCR_REVIEW, GATE1)
    await skipping.sleep(timedelta(days=1, hours=12, minutes=1))
    reminders = await eventually(lambda: len(stubs.posted("Reminder:")) == 2 and stubs.posted("Reminder:"))
    assert sorted(m.channel for m in reminders) == [GATE1, GATE2]  # a DM to each (not the owner: SoD)
    assert all("expires in 1.5d" in m.text for m in reminders) and stubs.posted("Escalation:") == []
    await skipping.sleep(timedelta(hours=18))
    (escalation,) = await eventually(lambda: stubs.posted("Escalation:"))
    (root,) = stubs.posted(f"<@{GATE1}> <@{GATE2}> <@{OWNER}> requesting review")
    assert escalation.thread_ts is not None and root.thread_ts is None and "expires in 18h" in escalation.text
    assert (await status(c, wid)).outcome is None
    await skipping.sleep(timedelta(hours=18))
    res = await result(skipping, wid)
    assert res.outcome is Outcome.EXPIRED and res.reason == "nobody acted at pccr_review within 3d"
    assert any("ended *expired*" in m.text for m in stubs.posted())
    assert "trigger_build" not in stubs.names()
    st = await status(c, wid)
    assert st.step is Step.PCCR_REVIEW and st.pccr is not None and st.pccr.state == "expired"


async def test_a_build_that_ends_failure_fails_the_deploy_with_the_reason(
    skipping: WorkflowEnvironment, tier: Tier
):
    tier.stubs.build_result = "FAILURE"
    wid = await start(skipping, tier)
    await to_approval(skipping, tier, wid)
    await act(skipping.client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
    res = await result(skipping, wid)
    assert res.outcome is Outcome.FAILED and res.reason == f"build #{BUILD_NUMBER} ended FAILURE"
    st = await status(skipping.client, wid)
    assert st.build.result == "FAILURE" and st.pccr is not None and st.pccr.state == "failed"
    assert "abort_build" not in tier.stubs.names()  # the build ended: nothing to abort
    assert any(f"ended *failed*: build #{BUILD_NUMBER} ended FAILURE" in m.text for m in tier.stubs.posted())


async def test_a_wrong_persons_approval_is_refused_and_changes_nothing(
    skipping: WorkflowEnvironment, tier: Tier
):
    c = skipping.client
    wid = await start(skipping, tier)
    await at(c, wid, Step.PCCR_REVIEW, GATE1)
    await eventually(lambda: tier.stubs.posted(f"<@{GATE2}>"), timeout=10)  # the review DMs are out
    before, calls = await status(c, wid), len(tier.stubs.calls)
    outsider = await refused(c, wid, Action.APPROVE, ActionInput(actor=OUTSIDER, step=Step.PCCR_REVIEW))
    assert outsider.startswith(f"{OUTSIDER} may not approve at pccr_review: it waits on pccr-gatekeeper")
    own = await refused(c, wid, Action.APPROVE, ActionInput(actor=OWNER, step=Step.PCCR_REVIEW))
    assert own.startswith(f"separation of duties: {OWNER} is a code owner")  # not their own deploy
    after = await status(c, wid)
    assert after == before  # a refused Update is turned away by its validator: no history, no audit
    assert len(tier.stubs.calls) == calls
    await act(c, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)  # the right person still can
    await at(c, wid, Step.SRE_ASSIGNMENT, GATE1)
    await c.get_workflow_handle(wid).terminate("test over")


async def test_an_input_answered_in_jenkins_by_someone_else_moves_on_out_of_policy(
    skipping: WorkflowEnvironment, tier: Tier
):
    wid = await start(skipping, tier)
    await to_approval(skipping, tier, wid)
    tier.stubs.watch_input_result = WatchInputResult(
        state="answered", answered_by="mallory", answer="proceed", detail="Approved by mallory"
    )
    res = await result(skipping, wid)
    assert res.outcome is Outcome.SUCCEEDED
    stubs = tier.stubs
    assert "input_action" not in stubs.names()  # deployctl answered nothing: it followed Jenkins
    assert stubs.names()[-2:] == ["watch_input", "wait_build_result"]
    st = await status(skipping.client, wid)
    (entry,) = [e for e in st.audit if e.action == "answered_in_jenkins"]
    assert entry.out_of_policy and entry.channel == "jenkins" and entry.identity == "jenkins:mallory"
    assert f"is not the assigned SRE ({SRE1})" in (entry.reason or "")
    assert [r.step for r in st.rosters][-2:] == [Step.DEPLOY_APPROVAL, Step.DEPLOYING]
    assert any("answered directly in Jenkins by mallory" in m.text for m in stubs.posted())


async def test_a_gov_merge_refused_because_the_branch_moved_asks_again(
    skipping: WorkflowEnvironment, tier: Tier
):
    """GitHub's 409 on a moved head: merge_pr returns it refused, as activities/github.py does."""
    c, stubs = skipping.client, tier.stubs
    stubs.pr_heads = [HEAD, MOVED_HEAD]
    stubs.merge_results = [
        MergePrResult(
            merged=False,
            refused_reason="Head branch was modified. Review and try the merge again.",
            head_sha=MOVED_HEAD,
        )
    ]
    wid = await start(skipping, tier, "kprod-gov")
    await act(c, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(c, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SREG1)
    st = await at(c, wid, Step.VERSION_PR_MERGE, SREG1)
    assert st.version_pr_head_sha == HEAD
    first_sha256 = st.version_pr_diff_sha256
    reason = await refused(c, wid, Action.MERGE, ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE))
    assert reason.startswith("GitHub refused the merge: Head branch was modified")
    assert f"the branch moved from {HEAD[:12]} to {MOVED_HEAD[:12]}" in reason
    st = await at(c, wid, Step.VERSION_PR_MERGE, SREG1)
    assert st.version_pr_head_sha == MOVED_HEAD and st.version_pr_diff_sha256 != first_sha256

    # asked again: a DM with the new head's diff, after the one with the old head's
    def diff_dms() -> list[str]:
        return [m.text for m in stubs.posted() if m.channel == SREG1 and "@@" in m.text]

    dms = await eventually(lambda: len(diff_dms()) >= 2 and diff_dms())
    assert HEAD[:7] in dms[0] and MOVED_HEAD[:7] in dms[-1]

    # The thread's root message is drawn again: its merge button binds the new diff, so a click there is not
    # refused as stale (workflows/effects.py ROOT_AFTER_MOVE_PATCH).
    def root_merge_binds() -> list[str]:
        return [
            json.loads(e["value"]).get("d", "")
            for u in stubs.inputs("update_message")
            if u.channel != SREG1
            for b in u.blocks or []
            if b.get("type") == "actions"
            for e in b.get("elements", [])
            if json.loads(e.get("value", "{}")).get("a") == Action.MERGE.value
        ]

    drawn = await eventually(lambda: st.version_pr_diff_sha256 in root_merge_binds() and root_merge_binds())
    assert drawn[-1] == st.version_pr_diff_sha256 and first_sha256 in drawn  # the old binding, then the new
    stale = await refused(
        c, wid, Action.MERGE, ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, diff_sha256=first_sha256)
    )
    assert stale.startswith("stale: the version PR's diff changed")
    await send_action(
        c,
        wid,
        Action.MERGE,
        ActionInput(
            actor=SREG1, step=Step.VERSION_PR_MERGE, channel="test", diff_sha256=st.version_pr_diff_sha256
        ),
    )
    await at(c, wid, Step.TRIGGER, SREG1)
    merges = stubs.inputs("merge_pr")
    assert [m.sha for m in merges] == [HEAD, MOVED_HEAD]  # each pinned to the head the SRE was shown
    assert stubs.names().count("pr_diff") == 2
    await c.get_workflow_handle(wid).terminate("test over")


async def test_the_sres_reject_at_the_input_answers_abort_and_ends_rejected(
    skipping: WorkflowEnvironment, tier: Tier
):
    """The reject of deploy_approval's step (effect proceed_input) answers the job's input `abort` first,
    then ends the deploy; the build that did not finish is aborted as the deploy closes."""
    wid = await start(skipping, tier)
    await to_approval(skipping, tier, wid)
    await act(skipping.client, wid, Action.REJECT, SRE1, Step.DEPLOY_APPROVAL, comment="wrong replicas")
    res = await result(skipping, wid)
    assert res.outcome is Outcome.REJECTED
    assert res.reason == f"rejected at deploy_approval by {SRE1}: wrong replicas"
    stubs = tier.stubs
    (answer,) = stubs.inputs("input_action")
    assert answer.decision == "abort" and answer.number == BUILD_NUMBER
    assert stubs.names()[-3:] == ["watch_input", "input_action", "abort_build"]
    assert "wait_build_result" not in stubs.names()


async def test_a_version_pr_merged_on_github_moves_the_deploy_on(skipping: WorkflowEnvironment, tier: Tier):
    """The step's watcher (version_pr) ends it: deployctl merges nothing and records who merged."""
    c, stubs = skipping.client, tier.stubs
    wid = await start(skipping, tier, "kprod-gov")
    await act(c, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(c, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SREG1)
    await at(c, wid, Step.VERSION_PR_MERGE, SREG1)
    await eventually(lambda: "watch_pr" in stubs.names(), timeout=10, interval=0.02)
    stubs.watch_pr_result = stubs._pr(tier.config.settings().configs_repo).model_copy(
        update={"merged": True, "state": "closed", "merged_by": "octo-elsewhere"}
    )
    st = await at(c, wid, Step.TRIGGER, SREG1)
    assert "merge_pr" not in stubs.names()
    (entry,) = [e for e in st.audit if e.action == "merged_on_github"]
    assert entry.channel == "github" and entry.identity == "github:octo-elsewhere" and entry.out_of_policy
    said = "merged directly on GitHub by octo-elsewhere"  # the thread hears it (a notice: eventually)
    await eventually(lambda: any(said in m.text for m in stubs.posted()), timeout=10, interval=0.02)
    await c.get_workflow_handle(wid).terminate("test over")


async def test_a_rate_limited_merge_waits_for_githubs_reset_and_then_goes_through(
    skipping: WorkflowEnvironment, tier: Tier
):
    """GitHub rate limits the merge twice, 45 minutes each: longer than a short call's 30 minutes, so each
    merge_pr is given up at its first try. The deploy waits each 45 minutes on a timer, says so once,
    merges at the third call and goes on; it never fails for a rate limit."""
    c, stubs = skipping.client, tier.stubs
    stubs.merge_rate_limits = 2
    wid = await start(skipping, tier, "kprod-gov")
    await act(c, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(c, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SREG1)
    await at(c, wid, Step.VERSION_PR_MERGE, SREG1)
    res = await send_action(
        c, wid, Action.MERGE, ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, channel="t")
    )
    assert "rate limited; deployctl tries again at" in res.message, res.message
    for _ in range(6):  # the clock moves only when told: on, 46 minutes at a time
        if await _waits(c, wid, Step.TRIGGER, SREG1):
            break
        await skipping.sleep(timedelta(minutes=46))
    st = await at(c, wid, Step.TRIGGER, SREG1)
    assert st.outcome is None and st.version_pr is not None
    assert stubs.names().count("merge_pr") == 3
    notes = [e.reason or "" for e in st.audit if e.action == "waiting"]
    assert len(notes) == 1 and "rate limited; deployctl tries again at" in notes[0], notes
    assert "(in 45m)" in notes[0] and "API rate limit exceeded" in notes[0]
    told = [p.text for p in stubs.posted() if "rate limited" in p.text]
    assert len(told) == 1, told
    merged = [e for e in st.audit if e.action == "merge" and e.accepted]
    assert merged and st.waiting_for and "rate limited" not in st.waiting_for
    history = [e async for e in c.get_workflow_handle(wid).fetch_history_events()]
    fired = [e for e in history if e.HasField("timer_fired_event_attributes")]
    assert len(fired) >= 2  # the two 45-minute waits ran on the workflow's clock
    await c.get_workflow_handle(wid).terminate("test over")


async def test_a_rate_limit_that_keeps_coming_back_is_said_once_each_way(
    skipping: WorkflowEnvironment, tier: Tier
):
    """A secondary rate limit asking for a minute each time, for longer than a short call's 30 minutes: the
    quiet tries, then "failing after 4 tries" once, then the call's 30 minutes run out and the deploy waits
    and calls again, said once too; nothing is said again however often it comes back."""
    c, stubs = skipping.client, tier.stubs
    stubs.merge_rate_limits, stubs.merge_rate_limit_wait = 80, timedelta(minutes=1)
    wid = await start(skipping, tier, "kprod-gov")
    await act(c, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(c, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SREG1)
    await at(c, wid, Step.VERSION_PR_MERGE, SREG1)
    merge = send_action(
        c, wid, Action.MERGE, ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, channel="t")
    )
    task = asyncio.ensure_future(merge)
    for _ in range(40):
        if await _waits(c, wid, Step.TRIGGER, SREG1):
            break
        await skipping.sleep(timedelta(minutes=5))
    st = await at(c, wid, Step.TRIGGER, SREG1)
    await task
    assert stubs.names().count("merge_pr") == 81 and stubs.merge_rate_limits == 0
    notes = [e.reason or "" for e in st.audit if e.action == "waiting"]
    assert len([n for n in notes if "failing after 4 tries" in n]) == 1, notes
    assert len([n for n in notes if "rate limited; deployctl tries again" in n]) == 1, notes
    assert len(notes) == 2, notes
    await c.get_workflow_handle(wid).terminate("test over")
