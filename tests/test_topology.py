"""The production topology (SPEC §8): docker-compose.yml as Debian's docker-compose 1.29 reads it, the
Dockerfile, and the support files under deploy/. No Docker engine is needed: `docker-compose config`
only validates and resolves the file."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.common import SearchAttributeIndexedValueType

from workflows import search_attributes as sa

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
CLOUD_OVERLAY = ROOT / "deploy" / "docker-compose.cloud.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
SETUP_SCRIPT = ROOT / "deploy" / "temporal-setup.sh"
DOCKERFILE = ROOT / "Dockerfile"

SECRETS = ("JENKINS_TOKEN", "GITHUB_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN")
CONFIG_PATH = "/etc/deployctl/deployctl.toml"
TYPE_NAMES = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}

DOCKER_COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="the docker-compose binary is not installed (CI installs Debian's: apt-get install docker-compose)",
)


def _compose_config(*files: Path, env_file: Path, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker-compose config` as on a clean clone: no `.env` is read (an explicit env file instead) and
    no variable leaks in from the developer's shell."""
    assert DOCKER_COMPOSE is not None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(extra_env or {})
    args = [DOCKER_COMPOSE, "--env-file", str(env_file)]
    for file in files:
        args += ["-f", str(file)]
    result = subprocess.run([*args, "config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def resolved(empty_env_file: Path) -> dict[str, Any]:
    return _compose_config(COMPOSE_FILE, env_file=empty_env_file)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services_with_image(compose: dict[str, Any], repository: str) -> dict[str, str]:
    """service name -> tag, for the services that run `repository`."""
    found = {}
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if image.split(":", 1)[0] == repository:
            found[name] = image.split(":", 1)[1] if ":" in image else ""
    return found


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return dict(env)
    return {item.split("=", 1)[0]: (item.split("=", 1)[1] if "=" in item else None) for item in env}


def _published(port: Any) -> tuple[str | None, str]:
    """(host ip, the whole entry) of one `ports` entry, short or long form."""
    if isinstance(port, dict):
        return port.get("host_ip"), json.dumps(port)
    text = str(port)
    parts = text.split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else None), text


# ------------------------------------------------------------------------------------ the file as written


def test_compose_file_has_no_top_level_name_and_a_1_29_version(raw: dict[str, Any]) -> None:
    assert "name" not in raw, "docker-compose 1.29 rejects a top-level name:"
    assert raw.get("version") == "3.8"


def test_ports_are_short_form_on_127_0_0_1(raw: dict[str, Any]) -> None:
    published = [(name, port) for name, svc in raw["services"].items() for port in svc.get("ports", [])]
    assert published, "the stack publishes the Temporal frontend, the Web UI and the Slack bridge"
    for name, port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port!r}"
    assert ("temporal", "127.0.0.1:7233:7233") in published
    assert ("slack-bridge", "127.0.0.1:3000:3000") in published


def test_worker_replicas_as_the_file_states_them(raw: dict[str, Any]) -> None:
    worker = raw["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert "scale" not in worker, "docker-compose refuses both scale and deploy.replicas"
    assert "container_name" not in worker and "ports" not in worker, "replicas cannot share these"


def test_env_file_is_not_committed() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("git is not installed, or this is not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", ".env"], cwd=ROOT, capture_output=True, timeout=30
    )
    assert tracked.returncode != 0, ".env is tracked by git: remove it with git rm --cached .env"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, timeout=30)
    assert ignored.returncode == 0, ".env must be listed in .gitignore"
    assert ".env" in (ROOT / ".dockerignore").read_text().split(), ".env must stay out of the image"


def test_env_example_holds_no_secret_values() -> None:
    values = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"[A-Z_]+=", line)
    )
    for name in SECRETS:
        assert values.get(name, None) == "", f"{name} must be blank in the example"


def test_setup_script_creates_the_workers_search_attributes() -> None:
    text = SETUP_SCRIPT.read_text()
    block = re.search(r'SEARCH_ATTRIBUTES="(.*?)"', text, re.S)
    assert block, "temporal-setup.sh lists its attributes in SEARCH_ATTRIBUTES"
    declared = dict(entry.split(":") for entry in block.group(1).split())
    expected = {key.name: TYPE_NAMES[key.indexed_value_type] for key in sa.ALL}
    assert declared == expected
    assert "operator search-attribute create" in text


# ------------------------------------------------------------------------- docker-compose 1.29's view


@needs_compose
def test_compose_config_passes_on_a_clean_checkout(resolved: dict[str, Any]) -> None:
    assert "name" not in resolved
    assert {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-setup",
        "temporal-ui",
        "worker",
        "slack-bridge",
    } <= set(resolved["services"])


@needs_compose
def test_compose_config_exactly_as_ci_runs_it() -> None:
    if (ROOT / ".env").exists():
        pytest.skip("a local .env exists: this is not a clean checkout (the other tests ignore it)")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        [str(DOCKER_COMPOSE), "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@needs_compose
def test_every_published_port_is_bound_to_localhost(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            host_ip, entry = _published(port)
            assert host_ip == "127.0.0.1", f"{name} publishes {entry} beyond 127.0.0.1"


@needs_compose
def test_postgres_keeps_its_data_in_a_named_volume(resolved: dict[str, Any]) -> None:
    pg = _services_with_image(resolved, "postgres")
    assert len(pg) == 1, pg
    ((name, tag),) = pg.items()
    assert re.fullmatch(r"\d+(\.\d+)?(-[a-z0-9]+)?", tag), f"postgres image must be pinned, not {tag!r}"
    volumes = resolved.get("volumes") or {}
    mounts = [str(v).split(":") for v in resolved["services"][name]["volumes"]]
    assert any(m[0] in volumes and m[1] == "/var/lib/postgresql/data" for m in mounts), mounts


@needs_compose
def test_temporal_server_and_admin_tools_share_one_pinned_version(resolved: dict[str, Any]) -> None:
    servers = _services_with_image(resolved, "temporalio/server") or _services_with_image(
        resolved, "temporalio/auto-setup"
    )
    tools = _services_with_image(resolved, "temporalio/admin-tools")
    assert len(servers) == 1 and tools, (servers, tools)
    (server_tag,) = servers.values()
    assert re.fullmatch(r"\d+\.\d+\.\d+", server_tag), f"pin the server to a release, not {server_tag!r}"
    for name, tag in tools.items():
        assert tag.split("-", 1)[0] == server_tag, f"{name} runs admin-tools {tag}, the server {server_tag}"
    (ui_tag,) = _services_with_image(resolved, "temporalio/ui").values()
    assert re.fullmatch(r"\d+\.\d+\.\d+", ui_tag), f"pin the Web UI to a release, not {ui_tag!r}"


@needs_compose
def test_search_attribute_job_runs_before_workers_and_bridge(resolved: dict[str, Any]) -> None:
    setup = resolved["services"]["temporal-setup"]
    assert setup["image"].startswith("temporalio/admin-tools:")
    sources = [v["source"] for v in setup["volumes"] if isinstance(v, dict)]
    assert str(SETUP_SCRIPT) in sources
    assert "/deploy/temporal-setup.sh" in shlex.join([*setup["entrypoint"], *setup["command"]])
    for name in ("worker", "slack-bridge"):
        depends = resolved["services"][name]["depends_on"]
        assert depends["temporal-setup"]["condition"] == "service_completed_successfully"


@needs_compose
def test_worker_pool(resolved: dict[str, Any]) -> None:
    worker = resolved["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert worker["command"] == ["python", "worker.py", "--metrics-port", "9464"]
    assert worker["stop_signal"] == "SIGTERM"
    assert worker["stop_grace_period"] == "30s"
    assert "build" in worker


@needs_compose
@pytest.mark.parametrize("service", ["worker", "slack-bridge"])
def test_deployctl_services_config_temporal_and_secrets(resolved: dict[str, Any], service: str) -> None:
    svc = resolved["services"][service]
    env = _environment(svc)
    assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert env["DEPLOYCTL_CONFIG"] == CONFIG_PATH
    (mount,) = [v for v in svc["volumes"] if isinstance(v, dict) and v["target"] == CONFIG_PATH]
    assert mount["read_only"] is True and mount["type"] == "bind"
    given = [name for name in SECRETS if name in env]
    assert given, f"{service} receives its secrets from the environment"
    for name in given:
        assert env[name] is None, f"{service}: {name} must come from .env or the shell, not the file"
    for name in ("TEMPORAL_API_KEY", "TEMPORAL_TLS"):
        assert name not in env, f"{service}: an empty {name} would turn TLS on"


@needs_compose
def test_slack_bridge_command(resolved: dict[str, Any]) -> None:
    bridge = resolved["services"]["slack-bridge"]
    assert bridge["command"] == ["deployctl", "slack", "--host", "0.0.0.0", "--port", "3000"]


@needs_compose
def test_compose_config_with_the_example_env_file() -> None:
    resolved = _compose_config(COMPOSE_FILE, env_file=ENV_EXAMPLE)
    for service in resolved["services"].values():
        for port in service.get("ports", []):
            assert _published(port)[0] == "127.0.0.1"


@needs_compose
def test_cloud_overlay(empty_env_file: Path) -> None:
    cloud = {
        "TEMPORAL_CLOUD_ADDRESS": "deployctl.a1b2c.tmprl.cloud:7233",
        "TEMPORAL_CLOUD_NAMESPACE": "deployctl.a1b2c",
        "TEMPORAL_API_KEY": "test-key",
    }
    resolved = _compose_config(COMPOSE_FILE, CLOUD_OVERLAY, env_file=empty_env_file, extra_env=cloud)
    for service in ("worker", "slack-bridge"):
        env = _environment(resolved["services"][service])
        assert env["TEMPORAL_ADDRESS"] == cloud["TEMPORAL_CLOUD_ADDRESS"]
        assert env["TEMPORAL_NAMESPACE"] == cloud["TEMPORAL_CLOUD_NAMESPACE"]
        assert env["TEMPORAL_API_KEY"] == "test-key"


# ------------------------------------------------------------------------------------------ Dockerfile


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_dockerfile_runs_the_worker_as_non_root() -> None:
    instructions = _instructions()
    args = dict(rest.split("=", 1) for kw, rest in instructions if kw == "ARG" and "=" in rest)
    assert args.get("PYTHON_IMAGE", "").startswith("python:3.11-slim")
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    runtime = instructions[last_from:]
    assert runtime[0][1].split()[0] == "${PYTHON_IMAGE}"
    users = [rest for kw, rest in runtime if kw == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users
    cmds = [rest for kw, rest in runtime if kw == "CMD"]
    assert json.loads(cmds[-1]) == ["python", "worker.py", "--metrics-port", "9464"]
    assert ("STOPSIGNAL", "SIGTERM") in runtime
    assert any(kw == "RUN" and "pip install ." in rest for kw, rest in instructions)
