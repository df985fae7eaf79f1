"""Everything a running deploy knows, in one dataclass.

The workflow (workflows/deploy.py) owns one `DeployState`; its helpers (effects, watchers, notices, the
audit trail, the view) are functions of it. Nothing here does anything: the workflow's own state, laid
out so that a reader sees it all in one place.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from workflows import trust
from workflows.models import (
    Action,
    ActionInput,
    AuditEntry,
    BuildInfo,
    DeployPlan,
    InputState,
    Outcome,
    Pccr,
    PrDiff,
    Roster,
    Rules,
    StartIntent,
    Step,
    VersionPr,
)
from workflows.outbox import Outbox
from workflows.steps import StepDef


@dataclass
class Accepted:
    """An action the workflow accepted, waiting for the step to carry it out."""

    action: Action
    msg: ActionInput


@dataclass
class DeployState:
    raw: dict[str, Any]  # the start's input as it came (its signature covers it)
    intent: StartIntent  # the start's intent; a placeholder when `bad_start` says why it is not one
    bad_start: str | None
    plan: DeployPlan  # the intent joined with the workers' rules (a placeholder until `ruled`)
    steps: tuple[StepDef, ...]
    step: Step
    name: str  # "svc to env (process)", as every message names the deploy
    outbox: Outbox  # the notices, sent one at a time (workflows/outbox.py)

    # -- admission and the rules (SPEC §9)
    ruled: bool = False  # the rules are read and the start admitted
    admission: str | None = None  # "" admitted; else why the start was refused
    rules: Rules | None = None
    keys: trust.Keys = field(default_factory=lambda: trust.Keys(people={}, bridge=()))
    nonces: set[str] = field(default_factory=set)  # of signed actions accepted (a replay is refused)

    # -- the open step and the actions it takes
    busy: bool = True  # no step takes actions until it opens
    inbox: Accepted | None = None  # the step's accepted action, until carried out
    cancel: Accepted | None = None
    step_started: datetime | None = None
    deadline: tuple[datetime, str] | None = None  # the open step's expiry and its reason, set once
    marks: int = 0  # how many of the step's reminder, escalation and expiry have passed
    # the open step's watcher (workflows/watchers.py), the step it watches, and how often an outside event
    # (a webhook) restarted it at this step; event notes kept in the audit trail in all (bounded)
    watcher: asyncio.Task[bool] | None = None
    watching: StepDef | None = None
    restarts: int = 0
    event_notes: int = 0

    # -- who
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # rosters, captured as steps open
    sre: str | None = None
    held: dict[str, str] = field(default_factory=dict)  # person → the approving role they held here

    # -- the outcome and the audit trail
    outcome: Outcome | None = None
    reason: str | None = None
    audit: list[AuditEntry] = field(default_factory=list)
    refused_kept: int = 0
    refused_dropped: int = 0  # refused actions beyond MAX_REFUSED: counted, not kept
    rosters: list[Roster] = field(default_factory=list)

    # -- what the deploy opened on the outside world
    build: BuildInfo = field(default_factory=BuildInfo)
    pccr: Pccr | None = None
    pccr_ops: int = 0  # PCCR comments and labels sent (each comment's idempotency marker)
    thread_ts: str | None = None  # the triage thread's root message
    triage_text: str = ""
    version_pr: VersionPr | None = None
    pr_diff: PrDiff | None = None  # the PR's head and diff the SRE was shown; merged at that sha
    merge_verdict: str | None = None  # "" merged; else GitHub's reason for refusing
    window_open: bool = False
    lock: str = "none"  # none | requested | granted
    blocked_by: str | None = None  # the deploy holding the lock

    # -- what it waits for on the outside world (status `waiting_for`), each with the time it began:
    # the activity running now, then what Jenkins or GitHub show that holds the step up
    activity_wait: tuple[str, datetime] | None = None
    rate_limited: str | None = None  # while a call waits out a rate limit: what status says of it
    outside: tuple[str, datetime] | None = None
    jenkins_answer: str | None = None  # who answered the input in Jenkins, as the console says
    input_seen: tuple[InputState, str] = ("pending", "")  # deploy_approval: the input as last reported
    published: tuple[Any, ...] = ()  # the search attributes last upserted
