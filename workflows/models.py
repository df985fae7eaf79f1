"""The shared vocabulary: every model that workflows, activities, the CLI and the Slack bridge exchange.

Plain pydantic v2 models, serialised by `pydantic_data_converter` on every client. One input and one
result type per workflow, activity, update and query, so fields can be added without breaking histories.
No I/O and no clock here.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# ---------------------------------------------------------------------------------------------------
# The stable vocabulary (SPEC §3, §4)


class Process(StrEnum):
    OOW = "oow"
    RELEASE = "release"


class Cloud(StrEnum):
    COM = "com"
    GOV = "gov"


class Step(StrEnum):
    VP_APPROVAL = "vp_approval"
    PCCR_REVIEW = "pccr_review"
    SRE_ASSIGNMENT = "sre_assignment"
    CLEARANCE = "clearance"
    VERSION_PR_MERGE = "version_pr_merge"
    TRIGGER = "trigger"
    DIFF_VALIDATION = "diff_validation"
    DEPLOY_APPROVAL = "deploy_approval"
    RELEASE_ACCEPTANCE = "release_acceptance"
    RELEASE_WINDOW_WAIT = "release_window_wait"
    DEPLOYING = "deploying"


class Action(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    ASSIGN = "assign"
    TRIGGER = "trigger"
    VALIDATE_DIFF = "validate_diff"
    MERGE = "merge"
    CANCEL = "cancel"


class Role(StrEnum):
    """Who may act at a step. `assigned_sre` is the one SRE named at `sre_assignment`."""

    CODE_OWNER = "code-owner"
    GATEKEEPER = "pccr-gatekeeper"
    SRE = "sre"
    SRE_GOV = "sre-gov"
    VP = "vp"
    ASSIGNED_SRE = "assigned-sre"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# ---------------------------------------------------------------------------------------------------
# The part of the configuration a deploy carries (no secrets: those stay in the worker's environment)


class GroupSpec(BaseModel):
    """A group is a list of Slack user ids, or a Slack user group resolved at the step's start."""

    model_config = ConfigDict(frozen=True)
    members: tuple[str, ...] = ()
    slack_usergroup: str | None = None

    def mention(self) -> str:
        if self.slack_usergroup:
            return f"<!subteam^{self.slack_usergroup}>"
        return " ".join(f"<@{m}>" for m in self.members)


class ServiceSpec(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    code_owners: tuple[str, ...]
    jenkins_job: str
    valkyr: bool = False
    input_id: str | None = (
        None  # the job's `input` to answer ([services.X], else [jenkins]); None: the one pending
    )


class DeploySettings(BaseModel):
    """The configuration snapshot a deploy is started with; kept in its history as evidence."""

    model_config = ConfigDict(frozen=True)
    ui_url: str = "http://127.0.0.1:8233"
    namespace: str = "default"
    triage_channel: str = "C0TRIAGE"
    diff_begin: str = "=== DEPLOY DIFF BEGIN ==="
    diff_end: str = "=== DEPLOY DIFF END ==="
    search_attributes: bool = True  # False where the namespace lacks them (the time-skipping test server)
    configs_repo: str = ""  # gov-cloud: the repo holding the version files
    base_branch: str = "master"
    version_file: str = "channel-gov/{service}.yaml"
    pccr_backend: str = "builtin"  # or "github": a PCCR is an issue in pccr_repo
    pccr_repo: str | None = None
    groups: dict[str, GroupSpec] = Field(default_factory=dict)
    timeouts: dict[str, timedelta] = Field(default_factory=dict)
    #: `[webhooks]` of the workers' config: GitHub / Jenkins tell the bridge of changes (docs/operations.md),
    #: so the watchers' polling fallback may stretch to WEBHOOK_POLL_CAP between reads.
    webhooks_github: bool = False
    webhooks_jenkins: bool = False


# ---------------------------------------------------------------------------------------------------
# Messages (SPEC §4)

SYSTEM = "deployctl"  # the actor of the workflow's own audit entries (notes, notify_failed, …)
MAX_COMMENT = 1000  # characters of a comment (SPEC §10)
MAX_ID = 64
SLACK_ID = r"^[UW][A-Z0-9]+$"  # a Slack user id, as people are named everywhere
MAX_PARAMS, MAX_PARAM_VALUE = 200, 10_000


class ActionInput(BaseModel):
    """The one payload of every Signal and Update. `channel` says where it came from (cli, slack, …).

    `issued_at`, `nonce` and `signature` sign it (SPEC §9): the signature covers the payload exactly as
    sent, so the workflow checks the raw payload, not this model (workflows/trust.py)."""

    # Bounds (SPEC §10): nothing a person sends can bloat a history, a status or a Slack message, and a
    # signed payload holds nothing but these fields.
    model_config = ConfigDict(extra="forbid")
    actor: str = Field(min_length=1, max_length=MAX_ID, pattern=SLACK_ID)
    step: Step
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)
    sre: str | None = Field(default=None, max_length=MAX_ID, pattern=SLACK_ID)
    diff_sha256: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=32)
    issued_at: str | None = Field(default=None, max_length=40)
    nonce: str | None = Field(default=None, max_length=64)
    signature: str | None = Field(default=None, max_length=16384)


class ActionResult(BaseModel):
    accepted: bool
    step: Step
    action: Action
    message: str


class AuditEntry(BaseModel):
    time: datetime
    step: Step
    action: str
    actor: str
    channel: str
    accepted: bool
    reason: str | None = None
    role: str | None = None
    comment: str | None = None
    #: Who the entry's author is known to be (SPEC §9): "ssh:SHA256:…" (a key of the actor),
    #: "slack-bridge:SHA256:…" (a Slack click the bridge verified), "jenkins:<user>", "github:<login>",
    #: "claimed" (nobody checked), or "deployctl" (the workflow's own note).
    identity: str = "claimed"
    payload: dict[str, Any] | None = None  # accepted signed entries: the body that was signed
    signature: str | None = None
    key: str | None = None  # the public key the signature verified with (for `deployctl verify`)
    out_of_policy: bool = False  # done outside deployctl by someone the step did not wait on


class Roster(BaseModel):
    """Who was eligible to act when a step started, and the group rosters as resolved then."""

    step: Step
    time: datetime
    eligible: list[str]
    groups: dict[str, list[str]] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# The deploy workflow's input and its status document (SPEC §5)


class ReleaseWindow(BaseModel):
    name: str
    start: datetime
    end: datetime


class StartIntent(BaseModel):
    """What a start carries: only the caller's intent, signed like an action (SPEC §9). Who approves,
    which job runs and which repos are written come from the workers' config (`Rules`), never from here.
    The workflow receives it as sent (a plain mapping) and checks its signature over exactly that."""

    model_config = ConfigDict(extra="forbid")
    process: Process
    service: str = Field(min_length=1, max_length=100)
    environment: str = Field(min_length=1, max_length=100)
    params: dict[str, str] = Field(max_length=MAX_PARAMS)
    version: str | None = Field(default=None, max_length=100)
    release: str | None = Field(default=None, max_length=100)  # the window's name; None: the next eligible
    actor: str = Field(min_length=1, max_length=MAX_ID, pattern=SLACK_ID)  # the requester: a code owner
    channel: str | None = Field(default=None, max_length=32)
    issued_at: str | None = Field(default=None, max_length=40)
    nonce: str | None = Field(default=None, max_length=64)
    signature: str | None = Field(default=None, max_length=16384)

    @field_validator("params")
    @classmethod
    def _bounded_params(cls, params: dict[str, str]) -> dict[str, str]:
        for name, value in params.items():
            if not 0 < len(name) <= 200 or len(value) > MAX_PARAM_VALUE:
                raise ValueError(
                    f"parameter {name[:40]!r}: names are 1 to 200 characters, values at most {MAX_PARAM_VALUE:,}"
                )
        return params


class PersonSpec(BaseModel):
    """A person as the workers know them: the keys whose signatures are theirs, and their other names."""

    model_config = ConfigDict(frozen=True)
    ssh_keys: tuple[str, ...] = ()  # OpenSSH public key lines: the config's, then GitHub's signing keys
    github_login: str | None = None
    jenkins_user: str | None = None


class RulesInput(BaseModel):
    service: str
    environment: str


class Rules(BaseModel):
    """The rules of one deploy, as the worker pool's config gives them (read by an activity)."""

    config_path: str
    config_sha256: str
    refusal: str | None = None  # the service or environment is not configured on the workers
    service: ServiceSpec | None = None
    cloud: Cloud | None = None
    settings: DeploySettings = Field(default_factory=lambda: DeploySettings())
    windows: list[ReleaseWindow] = Field(default_factory=list)
    lead_time_days: int = 14
    people: dict[str, PersonSpec] = Field(default_factory=dict)
    bridge_keys: tuple[str, ...] = ()
    require_signed: bool = True
    max_signature_age: timedelta = timedelta(minutes=5)
    notes: list[str] = Field(default_factory=list)  # what could not be read (a GitHub user's keys …)


class DeployPlan(BaseModel):
    """A deploy as the workflow runs it: the start's intent joined with the workers' rules."""

    process: Process
    service: ServiceSpec
    environment: str
    cloud: Cloud
    params: dict[str, str]  # what the PCCR gives: never a password parameter (SPEC §10)
    #: The job's password parameters, by name only: the worker that triggers the build reads their values
    #: from its environment (`policy.secret_env`); they are shown as `policy.SECRET_SHOWN`.
    secret_params: list[str] = Field(default_factory=list)
    version: str | None = None
    requested_by: str
    settings: DeploySettings
    window: ReleaseWindow | None = None  # release process: the window it deploys in
    next_window: ReleaseWindow | None = None  # named when the window closes before the deploy is done


class BuildInfo(BaseModel):
    queue_id: int | None = None
    number: int | None = None
    url: str | None = None
    diff: str | None = None
    diff_sha256: str | None = None
    result: str | None = None


class Pccr(BaseModel):
    id: str
    url: str
    state: str = "pending-review"
    #: What the reviewers approve: the PCCR's parameters, a password parameter as
    #: "(secret, supplied by the worker)" (SPEC §10; `DeployStatus.secret_params` names them).
    params: dict[str, str] = Field(default_factory=dict)
    backend: str = "builtin"
    number: int | None = None  # the GitHub issue, with the github backend
    vp_approved_by: str | None = None


class DeployStatus(BaseModel):
    workflow_id: str
    process: Process
    cloud: Cloud | None  # None only until the workers' rules are read, in the first second
    service: str
    environment: str
    step: Step
    waiting_on: list[str]
    allowed_actions: list[Action]
    pccr: Pccr | None = None
    build: BuildInfo = Field(default_factory=BuildInfo)
    version_pr: str | None = None
    # The version PR's head and the sha256 of its diff as the SRE was last shown them (version_pr_merge):
    # the merge is pinned to that head, and `merge --diff-sha256` must name that diff.
    version_pr_head_sha: str | None = None
    version_pr_diff_sha256: str | None = None
    version: str | None = None
    release_window: ReleaseWindow | None = None
    blocked_by: str | None = None  # past trigger, the deploy of the same service and environment it waits for
    sre: str | None = None
    outcome: Outcome | None = None
    outcome_reason: str | None = None
    slack_thread: str | None = None
    ui_url: str | None = None
    waiting_for: str | None = None  # one line: what the deploy waits for now (the outside world or people)
    waiting_since: datetime | None = None  # since when it waits for that
    rosters: list[Roster] = Field(default_factory=list)
    config_sha256: str | None = None  # the workers' config file the rules were last read from
    secret_params: list[str] = Field(default_factory=list)  # the job's password parameters, once read
    refused_not_kept: int = 0  # refused actions past the audit trail's cap, counted only
    audit: list[AuditEntry] = Field(default_factory=list)


class DeployResult(BaseModel):
    outcome: Outcome
    reason: str | None = None
    # The final status document, audit trail and rosters included, so a finished deploy's audit is read
    # from its result, not by replaying its history. None: the deploy finished before this field, or its
    # status outgrew RESULT_STATUS_MAX (the audit then reads it as it reads a running deploy).
    status: DeployStatus | None = None


# ---------------------------------------------------------------------------------------------------
# The lock workflow (workflows/lock.py): its input, signals, query and the activity that asks it


class LockRequest(BaseModel):
    deploy_id: str


class LockUpdate(BaseModel):
    granted: bool
    holder: str | None = None  # who holds it while we wait


class LockCall(BaseModel):
    service: str
    environment: str
    deploy_id: str


class LockState(BaseModel):
    holder: str | None = None
    queue: list[str] = []


# ---------------------------------------------------------------------------------------------------
# Outside events (webhooks): "look again now", never a verdict

OUTSIDE_EVENT = "outside_event"  # the Signal's name
MAX_EVENT_DETAIL = 200  # characters of an event's detail kept (SPEC §10)
#: Seconds between a watcher's reads after its first minute, when webhooks of its system are configured:
#: a missed webhook is still noticed within this long.
WEBHOOK_POLL_CAP = 300.0


class OutsideEvent(BaseModel):
    """Signal `outside_event`: GitHub or Jenkins said something changed (a webhook the bridge verified).

    It carries no verdict, only "look again now": the open step's watcher reads the real state again
    at once through its activity, so a forged or replayed event costs at most one extra read."""

    model_config = ConfigDict(frozen=True)

    system: Literal["github", "jenkins"]
    detail: str = Field(default="", max_length=MAX_EVENT_DETAIL)


# ---------------------------------------------------------------------------------------------------
# A click on a deployctl button (workflows/slack_blocks.py draws and parses them; the bridge acts)


class Click(BaseModel):
    """One click on a deployctl button or menu, read from the `block_actions` payload Slack signed."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str = Field(min_length=1)
    step: Step
    action: Action
    sre: str | None = None  # the user picked in the SRE menu
    diff_sha256: str | None = None  # the diff the button was shown with ("Diff is correct", "Merge …")
    user_id: str = Field(min_length=1)  # who clicked
    channel_id: str | None = None  # where the clicked message is (D… for a DM)
    message_ts: str | None = None  # the clicked message
    response_url: str | None = None


# ---------------------------------------------------------------------------------------------------
# Activity inputs and results


class JobParameter(BaseModel):
    name: str
    type: str = "StringParameterDefinition"
    default: str | None = None
    choices: list[str] | None = None


class JobParametersInput(BaseModel):
    job: str


class JobParametersResult(BaseModel):
    job: str
    parameters: list[JobParameter]


class TriggerBaseline(BaseModel):
    """What the job had before this deploy triggered it: its builds and queue items are not ours."""

    job: str
    last_build: int = 0
    queued: list[int] = Field(default_factory=list)


class TriggerBuildInput(BaseModel):
    job: str
    params: dict[str, str]
    #: Password parameters by name: the activity reads each value from `DEPLOYCTL_PARAM_<NAME>` in the
    #: worker's environment when it runs, so no value is ever in the workflow's history.
    secret_params: list[str] = Field(default_factory=list)
    not_before: datetime  # a build or queue item of ours is newer than this (idempotency window)
    baseline: TriggerBaseline | None = None  # when given: ours is newer than the baseline (not a clock)


class TriggerBuildResult(BaseModel):
    queue_id: int | None = None
    number: int | None = None
    url: str | None = None
    reused: bool = False


class WaitBuildStartedInput(BaseModel):
    job: str
    queue_id: int


class BuildRef(BaseModel):
    job: str
    number: int
    url: str | None = None


class ReadDiffInput(BaseModel):
    job: str
    number: int
    diff_begin: str
    diff_end: str


class ReadDiffResult(BaseModel):
    diff: str
    diff_sha256: str
    console_url: str


class InputActionInput(BaseModel):
    job: str
    number: int
    input_id: str | None = None  # None: the build's one pending input, whatever Jenkins named it
    decision: Literal["proceed", "abort"]


class InputActionResult(BaseModel):
    done: bool  # we answered it
    answered_elsewhere: bool = False  # nothing was pending any more: someone answered in Jenkins
    detail: str = ""
    refused: str | None = None  # not answered: which input to answer is unclear (the line says why)
    answered_by: str | None = None  # answered_elsewhere: the Jenkins user the console names


InputState = Literal["not_reached", "pending", "unclear", "answered", "ended"]


class WatchInputInput(BaseModel):
    job: str
    number: int
    input_id: str | None = None
    known: InputState = "pending"  # what the workflow knows; the watcher returns when Jenkins differs
    known_detail: str = ""  # with `unclear`: the line already reported
    settle_seconds: float = 20.0  # `not_reached` is reported only once it lasts this long
    #: Webhooks configured: after the first minute, read at most this often (seconds); None: the worker's
    #: own interval throughout.
    poll_cap: float | None = None


class WatchInputResult(BaseModel):
    build_result: str | None = None
    state: InputState = "answered"
    detail: str = ""  # one line: what Jenkins shows (`unclear`: which inputs wait, and why none is ours)
    answered_by: str | None = None  # `answered`: the Jenkins user the console names ("Approved by …")
    answer: str | None = None  # `answered`: proceed | abort | stop, as the console says

    @property
    def pending(self) -> bool:
        """The build still waits before its input, or at it."""
        return self.state in ("not_reached", "pending", "unclear")


class BuildResultInput(BaseModel):
    job: str
    number: int


class BuildResult(BaseModel):
    number: int
    result: str  # SUCCESS | FAILURE | UNSTABLE | ABORTED | NOT_BUILT
    url: str | None = None


class AbortBuildInput(BaseModel):
    job: str
    number: int | None = None
    queue_id: int | None = None
    input_id: str | None = None


class SlackPostInput(BaseModel):
    channel: str
    text: str
    thread_ts: str | None = None
    blocks: list[dict] | None = None
    # Set it to make the post idempotent: a message of ours with this key already in the thread (or among
    # the channel's latest) is returned instead of posting again. Needs the *:history scopes.
    dedupe_key: str | None = None


class SlackPostResult(BaseModel):
    channel: str
    ts: str
    reused: bool = False  # the message was already there (dedupe_key); nothing was posted


class SlackUpdateInput(BaseModel):
    channel: str
    ts: str
    text: str
    blocks: list[dict] | None = None


class UsergroupInput(BaseModel):
    usergroup: str


class UsergroupResult(BaseModel):
    usergroup: str
    users: list[str]


# ---------------------------------------------------------------------------------------------------
# GitHub


class OpenVersionPrInput(BaseModel):
    """Set `version:` in `path` on a new branch `branch` (deterministic, e.g. "deployctl/<workflow id>")
    cut from `base_branch`, and open a PR for it. Idempotent for a given `branch`."""

    repo: str  # "owner/name"
    base_branch: str = "master"
    path: str  # with `{service}` already replaced
    version: str
    branch: str
    title: str
    body: str = ""
    commit_message: str | None = None  # defaults to `title`


class VersionPr(BaseModel):
    number: int
    url: str  # html_url
    head_sha: str
    branch: str
    state: str  # open | closed
    merged: bool = False
    reused: bool = False  # open_version_pr found the PR already there (an earlier attempt opened it)
    base_branch: str | None = None
    mergeable: bool | None = None  # None while GitHub has not computed it
    mergeable_state: str | None = None  # clean | dirty | blocked | behind | unstable | unknown …
    merged_by: str | None = None
    merge_commit_sha: str | None = None


class PrRefInput(BaseModel):
    """A pull request or issue: `number` in `repo`."""

    repo: str
    number: int


class WatchPrInput(PrRefInput):
    """`watch_pr`'s input: the PR, and the polling fallback's stretch (a `PrRefInput` of an older history
    reads as one with no stretch)."""

    #: Webhooks configured: after the first minute, read at most this often (seconds); None: the worker's
    #: own interval throughout.
    poll_cap: float | None = None


class MergePrInput(BaseModel):
    repo: str
    number: int
    sha: str | None = None  # the head sha the approver saw; GitHub refuses (409) if the head moved
    method: Literal["squash", "merge", "rebase"] = "squash"
    title: str | None = None


class MergePrResult(BaseModel):
    merged: bool  # the PR is merged now (by us, or already)
    sha: str | None = None  # the merge commit
    already_merged: bool = False  # it was merged before we asked (on GitHub, or by a lost earlier attempt)
    refused_reason: str | None = None  # GitHub's message when it refused to merge; the PR stays as it was
    merged_by: str | None = None  # who merged it, when already_merged
    head_sha: str | None = None  # refused: the PR's head as GitHub shows it after refusing (moved?)


class PrDiffInput(BaseModel):
    """Read a PR's head and its diff; `limit`: the characters of the diff to return at most."""

    repo: str
    number: int
    limit: int = 4000


class PrDiff(BaseModel):
    """What the SRE is shown before merging (SPEC §10): the diff of exactly one head commit."""

    head_sha: str  # the head these files were read at (read before and after: it did not move)
    diff: str  # the first `limit` characters of the diff (file headers and GitHub's patches)
    chars: int  # characters of the whole diff as read
    files: int  # files GitHub listed
    changed_files: int  # files GitHub says the PR changes (more than `files` past its 3,000-file limit)
    no_patch: list[str] = Field(default_factory=list)  # files GitHub gives no patch for (binary, too large)
    files_url: str  # the PR's "Files changed" page
    # The hex sha256 of the head sha, a newline and the whole diff text as read (UTF-8), not only the `diff`
    # shown (activities/github.py `pr_diff_sha256`): what the SRE's merge button and `merge --diff-sha256`
    # bind to. None in runs whose diff was read before it existed.
    diff_sha256: str | None = None


class OpenIssueInput(BaseModel):
    """Open the PCCR issue once: `marker` (the workflow id) identifies it across retries."""

    repo: str
    title: str
    body: str
    labels: list[str] = Field(default_factory=list)
    marker: str


class IssueRef(BaseModel):
    number: int
    url: str  # html_url
    state: str
    reused: bool = False
    labels: list[str] = Field(default_factory=list)


class CommentInput(BaseModel):
    """Comment once: a comment carrying `marker` (unique per comment) already there is not repeated."""

    repo: str
    number: int
    body: str
    marker: str


class LabelsInput(BaseModel):
    """Add `labels` to the issue and take `remove` off it; labels missing in the repo are created."""

    repo: str
    number: int
    labels: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)
