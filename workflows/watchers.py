"""What may finish a step outside deployctl, and how the deploy follows it: the job's input answered
directly in Jenkins, the version PR merged or closed directly on GitHub (the step table's `watcher`).

A watcher is an activity polling in the background while the step waits for its action; the workflow
cancels it when someone acts through deployctl. Its task ends True when the step was finished outside.

**Outside events (webhooks).** The Signal `outside_event` (`OutsideEvent`: the system, a line of detail)
says "GitHub or Jenkins says something changed": the open step's watcher of that system is restarted
(its activity cancelled, a new one started), and a new watcher reads the real state at once. The event
itself decides nothing: it carries no verdict, the workflow believes only what its own activity reads from
GitHub or Jenkins (the PR it opened, the build it triggered), so a forged, replayed or misrouted event,
signed or not, costs at most one extra read. An event at a step without a watcher of its system is
noted in the audit trail and changes nothing. Restarts are bounded per step (`MAX_RESTARTS`) and event
notes per deploy (`MAX_EVENT_NOTES`), so a flood cannot grow the history or the audit without bound.

Replay: the new commands (the watcher's cancel, the new schedule) come only after an `outside_event`
Signal in the history, so histories without one replay as before (tests/test_replay.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError
from temporalio import workflow

from activities.github import GithubActivities
from activities.jenkins import JenkinsActivities
from workflows import messages, notices, people, policy, trail, view
from workflows.calls import call
from workflows.effects import input_id, job, number
from workflows.models import (
    MAX_EVENT_DETAIL,
    WEBHOOK_POLL_CAP,
    AuditEntry,
    Outcome,
    OutsideEvent,
    Role,
    WatchInputInput,
    WatchPrInput,
)
from workflows.options import LONG_POLL
from workflows.outbox import NoticeKind
from workflows.state import DeployState
from workflows.steps import StepDef, Watcher

#: Outside events that restart one step's watcher, at most; later ones at that step are noted once.
MAX_RESTARTS = 30
#: Audit notes about outside events in one deploy, at most; later events act (within MAX_RESTARTS) unnoted.
MAX_EVENT_NOTES = 100
_SYSTEM_WATCHER = {"github": Watcher.VERSION_PR, "jenkins": Watcher.JENKINS_INPUT}


#: How a watcher's activity runs: a long poll in the background (status does not show it as what the
#: deploy waits for), cancelled by asking (it notices between polls) when someone acts through deployctl.
WATCHING: dict[str, Any] = {
    "options": LONG_POLL,
    "shown": False,
    "cancellation_type": workflow.ActivityCancellationType.TRY_CANCEL,
}


def start(s: DeployState, defn: StepDef) -> asyncio.Task[bool] | None:
    """The step's watcher, started now (kept as `s.watcher`); None if nothing outside can finish the step."""
    s.watching, s.restarts = defn, 0
    s.watcher = _task(s, defn)
    return s.watcher


def _task(s: DeployState, defn: StepDef) -> asyncio.Task[bool] | None:
    if defn.watcher is Watcher.JENKINS_INPUT:
        return asyncio.create_task(_watch_input(s))
    if defn.watcher is Watcher.VERSION_PR and s.version_pr is not None:
        return asyncio.create_task(_watch_pr(s))
    return None


def on_outside_event(s: DeployState, payload: Any) -> None:
    """Signal `outside_event`: restart the open step's watcher of that system, so it reads GitHub or
    Jenkins again now; anything else is noted and ignored (module docstring: an event decides nothing)."""
    try:
        event = OutsideEvent.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        _event_note(s, f"outside event refused: {where}: {first['msg']}", accepted=False)
        return
    detail = policy.one_line(event.detail, MAX_EVENT_DETAIL) if event.detail else "no detail"
    watcher, defn = s.watcher, s.watching
    if (
        watcher is None
        or watcher.done()
        or defn is None
        or defn.watcher is not _SYSTEM_WATCHER[event.system]
        or s.inbox is not None
        or s.outcome is not None
    ):
        _event_note(
            s, f"{event.system} event ({detail}): nothing at {s.step.value} watches {event.system}; ignored"
        )
        return
    if s.restarts >= MAX_RESTARTS:
        if s.restarts == MAX_RESTARTS:
            s.restarts += 1
            _event_note(
                s,
                f"{event.system} event ({detail}): {MAX_RESTARTS} events at {s.step.value} already; "
                "later ones are ignored here (the watcher keeps polling)",
            )
        return
    s.restarts += 1
    drop(watcher)  # its activity is cancelled (TRY_CANCEL); the new one reads at once
    s.watcher = _task(s, defn)
    _event_note(s, f"{event.system} event ({detail}): reading {_what(defn)} again now")


def drop(watcher: asyncio.Task[bool]) -> None:
    """Cancel a watcher nobody will await (replaced by a new one, or the deploy cancelled). Its task then
    ends cancelled or with its activity's cancellation (an ActivityError), and that end is taken here:
    unread, asyncio would log it as "Task exception was never retrieved" when the task is collected."""
    watcher.cancel()
    watcher.add_done_callback(_taken)


def _taken(task: asyncio.Task[bool]) -> None:
    if not task.cancelled():
        task.exception()


def _what(defn: StepDef) -> str:
    return (
        "the version PR on GitHub" if defn.watcher is Watcher.VERSION_PR else "the build's input in Jenkins"
    )


def _event_note(s: DeployState, text: str, accepted: bool = True) -> None:
    if s.event_notes >= MAX_EVENT_NOTES:
        return
    s.event_notes += 1
    trail.note(s, text, action="outside_event", accepted=accepted)


async def _watch_pr(s: DeployState) -> bool:
    assert s.version_pr is not None
    pr = await call(
        s,
        GithubActivities.watch_pr,
        WatchPrInput(
            repo=s.plan.settings.configs_repo,
            number=s.version_pr.number,
            poll_cap=WEBHOOK_POLL_CAP if s.plan.settings.webhooks_github else None,
        ),
        what=f"GitHub: watching version PR #{s.version_pr.number}",
        summary="watch the version PR on GitHub",
        **WATCHING,
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
                job=job(s),
                number=number(s),
                input_id=input_id(s),
                known=known,
                known_detail=known_detail,
                poll_cap=WEBHOOK_POLL_CAP if s.plan.settings.webhooks_jenkins else None,
            ),
            what=f"Jenkins: watching the input of build #{number(s)}",
            summary="watch the input in Jenkins",
            **WATCHING,
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
