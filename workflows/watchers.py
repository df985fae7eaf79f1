"""What may finish a step outside deployctl, and how the deploy follows it: the job's input answered
directly in Jenkins, the version PR merged or closed directly on GitHub (the step table's `watcher`).

A watcher is an activity polling in the background while the step waits for its action; the workflow
cancels it when someone acts through deployctl. Its task ends True when the step was finished outside.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

from activities.github import GithubActivities
from activities.jenkins import JenkinsActivities
from workflows import messages, notices, people, trail, view
from workflows.calls import call
from workflows.effects import input_id, job, number
from workflows.models import AuditEntry, Outcome, PrRefInput, Role, WatchInputInput
from workflows.options import LONG_POLL
from workflows.outbox import NoticeKind
from workflows.state import DeployState
from workflows.steps import StepDef, Watcher


def start(s: DeployState, defn: StepDef) -> asyncio.Task[bool] | None:
    """The step's watcher, started now; None if nothing outside can finish the step."""
    if defn.watcher is Watcher.JENKINS_INPUT:
        return asyncio.create_task(_watch_input(s))
    if defn.watcher is Watcher.VERSION_PR and s.version_pr is not None:
        return asyncio.create_task(_watch_pr(s))
    return None


async def _watch_pr(s: DeployState) -> bool:
    assert s.version_pr is not None
    pr = await call(
        s,
        GithubActivities.watch_pr,
        PrRefInput(repo=s.plan.settings.configs_repo, number=s.version_pr.number),
        what=f"GitHub: watching version PR #{s.version_pr.number}",
        summary="watch the version PR on GitHub",
        options=LONG_POLL,
        shown=False,
        cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
    )
    s.version_pr = pr
    merged = pr.merged
    actor, identity, why = people.out_of_band(s, "github", pr.merged_by)
    if not merged:
        why = None  # a close ends the deploy; it approves nothing
    trail.record(
        s,
        AuditEntry(
            time=workflow.now(),
            step=s.step,
            action="merged_on_github" if merged else "closed_on_github",
            actor=actor if merged else (pr.merged_by or "github"),
            channel="github",
            accepted=True,
            reason=f"version PR #{pr.number} was {'merged' if merged else 'closed'} directly on GitHub"
            + (f"; {why}" if why else ""),
            identity=identity,
            out_of_policy=why is not None,
        ),
    )
    notices.say(
        s,
        NoticeKind.THREAD,
        f"Version PR {pr.url} was {'merged' if merged else 'closed'} directly on GitHub"
        + (f" by {messages.slack_escape(pr.merged_by)}" if merged and pr.merged_by else "")
        + "."
        + (f" :warning: {messages.slack_escape(why)}." if why else ""),
    )
    if not merged:
        trail.finish(
            s, Outcome.CANCELLED, f"the version PR #{pr.number} was closed on GitHub without merging"
        )
    return True


async def _watch_input(s: DeployState) -> bool:
    """At deploy_approval, follow the build's input in Jenkins until it is answered there (True).

    Each time what Jenkins shows changes (the build has not reached its input for a while, which
    input to answer is unclear, the input waits), status and the Web UI say so, and an unclear input
    is said once in the thread and the audit trail; the watcher then goes on from what it reported."""
    while True:
        known, known_detail = s.input_seen
        result = await call(
            s,
            JenkinsActivities.watch_input,
            WatchInputInput(
                job=job(s), number=number(s), input_id=input_id(s), known=known, known_detail=known_detail
            ),
            what=f"Jenkins: watching the input of build #{number(s)}",
            summary="watch the input in Jenkins",
            options=LONG_POLL,
            shown=False,
            cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
        )
        if result.build_result:
            s.build.result = result.build_result
        if result.state in ("answered", "ended"):
            s.jenkins_answer = result.answered_by
            return True
        s.input_seen = (result.state, result.detail)
        if result.state == "pending":
            s.outside = None
        else:
            s.outside = (result.detail, workflow.now())
        if result.state == "unclear":
            trail.note(s, result.detail, "input_unclear")
            notices.say(s, NoticeKind.THREAD, f"`deploy_approval`: {messages.slack_escape(result.detail)}")
        view.publish(s)


def answered_in_jenkins(s: DeployState) -> None:
    """The input was answered directly in Jenkins: the audit trail and the thread say by whom (in policy
    only if by the assigned SRE); the deploy follows the build from here (`deploying`)."""
    actor, identity, why = people.out_of_band(s, "jenkins", s.jenkins_answer)
    trail.record(
        s,
        AuditEntry(
            time=workflow.now(),
            step=s.step,
            action="answered_in_jenkins",
            actor=actor,
            channel="jenkins",
            accepted=True,
            reason="the job's input was answered directly in Jenkins; deployctl records it and follows"
            + (f"; {why}" if why else ""),
            identity=identity,
            out_of_policy=why is not None,
            role=None if why else Role.ASSIGNED_SRE.value,
        ),
    )
    notices.say(
        s,
        NoticeKind.THREAD,
        "The deploy job's input was answered directly in Jenkins by "
        f"{messages.slack_escape(s.jenkins_answer or 'someone')}; following the build."
        + (f" :warning: {messages.slack_escape(why)}." if why else ""),
    )
    s.busy = True
