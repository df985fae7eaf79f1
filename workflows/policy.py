"""Policy as plain functions: who may act, which actions a step takes, separation of duties, params.

Every refusal is one line that says why and what to do. The workflow's validators, its Signal handlers
and the CLI's pre-checks all call these; nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from workflows.models import Action, ActionInput, Cloud, JobParameter, ReleaseWindow, Role, Step
from workflows.steps import CANCELLERS, StepDef, sre_group, step_def

#: A version a deploy may pin (SPEC §10): no quotes, spaces, `#` or line breaks, so every quoting style of
#: the version file's `version:` line can carry it unchanged and no message can make markup of it.
#: Checked with `fullmatch` (`match`/`$` would let "1.2.3\n" through).
PLAIN_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}")


#: The approving roles (SPEC §9): in one deploy a person holds at most one of them.
APPROVING: dict[Role, str] = {
    Role.VP: "vp",
    Role.GATEKEEPER: "pccr-gatekeeper",
    Role.ASSIGNED_SRE: "sre",
}


@dataclass(frozen=True)
class Parties:
    """The people around one deploy: its code owners, the groups' rosters, the SRE once assigned, and the
    approving role each person already held in it (whole-chain separation of duties)."""

    code_owners: tuple[str, ...]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    assigned_sre: str | None = None
    held: Mapping[str, str] = field(default_factory=dict)

    def members(self, role: Role) -> tuple[str, ...]:
        if role is Role.CODE_OWNER:
            return self.code_owners
        if role is Role.ASSIGNED_SRE:
            return (self.assigned_sre,) if self.assigned_sre else ()
        return self.groups.get(role.value, ())


def eligible(defn: StepDef | None, parties: Parties) -> list[str]:
    """Who may act at a step now. A code owner never acts in another role on their own deploy."""
    if defn is None or defn.actor is None:
        return []
    members = parties.members(defn.actor)
    if defn.actor is Role.CODE_OWNER:
        return list(members)
    role = APPROVING.get(defn.actor)
    return [
        m
        for m in members
        if m not in parties.code_owners and (role is None or parties.held.get(m, role) == role)
    ]


def role_clash(actor: str, role: str, parties: Parties) -> str | None:
    """Why `actor` may not take approving `role` here: they already held another one in this deploy."""
    held = parties.held.get(actor)
    if held is None or held == role:
        return None
    return (
        f"separation of duties: {actor} already acted as {held} on this deploy and may not also act as {role}"
    )


def may_cancel(actor: str, parties: Parties) -> bool:
    return any(actor in parties.members(role) for role in CANCELLERS)


def allowed_actions(defn: StepDef | None, finished: bool, busy: bool) -> list[Action]:
    """The actions the current step takes, plus `cancel` before `deploying`."""
    if finished or defn is None:
        return []
    actions = [] if busy else list(defn.actions)
    if defn.step is not Step.DEPLOYING:
        actions.append(Action.CANCEL)
    return actions


@dataclass(frozen=True)
class Situation:
    """What the policy needs to know about a deploy to judge one action."""

    service: str
    cloud: Cloud
    steps: tuple[StepDef, ...]
    step: Step
    parties: Parties
    finished: bool = False
    busy: bool = False  # the step's action was accepted and its effect is under way
    diff_sha256: str | None = None  # the build's diff, as the owner's DM shows it (diff_validation)
    pr_diff_sha256: str | None = None  # the version PR's diff, as the SRE's DM shows it (version_pr_merge)


def _who(ids: list[str] | tuple[str, ...]) -> str:
    return ", ".join(ids) if ids else "nobody yet"


def refusal(action: Action, msg: ActionInput, s: Situation) -> str | None:
    """None when `msg` may do `action` now, else the one-line reason it is refused."""
    reason = _refusal(action, msg, s)
    return one_line(reason) if reason is not None else None


def one_line(text: str, limit: int = 400) -> str:
    """What a person sent is repeated in a reason: keep it on one line and of a readable length."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _refusal(action: Action, msg: ActionInput, s: Situation) -> str | None:
    if s.finished:
        return f"the deploy is already finished; {action.value} changes nothing"
    if msg.step is not s.step:
        return (
            f"stale step: the deploy is at {s.step.value}, not {msg.step.value}; "
            "run `deployctl status` and act on the current step"
        )
    defn = step_def(s.steps, s.step)
    if action is Action.CANCEL:
        if s.step is Step.DEPLOYING:
            return "the job is already applying; cancel is allowed only before deploying"
        if not may_cancel(msg.actor, s.parties):
            return f"{msg.actor} may not cancel: only the code owners and the pccr-gatekeepers may"
        return None
    if defn is None or action not in defn.actions:
        offered = ", ".join(a.value for a in defn.actions) if defn else ""
        return f"{action.value} is not an action of step {s.step.value}" + (
            f" (it takes: {offered})" if offered else " (nobody acts here; wait for it)"
        )
    if s.busy:
        return (
            f"{s.step.value} takes no action right now (it is starting, or its action is being carried out); "
            "retry in a moment or check `deployctl status`"
        )
    assert defn.actor is not None
    if defn.actor is not Role.CODE_OWNER and msg.actor in s.parties.code_owners:
        return (
            f"separation of duties: {msg.actor} is a code owner of {s.service} "
            f"and may not {action.value} at {s.step.value} on their own deploy"
        )
    may = eligible(defn, s.parties)
    if msg.actor not in may:
        role = APPROVING.get(defn.actor)
        if role and msg.actor in s.parties.members(defn.actor):
            clash = role_clash(msg.actor, role, s.parties)
            if clash:
                return clash
        return (
            f"{msg.actor} may not {action.value} at {s.step.value}: "
            f"it waits on {defn.actor.value} ({_who(may)})"
        )
    if action is Action.ASSIGN:
        return _assign_refusal(msg, s)
    if action is Action.VALIDATE_DIFF and msg.diff_sha256 is not None:
        if s.diff_sha256 is None:
            return "there is no diff yet to validate"
        if msg.diff_sha256.lower() != s.diff_sha256:
            return (
                f"diff_sha256 {msg.diff_sha256[:12]}… is not the build's diff ({s.diff_sha256[:12]}…); "
                "read the console again"
            )
    if action is Action.MERGE and msg.diff_sha256 is not None:
        return _stale_pr_diff(msg.diff_sha256, s.pr_diff_sha256)
    return None


def _stale_pr_diff(given: str, shown: str | None) -> str | None:
    """A merge that names the diff its sender was shown (the button's, or `--diff-sha256`) is refused
    unless that is the version PR's diff the workflow shows now: after the branch moved, a click on an
    old DM or a command typed from one merges nothing (SPEC §4, §10)."""
    if shown is None:
        return (
            "this deploy knows no sha256 of the version PR's diff (it was read before deployctl kept one); "
            "merge without --diff-sha256 to merge the head shown in your latest DM"
        )
    if given.lower() != shown:
        return (
            f"stale: the version PR's diff changed since the one you were shown (diff sha256 {given[:12]}…, "
            f"now {shown[:12]}…); nothing was merged: review the new DM, then merge from it"
        )
    return None


def _assign_refusal(msg: ActionInput, s: Situation) -> str | None:
    group = sre_group(s.cloud)
    if not msg.sre:
        return "assign needs the SRE: pass --sre USER_ID"
    if msg.sre in s.parties.code_owners:
        return f"separation of duties: {msg.sre} is a code owner of {s.service} and cannot be its SRE"
    if msg.sre == msg.actor and msg.actor not in s.parties.code_owners:
        return f"separation of duties: {msg.actor} assigns the SRE and cannot assign themselves"
    clash = role_clash(msg.sre, APPROVING[Role.ASSIGNED_SRE], s.parties)
    if clash:
        return f"{clash.removesuffix(' and may not also act as sre')} and cannot be its SRE"
    roster = s.parties.groups.get(group, ())
    if msg.sre not in roster:
        return f"{msg.sre} is not in {group}; assign one of: {_who(roster)}"
    return None


# Password parameters (SPEC §10): never in a params file, a PCCR, a history, a log or an audit. The
# worker that triggers the build reads each one's value from its own environment, at that moment.

#: What a reviewer, the status, the audit and the Web UI see in place of a password parameter's value.
SECRET_SHOWN = "(secret, supplied by the worker)"
#: The worker reads password parameter NAME from the environment variable `secret_env(NAME)`.
SECRET_ENV_PREFIX = "DEPLOYCTL_PARAM_"


def is_password(p: JobParameter) -> bool:
    """A parameter whose value Jenkins keeps secret: core's `PasswordParameterDefinition` (Jenkins reports
    the simple class name as `type`, so the Mask Passwords plugin's class of that name is one too), or any
    other `…PasswordParameterDefinition`: taking one for a secret is the safe mistake."""
    return p.type.endswith("PasswordParameterDefinition")


def secret_env(name: str) -> str:
    """The environment variable a worker reads password parameter `name` from: `DEPLOYCTL_PARAM_` and the
    name upper-cased, every character other than A-Z, 0-9 and `_` replaced by `_` (`db-password` →
    `DEPLOYCTL_PARAM_DB_PASSWORD`, `Db.Pass` → `DEPLOYCTL_PARAM_DB_PASS`)."""
    return SECRET_ENV_PREFIX + "".join(
        c if ("A" <= c <= "Z" or "0" <= c <= "9" or c == "_") else "_" for c in name.upper()
    )


def password_names(definitions: list[JobParameter]) -> list[str]:
    """The job's password parameters, in the job's order."""
    return [p.name for p in definitions if is_password(p)]


def shown_params(params: Mapping[str, str], secrets: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The parameters as people see them: every password parameter as `SECRET_SHOWN`, whatever was given."""
    return {**dict(params), **dict.fromkeys(secrets, SECRET_SHOWN)}


def secret_refusal(definitions: list[JobParameter], params: Mapping[str, str], job: str) -> str | None:
    """A password parameter of the job in the params (its value must come from the worker), or two
    password parameters that would read the same environment variable; None when neither."""
    secrets = password_names(definitions)
    given = sorted(n for n in secrets if n in params)
    if given:
        names, envs = ", ".join(given), ", ".join(secret_env(n) for n in given)
        what = "is a password parameter" if len(given) == 1 else "are password parameters"
        them = "it" if len(given) == 1 else "them"
        return (
            f"{names} {what} of job {job}: the worker supplies {them} from {envs}; "
            f"take {them} out of the params file"
        )
    by_env: dict[str, list[str]] = {}
    for n in secrets:
        by_env.setdefault(secret_env(n), []).append(n)
    clash = next(((env, ns) for env, ns in sorted(by_env.items()) if len(ns) > 1), None)
    if clash:
        env, ns = clash
        return (
            f"password parameters {', '.join(ns)} of job {job} would all be read from {env}: "
            "rename one of them in the job"
        )
    return None


def params_refusal(
    definitions: list[JobParameter], params: dict[str, str], job: str, passwords: bool = True
) -> str | None:
    """The PCCR must give a value for every parameter the job defines, and nothing else; a password
    parameter's value comes from the worker, never from the PCCR (`secret_refusal`). `passwords=False`
    is the rule before that (deploys started then replay by it: a password was one more parameter)."""
    if passwords:
        secret = secret_refusal(definitions, params, job)
        if secret:
            return secret
    defined = [p.name for p in definitions if not (passwords and is_password(p))]
    missing = [n for n in defined if n not in params]
    unknown = sorted(n for n in params if n not in defined)
    problems = []
    if missing:
        problems.append("missing " + ", ".join(missing))
    if unknown:
        problems.append("unknown " + ", ".join(unknown))
    for p in definitions:
        if p.choices and p.name in params and params[p.name] not in p.choices:
            problems.append(f"{p.name}={params[p.name]!r} is not one of {', '.join(p.choices)}")
    if not problems:
        return None
    return f"params do not match Jenkins job {job}: " + "; ".join(problems)


def param_text(value: object) -> str | None:
    """A parameter value as the text Jenkins receives: booleans as true/false, numbers as decimal text.
    The one rule for None: it is no value, and stays None (a password Jenkins does not show; a key left
    empty in a params file, which `params_as_text` sends as the empty text)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def params_as_text(raw: object) -> dict[str, str]:
    """A params file's mapping as the text Jenkins receives (`param_text`); a key with no value is ""."""
    if not isinstance(raw, dict):
        raise ValueError("params must be a mapping of parameter name to value")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"parameter name {key!r} must be a non-empty string")
        if not isinstance(value, str | int | float | bool | None):
            raise ValueError(
                f"parameter {key!r} must be a string, number or boolean, not {type(value).__name__}"
            )
        out[key] = param_text(value) or ""
    return out


def start_refusal(
    cloud: Cloud, valkyr: bool, version: str | None, service: str, actor: str, code_owners: tuple[str, ...]
) -> str | None:
    """Who opens a PCCR (a code owner of the service), the runbook's two policies on versions, and the
    form of a version (PLAIN_VERSION)."""
    if actor not in code_owners:
        return f"{actor} is not a code owner of {service}; a code owner ({', '.join(code_owners)}) opens its PCCR"
    if valkyr and version:
        return (
            f"{service} is on valkyr CI/CD and may not pin a version; "
            "revert master to a working version instead and deploy without --version"
        )
    if cloud is Cloud.GOV and not version:
        return "a gov-cloud deploy needs --version: the version PR sets it in the configs repo"
    if version is not None and not PLAIN_VERSION.fullmatch(version):
        return (
            f"version {version[:40]!r} is not a plain version: 1 to 128 letters, digits, '.', '_', '+' "
            "or '-', starting with a letter or digit"
        )
    return None


def last_planning_day(window: ReleaseWindow, lead_days: int) -> str:
    return (window.start - timedelta(days=lead_days)).date().isoformat()


def eligible_windows(windows: list[ReleaseWindow], now: datetime, lead_days: int) -> list[ReleaseWindow]:
    """The windows a deploy can still be planned into: opening at least `lead_days` from now."""
    return sorted((w for w in windows if w.start >= now + timedelta(days=lead_days)), key=lambda w: w.start)


def choose_window(
    windows: list[ReleaseWindow], name: str | None, now: datetime, lead_days: int
) -> tuple[ReleaseWindow | None, str | None]:
    """The window a release deploy goes into (the named one, else the next eligible), or why not."""
    ok = eligible_windows(windows, now, lead_days)
    nxt = (
        f"the next eligible window is {ok[0].name} (opens {ok[0].start:%Y-%m-%d %H:%M} UTC, "
        f"plan by {last_planning_day(ok[0], lead_days)})"
        if ok
        else "no configured window is far enough ahead; add one to [release] windows"
    )
    if name is None:
        return (
            (ok[0], None) if ok else (None, f"no release window opens at least {lead_days} days ahead: {nxt}")
        )
    chosen = next((w for w in windows if w.name == name), None)
    if chosen is None:
        return None, f"no release window named {name}; {nxt}"
    if chosen not in ok:
        return None, (
            f"release window {name} opens {chosen.start:%Y-%m-%d %H:%M} UTC, less than {lead_days} days ahead "
            f"(last planning day was {last_planning_day(chosen, lead_days)}); {nxt}"
        )
    return chosen, None


def window_after(windows: list[ReleaseWindow], window: ReleaseWindow) -> ReleaseWindow | None:
    later = sorted((w for w in windows if w.start > window.start), key=lambda w: w.start)
    return later[0] if later else None


#: The kinds of refusal, for the `deployctl_refusals{reason}` metric (a label must not carry free text).
_KINDS = (
    ("unsigned action", "unsigned"),
    ("signature is", "signature_age"),
    ("nonce", "nonce"),
    ("signature", "signature"),
    ("signed by", "signature"),
    ("has no signing keys", "signature"),
    ("issued_at", "signature"),
    ("channel slack", "signature"),
    ("separation of duties", "separation_of_duties"),
    ("stale step", "stale_step"),
    ("bad payload", "bad_payload"),
    ("may not", "role"),
    ("takes no action right now", "busy"),
    ("already finished", "finished"),
    ("the deploy is starting", "starting"),
    ("is not an action of step", "wrong_action"),
    ("diff_sha256", "diff"),
)


def refusal_kind(reason: str) -> str:
    return next((kind for prefix, kind in _KINDS if prefix in reason), "other")
