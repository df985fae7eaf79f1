"""Gov-cloud deploys (version PR on GitHub, SRE from sre-gov), valkyr's VP step, PCCRs as GitHub issues."""

from __future__ import annotations

import json

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.client import Refused, send_action, start_deploy
from starter.devstack import wait_for_step
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests.conftest import (
    CONFIGS_REPO,
    GATE1,
    GATE2,
    OWNER,
    PARAMS,
    PCCR_REPO,
    SRE1,
    VERSION_FILE,
    Deployment,
    eventually,
    make_deployment,
)
from tests.support import SREG1, act, refused, start_gov, status, to_merge
from tests.test_cli import deployctl
from worker import create_worker
from workflows.models import Action, ActionInput, DeployResult, Outcome, Process, Step

SREG2 = "U0SREG2"  # the other member of the sre-gov Slack user group S0SREGOV


async def test_gov_deploy_through_the_cli(
    env: WorkflowEnvironment,
    client: Client,
    deployment: Deployment,
    worker: None,
    jenkins: FakeJenkins,
    slack: FakeSlack,
    github: FakeGitHub,
    tmp_path,
):
    d = deployment
    params = tmp_path / "params.json"
    params.write_text('{"IMAGE_TAG": "1.4.2", "REPLICAS": 3, "DRY_RUN": false}')
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
        str(params),
        "--as",
        OWNER,
    )
    assert r.code == 3 and "needs --version" in r.err
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
        str(params),
        "--version",
        "1.4.2",
        "--as",
        OWNER,
    )
    assert r.code == 0, r.err
    wid = r.out.split()[0]
    st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    # The version PR changes only the version line of the service's file.
    pr = next(p for p in github.pulls(CONFIGS_REPO) if p["head"]["ref"] == f"deployctl/{wid}")
    assert st.version_pr == pr["html_url"]
    path = f"channel-gov/{d.service}.yaml"
    assert github.file(CONFIGS_REPO, f"deployctl/{wid}", path) == VERSION_FILE.format(
        service=d.service
    ).replace("version: 1.4.1", "version: 1.4.2")
    root = await eventually(
        lambda: [m for m in slack.messages_to("C0TRIAGE") if wid in m["text"] and not m.get("thread_ts")]
    )
    assert [(m["history"][0] if m["history"] else m)["text"] for m in root] == [
        f"<!subteam^S0SREGOV> requesting review for OOW gov deploy job PR http://127.0.0.1:8233/namespaces/default/workflows/{wid}"
    ]
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE1)
    r = await deployctl(env, d, "assign", wid, "--sre", SRE1, "--as", GATE1)
    assert r.code == 3 and f"{SRE1} is not in sre-gov; assign one of: {SREG1}, {SREG2}" in r.err
    r = await deployctl(env, d, "assign", wid, "--sre", SREG1, "--as", GATE1)
    assert r.code == 0, r.err
    st = await wait_for_step(client, wid, Step.VERSION_PR_MERGE, SREG1)
    assignment = next(r for r in st.rosters if r.step is Step.SRE_ASSIGNMENT)
    assert assignment.groups["sre-gov"] == [SREG1, SREG2]  # the user group's roster, captured at the step

    github.set_mergeable(CONFIGS_REPO, pr["number"], False, reason="dirty")
    r = await deployctl(env, d, "merge", wid, "--as", SREG1)
    assert r.code == 3 and "GitHub refused the merge: Pull Request is not mergeable" in r.err
    st = await wait_for_step(client, wid, Step.VERSION_PR_MERGE, SREG1)  # still waiting for a merge
    github.set_mergeable(CONFIGS_REPO, pr["number"], True)
    r = await deployctl(env, d, "merge", wid, "--as", SREG1)
    assert r.code == 0, r.err
    await wait_for_step(client, wid, Step.TRIGGER, SREG1)
    assert next(p for p in github.pulls(CONFIGS_REPO) if p["number"] == pr["number"])["merged"]
    r = await deployctl(env, d, "trigger", wid, "--as", OWNER)
    assert r.code == 3 and "separation of duties" in r.err  # on gov the SRE triggers
    r = await deployctl(env, d, "trigger", wid, "--as", SREG1)
    assert r.code == 0, r.err
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
    sha = st.build.diff_sha256 or ""
    await eventually(  # the owner's DM goes out through the notice queue, after the trigger step's DMs close
        lambda: [m for m in slack.messages_to(OWNER) if "diff_validation" in m["text"] and sha in m["text"]]
    )
    r = await deployctl(env, d, "validate-diff", wid, "--as", OWNER, "--diff-sha256", st.build.diff_sha256)
    assert r.code == 0, r.err
    r = await deployctl(env, d, "approve", wid, "--as", SREG1, "--step", "deploy_approval")
    assert r.code == 0, r.err
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED
    final = await status(client, wid)
    refusals = [e for e in final.audit if e.action == "merge" and not e.accepted]
    assert len(refusals) == 1 and "not mergeable" in refusals[0].reason
    assert len(jenkins.builds(d.job)) == 1


async def test_a_pr_merged_directly_on_github_is_noticed(
    client: Client, deployment: Deployment, worker: None, github: FakeGitHub
):
    wid = await start_gov(client, deployment)
    st = await to_merge(client, wid)
    number = int(st.version_pr.rsplit("/", 1)[1])
    github.merge_directly(CONFIGS_REPO, number, by="octocat")
    st = await wait_for_step(client, wid, Step.TRIGGER, SREG1, timeout=60)
    noticed = [e for e in st.audit if e.action == "merged_on_github"]
    assert len(noticed) == 1 and noticed[0].actor == "octocat" and noticed[0].channel == "github"
    # octocat is nobody the workers know as the assigned SRE: followed, and marked out of policy (SPEC §9).
    assert noticed[0].identity == "github:octocat" and noticed[0].out_of_policy
    assert "out of policy: octocat" in (noticed[0].reason or "")
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.TRIGGER))
    assert (
        await client.get_workflow_handle(wid, result_type=DeployResult).result()
    ).outcome is Outcome.CANCELLED


async def test_cancel_closes_the_version_pr(
    client: Client, deployment: Deployment, worker: None, github: FakeGitHub
):
    wid = await start_gov(client, deployment, version="2.0.0")
    st = await to_merge(client, wid)
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=GATE2, step=Step.VERSION_PR_MERGE))
    assert (
        await client.get_workflow_handle(wid, result_type=DeployResult).result()
    ).outcome is Outcome.CANCELLED
    pr = next(p for p in github.pulls(CONFIGS_REPO) if p["html_url"] == st.version_pr)
    assert pr["state"] == "closed" and not pr["merged"]
    assert f"deployctl/{wid}" not in github.branches(CONFIGS_REPO)


async def test_valkyr_needs_a_vp_and_no_pinned_version(
    tmp_path, client: Client, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
):
    d = make_deployment(tmp_path, jenkins, slack, github=github, valkyr=True)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        with pytest.raises(Refused) as err:
            await start_deploy(
                client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), "1.2.3", OWNER
            )
        assert "revert master to a working version" in str(err.value)
        wid, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        st = await wait_for_step(client, wid, Step.VP_APPROVAL, "U0VP1")
        assert st.waiting_on == ["U0VP1"]
        why = await refused(client, wid, Action.APPROVE, ActionInput(actor=GATE1, step=Step.VP_APPROVAL))
        assert why == f"{GATE1} may not approve at vp_approval: it waits on vp (U0VP1)"
        await act(client, wid, Action.APPROVE, "U0VP1", Step.VP_APPROVAL)
        st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
        assert st.pccr.vp_approved_by == "U0VP1"
        await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.PCCR_REVIEW))
        await client.get_workflow_handle(wid).result()


async def test_pccr_as_a_github_issue(
    tmp_path, client: Client, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict
):
    d = make_deployment(tmp_path, jenkins, slack, github=github, pccr_backend="github")
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
        issue = next(i for i in github.issues(PCCR_REPO) if wid in i["body"])
        assert st.pccr.url == issue["html_url"] and st.pccr.backend == "github"
        assert '```yaml\nDRY_RUN: "false"\nIMAGE_TAG: "1.4.2"\nREPLICAS: "3"\n```' in issue["body"]
        root = await eventually(
            lambda: [m for m in slack.messages_to("C0TRIAGE") if issue["html_url"] in m["text"]]
        )
        assert len(root) == 1 and "requesting review for OOW deploy job PR" in root[0]["text"]
        await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW, comment="fine")
        await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE1)
        await eventually(lambda: _labels(github, issue["number"]) == ["approved"])
        await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.SRE_ASSIGNMENT))
        await client.get_workflow_handle(wid).result()
        final = await eventually(lambda: _closed(github, issue["number"]))
    comments = final["comments"]
    assert any(f"<@{GATE1}> approve at `pccr_review`: fine" in c for c in comments)
    assert any(f"<@{OWNER}> cancel at `sre_assignment`" in c for c in comments)
    assert any("Deploy ended **cancelled**" in c for c in comments)
    assert _labels(github, issue["number"]) == ["cancelled"]


def _labels(github: FakeGitHub, number: int) -> list[str]:
    issue = next(i for i in github.issues(PCCR_REPO) if i["number"] == number)
    return sorted(label["name"] if isinstance(label, dict) else label for label in issue["labels"])


def _closed(github: FakeGitHub, number: int) -> dict | None:
    issue = next(i for i in github.issues(PCCR_REPO) if i["number"] == number)
    return issue if issue["state"] == "closed" else None


def _merge_dms(slack: FakeSlack, wid: str) -> list[dict]:
    """The SRE's version_pr_merge DMs of deploy `wid`, oldest first (each as it reads now)."""
    asked = [(m, m["history"][0]["text"] if m["history"] else m["text"]) for m in slack.messages_to(SREG1)]
    return [m for m, text in asked if wid in text and "`version_pr_merge`" in text]


def _merges(github: FakeGitHub, number: int) -> list[dict]:
    """The bodies of the merge requests GitHub got for PR `number` of the configs repo."""
    path = f"/repos/{CONFIGS_REPO}/pulls/{number}/merge"
    return [json.loads(b) for m, p, _, b in github.requests if m == "PUT" and p.endswith(path)]


def _buttons(m: dict) -> bool:
    return any(b["type"] == "actions" for b in m["blocks"])


def _reviewed_again(slack: FakeSlack, wid: str) -> list[dict] | None:
    """The first DM without its buttons, and a second one: once both are there."""
    dms = _merge_dms(slack, wid)
    return dms if len(dms) == 2 and not _buttons(dms[0]) else None


def _merge_button_sha(m: dict) -> str | None:
    """The diff sha256 the merge button of DM `m` carried when it was sent (its first version)."""
    blocks = m["history"][0]["blocks"] if m["history"] else m["blocks"]
    values = [
        json.loads(e["value"])
        for b in blocks or []
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == "deployctl:merge"
    ]
    return values[0].get("d") if values else None


async def test_a_merge_bound_to_an_old_dm_is_refused_after_the_branch_moved(
    env: WorkflowEnvironment,
    client: Client,
    deployment: Deployment,
    worker: None,
    slack: FakeSlack,
    github: FakeGitHub,
):
    """SPEC §4, §10: a merge names the version PR's diff it was shown (the button's `d`, or
    `--diff-sha256`). Once the branch moved and the SRE was sent the new diff, a merge from the old DM
    (its button, a late click, a command typed from it) is refused in one line and merges nothing; the
    new DM's merge goes through at the new head."""
    wid = await start_gov(client, deployment)
    await to_merge(client, wid)
    branch = f"deployctl/{wid}"
    pr = next(p for p in github.pulls(CONFIGS_REPO) if p["head"]["ref"] == branch)
    shown = pr["head"]["sha"]
    first = (await eventually(lambda: _merge_dms(slack, wid)))[0]
    old = _merge_button_sha(first)
    assert old and len(old) == 64
    assert f"diff sha256 `{old}`" in first["text"] and f"--diff-sha256 {old}" in first["text"]
    st = await status(client, wid)
    assert (st.version_pr_head_sha, st.version_pr_diff_sha256) == (shown, old)

    moved = github.commit_file(CONFIGS_REPO, branch, "channel-gov/late.yaml", "late: true\n", by="mallory")
    why = await refused(
        client,
        wid,
        Action.MERGE,
        ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, diff_sha256=old, channel="test"),
    )
    assert why.startswith("GitHub refused the merge")  # GitHub's own pin on the head: nothing merged
    _, again = await eventually(lambda: _reviewed_again(slack, wid))
    new = _merge_button_sha(again)
    assert new and new != old and f"diff sha256 `{new}`" in again["text"]
    st = await status(client, wid)
    assert (st.version_pr_head_sha, st.version_pr_diff_sha256) == (moved, new)
    master = github.branches(CONFIGS_REPO)["master"]

    # The old DM's merge, now that the new one was sent: refused before anything is done.
    why = await refused(
        client,
        wid,
        Action.MERGE,
        ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, diff_sha256=old, channel="test"),
    )
    assert why == (
        f"stale: the version PR's diff changed since the one you were shown (diff sha256 {old[:12]}…, "
        f"now {new[:12]}…); nothing was merged: review the new DM, then merge from it"
    )
    # The same from the CLI, typed from the old DM; `status` prints the sha256 to pass now.
    r = await deployctl(env, deployment, "merge", wid, "--as", SREG1, "--diff-sha256", old)
    assert r.code == 3 and "stale: the version PR's diff changed" in r.err
    r = await deployctl(env, deployment, "status", wid)
    assert r.code == 0 and f"(head {moved[:12]}, diff sha256 {new})" in r.out
    assert [m["sha"] for m in _merges(github, pr["number"])] == [shown]  # no second merge call
    assert github.branches(CONFIGS_REPO)["master"] == master
    assert not next(p for p in github.pulls(CONFIGS_REPO) if p["number"] == pr["number"])["merged"]
    st = await status(client, wid)
    assert st.step is Step.VERSION_PR_MERGE and st.waiting_on == [SREG1]

    # The new DM's merge goes through, at the head it showed.
    await act(client, wid, Action.MERGE, SREG1, Step.VERSION_PR_MERGE, diff_sha256=new.upper())
    await wait_for_step(client, wid, Step.TRIGGER, SREG1)
    assert [m["sha"] for m in _merges(github, pr["number"])] == [shown, moved]
    assert github.file(CONFIGS_REPO, "master", "channel-gov/late.yaml") == "late: true\n"
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.TRIGGER))
    await client.get_workflow_handle(wid).result()


async def test_the_merge_is_pinned_to_the_head_the_sre_was_shown(
    client: Client, deployment: Deployment, worker: None, slack: FakeSlack, github: FakeGitHub
):
    """SPEC §10: the SRE's DM shows the version PR's diff and the head commit; a commit pushed to the
    branch after that is not merged by the SRE's click: GitHub's refusal comes back in one line, master
    stays as it was, and the SRE is shown the new head and its diff, which they can then merge."""
    wid = await start_gov(client, deployment)
    await to_merge(client, wid)
    branch = f"deployctl/{wid}"
    pr = next(p for p in github.pulls(CONFIGS_REPO) if p["head"]["ref"] == branch)
    shown = pr["head"]["sha"]
    dm = (await eventually(lambda: _merge_dms(slack, wid)))[0]
    path = f"channel-gov/{deployment.service}.yaml"
    assert f"+++ b/{path}" in dm["text"] and "-version: 1.4.1  # current" in dm["text"]
    assert "+version: 1.4.2  # current" in dm["text"]
    assert f"merges exactly commit `{shown}`" in dm["text"] and _buttons(dm)

    # Someone pushes to the bot's branch after the SRE was shown the diff.
    late = "```\n<!channel> <https://evil.example|approved> & merged\n```\n"
    moved = github.commit_file(CONFIGS_REPO, branch, "channel-gov/late.yaml", late, by="mallory")
    master = github.branches(CONFIGS_REPO)["master"]
    why = await refused(
        client, wid, Action.MERGE, ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE, channel="test")
    )
    assert why.startswith(
        "GitHub refused the merge: Head branch was modified. Review and try the merge again."
    )
    assert f"moved from {shown[:12]} to {moved[:12]}" in why
    merges = _merges(github, pr["number"])
    assert [m["sha"] for m in merges] == [shown]  # pinned to what the SRE saw
    assert github.branches(CONFIGS_REPO)["master"] == master  # nothing merged
    assert not next(p for p in github.pulls(CONFIGS_REPO) if p["number"] == pr["number"])["merged"]

    # The SRE is shown the new head and its diff; the old DM loses its buttons.
    old, new = await eventually(lambda: _reviewed_again(slack, wid))
    assert "branch moved" in old["text"] and "nothing was merged" in old["text"]
    assert _buttons(new) and f"merges exactly commit `{moved}`" in new["text"]
    assert "+++ b/channel-gov/late.yaml" in new["text"]
    assert "&lt;!channel&gt; &lt;https://evil.example|approved&gt; &amp; merged" in new["text"]
    assert "<!channel>" not in new["text"] and "<https://evil" not in new["text"]
    section = next(b["text"]["text"] for b in new["blocks"] if "late.yaml" in b["text"]["text"])
    assert section.count("```") == 2  # only the block's own fences: the pushed ``` cannot end it
    st = await status(client, wid)
    assert st.step is Step.VERSION_PR_MERGE and st.waiting_on == [SREG1]
    assert st.waiting_for and st.waiting_for.startswith("GitHub refused the merge: Head branch was modified")
    refusals = [e for e in st.audit if e.action == "merge" and not e.accepted]
    assert len(refusals) == 1 and refusals[0].reason == why

    # After the re-review the merge goes through, at the new head.
    await act(client, wid, Action.MERGE, SREG1, Step.VERSION_PR_MERGE)
    await wait_for_step(client, wid, Step.TRIGGER, SREG1)
    merges = _merges(github, pr["number"])
    assert [m["sha"] for m in merges] == [shown, moved]
    assert next(p for p in github.pulls(CONFIGS_REPO) if p["number"] == pr["number"])["merged"]
    assert github.file(CONFIGS_REPO, "master", "channel-gov/late.yaml") == late
    await send_action(client, wid, Action.CANCEL, ActionInput(actor=OWNER, step=Step.TRIGGER))
    await client.get_workflow_handle(wid).result()
