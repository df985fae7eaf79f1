"""The `deployctl` CLI and the `temporal` CLI, run as a user runs them, against the dev server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.devstack import wait_for_step
from starter.simulators.jenkins import FakeJenkins
from tests import keys
from tests.conftest import BIN, GATE1, GATE2, OWNER, PARAMS, SRE1, Deployment, eventually
from tests.support import signed
from worker import create_worker
from workflows import signing
from workflows.models import DeployResult, Outcome, Step


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


async def deployctl(
    env: WorkflowEnvironment, d: Deployment | None, *args: str, extra_env: dict | None = None
) -> Run:
    """Run the installed `deployctl` in a subprocess (async: the test's worker keeps running meanwhile)."""
    e = dict(os.environ)
    e["TEMPORAL_ADDRESS"] = env.client.service_client.config.target_host
    e.pop("DEPLOYCTL_USER", None)
    if d is not None:
        e["DEPLOYCTL_CONFIG"] = str(d.config_path)
    e.update(extra_env or {})
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "deployctl"), *args, env=e, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def temporal(env: WorkflowEnvironment, *args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "temporal"),
        *args,
        "--address",
        env.client.service_client.config.target_host,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("IMAGE_TAG: '1.4.2'\nREPLICAS: 3\nDRY_RUN: false\n")
    return path


async def test_whole_deploy_through_the_cli_and_the_temporal_cli(
    env: WorkflowEnvironment, client: Client, deployment: Deployment, params_file: Path, jenkins: FakeJenkins
):
    d = deployment
    async with create_worker(client, d.config, task_queue=d.task_queue):
        r = await deployctl(
            env,
            d,
            "start",
            "oow",
            "--service",
            d.service,
            "--env",
            "kprod",
            "--params",
            str(params_file),
            "--as",
            OWNER,
        )
        assert r.code == 0, r.err
        wid, link = r.out.split()
        assert link.endswith(f"/namespaces/default/workflows/{wid}")
        await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)

        r = await deployctl(env, d, "approve", wid, "--as", OWNER)
        assert r.code == 3 and r.err.count("\n") == 1 and "refused: separation of duties" in r.err
        r = await deployctl(env, d, "approve", wid, "--as", GATE1, "--comment", "ok")
        assert r.code == 0, r.err
        assert r.out.strip() == f"approve accepted at pccr_review on {wid}"

        # The temporal CLI: an Update, then a Signal, with the same JSON payload.
        await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE2)
        r = await temporal(
            env,
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            wid,
            "--name",
            "assign",
            "--input",
            json.dumps(signed({"actor": GATE2, "step": "sre_assignment", "sre": SRE1}, wid, "assign")),
        )
        assert r.code == 0, r.err
        await wait_for_step(client, wid, Step.CLEARANCE, SRE1)
        r = await temporal(
            env,
            "workflow",
            "update",
            "execute",
            "--workflow-id",
            wid,
            "--name",
            "approve",
            "--input",
            json.dumps(signed({"actor": GATE2, "step": "clearance"}, wid, "approve")),
        )
        assert r.code != 0 and "may not approve at clearance" in (r.out + r.err)
        r = await temporal(
            env,
            "workflow",
            "signal",
            "--workflow-id",
            wid,
            "--name",
            "approve",
            "--input",
            json.dumps(signed({"actor": SRE1, "step": "clearance"}, wid, "approve")),
        )
        assert r.code == 0, r.err

        await wait_for_step(client, wid, Step.TRIGGER, OWNER)
        r = await deployctl(env, d, "trigger", wid, "--as", OWNER, "--step", "clearance")
        assert r.code == 3 and "stale step" in r.err
        r = await deployctl(env, d, "trigger", wid, extra_env={"DEPLOYCTL_USER": OWNER})
        assert r.code == 0, r.err
        st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)

        r = await deployctl(env, d, "validate-diff", wid, "--as", OWNER, "--diff-sha256", "f" * 64)
        assert r.code == 3 and "is not the build's diff" in r.err
        r = await deployctl(
            env, d, "validate-diff", wid, "--as", OWNER, "--diff-sha256", st.build.diff_sha256
        )
        assert r.code == 0, r.err
        await wait_for_step(client, wid, Step.DEPLOY_APPROVAL, SRE1)

        r = await deployctl(env, d, "status", wid, "--json")
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        assert doc["step"] == "deploy_approval" and doc["waiting_on"] == [SRE1]
        assert doc["allowed_actions"] == ["approve", "reject", "cancel"]
        assert (
            doc["build"]["number"] == st.build.number and doc["build"]["diff_sha256"] == st.build.diff_sha256
        )
        assert doc["outcome"] is None and doc["pccr"]["params"] == PARAMS
        assert {"time", "step", "action", "actor", "channel", "accepted", "reason"} <= set(doc["audit"][0])

        rows = await eventually(lambda: _listed(env, d, "--waiting-on", SRE1))
        assert [r["workflow_id"] for r in rows] == [wid] and rows[0]["step"] == "deploy_approval"

        r = await deployctl(env, d, "approve", wid, "--as", SRE1)
        assert r.code == 0, r.err
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
        assert result.outcome is Outcome.SUCCEEDED

        r = await deployctl(env, d, "audit", wid, "--format", "json")
        assert r.code == 0, r.err
        audit = json.loads(r.out)
        assert audit["audit"][: len(doc["audit"])] == doc["audit"]  # the trail only grows
        channels = {
            (e["actor"], e["channel"]) for e in audit["audit"] if e["accepted"] and e["actor"] != "deployctl"
        }
        assert channels == {
            (GATE1, "cli"),
            (GATE2, "temporal"),
            (SRE1, "signal"),
            (OWNER, "cli"),
            (SRE1, "cli"),
        }
        r = await deployctl(env, d, "audit", wid)
        fp = signing.fingerprint(keys.public(GATE1))
        assert (
            r.code == 0
            and f"| pccr_review | approve | U0GATE1 | ssh:{fp} | pccr-gatekeeper | cli | yes |" in r.out
        )
        r = await deployctl(env, d, "approve", wid, "--as", SRE1, "--step", "deploy_approval")
        assert r.code == 3 and "finished" in r.err
    assert len(jenkins.builds(d.job)) == 1


async def _listed(env: WorkflowEnvironment, d: Deployment, *args: str) -> list[dict]:
    r = await deployctl(env, d, "list", "--service", d.service, "--json", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


async def test_start_refusals_and_usage_errors(
    env: WorkflowEnvironment, client: Client, deployment: Deployment, tmp_path: Path, params_file: Path
):
    d = deployment
    bad = tmp_path / "bad.yaml"
    bad.write_text("IMAGE_TAG: '1'\nCOLOR: blue\n")
    start = ["start", "oow", "--service", d.service, "--env", "kprod", "--as", OWNER, "--params"]
    async with create_worker(client, d.config, task_queue=d.task_queue):
        r = await deployctl(env, d, *start, str(bad))
        assert r.code == 3
        assert (
            r.err
            == f"deployctl: refused: params do not match Jenkins job {d.job}: missing REPLICAS, DRY_RUN; unknown COLOR; fix the params file\n"
        )
    r = await deployctl(env, d, *start, str(tmp_path / "missing.yaml"))
    assert r.code == 2 and "cannot read params file" in r.err and r.err.count("\n") == 1
    notyaml = tmp_path / "x.yaml"
    notyaml.write_text("- just\n- a list\n")
    r = await deployctl(env, d, *start, str(notyaml))
    assert r.code == 2 and "must be a mapping" in r.err
    r = await deployctl(
        env,
        d,
        "start",
        "oow",
        "--service",
        "nope",
        "--env",
        "kprod",
        "--params",
        str(params_file),
        "--as",
        OWNER,
    )
    assert r.code == 2 and "nope" in r.err and r.err.count("\n") == 1
    r = await deployctl(
        env,
        d,
        "start",
        "oow",
        "--service",
        d.service,
        "--env",
        "mars",
        "--params",
        str(params_file),
        "--as",
        OWNER,
    )
    assert r.code == 2 and "mars" in r.err
    r = await deployctl(
        env, d, "start", "oow", "--service", d.service, "--env", "kprod", "--params", str(params_file)
    )
    assert r.code == 2 and "--as" in r.err
    r = await deployctl(
        env,
        d,
        "start",
        "oow",
        "--service",
        d.service,
        "--env",
        "kprod",
        "--params",
        str(params_file),
        "--as",
        GATE1,
    )
    assert r.code == 3 and "is not a code owner" in r.err
    r = await deployctl(
        env,
        d,
        "start",
        "oow",
        "--service",
        d.service,
        "--env",
        "kprod-gov",
        "--params",
        str(params_file),
        "--as",
        OWNER,
    )
    assert r.code == 3 and "needs --version" in r.err
    r = await deployctl(env, None, "status", "x", extra_env={"DEPLOYCTL_CONFIG": str(tmp_path / "none.toml")})
    assert r.code == 2 and r.err.count("\n") == 1
    broken = tmp_path / "broken.toml"
    broken.write_text("task_queue = [\n")
    r = await deployctl(
        env,
        None,
        "plan",
        "--service",
        d.service,
        "--env",
        "kprod",
        extra_env={"DEPLOYCTL_CONFIG": str(broken)},
    )
    assert r.code == 2 and r.err.count("\n") == 1
    found = [wf async for wf in client.list_workflows(f"DeployService = '{d.service}'")]
    assert found == []


async def test_plan_reads_the_step_table(env: WorkflowEnvironment, deployment: Deployment):
    r = await deployctl(env, deployment, "plan", "--service", deployment.service, "--env", "kprod")
    assert r.code == 0, r.err
    lines = [line.split()[1] for line in r.out.splitlines()[1:] if line[:3].strip().rstrip(".").isdigit()]
    assert lines == [
        "pccr_review",
        "sre_assignment",
        "clearance",
        "trigger",
        "diff_validation",
        "deploy_approval",
        "deploying",
    ]
    assert "pccr-gatekeeper: U0GATE1, U0GATE2 (times out after 3d)" in r.out
    assert "assigned-sre: <assigned SRE>" in r.out
    r = await deployctl(env, deployment, "plan", "--service", deployment.service, "--env", "kprod-gov")
    assert "version_pr_merge" in r.out and "<!subteam^S0SREGOV>" in r.out


def test_cli_module_runs_without_a_server():
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "starter.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "validate-diff" in r.stdout and "assign" in r.stdout


async def test_an_action_on_something_that_is_not_a_deploy_is_one_line(
    env: WorkflowEnvironment, client: Client, deployment: Deployment, worker: None
):
    """`approve` without `--step` reads the step from the `status` query. When that query fails (the
    workflow is not a deploy, or its status cannot be read), the CLI says so in one line, no traceback."""
    from workflows.models import LockState

    lock = await client.start_workflow(
        "DeployLock", LockState(), id=f"not-a-deploy-{deployment.service}", task_queue=deployment.task_queue
    )
    r = await deployctl(env, deployment, "approve", lock.id, "--as", GATE1)
    assert r.code == 1, (r.code, r.err)
    assert r.err.count("\n") == 1 and "Traceback" not in r.err, r.err
    assert r.err.startswith(f"deployctl: cannot read the status of {lock.id}: "), r.err
    await lock.terminate("test over")


def test_a_key_directory_is_looked_up_by_plain_user_ids_only(tmp_path: Path):
    """A directory of per-user keys (dev, demo) names files by user id; an actor that is a path or longer
    than a file name finds no key (it was an OSError traceback for an actor of 1,000 characters, found by
    test_bad_input's hypothesis run), so it is sent unsigned, or refused at the CLI."""
    from starter.client import UsageError, signing_key

    keydir = tmp_path / "keys"
    keydir.mkdir()
    (keydir / GATE1).write_text("a key\n")
    (tmp_path / "other").write_text("somebody else's key\n")
    assert signing_key(str(keydir), GATE1) == str(keydir / GATE1)
    for actor in ("0" * 1000, "../other", f"{GATE1}/..", ""):
        assert signing_key(str(keydir), actor) is None
        with pytest.raises(UsageError, match="holds no key for"):
            signing_key(str(keydir), actor, strict=True)
