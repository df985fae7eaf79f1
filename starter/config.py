"""deployctl's configuration: the TOML file (SPEC §2), its environment overrides, and the secrets.

`load_config()` reads the file named by `--config`, `DEPLOYCTL_CONFIG` or `./deployctl.toml`, validates
all of it with pydantic and turns every problem into a `ConfigError` whose text is one line naming the
file, the key and what to do. The CLI and the worker print that line and exit 2. A file that is valid
key by key but cannot work is refused too: a group that a configured environment's or service's deploys
wait on must be configured, and must have someone in it who may act (not only the service's code owners).
Every URL (`ui_url`, `[jenkins] url`, `[github] api_url`, `[slack] api_url` and the variables that
override them) is refused with a user name or password in it, and with plain `http://` to anything but a
loopback address (SPEC §10); the refusal shows the URL with its userinfo as `***`.

Secrets are never part of `Config`: `secret()` reads them from the environment when they are needed,
so they cannot reach a workflow input, a history, a repr or a log through the configuration.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from workflows.models import (
    Cloud,
    DeploySettings,
    GroupSpec,
    PersonSpec,
    Process,
    ReleaseWindow,
    Rules,
    ServiceSpec,
    Step,
)
from workflows.steps import TIMEOUTS, sre_group, steps_for, triage_group

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_OVERRIDES",
    "GROUP_NAMES",
    "REQUIRED_GROUPS",
    "SECRET_NAMES",
    "TIMEOUT_DEFAULTS",
    "ChangeRequestsConfig",
    "Config",
    "ConfigError",
    "EnvironmentConfig",
    "GithubConfig",
    "JenkinsConfig",
    "ReleaseConfig",
    "ServiceConfig",
    "SlackConfig",
    "WebhooksConfig",
    "ConfigReader",
    "load_config",
    "parse_duration",
    "secret",
]

DEFAULT_CONFIG_PATH = "deployctl.toml"

#: Environment variables that override a key of the file, and the key they override.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "DEPLOYCTL_UI_URL": ("ui_url",),
    "JENKINS_URL": ("jenkins", "url"),
    "JENKINS_USER": ("jenkins", "user"),
    "GITHUB_API_URL": ("github", "api_url"),
    "SLACK_API_URL": ("slack", "api_url"),
}

#: The groups a `[groups]` table may name; the first two must be there, the others when a deploy needs
#: them (`sre-gov` for a gov-cloud environment, `vp` for a valkyr service: see `groups_needed`).
GROUP_NAMES = ("pccr-gatekeeper", "sre", "sre-gov", "vp")
REQUIRED_GROUPS = ("pccr-gatekeeper", "sre")

#: The waiting steps, each with its default timeout, from the step table (workflows/steps.py).
TIMEOUT_DEFAULTS: dict[Step, timedelta] = TIMEOUTS

SECRET_NAMES = (
    "JENKINS_TOKEN",
    "GITHUB_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "GITHUB_WEBHOOK_SECRET",
    "JENKINS_WEBHOOK_SECRET",
)
_SECRET_HINTS = {
    "JENKINS_TOKEN": "the Jenkins API token of the [jenkins] user",
    "GITHUB_TOKEN": "a GitHub token that can open and merge pull requests in the configs repo",
    "SLACK_BOT_TOKEN": "the Slack app's bot token, xoxb-…",
    "SLACK_SIGNING_SECRET": "the Slack app's signing secret, from its Basic Information page",
    "SLACK_APP_TOKEN": "an app-level token, xapp-…, with connections:write for Socket Mode",
    "GITHUB_WEBHOOK_SECRET": "the secret of the configs repo's webhook, as typed in its GitHub settings",
    "JENKINS_WEBHOOK_SECRET": "the shared secret the deploy job sends in X-Deployctl-Token",
}


def groups_needed(cloud: Cloud, valkyr: bool) -> frozenset[str]:
    """The groups a deploy to `cloud` of a (valkyr) service waits on, by the step table: the groups that
    act at one of its steps, the one its SRE is assigned from and the one its triage message mentions."""
    actors = {d.actor for process in Process for d in steps_for(process, cloud, valkyr) if d.actor}
    acting = {role.value for role in actors if role.value in GROUP_NAMES}
    return frozenset(acting | {sre_group(cloud), triage_group(cloud)})


class ConfigError(Exception):
    """A configuration problem. Its text is one line: what is wrong, where, and what to do."""

    def __init__(self, message: object) -> None:
        lines = (part.strip() for part in str(message).splitlines())
        super().__init__(" ".join(part for part in lines if part))


# ---------------------------------------------------------------------------------------------------
# Values

_DURATION = re.compile(r"([0-9]+)([smhd])")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_DURATION_HELP = 'use an integer followed by s, m, h or d, like "20s", "30m", "4h" or "3d"'


def parse_duration(text: str) -> timedelta:
    """`"20s"`, `"30m"`, `"4h"`, `"3d"` → a timedelta. Anything else raises `ConfigError`."""
    if not isinstance(text, str):
        raise ConfigError(f"invalid duration {_show(text)}: {_DURATION_HELP}")
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ConfigError(f"invalid duration {text!r}: {_DURATION_HELP}")
    try:
        return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})
    except OverflowError:
        raise ConfigError(f"duration {text!r} is too long: {_DURATION_HELP}") from None


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str):
        try:
            duration = parse_duration(value)
        except ConfigError as e:
            raise ValueError(str(e)) from None
    else:
        raise ValueError(f"invalid duration {_show(value)}: write it as a string: {_DURATION_HELP}")
    if duration <= timedelta(0):
        raise ValueError(f"a timeout must be longer than zero: {_DURATION_HELP}")
    return duration


_SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]+")
_SLACK_USERGROUP_ID = re.compile(r"S[A-Z0-9]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


def _user_id(value: str) -> str:
    if not _SLACK_USER_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Slack user id: use ids like U0123ABCD (U or W, then uppercase letters and digits)"
        )
    return value


def _usergroup_id(value: str) -> str:
    if not _SLACK_USERGROUP_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Slack user group id: use ids like S0123ABCD (S, then uppercase letters and digits)"
        )
    return value


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"invalid name {value!r}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return value


_URL_HELP = 'write it like "https://host[:port][/path]"'
#: Everything a refused URL may carry as a user name or password: from after `scheme://` (or the start)
#: to its last `@`. An error line shows it as `***`, so it never echoes a password or token.
_SHOWN_USERINFO = re.compile(r"^(\s*[A-Za-z][A-Za-z0-9+.\-]*://|\s*//)?.*@", re.DOTALL)


def _shown_url(value: str) -> str:
    """`value` as an error line shows it: whatever may be its user name and password replaced by ***."""
    return _SHOWN_USERINFO.sub(lambda m: (m[1] or "") + "***@", value, count=1)


def _loopback(host: str) -> bool:
    """`localhost`, or an address in 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url(value: str, credentials: str) -> str:
    """An http(s) URL with a host, without a user name or password (SPEC §10; `credentials` says where
    they belong instead), and plain http only to a loopback address."""
    shown = _shown_url(value)
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        raise ValueError(
            f"{shown!r} is not a valid URL (its host or port is malformed): {_URL_HELP}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{shown!r} is not an http(s) URL: {_URL_HELP}")
    if "@" in parts.netloc:
        raise ValueError(
            f"{shown!r} has a user name or password in it (user:password@), which would reach logs and "
            f"error messages: remove them from the URL; {credentials}"
        )
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise ValueError(
            f"{shown!r} is plain http to {parts.hostname}, which is not a loopback address: use https://, "
            "or http:// only to 127.0.0.1 (127.0.0.0/8), ::1 or localhost"
        )
    return value


def _url_key(credentials: str) -> AfterValidator:
    """The check of one URL key, whose user and token belong where `credentials` says."""
    return AfterValidator(lambda value: _url(value, credentials))


def _repo(value: str) -> str:
    if not _REPO.fullmatch(value):
        raise ValueError(f'{value!r} is not a GitHub repository: write it as "owner/name"')
    return value


def _some_code_owners(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError(
            "no code owners: nobody could open, validate or trigger this service's deploys; "
            'name at least one Slack user id, like code_owners = ["U0123ABCD"]'
        )
    return value


def _input_id(value: str) -> str:
    if not value.strip():
        raise ValueError(
            "must not be empty: give the id of the job's `input` step, or leave input_id out to answer "
            "the build's one pending input"
        )
    return value


def _public_key(value: str) -> str:
    from workflows.signing import parse_public_key

    try:
        parse_public_key(value)
    except ValueError as err:
        raise ValueError(
            f'{err}: give an OpenSSH public key line, like "ssh-ed25519 AAAAC3Nz… alice@laptop"'
        ) from None
    return value.strip()


_GITHUB_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")


def _login(value: str) -> str:
    if not _GITHUB_LOGIN.fullmatch(value):
        raise ValueError(f"{value!r} is not a GitHub login (letters, digits and -, at most 39)")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _utc_timestamp(value: object) -> datetime:
    """An ISO-8601 timestamp with a UTC offset (a string, or a TOML offset date-time) → aware UTC datetime."""
    example = '"2026-12-15T16:00:00Z"'
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO-8601 timestamp: write it like {example}") from None
    else:
        raise ValueError(f"must be an ISO-8601 UTC timestamp like {example}, got {_show(value)}")
    if moment.utcoffset() is None:
        raise ValueError(
            f"{moment.isoformat()!r} has no UTC offset: write it in UTC with a trailing Z, like {example}"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{moment.isoformat()!r} is out of range: write a real date, like {example}"
        ) from None


def _group(value: object) -> GroupSpec:
    """`["U…", …]` or `{ slack_usergroup = "S…" }` → GroupSpec."""
    expected = 'use a list of Slack user ids like ["U0123ABCD"], or { slack_usergroup = "S0123ABCD" }'
    if isinstance(value, GroupSpec):
        return value
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError(f"the group is empty: {expected}")
        members = []
        for member in value:
            if not isinstance(member, str):
                raise ValueError(f"member {_show(member)} is not a Slack user id: {expected}")
            members.append(_user_id(member))
        return GroupSpec(members=tuple(members))
    if isinstance(value, dict):
        unknown = sorted(set(value) - {"slack_usergroup"})
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r} in the group: {expected}")
        usergroup = value.get("slack_usergroup")
        if not isinstance(usergroup, str):
            raise ValueError(f"slack_usergroup must be a string: {expected}")
        return GroupSpec(slack_usergroup=_usergroup_id(usergroup))
    raise ValueError(f"must be a list or a table, got {_show(value)}: {expected}")


def _timeout_step(value: str) -> str:
    if value not in TIMEOUT_DEFAULTS:
        known = ", ".join(TIMEOUT_DEFAULTS)
        raise ValueError(f"{value!r} is not a step with a timeout: use one of {known}")
    return value


SlackUserId = Annotated[StrictStr, AfterValidator(_user_id)]
Name = Annotated[StrictStr, AfterValidator(_name)]
UiUrl = Annotated[StrictStr, _url_key("the link is for people, who sign in to the Web UI themselves")]
JenkinsUrl = Annotated[
    StrictStr,
    _url_key(
        "the user is [jenkins] user (or JENKINS_USER) and the token comes from JENKINS_TOKEN in the environment"
    ),
]
GithubUrl = Annotated[StrictStr, _url_key("the token comes from GITHUB_TOKEN in the environment")]
SlackUrl = Annotated[StrictStr, _url_key("the token comes from SLACK_BOT_TOKEN in the environment")]
Text = Annotated[StrictStr, AfterValidator(_not_blank)]
InputId = Annotated[StrictStr, AfterValidator(_input_id)]
Repo = Annotated[StrictStr, AfterValidator(_repo)]
UtcTimestamp = Annotated[datetime, BeforeValidator(_utc_timestamp)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
Group = Annotated[GroupSpec, BeforeValidator(_group)]
TimeoutStep = Annotated[StrictStr, AfterValidator(_timeout_step)]
PublicKeyLine = Annotated[StrictStr, AfterValidator(_public_key)]


# ---------------------------------------------------------------------------------------------------
# The file


class _Table(BaseModel):
    """A TOML table: unknown keys are refused by name, with the known ones listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                keys = ", ".join(repr(key) for key in unknown)
                plural = "s" if len(unknown) > 1 else ""
                known = ", ".join(cls.model_fields)
                raise ValueError(f"unknown key{plural} {keys}: remove or rename it (known keys: {known})")
        return data


class JenkinsConfig(_Table):
    url: JenkinsUrl
    user: Text
    diff_begin: Text = DeploySettings.model_fields["diff_begin"].default
    diff_end: Text = DeploySettings.model_fields["diff_end"].default
    #: The `input` step every job's build waits at; None: the build's one pending input, whatever its id.
    input_id: InputId | None = None
    timeout: float = Field(default=10.0, gt=0, le=300)  # seconds one HTTP request to Jenkins may take

    @field_validator("url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _distinct_markers(self) -> JenkinsConfig:
        if self.diff_begin == self.diff_end:
            raise ValueError("diff_begin and diff_end are the same line: make them different")
        return self


class GithubConfig(_Table):
    api_url: GithubUrl = "https://api.github.com"
    configs_repo: Repo
    base_branch: Text = "master"
    version_file: Text

    @field_validator("api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("version_file")
    @classmethod
    def _service_placeholder(cls, value: str) -> str:
        try:
            value.format(service="x")
        except (KeyError, IndexError, ValueError, AttributeError, TypeError):
            raise ValueError(
                f'{value!r} is not a valid path template: use {{service}} as the only placeholder, like "channel-gov/{{service}}.yaml"'
            ) from None
        if "{service}" not in value:
            raise ValueError(
                f'{value!r} does not name the service: include {{service}}, like "channel-gov/{{service}}.yaml"'
            )
        return value


class SlackConfig(_Table):
    api_url: SlackUrl = "https://slack.com/api/"
    triage_channel: Text
    #: The Slack bridge's public keys: the workers take its signature as a verified click, for channel
    #: `slack` only (SPEC §9).
    bridge_keys: tuple[PublicKeyLine, ...] = ()

    @field_validator("api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


class ChangeRequestsConfig(_Table):
    backend: Literal["builtin", "github"] = "builtin"
    repo: Repo | None = None

    @model_validator(mode="after")
    def _repo_for_github(self) -> ChangeRequestsConfig:
        if self.backend == "github" and self.repo is None:
            raise ValueError('backend "github" needs repo: add repo = "owner/name" under [change_requests]')
        return self


class WebhooksConfig(_Table):
    """`[webhooks]` (the workers' config): which systems notify the bridge of changes (README, "Webhooks").
    True stretches that system's polling fallback to `WEBHOOK_POLL_CAP` seconds after a watcher's first
    minute; set it only once the webhook is delivered, or changes are noticed that much later."""

    github: StrictBool = False
    jenkins: StrictBool = False


class EnvironmentConfig(_Table):
    cloud: Cloud


class ServiceConfig(_Table):
    code_owners: Annotated[tuple[SlackUserId, ...], AfterValidator(_some_code_owners)]
    jenkins_job: Text
    valkyr: StrictBool = False
    input_id: InputId | None = None  # this job's `input` step; None: `[jenkins] input_id`

    @field_validator("jenkins_job")
    @classmethod
    def _job_path(cls, value: str) -> str:
        if any(not part.strip() for part in value.split("/")):
            raise ValueError(
                f'{value!r} is not a Jenkins job path: write "job" or "folder/job", without empty parts'
            )
        return value


class PersonConfig(_Table):
    """`[people.U…]`: the keys whose signatures are this person's, and who they are in GitHub and Jenkins."""

    ssh_keys: tuple[PublicKeyLine, ...] = ()
    github_login: Annotated[StrictStr, AfterValidator(_login)] | None = None
    jenkins_user: Text | None = None


class SecurityConfig(_Table):
    #: False: identities are taken as claimed (every audit entry says `claimed`).
    require_signed_actions: StrictBool = True
    max_signature_age: Duration = timedelta(minutes=5)


class _WindowTable(_Table):
    """A `[release] windows` entry as the file writes it; kept as the one `ReleaseWindow` (`Window`)."""

    name: Text
    start: UtcTimestamp
    end: UtcTimestamp

    @model_validator(mode="after")
    def _end_after_start(self) -> _WindowTable:
        if self.end <= self.start:
            raise ValueError(
                f"window {self.name!r} ends ({self.end:%Y-%m-%dT%H:%M:%SZ}) before it starts "
                f"({self.start:%Y-%m-%dT%H:%M:%SZ}): make end later than start"
            )
        return self


def _window_schema(_source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    """Read as `_WindowTable` (strict, its errors named `release.windows[0].start`), keep as `ReleaseWindow`."""
    return core_schema.no_info_after_validator_function(
        lambda table: ReleaseWindow(name=table.name, start=table.start, end=table.end),
        handler(_WindowTable),
        serialization=core_schema.plain_serializer_function_ser_schema(
            lambda window, info: window.model_dump(mode=info.mode), info_arg=True
        ),
    )


#: A release window: the workflows' own `ReleaseWindow` (models.py), read with the file's rules.
Window = Annotated[ReleaseWindow, GetPydanticSchema(_window_schema)]


class ReleaseConfig(_Table):
    lead_time_days: Annotated[StrictInt, Field(ge=0, le=366)] = 14
    windows: tuple[Window, ...] = ()

    @field_validator("windows")
    @classmethod
    def _unique_names(cls, windows: tuple[ReleaseWindow, ...]) -> tuple[ReleaseWindow, ...]:
        seen: set[str] = set()
        for window in windows:
            if window.name in seen:
                raise ValueError(f"window name {window.name!r} is used twice: give each window its own name")
            seen.add(window.name)
        return windows


class Config(_Table):
    """The whole `deployctl.toml`, with environment overrides applied. Holds no secrets."""

    task_queue: Text = "deployctl"
    ui_url: UiUrl = DeploySettings.model_fields["ui_url"].default
    jenkins: JenkinsConfig
    github: GithubConfig
    slack: SlackConfig
    change_requests: ChangeRequestsConfig
    groups: dict[StrictStr, Group]
    environments: dict[Name, EnvironmentConfig]
    services: dict[Name, ServiceConfig]
    release: ReleaseConfig
    #: Every step of TIMEOUT_DEFAULTS, by step name: the file's values over the defaults.
    timeouts: dict[TimeoutStep, Duration]
    people: dict[SlackUserId, PersonConfig]
    security: SecurityConfig
    webhooks: WebhooksConfig

    _source: str = PrivateAttr(default=DEFAULT_CONFIG_PATH)
    _sha256: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _empty_tables(cls, data: Any) -> Any:
        """A missing table is an empty one, so its own required keys are reported by name."""
        if isinstance(data, dict):
            data = dict(data)
            tables = (
                "jenkins",
                "github",
                "slack",
                "change_requests",
                "release",
                "groups",
                "security",
                "webhooks",
            )
            for key in tables:
                data.setdefault(key, {})
            for key in ("environments", "services", "timeouts", "people"):
                data.setdefault(key, {})
        return data

    @field_validator("ui_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("groups")
    @classmethod
    def _known_groups(cls, groups: dict[str, GroupSpec]) -> dict[str, GroupSpec]:
        unknown = [name for name in groups if name not in GROUP_NAMES]
        if unknown:
            raise ValueError(f"unknown group {unknown[0]!r}: the groups are {', '.join(GROUP_NAMES)}")
        missing = [name for name in REQUIRED_GROUPS if name not in groups]
        if missing:
            raise ValueError(
                f"required group{'s' if len(missing) > 1 else ''} {' and '.join(repr(m) for m in missing)} "
                f"missing: add "
                f'{missing[0]} = ["U0123ABCD", …] or {missing[0]} = {{ slack_usergroup = "S0123ABCD" }} under [groups]'
            )
        return groups

    @field_validator("timeouts")
    @classmethod
    def _default_timeouts(cls, timeouts: dict[str, timedelta]) -> dict[str, timedelta]:
        return {str(step): timeouts.get(step, default) for step, default in TIMEOUT_DEFAULTS.items()}

    @model_validator(mode="after")
    def _deploys_can_finish(self) -> Config:
        """Refuse a file under which a deploy could only wait until it expires: a group one of its steps
        waits on is not configured, or lists nobody but the service's code owners (who never act in
        another role on their own deploy). A Slack user group's members are known only when a step
        starts, so only listed members are checked."""
        problems = [*self._missing_groups(), *self._owner_only_groups()]
        if problems:
            shown = "; ".join(problems[:_MAX_PROBLEMS])
            more = len(problems) - _MAX_PROBLEMS
            raise ValueError(
                shown + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")
            )
        return self

    def _missing_groups(self) -> list[str]:
        problems = []
        clouds = sorted({env.cloud for env in self.environments.values()})
        valkyr = sorted(name for name, spec in self.services.items() if spec.valkyr)
        unset = "which is not configured"
        for group in GROUP_NAMES:
            if group in self.groups:
                continue
            add = (
                f'add {group} = ["U0123ABCD", …] or {group} = {{ slack_usergroup = "S0123ABCD" }} '
                "under [groups]"
            )
            for cloud in clouds:
                if group in groups_needed(cloud, valkyr=False):
                    envs = sorted(name for name, env in self.environments.items() if env.cloud is cloud)
                    where = ", ".join(_format_loc(("environments", name)) for name in envs)
                    problems.append(f"{where}: a {cloud}-cloud deploy needs group {group!r}, {unset}: {add}")
                    break
            else:
                if valkyr and any(
                    group in groups_needed(cloud, valkyr=True) - groups_needed(cloud, valkyr=False)
                    for cloud in Cloud
                ):
                    where = ", ".join(_format_loc(("services", name)) for name in valkyr)
                    problems.append(
                        f"{where}: a valkyr service's deploy needs group {group!r}, {unset}: {add}"
                    )
        return problems

    def _owner_only_groups(self) -> list[str]:
        problems = []
        clouds = {env.cloud for env in self.environments.values()}
        for name, service in sorted(self.services.items()):
            needed = set().union(*(groups_needed(cloud, service.valkyr) for cloud in clouds))
            for group in GROUP_NAMES:
                spec = self.groups.get(group)
                if group not in needed or spec is None or spec.slack_usergroup is not None:
                    continue
                if set(spec.members) <= set(service.code_owners):
                    problems.append(
                        f"{_format_loc(('services', name))}: every member of group {group!r} "
                        f"({', '.join(spec.members)}) is a code owner of {name}, and a code owner never acts "
                        f"in another role on their own deploy: add someone else to {group} under [groups]"
                    )
        return problems

    # -- lookups ---------------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """The file this configuration was read from."""
        return self._source

    @property
    def sha256(self) -> str:
        """The hex sha256 of the file's bytes as read (what a deploy's audit records of its rules)."""
        return self._sha256

    def rules(self, service: str, environment: str, namespace: str = "default") -> Rules:
        """The rules of one deploy as this (the workers') config gives them; `refusal` when it cannot run."""
        base = Rules(
            config_path=self._source,
            config_sha256=self._sha256,
            settings=self.settings(namespace),
            windows=list(self.release.windows),
            lead_time_days=self.release.lead_time_days,
            people={
                uid: PersonSpec(ssh_keys=p.ssh_keys, github_login=p.github_login, jenkins_user=p.jenkins_user)
                for uid, p in self.people.items()
            },
            bridge_keys=self.slack.bridge_keys,
            require_signed=self.security.require_signed_actions,
            max_signature_age=self.security.max_signature_age,
        )
        try:
            return base.model_copy(
                update={"service": self.service(service), "cloud": self.cloud(environment)}
            )
        except ConfigError as err:
            return base.model_copy(update={"refusal": str(err).split(": ", 1)[-1]})

    def service(self, name: str) -> ServiceSpec:
        spec = self.services.get(name)
        if spec is None:
            known = ", ".join(sorted(self.services)) or "none"
            raise ConfigError(
                f"{self._source}: unknown service {name!r}: use one of the services configured under "
                f"[services] ({known}), or add a [services.{name}] table"
            )
        return ServiceSpec(
            name=name,
            code_owners=spec.code_owners,
            jenkins_job=spec.jenkins_job,
            valkyr=spec.valkyr,
            input_id=spec.input_id if spec.input_id is not None else self.jenkins.input_id,
        )

    def cloud(self, env_name: str) -> Cloud:
        environment = self.environments.get(env_name)
        if environment is None:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(
                f"{self._source}: unknown environment {env_name!r}: use one of the environments configured "
                f'under [environments] ({known}), or add {env_name} = {{ cloud = "com" }} there'
            )
        return environment.cloud

    def timeout(self, step: str) -> timedelta:
        return self.timeouts.get(step) or TIMEOUT_DEFAULTS[Step(step)]

    def settings(self, namespace: str = "default") -> DeploySettings:
        """The snapshot a deploy is started with (no secrets)."""
        return DeploySettings(
            ui_url=self.ui_url,
            namespace=namespace,
            triage_channel=self.slack.triage_channel,
            diff_begin=self.jenkins.diff_begin,
            diff_end=self.jenkins.diff_end,
            groups=dict(self.groups),
            timeouts={str(step): self.timeout(step) for step in TIMEOUT_DEFAULTS},
            configs_repo=self.github.configs_repo,
            base_branch=self.github.base_branch,
            version_file=self.github.version_file,
            pccr_backend=self.change_requests.backend,
            pccr_repo=self.change_requests.repo,
            webhooks_github=self.webhooks.github,
            webhooks_jenkins=self.webhooks.jenkins,
        )


# ---------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and return the configuration; any problem raises a one-line `ConfigError`.

    `path` defaults to `$DEPLOYCTL_CONFIG`, then `./deployctl.toml`. The variables of `ENV_OVERRIDES`
    replace the file's values (an empty variable counts as unset) and are validated like them.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    shown, raw = _read_config(path, environ)
    return _parse_config(shown, raw, environ)


class ConfigReader:
    """`load_config` for a caller that reads the same file again and again: the rules activity, at each
    step of every deploy (SPEC §9). The file is read on every `load()`, and parsed and validated again only
    when its bytes, its name or an environment override differ from the last good read; otherwise the last
    `Config` is returned as it is. A file that stops loading raises `ConfigError` at once, as
    `load_config` does; the old `Config` is never handed out for it.

    The returned `Config` is shared between calls: read it, do not change it. Parsing and validating the
    file cost about a fifth of a worker's CPU under load before this (bench/RESULTS.md, 2026-12-03)."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self._path = path
        self._env = env
        self._key: tuple[str, bytes, tuple[str, ...]] | None = None
        self._config: Config | None = None
        self.parsed = 0  # how many times the file was parsed (for tests)

    def load(self) -> Config:
        environ: Mapping[str, str] = os.environ if self._env is None else self._env
        shown, raw = _read_config(self._path, environ)
        key = (
            shown,
            hashlib.sha256(raw).digest(),
            tuple(environ.get(var, "").strip() for var in ENV_OVERRIDES),
        )
        if key != self._key or self._config is None:
            self._key, self._config = None, None
            config = _parse_config(shown, raw, environ)
            self.parsed += 1
            self._key, self._config = key, config
        return self._config


def _read_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> tuple[str, bytes]:
    if path is None:
        path = environ.get("DEPLOYCTL_CONFIG", "").strip() or DEFAULT_CONFIG_PATH
    shown = os.fspath(path)
    hint = "pass --config PATH or set DEPLOYCTL_CONFIG (deployctl.example.toml shows every key)"
    file = Path(shown).expanduser()
    try:
        return shown, file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{shown}: configuration file not found: {hint}") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown}: is a directory, not a configuration file: {hint}") from None
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read the configuration file ({e.strerror}): {hint}") from None


def _parse_config(shown: str, raw: bytes, environ: Mapping[str, str]) -> Config:
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not UTF-8 text: save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{shown}: invalid TOML: {e}: fix the syntax") from None

    overridden: dict[tuple[str, ...], str] = {}
    for var, loc in ENV_OVERRIDES.items():
        value = environ.get(var, "").strip()
        if not value:
            continue
        table: Any = data
        for key in loc[:-1]:
            table = table.setdefault(key, {}) if isinstance(table, dict) else None
        if isinstance(table, dict):
            table[loc[-1]] = value
            overridden[loc] = var

    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(shown, e, overridden)) from None
    config._source = shown
    config._sha256 = hashlib.sha256(raw).hexdigest()
    return config


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MAX_PROBLEMS = 3


def _describe(source: str, error: ValidationError, overridden: Mapping[tuple[str, ...], str]) -> str:
    """A ValidationError → one line: `deployctl.toml: services.x.code_owners: …; jenkins.url: …`."""
    problems = []
    for item in error.errors():
        loc = tuple(str(part) if not isinstance(part, int) else part for part in item["loc"])
        var = next((v for key, v in overridden.items() if loc[: len(key)] == key), None)
        message = _message(item, loc)
        if var is not None:
            problems.append(f"environment variable {var}: {message}")
        else:
            where = _format_loc(loc)
            problems.append(f"{where}: {message}" if where else message)
    shown = problems[:_MAX_PROBLEMS]
    more = len(problems) - len(shown)
    line = f"{source}: " + "; ".join(shown)
    if more:
        line += f" (and {more} more problem{'s' if more > 1 else ''})"
    return line


def _format_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            continue  # a dict key's own error: the key is already the last part
        else:
            key = part if _BARE_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
            out += ("." if out else "") + key
    return out


def _message(item: Any, loc: tuple[str | int, ...]) -> str:
    kind = item["type"]
    ctx = item.get("ctx") or {}
    got = _show(item.get("input"))
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", item["msg"]))
    if kind == "missing":
        parent = _format_loc(loc[:-1])
        where = "at the top of the file" if not parent else f"under [{parent}]"
        var = next((v for v, key in ENV_OVERRIDES.items() if key == loc), None)
        alternative = f" (or set {var})" if var else ""
        return f"required key is missing: add {loc[-1]} = … {where}{alternative}"
    if kind == "extra_forbidden":
        return "unknown key: remove or rename it"
    if kind == "string_type":
        return f"must be a string (in quotes), got {got}"
    if kind == "bool_type":
        return f"must be true or false (without quotes), got {got}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be a whole number (without quotes), got {got}"
    if kind in ("list_type", "tuple_type"):
        return f'must be a list like ["U0123ABCD"], got {got}'
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a table, got {got}"
    if kind == "too_short":
        return "must not be empty: list at least one"
    if kind == "greater_than_equal":
        return f"must be {ctx.get('ge')} or more, got {got}"
    if kind in ("enum", "literal_error"):
        return f"must be {ctx.get('expected')}, got {got}"
    return f"{item['msg']}, got {got}"


def _show(value: object, limit: int = 60) -> str:
    text = f"{value.isoformat()} (a TOML date or time)" if isinstance(value, date | time) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------------
# Secrets


def secret(name: str, env: Mapping[str, str] | None = None, required: bool = True) -> str | None:
    """The value of secret `name` (one of `SECRET_NAMES`) from `env` (default: `os.environ`), never from
    the config file. An unset or blank one is `None`, or a one-line `ConfigError` when `required`."""
    if name not in SECRET_NAMES:
        raise ValueError(f"{name!r} is not a secret deployctl reads: use one of {', '.join(SECRET_NAMES)}")
    value = ((os.environ if env is None else env).get(name) or "").strip()
    if value:
        return value
    if required:
        hint = _SECRET_HINTS[name]
        raise ConfigError(f"{name} is not set: export it in this process's environment ({hint})")
    return None
