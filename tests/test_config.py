"""starter/config.py: the TOML file, its environment overrides, durations, windows and secrets."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from starter.cli import render_releases
from starter.config import (
    TIMEOUT_DEFAULTS,
    Config,
    ConfigError,
    ConfigReader,
    groups_needed,
    load_config,
    parse_duration,
    secret,
)
from tests import keys
from workflows.models import Cloud, DeploySettings, GroupSpec, ServiceSpec, Step

EXAMPLE = Path(__file__).resolve().parent.parent / "deployctl.example.toml"

MINIMAL = """
[jenkins]
url = "https://jenkins.example:8443/"
user = "deploy-bot"

[github]
configs_repo = "acme/configs"
version_file = "channel-gov/{service}.yaml"

[slack]
triage_channel = "C0TRIAGE"

[groups]
pccr-gatekeeper = ["U0GATE1"]
sre = ["U0SRE1"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deployctl.toml"
    path.write_text(text, encoding="utf-8")
    return path


def example_text() -> str:
    return EXAMPLE.read_text(encoding="utf-8")


def edited(old: str, new: str) -> str:
    text = example_text()
    assert old in text, f"the example no longer contains {old!r}"
    return text.replace(old, new, 1)


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env={} if env is None else env)


def config_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, env)
    return one_line(info.value)


def one_line(error: ConfigError) -> str:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# The example file


def test_example_loads() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.task_queue == "deployctl"
    assert config.ui_url == "http://127.0.0.1:8233"
    assert config.jenkins.url == "http://127.0.0.1:8080"
    assert config.jenkins.user == "deploy-bot"
    assert config.jenkins.input_id is None  # the example leaves it unset: the build's one pending input
    assert config.github.configs_repo == "mulesoft/kilonova-product-configs"
    assert config.github.version_file.format(service="payments-api") == "channel-gov/payments-api.yaml"
    assert config.slack.api_url == "https://slack.com/api/"
    assert config.change_requests.backend == "builtin"
    assert config.change_requests.repo == "acme/pccr"
    assert config.release.lead_time_days == 14
    assert [w.name for w in config.release.windows] == ["2026.12"]
    assert config.release.windows[0].start == datetime(2026, 12, 15, 16, tzinfo=UTC)
    assert config.source == str(EXAMPLE)


def test_example_lookups() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.service("payments-api") == ServiceSpec(
        name="payments-api",
        code_owners=("U0OWNER1",),
        jenkins_job="deploy-payments-api",
        valkyr=False,
        input_id=None,
    )
    assert config.cloud("kprod") is Cloud.COM
    assert config.cloud("kprod-gov") is Cloud.GOV
    assert config.groups["sre"] == GroupSpec(members=("U0SRE1", "U0SRE2"))
    assert config.groups["sre-gov"] == GroupSpec(slack_usergroup="S0SREGOV")
    assert config.groups["sre-gov"].mention() == "<!subteam^S0SREGOV>"


def test_settings_snapshot() -> None:
    config = load_config(EXAMPLE, env={})
    settings = config.settings("prod")
    assert isinstance(settings, DeploySettings)
    assert settings.namespace == "prod"
    assert settings.ui_url == "http://127.0.0.1:8233"
    assert settings.triage_channel == "C0TRIAGE"
    assert settings.diff_begin == "=== DEPLOY DIFF BEGIN ==="
    assert settings.diff_end == "=== DEPLOY DIFF END ==="
    assert set(settings.groups) == {"pccr-gatekeeper", "sre", "sre-gov", "vp"}
    assert settings.groups["vp"] == GroupSpec(members=("U0VP1",))
    assert set(settings.timeouts) == {str(step) for step in TIMEOUT_DEFAULTS}
    assert config.settings().namespace == "default"
    # The snapshot travels through Temporal as JSON: it must round-trip.
    assert DeploySettings.model_validate_json(settings.model_dump_json()) == settings


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL)
    assert config.task_queue == "deployctl"
    assert config.ui_url == "http://127.0.0.1:8233"
    assert config.jenkins.url == "https://jenkins.example:8443"  # trailing slash dropped
    assert config.jenkins.diff_begin == "=== DEPLOY DIFF BEGIN ==="
    assert config.jenkins.input_id is None
    assert config.github.api_url == "https://api.github.com"
    assert config.github.base_branch == "master"
    assert config.change_requests.backend == "builtin"
    assert config.release.lead_time_days == 14
    assert config.release.windows == ()
    assert config.environments == {} and config.services == {}
    assert config.timeouts == {str(step): d for step, d in TIMEOUT_DEFAULTS.items()}


def test_jenkins_request_timeout(tmp_path: Path) -> None:
    assert load_text(tmp_path, MINIMAL).jenkins.timeout == 10.0
    text = MINIMAL.replace('user = "deploy-bot"', 'user = "deploy-bot"\ntimeout = 2.5')
    assert load_text(tmp_path, text).jenkins.timeout == 2.5
    for bad in ("0", "-1", '"ten"', "301"):
        error = config_error(
            tmp_path, MINIMAL.replace('user = "deploy-bot"', f'user = "deploy-bot"\ntimeout = {bad}')
        )
        assert "timeout" in error, error


def test_valkyr_and_folder_job(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + 'vp = ["U0VP1"]\n'
        + (
            '[services.ledger]\ncode_owners = ["U0A", "W0B"]\njenkins_job = "platform/deploy-ledger"\nvalkyr = true\n'
        )
    )
    spec = load_text(tmp_path, text).service("ledger")
    assert spec.valkyr is True
    assert spec.jenkins_job == "platform/deploy-ledger"
    assert spec.code_owners == ("U0A", "W0B")


# ---------------------------------------------------------------------------------------------------
# The Jenkins input id

SERVICES = """
[services.a]
code_owners = ["U0A"]
jenkins_job = "deploy-a"

[services.b]
code_owners = ["U0B"]
jenkins_job = "deploy-b"
input_id = "Ship-it"
"""


def test_input_id_defaults_to_none(tmp_path: Path) -> None:
    """No input id anywhere: answer the build's one pending input, whatever its id."""
    config = load_text(tmp_path, MINIMAL + SERVICES)
    assert config.jenkins.input_id is None
    assert config.service("a").input_id is None
    assert config.service("b").input_id == "Ship-it"  # a service's own id, with nothing to fall back on


def test_service_input_id_overrides_jenkins_input_id(tmp_path: Path) -> None:
    text = MINIMAL.replace('user = "deploy-bot"', 'user = "deploy-bot"\ninput_id = "Approve-deploy"')
    config = load_text(tmp_path, text + SERVICES)
    assert config.jenkins.input_id == "Approve-deploy"
    assert config.service("a").input_id == "Approve-deploy"  # falls back on [jenkins] input_id
    assert config.service("b").input_id == "Ship-it"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('user = "deploy-bot"', 'user = "deploy-bot"\ninput_id = ""', "jenkins.input_id: must not be empty"),
        ('user = "deploy-bot"', 'user = "deploy-bot"\ninput_id = "  "', "leave input_id out"),
        ('user = "deploy-bot"', 'user = "deploy-bot"\ninput_id = 1', "jenkins.input_id: must be a string"),
        ('input_id = "Ship-it"', 'input_id = ""', "services.b.input_id: must not be empty"),
        ('input_id = "Ship-it"', "input_id = false", "services.b.input_id: must be a string"),
    ],
)
def test_bad_input_id(tmp_path: Path, old: str, new: str, expected: str) -> None:
    message = config_error(tmp_path, (MINIMAL + SERVICES).replace(old, new, 1))
    assert expected in message, message


# ---------------------------------------------------------------------------------------------------
# Where the file comes from, and environment overrides


def test_path_from_env_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL)
    assert load_config(env={"DEPLOYCTL_CONFIG": str(path)}).source == str(path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEPLOYCTL_CONFIG", raising=False)
    assert load_config().source == "deployctl.toml"
    assert load_config(env={"DEPLOYCTL_CONFIG": ""}).jenkins.user == "deploy-bot"


def test_env_overrides(tmp_path: Path) -> None:
    env = {
        "DEPLOYCTL_UI_URL": "https://ui.example:8233/",
        "JENKINS_URL": "http://127.0.0.1:9999",
        "JENKINS_USER": "other-bot",
        "GITHUB_API_URL": "http://127.0.0.1:9998/api/v3",
        "SLACK_API_URL": "http://127.0.0.1:9997/api",
    }
    config = load_config(EXAMPLE, env=env)
    assert config.ui_url == "https://ui.example:8233"
    assert config.jenkins.url == "http://127.0.0.1:9999"
    assert config.jenkins.user == "other-bot"
    assert config.github.api_url == "http://127.0.0.1:9998/api/v3"
    assert config.slack.api_url == "http://127.0.0.1:9997/api/"
    assert config.settings().ui_url == "https://ui.example:8233"


def test_empty_env_var_does_not_override() -> None:
    config = load_config(EXAMPLE, env={"JENKINS_URL": "", "DEPLOYCTL_UI_URL": "  "})
    assert config.jenkins.url == "http://127.0.0.1:8080"
    assert config.ui_url == "http://127.0.0.1:8233"


def test_env_supplies_a_key_missing_from_the_file(tmp_path: Path) -> None:
    text = MINIMAL.replace('url = "https://jenkins.example:8443/"\n', "")
    assert "jenkins.url" in config_error(tmp_path, text)
    assert "JENKINS_URL" in config_error(tmp_path, text)
    config = load_text(tmp_path, text, env={"JENKINS_URL": "https://ci.example"})
    assert config.jenkins.url == "https://ci.example"


def test_bad_env_override_names_the_variable(tmp_path: Path) -> None:
    message = config_error(tmp_path, example_text(), env={"JENKINS_URL": "jenkins.example"})
    assert "environment variable JENKINS_URL" in message
    assert "http(s) URL" in message


# ---------------------------------------------------------------------------------------------------
# URLs (SPEC §10): no credentials in them, and plain http only to a loopback address

#: Every URL key, the line that sets it in the example file, and the variable that overrides it.
URL_KEYS = {
    "ui_url": ('ui_url = "http://127.0.0.1:8233"', "DEPLOYCTL_UI_URL"),
    "jenkins.url": ('url = "http://127.0.0.1:8080"', "JENKINS_URL"),
    "github.api_url": ('api_url = "https://api.github.com"', "GITHUB_API_URL"),
    "slack.api_url": ('api_url = "https://slack.com/api/"', "SLACK_API_URL"),
}
#: Where each key's credentials belong instead (the "what to do" of its refusal).
URL_CREDENTIALS = {
    "ui_url": "who sign in to the Web UI themselves",
    "jenkins.url": "the token comes from JENKINS_TOKEN",
    "github.api_url": "the token comes from GITHUB_TOKEN",
    "slack.api_url": "the token comes from SLACK_BOT_TOKEN",
}
URL_TOKEN = "s3cr3t-T0ken_9f2c"


def with_url(key: str, url: str) -> str:
    """The example file with `key` set to `url`."""
    line, _ = URL_KEYS[key]
    return edited(line, f"{line.split(' = ')[0]} = {json.dumps(url)}")


CREDENTIAL_URLS = [
    f"https://deploy-bot:{URL_TOKEN}@ci.example/",
    f"https://{URL_TOKEN}@ci.example",
    f"https://:{URL_TOKEN}@ci.example",
    f"https://deploy-bot:{URL_TOKEN}@127.0.0.1:8080",
    f"http://deploy-bot:{URL_TOKEN}@127.0.0.1:8080",
    f"https://deploy-bot:p@{URL_TOKEN}@ci.example/path",  # an @ in the password: the last one ends it
    "https://@ci.example",  # empty userinfo is still userinfo
    "https://deploy-bot@ci.example",
]


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
@pytest.mark.parametrize("key", URL_KEYS)
def test_urls_with_credentials_are_refused_without_echoing_them(tmp_path: Path, key: str, url: str) -> None:
    message = config_error(tmp_path, with_url(key, url))
    assert message.startswith(f"{tmp_path / 'deployctl.toml'}: {key}: '"), message
    assert "has a user name or password in it" in message and URL_CREDENTIALS[key] in message, message
    assert URL_TOKEN not in message and "deploy-bot@" not in message and "deploy-bot:" not in message
    assert "://***@" in message, message


@pytest.mark.parametrize("url", CREDENTIAL_URLS)
@pytest.mark.parametrize("key", URL_KEYS)
def test_env_urls_with_credentials_are_refused_without_echoing_them(
    tmp_path: Path, key: str, url: str
) -> None:
    _, var = URL_KEYS[key]
    message = config_error(tmp_path, example_text(), env={var: url})
    assert f": environment variable {var}: '" in message, message
    assert "has a user name or password in it" in message and URL_CREDENTIALS[key] in message, message
    assert URL_TOKEN not in message and "deploy-bot@" not in message and "deploy-bot:" not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://ci.example",
        "http://ci.example:8080/jenkins",
        "http://10.0.0.7:8080",
        "http://0.0.0.0:8080",
        "http://[::2]:8080",
        "http://[::ffff:127.0.0.1]:8080",  # loopback only as an IPv4-mapped address: not in the list
        "http://127.0.0.1.nip.io",
        "http://localhost.example",
        "http://128.0.0.1",
    ],
)
@pytest.mark.parametrize("key", URL_KEYS)
def test_plain_http_to_anything_but_loopback_is_refused(tmp_path: Path, key: str, url: str) -> None:
    message = config_error(tmp_path, with_url(key, url))
    assert message.startswith(f"{tmp_path / 'deployctl.toml'}: {key}: {url!r} is plain http to "), message
    assert "use https://, or http:// only to 127.0.0.1 (127.0.0.0/8), ::1 or localhost" in message
    _, var = URL_KEYS[key]
    message = config_error(tmp_path, example_text(), env={var: url})
    assert f": environment variable {var}: {url!r} is plain http to " in message, message


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.255.0.9",
        "http://[::1]:8080/api/",
        "http://localhost:8080",
        "HTTP://LocalHost",
        "https://ci.example",
        "https://10.0.0.7:8443/jenkins",
        "https://ci.example/a@b",  # an @ in the path is not userinfo
    ],
)
@pytest.mark.parametrize("key", URL_KEYS)
def test_https_and_loopback_http_load(tmp_path: Path, key: str, url: str) -> None:
    _, var = URL_KEYS[key]
    load_text(tmp_path, with_url(key, url))
    load_text(tmp_path, example_text(), env={var: url})


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ftp://deploy-bot:{t}@ci.example", "'ftp://***@ci.example' is not an http(s) URL"),
        ("deploy-bot:{t}@ci.example", "'***@ci.example' is not an http(s) URL"),
        ("https://deploy-bot:{t}/x@ci.example", "'https://***@ci.example' is not a valid URL"),
        ("https://ci.example:99999", "'https://ci.example:99999' is not a valid URL"),
        ("https://:8443", "'https://:8443' is not an http(s) URL"),
    ],
)
def test_other_bad_urls_never_echo_a_password_either(tmp_path: Path, url: str, expected: str) -> None:
    message = config_error(tmp_path, with_url("jenkins.url", url.format(t=URL_TOKEN)))
    assert f"jenkins.url: {expected}" in message, message
    assert URL_TOKEN not in message


def test_the_url_refusal_lines(tmp_path: Path) -> None:
    """The whole lines, as the CLI and the worker print them."""
    path = tmp_path / "deployctl.toml"
    assert config_error(tmp_path, with_url("jenkins.url", f"https://deploy-bot:{URL_TOKEN}@ci.example")) == (
        f"{path}: jenkins.url: 'https://***@ci.example' has a user name or password in it (user:password@), "
        "which would reach logs and error messages: remove them from the URL; the user is [jenkins] user "
        "(or JENKINS_USER) and the token comes from JENKINS_TOKEN in the environment"
    )
    github = f"https://x:{URL_TOKEN}@ghe.example/api/v3"
    assert config_error(tmp_path, example_text(), env={"GITHUB_API_URL": github}) == (
        f"{path}: environment variable GITHUB_API_URL: 'https://***@ghe.example/api/v3' has a user name or "
        "password in it (user:password@), which would reach logs and error messages: remove them from the "
        "URL; the token comes from GITHUB_TOKEN in the environment"
    )
    assert config_error(tmp_path, with_url("slack.api_url", "http://slack.example/api/")) == (
        f"{path}: slack.api_url: 'http://slack.example/api/' is plain http to slack.example, which is not a "
        "loopback address: use https://, or http:// only to 127.0.0.1 (127.0.0.0/8), ::1 or localhost"
    )
    assert config_error(tmp_path, example_text(), env={"DEPLOYCTL_UI_URL": "http://ui.example:8233"}) == (
        f"{path}: environment variable DEPLOYCTL_UI_URL: 'http://ui.example:8233' is plain http to ui.example, "
        "which is not a loopback address: use https://, or http:// only to 127.0.0.1 (127.0.0.0/8), ::1 or "
        "localhost"
    )


_token_chars = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="*")


@given(
    var=st.sampled_from([var for _, var in URL_KEYS.values()]),
    scheme=st.sampled_from(["https", "http", "HTTPS", "ftp", ""]),
    user=st.sampled_from(["", "deploy-bot", "x"]),
    token=st.text(_token_chars, min_size=6, max_size=40).map(lambda t: "tk" + t),
    host=st.sampled_from(["ci.example", "127.0.0.1:8080", "[::1]", "localhost:1"]),
    tail=st.sampled_from(["", "/", "/api/v3", "?a=b"]),
)
def test_a_refused_url_never_shows_its_token(
    var: str, scheme: str, user: str, token: str, host: str, tail: str
) -> None:
    url = f"{scheme}://" * bool(scheme) + f"{user}:{token}@{host}{tail}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            load_config(write(Path(tmp), example_text()), env={var: url})
        except ConfigError as err:
            message = one_line(err)
            assert token not in message, message
            assert f"environment variable {var}" in message, message
        else:  # only when the token's own characters end the authority early: then it holds no @
            assert any(c in token for c in "/?#"), url


def test_env_does_not_leak_into_os_environ(tmp_path: Path) -> None:
    load_text(tmp_path, MINIMAL, env={"JENKINS_USER": "x-bot"})
    assert os.environ.get("JENKINS_USER") != "x-bot"


# ---------------------------------------------------------------------------------------------------
# Durations and timeouts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20s", timedelta(seconds=20)),
        ("30m", timedelta(minutes=30)),
        ("4h", timedelta(hours=4)),
        ("3d", timedelta(days=3)),
        ("0s", timedelta(0)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "4", "h", "4 h", " 4h", "4h ", "4H", "1.5h", "-1h", "4w", "4hours", "1h30m", "99999999999d"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    message = one_line(info.value)
    assert repr(text) in message
    assert '"4h"' in message


def test_parse_duration_rejects_non_strings() -> None:
    with pytest.raises(ConfigError):
        parse_duration(4)  # type: ignore[arg-type]


def test_timeouts_override_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL + '[timeouts]\npccr_review = "2d"\ntrigger = "30m"\n')
    assert config.timeouts["pccr_review"] == timedelta(days=2)
    assert config.timeouts[Step.TRIGGER] == timedelta(minutes=30)
    assert config.timeout(Step.DEPLOY_APPROVAL) == timedelta(hours=4)
    assert config.settings().timeouts["release_acceptance"] == timedelta(days=7)
    assert config.settings().timeouts["pccr_review"] == timedelta(days=2)


def test_timeout_defaults_cover_the_spec() -> None:
    assert {str(k): v for k, v in TIMEOUT_DEFAULTS.items()} == {
        "vp_approval": timedelta(days=3),
        "pccr_review": timedelta(days=3),
        "sre_assignment": timedelta(days=1),
        "clearance": timedelta(days=1),
        "version_pr_merge": timedelta(days=1),
        "trigger": timedelta(days=1),
        "diff_validation": timedelta(hours=4),
        "deploy_approval": timedelta(hours=4),
        "release_acceptance": timedelta(days=7),
    }


@pytest.mark.parametrize(
    ("timeouts", "expected"),
    [
        ('pccr_reveiw = "3d"', "timeouts.pccr_reveiw"),
        ('deploying = "1h"', "timeouts.deploying"),
        ('done = "1h"', "timeouts.done"),
        ('pccr_review = "3 days"', "timeouts.pccr_review: invalid duration '3 days'"),
        ("pccr_review = 3", "timeouts.pccr_review: invalid duration 3"),
        ('pccr_review = "0s"', "longer than zero"),
    ],
)
def test_bad_timeouts(tmp_path: Path, timeouts: str, expected: str) -> None:
    message = config_error(tmp_path, MINIMAL + f"[timeouts]\n{timeouts}\n")
    assert expected in message
    if "reveiw" in timeouts:
        assert "pccr_review" in message  # lists the valid step names


# ---------------------------------------------------------------------------------------------------
# File-level failures


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", env={})
    message = one_line(info.value)
    assert "nope.toml" in message and "not found" in message
    assert "--config" in message and "DEPLOYCTL_CONFIG" in message


def test_missing_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(env={})
    assert one_line(info.value).startswith("deployctl.toml: ")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert "directory" in one_line(info.value)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, MINIMAL)

    def denied(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = one_line(info.value)
    assert message.startswith(str(path) + ": cannot read the configuration file (Permission denied)")


def test_invalid_toml(tmp_path: Path) -> None:
    message = config_error(tmp_path, MINIMAL + "broken = \n")
    assert message.startswith(str(tmp_path / "deployctl.toml") + ": invalid TOML")
    assert "line" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "deployctl.toml"
    path.write_bytes(b'task_queue = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert "UTF-8" in one_line(info.value)


# ---------------------------------------------------------------------------------------------------
# Validation failures: each names the file, the key and what to do, on one line


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # unknown keys, named, with the known ones
        ("valkyr = false ", "valkry = false ", "services.payments-api: unknown key 'valkry'"),
        ("[release]", "[releases]", "unknown key 'releases'"),
        ('task_queue = "deployctl"', 'task_queu = "deployctl"', "unknown key 'task_queu'"),
        ('triage_channel = "C0TRIAGE"', 'triage = "C0TRIAGE"', "slack: unknown key 'triage'"),
        # services
        (
            '["U0OWNER1"]',
            '["u0owner1"]',
            "services.payments-api.code_owners[0]: 'u0owner1' is not a Slack user id",
        ),
        (
            '["U0OWNER1"]',
            "[]",
            "services.payments-api.code_owners: no code owners: nobody could open, validate or trigger this "
            'service\'s deploys; name at least one Slack user id, like code_owners = ["U0123ABCD"]',
        ),
        ('["U0OWNER1"]', '"U0OWNER1"', "services.payments-api.code_owners: must be a list"),
        ('jenkins_job = "deploy-payments-api"', 'jenkins_job = "a//b"', "services.payments-api.jenkins_job"),
        (
            'jenkins_job = "deploy-payments-api"',
            "",
            "services.payments-api.jenkins_job: required key is missing",
        ),
        ("valkyr = false ", 'valkyr = "no" ', "services.payments-api.valkyr: must be true or false"),
        ("[services.payments-api]", '[services."payments api"]', 'services."payments api": invalid name'),
        # groups
        ('sre = ["U0SRE1", "U0SRE2"]', 'sre = ["U0SRE1", "bob"]', "groups.sre: 'bob' is not a Slack user id"),
        ('sre = ["U0SRE1", "U0SRE2"]', "sre = []", "groups.sre: the group is empty"),
        ('sre = ["U0SRE1", "U0SRE2"]', "", "groups: required group 'sre' missing"),
        ('pccr-gatekeeper = ["U0GATE1", "U0GATE2"]', "", "groups: required group 'pccr-gatekeeper' missing"),
        ("sre-gov = {", "sre_gov = {", "groups: unknown group 'sre_gov'"),
        ('"S0SREGOV"', '"U0SREGOV"', "groups.sre-gov: 'U0SREGOV' is not a Slack user group id"),
        (
            '{ slack_usergroup = "S0SREGOV" }',
            '{ usergroup = "S0SREGOV" }',
            "groups.sre-gov: unknown key 'usergroup'",
        ),
        # environments
        (
            'kstg = { cloud = "com" }',
            'kstg = { cloud = "aws" }',
            "environments.kstg.cloud: must be 'com' or 'gov'",
        ),
        ('kstg = { cloud = "com" }', "kstg = {}", "environments.kstg.cloud: required key is missing"),
        # release windows
        (
            'end = "2026-12-15T20:00:00Z"',
            'end = "2026-12-15T10:00:00Z"',
            "release.windows[0]: window '2026.12' ends",
        ),
        ('end = "2026-12-15T20:00:00Z"', 'end = "2026-12-15T16:00:00Z"', "make end later than start"),
        (
            'start = "2026-12-15T16:00:00Z"',
            'start = "next tuesday"',
            "release.windows[0].start: 'next tuesday'",
        ),
        ('start = "2026-12-15T16:00:00Z"', 'start = "2026-12-15T16:00:00"', "has no UTC offset"),
        (
            'start = "2026-12-15T16:00:00Z"',
            "start = 2026-12-15",
            "release.windows[0].start: must be an ISO-8601",
        ),
        (
            'start = "2026-12-15T16:00:00Z"',
            "start = 1797436800",
            "release.windows[0].start: must be an ISO-8601",
        ),
        ('{ name = "2026.12", ', '{ name = "2026.12", slot = 1, ', "release.windows[0]: unknown key 'slot'"),
        ("lead_time_days = 14 ", "lead_time_days = -1 ", "release.lead_time_days: must be 0 or more"),
        ("lead_time_days = 14 ", 'lead_time_days = "14" ', "release.lead_time_days: must be a whole number"),
        # other tables
        (
            'url = "http://127.0.0.1:8080"',
            'url = "127.0.0.1:8080"',
            "jenkins.url: '127.0.0.1:8080' is not an http(s) URL",
        ),
        ('user = "deploy-bot"', "", "jenkins.user: required key is missing: add user = … under [jenkins]"),
        (
            'diff_end = "=== DEPLOY DIFF END ==="',
            'diff_end = "=== DEPLOY DIFF BEGIN ==="',
            "jenkins: diff_begin and",
        ),
        (
            'configs_repo = "mulesoft/kilonova-product-configs"',
            'configs_repo = "kilonova"',
            "github.configs_repo",
        ),
        ("channel-gov/{service}.yaml", "channel-gov/{svc}.yaml", "github.version_file"),
        ("channel-gov/{service}.yaml", "channel-gov/all.yaml", "include {service}"),
        ('backend = "builtin"', 'backend = "jira"', "change_requests.backend: must be 'builtin' or 'github'"),
        ('repo = "acme/pccr"', "", None),  # builtin needs no repo
        ('triage_channel = "C0TRIAGE"', 'triage_channel = ""', "slack.triage_channel: must not be empty"),
        ('ui_url = "http://127.0.0.1:8233"', "ui_url = 8233", "ui_url: must be a string"),
    ],
)
def test_validation_errors(tmp_path: Path, old: str, new: str, expected: str | None) -> None:
    text = edited(old, new)
    if expected is None:
        load_text(tmp_path, text)
        return
    message = config_error(tmp_path, text)
    assert message.startswith(str(tmp_path / "deployctl.toml") + ": "), message
    assert expected in message, message


def test_github_backend_needs_a_repo(tmp_path: Path) -> None:
    text = edited('backend = "builtin"', 'backend = "github"').replace('repo = "acme/pccr"', "")
    assert 'backend "github" needs repo' in config_error(tmp_path, text)
    config = load_text(tmp_path, edited('backend = "builtin"', 'backend = "github"'))
    assert config.change_requests.backend == "github"


def test_unknown_keys_are_all_named(tmp_path: Path) -> None:
    message = config_error(tmp_path, MINIMAL + "[release]\nleadtime = 3\nwindow = []\n")
    assert "release: unknown keys 'leadtime', 'window'" in message
    assert "known keys: lead_time_days, windows" in message


def test_section_of_wrong_type(tmp_path: Path) -> None:
    text = 'change_requests = 5\nenvironments = ["kprod"]\n' + MINIMAL
    message = config_error(tmp_path, text)
    assert "change_requests: must be a table" in message
    assert "environments: must be a table" in message


def test_many_problems_stay_on_one_line(tmp_path: Path) -> None:
    text = edited('["U0OWNER1"]', '["x"]').replace('cloud = "com"', 'cloud = "c"')
    message = config_error(tmp_path, text)
    assert message.count(";") == 2
    assert message.endswith("(and 1 more problem)")


def test_native_toml_datetimes(tmp_path: Path) -> None:
    text = edited('start = "2026-12-15T16:00:00Z"', "start = 2026-12-15T17:00:00+01:00")
    window = load_text(tmp_path, text).release.windows[0]
    assert window.start == datetime(2026, 12, 15, 16, tzinfo=UTC)
    assert window.start.utcoffset() == timedelta(0)


def test_duplicate_window_names(tmp_path: Path) -> None:
    text = edited(
        "windows = [",
        'windows = [ { name = "2026.12", start = "2026-11-15T16:00:00Z", end = "2026-11-15T20:00:00Z" },',
    )
    assert "release.windows: window name '2026.12' is used twice" in config_error(tmp_path, text)


# ---------------------------------------------------------------------------------------------------
# Lookups


def test_unknown_service() -> None:
    config = load_config(EXAMPLE, env={})
    with pytest.raises(ConfigError) as info:
        config.service("payments")
    message = one_line(info.value)
    assert "unknown service 'payments'" in message
    assert "payments-api" in message
    assert message.startswith(str(EXAMPLE))


def test_unknown_environment() -> None:
    config = load_config(EXAMPLE, env={})
    with pytest.raises(ConfigError) as info:
        config.cloud("prod")
    message = one_line(info.value)
    assert "unknown environment 'prod'" in message
    assert "kprod, kprod-eu, kprod-gov, kstg" in message


def test_lookups_with_nothing_configured(tmp_path: Path) -> None:
    config = load_text(tmp_path, MINIMAL)
    with pytest.raises(ConfigError, match=r"\(none\)"):
        config.service("x")
    with pytest.raises(ConfigError, match=r"\(none\)"):
        config.cloud("x")


def test_usergroup_groups(tmp_path: Path) -> None:
    text = MINIMAL.replace('sre = ["U0SRE1"]', 'sre = { slack_usergroup = "S0SRE" }')
    config = load_text(tmp_path, text + 'vp = { slack_usergroup = "S0VP" }\n')
    assert config.groups["sre"] == GroupSpec(slack_usergroup="S0SRE")
    assert config.groups["vp"].mention() == "<!subteam^S0VP>"
    assert config.settings().groups["sre"].members == ()


# ---------------------------------------------------------------------------------------------------
# Config that cannot work is refused at load: a group a deploy waits on is missing, or holds only the
# service's code owners (who never act in another role on their own deploy)

ADD_SRE_GOV = 'add sre-gov = ["U0123ABCD", …] or sre-gov = { slack_usergroup = "S0123ABCD" } under [groups]'
ADD_VP = 'add vp = ["U0123ABCD", …] or vp = { slack_usergroup = "S0123ABCD" } under [groups]'


def test_groups_each_deploy_needs() -> None:
    """By the step table: gatekeepers review every deploy; the SRE comes from sre (com) or sre-gov (gov)."""
    assert groups_needed(Cloud.COM, valkyr=False) == {"pccr-gatekeeper", "sre"}
    assert groups_needed(Cloud.GOV, valkyr=False) == {"pccr-gatekeeper", "sre-gov"}
    assert groups_needed(Cloud.COM, valkyr=True) == {"pccr-gatekeeper", "sre", "vp"}
    assert groups_needed(Cloud.GOV, valkyr=True) == {"pccr-gatekeeper", "sre-gov", "vp"}


def test_optional_groups_only_when_needed(tmp_path: Path) -> None:
    """No gov environment and no valkyr service: neither sre-gov nor vp is needed."""
    text = MINIMAL + '[environments]\nkprod = { cloud = "com" }\n' + SERVICES
    config = load_text(tmp_path, text)
    assert set(config.settings().groups) == {"pccr-gatekeeper", "sre"}


def test_gov_environment_needs_sre_gov(tmp_path: Path) -> None:
    text = edited('sre-gov = { slack_usergroup = "S0SREGOV" }\n', "")
    assert config_error(tmp_path, text) == (
        f"{tmp_path / 'deployctl.toml'}: environments.kprod-gov: a gov-cloud deploy needs group 'sre-gov', "
        f"which is not configured: {ADD_SRE_GOV}"
    )
    two = text.replace(
        'kprod-gov = { cloud = "gov" }', 'kprod-gov = { cloud = "gov" }\nkgov2 = { cloud = "gov" }'
    )
    assert "environments.kgov2, environments.kprod-gov: a gov-cloud deploy" in config_error(tmp_path, two)
    without_gov = text.replace('kprod-gov = { cloud = "gov" }\n', "")
    assert set(load_text(tmp_path, without_gov).groups) == {"pccr-gatekeeper", "sre", "vp"}


def test_valkyr_service_needs_vp(tmp_path: Path) -> None:
    text = edited('vp = ["U0VP1"]\n', "").replace("valkyr = false ", "valkyr = true ")
    assert config_error(tmp_path, text) == (
        f"{tmp_path / 'deployctl.toml'}: services.payments-api: a valkyr service's deploy needs group 'vp', "
        f"which is not configured: {ADD_VP}"
    )
    # Even with no environment configured yet: every process of a valkyr service starts with VP approval.
    assert "services.ledger: a valkyr service's deploy needs group 'vp'" in config_error(
        tmp_path, MINIMAL + '[services.ledger]\ncode_owners = ["U0A"]\njenkins_job = "j"\nvalkyr = true\n'
    )
    assert set(load_text(tmp_path, edited('vp = ["U0VP1"]\n', "")).groups) == {
        "pccr-gatekeeper",
        "sre",
        "sre-gov",
    }


def test_missing_groups_on_one_line(tmp_path: Path) -> None:
    text = (
        edited('vp = ["U0VP1"]\n', "")
        .replace('sre-gov = { slack_usergroup = "S0SREGOV" }\n', "")
        .replace("valkyr = false ", "valkyr = true ")
    )
    message = config_error(tmp_path, text)
    assert message.count("; ") == 1, message
    assert "environments.kprod-gov: a gov-cloud deploy needs group 'sre-gov'" in message
    assert "; services.payments-api: a valkyr service's deploy needs group 'vp'" in message


@pytest.mark.parametrize(
    ("old", "new", "group"),
    [
        ('pccr-gatekeeper = ["U0GATE1", "U0GATE2"]', 'pccr-gatekeeper = ["U0OWNER1"]', "pccr-gatekeeper"),
        ('sre = ["U0SRE1", "U0SRE2"]', 'sre = ["U0OWNER1"]', "sre"),
        ('sre-gov = { slack_usergroup = "S0SREGOV" }', 'sre-gov = ["U0OWNER1"]', "sre-gov"),
    ],
)
def test_a_group_of_only_code_owners_cannot_act(tmp_path: Path, old: str, new: str, group: str) -> None:
    message = config_error(tmp_path, edited(old, new))
    assert message == (
        f"{tmp_path / 'deployctl.toml'}: services.payments-api: every member of group {group!r} (U0OWNER1) "
        "is a code owner of payments-api, and a code owner never acts in another role on their own deploy: "
        f"add someone else to {group} under [groups]"
    )
    # One other member is enough.
    assert load_text(tmp_path, edited(old, new.replace('["U0OWNER1"]', '["U0OWNER1", "U0OTHER"]')))


def test_a_group_of_only_code_owners_where_it_is_not_needed(tmp_path: Path) -> None:
    # vp acts only on valkyr services, sre-gov only in gov environments; a user group is resolved later.
    assert load_text(tmp_path, edited('vp = ["U0VP1"]', 'vp = ["U0OWNER1"]'))
    text = edited('sre-gov = { slack_usergroup = "S0SREGOV" }', 'sre-gov = ["U0OWNER1"]')
    assert load_text(tmp_path, text.replace('kprod-gov = { cloud = "gov" }\n', ""))
    assert "every member of group 'vp'" in config_error(
        tmp_path, edited('vp = ["U0VP1"]', 'vp = ["U0OWNER1"]').replace("valkyr = false ", "valkyr = true ")
    )
    sre_usergroup = edited('sre = ["U0SRE1", "U0SRE2"]', 'sre = { slack_usergroup = "S0SRE" }')
    assert load_text(tmp_path, sre_usergroup.replace('["U0OWNER1"]', '["U0OWNER1", "U0SRE1"]'))


def test_test_configs_can_work(tmp_path: Path) -> None:
    """The configs the dev stack, the benchmarks and the tests write all pass the load-time checks."""
    from starter.devstack import config_text, release_calendar
    from tests.conftest import CONFIG_TEMPLATE

    load_text(
        tmp_path,
        config_text("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3")
        + release_calendar(None),
    )
    for valkyr in ("false", "true"):
        load_text(
            tmp_path,
            CONFIG_TEMPLATE.format(
                task_queue="q",
                jenkins_url="http://127.0.0.1:1",
                jenkins_extra="",
                slack_url="http://127.0.0.1:2/api/",
                github_url="http://127.0.0.1:3/api/v3",
                service="svc",
                job="deploy-svc",
                pccr_backend="builtin",
                valkyr=valkyr,
                timeouts="",
                bridge_key=keys.public(keys.BRIDGE),
            ),
        )


# ---------------------------------------------------------------------------------------------------
# Secrets


def test_secret_present() -> None:
    assert secret("JENKINS_TOKEN", {"JENKINS_TOKEN": "tok-123\n"}) == "tok-123"
    assert secret("GITHUB_TOKEN", env={"GITHUB_TOKEN": "ghp"}) == "ghp"


@pytest.mark.parametrize(
    "name", ["JENKINS_TOKEN", "GITHUB_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"]
)
def test_secret_missing(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        secret(name, {})
    assert one_line(info.value).startswith(f"{name} is not set: export it")
    with pytest.raises(ConfigError):
        secret(name, {name: "   "})
    assert secret(name, {}, required=False) is None


def test_secret_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-env")
    assert secret("SLACK_BOT_TOKEN") == "xoxb-from-env"


def test_unknown_secret_name() -> None:
    with pytest.raises(ValueError, match="not a secret"):
        secret("PATH", {"PATH": "/bin"})


def test_secrets_never_shown() -> None:
    env = {"JENKINS_TOKEN": "s3cr3t-jenkins", "SLACK_BOT_TOKEN": "xoxb-s3cr3t"}
    config = load_config(EXAMPLE, env=env)
    for text in (repr(config), config.model_dump_json(), config.settings().model_dump_json()):
        assert "s3cr3t" not in text
    assert "token" not in Config.model_fields


# ---------------------------------------------------------------------------------------------------
# Release calendar (`deployctl releases`)


def releases_table(config: Config, now: datetime) -> dict[str, list[str]]:
    lines = render_releases(config, now).splitlines()
    assert lines[0].split() == ["window", "opens", "(UTC)", "closes", "(UTC)", "plan", "by", "status"]
    return {row.split()[0]: row.split()[1:] for row in lines[1:]}


def test_release_windows(tmp_path: Path) -> None:
    text = MINIMAL + (
        "[release]\nlead_time_days = 10\nwindows = [\n"
        '  { name = "late", start = "2027-02-01T00:30:00Z", end = "2027-02-01T04:00:00Z" },\n'
        '  { name = "past", start = "2026-01-01T10:00:00Z", end = "2026-01-01T12:00:00Z" },\n'
        '  { name = "open", start = "2026-06-01T10:00:00Z", end = "2026-06-01T14:00:00Z" },\n'
        '  { name = "next", start = "2026-07-01T16:00:00Z", end = "2026-07-01T20:00:00Z" },\n'
        "]\n"
    )
    config = load_text(tmp_path, text)
    table = releases_table(config, datetime(2026, 6, 1, 12, tzinfo=UTC))
    assert list(table) == ["open", "next", "late"]  # by start; the window that is over is left out
    assert table["open"][4:] == ["2026-05-22", "in", "progress"]
    assert table["next"] == [
        "2026-07-01",
        "16:00",
        "2026-07-01",
        "20:00",
        "2026-06-21",
        "open",
        "for",
        "planning",
    ]
    assert table["late"][4] == "2027-01-22"
    assert render_releases(config, datetime(2030, 1, 1, tzinfo=UTC)).startswith("no coming release windows")


def test_release_windows_example() -> None:
    config = load_config(EXAMPLE, env={})
    assert releases_table(config, datetime(2026, 11, 1, tzinfo=UTC))["2026.12"][4:] == [
        "2026-12-01",
        "open",
        "for",
        "planning",
    ]


# ---------------------------------------------------------------------------------------------------
# ConfigError itself


def test_config_error_is_one_line() -> None:
    assert str(ConfigError("first\n  second\r\nthird")) == "first second third"


# ---------------------------------------------------------------------------------------------------
# ConfigReader: the rules activity reads the file at every step and parses it only when it changed


def test_the_reader_parses_a_file_once_while_its_bytes_stay_the_same(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    reader = ConfigReader(path, env={})
    first = reader.load()
    assert [reader.load() is first for _ in range(5)] == [True] * 5
    assert reader.parsed == 1
    assert first.model_dump() == load_config(path, env={}).model_dump()


def test_the_reader_sees_every_change_of_the_bytes_at_the_next_load(tmp_path: Path) -> None:
    """The attack a cache invites: change the roster and have the workers go on with the old one. The key
    is the sha256 of the bytes read now, so any change, even one keeping size and mtime, is parsed."""
    path = write(tmp_path, MINIMAL)
    reader = ConfigReader(path, env={})
    before = reader.load()
    stat = path.stat()
    path.write_text(MINIMAL.replace("U0SRE1", "U0SRE2"), encoding="utf-8")  # same length
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    after = reader.load()
    assert before.groups["sre"].members != after.groups["sre"].members
    assert list(after.groups["sre"].members) == ["U0SRE2"]
    assert after.rules("x", "y").config_sha256 != before.rules("x", "y").config_sha256
    assert reader.parsed == 2


def test_the_reader_reparses_when_an_environment_override_changes(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    env: dict[str, str] = {}
    reader = ConfigReader(path, env=env)
    assert reader.load().jenkins.url.startswith("https://jenkins.example:8443")
    env["JENKINS_URL"] = "https://other.example/"
    assert reader.load().jenkins.url.startswith("https://other.example")
    assert reader.parsed == 2


def test_a_file_that_stops_loading_fails_at_once_and_never_gives_the_old_config(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    reader = ConfigReader(path, env={})
    reader.load()
    path.write_text(MINIMAL + "\n[groups\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        reader.load()
    path.write_text(MINIMAL.replace('sre = ["U0SRE1"]', ""), encoding="utf-8")  # valid TOML, bad config
    with pytest.raises(ConfigError, match="sre"):
        reader.load()
    path.unlink()
    with pytest.raises(ConfigError, match="not found"):
        reader.load()
    path.write_text(MINIMAL, encoding="utf-8")  # fixed: the same bytes as the first read, parsed anew
    assert list(reader.load().groups["sre"].members) == ["U0SRE1"]
    assert reader.parsed == 2
