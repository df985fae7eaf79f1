"""What a deploy opens before its steps and closes after them: the version PR, the PCCR and its triage
message, the deploy lock, the build."""

from __future__ import annotations

import json

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

from activities.github import GithubActivities
from activities.jenkins import JenkinsActivities
from activities.locks import LockActivities
from workflows import messages, notices, people, trail, view
from workflows.calls import call
from workflows.lock import lock_id
from workflows.models import (
    AbortBuildInput,
    Cloud,
    LockCall,
    LockRequest,
    LockUpdate,
    OpenIssueInput,
    OpenVersionPrInput,
    Outcome,
    Pccr,
    PrRefInput,
    Role,
)
from workflows.options import SHORT_CALL, cause
from workflows.outbox import Notice, NoticeKind
from workflows.state import DeployState
from workflows.steps import triage_group


async def open_pccr(s: DeployState) -> None:
    """[gov: the version PR] → the PCCR → the triage message mentioning who reviews it."""
    if s.plan.cloud is Cloud.GOV:
        await _open_version_pr(s)
    if s.plan.settings.pccr_backend == "github":
        await _open_pccr_issue(s)
    window = s.plan.window
    group = Role.GATEKEEPER.value if window else triage_group(s.plan.cloud)
    await people.resolve_group(s, group)
    spec = s.plan.settings.groups.get(group)
    mention = spec.mention() if spec else ""
    if window is not None:
        text = messages.acceptance_text(mention, window.name, view.pccr_link(s))
    else:
        text = messages.triage_text(s.plan.cloud, mention, view.pccr_link(s))
    s.triage_text = text
    notices.say(s, NoticeKind.ROOT, text)


async def _open_version_pr(s: DeployState) -> None:
    st, svc, wid = s.plan.settings, s.plan.service.name, view.wid()
    assert s.plan.version is not None
    s.version_pr = await call(
        s,
        GithubActivities.open_version_pr,
        OpenVersionPrInput(
            repo=st.configs_repo,
            base_branch=st.base_branch,
            path=st.version_file.replace("{service}", svc),
            version=s.plan.version,
            branch=f"deployctl/{wid}",
            title=f"{svc}: deploy version {s.plan.version} to {s.plan.environment}",
            body=f"Version PR of deploy {wid}: {view.link(s)}",
        ),
        what=f"GitHub: opening the version PR in {st.configs_repo}",
        summary=f"open the version PR for {svc} {s.plan.version}",
        options=SHORT_CALL,
    )
    notices.say(s, NoticeKind.THREAD, f"Version PR: {s.version_pr.url}")
    view.publish(s)


async def _open_pccr_issue(s: DeployState) -> None:
    st = s.plan.settings
    assert st.pccr_repo
    shown = view.shown_params(s)
    params = "\n".join(
        f"{k}: {v if k in s.plan.secret_params else json.dumps(v)}" for k, v in sorted(shown.items())
    )
    body = "\n".join(
        [
            f"PCCR for {s.name} ({s.plan.cloud.value}-cloud), opened by <@{s.plan.requested_by}>.",
            f"Jenkins job `{s.plan.service.jenkins_job}` with exactly these parameters:",
            "```yaml",
            params,
            "```",
            f"Version PR: {s.version_pr.url}" if s.version_pr else "",
            f"Deploy: {view.link(s)}",
        ]
    )
    issue = await call(
        s,
        GithubActivities.open_pccr_issue,
        OpenIssueInput(
            repo=st.pccr_repo,
            title=f"PCCR: {s.name}",
            body=body,
            labels=["pending-review"],
            marker=view.wid(),
        ),
        what=f"GitHub: opening the PCCR issue in {st.pccr_repo}",
        summary="open the PCCR issue",
        options=SHORT_CALL,
    )
    s.pccr = Pccr(
        id=f"{st.pccr_repo}#{issue.number}",
        url=issue.url,
        params=view.shown_params(s),
        backend="github",
        number=issue.number,
    )
    view.publish(s)


# ------------------------------------------------------------------------------------------- the lock


async def take_lock(s: DeployState) -> None:
    """Past `trigger`, one deploy at a time per service and environment: wait for our turn."""
    svc, env = s.plan.service.name, s.plan.environment
    s.lock = "requested"
    await call(
        s,
        LockActivities.request_lock,
        LockCall(service=svc, environment=env, deploy_id=view.wid()),
        what=f"Temporal: asking for the {svc}/{env} deploy lock",
        summary=f"ask for the {svc}/{env} deploy lock",
        options=SHORT_CALL,
    )
    await workflow.wait_condition(lambda: s.lock == "granted")


def on_lock_update(s: DeployState, update: LockUpdate) -> None:
    """The lock workflow's signal: our turn, or who holds the lock now."""
    if s.lock == "none":
        return
    if update.granted:
        s.lock, s.blocked_by = "granted", None
    elif update.holder != s.blocked_by:
        s.blocked_by = update.holder
        notices.say(
            s,
            NoticeKind.THREAD,
            f"Waiting for deploy {update.holder} of the same service and environment to end.",
        )
    view.publish(s)


async def _give_back_lock(s: DeployState) -> None:
    if s.lock == "none":
        return
    try:
        await workflow.get_external_workflow_handle(lock_id(s.plan.service.name, s.plan.environment)).signal(
            "release", LockRequest(deploy_id=view.wid())
        )
    except FailureError as err:
        trail.note(s, f"could not give back the deploy lock: {err}")
    s.lock = "none"


# ---------------------------------------------------------------------------------------- closing out


async def close_out(s: DeployState) -> None:
    """Close what the deploy opened: abort a build that did not finish, close the version PR, give back
    the lock, close the PCCR, say so."""
    b = s.build
    job = s.plan.service.jenkins_job
    if b.result is None and (b.queue_id is not None or b.number is not None):
        try:
            await call(
                s,
                JenkinsActivities.abort_build,
                AbortBuildInput(
                    job=job, number=b.number, queue_id=b.queue_id, input_id=s.plan.service.input_id
                ),
                what=f"Jenkins: aborting the unfinished build of {job}",
                summary="abort the unfinished build",
                options=SHORT_CALL,
            )
            b.result = "ABORTED"
        except ActivityError as err:
            trail.note(s, f"could not abort the build: {cause(err)}")
    pr = s.version_pr
    if pr is not None and not pr.merged and pr.state == "open":
        try:
            s.version_pr = await call(
                s,
                GithubActivities.close_pr,
                PrRefInput(repo=s.plan.settings.configs_repo, number=pr.number),
                what=f"GitHub: closing version PR #{pr.number}",
                summary=f"close version PR #{pr.number}",
                options=SHORT_CALL,
            )
        except ActivityError as err:
            trail.note(s, f"could not close the version PR: {cause(err)}")
    await _give_back_lock(s)
    assert s.outcome is not None
    notices.set_pccr_state(s, "done" if s.outcome is Outcome.SUCCEEDED else s.outcome.value)
    view.publish(s)
    shown = messages.slack_escape(s.reason or "")
    notices.say(s, NoticeKind.THREAD, f"{s.name} ended *{s.outcome.value}*: {shown}")
    notices.close_dms(s, f"This deploy ended *{s.outcome.value}*: {shown}")
    notices.update_root(s, None)
    notices.pccr_comment(s, f"Deploy ended **{s.outcome.value}**: {messages.github_text(s.reason or '')}")
    if s.pccr is not None and s.pccr.backend == "github":
        notices.queue(s, Notice(NoticeKind.PCCR_CLOSE, "", s.step))
