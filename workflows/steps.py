"""The step table: the one place that says which steps a process has, who acts at each and how.

The workflow walks it, the policy checks actions against it, the CLI's `plan` and `status` print it and
the Slack bridge draws its buttons from it. Change a rule here and every one of them follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from workflows.models import Action, Cloud, Process, Role, Step


@dataclass(frozen=True)
class StepDef:
    step: Step
    actor: Role | None  # None: nobody acts (a timer or the job itself)
    actions: tuple[Action, ...]
    does: str  # what the step achieves, in the runbook's words

    @property
    def waits_on_people(self) -> bool:
        return self.actor is not None


VP = StepDef(Step.VP_APPROVAL, Role.VP, (Action.APPROVE, Action.REJECT), "VP approval recorded in the PCCR")
REVIEW = StepDef(Step.PCCR_REVIEW, Role.GATEKEEPER, (Action.APPROVE, Action.REJECT), "the PCCR is approved")
ASSIGN_BY_GATEKEEPER = StepDef(
    Step.SRE_ASSIGNMENT, Role.GATEKEEPER, (Action.ASSIGN,), "an SRE is named to approve the deploy job"
)
ASSIGN_BY_OWNER = StepDef(
    Step.SRE_ASSIGNMENT, Role.CODE_OWNER, (Action.ASSIGN,), "an SRE is found to help with the release"
)
CLEARANCE = StepDef(
    Step.CLEARANCE, Role.ASSIGNED_SRE, (Action.APPROVE,), "the SRE tells the owner to trigger the job"
)
MERGE = StepDef(Step.VERSION_PR_MERGE, Role.ASSIGNED_SRE, (Action.MERGE,), "the version PR is merged")
TRIGGER_BY_OWNER = StepDef(
    Step.TRIGGER, Role.CODE_OWNER, (Action.TRIGGER,), "the deploy job starts with the PCCR's parameters"
)
TRIGGER_BY_SRE = StepDef(
    Step.TRIGGER, Role.ASSIGNED_SRE, (Action.TRIGGER,), "the deploy job starts with the PCCR's parameters"
)
DIFF = StepDef(
    Step.DIFF_VALIDATION,
    Role.CODE_OWNER,
    (Action.VALIDATE_DIFF, Action.REJECT),
    "the diff printed by the job is accepted",
)
APPROVAL = StepDef(
    Step.DEPLOY_APPROVAL,
    Role.ASSIGNED_SRE,
    (Action.APPROVE, Action.REJECT),
    "the job's input step is approved in Jenkins",
)
ACCEPTANCE = StepDef(
    Step.RELEASE_ACCEPTANCE,
    Role.GATEKEEPER,
    (Action.APPROVE, Action.REJECT),
    "the PCCR is accepted for the release",
)
WINDOW = StepDef(Step.RELEASE_WINDOW_WAIT, None, (), "waits until the release window opens")
DEPLOYING = StepDef(Step.DEPLOYING, None, (), "the job applies; its result is recorded")

# Who may cancel, at any step before `deploying`.
CANCELLERS = (Role.CODE_OWNER, Role.GATEKEEPER)


def oow_steps(cloud: Cloud, valkyr: bool) -> tuple[StepDef, ...]:
    """The out-of-window process of a cloud, from the PCCR's review to the job's result."""
    vp = (VP,) if valkyr else ()
    if cloud is Cloud.GOV:
        return (*vp, REVIEW, ASSIGN_BY_GATEKEEPER, MERGE, TRIGGER_BY_SRE, DIFF, APPROVAL, DEPLOYING)
    return (*vp, REVIEW, ASSIGN_BY_GATEKEEPER, CLEARANCE, TRIGGER_BY_OWNER, DIFF, APPROVAL, DEPLOYING)


def release_steps(cloud: Cloud, valkyr: bool) -> tuple[StepDef, ...]:
    """The release-window process: planned ahead, then the OOW tail of its cloud inside the window."""
    vp = (VP,) if valkyr else ()
    tail = oow_steps(cloud, valkyr=False)
    start = tail.index(MERGE if cloud is Cloud.GOV else CLEARANCE)
    return (ASSIGN_BY_OWNER, *vp, ACCEPTANCE, WINDOW, *tail[start:])


def steps_for(process: Process, cloud: Cloud, valkyr: bool) -> tuple[StepDef, ...]:
    if process is Process.RELEASE:
        return release_steps(cloud, valkyr)
    return oow_steps(cloud, valkyr)


def step_def(steps: tuple[StepDef, ...], step: Step) -> StepDef | None:
    return next((d for d in steps if d.step is step), None)


def sre_group(cloud: Cloud) -> str:
    """The group an assigned SRE must belong to."""
    return Role.SRE_GOV.value if cloud is Cloud.GOV else Role.SRE.value


def triage_group(cloud: Cloud) -> str:
    """The group the triage message mentions (runbook: @pccr-gatekeeper for com, @sre-gov for gov)."""
    return Role.SRE_GOV.value if cloud is Cloud.GOV else Role.GATEKEEPER.value
