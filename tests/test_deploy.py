"""The OOW com-cloud deploy on the real dev server, with the Jenkins and Slack fakes the real clients talk to."""

from __future__ import annotations

import hashlib

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from starter.client import Refused, send_action, start_deploy
from starter.devstack import wait_for_step
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests.conftest import (
    DIFF_LINES,
    GATE1,
    GATE2,
    OUTSIDER,
    OWNER,
    PARAMS,
    SRE1,
    SRE2,
    Deployment,
    eventually,
)
from tests.support import act, refused, signed, status, to_trigger
from workflows import search_attributes as sa
from workflows.models import Action, ActionInput, DeployResult, DeployStatus, Outcome, Process, Step


async def start(client: Client, d: Deployment, params: dict[str, str] | None = None) -> str:
    wid, _ = await start_deploy(
        client, d.config, Process.OOW, d.service, "kprod", params or dict(PARAMS), None, OWNER
    )
    return wid


async def to_diff_validation(client: Client, wid: str) -> DeployStatus:
    await to_trigger(client, wid, SRE1)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    return await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=30)


async def test_oow_com_deploy_end_to_end(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins, slack: FakeSlack
):
    d = deployment
    wid = await start(client, d)
    assert wid.startswith(f"deploy-{d.service}-kprod-")
    st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    # The Web UI's current details: the step, who it waits on, the links.
    meta = await client.get_workflow_handle(wid).query(
        "__temporal_workflow_metadata", result_type=WorkflowMetadata
    )
    details = meta.current_details
    assert "step: `pccr_review`" in details and f"waiting on: {GATE1}, {GATE2}" in details
    assert f"PCCR: http://127.0.0.1:8233/namespaces/default/workflows/{wid}" in details
    desc = await client.get_workflow_handle(wid).describe()
    assert desc.typed_search_attributes.get(sa.WAITING_ON) == [GATE1, GATE2]
    assert desc.typed_search_attributes.get(sa.STEP) == "pccr_review"
    # A code owner who is also a gatekeeper is not waited on at review, and may not approve.
    assert st.waiting_on == [GATE1, GATE2]
    assert st.allowed_actions == [Action.APPROVE, Action.REJECT, Action.CANCEL]
    why = await refused(client, wid, Action.APPROVE, ActionInput(actor=OWNER, step=Step.PCCR_REVIEW))
    assert why.startswith("separation of duties")
    why = await refused(client, wid, Action.APPROVE, ActionInput(actor=OUTSIDER, step=Step.PCCR_REVIEW))
    assert "may not approve at pccr_review" in why
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW, comment="looks right")
    # A stale button for the old step acts on nothing.
    await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE2)
    why = await refused(client, wid, Action.APPROVE, ActionInput(actor=GATE2, step=Step.PCCR_REVIEW))
    assert why.startswith("stale step: the deploy is at sre_assignment")
    why = await refused(
        client, wid, Action.ASSIGN, ActionInput(actor=GATE2, step=Step.SRE_ASSIGNMENT, sre=OUTSIDER)
    )
    assert why.startswith(f"{OUTSIDER} is not in sre")
    await act(client, wid, Action.ASSIGN, GATE2, Step.SRE_ASSIGNMENT, sre=SRE1)
    await wait_for_step(client, wid, Step.CLEARANCE, SRE1)
    why = await refused(client, wid, Action.APPROVE, ActionInput(actor=SRE2, step=Step.CLEARANCE))
    assert "it waits on assigned-sre (U0SRE1)" in why
    await act(client, wid, Action.APPROVE, SRE1, Step.CLEARANCE)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
    expected = "\n".join(DIFF_LINES) + "\n"
    assert st.build.number is not None and st.build.diff == expected
    assert st.build.diff_sha256 == hashlib.sha256(expected.encode()).hexdigest()
    why = await refused(
        client,
        wid,
        Action.VALIDATE_DIFF,
        ActionInput(actor=OWNER, step=Step.DIFF_VALIDATION, diff_sha256="0" * 64),
    )
    assert "is not the build's diff" in why
    await act(
        client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
    )
    await act(client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()

    assert result.outcome is Outcome.SUCCEEDED
    builds = jenkins.builds(d.job)
    assert len(builds) == 1 and builds[0]["params"] == PARAMS and builds[0]["result"] == "SUCCESS"
    final = await status(client, wid)
    assert final.outcome is Outcome.SUCCEEDED and final.waiting_on == [] and final.pccr.state == "done"
    accepted = [
        (e.step.value, e.action, e.actor) for e in final.audit if e.accepted and e.actor != "deployctl"
    ]
    assert accepted == [
        ("pccr_review", "start", OWNER),
        ("pccr_review", "approve", GATE1),
        ("sre_assignment", "assign", GATE2),
        ("clearance", "approve", SRE1),
        ("trigger", "trigger", OWNER),
        ("diff_validation", "validate_diff", OWNER),
        ("deploy_approval", "approve", SRE1),
    ]
    people = [e for e in final.audit if e.accepted and e.actor != "deployctl"]
    assert all(e.channel == "test" for e in people[1:]) and people[0].channel == "cli"
    # Every person's entry is signed with their own key, and keeps what was signed (SPEC §9).
    assert all(e.identity.startswith("ssh:SHA256:") and e.signature and e.payload for e in people)
    assert {e.payload["workflow_id"] for e in people if e.payload} == {wid}
    assert [r.step for r in final.rosters][:2] == [Step.PCCR_REVIEW, Step.SRE_ASSIGNMENT]
    assert final.rosters[0].eligible == [GATE1, GATE2]
    # Slack: the runbook's triage message, a thread, DMs to whoever acts next with the build link for the SRE.
    root = [m for m in slack.messages_to("C0TRIAGE") if not m.get("thread_ts") and wid in m["text"]]
    assert len(root) == 1
    posted = root[0]["history"][0] if root[0]["history"] else root[0]  # as first posted
    triage = (
        f"<@{GATE1}> <@{GATE2}> <@{OWNER}> requesting review for OOW deploy job PR "
        f"http://127.0.0.1:8233/namespaces/default/workflows/{wid}"
    )
    assert posted["text"] == triage
    # The root message follows the deploy: the review's buttons while it waits there, the outcome at the end.
    at_review = next(v for v in root[0]["history"] if "Now at `pccr_review`" in v["text"])
    assert [e["action_id"] for b in at_review["blocks"] if b["type"] == "actions" for e in b["elements"]] == [
        "deployctl:approve",
        "deployctl:reject",
    ]
    assert root[0]["text"] == f"{triage}\nEnded *succeeded*: build #{final.build.number} ended SUCCESS"
    assert not [b for b in root[0]["blocks"] if b["type"] == "actions"]
    replies = slack.thread(root[0]["ts"])
    assert any("ended *succeeded*" in m["text"] for m in replies)
    # The DM that asked the SRE to approve carried the build link and two buttons; after the approval its
    # buttons went and it says who did what.
    asked = [m for m in slack.messages_to(SRE1) if m["history"] and wid in m["history"][0]["text"]]
    approval = next(m for m in asked if "deploy_approval" in m["history"][0]["text"])
    assert final.build.url in approval["history"][0]["text"]
    buttons = [
        e["action_id"]
        for b in approval["history"][0]["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
    ]
    assert buttons == ["deployctl:approve", "deployctl:reject"]
    assert approval["text"].startswith(f"✅ <@{SRE1}> approved") and "deploy_approval" in approval["text"]
    assert not [b for b in approval["blocks"] if b["type"] == "actions"]
    # The Web UI: search attributes tell where it stands.
    desc = await client.get_workflow_handle(wid).describe()
    assert await desc.static_summary() == f"OOW deploy of {d.service} to kprod (com-cloud), opened by {OWNER}"
    assert "IMAGE_TAG: 1.4.2" in (await desc.static_details() or "")
    assert desc.typed_search_attributes.get(sa.OUTCOME) == "succeeded"
    assert desc.typed_search_attributes.get(sa.STEP) == "deploying"
    assert desc.typed_search_attributes.get(sa.SERVICE) == d.service


async def test_signals_refused_are_recorded_and_change_nothing(
    client: Client, deployment: Deployment, worker: None
):
    d = deployment
    wid = await start(client, d)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    handle = client.get_workflow_handle(wid)
    await handle.signal("approve", signed({"actor": OWNER, "step": "pccr_review"}, wid, "approve"))
    await handle.signal("approve", {"step": "pccr_review"})
    await handle.signal("approve", "not an object")
    await handle.signal("approve", {"actor": GATE1, "step": "pccr_review", "comment": "unsigned"})
    await handle.signal(
        "approve",
        signed({"actor": GATE1, "step": "pccr_review", "comment": "via temporal CLI"}, wid, "approve"),
    )
    st = await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE1)
    people = [
        (e.action, e.actor, e.accepted, e.channel)
        for e in st.audit
        if e.actor != "deployctl" and e.action != "start"
    ]
    assert people == [
        ("approve", OWNER, False, "signal"),
        ("approve", "unknown", False, "signal"),
        ("approve", "unknown", False, "signal"),
        ("approve", GATE1, False, "signal"),
        ("approve", GATE1, True, "signal"),
    ]
    reasons = [e.reason for e in st.audit if not e.accepted]
    assert reasons[0].startswith("separation of duties")
    assert reasons[1].startswith("bad payload: actor: Field required")
    assert reasons[3].startswith("unsigned action")
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.SRE_ASSIGNMENT))
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.CANCELLED and result.reason == f"cancelled by {OWNER}"


async def test_reject_at_review_ends_rejected(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins
):
    d = deployment
    wid = await start(client, d)
    await act(client, wid, Action.REJECT, GATE2, Step.PCCR_REVIEW, comment="wrong tag")
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    st = await status(client, wid)
    assert (
        result.outcome is Outcome.REJECTED
        and result.reason == f"rejected at pccr_review by {GATE2}: wrong tag"
    )
    assert st.pccr.state == "rejected" and jenkins.builds(d.job) == []
    why = await refused(client, wid, Action.APPROVE, ActionInput(actor=GATE1, step=Step.PCCR_REVIEW))
    assert "finished" in why


async def test_cancel_aborts_the_running_build(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins
):
    d = deployment
    wid = await start(client, d)
    await to_diff_validation(client, wid)
    why = await refused(client, wid, Action.CANCEL, ActionInput(actor=SRE1, step=Step.DIFF_VALIDATION))
    assert why == f"{SRE1} may not cancel: only the code owners and the pccr-gatekeepers may"
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=GATE1, step=Step.DIFF_VALIDATION))
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.CANCELLED
    builds = jenkins.builds(d.job)
    assert len(builds) == 1 and builds[0]["result"] == "ABORTED"


async def test_sre_rejecting_the_deploy_aborts_the_input(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins
):
    d = deployment
    wid = await start(client, d)
    st = await to_diff_validation(client, wid)
    await act(
        client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
    )
    await act(client, wid, Action.REJECT, SRE1, Step.DEPLOY_APPROVAL, comment="not today")
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.REJECTED
    assert [b["result"] for b in jenkins.builds(d.job)] == ["ABORTED"]


async def test_input_answered_directly_in_jenkins_is_recorded(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins
):
    d = deployment
    wid = await start(client, d)
    st = await to_diff_validation(client, wid)
    await act(
        client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
    )
    await wait_for_step(client, wid, Step.DEPLOY_APPROVAL, SRE1)
    jenkins.answer_input(d.job, st.build.number, proceed=True, by="someone-in-jenkins")
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    final = await status(client, wid)
    assert result.outcome is Outcome.SUCCEEDED
    noticed = [e for e in final.audit if e.action == "answered_in_jenkins"]
    assert len(noticed) == 1 and noticed[0].step is Step.DEPLOY_APPROVAL and noticed[0].channel == "jenkins"
    assert len(jenkins.builds(d.job)) == 1


async def test_exactly_one_build_when_jenkins_answers_500_after_queueing(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins
):
    d = deployment
    wid = await start(client, d)
    await to_trigger(client, wid, SRE2)
    jenkins.fail_next(status=500, method="POST", path_contains=d.job, times=1, after_effect=True)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.DIFF_VALIDATION))
    await client.get_workflow_handle(wid).result()
    posts = [
        r for r in jenkins.requests if r[0] == "POST" and "buildWithParameters" in r[1] and d.job in r[1]
    ]
    assert len(posts) == 1, "the retry must find the queued build, not post again"
    assert len(jenkins.builds(d.job)) == 1 and st.build.number == jenkins.builds(d.job)[0]["number"]


async def test_params_that_do_not_match_the_job_are_refused_before_anything_starts(
    client: Client, deployment: Deployment, worker: None
):
    d = deployment
    with pytest.raises(Refused) as err:
        await start(client, d, {"IMAGE_TAG": "1", "COLOR": "blue"})
    assert str(err.value) == (
        f"params do not match Jenkins job {d.job}: missing REPLICAS, DRY_RUN; unknown COLOR; fix the params file"
    )
    found = [wf async for wf in client.list_workflows(f"DeployService = '{d.service}'")]
    assert found == []


async def test_a_finished_deploy_query_still_answers(client: Client, deployment: Deployment, worker: None):
    d = deployment
    wid = await start(client, d)
    await act(client, wid, Action.REJECT, GATE1, Step.PCCR_REVIEW)
    await client.get_workflow_handle(wid).result()
    st = await eventually(lambda: status(client, wid))
    assert st.outcome is Outcome.REJECTED and st.step is Step.PCCR_REVIEW


async def test_jenkins_refusing_for_good_fails_the_deploy_with_its_reason(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins
):
    d = deployment
    wid = await start(client, d)
    await to_trigger(client, wid, SRE1)
    jenkins.fail_next(status=403, method=None, path_contains=d.job, times=50, after_effect=False)
    await send_action(client, wid, Action.TRIGGER, ActionInput(actor=OWNER, step=Step.TRIGGER))
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.FAILED
    assert result.reason is not None and "403" in result.reason and "\n" not in result.reason
    assert jenkins.builds(d.job) == []
