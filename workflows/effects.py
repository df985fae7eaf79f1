"""What a step does once its action is accepted: one function per effect of the step table.

Each effect returns True when it is done, False when the outside world refused it (the step then waits
again for someone to act; the audit trail and the thread say why). `carry_out` runs the step's effect
and closes the step's DMs once it is done; `reject` ends the deploy. The two steps nobody acts at have
their own: `wait_window` (a durable timer) and `follow_build` (the job's result is the outcome).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow

from activities.github import GithubActivities
from activities.jenkins import JenkinsActivities
from workflows import lifecycle, messages, notices, people, policy, slack_blocks, trail, view
from workflows.calls import call
from workflows.models import (
    Action,
    ActionInput,
    BuildResultInput,
    InputActionInput,
    JobParametersInput,
    MergePrInput,
    Outcome,
    PrDiffInput,
    ReadDiffInput,
    TriggerBuildInput,
    WaitBuildStartedInput,
)
from workflows.options import LONG_POLL, SHORT_CALL
from workflows.outbox import NoticeKind
from workflows.state import Accepted, DeployState
from workflows.steps import Effect, StepDef

PR_DIFF_READ = 3000  # characters of the version PR's diff read for the SRE's DM (one section's worth)
#: After the version PR's branch moved, the root message's merge button is drawn again with the new
#: diff's sha256 (its old one would be refused as stale). Deploys that passed that point before replay
#: without the extra notice.
ROOT_AFTER_MOVE_PATCH = "root-redrawn-after-branch-move"


async def carry_out(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    """Carry out an accepted action. False when the outside world refused it (the step waits again).
    The step's DMs are closed only once the effect is done."""
    msg = accepted.msg
    done = await EFFECTS[defn.effect](s, defn, accepted)
    if done:
        notices.close_dms(
            s, slack_blocks.done_text(msg.actor, defn.step, accepted.action, workflow.now(), sre=msg.sre)
        )
    return done


def _announce(s: DeployState, defn: StepDef, accepted: Accepted) -> None:
    """The thread hears who did what at the step."""
    msg = accepted.msg
    notices.say(
        s,
        NoticeKind.THREAD,
        f"`{defn.step.value}`: <@{msg.actor}> {accepted.action.value.replace('_', ' ')}"
        + (f" <@{msg.sre}>" if msg.sre else "")
        + (f" — {messages.slack_escape(msg.comment)}" if msg.comment else ""),
    )


async def _announced(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    _announce(s, defn, accepted)
    return True


async def _vp_approved(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    _announce(s, defn, accepted)
    if s.pccr is not None:
        s.pccr = s.pccr.model_copy(update={"vp_approved_by": accepted.msg.actor})
    return True


async def _pccr_approved(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    _announce(s, defn, accepted)
    notices.set_pccr_state(s, "approved")
    return True


async def _pccr_accepted(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    _announce(s, defn, accepted)
    notices.set_pccr_state(s, "accepted-for-release")
    return True


async def _sre_assigned(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    _announce(s, defn, accepted)
    s.sre = accepted.msg.sre
    return True


async def _trigger_job(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    _announce(s, defn, accepted)
    await trigger(s)
    return True


async def _proceed_input(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    _announce(s, defn, accepted)
    return await answer_input(s, "proceed", accepted.msg.actor)


async def _merge_pr(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    return await merge(s, defn, accepted.msg)  # says what GitHub did, not what was asked


async def _automatic(s: DeployState, defn: StepDef, accepted: Accepted) -> bool:
    raise AssertionError(f"nobody acts at {defn.step.value}")


EFFECTS: dict[Effect, Callable[[DeployState, StepDef, Accepted], Awaitable[bool]]] = {
    Effect.ANNOUNCE: _announced,
    Effect.VP_APPROVED: _vp_approved,
    Effect.PCCR_APPROVED: _pccr_approved,
    Effect.PCCR_ACCEPTED: _pccr_accepted,
    Effect.SRE_ASSIGNED: _sre_assigned,
    Effect.TRIGGER_JOB: _trigger_job,
    Effect.PROCEED_INPUT: _proceed_input,
    Effect.MERGE_PR: _merge_pr,
    Effect.WAIT_WINDOW: _automatic,
    Effect.FOLLOW_BUILD: _automatic,
}


async def reject(s: DeployState, defn: StepDef, msg: ActionInput) -> None:
    """A reject ends the deploy; at the job's input it answers abort in Jenkins first."""
    notices.close_dms(s, slack_blocks.done_text(msg.actor, defn.step, Action.REJECT, workflow.now()))
    why = f"rejected at {defn.step.value} by {msg.actor}" + (f": {msg.comment}" if msg.comment else "")
    if defn.effect is Effect.PROCEED_INPUT:
        await answer_input(s, "abort", msg.actor)
    trail.finish(s, Outcome.REJECTED, why)


def refused_effect(s: DeployState, action: Action, reason: str) -> None:
    """The outside world refused what was accepted: the audit says so next to the request, the thread
    hears it, and status waits on it until someone acts again."""
    asked = next(e for e in reversed(s.audit) if e.action == action.value and e.accepted)
    trail.record(s, asked.model_copy(update={"time": workflow.now(), "accepted": False, "reason": reason}))
    notices.say(s, NoticeKind.THREAD, f"`{s.step.value}`: {messages.slack_escape(reason)}")
    s.outside = (reason, workflow.now())


# ------------------------------------------------------------------------------------------- Jenkins


def job(s: DeployState) -> str:
    return s.plan.service.jenkins_job


def number(s: DeployState) -> int:
    assert s.build.number is not None
    return s.build.number


def input_id(s: DeployState) -> str | None:
    """The input to answer (the config resolves a service's own against [jenkins]); None: the one
    pending."""
    return s.plan.service.input_id


async def trigger(s: DeployState) -> None:
    """Start the job with exactly the PCCR's parameters, once; then read its diff."""
    name = job(s)
    await lifecycle.take_lock(s)
    baseline = await call(
        s,
        JenkinsActivities.trigger_baseline,
        JobParametersInput(job=name),
        what=f"Jenkins: reading the builds of {name} before triggering it",
        summary=f"note the builds of {name} before triggering",
        options=SHORT_CALL,
    )
    started = await call(
        s,
        JenkinsActivities.trigger_build,
        TriggerBuildInput(
            job=name,
            params=s.plan.params,
            secret_params=s.plan.secret_params,  # names: the worker reads the values
            not_before=workflow.now(),
            baseline=baseline,
        ),
        what=f"Jenkins: triggering {name}",
        summary=f"trigger {name}",
        options=SHORT_CALL,
    )
    s.build.queue_id = started.queue_id
    if started.number is None:
        assert started.queue_id is not None
        ref = await call(
            s,
            JenkinsActivities.wait_build_started,
            WaitBuildStartedInput(job=name, queue_id=started.queue_id),
            what=f"Jenkins: {name} is queued (item {started.queue_id}), waiting for an executor",
            summary=f"wait for {name} to leave the queue",
            options=LONG_POLL,
        )
        s.build.number, s.build.url = ref.number, ref.url
    else:
        s.build.number, s.build.url = started.number, started.url
    view.publish(s)
    notices.say(s, NoticeKind.THREAD, f"Deploy job started: {s.build.url}")
    diff = await call(
        s,
        JenkinsActivities.read_diff,
        ReadDiffInput(
            job=name,
            number=s.build.number,
            diff_begin=s.plan.settings.diff_begin,
            diff_end=s.plan.settings.diff_end,
        ),
        what=f"Jenkins: build #{s.build.number} has not printed its diff yet",
        summary=f"read the diff of {name} #{s.build.number}",
        options=LONG_POLL,
    )
    s.build.diff, s.build.diff_sha256 = diff.diff, diff.diff_sha256


async def answer_input(s: DeployState, decision: str, actor: str) -> bool:
    """Proceed or abort the build's input for `actor`. False when Jenkins leaves it unclear which
    input to answer: nothing was answered, and the step waits again with the reason."""
    result = await call(
        s,
        JenkinsActivities.input_action,
        InputActionInput(job=job(s), number=number(s), input_id=input_id(s), decision=decision),
        what=f"Jenkins: answering the input of build #{number(s)} ({decision}) for {actor}"
        + (" — the build has not reached its input yet" if s.input_seen[0] == "not_reached" else ""),
        summary=f"{decision} the job's input for {actor}",
        options=LONG_POLL,
    )
    if result.refused:
        s.input_seen = ("unclear", result.refused)  # the watcher need not say it again
        if decision == "proceed":
            refused_effect(s, Action.APPROVE, f"Jenkins input not answered: {result.refused}")
        else:
            trail.note(s, f"Jenkins input not answered: {result.refused}")
        return False
    if result.answered_elsewhere:
        trail.note(s, f"the input was already answered in Jenkins: {result.detail}")
    return True


async def follow_build(s: DeployState) -> None:
    """`deploying`: the job applies; its result is the deploy's outcome."""
    done = await call(
        s,
        JenkinsActivities.wait_build_result,
        BuildResultInput(job=job(s), number=number(s)),
        what=f"Jenkins: build #{number(s)} is applying",
        summary=f"wait for {job(s)} #{number(s)} to finish",
        options=LONG_POLL,
    )
    s.build.result = done.result
    if done.result == "SUCCESS":
        trail.finish(s, Outcome.SUCCEEDED, f"build #{done.number} ended SUCCESS")
    else:
        trail.finish(s, Outcome.FAILED, f"build #{done.number} ended {done.result}")


# -------------------------------------------------------------------------------------------- GitHub


async def read_pr_diff(s: DeployState) -> None:
    """The version PR's head and its diff, as the SRE's DM shows them and the merge is pinned to."""
    assert s.version_pr is not None
    n = s.version_pr.number
    s.pr_diff = diff = await call(
        s,
        GithubActivities.pr_diff,
        PrDiffInput(repo=s.plan.settings.configs_repo, number=n, limit=PR_DIFF_READ),
        what=f"GitHub: reading the diff of version PR #{n}",
        summary=f"read the diff of version PR #{n}",
        options=SHORT_CALL,
    )
    s.version_pr = s.version_pr.model_copy(update={"head_sha": diff.head_sha})


async def merge(s: DeployState, defn: StepDef, msg: ActionInput) -> bool:
    """The SRE's merge: through GitHub's API, at the head sha the SRE was shown (SPEC §10). GitHub's
    refusal is the SRE's refusal, and the step waits; if the branch moved, the SRE is shown the new
    head and its diff (the step's deadline stays)."""
    assert s.version_pr is not None
    pinned = s.pr_diff.head_sha if s.pr_diff is not None else None
    result = await call(
        s,
        GithubActivities.merge_pr,
        MergePrInput(
            repo=s.plan.settings.configs_repo,
            number=s.version_pr.number,
            sha=pinned,
            title=f"{s.plan.service.name}: version {s.plan.version} ({view.wid()})",
        ),
        what=f"GitHub: merging version PR #{s.version_pr.number} for {msg.actor}",
        summary=f"merge version PR #{s.version_pr.number} for {msg.actor}",
        options=SHORT_CALL,
    )
    if not result.merged:
        reason = f"GitHub refused the merge: {result.refused_reason}"
        head = result.head_sha or ""
        moved = pinned is not None and bool(head) and head != pinned
        if moved:
            reason += (
                f" (the branch moved from {(pinned or '')[:12]} to {head[:12]} after you were shown it; "
                "nothing was merged: review the new diff sent to you, then merge again)"
            )
        reason = policy.one_line(reason, 600)
        refused_effect(s, Action.MERGE, reason)
        s.merge_verdict = reason
        if moved:
            await _review_again(s, defn, pinned or "")
        return False
    s.outside = None
    s.version_pr = s.version_pr.model_copy(update={"merged": True, "state": "closed"})
    if result.already_merged:
        trail.note(s, f"the version PR was already merged on GitHub by {result.merged_by or 'someone'}")
    notices.say(s, NoticeKind.THREAD, f"`version_pr_merge`: <@{msg.actor}> merged {s.version_pr.url}")
    s.merge_verdict = ""
    return True


async def _review_again(s: DeployState, defn: StepDef, old: str) -> None:
    """The version PR's branch moved after the SRE was shown it: read the new head and diff, take the
    buttons off the DMs that show the old one, and ask again with the new one."""
    await read_pr_diff(s)
    new = s.pr_diff.head_sha if s.pr_diff is not None else "?"
    notices.close_dms(
        s,
        f":warning: The version PR's branch moved after this was sent (from `{old[:12]}` to "
        f"`{new[:12]}`) and nothing was merged. Its new diff is in the next message.",
    )
    eligible = policy.eligible(defn, people.parties(s))
    notices.ask(s, defn, eligible)
    if workflow.patched(ROOT_AFTER_MOVE_PATCH):
        # the merge is still being handled (nobody counts as waited on yet): draw who is asked again
        notices.update_root(s, defn, waiting=eligible)


# ----------------------------------------------------------------------------------- release window


async def wait_window(s: DeployState) -> None:
    """`release_window_wait`: a durable timer until the release window opens, with a reminder a day
    before."""
    window = s.plan.window
    assert window is not None
    reminder_at = window.start - timedelta(days=1)
    if workflow.now() < reminder_at:
        await workflow.sleep(reminder_at - workflow.now(), summary="until a day before the window")
        for user in (*s.plan.service.code_owners, *([s.sre] if s.sre else [])):
            notices.say(
                s,
                NoticeKind.DM,
                messages.window_reminder_text(s.name, window.name, window.start, user),
                to=user,
            )
    if workflow.now() < window.start:
        await workflow.sleep(window.start - workflow.now(), summary=f"until window {window.name} opens")
    s.window_open = True
    notices.say(
        s, NoticeKind.THREAD, f"Release window {window.name} is open until {window.end:%Y-%m-%d %H:%M} UTC."
    )
