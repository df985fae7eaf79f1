"""The deploy workflow: one runbook process, walked step by step from the step table.

Human steps are Updates (validated, so a refusal changes nothing) and Signals of the same name (a refused
Signal is recorded in the audit trail). Every effect on Jenkins and Slack is an activity. The workflow
is the builtin change request: its history is the PCCR's record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, RetryState

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from activities.github import GithubActivities
    from activities.jenkins import JenkinsActivities
    from activities.locks import LockActivities
    from activities.rules import RulesActivities
    from activities.slack import SlackActivities
    from workflows import messages, policy, slack_blocks, trust
    from workflows import search_attributes as sa
    from workflows.lock import LOCK_UPDATE, lock_id
    from workflows.models import (
        MAX_ID,
        SYSTEM,
        AbortBuildInput,
        Action,
        ActionInput,
        ActionResult,
        AuditEntry,
        BuildInfo,
        BuildResultInput,
        Cloud,
        CommentInput,
        DeployPlan,
        DeployResult,
        DeploySettings,
        DeployStatus,
        InputActionInput,
        InputState,
        JobParametersInput,
        LabelsInput,
        LockCall,
        LockRequest,
        LockUpdate,
        MergePrInput,
        OpenIssueInput,
        OpenVersionPrInput,
        Outcome,
        Pccr,
        PrDiff,
        PrDiffInput,
        Process,
        PrRefInput,
        ReadDiffInput,
        Role,
        Roster,
        Rules,
        RulesInput,
        ServiceSpec,
        SlackPostInput,
        SlackUpdateInput,
        StartIntent,
        Step,
        TriggerBuildInput,
        UsergroupInput,
        VersionPr,
        WaitBuildStartedInput,
        WatchInputInput,
    )
    from workflows.outbox import Notice, NoticeKind, Outbox
    from workflows.steps import StepDef, sre_group, step_def, steps_for, triage_group

DEFAULT_TIMEOUT = timedelta(days=1)
MAX_REFUSED = (
    200  # refused actions kept in the audit trail; more are only counted (status `refused_not_kept`)
)
#: Characters of JSON of the final status a deploy's result carries (Temporal warns at 512 KiB and refuses
#: 2 MiB); a bigger one (a flood of accepted comments) is left out and the audit reads it as it always did.
RESULT_STATUS_MAX = 256_000
DIFF_SHOWN = 2500  # characters of the diff in the owner's DM (a section block holds at most 3,000)
#: Password parameters come from the worker's environment, never from the PCCR (SPEC §10). Deploys
#: started before took them from the params file, and replay by that rule.
PASSWORD_PARAMS_PATCH = "password-params-from-worker"
PR_DIFF_READ = 3000  # characters of the version PR's diff read for the SRE's DM (one section's worth)
#: After the version PR's branch moved, the root message's merge button is drawn again with the new
#: diff's sha256 (its old one would be refused as stale). Deploys that passed that point before replay
#: without the extra notice.
ROOT_AFTER_MOVE_PATCH = "root-redrawn-after-branch-move"

# The activity option sets, named by what they are (not by the system they talk to).
# A short call (Jenkins, GitHub, the deploy lock): retried with backoff for up to 30 minutes, then the
# deploy fails with the system's reason.
SHORT_CALL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "schedule_to_close_timeout": timedelta(minutes=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
    ),
}
# A long poll (a queue, a console, an input, a result, a PR): polls inside and heartbeats on every poll
# (well inside the heartbeat timeout), so a dead worker's attempt is retried within seconds, not hours.
LONG_POLL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(hours=12),
    "heartbeat_timeout": timedelta(seconds=10),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
    ),
}
# After this many failed tries of a short call or a long poll, the deploy says in its thread, once, what
# it waits for and why (status `waiting_for` says it all along); the activity goes on retrying.
QUIET_TRIES = 4
# A best-effort notice (Slack, the PCCR issue's comments and labels): never blocks a deploy; a few tries,
# then a note in the audit trail.
NOTICE: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=20),
    "schedule_to_close_timeout": timedelta(minutes=3),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=6
    ),
}


@dataclass
class _Accepted:
    action: Action
    msg: ActionInput


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
        self._raw: dict[str, Any] = dict(input) if isinstance(input, dict) else {}
        intent, self._bad_start = _intent(input)
        self._intent = intent or StartIntent.model_construct(
            process=Process.OOW, service="unknown", environment="unknown", params={}, actor="unknown"
        )
        # Until the workers' rules are read (`_admit`), the deploy is a placeholder that takes no action.
        self._in = DeployPlan(
            process=self._intent.process,
            service=ServiceSpec(name=self._intent.service, code_owners=(), jenkins_job=""),
            environment=self._intent.environment,
            cloud=Cloud.COM,
            params=self._intent.params,
            version=self._intent.version,
            requested_by=self._intent.actor,
            settings=DeploySettings(search_attributes=False),
        )
        self._ruled = False  # the rules are read and the start admitted
        self._admission: str | None = None  # "" admitted; else why the start was refused
        self._rules: Rules | None = None
        self._keys = trust.Keys(people={}, bridge=())
        self._nonces: set[str] = set()
        self._refused_kept = self._refused_dropped = 0
        self._held: dict[str, str] = {}  # person → the approving role they held in this deploy
        self._steps = steps_for(self._in.process, Cloud.COM, False)
        self._step: Step = self._steps[0].step
        self._busy = True  # no step takes actions until _enter opens it
        self._inbox: _Accepted | None = None
        self._cancel: _Accepted | None = None
        self._outcome: Outcome | None = None
        self._reason: str | None = None
        self._groups: dict[str, tuple[str, ...]] = {}
        self._sre: str | None = None
        self._audit: list[AuditEntry] = []
        self._rosters: list[Roster] = []
        self._build = BuildInfo()
        self._pccr: Pccr | None = None
        self._thread_ts: str | None = None
        self._outbox = Outbox(self._start_notice)  # the notices, sent one at a time (workflows/outbox.py)
        self._window_open = False
        self._lock = "none"  # none | requested | granted
        self._blocked_by: str | None = None
        self._version_pr: VersionPr | None = None
        self._merge_verdict: str | None = None  # "" merged; else GitHub's reason for refusing
        self._pr_diff: PrDiff | None = None  # the PR's head and diff the SRE was shown; merged at that sha
        self._pccr_ops = 0
        self._triage_text = ""
        self._step_started: Any = None
        self._deadline: tuple[datetime, str] | None = None  # the open step's expiry and its reason, set once
        self._marks = 0  # how many of the step's reminder, escalation and expiry have passed
        # What the deploy waits for on the outside world (status `waiting_for`): the activity running now,
        # then what Jenkins or GitHub show that holds the step up; each with the time it began.
        self._activity_wait: tuple[str, datetime] | None = None
        self._outside: tuple[str, datetime] | None = None
        self._jenkins_answer: str | None = None  # who answered the input in Jenkins, as the console says
        self._input_seen: tuple[InputState, str] = (
            "pending",
            "",
        )  # deploy_approval: the input as last reported
        self._published: tuple[Any, ...] = ()
        self._name = messages.deploy_name(self._in.service.name, self._in.environment, self._in.process)
        for action in Action:
            self._register(action)
        workflow.set_signal_handler(LOCK_UPDATE, self._on_lock_update)

    # ------------------------------------------------------------------------------------------ run

    @workflow.run
    async def run(self, input: Any) -> DeployResult:
        if not await self._admit():
            await workflow.wait_condition(workflow.all_handlers_finished)
            assert self._outcome is not None
            return self._result()
        if self._in.settings.pccr_backend != "github":  # a GitHub PCCR is linked once its issue exists
            self._pccr = Pccr(id=workflow.info().workflow_id, url=self._link(), params=self._shown_params())
        self._metric("deployctl_deploys_started", "deploys started").add(1)
        body = asyncio.create_task(self._process())
        cancelled = asyncio.create_task(workflow.wait_condition(lambda: self._cancel is not None))
        await workflow.wait([body, cancelled], return_when=asyncio.FIRST_COMPLETED)
        if not body.done():
            body.cancel()
            try:
                await body
            except asyncio.CancelledError:
                pass
        else:
            cancelled.cancel()
            self._raise_if_broken(body)
        if self._cancel is not None and self._outcome is None:
            self._finish(Outcome.CANCELLED, f"cancelled by {self._cancel.msg.actor}")
        await self._close_out()
        await workflow.wait_condition(lambda: self._outbox.idle)
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._outcome is not None
        self._metric("deployctl_deploys_finished", "deploys finished, by outcome").add(
            1, {"outcome": self._outcome.value}
        )
        return self._result()

    def _result(self) -> DeployResult:
        """The outcome, and the final status (the audit trail with it) when it fits RESULT_STATUS_MAX."""
        assert self._outcome is not None
        st = self.status()
        fits = len(st.model_dump_json()) <= RESULT_STATUS_MAX
        return DeployResult(outcome=self._outcome, reason=self._reason, status=st if fits else None)

    def _metric(self, name: str, description: str) -> Any:
        """A counter on the worker's meter (Prometheus with --metrics-port), labelled by process and cloud."""
        return (
            workflow.metric_meter()
            .with_additional_attributes({"process": self._in.process.value, "cloud": self._in.cloud.value})
            .create_counter(name, description)
        )

    @staticmethod
    def _raise_if_broken(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    # ---------------------------------------------------------------------------------- admission

    @workflow.update(name="admission")
    async def admission(self) -> str:
        """`deployctl start` waits here for the workers' verdict on the start (SPEC §9): the deploy's
        first line on success; refused (nothing opened) with the reason."""
        await workflow.wait_condition(lambda: self._admission is not None)
        if self._admission:
            raise ApplicationError(self._admission, type="Refused", non_retryable=True)
        return f"{self._name} admitted by the workers' rules (config sha256 {self._config_sha()[:12]}…)"

    async def _admit(self) -> bool:
        """Read the rules from the workers' config, then judge the start: its signature, its requester
        (a code owner of the service, by the workers' config), the versions policy, the release window
        and the job's parameters. A refused start ends `rejected` and opens nothing."""
        reason = self._bad_start
        if reason is None:
            rules = await self._read_rules()
            # Judged as of the start's arrival: a worker pool that was down for a while ages nothing.
            verdict = trust.check(
                self._raw, self._wid(), "start", self._keys, workflow.info().workflow_start_time, self._nonces
            )
            reason = verdict.refusal or rules.refusal
            if reason is None:
                reason = self._plan(rules)
            if reason is None:
                reason = await self._params_refusal()
            self._record(
                AuditEntry(
                    time=workflow.now(),
                    step=self._step,
                    action="start",
                    actor=self._intent.actor,
                    channel=self._intent.channel or "temporal",
                    accepted=reason is None,
                    reason=reason,
                    role=Role.CODE_OWNER.value if reason is None else None,
                    identity=verdict.identity,
                    **self._evidence(verdict, reason is None),
                )
            )
            if verdict.nonce:
                self._nonces.add(verdict.nonce)
        if reason is not None:
            self._finish(Outcome.REJECTED, reason)
            self._admission = reason
            return False
        self._ruled, self._admission = True, ""
        return True

    def _plan(self, rules: Rules) -> str | None:
        """Join the intent with the rules: the deploy's plan, or why the start is refused."""
        assert rules.service is not None and rules.cloud is not None
        it = self._intent
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
        self._in = DeployPlan(
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
        self._steps = steps_for(it.process, rules.cloud, rules.service.valkyr)
        self._step = self._steps[0].step
        return None

    async def _read_rules(self) -> Rules:
        """The rules as the workers' config gives them now; the audit notes what was read, and changes."""
        rules = await self._call(
            RulesActivities.load_rules,
            RulesInput(service=self._intent.service, environment=self._intent.environment),
            what="the workers: reading the rules from their config",
            summary="read the rules from the workers' config",
            options=SHORT_CALL,
        )
        before = self._rules
        self._rules, self._keys = rules, trust.Keys.of(rules)
        if before is None or before.config_sha256 != rules.config_sha256:
            self._note(
                messages.rules_line(rules, changed_from=before.config_sha256 if before else None),
                action="rules",
            )
        for line in rules.notes:
            self._note(line, action="rules")
        if self._ruled:  # a step opens: its rosters come from the config as it is now
            self._in = self._in.model_copy(
                update={"settings": self._in.settings.model_copy(update={"groups": rules.settings.groups})}
            )
        return rules

    def _config_sha(self) -> str:
        return self._rules.config_sha256 if self._rules else ""

    async def _params_refusal(self) -> str | None:
        """The PCCR must hold a value for every parameter the job defines (read from the job), except its
        password parameters: those it must not hold (SPEC §10). The deploy keeps their names only; the
        worker that triggers the build reads their values from its environment."""
        job = self._in.service.jenkins_job
        defs = await self._call(
            JenkinsActivities.job_parameters,
            JobParametersInput(job=job),
            what=f"Jenkins: reading the parameters of job {job}",
            summary=None,
            options=SHORT_CALL,
        )
        passwords = workflow.patched(PASSWORD_PARAMS_PATCH)
        if passwords:
            self._in = self._in.model_copy(update={"secret_params": policy.password_names(defs.parameters)})
        return policy.params_refusal(defs.parameters, self._in.params, job, passwords=passwords)

    def _shown_params(self) -> dict[str, str]:
        """The PCCR's parameters as people see them: each password parameter as `(secret, supplied by
        the worker)`."""
        return policy.shown_params(self._in.params, self._in.secret_params)

    @staticmethod
    def _evidence(verdict: trust.Verdict, accepted: bool) -> dict[str, Any]:
        """What an accepted signed entry keeps so anyone can check it again (`deployctl verify`)."""
        if not accepted or verdict.body is None:
            return {}
        return {"payload": verdict.body, "signature": verdict.signature, "key": verdict.key}

    async def _process(self) -> None:
        """The runbook, step by step. Returns when the deploy has an outcome."""
        try:
            await self._resolve_group(Role.GATEKEEPER.value)
            steps = list(self._steps)
            if self._in.process is Process.RELEASE:
                # Two weeks ahead the owner first finds an SRE; then the PCCR opens.
                if not await self._run_step(steps.pop(0)):
                    return
            await self._open_pccr()
            for defn in steps:
                if not await self._run_step(defn):
                    return
        except ActivityError as err:
            self._finish(Outcome.FAILED, _cause(err))

    async def _open_pccr(self) -> None:
        """[gov: the version PR] → the PCCR → the triage message mentioning who reviews it."""
        if self._in.cloud is Cloud.GOV:
            await self._open_version_pr()
        if self._in.settings.pccr_backend == "github":
            await self._open_pccr_issue()
        window = self._in.window
        group = Role.GATEKEEPER.value if window else triage_group(self._in.cloud)
        await self._resolve_group(group)
        spec = self._in.settings.groups.get(group)
        mention = spec.mention() if spec else ""
        if window is not None:
            text = messages.acceptance_text(mention, window.name, self._pccr_link())
        else:
            text = messages.triage_text(self._in.cloud, mention, self._pccr_link())
        self._triage_text = text
        self._say(NoticeKind.ROOT, text)

    async def _open_version_pr(self) -> None:
        s, svc = self._in.settings, self._in.service.name
        assert self._in.version is not None
        self._version_pr = await self._call(
            GithubActivities.open_version_pr,
            OpenVersionPrInput(
                repo=s.configs_repo,
                base_branch=s.base_branch,
                path=s.version_file.replace("{service}", svc),
                version=self._in.version,
                branch=f"deployctl/{self._wid()}",
                title=f"{svc}: deploy version {self._in.version} to {self._in.environment}",
                body=f"Version PR of deploy {self._wid()}: {self._link()}",
            ),
            what=f"GitHub: opening the version PR in {s.configs_repo}",
            summary=f"open the version PR for {svc} {self._in.version}",
            options=SHORT_CALL,
        )
        self._say(NoticeKind.THREAD, f"Version PR: {self._version_pr.url}")
        self._publish()

    async def _open_pccr_issue(self) -> None:
        s = self._in.settings
        assert s.pccr_repo
        params = "\n".join(
            f"{k}: {v if k in self._in.secret_params else json.dumps(v)}"
            for k, v in sorted(self._shown_params().items())
        )
        body = "\n".join(
            [
                f"PCCR for {self._name} ({self._in.cloud.value}-cloud), opened by <@{self._in.requested_by}>.",
                f"Jenkins job `{self._in.service.jenkins_job}` with exactly these parameters:",
                "```yaml",
                params,
                "```",
                f"Version PR: {self._version_pr.url}" if self._version_pr else "",
                f"Deploy: {self._link()}",
            ]
        )
        issue = await self._call(
            GithubActivities.open_pccr_issue,
            OpenIssueInput(
                repo=s.pccr_repo,
                title=f"PCCR: {self._name}",
                body=body,
                labels=["pending-review"],
                marker=self._wid(),
            ),
            what=f"GitHub: opening the PCCR issue in {s.pccr_repo}",
            summary="open the PCCR issue",
            options=SHORT_CALL,
        )
        self._pccr = Pccr(
            id=f"{s.pccr_repo}#{issue.number}",
            url=issue.url,
            params=self._shown_params(),
            backend="github",
            number=issue.number,
        )
        self._publish()

    async def _run_step(self, defn: StepDef) -> bool:
        await self._enter(defn)
        if defn.step is Step.RELEASE_WINDOW_WAIT:
            await self._wait_for_window()
            return self._outcome is None
        if defn.step is Step.DEPLOYING:
            await self._deploying()
            return False
        while True:
            accepted = await self._await_action(defn)
            if accepted is None:
                return self._outcome is None  # expired, or done directly in Jenkins or on GitHub
            if accepted.action is Action.REJECT:
                await self._on_reject(defn, accepted.msg)
                return False
            if await self._effect(defn, accepted):
                return self._outcome is None
            # The outside world refused the effect: the step waits again.
            self._busy, self._inbox = False, None
            self._publish()

    def _watcher(self, defn: StepDef) -> asyncio.Task[bool] | None:
        """What may finish a step outside deployctl: the input answered in Jenkins, the PR merged on GitHub.
        The task ends True when it did."""
        if defn.step is Step.DEPLOY_APPROVAL:
            return asyncio.create_task(self._watch_input())
        if defn.step is Step.VERSION_PR_MERGE and self._version_pr is not None:
            return asyncio.create_task(self._watch_pr())
        return None

    async def _watch_pr(self) -> bool:
        assert self._version_pr is not None
        pr = await self._call(
            GithubActivities.watch_pr,
            PrRefInput(repo=self._in.settings.configs_repo, number=self._version_pr.number),
            what=f"GitHub: watching version PR #{self._version_pr.number}",
            summary="watch the version PR on GitHub",
            options=LONG_POLL,
            shown=False,
            cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
        )
        self._version_pr = pr
        merged = pr.merged
        actor, identity, why = self._out_of_band("github", pr.merged_by)
        if not merged:
            why = None  # a close ends the deploy; it approves nothing
        self._record(
            AuditEntry(
                time=workflow.now(),
                step=self._step,
                action="merged_on_github" if merged else "closed_on_github",
                actor=actor if merged else (pr.merged_by or "github"),
                channel="github",
                accepted=True,
                reason=f"version PR #{pr.number} was {'merged' if merged else 'closed'} directly on GitHub"
                + (f"; {why}" if why else ""),
                identity=identity,
                out_of_policy=why is not None,
            )
        )
        self._say(
            NoticeKind.THREAD,
            f"Version PR {pr.url} was {'merged' if merged else 'closed'} directly on GitHub"
            + (f" by {messages.slack_escape(pr.merged_by)}" if merged and pr.merged_by else "")
            + "."
            + (f" :warning: {messages.slack_escape(why)}." if why else ""),
        )
        if not merged:
            self._finish(
                Outcome.CANCELLED, f"the version PR #{pr.number} was closed on GitHub without merging"
            )
        return True

    # ---------------------------------------------------------------------------------------- steps

    async def _enter(self, defn: StepDef) -> None:
        """A step starts: capture who may act, show it, and ask those people."""
        self._step, self._busy, self._inbox = defn.step, True, None
        self._step_started = workflow.now()
        self._outside, self._marks = None, 0
        if defn.waits_on_people:  # rosters and keys as the workers' config has them now
            await self._read_rules()
        if defn.actor is not None and defn.actor.value in self._in.settings.groups:
            await self._resolve_group(defn.actor.value)
        if defn.step is Step.SRE_ASSIGNMENT:
            await self._resolve_group(sre_group(self._in.cloud))
        if defn.step is Step.VERSION_PR_MERGE and self._version_pr is not None:
            await self._read_pr_diff()  # before anyone may merge: the merge is pinned to what is shown
        self._busy = not defn.waits_on_people
        self._deadline = self._expiry(defn)  # once, when the step opens: a refused effect does not reset it
        waiting = self._waiting_on()
        self._rosters.append(
            Roster(
                step=defn.step,
                time=workflow.now(),
                eligible=waiting,
                groups={name: list(members) for name, members in sorted(self._groups.items())},
            )
        )
        self._publish()
        self._close_dms("")  # buttons of steps that ended without an action here (timer, Jenkins, GitHub)
        self._ask(defn, waiting)
        self._update_root(defn)

    def _ask(self, defn: StepDef, waiting: list[str]) -> None:
        """A DM with the step's buttons to each person it waits on."""
        for user in waiting:
            detail = self._detail(defn)
            blocks = slack_blocks.action_blocks(
                messages.ask_text(self._name, self._wid(), defn, user, self._link()),
                self._wid(),
                defn.step,
                defn.actions,
                detail,
                users=self._groups.get(sre_group(self._in.cloud), ())
                if defn.step is Step.SRE_ASSIGNMENT
                else (),
                diff_sha256=self._bound_sha256(defn.step),
            )
            text = messages.ask_text(
                self._name, self._wid(), defn, user, self._link(), detail, self._bound_sha256(defn.step)
            )
            self._queue(Notice(NoticeKind.DM, text, defn.step, to=user, blocks=blocks))

    def _bound_sha256(self, step: Step) -> str | None:
        """The sha256 of the diff a step's DM shows, which its button carries and the workflow checks:
        the build's at diff_validation, the version PR's at version_pr_merge (SPEC §4, §10)."""
        if step is Step.DIFF_VALIDATION:
            return self._build.diff_sha256
        if step is Step.VERSION_PR_MERGE and self._pr_diff is not None:
            return self._pr_diff.diff_sha256
        return None

    def _detail(self, defn: StepDef) -> str:
        b = self._build
        if defn.step in (Step.PCCR_REVIEW, Step.RELEASE_ACCEPTANCE, Step.VP_APPROVAL):
            return messages.params_detail(
                self._in.service.jenkins_job, self._shown_params(), self._in.version
            )
        if defn.step is Step.DIFF_VALIDATION and b.diff is not None:
            return messages.diff_detail(b.number, b.url, b.diff, b.diff_sha256, DIFF_SHOWN)
        if defn.step is Step.DEPLOY_APPROVAL:
            return f"The deploy job waits for your approval: {b.url} (diff sha256 `{b.diff_sha256}`)"
        if defn.step is Step.VERSION_PR_MERGE and self._pr_diff is not None and self._version_pr is not None:
            return messages.pr_diff_detail(self._version_pr.number, self._version_pr.url, self._pr_diff)
        return ""

    async def _wait_for_window(self) -> None:
        """A durable timer until the release window opens, with a reminder a day before."""
        window = self._in.window
        assert window is not None
        reminder_at = window.start - timedelta(days=1)
        if workflow.now() < reminder_at:
            await workflow.sleep(reminder_at - workflow.now(), summary="until a day before the window")
            for user in (*self._in.service.code_owners, *([self._sre] if self._sre else [])):
                self._say(
                    NoticeKind.DM,
                    messages.window_reminder_text(self._name, window.name, window.start, user),
                    to=user,
                )
        if workflow.now() < window.start:
            await workflow.sleep(window.start - workflow.now(), summary=f"until window {window.name} opens")
        self._window_open = True
        self._say(
            NoticeKind.THREAD, f"Release window {window.name} is open until {window.end:%Y-%m-%d %H:%M} UTC."
        )

    def _expiry(self, defn: StepDef) -> tuple[datetime, str]:
        """When a step that opens now runs out, and what is said then: its timeout, or a closing window."""
        total = self._in.settings.timeouts.get(defn.step.value, DEFAULT_TIMEOUT)
        why = f"nobody acted at {defn.step.value} within {messages.human_duration(total.total_seconds())}"
        window = self._in.window
        if window is not None and self._window_open and window.end - workflow.now() < total:
            total = max(window.end - workflow.now(), timedelta(seconds=1))
            nxt = self._in.next_window
            why = f"release window {window.name} closed before {defn.step.value} was done; " + (
                f"the next window is {nxt.name} ({nxt.start:%Y-%m-%d %H:%M} UTC)"
                if nxt
                else "no later window is configured"
            )
        return workflow.now() + total, why

    async def _await_action(self, defn: StepDef) -> _Accepted | None:
        """Wait for the step's action, reminding at half the step's time and escalating at three quarters.

        The marks are fixed when the step opens (`_enter`): waiting again after a refused effect keeps
        them. None when the step ended otherwise: expired, or done directly in Jenkins or on GitHub.
        No `finally` here: when the worker evicts the run, the coroutine is closed at its await, and
        nothing may be awaited then (docs/replay.md); each way out stops the watcher itself."""
        watcher = self._watcher(defn)
        try:
            if not await self._wait_marks(defn, watcher):
                await self._stop(watcher)
                return None  # expired
        except asyncio.CancelledError:  # the deploy was cancelled: so is its watcher (no await here)
            if watcher is not None:
                watcher.cancel()
            raise
        if self._inbox is not None:
            await self._stop(watcher)
            return self._inbox
        assert watcher is not None
        if await watcher and defn.step is Step.DEPLOY_APPROVAL:
            await self._answered_in_jenkins()
        return None

    async def _wait_marks(self, defn: StepDef, watcher: asyncio.Task[bool] | None) -> bool:
        """Until an action arrives or the watcher ends (True), saying the marks as they pass; False when
        the step expired."""
        assert self._deadline is not None and self._step_started is not None
        deadline, expiry = self._deadline
        total = deadline - self._step_started
        marks = ((0.5, "reminder"), (0.75, "escalation"), (1.0, "expire"))
        while self._marks < len(marks):
            fraction, kind = marks[self._marks]
            if self._inbox is not None or (watcher is not None and watcher.done()):
                return True
            due = self._step_started + total * fraction - workflow.now()
            if due > timedelta(0):  # (a mark that passed while a refused effect ran fires at once)
                try:
                    await workflow.wait_condition(
                        lambda: self._inbox is not None or (watcher is not None and watcher.done()),
                        timeout=due,
                        timeout_summary=f"{defn.step.value} {kind}",
                    )
                    return True
                except TimeoutError:
                    pass
            self._marks += 1
            left = messages.human_duration(round((deadline - workflow.now()).total_seconds()))
            if kind == "reminder":
                for user in self._waiting_on():
                    self._say(
                        NoticeKind.DM, messages.reminder_text(self._name, defn.step, [user], left), to=user
                    )
            elif kind == "escalation":
                self._say(
                    NoticeKind.THREAD,
                    messages.escalation_text(self._name, defn.step, self._waiting_on(), left),
                )
            else:
                self._finish(Outcome.EXPIRED, expiry)
                if self._in.window is not None:
                    for user in self._in.service.code_owners:
                        self._say(NoticeKind.DM, f"<@{user}> {self._name}: {expiry}.", to=user)
        return False

    @staticmethod
    async def _stop(watcher: asyncio.Task[bool] | None) -> None:
        """The step is over here: its watcher (an activity polling Jenkins or GitHub) is cancelled."""
        if watcher is not None and not watcher.done():
            watcher.cancel()
            try:
                await watcher
            except (asyncio.CancelledError, ActivityError):
                pass

    async def _effect(self, defn: StepDef, accepted: _Accepted) -> bool:
        """Carry out an accepted action. False when the outside world refused it (the step waits again).
        The step's DMs are closed only once the effect is done."""
        msg = accepted.msg
        if defn.step is Step.VERSION_PR_MERGE:
            done = await self._merge(defn, msg)
        else:
            self._say(
                NoticeKind.THREAD,
                f"`{defn.step.value}`: <@{msg.actor}> {accepted.action.value.replace('_', ' ')}"
                + (f" <@{msg.sre}>" if msg.sre else "")
                + (f" — {messages.slack_escape(msg.comment)}" if msg.comment else ""),
            )
            done = True
            if defn.step is Step.VP_APPROVAL and self._pccr is not None:
                self._pccr = self._pccr.model_copy(update={"vp_approved_by": msg.actor})
            elif defn.step is Step.PCCR_REVIEW:
                self._set_pccr_state("approved")
            elif defn.step is Step.RELEASE_ACCEPTANCE:
                self._set_pccr_state("accepted-for-release")
            elif defn.step is Step.SRE_ASSIGNMENT:
                self._sre = msg.sre
            elif defn.step is Step.TRIGGER:
                await self._trigger()
            elif defn.step is Step.DEPLOY_APPROVAL:
                done = await self._answer_input("proceed", msg.actor)
        if done:
            self._close_dms(
                slack_blocks.done_text(msg.actor, defn.step, accepted.action, workflow.now(), sre=msg.sre)
            )
        return done

    def _refused_effect(self, action: Action, reason: str) -> None:
        """The outside world refused what was accepted: the audit says so next to the request, the thread
        hears it, and status waits on it until someone acts again."""
        asked = next(e for e in reversed(self._audit) if e.action == action.value and e.accepted)
        self._record(asked.model_copy(update={"time": workflow.now(), "accepted": False, "reason": reason}))
        self._say(NoticeKind.THREAD, f"`{self._step.value}`: {messages.slack_escape(reason)}")
        self._outside = (reason, workflow.now())

    async def _read_pr_diff(self) -> None:
        """The version PR's head and its diff, as the SRE's DM shows them and the merge is pinned to."""
        assert self._version_pr is not None
        n = self._version_pr.number
        self._pr_diff = diff = await self._call(
            GithubActivities.pr_diff,
            PrDiffInput(repo=self._in.settings.configs_repo, number=n, limit=PR_DIFF_READ),
            what=f"GitHub: reading the diff of version PR #{n}",
            summary=f"read the diff of version PR #{n}",
            options=SHORT_CALL,
        )
        self._version_pr = self._version_pr.model_copy(update={"head_sha": diff.head_sha})

    async def _merge(self, defn: StepDef, msg: ActionInput) -> bool:
        """The SRE's merge: through GitHub's API, at the head sha the SRE was shown (SPEC §10). GitHub's
        refusal is the SRE's refusal, and the step waits; if the branch moved, the SRE is shown the new
        head and its diff (the step's deadline stays)."""
        assert self._version_pr is not None
        pinned = self._pr_diff.head_sha if self._pr_diff is not None else None
        result = await self._call(
            GithubActivities.merge_pr,
            MergePrInput(
                repo=self._in.settings.configs_repo,
                number=self._version_pr.number,
                sha=pinned,
                title=f"{self._in.service.name}: version {self._in.version} ({self._wid()})",
            ),
            what=f"GitHub: merging version PR #{self._version_pr.number} for {msg.actor}",
            summary=f"merge version PR #{self._version_pr.number} for {msg.actor}",
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
            self._refused_effect(Action.MERGE, reason)
            self._merge_verdict = reason
            if moved:
                await self._review_again(defn, pinned or "")
            return False
        self._outside = None
        self._version_pr = self._version_pr.model_copy(update={"merged": True, "state": "closed"})
        if result.already_merged:
            self._note(f"the version PR was already merged on GitHub by {result.merged_by or 'someone'}")
        self._say(NoticeKind.THREAD, f"`version_pr_merge`: <@{msg.actor}> merged {self._version_pr.url}")
        self._merge_verdict = ""
        return True

    async def _review_again(self, defn: StepDef, old: str) -> None:
        """The version PR's branch moved after the SRE was shown it: read the new head and diff, take the
        buttons off the DMs that show the old one, and ask again with the new one."""
        await self._read_pr_diff()
        new = self._pr_diff.head_sha if self._pr_diff is not None else "?"
        self._close_dms(
            f":warning: The version PR's branch moved after this was sent (from `{old[:12]}` to "
            f"`{new[:12]}`) and nothing was merged. Its new diff is in the next message."
        )
        eligible = policy.eligible(defn, self._parties())
        self._ask(defn, eligible)
        if workflow.patched(ROOT_AFTER_MOVE_PATCH):
            # the merge is still being handled (nobody counts as waited on yet): draw who is asked again
            self._update_root(defn, waiting=eligible)

    async def _on_reject(self, defn: StepDef, msg: ActionInput) -> None:
        self._close_dms(slack_blocks.done_text(msg.actor, defn.step, Action.REJECT, workflow.now()))
        why = f"rejected at {defn.step.value} by {msg.actor}" + (f": {msg.comment}" if msg.comment else "")
        if defn.step is Step.DEPLOY_APPROVAL:
            await self._answer_input("abort", msg.actor)
        self._finish(Outcome.REJECTED, why)

    async def _take_lock(self) -> None:
        """Past `trigger`, one deploy at a time per service and environment: wait for our turn."""
        self._lock = "requested"
        await self._call(
            LockActivities.request_lock,
            LockCall(service=self._in.service.name, environment=self._in.environment, deploy_id=self._wid()),
            what=f"Temporal: asking for the {self._in.service.name}/{self._in.environment} deploy lock",
            summary=f"ask for the {self._in.service.name}/{self._in.environment} deploy lock",
            options=SHORT_CALL,
        )
        await workflow.wait_condition(lambda: self._lock == "granted")

    def _on_lock_update(self, update: LockUpdate) -> None:
        if self._lock == "none":
            return
        if update.granted:
            self._lock, self._blocked_by = "granted", None
        elif update.holder != self._blocked_by:
            self._blocked_by = update.holder
            self._say(
                NoticeKind.THREAD,
                f"Waiting for deploy {update.holder} of the same service and environment to end.",
            )
        self._publish()

    async def _give_back_lock(self) -> None:
        if self._lock == "none":
            return
        try:
            await workflow.get_external_workflow_handle(
                lock_id(self._in.service.name, self._in.environment)
            ).signal("release", LockRequest(deploy_id=self._wid()))
        except FailureError as err:
            self._note(f"could not give back the deploy lock: {err}")
        self._lock = "none"

    async def _trigger(self) -> None:
        """Start the job with exactly the PCCR's parameters, once; then read its diff."""
        job = self._in.service.jenkins_job
        await self._take_lock()
        baseline = await self._call(
            JenkinsActivities.trigger_baseline,
            JobParametersInput(job=job),
            what=f"Jenkins: reading the builds of {job} before triggering it",
            summary=f"note the builds of {job} before triggering",
            options=SHORT_CALL,
        )
        started = await self._call(
            JenkinsActivities.trigger_build,
            TriggerBuildInput(
                job=job,
                params=self._in.params,
                secret_params=self._in.secret_params,  # names: the worker reads the values
                not_before=workflow.now(),
                baseline=baseline,
            ),
            what=f"Jenkins: triggering {job}",
            summary=f"trigger {job}",
            options=SHORT_CALL,
        )
        self._build.queue_id = started.queue_id
        if started.number is None:
            assert started.queue_id is not None
            ref = await self._call(
                JenkinsActivities.wait_build_started,
                WaitBuildStartedInput(job=job, queue_id=started.queue_id),
                what=f"Jenkins: {job} is queued (item {started.queue_id}), waiting for an executor",
                summary=f"wait for {job} to leave the queue",
                options=LONG_POLL,
            )
            self._build.number, self._build.url = ref.number, ref.url
        else:
            self._build.number, self._build.url = started.number, started.url
        self._publish()
        self._say(NoticeKind.THREAD, f"Deploy job started: {self._build.url}")
        diff = await self._call(
            JenkinsActivities.read_diff,
            ReadDiffInput(
                job=job,
                number=self._build.number,
                diff_begin=self._in.settings.diff_begin,
                diff_end=self._in.settings.diff_end,
            ),
            what=f"Jenkins: build #{self._build.number} has not printed its diff yet",
            summary=f"read the diff of {job} #{self._build.number}",
            options=LONG_POLL,
        )
        self._build.diff, self._build.diff_sha256 = diff.diff, diff.diff_sha256

    def _input_id(self) -> str | None:
        """The input to answer (the config resolves a service's own against [jenkins]); None: the one
        pending."""
        return self._in.service.input_id

    async def _watch_input(self) -> bool:
        """At deploy_approval, follow the build's input in Jenkins until it is answered there (True).

        Each time what Jenkins shows changes (the build has not reached its input for a while, which
        input to answer is unclear, the input waits), status and the Web UI say so, and an unclear input
        is said once in the thread and the audit trail; the watcher then goes on from what it reported."""
        while True:
            known, known_detail = self._input_seen
            result = await self._call(
                JenkinsActivities.watch_input,
                WatchInputInput(
                    job=self._job(),
                    number=self._number(),
                    input_id=self._input_id(),
                    known=known,
                    known_detail=known_detail,
                ),
                what=f"Jenkins: watching the input of build #{self._number()}",
                summary="watch the input in Jenkins",
                options=LONG_POLL,
                shown=False,
                cancellation_type=workflow.ActivityCancellationType.TRY_CANCEL,
            )
            if result.build_result:
                self._build.result = result.build_result
            if result.state in ("answered", "ended"):
                self._jenkins_answer = result.answered_by
                return True
            self._input_seen = (result.state, result.detail)
            if result.state == "pending":
                self._outside = None
            else:
                self._outside = (result.detail, workflow.now())
            if result.state == "unclear":
                self._note(result.detail, "input_unclear")
                self._say(NoticeKind.THREAD, f"`deploy_approval`: {messages.slack_escape(result.detail)}")
            self._publish()

    def _out_of_band(self, system: str, name: str | None) -> tuple[str, str, str | None]:
        """Who did something directly in Jenkins or on GitHub: (actor, identity, why it is out of policy).
        Their name there maps through `jenkins_user` / `github_login` to a person; only the assigned SRE's
        answer is in policy. Either way it happened, and deployctl follows it."""
        people = self._rules.people if self._rules else {}
        attr = "jenkins_user" if system == "jenkins" else "github_login"
        person = next((uid for uid, p in sorted(people.items()) if name and getattr(p, attr) == name), None)
        identity = f"{system}:{name or 'unknown'}"
        if person is not None and person == self._sre:
            return person, identity, None
        who = (
            f"{name} ({person})"
            if person
            else (f"{name}, who is not in [people] as {attr}" if name else "someone")
        )
        why = f"out of policy: {who} is not the assigned SRE ({self._sre or 'none assigned'})"
        return person or name or system, identity, why

    async def _answered_in_jenkins(self) -> None:
        actor, identity, why = self._out_of_band("jenkins", self._jenkins_answer)
        self._record(
            AuditEntry(
                time=workflow.now(),
                step=self._step,
                action="answered_in_jenkins",
                actor=actor,
                channel="jenkins",
                accepted=True,
                reason="the job's input was answered directly in Jenkins; deployctl records it and follows"
                + (f"; {why}" if why else ""),
                identity=identity,
                out_of_policy=why is not None,
                role=None if why else Role.ASSIGNED_SRE.value,
            )
        )
        self._say(
            NoticeKind.THREAD,
            "The deploy job's input was answered directly in Jenkins by "
            f"{messages.slack_escape(self._jenkins_answer or 'someone')}; following the build."
            + (f" :warning: {messages.slack_escape(why)}." if why else ""),
        )
        self._busy = True
        await self._enter(step_def(self._steps, Step.DEPLOYING))  # type: ignore[arg-type]
        await self._deploying()

    async def _answer_input(self, decision: str, actor: str) -> bool:
        """Proceed or abort the build's input for `actor`. False when Jenkins leaves it unclear which
        input to answer: nothing was answered, and the step waits again with the reason."""
        result = await self._call(
            JenkinsActivities.input_action,
            InputActionInput(
                job=self._job(), number=self._number(), input_id=self._input_id(), decision=decision
            ),
            what=f"Jenkins: answering the input of build #{self._number()} ({decision}) for {actor}"
            + (" — the build has not reached its input yet" if self._input_seen[0] == "not_reached" else ""),
            summary=f"{decision} the job's input for {actor}",
            options=LONG_POLL,
        )
        if result.refused:
            self._input_seen = ("unclear", result.refused)  # the watcher need not say it again
            if decision == "proceed":
                self._refused_effect(Action.APPROVE, f"Jenkins input not answered: {result.refused}")
            else:
                self._note(f"Jenkins input not answered: {result.refused}")
            return False
        if result.answered_elsewhere:
            self._note(f"the input was already answered in Jenkins: {result.detail}")
        return True

    async def _deploying(self) -> None:
        done = await self._call(
            JenkinsActivities.wait_build_result,
            BuildResultInput(job=self._job(), number=self._number()),
            what=f"Jenkins: build #{self._number()} is applying",
            summary=f"wait for {self._job()} #{self._number()} to finish",
            options=LONG_POLL,
        )
        self._build.result = done.result
        if done.result == "SUCCESS":
            self._finish(Outcome.SUCCEEDED, f"build #{done.number} ended SUCCESS")
        else:
            self._finish(Outcome.FAILED, f"build #{done.number} ended {done.result}")

    # ------------------------------------------------------------------------------------- closing

    def _finish(self, outcome: Outcome, reason: str) -> None:
        if self._outcome is None:
            self._outcome, self._reason = outcome, reason
            self._busy = True

    async def _close_out(self) -> None:
        """Close what the deploy opened: abort a build that did not finish, close the PCCR, say so."""
        b = self._build
        if b.result is None and (b.queue_id is not None or b.number is not None):
            try:
                await self._call(
                    JenkinsActivities.abort_build,
                    AbortBuildInput(
                        job=self._job(), number=b.number, queue_id=b.queue_id, input_id=self._input_id()
                    ),
                    what=f"Jenkins: aborting the unfinished build of {self._job()}",
                    summary="abort the unfinished build",
                    options=SHORT_CALL,
                )
                b.result = "ABORTED"
            except ActivityError as err:
                self._note(f"could not abort the build: {_cause(err)}")
        pr = self._version_pr
        if pr is not None and not pr.merged and pr.state == "open":
            try:
                self._version_pr = await self._call(
                    GithubActivities.close_pr,
                    PrRefInput(repo=self._in.settings.configs_repo, number=pr.number),
                    what=f"GitHub: closing version PR #{pr.number}",
                    summary=f"close version PR #{pr.number}",
                    options=SHORT_CALL,
                )
            except ActivityError as err:
                self._note(f"could not close the version PR: {_cause(err)}")
        await self._give_back_lock()
        assert self._outcome is not None
        self._set_pccr_state("done" if self._outcome is Outcome.SUCCEEDED else self._outcome.value)
        self._publish()
        shown = messages.slack_escape(self._reason or "")
        self._say(NoticeKind.THREAD, f"{self._name} ended *{self._outcome.value}*: {shown}")
        self._close_dms(f"This deploy ended *{self._outcome.value}*: {shown}")
        self._update_root(None)
        self._pccr_comment(
            f"Deploy ended **{self._outcome.value}**: {messages.github_text(self._reason or '')}"
        )
        if self._pccr is not None and self._pccr.backend == "github":
            self._queue(Notice(NoticeKind.PCCR_CLOSE, "", self._step))

    # ------------------------------------------------------------------------------------ messages

    def _register(self, action: Action) -> None:
        async def update(payload: Any) -> ActionResult:
            msg = self._parse(payload)
            verdict, reason = self._judge(action, payload, msg)
            if reason:  # another message landed between the validator and this handler
                self._refused(action, msg, "update", reason, verdict)
                raise ApplicationError(reason, type="Refused", non_retryable=True)
            self._accept(action, msg, "update", verdict)
            if action is Action.MERGE:
                await workflow.wait_condition(
                    lambda: (
                        self._merge_verdict is not None
                        or self._outcome is not None
                        or self._cancel is not None
                    )
                )
                if self._merge_verdict:
                    raise ApplicationError(self._merge_verdict, type="Refused", non_retryable=True)
            return ActionResult(
                accepted=True,
                step=msg.step,
                action=action,
                message=f"{action.value} accepted at {msg.step.value}",
            )

        def validate(payload: Any) -> None:
            try:
                msg = self._parse(payload)
            except ApplicationError as err:
                self._refusal_seen(action, payload, "update", err.message, None)
                raise
            verdict, reason = self._judge(action, payload, msg)
            if reason:
                self._refusal_seen(action, payload, "update", reason, verdict)
                raise ApplicationError(reason, type="Refused", non_retryable=True)

        def signal(payload: Any) -> None:
            try:
                msg = self._parse(payload)
            except ApplicationError as err:
                actor = payload.get("actor") if isinstance(payload, dict) else None
                self._refusal_seen(action, payload, "signal", err.message, None)
                self._record(
                    AuditEntry(
                        time=workflow.now(),
                        step=self._step,
                        action=action.value,
                        actor=policy.one_line(str(actor or "unknown"), MAX_ID),
                        channel="signal",
                        accepted=False,
                        reason=err.message,
                    )
                )
                return
            verdict, reason = self._judge(action, payload, msg)
            if reason:
                self._refused(action, msg, "signal", reason, verdict)
            else:
                self._accept(action, msg, "signal", verdict)

        workflow.set_update_handler(action.value, update, validator=validate)
        workflow.set_signal_handler(action.value, signal)

    @staticmethod
    def _parse(payload: Any) -> ActionInput:
        try:
            return ActionInput.model_validate(payload)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            raise ApplicationError(
                policy.one_line(
                    f'bad payload: {where}: {first["msg"]} (send {{"actor": ID, "step": STEP, …}})'
                ),
                type="Refused",
                non_retryable=True,
            ) from None

    def _judge(self, action: Action, payload: Any, msg: ActionInput) -> tuple[trust.Verdict, str | None]:
        """The signature first (who sent it), then the policy (may they do it now)."""
        if not self._ruled:
            return trust.Verdict(), (
                "the deploy is starting (its rules are being read from the workers' config) or was refused; "
                "check `deployctl status` and retry in a moment"
            )
        verdict = trust.check(payload, self._wid(), action.value, self._keys, workflow.now(), self._nonces)
        if verdict.refusal:
            return verdict, policy.one_line(verdict.refusal)
        return verdict, self._refusal(action, msg)

    def _refusal(self, action: Action, msg: ActionInput) -> str | None:
        return policy.refusal(
            action,
            msg,
            policy.Situation(
                service=self._in.service.name,
                cloud=self._in.cloud,
                steps=self._steps,
                step=self._step,
                parties=self._parties(),
                finished=self._outcome is not None,
                busy=self._busy,
                diff_sha256=self._build.diff_sha256,
                pr_diff_sha256=self._pr_diff.diff_sha256 if self._pr_diff is not None else None,
            ),
        )

    def _accept(self, action: Action, msg: ActionInput, kind: str, verdict: trust.Verdict) -> None:
        self._record(self._entry(action, msg, kind, accepted=True, verdict=verdict))
        if verdict.nonce:
            self._nonces.add(verdict.nonce)
        self._hold(action, msg)
        if action is not Action.CANCEL and self._step_started is not None:
            workflow.metric_meter().create_histogram_timedelta(
                "deployctl_step_wait", "time a step waited for its action", unit="duration"
            ).record(workflow.now() - self._step_started, {"step": self._step.value})
        if action is Action.CANCEL:
            self._cancel = _Accepted(action, msg)
        else:
            self._inbox = _Accepted(action, msg)
            self._busy = True
            if action is Action.MERGE:
                self._merge_verdict = None
        self._pccr_comment(
            f"<@{msg.actor}> {action.value.replace('_', ' ')} at `{self._step.value}`"
            + (f" (SRE <@{msg.sre}>)" if msg.sre else "")
            + (f": {messages.github_text(msg.comment)}" if msg.comment else "")
        )
        self._publish()

    def _refused(
        self, action: Action, msg: ActionInput, kind: str, reason: str, verdict: trust.Verdict
    ) -> None:
        self._refusal_seen(action, msg.model_dump(), kind, reason, verdict)
        self._record(self._entry(action, msg, kind, accepted=False, reason=reason, verdict=verdict))

    def _refusal_seen(
        self, action: Action, payload: Any, kind: str, reason: str, verdict: trust.Verdict | None
    ) -> None:
        """Every refusal is visible to operators, a refused Update too (it leaves no history): one JSON log
        line and the `deployctl_refusals{reason}` counter, by kind of reason (SPEC §10)."""
        actor = payload.get("actor") if isinstance(payload, dict) else None
        line = {
            "refused": action.value,
            "via": kind,
            "actor": policy.one_line(str(actor), MAX_ID) if actor is not None else None,
            "step": self._step.value,
            "reason": reason,
            "identity": verdict.identity if verdict else "claimed",
            "workflow_id": self._wid(),
        }
        workflow.logger.warning(json.dumps(line, ensure_ascii=False))
        workflow.metric_meter().create_counter(
            "deployctl_refusals", "actions refused, by kind of reason"
        ).add(1, {"reason": policy.refusal_kind(reason), "action": action.value})

    def _hold(self, action: Action, msg: ActionInput) -> None:
        """Whole-chain separation of duties: remember the approving role an accepted action took."""
        defn = step_def(self._steps, self._step)
        if action in (Action.REJECT, Action.CANCEL) or defn is None or defn.actor is None:
            return
        role = policy.APPROVING.get(defn.actor)
        if role is not None:
            self._held.setdefault(msg.actor, role)
        if action is Action.ASSIGN and msg.sre:
            self._held.setdefault(msg.sre, policy.APPROVING[Role.ASSIGNED_SRE])

    def _entry(
        self,
        action: Action,
        msg: ActionInput,
        kind: str,
        accepted: bool,
        verdict: trust.Verdict,
        reason: str | None = None,
    ) -> AuditEntry:
        return AuditEntry(
            time=workflow.now(),
            step=self._step,
            action=action.value,
            actor=msg.actor,
            channel=msg.channel or ("temporal" if kind == "update" else "signal"),
            accepted=accepted,
            reason=reason,
            role=self._role_of(action, msg.actor),
            comment=msg.comment,
            identity=verdict.identity,
            **self._evidence(verdict, accepted),
        )

    def _role_of(self, action: Action, actor: str) -> str | None:
        parties = self._parties()
        if action is Action.CANCEL:
            return next(
                (r.value for r in (Role.CODE_OWNER, Role.GATEKEEPER) if actor in parties.members(r)), None
            )
        defn = step_def(self._steps, self._step)
        return defn.actor.value if defn and defn.actor and actor in parties.members(defn.actor) else None

    def _record(self, entry: AuditEntry) -> None:
        """Into the audit trail. Refused actions beyond MAX_REFUSED are counted, not kept: a flood of them
        cannot grow the status past what Temporal carries (SPEC §10)."""
        if not entry.accepted and entry.actor != SYSTEM:
            if self._refused_kept >= MAX_REFUSED:
                self._refused_dropped += 1
                return
            self._refused_kept += 1
        self._audit.append(entry)

    def _note(
        self,
        text: str,
        action: str = "note",
        channel: str = SYSTEM,
        step: Step | None = None,
        accepted: bool = True,
    ) -> None:
        """An entry by deployctl itself in the audit trail."""
        self._record(
            AuditEntry(
                time=workflow.now(),
                step=step or self._step,
                action=action,
                actor=SYSTEM,
                channel=channel,
                accepted=accepted,
                reason=text,
                identity=SYSTEM,
            )
        )

    async def _call(
        self,
        method: Any,
        arg: Any,
        *,
        what: str,
        summary: str | None,
        options: dict[str, Any],
        shown: bool = True,
        **extra: Any,
    ) -> Any:
        """Run one activity on the outside world and return its result.

        While it runs, status `waiting_for` says `what` (unless `shown` is False: a watcher in the
        background). After QUIET_TRIES failed tries the deploy says once, in its thread and audit trail,
        what keeps failing and why, and status says so too; the activity then goes on under `options`'
        own retry policy, so a deploy never waits in silence on a system that keeps refusing."""
        before = self._activity_wait
        if shown:
            self._activity_wait = (what, workflow.now())
            self._publish()
        quiet = dict(
            options, retry_policy=dataclasses.replace(options["retry_policy"], maximum_attempts=QUIET_TRIES)
        )
        try:
            result = await workflow.execute_activity_method(method, arg, summary=summary, **quiet, **extra)
        except ActivityError as err:
            if err.retry_state is not RetryState.MAXIMUM_ATTEMPTS_REACHED:
                raise
            line = f"{what}: failing after {QUIET_TRIES} tries ({_cause(err)}); deployctl keeps trying"
            self._note(line, "waiting")
            self._say(NoticeKind.THREAD, f"{self._name} waits. {messages.slack_escape(line)}.")
            if shown:
                self._activity_wait = (line, workflow.now())
                self._publish()
            result = await workflow.execute_activity_method(method, arg, summary=summary, **options, **extra)
        if shown:
            self._activity_wait = before
            self._publish()
        return result

    def _waiting_for(self) -> tuple[str, datetime] | None:
        """One line: what the deploy waits for now, and since when. The outside world first (an activity
        running, then what Jenkins or GitHub show that holds the step up), then the deploy lock, then
        people; None once the deploy has ended."""
        if self._outcome is not None:
            return None
        if self._activity_wait is not None:
            return self._activity_wait
        if self._outside is not None:
            return self._outside
        since = self._step_started or workflow.now()
        if self._blocked_by:
            return (
                f"deploy {self._blocked_by} of {self._in.service.name} to {self._in.environment} to end",
                since,
            )
        waiting = self._waiting_on()
        defn = step_def(self._steps, self._step)
        if waiting and defn is not None:
            actions = " or ".join(a.value.replace("_", " ") for a in defn.actions)
            return f"{', '.join(waiting)} to {actions} at {self._step.value}", since
        if self._step is Step.RELEASE_WINDOW_WAIT and self._in.window is not None:
            return f"release window {self._in.window.name} to open", since
        return None

    # --------------------------------------------------------------------------------------- query

    @workflow.query(name="status")
    def status(self) -> DeployStatus:
        defn = step_def(self._steps, self._step)
        waiting_for = self._waiting_for()
        return DeployStatus(
            workflow_id=self._wid(),
            process=self._in.process,
            cloud=self._in.cloud if self._ruled else None,
            service=self._in.service.name,
            environment=self._in.environment,
            step=self._step,
            waiting_on=self._waiting_on(),
            allowed_actions=policy.allowed_actions(defn, self._outcome is not None, self._busy),
            pccr=self._pccr,
            build=self._build,
            version=self._in.version,
            version_pr=self._version_pr.url if self._version_pr else None,
            version_pr_head_sha=self._pr_diff.head_sha if self._pr_diff is not None else None,
            version_pr_diff_sha256=self._pr_diff.diff_sha256 if self._pr_diff is not None else None,
            release_window=self._in.window,
            blocked_by=self._blocked_by,
            sre=self._sre,
            outcome=self._outcome,
            outcome_reason=self._reason,
            slack_thread=self._thread_ts,
            ui_url=self._link(),
            waiting_for=waiting_for[0] if waiting_for else None,
            waiting_since=waiting_for[1] if waiting_for else None,
            rosters=self._rosters,
            config_sha256=self._config_sha() or None,
            secret_params=self._in.secret_params,
            refused_not_kept=self._refused_dropped,
            audit=self._audit,
        )

    # ------------------------------------------------------------------------------------- helpers

    def _parties(self) -> policy.Parties:
        return policy.Parties(
            code_owners=self._in.service.code_owners,
            groups=self._groups,
            assigned_sre=self._sre,
            held=self._held,
        )

    def _waiting_on(self) -> list[str]:
        if self._outcome is not None or self._busy:
            return []
        return policy.eligible(step_def(self._steps, self._step), self._parties())

    async def _resolve_group(self, name: str) -> None:
        """Capture a group's roster now: a list from the config, or a Slack user group's members."""
        spec = self._in.settings.groups.get(name)
        if spec is None:
            self._groups.setdefault(name, ())
            return
        if spec.slack_usergroup is None:
            self._groups[name] = tuple(spec.members)
            return
        try:
            found = await workflow.execute_activity_method(
                SlackActivities.usergroup_members,
                UsergroupInput(usergroup=spec.slack_usergroup),
                summary=f"members of {name}",
                **NOTICE,
            )
            self._groups[name] = tuple(found.users)
        except ActivityError as err:
            self._note(f"could not read Slack user group {spec.slack_usergroup} for {name}: {_cause(err)}")
            self._groups.setdefault(name, ())

    def _set_pccr_state(self, state: str) -> None:
        if self._pccr is None or self._pccr.state == state:
            return
        old = self._pccr.state
        self._pccr = self._pccr.model_copy(update={"state": state})
        if self._pccr.backend == "github":
            self._queue(Notice(NoticeKind.PCCR_LABELS, state, self._step, old_label=old))

    def _pccr_comment(self, text: str) -> None:
        if self._pccr is not None and self._pccr.backend == "github":
            self._queue(Notice(NoticeKind.PCCR_COMMENT, text, self._step))

    def _publish(self) -> None:
        """Keep the Web UI current: search attributes and the details pane (only when they change)."""
        waiting = self._waiting_on()
        outcome = self._outcome.value if self._outcome else None
        now = (
            self._step,
            tuple(waiting),
            outcome,
            self._build.url,
            self._thread_ts,
            self._sre,
            self._blocked_by,
        )
        if now != self._published:  # an upsert is a command: only when these change (docs/replay.md)
            self._published = now
            updates: list[SearchAttributeUpdate[Any]] = [
                sa.STEP.value_set(self._step.value),
                sa.WAITING_ON.value_set(waiting),
            ]
            if outcome:
                updates.append(sa.OUTCOME.value_set(outcome))
            if self._ruled:  # the cloud as the workers' config says (the start's was the caller's guess)
                updates.append(sa.CLOUD.value_set(self._in.cloud.value))
            if self._in.settings.search_attributes:
                workflow.upsert_search_attributes(updates)
        # Text only, not a command: replay is indifferent to it (docs/replay.md).
        workflow.set_current_details(
            "\n\n".join(messages.status_lines(self.status(), workflow.now(), "markdown"))
        )

    def _update_root(self, defn: StepDef | None, waiting: list[str] | None = None) -> None:
        """The triage thread's root message shows where the deploy stands, with the step's buttons
        (anyone may click; the workflow decides who may act, as everywhere). `waiting`: who the step
        waits on, when it is not `_waiting_on()` yet (an effect still being handled)."""
        if not self._triage_text:
            return
        waiting = self._waiting_on() if waiting is None else waiting
        if self._outcome is not None:
            state = f"Ended *{self._outcome.value}*: {messages.slack_escape(self._reason or '')}"
        else:
            state = f"Now at `{self._step.value}`, waiting on " + (
                " ".join(f"<@{u}>" for u in waiting) or "nobody"
            )
        text = f"{self._triage_text}\n{state}"
        if defn is not None and defn.actions and waiting and self._outcome is None:
            blocks = slack_blocks.action_blocks(
                text,
                self._wid(),
                defn.step,
                defn.actions,
                users=self._groups.get(sre_group(self._in.cloud), ())
                if defn.step is Step.SRE_ASSIGNMENT
                else (),
                diff_sha256=self._bound_sha256(defn.step),
            )
        else:
            blocks = slack_blocks.done_blocks(state, self._triage_text)
        self._queue(Notice(NoticeKind.ROOT_UPDATE, text, self._step, blocks=blocks))

    def _close_dms(self, text: str) -> None:
        """The buttons of DMs sent so far go (their step has passed); `text` says who did what, if anyone."""
        self._queue(Notice(NoticeKind.DONE, text, self._step))

    def _queue(self, notice: Notice) -> None:
        self._outbox.put(notice)

    def _say(self, kind: NoticeKind, text: str, to: str | None = None) -> None:
        self._queue(Notice(kind, text, self._step, to=to))

    # The outbox (workflows/outbox.py) decides which notice goes next and starts it synchronously, from
    # the code that queued it or that settled the one before (the ordering invariant is stated there);
    # `_start_notice` schedules its activity and `_settle` hands back what it returned.

    def _start_notice(self, notice: Notice) -> asyncio.Task[None] | None:
        """Schedule the activity that delivers `notice` (now, synchronously) and the task that settles it;
        None if nothing to send. Slack trouble is noted, never fatal."""
        handle = self._notice_activity(notice)
        return None if handle is None else asyncio.create_task(self._settle(notice, handle))

    def _notice_activity(self, notice: Notice) -> Any:
        """The handle of the activity that delivers `notice`, scheduled now; None if nothing to send."""
        s = self._in.settings
        if notice.kind.is_pccr:
            assert self._pccr is not None and self._pccr.number is not None
            repo, number = s.pccr_repo or "", self._pccr.number
            self._pccr_ops += 1
            if notice.kind is NoticeKind.PCCR_COMMENT:
                marker = f"{self._wid()}/{self._pccr_ops}"
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
            if self._thread_ts is None:
                return None  # the root was never posted (Slack was down): nothing to update
            return workflow.start_activity_method(
                SlackActivities.update_message,
                SlackUpdateInput(
                    channel=s.triage_channel, ts=self._thread_ts, text=notice.text, blocks=notice.blocks
                ),
                summary="slack update the triage message",
                **NOTICE,
            )
        channel = notice.to if notice.kind is NoticeKind.DM else s.triage_channel
        thread = self._thread_ts if notice.kind is NoticeKind.THREAD else None
        return workflow.start_activity_method(
            SlackActivities.post_message,
            SlackPostInput(channel=channel or "", text=notice.text, thread_ts=thread, blocks=notice.blocks),
            summary=f"slack {notice.kind.value} {channel}",
            **NOTICE,
        )

    async def _settle(self, notice: Notice, handle: Any) -> None:
        """Wait for a notice's activity, keep what it returned, then start the next notice.

        No `finally`: when the worker evicts the run, the coroutine is closed at its `await`, and
        nothing may be started then."""
        try:
            sent = await handle
        except ActivityError as err:
            sent = None
            self._notice_failed(notice, _cause(err))
        else:
            if notice.kind is NoticeKind.ROOT:
                self._thread_ts = sent.ts
                self._publish()
        self._outbox.settled(notice, sent)  # a DM with buttons is kept there for its DONE

    def _notice_failed(self, notice: Notice, why: str) -> None:
        if notice.kind.is_pccr:
            number = self._pccr.number if self._pccr else None
            self._note(f"PCCR issue #{number} not updated ({notice.kind.value}): {why}")
        elif notice.kind is NoticeKind.DM_DONE:
            self._note(f"Slack message {notice.ts} not updated: {why}")
        elif notice.kind is NoticeKind.ROOT_UPDATE:
            self._note(f"triage message not updated: {why}")
        else:
            channel = notice.to if notice.kind is NoticeKind.DM else self._in.settings.triage_channel
            self._note(
                f"Slack {notice.kind.value} to {channel} not sent: {why}",
                "notify_failed",
                "slack",
                notice.step,
                accepted=False,
            )

    def _wid(self) -> str:
        return workflow.info().workflow_id

    def _link(self) -> str:
        return messages.ui_link(self._in.settings.ui_url, self._in.settings.namespace, self._wid())

    def _pccr_link(self) -> str:
        return self._pccr.url if self._pccr else self._link()

    def _job(self) -> str:
        return self._in.service.jenkins_job

    def _number(self) -> int:
        assert self._build.number is not None
        return self._build.number


def _cause(err: BaseException) -> str:
    """The innermost message of an activity failure: what the activity said went wrong."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)
