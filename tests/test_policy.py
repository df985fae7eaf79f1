"""The step table and the policy, unit-tested without a server."""

from __future__ import annotations

import pytest

from workflows import policy
from workflows.messages import Span, human_duration, status_facts, status_lines, triage_text, ui_link
from workflows.models import (
    Action,
    ActionInput,
    BuildInfo,
    Cloud,
    DeployStatus,
    JobParameter,
    Outcome,
    Pccr,
    Process,
    Role,
    Step,
)
from workflows.steps import oow_steps, release_steps, step_def, steps_for

OWNER, GATE, GATE2, SRE, SRE2, VP, NOBODY = (
    "U0OWNER1",
    "U0GATE1",
    "U0GATE2",
    "U0SRE1",
    "U0SRE2",
    "U0VP1",
    "U0NOBODY",
)
GROUPS = {
    "pccr-gatekeeper": (GATE, GATE2, OWNER),
    "sre": (SRE, SRE2, OWNER),
    "sre-gov": ("U0SREG1",),
    "vp": (VP,),
}


def situation(step: Step, cloud: Cloud = Cloud.COM, valkyr: bool = False, **kw) -> policy.Situation:
    parties = policy.Parties(
        code_owners=(OWNER,),
        groups=kw.pop("groups", GROUPS),
        assigned_sre=kw.pop("sre", SRE),
        held=kw.pop("held", {}),
    )
    return policy.Situation(
        service="payments-api",
        cloud=cloud,
        steps=steps_for(Process.OOW, cloud, valkyr),
        step=step,
        parties=parties,
        **kw,
    )


def msg(actor: str, step: Step, **kw) -> ActionInput:
    return ActionInput(actor=actor, step=step, **kw)


def test_oow_com_steps_follow_the_runbook():
    assert [d.step.value for d in oow_steps(Cloud.COM, valkyr=False)] == [
        "pccr_review",
        "sre_assignment",
        "clearance",
        "trigger",
        "diff_validation",
        "deploy_approval",
        "deploying",
    ]


def test_gov_and_valkyr_steps():
    gov = [d.step for d in oow_steps(Cloud.GOV, valkyr=True)]
    assert gov[:3] == [Step.VP_APPROVAL, Step.PCCR_REVIEW, Step.SRE_ASSIGNMENT]
    assert Step.VERSION_PR_MERGE in gov and Step.CLEARANCE not in gov
    assert step_def(oow_steps(Cloud.GOV, False), Step.TRIGGER).actor is Role.ASSIGNED_SRE
    assert step_def(oow_steps(Cloud.COM, False), Step.TRIGGER).actor is Role.CODE_OWNER


def test_release_steps_start_the_oow_tail_at_clearance_or_merge():
    com = [d.step for d in release_steps(Cloud.COM, False)]
    assert com[:3] == [Step.SRE_ASSIGNMENT, Step.RELEASE_ACCEPTANCE, Step.RELEASE_WINDOW_WAIT]
    assert com[3] is Step.CLEARANCE and Step.PCCR_REVIEW not in com
    gov = [d.step for d in release_steps(Cloud.GOV, False)]
    assert gov[3] is Step.VERSION_PR_MERGE
    assert step_def(release_steps(Cloud.COM, False), Step.SRE_ASSIGNMENT).actor is Role.CODE_OWNER


def test_waiting_on_excludes_a_code_owner_who_is_also_a_gatekeeper():
    s = situation(Step.PCCR_REVIEW)
    assert policy.eligible(step_def(s.steps, Step.PCCR_REVIEW), s.parties) == [GATE, GATE2]


def test_gatekeeper_may_approve_the_review():
    assert policy.refusal(Action.APPROVE, msg(GATE, Step.PCCR_REVIEW), situation(Step.PCCR_REVIEW)) is None


def test_code_owner_may_not_approve_their_own_pccr():
    why = policy.refusal(Action.APPROVE, msg(OWNER, Step.PCCR_REVIEW), situation(Step.PCCR_REVIEW))
    assert why is not None and why.startswith("separation of duties") and "\n" not in why


def test_wrong_role_is_refused_and_names_who_may():
    why = policy.refusal(Action.APPROVE, msg(NOBODY, Step.PCCR_REVIEW), situation(Step.PCCR_REVIEW))
    assert why == f"{NOBODY} may not approve at pccr_review: it waits on pccr-gatekeeper ({GATE}, {GATE2})"


def test_stale_step_is_refused():
    why = policy.refusal(Action.APPROVE, msg(GATE, Step.PCCR_REVIEW), situation(Step.CLEARANCE))
    assert why is not None and why.startswith("stale step: the deploy is at clearance, not pccr_review")


def test_action_not_offered_by_the_step():
    why = policy.refusal(Action.MERGE, msg(GATE, Step.PCCR_REVIEW), situation(Step.PCCR_REVIEW))
    assert why == "merge is not an action of step pccr_review (it takes: approve, reject)"


def test_busy_step_refuses_a_second_action():
    why = policy.refusal(Action.APPROVE, msg(GATE2, Step.PCCR_REVIEW), situation(Step.PCCR_REVIEW, busy=True))
    assert why is not None and "takes no action right now" in why


def test_finished_deploy_refuses_everything():
    why = policy.refusal(
        Action.CANCEL, msg(OWNER, Step.PCCR_REVIEW), situation(Step.PCCR_REVIEW, finished=True)
    )
    assert why is not None and "finished" in why


@pytest.mark.parametrize(
    ("sre", "expected"),
    [
        (SRE2, None),
        (None, "assign needs the SRE: pass --sre USER_ID"),
        (OWNER, "separation of duties: U0OWNER1 is a code owner of payments-api and cannot be its SRE"),
        (NOBODY, f"{NOBODY} is not in sre; assign one of: {SRE}, {SRE2}, {OWNER}"),
        ("U0SREG1", "U0SREG1 is not in sre; assign one of: U0SRE1, U0SRE2, U0OWNER1"),
    ],
)
def test_assign_checks_the_sre(sre, expected):
    s = situation(Step.SRE_ASSIGNMENT, sre=None)
    assert policy.refusal(Action.ASSIGN, msg(GATE, Step.SRE_ASSIGNMENT, sre=sre), s) == expected


def test_gov_sre_must_be_in_sre_gov():
    s = situation(Step.SRE_ASSIGNMENT, cloud=Cloud.GOV, sre=None)
    assert policy.refusal(Action.ASSIGN, msg(GATE, Step.SRE_ASSIGNMENT, sre="U0SREG1"), s) is None
    assert "is not in sre-gov" in policy.refusal(Action.ASSIGN, msg(GATE, Step.SRE_ASSIGNMENT, sre=SRE), s)


def test_only_the_assigned_sre_clears_and_approves():
    assert policy.refusal(Action.APPROVE, msg(SRE, Step.CLEARANCE), situation(Step.CLEARANCE)) is None
    why = policy.refusal(Action.APPROVE, msg(SRE2, Step.CLEARANCE), situation(Step.CLEARANCE))
    assert why == f"{SRE2} may not approve at clearance: it waits on assigned-sre ({SRE})"


def test_owner_triggers_on_com_and_sre_on_gov():
    assert policy.refusal(Action.TRIGGER, msg(OWNER, Step.TRIGGER), situation(Step.TRIGGER)) is None
    gov = situation(Step.TRIGGER, cloud=Cloud.GOV, sre="U0SREG1")
    assert policy.refusal(Action.TRIGGER, msg("U0SREG1", Step.TRIGGER), gov) is None
    assert policy.refusal(Action.TRIGGER, msg(OWNER, Step.TRIGGER), gov).startswith("separation of duties")


def test_diff_sha_must_match_the_build():
    s = situation(Step.DIFF_VALIDATION, diff_sha256="ab" * 32)
    assert (
        policy.refusal(Action.VALIDATE_DIFF, msg(OWNER, Step.DIFF_VALIDATION, diff_sha256="AB" * 32), s)
        is None
    )
    assert policy.refusal(Action.VALIDATE_DIFF, msg(OWNER, Step.DIFF_VALIDATION), s) is None
    why = policy.refusal(Action.VALIDATE_DIFF, msg(OWNER, Step.DIFF_VALIDATION, diff_sha256="cd" * 32), s)
    assert why is not None and "is not the build's diff" in why


def test_a_merge_naming_a_diff_must_name_the_version_prs_diff_shown_now():
    sreg = "U0SREG1"
    shown = situation(Step.VERSION_PR_MERGE, cloud=Cloud.GOV, sre=sreg, pr_diff_sha256="ab" * 32)
    at = Step.VERSION_PR_MERGE
    assert policy.refusal(Action.MERGE, msg(sreg, at, diff_sha256="AB" * 32), shown) is None
    assert policy.refusal(Action.MERGE, msg(sreg, at), shown) is None  # pinned to the head shown, as before
    why = policy.refusal(Action.MERGE, msg(sreg, at, diff_sha256="cd" * 32), shown)
    assert why == (
        "stale: the version PR's diff changed since the one you were shown (diff sha256 cdcdcdcdcdcd…, "
        "now abababababab…); nothing was merged: review the new DM, then merge from it"
    )
    # The build's diff is another matter: it does not bind a merge.
    build_only = situation(at, cloud=Cloud.GOV, sre=sreg, diff_sha256="cd" * 32)
    why = policy.refusal(Action.MERGE, msg(sreg, at, diff_sha256="cd" * 32), build_only)
    assert why is not None and why.startswith("this deploy knows no sha256 of the version PR's diff")


def test_cancel_by_owner_or_gatekeeper_only_before_deploying():
    assert policy.refusal(Action.CANCEL, msg(OWNER, Step.TRIGGER), situation(Step.TRIGGER)) is None
    assert policy.refusal(Action.CANCEL, msg(GATE2, Step.CLEARANCE), situation(Step.CLEARANCE)) is None
    assert "may not cancel" in policy.refusal(
        Action.CANCEL, msg(SRE2, Step.CLEARANCE), situation(Step.CLEARANCE)
    )
    assert "before deploying" in policy.refusal(
        Action.CANCEL, msg(OWNER, Step.DEPLOYING), situation(Step.DEPLOYING)
    )


def test_valkyr_step_is_for_vps():
    s = situation(Step.VP_APPROVAL, valkyr=True)
    assert policy.refusal(Action.APPROVE, msg(VP, Step.VP_APPROVAL), s) is None
    assert "may not approve at vp_approval" in policy.refusal(Action.APPROVE, msg(GATE, Step.VP_APPROVAL), s)


def test_allowed_actions():
    steps = oow_steps(Cloud.COM, False)
    assert policy.allowed_actions(step_def(steps, Step.PCCR_REVIEW), False, False) == [
        Action.APPROVE,
        Action.REJECT,
        Action.CANCEL,
    ]
    assert policy.allowed_actions(step_def(steps, Step.DEPLOYING), False, False) == []
    assert policy.allowed_actions(step_def(steps, Step.TRIGGER), False, True) == [Action.CANCEL]
    assert policy.allowed_actions(step_def(steps, Step.TRIGGER), True, False) == []


def test_params_must_match_the_job_exactly():
    defs = [
        JobParameter(name="IMAGE_TAG"),
        JobParameter(name="REPLICAS"),
        JobParameter(name="MODE", choices=["a", "b"]),
    ]
    assert policy.params_refusal(defs, {"IMAGE_TAG": "1", "REPLICAS": "2", "MODE": "a"}, "job") is None
    why = policy.params_refusal(defs, {"IMAGE_TAG": "1", "EXTRA": "x", "MODE": "c"}, "job")
    assert (
        why
        == "params do not match Jenkins job job: missing REPLICAS; unknown EXTRA; MODE='c' is not one of a, b"
    )


def test_params_become_jenkins_text():
    assert policy.params_as_text({"A": True, "B": False, "C": 3, "D": 1.5, "E": "x", "F": None}) == {
        "A": "true",
        "B": "false",
        "C": "3",
        "D": "1.5",
        "E": "x",
        "F": "",
    }
    with pytest.raises(ValueError, match="mapping"):
        policy.params_as_text(["a"])
    with pytest.raises(ValueError, match="must be a string, number or boolean"):
        policy.params_as_text({"A": [1]})


def test_version_policies():
    owners = (OWNER,)
    assert "revert master" in policy.start_refusal(Cloud.COM, True, "1.2.3", "svc", OWNER, owners)
    assert "needs --version" in policy.start_refusal(Cloud.GOV, False, None, "svc", OWNER, owners)
    assert policy.start_refusal(Cloud.GOV, False, "1.2.3", "svc", OWNER, owners) is None
    assert policy.start_refusal(Cloud.COM, False, None, "svc", OWNER, owners) is None
    assert policy.start_refusal(Cloud.COM, False, None, "svc", GATE, owners) == (
        f"{GATE} is not a code owner of svc; a code owner ({OWNER}) opens its PCCR"
    )


def test_triage_text_is_the_runbooks():
    assert (
        triage_text(Cloud.COM, "<@U1> <@U2>", "L") == "<@U1> <@U2> requesting review for OOW deploy job PR L"
    )
    assert (
        triage_text(Cloud.GOV, "<!subteam^S1>", "L")
        == "<!subteam^S1> requesting review for OOW gov deploy job PR L"
    )


def test_human_duration():
    assert [human_duration(s) for s in (30, 90, 3600, 5400, 86400 * 3)] == ["30s", "1.5m", "1h", "1.5h", "3d"]


def test_release_windows_need_the_lead_time():
    from datetime import UTC, datetime, timedelta

    from workflows.models import ReleaseWindow

    now = datetime(2026, 11, 27, 12, tzinfo=UTC)

    def w(name: str, days: float) -> ReleaseWindow:
        return ReleaseWindow(
            name=name, start=now + timedelta(days=days), end=now + timedelta(days=days, hours=4)
        )

    cal = [w("a", 10), w("b", 14), w("c", 30)]
    assert policy.choose_window(cal, None, now, 14) == (cal[1], None)
    assert policy.choose_window(cal, "c", now, 14) == (cal[2], None)
    window, why = policy.choose_window(cal, "a", now, 14)
    assert window is None and why == (
        "release window a opens 2026-12-07 12:00 UTC, less than 14 days ahead (last planning day was "
        "2026-11-23); the next eligible window is b (opens 2026-12-11 12:00 UTC, plan by 2026-11-27)"
    )
    assert policy.choose_window(cal[:1], None, now, 14)[1] == (
        "no release window opens at least 14 days ahead: no configured window is far enough ahead; "
        "add one to [release] windows"
    )
    assert policy.window_after(cal, cal[1]) == cal[2] and policy.window_after(cal, cal[2]) is None


# Whole-chain separation of duties (SPEC §9): one approving role per person per deploy.
BOTH = {**GROUPS, "sre": (SRE, SRE2, GATE), "pccr-gatekeeper": (GATE, GATE2, VP)}


def test_the_gatekeeper_who_approved_may_not_be_the_sre():
    s = situation(Step.SRE_ASSIGNMENT, groups=BOTH, sre=None, held={GATE: "pccr-gatekeeper"})
    assert policy.refusal(Action.ASSIGN, msg(GATE2, Step.SRE_ASSIGNMENT, sre=GATE), s) == (
        "separation of duties: U0GATE1 already acted as pccr-gatekeeper on this deploy and cannot be its SRE"
    )
    assert policy.refusal(Action.ASSIGN, msg(GATE2, Step.SRE_ASSIGNMENT, sre=SRE), s) is None


def test_a_gatekeeper_does_not_assign_themselves():
    s = situation(Step.SRE_ASSIGNMENT, groups=BOTH, sre=None)
    reason = policy.refusal(Action.ASSIGN, msg(GATE, Step.SRE_ASSIGNMENT, sre=GATE), s)
    assert reason == "separation of duties: U0GATE1 assigns the SRE and cannot assign themselves"


def test_a_vp_is_not_also_the_gatekeeper_and_waiting_on_leaves_them_out():
    s = situation(Step.PCCR_REVIEW, valkyr=True, groups=BOTH, held={VP: "vp"})
    assert policy.refusal(Action.APPROVE, msg(VP, Step.PCCR_REVIEW), s) == (
        "separation of duties: U0VP1 already acted as vp on this deploy and may not also act as pccr-gatekeeper"
    )
    assert policy.eligible(step_def(s.steps, Step.PCCR_REVIEW), s.parties) == [GATE, GATE2]


def test_the_assigned_sre_may_not_then_approve_as_gatekeeper():
    s = situation(Step.PCCR_REVIEW, groups=BOTH, held={GATE: "sre"})
    reason = policy.refusal(Action.APPROVE, msg(GATE, Step.PCCR_REVIEW), s)
    assert reason is not None and reason.startswith("separation of duties: U0GATE1 already acted as sre")


def test_the_same_role_twice_is_fine():
    s = situation(Step.SRE_ASSIGNMENT, groups=BOTH, sre=None, held={GATE: "pccr-gatekeeper"})
    assert policy.refusal(Action.ASSIGN, msg(GATE, Step.SRE_ASSIGNMENT, sre=SRE), s) is None


def test_status_lines_say_the_same_on_every_face():
    """One renderer for the CLI (plain), `/deploy status` (Slack mrkdwn) and the Web UI (markdown)."""
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    link = ui_link("http://ui:8233/", "default", "deploy-api-kprod-1")
    assert link == "http://ui:8233/namespaces/default/workflows/deploy-api-kprod-1"
    st = DeployStatus(
        workflow_id="deploy-api-kprod-1",
        process=Process.OOW,
        cloud=Cloud.COM,
        service="api",
        environment="kprod",
        step=Step.PCCR_REVIEW,
        waiting_on=["U1", "U2"],
        allowed_actions=[Action.APPROVE, Action.REJECT],
        pccr=Pccr(id="p1", url=link),
        build=BuildInfo(url="http://j/job/api/7/", number=7, diff_sha256="ab"),
        waiting_for="Jenkins <build>",
        waiting_since=now - timedelta(minutes=4),
        ui_url=link,
    )
    plain, slack, md = (status_lines(st, now, m) for m in ("plain", "slack", "markdown"))
    assert len(plain) == len(slack) == len(md)
    assert plain[:3] == [
        "OOW deploy of api to kprod (deploy-api-kprod-1, com-cloud)",
        "step: pccr_review",
        "waiting on: U1, U2",
    ]
    assert "waits for: Jenkins <build> (4m)" in plain and "waits for: Jenkins &lt;build&gt; (4m)" in slack
    assert (
        "waiting on: <@U1>, <@U2>" in slack
        and "build: <http://j/job/api/7/|build #7> (diff sha256 `ab`)" in slack
    )
    assert (
        md[0].startswith("**OOW deploy")
        and "step: `pccr_review`" in md
        and f"PCCR: {link} [pending-review]" in md
    )
    ended = st.model_copy(update={"outcome": Outcome.REJECTED, "outcome_reason": "no"})
    assert "outcome: *rejected* — no (ended at `pccr_review`)" in status_lines(ended, now, "slack")

    # The lines are `status_facts`, which say what each part is so that each face marks it up its way.
    facts = status_facts(st, now)
    assert plain == [f"{f.label}: {f.text}" if f.label else f.text for f in facts]
    by_key = {f.key: f for f in facts}
    assert by_key["waits_for"].spans == (Span("Jenkins <build> (4m)", "said"),)
    assert [s.kind for s in by_key["waiting_on"].spans] == ["user", "text", "user"]
    assert by_key["build"].text == "http://j/job/api/7/ (diff sha256 ab)"
    threaded = st.model_copy(update={"slack_thread": "1.2"})
    assert "Slack thread: 1.2" in status_lines(threaded, now)
    assert status_lines(threaded, now, "slack") == slack  # Slack leaves out the thread it answers in
