"""The deploy's notices: what it says in Slack and on the PCCR issue, and how each notice is delivered.

Helpers queue notices (`say`, `ask`, `close_dms`, `update_root`, the PCCR's labels and comments); the
outbox (workflows/outbox.py) decides which goes next and when, and calls `start`, which schedules the
notice's activity synchronously (the ordering invariant is stated in outbox.py). `_settle` hands back
what the activity returned. A notice never blocks a deploy: Slack or GitHub trouble is noted in the audit
trail, never fatal.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

from activities.github import GithubActivities
from activities.slack import SlackActivities
from workflows import messages, people, slack_blocks, trail, view
from workflows.models import CommentInput, LabelsInput, PrRefInput, SlackPostInput, SlackUpdateInput
from workflows.options import NOTICE, cause
from workflows.outbox import Notice, NoticeKind
from workflows.state import DeployState
from workflows.steps import Shows, StepDef, sre_group

DIFF_SHOWN = 2500  # characters of the diff in the owner's DM (a section block holds at most 3,000)


def queue(s: DeployState, notice: Notice) -> None:
    s.outbox.put(notice)


def say(s: DeployState, kind: NoticeKind, text: str, to: str | None = None) -> None:
    queue(s, Notice(kind, text, s.step, to=to))


def close_dms(s: DeployState, text: str) -> None:
    """The buttons of DMs sent so far go (their step has passed); `text` says who did what, if anyone."""
    queue(s, Notice(NoticeKind.DONE, text, s.step))


def bound_sha256(s: DeployState, defn: StepDef) -> str | None:
    """The sha256 of the diff a step's DM shows, which its button carries and the workflow checks:
    the build's at diff_validation, the version PR's at version_pr_merge (SPEC §4, §10)."""
    if defn.shows is Shows.BUILD_DIFF:
        return s.build.diff_sha256
    if defn.shows is Shows.PR_DIFF and s.pr_diff is not None:
        return s.pr_diff.diff_sha256
    return None


def detail(s: DeployState, defn: StepDef) -> str:
    """What a step's DM shows below its question (the step table's `shows`)."""
    b = s.build
    if defn.shows is Shows.PARAMS:
        return messages.params_detail(s.plan.service.jenkins_job, view.shown_params(s), s.plan.version)
    if defn.shows is Shows.BUILD_DIFF and b.diff is not None:
        return messages.diff_detail(b.number, b.url, b.diff, b.diff_sha256, DIFF_SHOWN)
    if defn.shows is Shows.INPUT:
        return f"The deploy job waits for your approval: {b.url} (diff sha256 `{b.diff_sha256}`)"
    if defn.shows is Shows.PR_DIFF and s.pr_diff is not None and s.version_pr is not None:
        return messages.pr_diff_detail(s.version_pr.number, s.version_pr.url, s.pr_diff)
    return ""


def _menu(s: DeployState, defn: StepDef) -> tuple[str, ...]:
    """The SREs listed under a step's users menu (Slack's menu cannot be limited to them)."""
    return s.groups.get(sre_group(s.plan.cloud), ()) if defn.names_sre else ()


def ask(s: DeployState, defn: StepDef, waiting: list[str]) -> None:
    """A DM with the step's buttons to each person it waits on."""
    wid, link = view.wid(), view.link(s)
    for user in waiting:
        shown = detail(s, defn)
        blocks = slack_blocks.action_blocks(
            messages.ask_text(s.name, wid, defn, user, link),
            wid,
            defn.step,
            defn.actions,
            shown,
            users=_menu(s, defn),
            diff_sha256=bound_sha256(s, defn),
        )
        text = messages.ask_text(s.name, wid, defn, user, link, shown, bound_sha256(s, defn))
        queue(s, Notice(NoticeKind.DM, text, defn.step, to=user, blocks=blocks))


def update_root(s: DeployState, defn: StepDef | None, waiting: list[str] | None = None) -> None:
    """The triage thread's root message shows where the deploy stands, with the step's buttons
    (anyone may click; the workflow decides who may act, as everywhere). `waiting`: who the step
    waits on, when it is not `waiting_on()` yet (an effect still being handled)."""
    if not s.triage_text:
        return
    waiting = people.waiting_on(s) if waiting is None else waiting
    if s.outcome is not None:
        state = f"Ended *{s.outcome.value}*: {messages.slack_escape(s.reason or '')}"
    else:
        state = f"Now at `{s.step.value}`, waiting on " + (" ".join(f"<@{u}>" for u in waiting) or "nobody")
    text = f"{s.triage_text}\n{state}"
    if defn is not None and defn.actions and waiting and s.outcome is None:
        blocks = slack_blocks.action_blocks(
            text,
            view.wid(),
            defn.step,
            defn.actions,
            users=_menu(s, defn),
            diff_sha256=bound_sha256(s, defn),
        )
    else:
        blocks = slack_blocks.done_blocks(state, s.triage_text)
    queue(s, Notice(NoticeKind.ROOT_UPDATE, text, s.step, blocks=blocks))


def set_pccr_state(s: DeployState, state: str) -> None:
    if s.pccr is None or s.pccr.state == state:
        return
    old = s.pccr.state
    s.pccr = s.pccr.model_copy(update={"state": state})
    if s.pccr.backend == "github":
        queue(s, Notice(NoticeKind.PCCR_LABELS, state, s.step, old_label=old))


def pccr_comment(s: DeployState, text: str) -> None:
    if s.pccr is not None and s.pccr.backend == "github":
        queue(s, Notice(NoticeKind.PCCR_COMMENT, text, s.step))


# ------------------------------------------------------------------------------------------ delivery


def start(s: DeployState, notice: Notice) -> asyncio.Task[None] | None:
    """Schedule the activity that delivers `notice` (now, synchronously) and the task that settles it;
    None if nothing to send. The outbox calls it."""
    handle = _activity(s, notice)
    return None if handle is None else asyncio.create_task(_settle(s, notice, handle))


def _activity(s: DeployState, notice: Notice) -> Any:
    """The handle of the activity that delivers `notice`, scheduled now; None if nothing to send."""
    st = s.plan.settings
    if notice.kind.is_pccr:
        assert s.pccr is not None and s.pccr.number is not None
        repo, number = st.pccr_repo or "", s.pccr.number
        s.pccr_ops += 1
        if notice.kind is NoticeKind.PCCR_COMMENT:
            marker = f"{view.wid()}/{s.pccr_ops}"
            return workflow.start_activity_method(
                GithubActivities.comment_pccr,
                CommentInput(repo=repo, number=number, body=notice.text, marker=marker),
                summary="comment on the PCCR",
                **NOTICE,
            )
        if notice.kind is NoticeKind.PCCR_LABELS:
            return workflow.start_activity_method(
                GithubActivities.set_pccr_labels,
                LabelsInput(
                    repo=repo,
                    number=number,
                    labels=[notice.text],
                    remove=[notice.old_label] if notice.old_label else [],
                ),
                summary=f"label the PCCR {notice.text}",
                **NOTICE,
            )
        return workflow.start_activity_method(
            GithubActivities.close_pccr,
            PrRefInput(repo=repo, number=number),
            summary="close the PCCR",
            **NOTICE,
        )
    if notice.kind is NoticeKind.DM_DONE:
        done = notice.text or f"`{notice.step.value}` is over."
        return workflow.start_activity_method(
            SlackActivities.update_message,
            SlackUpdateInput(
                channel=notice.to or "",
                ts=notice.ts or "",
                text=done,
                blocks=slack_blocks.done_blocks(done, notice.first),
            ),
            summary=f"slack close the {notice.step.value} buttons",
            **NOTICE,
        )
    if notice.kind is NoticeKind.ROOT_UPDATE:
        if s.thread_ts is None:
            return None  # the root was never posted (Slack was down): nothing to update
        return workflow.start_activity_method(
            SlackActivities.update_message,
            SlackUpdateInput(
                channel=st.triage_channel, ts=s.thread_ts, text=notice.text, blocks=notice.blocks
            ),
            summary="slack update the triage message",
            **NOTICE,
        )
    channel = notice.to if notice.kind is NoticeKind.DM else st.triage_channel
    thread = s.thread_ts if notice.kind is NoticeKind.THREAD else None
    return workflow.start_activity_method(
        SlackActivities.post_message,
        SlackPostInput(channel=channel or "", text=notice.text, thread_ts=thread, blocks=notice.blocks),
        summary=f"slack {notice.kind.value} {channel}",
        **NOTICE,
    )


async def _settle(s: DeployState, notice: Notice, handle: Any) -> None:
    """Wait for a notice's activity, keep what it returned, then start the next notice.

    No `finally`: when the worker evicts the run, the coroutine is closed at its `await`, and
    nothing may be started then."""
    try:
        sent = await handle
    except ActivityError as err:
        sent = None
        _failed(s, notice, cause(err))
    else:
        if notice.kind is NoticeKind.ROOT:
            s.thread_ts = sent.ts
            view.publish(s)
    s.outbox.settled(notice, sent)  # a DM with buttons is kept there for its DONE


def _failed(s: DeployState, notice: Notice, why: str) -> None:
    if notice.kind.is_pccr:
        number = s.pccr.number if s.pccr else None
        trail.note(s, f"PCCR issue #{number} not updated ({notice.kind.value}): {why}")
    elif notice.kind is NoticeKind.DM_DONE:
        trail.note(s, f"Slack message {notice.ts} not updated: {why}")
    elif notice.kind is NoticeKind.ROOT_UPDATE:
        trail.note(s, f"triage message not updated: {why}")
    else:
        channel = notice.to if notice.kind is NoticeKind.DM else s.plan.settings.triage_channel
        trail.note(
            s,
            f"Slack {notice.kind.value} to {channel} not sent: {why}",
            "notify_failed",
            "slack",
            notice.step,
            accepted=False,
        )
