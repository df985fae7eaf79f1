"""The deploy workflow: one runbook process, walked step by step from the step table.

This module is the Temporal face of a deploy and its step engine: admission by the workers' rules, the
walk over the steps, the wait for each step's action (with its reminder, escalation and expiry), and
the `status` query. Everything else is a function of the deploy's state (workflows/state.py), one module
per job: what a step does once its action is accepted (effects.py), what may finish it outside deployctl
(watchers.py), the human steps' handlers (handlers.py), the notices (notices.py, outbox.py), what the
deploy opens and closes (lifecycle.py), the audit trail (trail.py) and what everyone sees (view.py).
The workflow is the builtin change request: its history is the PCCR's record.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.jenkins import JenkinsActivities
    from activities.rules import RulesActivities
    from workflows import (
        effects,
        handlers,
        lifecycle,
        messages,
        notices,
        people,
        policy,
        trail,
        trust,
        view,
        watchers,
    )
    from workflows.calls import call
    from workflows.lock import LOCK_UPDATE
    from workflows.models import (
        OUTSIDE_EVENT,
        Action,
        AuditEntry,
        Cloud,
        DeployPlan,
        DeployResult,
        DeploySettings,
        DeployStatus,
        JobParametersInput,
        LockUpdate,
        Outcome,
        Pccr,
        Process,
        Role,
        Roster,
        Rules,
        RulesInput,
        ServiceSpec,
        StartIntent,
        Step,
    )
    from workflows.options import SHORT_CALL, cause
    from workflows.outbox import NoticeKind, Outbox
    from workflows.state import Accepted, DeployState
    from workflows.steps import Effect, Shows, StepDef, Watcher, sre_group, step_def, steps_for

#: Characters of JSON of the final status a deploy's result carries (Temporal warns at 512 KiB and refuses
#: 2 MiB); a bigger one (a flood of accepted comments) is left out and the audit reads it as it always did.
RESULT_STATUS_MAX = 256_000
#: Password parameters come from the worker's environment, never from the PCCR (SPEC §10). Deploys
#: started before took them from the params file, and replay by that rule.
PASSWORD_PARAMS_PATCH = "password-params-from-worker"
#: A step's reminder, escalation and expiry, at these fractions of its time.
MARKS = ((0.5, "reminder"), (0.75, "escalation"), (1.0, "expire"))


class How(Enum):
    """How a step that waits on people ended."""

    ACTED = "acted"  # someone acted through deployctl: the accepted action
    EXPIRED = "expired"  # nobody acted in time (or the release window closed): the deploy ended
    IN_JENKINS = "in_jenkins"  # the job's input was answered directly in Jenkins
    ON_GITHUB = "on_github"  # the version PR was merged or closed directly on GitHub


@dataclass(frozen=True)
class StepEnd:
    how: How
    accepted: Accepted | None = None


def _intent(raw: Any) -> tuple[StartIntent | None, str | None]:
    """The start's intent, or why it is not one (the workflow then ends rejected, opening nothing)."""
    try:
        return StartIntent.model_validate(raw), None
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        return None, policy.one_line(f"bad start: {where}: {first['msg']}")


@workflow.defn(name="Deploy")
class DeployWorkflow:
    @workflow.init
    def __init__(self, input: Any) -> None:
        raw: dict[str, Any] = dict(input) if isinstance(input, dict) else {}
        intent, bad_start = _intent(input)
        intent = intent or StartIntent.model_construct(
            process=Process.OOW, service="unknown", environment="unknown", params={}, actor="unknown"
        )
        # Until the workers' rules are read (`_admit`), the deploy is a placeholder that takes no action.
        plan = DeployPlan(
            process=intent.process,
            service=ServiceSpec(name=intent.service, code_owners=(), jenkins_job=""),
            environment=intent.environment,
            cloud=Cloud.COM,
            params=intent.params,
            version=intent.version,
            requested_by=intent.actor,
            settings=DeploySettings(search_attributes=False),
        )
        steps = steps_for(plan.process, Cloud.COM, False)
        self._s = s = DeployState(
            raw=raw,
            intent=intent,
            bad_start=bad_start,
            plan=plan,
            steps=steps,
            step=steps[0].step,
            name=messages.deploy_name(plan.service.name, plan.environment, plan.process),
            outbox=Outbox(lambda notice: notices.start(s, notice)),
        )
        handlers.register(s)

        def lock_update(update: LockUpdate) -> None:  # typed: the SDK converts the payload by the hint
            lifecycle.on_lock_update(s, update)

        workflow.set_signal_handler(LOCK_UPDATE, lock_update)

        def outside_event(payload: Any) -> None:  # untyped: a bad payload is noted, never a failed task
            watchers.on_outside_event(s, payload)

        workflow.set_signal_handler(OUTSIDE_EVENT, outside_event)

    # ------------------------------------------------------------------------------------------ run

    @workflow.run
    async def run(self, input: Any) -> DeployResult:
        s = self._s
        if not await self._admit():
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._result()
        if s.plan.settings.pccr_backend != "github":  # a GitHub PCCR is linked once its issue exists
            s.pccr = Pccr(id=view.wid(), url=view.link(s), params=view.shown_params(s))
        self._metric("deployctl_deploys_started", "deploys started").add(1)
        body = asyncio.create_task(self._process())
        cancelled = asyncio.create_task(workflow.wait_condition(lambda: s.cancel is not None))
        await workflow.wait([body, cancelled], return_when=asyncio.FIRST_COMPLETED)
        if not body.done():
            body.cancel()
            try:
                await body
            except asyncio.CancelledError:
                pass
        else:
            cancelled.cancel()
            if not body.cancelled() and body.exception() is not None:
                raise body.exception()  # type: ignore[misc]
        if s.cancel is not None and s.outcome is None:
            trail.finish(s, Outcome.CANCELLED, f"cancelled by {s.cancel.msg.actor}")
        await lifecycle.close_out(s)
        await workflow.wait_condition(lambda: s.outbox.idle)
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert s.outcome is not None
        self._metric("deployctl_deploys_finished", "deploys finished, by outcome").add(
            1, {"outcome": s.outcome.value}
        )
        return self._result()

    def _result(self) -> DeployResult:
        """The outcome, and the final status (the audit trail with it) when it fits RESULT_STATUS_MAX."""
        s = self._s
        assert s.outcome is not None
        st = view.status(s)
        fits = len(st.model_dump_json()) <= RESULT_STATUS_MAX
        return DeployResult(outcome=s.outcome, reason=s.reason, status=st if fits else None)

    def _metric(self, name: str, description: str) -> Any:
        """A counter on the worker's meter (Prometheus with --metrics-port), labelled by process and cloud."""
        attrs = {"process": self._s.plan.process.value, "cloud": self._s.plan.cloud.value}
        return workflow.metric_meter().with_additional_attributes(attrs).create_counter(name, description)

    @workflow.query(name="status")
    def status(self) -> DeployStatus:
        return view.status(self._s)

    # ---------------------------------------------------------------------------------- admission

    @workflow.update(name="admission")
    async def admission(self) -> str:
        """`deployctl start` waits here for the workers' verdict on the start (SPEC §9): the deploy's
        first line on success; refused (nothing opened) with the reason."""
        s = self._s
        await workflow.wait_condition(lambda: s.admission is not None)
        if s.admission:
            raise ApplicationError(s.admission, type="Refused", non_retryable=True)
        return f"{s.name} admitted by the workers' rules (config sha256 {view.config_sha(s)[:12]}…)"

    async def _admit(self) -> bool:
        """Read the rules from the workers' config, then judge the start: its signature, its requester
        (a code owner of the service, by the workers' config), the versions policy, the release window
        and the job's parameters. A refused start ends `rejected` and opens nothing."""
        s = self._s
        reason = s.bad_start
        if reason is None:
            rules = await self._read_rules()
            # Judged as of the start's arrival: a worker pool that was down for a while ages nothing.
            verdict = trust.check(
                s.raw, view.wid(), "start", s.keys, workflow.info().workflow_start_time, s.nonces
            )
            reason = verdict.refusal or rules.refusal
            if reason is None:
                reason = self._plan(rules)
            if reason is None:
                reason = await self._params_refusal()
            trail.record(
                s,
                AuditEntry(
                    time=workflow.now(),
                    step=s.step,
                    action="start",
                    actor=s.intent.actor,
                    channel=s.intent.channel or "temporal",
                    accepted=reason is None,
                    reason=reason,
                    role=Role.CODE_OWNER.value if reason is None else None,
                    identity=verdict.identity,
                    **trail.evidence(verdict, reason is None),
                ),
            )
            if verdict.nonce:
                s.nonces.add(verdict.nonce)
        if reason is not None:
            trail.finish(s, Outcome.REJECTED, reason)
            s.admission = reason
            return False
        s.ruled, s.admission = True, ""
        return True

    def _plan(self, rules: Rules) -> str | None:
        """Join the intent with the rules: the deploy's plan, or why the start is refused."""
        assert rules.service is not None and rules.cloud is not None
        s, it = self._s, self._s.intent
        reason = policy.start_refusal(
            rules.cloud, rules.service.valkyr, it.version, it.service, it.actor, rules.service.code_owners
        )
        if reason:
            return reason
        window = next_window = None
        if it.process is Process.RELEASE:
            window, why = policy.choose_window(
                rules.windows, it.release, workflow.now(), rules.lead_time_days
            )
            if window is None:
                return why or "no release window"
            next_window = policy.window_after(rules.windows, window)
        elif it.release:
            return "a release window is named, but the process is oow: start release instead"
        s.plan = DeployPlan(
            process=it.process,
            service=rules.service,
            environment=it.environment,
            cloud=rules.cloud,
            params=it.params,
            version=it.version,
            requested_by=it.actor,
            settings=rules.settings,
            window=window,
            next_window=next_window,
        )
        s.steps = steps_for(it.process, rules.cloud, rules.service.valkyr)
        s.step = s.steps[0].step
        return None

    async def _read_rules(self) -> Rules:
        """The rules as the workers' config gives them now; the audit notes what was read, and changes."""
        s = self._s
        rules = await call(
            s,
            RulesActivities.load_rules,
            RulesInput(service=s.intent.service, environment=s.intent.environment),
            what="the workers: reading the rules from their config",
            summary="read the rules from the workers' config",
            options=SHORT_CALL,
        )
        before = s.rules
        s.rules, s.keys = rules, trust.Keys.of(rules)
        if before is None or before.config_sha256 != rules.config_sha256:
            changed_from = before.config_sha256 if before else None
            trail.note(s, messages.rules_line(rules, changed_from=changed_from), action="rules")
        for line in rules.notes:
            trail.note(s, line, action="rules")
        if s.ruled:  # a step opens: its rosters come from the config as it is now
            groups = s.plan.settings.model_copy(update={"groups": rules.settings.groups})
            s.plan = s.plan.model_copy(update={"settings": groups})
        return rules

    async def _params_refusal(self) -> str | None:
        """The PCCR must hold a value for every parameter the job defines (read from the job), except its
        password parameters: those it must not hold (SPEC §10). The deploy keeps their names only; the
        worker that triggers the build reads their values from its environment."""
        s = self._s
        job = s.plan.service.jenkins_job
        defs = await call(
            s,
            JenkinsActivities.job_parameters,
            JobParametersInput(job=job),
            what=f"Jenkins: reading the parameters of job {job}",
            summary=None,
            options=SHORT_CALL,
        )
        passwords = workflow.patched(PASSWORD_PARAMS_PATCH)
        if passwords:
            s.plan = s.plan.model_copy(update={"secret_params": policy.password_names(defs.parameters)})
        return policy.params_refusal(defs.parameters, s.plan.params, job, passwords=passwords)

    # ---------------------------------------------------------------------------------------- steps

    async def _process(self) -> None:
        """The runbook, step by step. Returns when the deploy has an outcome."""
        s = self._s
        try:
            await people.resolve_group(s, Role.GATEKEEPER.value)
            steps = list(s.steps)
            if s.plan.process is Process.RELEASE:
                # Two weeks ahead the owner first finds an SRE; then the PCCR opens.
                if not await self._run_step(steps.pop(0)):
                    return
            await lifecycle.open_pccr(s)
            for defn in steps:
                if not await self._run_step(defn):
                    return
        except ActivityError as err:
            trail.finish(s, Outcome.FAILED, cause(err))

    async def _run_step(self, defn: StepDef) -> bool:
        """One step, from its opening to its end; False when the deploy ended with it."""
        s = self._s
        await self._enter(defn)
        if defn.effect is Effect.WAIT_WINDOW:
            await effects.wait_window(s)
            return s.outcome is None
        if defn.effect is Effect.FOLLOW_BUILD:
            await effects.follow_build(s)
            return False
        while True:
            end = await self._await_action(defn)
            if end.how is How.IN_JENKINS:
                watchers.answered_in_jenkins(s)
                deploying = step_def(s.steps, Step.DEPLOYING)
                assert deploying is not None
                await self._enter(deploying)
                await effects.follow_build(s)
                return False
            if end.accepted is None:  # expired, or merged or closed on GitHub
                return s.outcome is None
            if end.accepted.action is Action.REJECT:
                await effects.reject(s, defn, end.accepted.msg)
                return False
            if await effects.carry_out(s, defn, end.accepted):
                return s.outcome is None
            # The outside world refused the effect: the step waits again.
            s.busy, s.inbox = False, None
            view.publish(s)

    async def _enter(self, defn: StepDef) -> None:
        """A step starts: capture who may act, show it, and ask those people."""
        s = self._s
        s.step, s.busy, s.inbox = defn.step, True, None
        s.step_started = workflow.now()
        s.outside, s.marks = None, 0
        if defn.waits_on_people:  # rosters and keys as the workers' config has them now
            await self._read_rules()
        if defn.actor is not None and defn.actor.value in s.plan.settings.groups:
            await people.resolve_group(s, defn.actor.value)
        if defn.names_sre:
            await people.resolve_group(s, sre_group(s.plan.cloud))
        if defn.shows is Shows.PR_DIFF and s.version_pr is not None:
            await effects.read_pr_diff(s)  # before anyone may merge: the merge is pinned to what is shown
        s.busy = not defn.waits_on_people
        # Once, when the step opens: a refused effect does not reset it.
        s.deadline = self._expiry(defn) if defn.waits_on_people else None
        waiting = people.waiting_on(s)
        s.rosters.append(
            Roster(
                step=defn.step,
                time=workflow.now(),
                eligible=waiting,
                groups={name: list(members) for name, members in sorted(s.groups.items())},
            )
        )
        view.publish(s)
        notices.close_dms(
            s, ""
        )  # buttons of steps that ended without an action here (timer, Jenkins, GitHub)
        notices.ask(s, defn, waiting)
        notices.update_root(s, defn)

    def _expiry(self, defn: StepDef) -> tuple[datetime, str]:
        """When a step that opens now runs out, and what is said then: its timeout, or a closing window."""
        s = self._s
        total = s.plan.settings.timeouts.get(defn.step.value) or defn.timeout
        assert total is not None, f"{defn.step.value} waits on people and has no timeout"
        why = f"nobody acted at {defn.step.value} within {messages.human_duration(total.total_seconds())}"
        window = s.plan.window
        if window is not None and s.window_open and window.end - workflow.now() < total:
            total = max(window.end - workflow.now(), timedelta(seconds=1))
            nxt = s.plan.next_window
            why = f"release window {window.name} closed before {defn.step.value} was done; " + (
                f"the next window is {nxt.name} ({nxt.start:%Y-%m-%d %H:%M} UTC)"
                if nxt
                else "no later window is configured"
            )
        return workflow.now() + total, why

    async def _await_action(self, defn: StepDef) -> StepEnd:
        """Wait for the step's action, reminding at half the step's time and escalating at three quarters;
        how the step ended: acted on, expired, or done directly in Jenkins or on GitHub.

        The marks are fixed when the step opens (`_enter`): waiting again after a refused effect keeps
        them. No `finally` here: when the worker evicts the run, the coroutine is closed at its await, and
        nothing may be awaited then (docs/replay.md); each way out stops the watcher itself."""
        s = self._s
        # The watcher is `s.watcher`, not a local: an outside event (a webhook) may replace it meanwhile
        # (watchers.on_outside_event), and what ends the wait is the current one.
        watchers.start(s, defn)
        try:
            if not await self._wait_marks(defn):
                await self._stop(s)
                return StepEnd(How.EXPIRED)
        except asyncio.CancelledError:  # the deploy was cancelled: so is its watcher (no await here)
            if s.watcher is not None:
                watchers.drop(s.watcher)
            s.watcher = None
            raise
        if s.inbox is not None:
            await self._stop(s)
            return StepEnd(How.ACTED, s.inbox)
        watcher, s.watcher = s.watcher, None
        assert watcher is not None
        await watcher  # it ended True: the step was finished outside deployctl
        return StepEnd(How.IN_JENKINS if defn.watcher is Watcher.JENKINS_INPUT else How.ON_GITHUB)

    async def _wait_marks(self, defn: StepDef) -> bool:
        """Until an action arrives or the watcher ends (True), saying the marks as they pass; False when
        the step expired."""
        s = self._s
        assert s.deadline is not None and s.step_started is not None
        deadline, expiry = s.deadline
        started, total = s.step_started, deadline - s.step_started

        def woken() -> bool:
            return s.inbox is not None or (s.watcher is not None and s.watcher.done())

        while s.marks < len(MARKS):
            fraction, kind = MARKS[s.marks]
            if woken():
                return True
            due = started + total * fraction - workflow.now()
            if due > timedelta(0):  # (a mark that passed while a refused effect ran fires at once)
                try:
                    await workflow.wait_condition(
                        woken, timeout=due, timeout_summary=f"{defn.step.value} {kind}"
                    )
                    return True
                except TimeoutError:
                    pass
            s.marks += 1
            left = messages.human_duration(round((deadline - workflow.now()).total_seconds()))
            if kind == "reminder":
                for user in people.waiting_on(s):
                    notices.say(
                        s, NoticeKind.DM, messages.reminder_text(s.name, defn.step, [user], left), to=user
                    )
            elif kind == "escalation":
                text = messages.escalation_text(s.name, defn.step, people.waiting_on(s), left)
                notices.say(s, NoticeKind.THREAD, text)
            else:
                trail.finish(s, Outcome.EXPIRED, expiry)
                if s.plan.window is not None:
                    for user in s.plan.service.code_owners:
                        notices.say(s, NoticeKind.DM, f"<@{user}> {s.name}: {expiry}.", to=user)
        return False

    @staticmethod
    async def _stop(s: DeployState) -> None:
        """The step is over here: its watcher (an activity polling Jenkins or GitHub) is cancelled."""
        watcher, s.watcher = s.watcher, None
        if watcher is not None and not watcher.done():
            watcher.cancel()
            try:
                await watcher
            except (asyncio.CancelledError, ActivityError):
                pass
