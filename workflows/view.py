"""What everyone sees of a running deploy: its status (the `status` query), what it waits for, and the
Web UI's search attributes and details pane."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows import messages, people, policy
from workflows import search_attributes as sa
from workflows.models import DeployStatus
from workflows.state import DeployState
from workflows.steps import Effect, step_def


def wid() -> str:
    return workflow.info().workflow_id


def link(s: DeployState) -> str:
    return messages.ui_link(s.plan.settings.ui_url, s.plan.settings.namespace, wid())


def pccr_link(s: DeployState) -> str:
    return s.pccr.url if s.pccr else link(s)


def config_sha(s: DeployState) -> str:
    return s.rules.config_sha256 if s.rules else ""


def shown_params(s: DeployState) -> dict[str, str]:
    """The PCCR's parameters as people see them: each password parameter as `(secret, supplied by
    the worker)`."""
    return policy.shown_params(s.plan.params, s.plan.secret_params)


def waiting_for(s: DeployState) -> tuple[str, datetime] | None:
    """One line: what the deploy waits for now, and since when. The outside world first (an activity
    running, then what Jenkins or GitHub show that holds the step up), then the deploy lock, then
    people; None once the deploy has ended."""
    if s.outcome is not None:
        return None
    if s.activity_wait is not None:
        return s.activity_wait
    if s.outside is not None:
        return s.outside
    since = s.step_started or workflow.now()
    if s.blocked_by:
        return (
            f"deploy {s.blocked_by} of {s.plan.service.name} to {s.plan.environment} to end",
            since,
        )
    waiting = people.waiting_on(s)
    defn = step_def(s.steps, s.step)
    if waiting and defn is not None:
        actions = " or ".join(a.value.replace("_", " ") for a in defn.actions)
        return f"{', '.join(waiting)} to {actions} at {s.step.value}", since
    if defn is not None and defn.effect is Effect.WAIT_WINDOW and s.plan.window is not None:
        return f"release window {s.plan.window.name} to open", since
    return None


def status(s: DeployState) -> DeployStatus:
    """Where the deploy stands: what the `status` query answers and the result carries at the end."""
    defn = step_def(s.steps, s.step)
    wait = waiting_for(s)
    return DeployStatus(
        workflow_id=wid(),
        process=s.plan.process,
        cloud=s.plan.cloud if s.ruled else None,
        service=s.plan.service.name,
        environment=s.plan.environment,
        step=s.step,
        waiting_on=people.waiting_on(s),
        allowed_actions=policy.allowed_actions(defn, s.outcome is not None, s.busy),
        pccr=s.pccr,
        build=s.build,
        version=s.plan.version,
        version_pr=s.version_pr.url if s.version_pr else None,
        version_pr_head_sha=s.pr_diff.head_sha if s.pr_diff is not None else None,
        version_pr_diff_sha256=s.pr_diff.diff_sha256 if s.pr_diff is not None else None,
        release_window=s.plan.window,
        blocked_by=s.blocked_by,
        sre=s.sre,
        outcome=s.outcome,
        outcome_reason=s.reason,
        slack_thread=s.thread_ts,
        ui_url=link(s),
        waiting_for=wait[0] if wait else None,
        waiting_since=wait[1] if wait else None,
        rosters=s.rosters,
        config_sha256=config_sha(s) or None,
        secret_params=s.plan.secret_params,
        refused_not_kept=s.refused_dropped,
        audit=s.audit,
    )


def publish(s: DeployState) -> None:
    """Keep the Web UI current: search attributes and the details pane (only when they change)."""
    waiting = people.waiting_on(s)
    outcome = s.outcome.value if s.outcome else None
    now = (s.step, tuple(waiting), outcome, s.build.url, s.thread_ts, s.sre, s.blocked_by)
    if now != s.published:  # an upsert is a command: only when these change (docs/replay.md)
        s.published = now
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.STEP.value_set(s.step.value),
            sa.WAITING_ON.value_set(waiting),
        ]
        if outcome:
            updates.append(sa.OUTCOME.value_set(outcome))
        if s.ruled:  # the cloud as the workers' config says (the start's was the caller's guess)
            updates.append(sa.CLOUD.value_set(s.plan.cloud.value))
        if s.plan.settings.search_attributes:
            workflow.upsert_search_attributes(updates)
    # Text only, not a command: replay is indifferent to it (docs/replay.md).
    workflow.set_current_details("\n\n".join(messages.status_lines(status(s), workflow.now(), "markdown")))
