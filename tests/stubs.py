"""The fast tier's stand-ins for the outside world: stub activities under the real activities' names.

Each stub is registered under the name of an activity `worker.build_activities` registers
(`@activity.defn(name=...)`, as samples-python's tests do), takes and returns the same models from
workflows/models.py, and records every call. A test scripts what Jenkins and GitHub do by setting fields
on `Stubs` (a build that fails, an input answered in Jenkins, a merge GitHub refuses). The real
`DeployWorkflow` runs on them through `worker.WORKFLOWS` and `workflow_runner()`, on the time-skipping
server, so the workflow's logic is tested without the HTTP fakes (those test the wiring).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.locks import LockActivities
from starter.config import Config, load_config
from tests import keys
from tests.conftest import CONFIG_TEMPLATE, SKIPPED_CLOCK
from worker import WORKFLOWS, workflow_runner
from workflows.models import (
    AbortBuildInput,
    BuildRef,
    BuildResult,
    BuildResultInput,
    CommentInput,
    InputActionInput,
    InputActionResult,
    IssueRef,
    JobParameter,
    JobParametersInput,
    JobParametersResult,
    LabelsInput,
    LockCall,
    MergePrInput,
    MergePrResult,
    OpenIssueInput,
    OpenVersionPrInput,
    PrDiff,
    PrDiffInput,
    PrRefInput,
    ReadDiffInput,
    ReadDiffResult,
    Rules,
    RulesInput,
    SlackPostInput,
    SlackPostResult,
    SlackUpdateInput,
    TriggerBaseline,
    TriggerBuildInput,
    TriggerBuildResult,
    UsergroupInput,
    UsergroupResult,
    VersionPr,
    WaitBuildStartedInput,
    WatchInputInput,
    WatchInputResult,
    WatchPrInput,
)
from workflows.options import GITHUB_RATE_LIMITED

JOB_PARAMETERS = [
    JobParameter(name="IMAGE_TAG", default="latest"),
    JobParameter(name="REPLICAS", default="2"),
    JobParameter(name="DRY_RUN", type="BooleanParameterDefinition", default="true"),
]
DIFF = "~ deployment/app image: app:1.4.1 -> app:1.4.2\n"
BUILD_NUMBER = 7
PR_NUMBER = 12
HEAD, MOVED_HEAD = "a" * 40, "b" * 40
T = TypeVar("T")
POLL = 0.05  # seconds between a blocking stub's heartbeats (its activity's heartbeat timeout is 10 s)

#: The activities a deploy's worker runs that tell the deploy's story; the rest are Slack notices and
#: PCCR-issue bookkeeping, sent beside them (workflows/outbox.py) in an order that depends on timing.
NOTICES = frozenset({"post_message", "update_message", "comment_pccr", "set_pccr_labels", "close_pccr"})


@dataclass
class Call:
    name: str
    input: Any


@dataclass
class Stubs:
    """What the outside world does in one test, and what deployctl asked of it."""

    rules: Callable[[RulesInput], Rules]
    client: Client
    calls: list[Call] = field(default_factory=list)
    usergroups: dict[str, list[str]] = field(default_factory=lambda: {"S0SREGOV": ["U0SREG1", "U0SREG2"]})
    build_result: str = "SUCCESS"  # what wait_build_result returns
    watch_input_result: WatchInputResult | None = None  # None: the input waits (watch_input blocks)
    watch_pr_result: VersionPr | None = None  # None: the PR stays open (watch_pr blocks)
    merge_results: list[MergePrResult] = field(default_factory=list)  # one per merge_pr, then merged
    merge_rate_limits: int = 0  # how many merge_pr calls GitHub rate limits first
    merge_rate_limit_wait: timedelta = timedelta(minutes=45)  # the wait each of them asks for
    pr_heads: list[str] = field(default_factory=lambda: [HEAD])  # pr_diff's heads, in turn; the last stays
    _ts: int = 0

    def names(self, notices: bool = False) -> list[str]:
        """The activities called, in order; without the notices unless `notices`."""
        return [c.name for c in self.calls if notices or c.name not in NOTICES]

    def inputs(self, name: str) -> list[Any]:
        return [c.input for c in self.calls if c.name == name]

    def posted(self, prefix: str = "") -> list[SlackPostInput]:
        return [i for i in self.inputs("post_message") if i.text.startswith(prefix)]

    @staticmethod
    async def _until_scripted(scripted: Callable[[], T | None]) -> T:
        """What a watcher returns once the test scripts it; until then it blocks, heartbeating (its
        activity's heartbeat timeout is 10 s), and a cancel ends it."""
        while (value := scripted()) is None:
            activity.heartbeat()
            await asyncio.sleep(POLL)
        return value

    def _record(self, name: str, inp: Any) -> None:
        self.calls.append(Call(name, inp))

    # ---------------------------------------------------------------------------------------- rules

    @activity.defn(name="load_rules")
    async def load_rules(self, inp: RulesInput) -> Rules:
        self._record("load_rules", inp)
        return self.rules(inp)

    @activity.defn(name="request_lock")
    async def request_lock(self, call: LockCall) -> None:
        """The real lock activity: it only talks to Temporal, and the lock workflow is workflow logic."""
        self._record("request_lock", call)
        await LockActivities(self.client).request_lock(call)

    # -------------------------------------------------------------------------------------- Jenkins

    @activity.defn(name="job_parameters")
    async def job_parameters(self, inp: JobParametersInput) -> JobParametersResult:
        self._record("job_parameters", inp)
        return JobParametersResult(job=inp.job, parameters=JOB_PARAMETERS)

    @activity.defn(name="trigger_baseline")
    async def trigger_baseline(self, inp: JobParametersInput) -> TriggerBaseline:
        self._record("trigger_baseline", inp)
        return TriggerBaseline(job=inp.job, last_build=BUILD_NUMBER - 1)

    @activity.defn(name="trigger_build")
    async def trigger_build(self, inp: TriggerBuildInput) -> TriggerBuildResult:
        self._record("trigger_build", inp)
        return TriggerBuildResult(queue_id=41)  # queued: the deploy waits for it to start

    @activity.defn(name="wait_build_started")
    async def wait_build_started(self, inp: WaitBuildStartedInput) -> BuildRef:
        self._record("wait_build_started", inp)
        return BuildRef(job=inp.job, number=BUILD_NUMBER, url=f"http://jenkins/job/{inp.job}/{BUILD_NUMBER}/")

    @activity.defn(name="read_diff")
    async def read_diff(self, inp: ReadDiffInput) -> ReadDiffResult:
        self._record("read_diff", inp)
        return ReadDiffResult(
            diff=DIFF,
            diff_sha256=hashlib.sha256(DIFF.encode()).hexdigest(),
            console_url=f"http://jenkins/job/{inp.job}/{inp.number}/console",
        )

    @activity.defn(name="watch_input")
    async def watch_input(self, inp: WatchInputInput) -> WatchInputResult:
        """Blocks, heartbeating, until the test scripts what Jenkins shows; a cancel ends it."""
        self._record("watch_input", inp)
        return await self._until_scripted(lambda: self.watch_input_result)

    @activity.defn(name="input_action")
    async def input_action(self, inp: InputActionInput) -> InputActionResult:
        self._record("input_action", inp)
        return InputActionResult(done=True)

    @activity.defn(name="wait_build_result")
    async def wait_build_result(self, inp: BuildResultInput) -> BuildResult:
        self._record("wait_build_result", inp)
        return BuildResult(number=inp.number, result=self.build_result)

    @activity.defn(name="abort_build")
    async def abort_build(self, inp: AbortBuildInput) -> None:
        self._record("abort_build", inp)

    # ---------------------------------------------------------------------------------------- Slack

    @activity.defn(name="post_message")
    async def post_message(self, inp: SlackPostInput) -> SlackPostResult:
        self._record("post_message", inp)
        self._ts += 1
        return SlackPostResult(channel=inp.channel, ts=f"1700000000.{self._ts:06d}")

    @activity.defn(name="update_message")
    async def update_message(self, inp: SlackUpdateInput) -> SlackPostResult:
        self._record("update_message", inp)
        return SlackPostResult(channel=inp.channel, ts=inp.ts)

    @activity.defn(name="usergroup_members")
    async def usergroup_members(self, inp: UsergroupInput) -> UsergroupResult:
        self._record("usergroup_members", inp)
        return UsergroupResult(usergroup=inp.usergroup, users=self.usergroups.get(inp.usergroup, []))

    # --------------------------------------------------------------------------------------- GitHub

    def _pr(self, inp_repo: str, head: str = HEAD, **extra: Any) -> VersionPr:
        values: dict[str, Any] = {
            "number": PR_NUMBER,
            "url": f"https://github.example/{inp_repo}/pull/{PR_NUMBER}",
            "head_sha": head,
            "branch": "deployctl/x",
            "state": "open",
        }
        return VersionPr(**(values | extra))

    @activity.defn(name="open_version_pr")
    async def open_version_pr(self, inp: OpenVersionPrInput) -> VersionPr:
        self._record("open_version_pr", inp)
        return self._pr(inp.repo).model_copy(update={"branch": inp.branch})

    @activity.defn(name="pr_state")
    async def pr_state(self, inp: PrRefInput) -> VersionPr:
        self._record("pr_state", inp)
        return self._pr(inp.repo, self.pr_heads[0])

    @activity.defn(name="pr_diff")
    async def pr_diff(self, inp: PrDiffInput) -> PrDiff:
        self._record("pr_diff", inp)
        head = self.pr_heads.pop(0) if len(self.pr_heads) > 1 else self.pr_heads[0]
        text = f"--- a/channel-gov/svc.yaml\n+++ b/channel-gov/svc.yaml\n@@ -2 +2 @@ head {head[:7]}\n"
        return PrDiff(
            head_sha=head,
            diff=text,
            chars=len(text),
            files=1,
            changed_files=1,
            files_url=f"https://github.example/{inp.repo}/pull/{inp.number}/files",
            diff_sha256=hashlib.sha256(f"{head}\n{text}".encode()).hexdigest(),
        )

    @activity.defn(name="watch_pr")
    async def watch_pr(self, inp: WatchPrInput) -> VersionPr:
        """Blocks, heartbeating, until the test scripts the PR merged or closed on GitHub."""
        self._record("watch_pr", inp)
        return await self._until_scripted(lambda: self.watch_pr_result)

    @activity.defn(name="merge_pr")
    async def merge_pr(self, inp: MergePrInput) -> MergePrResult:
        self._record("merge_pr", inp)
        if self.merge_rate_limits > 0:
            self.merge_rate_limits -= 1
            raise ApplicationError(
                "merging: GitHub is rate limiting (HTTP 403: API rate limit exceeded)",
                type=GITHUB_RATE_LIMITED,
                next_retry_delay=self.merge_rate_limit_wait,
            )
        if self.merge_results:
            return self.merge_results.pop(0)
        return MergePrResult(merged=True, sha="c" * 40)

    @activity.defn(name="close_pr")
    async def close_pr(self, inp: PrRefInput) -> VersionPr:
        self._record("close_pr", inp)
        return self._pr(inp.repo, state="closed")

    @activity.defn(name="open_pccr_issue")
    async def open_pccr_issue(self, inp: OpenIssueInput) -> IssueRef:
        self._record("open_pccr_issue", inp)
        return IssueRef(number=3, url=f"https://github.example/{inp.repo}/issues/3", state="open")

    @activity.defn(name="comment_pccr")
    async def comment_pccr(self, inp: CommentInput) -> None:
        self._record("comment_pccr", inp)

    @activity.defn(name="set_pccr_labels")
    async def set_pccr_labels(self, inp: LabelsInput) -> None:
        self._record("set_pccr_labels", inp)

    @activity.defn(name="close_pccr")
    async def close_pccr(self, inp: PrRefInput) -> None:
        self._record("close_pccr", inp)

    def activities(self) -> list[Callable]:
        """Every stub, one per activity `worker.build_activities` registers."""
        return [
            getattr(self, name)
            for name in (
                "job_parameters",
                "trigger_baseline",
                "trigger_build",
                "wait_build_started",
                "read_diff",
                "input_action",
                "watch_input",
                "wait_build_result",
                "abort_build",
                "post_message",
                "update_message",
                "usergroup_members",
                "open_version_pr",
                "pr_state",
                "pr_diff",
                "watch_pr",
                "merge_pr",
                "close_pr",
                "open_pccr_issue",
                "comment_pccr",
                "set_pccr_labels",
                "close_pccr",
                "request_lock",
                "load_rules",
            )
        ]


@dataclass
class Tier:
    """One fast-tier test's config, task queue and stubs."""

    config: Config
    service: str
    stubs: Stubs


def tier_config(tmp_path: Path, timeouts: dict[str, str] | None = None) -> tuple[Config, str]:
    """A config of the test's own service and task queue (its URLs are never called: the stubs answer)."""
    tag = uuid.uuid4().hex[:8]
    service = f"svc-{tag}"
    text = CONFIG_TEMPLATE.format(
        task_queue=f"tq-{tag}",
        jenkins_url="http://127.0.0.1:9",
        jenkins_extra="",
        slack_url="http://127.0.0.1:9/api/",
        service=service,
        job=f"deploy-{service}",
        github_url="http://127.0.0.1:9/api/v3",
        pccr_backend="builtin",
        valkyr="false",
        timeouts="\n".join(f'{k} = "{v}"' for k, v in (timeouts or {}).items()),
        bridge_key=keys.public(keys.BRIDGE),
    )
    path = tmp_path / "deployctl.toml"
    path.write_text(text + keys.people_toml() + SKIPPED_CLOCK)
    return load_config(str(path)), service


def stub_worker(client: Client, config: Config, stubs: Stubs) -> Worker:
    """A worker as production builds it (`worker.WORKFLOWS`, `workflow_runner()`), on the stubs."""
    return Worker(
        client,
        task_queue=config.task_queue,
        workflows=WORKFLOWS,
        workflow_runner=workflow_runner(),
        activities=stubs.activities(),  # all async: no activity executor
    )


def rules_of(config: Config) -> Callable[[RulesInput], Rules]:
    """load_rules as the real activity answers on the time-skipping server (no search attributes)."""

    def rules(inp: RulesInput) -> Rules:
        r = config.rules(inp.service, inp.environment)
        return r.model_copy(update={"settings": r.settings.model_copy(update={"search_attributes": False})})

    return rules
