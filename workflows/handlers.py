"""The human steps' handlers: one Update (validated, so a refusal changes nothing) and one Signal of the
same name (a refused Signal is recorded in the audit trail) per action (SPEC §4).

Every action is judged the same way, whichever way it came: its signature first (who sent it,
workflows/trust.py), then the policy (may they do it now, workflows/policy.py). An accepted action lands
in the state's inbox (or its `cancel`) for the step to carry out; every refusal is logged and counted.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows import messages, notices, people, policy, trail, trust, view
from workflows.models import MAX_ID, Action, ActionInput, ActionResult, AuditEntry, Role
from workflows.state import Accepted, DeployState
from workflows.steps import step_def


def register(s: DeployState) -> None:
    """Set the Update and the Signal of every action."""
    for action in Action:
        _register(s, action)


def _register(s: DeployState, action: Action) -> None:
    async def update(payload: Any) -> ActionResult:
        msg = _parse(payload)
        verdict, reason = _judge(s, action, payload, msg)
        if reason:  # another message landed between the validator and this handler
            _refused(s, action, msg, "update", reason, verdict)
            raise ApplicationError(reason, type="Refused", non_retryable=True)
        _accept(s, action, msg, "update", verdict)
        later = ""
        if action is Action.MERGE:  # GitHub's answer is the SRE's answer, unless GitHub says "later"
            await workflow.wait_condition(
                lambda: (
                    s.merge_verdict is not None
                    or s.outcome is not None
                    or s.cancel is not None
                    or s.rate_limited is not None
                )
            )
            if s.merge_verdict:
                raise ApplicationError(s.merge_verdict, type="Refused", non_retryable=True)
            if s.rate_limited:  # cleared before the merge is tried again, so never beside a verdict
                later = f"; {s.rate_limited}"
        return ActionResult(
            accepted=True,
            step=msg.step,
            action=action,
            message=f"{action.value} accepted at {msg.step.value}{later}",
        )

    def validate(payload: Any) -> None:
        try:
            msg = _parse(payload)
        except ApplicationError as err:
            _refusal_seen(s, action, payload, "update", err.message, None)
            raise
        verdict, reason = _judge(s, action, payload, msg)
        if reason:
            _refusal_seen(s, action, payload, "update", reason, verdict)
            raise ApplicationError(reason, type="Refused", non_retryable=True)

    def signal(payload: Any) -> None:
        try:
            msg = _parse(payload)
        except ApplicationError as err:
            actor = payload.get("actor") if isinstance(payload, dict) else None
            _refusal_seen(s, action, payload, "signal", err.message, None)
            trail.record(
                s,
                AuditEntry(
                    time=workflow.now(),
                    step=s.step,
                    action=action.value,
                    actor=policy.one_line(str(actor or "unknown"), MAX_ID),
                    channel="signal",
                    accepted=False,
                    reason=err.message,
                ),
            )
            return
        verdict, reason = _judge(s, action, payload, msg)
        if reason:
            _refused(s, action, msg, "signal", reason, verdict)
        else:
            _accept(s, action, msg, "signal", verdict)

    workflow.set_update_handler(action.value, update, validator=validate)
    workflow.set_signal_handler(action.value, signal)


def _parse(payload: Any) -> ActionInput:
    try:
        return ActionInput.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise ApplicationError(
            policy.one_line(f'bad payload: {where}: {first["msg"]} (send {{"actor": ID, "step": STEP, …}})'),
            type="Refused",
            non_retryable=True,
        ) from None


def _judge(
    s: DeployState, action: Action, payload: Any, msg: ActionInput
) -> tuple[trust.Verdict, str | None]:
    """The signature first (who sent it), then the policy (may they do it now)."""
    if not s.ruled:
        return trust.Verdict(), (
            "the deploy is starting (its rules are being read from the workers' config) or was refused; "
            "check `deployctl status` and retry in a moment"
        )
    verdict = trust.check(payload, view.wid(), action.value, s.keys, workflow.now(), s.nonces)
    if verdict.refusal:
        return verdict, policy.one_line(verdict.refusal)
    return verdict, _refusal(s, action, msg)


def _refusal(s: DeployState, action: Action, msg: ActionInput) -> str | None:
    return policy.refusal(
        action,
        msg,
        policy.Situation(
            service=s.plan.service.name,
            cloud=s.plan.cloud,
            steps=s.steps,
            step=s.step,
            parties=people.parties(s),
            finished=s.outcome is not None,
            busy=s.busy,
            diff_sha256=s.build.diff_sha256,
            pr_diff_sha256=s.pr_diff.diff_sha256 if s.pr_diff is not None else None,
        ),
    )


def _accept(s: DeployState, action: Action, msg: ActionInput, kind: str, verdict: trust.Verdict) -> None:
    trail.record(s, _entry(s, action, msg, kind, accepted=True, verdict=verdict))
    if verdict.nonce:
        s.nonces.add(verdict.nonce)
    _hold(s, action, msg)
    if action is not Action.CANCEL and s.step_started is not None:
        workflow.metric_meter().create_histogram_timedelta(
            "deployctl_step_wait", "time a step waited for its action", unit="duration"
        ).record(workflow.now() - s.step_started, {"step": s.step.value})
    if action is Action.CANCEL:
        s.cancel = Accepted(action, msg)
    else:
        s.inbox = Accepted(action, msg)
        s.busy = True
        if action is Action.MERGE:
            s.merge_verdict = None
    notices.pccr_comment(
        s,
        f"<@{msg.actor}> {action.value.replace('_', ' ')} at `{s.step.value}`"
        + (f" (SRE <@{msg.sre}>)" if msg.sre else "")
        + (f": {messages.github_text(msg.comment)}" if msg.comment else ""),
    )
    view.publish(s)


def _refused(
    s: DeployState, action: Action, msg: ActionInput, kind: str, reason: str, verdict: trust.Verdict
) -> None:
    _refusal_seen(s, action, msg.model_dump(), kind, reason, verdict)
    trail.record(s, _entry(s, action, msg, kind, accepted=False, reason=reason, verdict=verdict))


def _refusal_seen(
    s: DeployState, action: Action, payload: Any, kind: str, reason: str, verdict: trust.Verdict | None
) -> None:
    """Every refusal is visible to operators, a refused Update too (it leaves no history): one JSON log
    line and the `deployctl_refusals{reason}` counter, by kind of reason (SPEC §10)."""
    actor = payload.get("actor") if isinstance(payload, dict) else None
    line = {
        "refused": action.value,
        "via": kind,
        "actor": policy.one_line(str(actor), MAX_ID) if actor is not None else None,
        "step": s.step.value,
        "reason": reason,
        "identity": verdict.identity if verdict else "claimed",
        "workflow_id": view.wid(),
    }
    workflow.logger.warning(json.dumps(line, ensure_ascii=False))
    workflow.metric_meter().create_counter("deployctl_refusals", "actions refused, by kind of reason").add(
        1, {"reason": policy.refusal_kind(reason), "action": action.value}
    )


def _hold(s: DeployState, action: Action, msg: ActionInput) -> None:
    """Whole-chain separation of duties: remember the approving role an accepted action took."""
    defn = step_def(s.steps, s.step)
    if action in (Action.REJECT, Action.CANCEL) or defn is None or defn.actor is None:
        return
    role = policy.APPROVING.get(defn.actor)
    if role is not None:
        s.held.setdefault(msg.actor, role)
    if action is Action.ASSIGN and msg.sre:
        s.held.setdefault(msg.sre, policy.APPROVING[Role.ASSIGNED_SRE])


def _entry(
    s: DeployState,
    action: Action,
    msg: ActionInput,
    kind: str,
    accepted: bool,
    verdict: trust.Verdict,
    reason: str | None = None,
) -> AuditEntry:
    return AuditEntry(
        time=workflow.now(),
        step=s.step,
        action=action.value,
        actor=msg.actor,
        channel=msg.channel or ("temporal" if kind == "update" else "signal"),
        accepted=accepted,
        reason=reason,
        role=_role_of(s, action, msg.actor),
        comment=msg.comment,
        identity=verdict.identity,
        **trail.evidence(verdict, accepted),
    )


def _role_of(s: DeployState, action: Action, actor: str) -> str | None:
    parties = people.parties(s)
    if action is Action.CANCEL:
        return next(
            (r.value for r in (Role.CODE_OWNER, Role.GATEKEEPER) if actor in parties.members(r)), None
        )
    defn = step_def(s.steps, s.step)
    return defn.actor.value if defn and defn.actor and actor in parties.members(defn.actor) else None
