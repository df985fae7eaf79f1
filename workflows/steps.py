"""The step table: the one place that says which steps a process has, and everything about each step.

A step's row says who acts, which actions they take and with which buttons (label, confirmation), whether
they name an SRE from a menu, how long the step waits by default, what its DM shows, what happens once an
action is accepted (its effect) and what may finish it outside deployctl (its watcher). The workflow walks
it, the policy checks actions against it, the config takes its default timeouts from it, the CLI's `plan`
and `status` print it and the Slack bridge draws its buttons from it. Change a rule here and every one of
them follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from workflows.models import Action, Cloud, Process, Role, Step


class Effect(StrEnum):
    """What the workflow does once a step's action is accepted (workflows/effects.py), or, at a step
    nobody acts at, what the step itself does."""

    ANNOUNCE = "announce"  # the thread hears who did what; nothing else changes
    VP_APPROVED = "vp_approved"  # the PCCR records the VP's approval
    PCCR_APPROVED = "pccr_approved"  # the PCCR is labelled approved
    PCCR_ACCEPTED = "pccr_accepted"  # the PCCR is labelled accepted-for-release
    SRE_ASSIGNED = "sre_assigned"  # the named SRE is the deploy's SRE
    MERGE_PR = "merge_pr"  # the version PR is merged on GitHub, at the head the SRE was shown
    TRIGGER_JOB = "trigger_job"  # the deploy lock, then the Jenkins job with the PCCR's parameters
    PROCEED_INPUT = "proceed_input"  # the job's input answered proceed (a reject answers abort)
    WAIT_WINDOW = "wait_window"  # a durable timer until the release window opens
    FOLLOW_BUILD = "follow_build"  # the job's result is the deploy's outcome


class Watcher(StrEnum):
    """What may finish a step outside deployctl; the workflow follows it (workflows/watchers.py)."""

    JENKINS_INPUT = "jenkins_input"  # the job's input answered directly in Jenkins
    VERSION_PR = "version_pr"  # the version PR merged or closed directly on GitHub


class Shows(StrEnum):
    """What a step's DM shows below its question; a diff shown binds the buttons to its sha256."""

    PARAMS = "params"  # the job and the PCCR's parameters
    BUILD_DIFF = "build_diff"  # the diff the build printed
    INPUT = "input"  # the build waiting at its input, and its diff's sha256
    PR_DIFF = "pr_diff"  # the version PR's head and diff


@dataclass(frozen=True)
class Confirm:
    """Slack's "are you sure" dialog on a button that ends a deploy or touches production."""

    title: str
    text: str
    yes: str


@dataclass(frozen=True)
class Button:
    action: Action
    label: str
    confirm: Confirm | None = None


@dataclass(frozen=True)
class StepDef:
    step: Step
    actor: Role | None  # None: nobody acts (a timer or the job itself)
    buttons: tuple[Button, ...]  # the actions taken here, as their buttons
    does: str  # what the step achieves, in the runbook's words
    effect: Effect
    timeout: timedelta | None = None  # how long it waits for its action by default ([timeouts] overrides)
    names_sre: bool = False  # the action names an SRE (`--sre`, Slack's users menu listing the SREs)
    shows: Shows | None = None
    watcher: Watcher | None = None

    @property
    def actions(self) -> tuple[Action, ...]:
        return tuple(b.action for b in self.buttons)

    @property
    def waits_on_people(self) -> bool:
        return self.actor is not None

    def button(self, action: Action) -> Button | None:
        return next((b for b in self.buttons if b.action is action), None)


_REJECT = Button(Action.REJECT, "Reject", Confirm("Reject?", "This ends the deploy as rejected.", "Reject"))
_APPROVE = Button(Action.APPROVE, "Approve")
_ASSIGN = Button(Action.ASSIGN, "Assign")  # drawn as a users menu (names_sre), never as a button
_TRIGGER = Button(Action.TRIGGER, "Trigger deploy job")
_TRIGGER_DOES = "the deploy job starts with the PCCR's parameters"

VP = StepDef(
    Step.VP_APPROVAL,
    Role.VP,
    (_APPROVE, _REJECT),
    "VP approval recorded in the PCCR",
    Effect.VP_APPROVED,
    timedelta(days=3),
    shows=Shows.PARAMS,
)
REVIEW = StepDef(
    Step.PCCR_REVIEW,
    Role.GATEKEEPER,
    (_APPROVE, _REJECT),
    "the PCCR is approved",
    Effect.PCCR_APPROVED,
    timedelta(days=3),
    shows=Shows.PARAMS,
)
ASSIGN_BY_GATEKEEPER = StepDef(
    Step.SRE_ASSIGNMENT,
    Role.GATEKEEPER,
    (_ASSIGN,),
    "an SRE is named to approve the deploy job",
    Effect.SRE_ASSIGNED,
    timedelta(days=1),
    names_sre=True,
)
ASSIGN_BY_OWNER = StepDef(
    Step.SRE_ASSIGNMENT,
    Role.CODE_OWNER,
    (_ASSIGN,),
    "an SRE is found to help with the release",
    Effect.SRE_ASSIGNED,
    timedelta(days=1),
    names_sre=True,
)
CLEARANCE = StepDef(
    Step.CLEARANCE,
    Role.ASSIGNED_SRE,
    (Button(Action.APPROVE, "Clear to trigger"),),
    "the SRE tells the owner to trigger the job",
    Effect.ANNOUNCE,
    timedelta(days=1),
)
MERGE = StepDef(
    Step.VERSION_PR_MERGE,
    Role.ASSIGNED_SRE,
    (Button(Action.MERGE, "Merge version PR"),),
    "the version PR is merged",
    Effect.MERGE_PR,
    timedelta(days=1),
    shows=Shows.PR_DIFF,
    watcher=Watcher.VERSION_PR,
)
TRIGGER_BY_OWNER = StepDef(
    Step.TRIGGER, Role.CODE_OWNER, (_TRIGGER,), _TRIGGER_DOES, Effect.TRIGGER_JOB, timedelta(days=1)
)
TRIGGER_BY_SRE = StepDef(
    Step.TRIGGER, Role.ASSIGNED_SRE, (_TRIGGER,), _TRIGGER_DOES, Effect.TRIGGER_JOB, timedelta(days=1)
)
DIFF = StepDef(
    Step.DIFF_VALIDATION,
    Role.CODE_OWNER,
    (Button(Action.VALIDATE_DIFF, "Diff is correct"), _REJECT),
    "the diff printed by the job is accepted",
    Effect.ANNOUNCE,
    timedelta(hours=4),
    shows=Shows.BUILD_DIFF,
)
APPROVAL = StepDef(
    Step.DEPLOY_APPROVAL,
    Role.ASSIGNED_SRE,
    (
        Button(
            Action.APPROVE,
            "Approve deploy",
            Confirm(
                "Approve the deploy?",
                "The deploy job goes on and applies the diff to production.",
                "Approve deploy",
            ),
        ),
        _REJECT,
    ),
    "the job's input step is approved in Jenkins",
    Effect.PROCEED_INPUT,
    timedelta(hours=4),
    shows=Shows.INPUT,
    watcher=Watcher.JENKINS_INPUT,
)
ACCEPTANCE = StepDef(
    Step.RELEASE_ACCEPTANCE,
    Role.GATEKEEPER,
    (_APPROVE, _REJECT),
    "the PCCR is accepted for the release",
    Effect.PCCR_ACCEPTED,
    timedelta(days=7),
    shows=Shows.PARAMS,
)
WINDOW = StepDef(
    Step.RELEASE_WINDOW_WAIT, None, (), "waits until the release window opens", Effect.WAIT_WINDOW
)
DEPLOYING = StepDef(Step.DEPLOYING, None, (), "the job applies; its result is recorded", Effect.FOLLOW_BUILD)

#: Every row, in the order the config lists the steps' timeouts.
ALL = (
    VP,
    REVIEW,
    ASSIGN_BY_GATEKEEPER,
    ASSIGN_BY_OWNER,
    CLEARANCE,
    MERGE,
    TRIGGER_BY_OWNER,
    TRIGGER_BY_SRE,
    DIFF,
    APPROVAL,
    ACCEPTANCE,
    WINDOW,
    DEPLOYING,
)

#: The waiting steps, each with its default timeout. `[timeouts]` may override any of them, and only them:
#: `release_window_wait` is bounded by the window, `deploying` by the job, `done` by nothing.
TIMEOUTS: dict[Step, timedelta] = {d.step: d.timeout for d in ALL if d.timeout is not None}

# Who may cancel, at any step before `deploying`.
CANCELLERS = (Role.CODE_OWNER, Role.GATEKEEPER)


def button(step: Step, action: Action) -> Button | None:
    """The button for `action` at `step` (rows of one step, in any process, draw the same buttons)."""
    return next((b for d in ALL if d.step is step for b in d.buttons if b.action is action), None)


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
