"""Trust (SPEC §9): the workers' config is the policy, and every action is signed by the person it names.

Each test is an attack, sent the way an outsider with access to the Temporal namespace would send it,
and each asserts the one-line refusal and that nothing changed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.client import Refused, send_action, start_deploy
from starter.config import load_config
from starter.devstack import wait_for_step
from starter.signing import sign_payload, throwaway_key
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests import keys
from tests.conftest import GATE1, GATE2, OWNER, PARAMS, SRE1, Deployment, eventually
from tests.support import act, refused, signed, start_oow, status, to_trigger
from tests.test_cli import deployctl, temporal
from workflows import signing
from workflows.models import Action, DeployResult, Outcome, Process, Step

BOB = "U0BOB"  # has a key on the workers, holds no role


def approve(wid: str, actor: str = GATE1, by: str | None = None, **extra) -> dict:
    return signed({"actor": actor, "step": "pccr_review", **extra}, wid, "approve", by=by)


async def unchanged(client: Client, wid: str, step: Step = Step.PCCR_REVIEW) -> None:
    st = await status(client, wid)
    assert st.step is step and st.outcome is None
    assert not [e for e in st.audit if e.accepted and e.action == "approve"]


async def test_forged_identities_are_refused_and_change_nothing(
    client: Client, deployment: Deployment, worker: None, tmp_path: Path
):
    d = deployment
    wid = await start_oow(client, d)
    other = await start_oow(client, d)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    stranger_key, _ = throwaway_key(tmp_path, "stranger")
    now = datetime.now(UTC)
    base = {"actor": GATE1, "step": "pccr_review"}
    attacks = {
        # someone else's key, signing in the gatekeeper's name
        "forged actor": (approve(wid, by=BOB), "signature does not verify with any key of U0GATE1"),
        # the gatekeeper's own key, claiming a Slack click the bridge never vouched for
        "forged channel": (
            approve(wid, channel="slack"),
            "signature does not verify with the Slack bridge",
        ),
        "wrong key": (
            sign_payload(base, wid, "approve", str(stranger_key)),
            "signature does not verify with any key of U0GATE1",
        ),
        "stale": (
            sign_payload(base, wid, "approve", keys.private(GATE1), now=now - timedelta(minutes=12)),
            "signature is 12m old",
        ),
        "from the future": (
            sign_payload(base, wid, "approve", keys.private(GATE1), now=now + timedelta(minutes=10)),
            "ahead of the workers' clock",
        ),
        "another deploy": (approve(other), "signature does not verify"),
        "another action": (
            {**signed(base, wid, "reject")},
            "signature does not verify",
        ),
        "tampered comment": (
            {**approve(wid, comment="ok"), "comment": "ok, and skip the diff check"},
            "signature does not verify",
        ),
        "unsigned": (dict(base), "unsigned action"),
        "the bridge's key outside Slack": (
            sign_payload(base, wid, "approve", keys.private(keys.BRIDGE)),
            "signed by the Slack bridge's key, which vouches only for channel slack",
        ),
        "no keys on the workers": (
            sign_payload({"actor": "U0EVIL", "step": "pccr_review"}, wid, "approve", str(stranger_key)),
            "U0EVIL has no signing keys on the workers",
        ),
    }
    for name, (payload, expected) in attacks.items():
        reason = await refused(client, wid, Action.APPROVE, payload, sign=False)
        assert expected in reason, (name, reason)
    # The same forgeries as Signals: recorded as refused, nothing changed.
    handle = client.get_workflow_handle(wid)
    await handle.signal("approve", approve(wid, by=BOB))
    await handle.signal("approve", dict(base))
    st = await eventually(lambda: _refused_signals(client, wid, 2))
    assert [e.reason.split(":")[0] for e in st] == [
        "signature does not verify with any key of U0GATE1",
        "unsigned action",
    ]
    assert all(e.identity == "claimed" and e.signature is None for e in st)
    await unchanged(client, wid)


async def _refused_signals(client: Client, wid: str, n: int):
    st = await status(client, wid)
    found = [e for e in st.audit if not e.accepted and e.channel == "signal"]
    return found if len(found) >= n else None


async def test_a_signed_action_is_accepted_once(client: Client, deployment: Deployment, worker: None):
    d = deployment
    wid = await start_oow(client, d)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    payload = approve(wid, comment="looks right")
    await client.get_workflow_handle(wid).execute_update("approve", payload)
    st = await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE1)
    entry = next(e for e in st.audit if e.action == "approve" and e.accepted)
    fp = signing.fingerprint(keys.public(GATE1))
    assert entry.identity == f"ssh:{fp}" and entry.signature == payload["signature"]
    assert entry.payload == signing.signed_body(payload, wid, "approve")
    assert entry.key == keys.public(GATE1)
    # Replayed as it was: the nonce was used; replayed as a Signal: recorded, refused.
    reason = await refused(client, wid, Action.APPROVE, {**payload, "step": "pccr_review"}, sign=False)
    assert "nonce already used" in reason
    replay = {**payload}
    await client.get_workflow_handle(wid).signal("approve", replay)
    found = await eventually(lambda: _refused_signals(client, wid, 1))
    assert "nonce already used" in found[0].reason
    # Replayed at the next step, with the step changed: the signature no longer covers it.
    moved = {**payload, "step": "sre_assignment"}
    assert "signature does not verify" in await refused(client, wid, Action.APPROVE, moved, sign=False)
    assert (await status(client, wid)).step is Step.SRE_ASSIGNMENT


async def test_an_unsigned_start_is_refused_and_opens_nothing(
    client: Client, deployment: Deployment, worker: None, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("DEPLOYCTL_SIGNING_KEY")
    with pytest.raises(Refused) as err:
        await start_oow(client, deployment)
    assert str(err.value).startswith("unsigned action")
    # Someone else's key, signing in the owner's name.
    monkeypatch.setenv("DEPLOYCTL_SIGNING_KEY", keys.private(BOB))
    with pytest.raises(Refused) as err:
        await start_oow(client, deployment)
    assert "signature does not verify with any key of U0OWNER1" in str(err.value)
    assert not [m for m in slack.messages_to("C0TRIAGE") if deployment.service in m["text"]]


async def test_a_tampered_local_config_changes_nothing_on_the_workers(
    client: Client,
    deployment: Deployment,
    worker: None,
    tmp_path: Path,
    jenkins: FakeJenkins,
    monkeypatch: pytest.MonkeyPatch,
):
    """The caller's deployctl.toml names U0BOB the owner, himself the gatekeeper and SRE, another team's
    job and another configs repo: the workers' rules are the ones the deploy runs by."""
    d = deployment
    jenkins.add_job(
        "deploy-ledger-prod", parameters=[{"name": "IMAGE_TAG"}, {"name": "REPLICAS"}, {"name": "DRY_RUN"}]
    )
    text = d.config_path.read_text()
    (tmp_path / "evil").mkdir()

    def local(name: str, changed: str):
        assert changed != text
        (tmp_path / "evil" / name).write_text(changed)
        return load_config(str(tmp_path / "evil" / name))

    # Bob's file makes him the owner, so his own CLI lets him start: the workers know the real owner.
    mine = local("owner.toml", text.replace('code_owners = ["U0OWNER1"]', f'code_owners = ["{BOB}"]'))
    with pytest.raises(Refused) as err:
        await start_deploy(client, mine, Process.OOW, d.service, "kprod", dict(PARAMS), None, BOB)
    assert str(err.value).startswith(f"{BOB} is not a code owner of {d.service}")
    # The real owner starts with a file naming Bob gatekeeper and SRE, another team's job and configs
    # repo: the deploy runs by the workers' rules.
    rest = (
        text.replace(
            'pccr-gatekeeper = ["U0GATE1", "U0GATE2", "U0OWNER1"]', f'pccr-gatekeeper = ["{BOB}", "U0GATE1"]'
        )
        .replace('sre = ["U0SRE1", "U0SRE2"]', f'sre = ["{BOB}", "U0SRE1"]')
        .replace(f'jenkins_job = "{d.job}"', 'jenkins_job = "deploy-ledger-prod"')
        .replace('configs_repo = "acme/product-configs"', 'configs_repo = "acme/ledger-configs"')
    )
    assert rest.count(BOB) == text.count(BOB) + 2 and "deploy-ledger-prod" in rest
    mine = local("rest.toml", rest)
    wid, _ = await start_deploy(client, mine, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER)
    st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    assert st.waiting_on == [GATE1, GATE2]
    assert st.config_sha256 == d.config.sha256
    rules = next(e for e in st.audit if e.action == "rules")
    assert d.config.sha256 in rules.reason and f"Jenkins job {d.job}" in rules.reason
    reason = await refused(client, wid, Action.APPROVE, approve(wid, actor=BOB), sign=False)
    assert reason.startswith(f"{BOB} may not approve at pccr_review")
    st = await to_trigger(client, wid, SRE1)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
    assert len(jenkins.builds(d.job)) == 1 and jenkins.builds("deploy-ledger-prod") == []


def _with_gatekeeper_in_sre(d: Deployment) -> None:
    text = d.config_path.read_text().replace(
        'sre = ["U0SRE1", "U0SRE2"]', 'sre = ["U0SRE1", "U0SRE2", "U0GATE1"]'
    )
    d.config_path.write_text(text)


async def test_whole_chain_separation_of_duties(
    client: Client, tmp_path: Path, jenkins, slack, github, secrets
):
    """The gatekeeper who approved the PCCR may not be its SRE, nor assign themselves."""
    from tests.conftest import make_deployment
    from worker import create_worker

    d = make_deployment(tmp_path, jenkins, slack, github=github)
    _with_gatekeeper_in_sre(d)
    d = Deployment(load_config(str(d.config_path)), d.config_path, d.service, d.job, d.task_queue)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid = await start_oow(client, d)
        await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
        st = await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE2)
        assert GATE1 in st.waiting_on  # a gatekeeper may still assign; just not themselves
        own = signed({"actor": GATE1, "step": "sre_assignment", "sre": GATE1}, wid, "assign")
        assert "cannot assign themselves" in await refused(client, wid, Action.ASSIGN, own, sign=False)
        other = signed({"actor": GATE2, "step": "sre_assignment", "sre": GATE1}, wid, "assign")
        reason = await refused(client, wid, Action.ASSIGN, other, sign=False)
        assert reason == (
            "separation of duties: U0GATE1 already acted as pccr-gatekeeper on this deploy and cannot be its SRE"
        )
        assert (await status(client, wid)).sre is None
        await act(client, wid, Action.ASSIGN, GATE2, Step.SRE_ASSIGNMENT, sre=SRE1)
        await wait_for_step(client, wid, Step.CLEARANCE, SRE1)
        await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "clearance"})


async def test_a_vp_is_not_also_the_gatekeeper(
    client: Client, tmp_path: Path, jenkins, slack, github, secrets
):
    from tests.conftest import make_deployment
    from worker import create_worker

    d = make_deployment(tmp_path, jenkins, slack, github=github, valkyr=True)
    text = d.config_path.read_text().replace(
        'pccr-gatekeeper = ["U0GATE1", "U0GATE2", "U0OWNER1"]', 'pccr-gatekeeper = ["U0GATE1", "U0VP1"]'
    )
    d.config_path.write_text(text)
    async with create_worker(client, load_config(str(d.config_path)), task_queue=d.task_queue):
        wid = await start_oow(client, d)
        await act(client, wid, Action.APPROVE, "U0VP1", Step.VP_APPROVAL)
        st = await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
        assert st.waiting_on == [GATE1]
        payload = signed({"actor": "U0VP1", "step": "pccr_review"}, wid, "approve")
        reason = await refused(client, wid, Action.APPROVE, payload, sign=False)
        assert reason.startswith("separation of duties: U0VP1 already acted as vp on this deploy")
        await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "pccr_review"})


async def _at_deploy_approval(client: Client, d: Deployment) -> tuple[str, int]:
    wid = await start_oow(client, d)
    st = await to_trigger(client, wid, SRE1)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
    await act(
        client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
    )
    st = await wait_for_step(client, wid, Step.DEPLOY_APPROVAL, SRE1)
    assert st.build.number is not None
    return wid, st.build.number


async def test_an_input_answered_in_jenkins_names_who_answered(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets
):
    """Someone else's answer is followed (it happened) but marked out of policy; the SRE's own answer
    in Jenkins is the SRE's action, identified as their Jenkins user."""
    from tests.conftest import make_deployment
    from worker import create_worker

    d = make_deployment(tmp_path, jenkins, slack, github=github)
    text = d.config_path.read_text().replace(
        f'[people.{SRE1}]\nssh_keys = ["{keys.public(SRE1)}"]',
        f'[people.{SRE1}]\nssh_keys = ["{keys.public(SRE1)}"]\njenkins_user = "alice"',
    )
    assert 'jenkins_user = "alice"' in text
    d.config_path.write_text(text)
    async with create_worker(client, load_config(str(d.config_path)), task_queue=d.task_queue):
        wid, number = await _at_deploy_approval(client, d)
        jenkins.answer_input(d.job, number, by="mallory")
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
        assert result.outcome is Outcome.SUCCEEDED  # followed, not fought
        st = await status(client, wid)
        entry = next(e for e in st.audit if e.action == "answered_in_jenkins")
        assert entry.identity == "jenkins:mallory" and entry.out_of_policy
        assert "out of policy: mallory" in entry.reason
        root = next(m for m in slack.messages_to("C0TRIAGE") if not m.get("thread_ts") and wid in m["text"])
        assert any("out of policy" in m["text"] for m in slack.thread(root["ts"]))

        wid, number = await _at_deploy_approval(client, d)
        jenkins.answer_input(d.job, number, by="alice")
        await client.get_workflow_handle(wid).result()
        st = await status(client, wid)
        entry = next(e for e in st.audit if e.action == "answered_in_jenkins")
        assert (entry.identity, entry.actor, entry.out_of_policy) == ("jenkins:alice", SRE1, False)


async def test_claimed_identities_when_the_team_accepts_them(
    client: Client, tmp_path: Path, jenkins, slack, github, secrets
):
    from tests.conftest import make_deployment
    from worker import create_worker

    d = make_deployment(
        tmp_path, jenkins, slack, github=github, extra="\n[security]\nrequire_signed_actions = false\n"
    )
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid = await start_oow(client, d)
        await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
        await client.get_workflow_handle(wid).execute_update(
            "approve", {"actor": GATE1, "step": "pccr_review"}
        )
        st = await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE1)
        people = [e for e in st.audit if e.actor != "deployctl"]
        assert [e.action for e in people] == ["start", "approve"]
        assert all(e.identity == "claimed" and e.signature is None for e in people)
        await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "sre_assignment"}, sign=False)


async def test_github_signing_keys_count_for_their_person(
    client: Client, tmp_path: Path, jenkins, slack, github: FakeGitHub, secrets
):
    """A person whose only key is on GitHub (`github_login`): GitHub's ssh_signing_keys are theirs."""
    from tests.conftest import make_deployment
    from worker import create_worker

    d = make_deployment(tmp_path, jenkins, slack, github=github)
    gh_key, gh_public = throwaway_key(tmp_path, "gatekeeper-on-github")
    text = d.config_path.read_text().replace(
        f'[people.{GATE2}]\nssh_keys = ["{keys.public(GATE2)}"]',
        f'[people.{GATE2}]\ngithub_login = "gate-two"',
    )
    d.config_path.write_text(text)
    github.add_signing_key("gate-two", gh_public)
    async with create_worker(client, load_config(str(d.config_path)), task_queue=d.task_queue):
        wid = await start_oow(client, d)
        await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE2)
        mine = sign_payload({"actor": GATE2, "step": "pccr_review"}, wid, "approve", str(gh_key))
        await client.get_workflow_handle(wid).execute_update("approve", mine)
        st = await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE1)
        entry = next(e for e in st.audit if e.action == "approve")
        assert entry.identity == f"ssh:{signing.fingerprint(gh_public)}"
        # Their old local key is no longer listed: it signs nothing.
        old = signed({"actor": GATE2, "step": "sre_assignment", "sre": SRE1}, wid, "assign")
        assert "does not verify with any key of U0GATE2" in await refused(
            client, wid, Action.ASSIGN, old, sign=False
        )
        await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "sre_assignment"})


def _terminal(env: WorkflowEnvironment, client: Client, d: Deployment, wid: str):
    """One person at a terminal: `deployctl sign` prints the payload, the `temporal` CLI sends it (an
    Update, or with `signal=True` a Signal)."""

    async def step(action: str, actor: str, at: Step, *extra: str, signal: bool = False) -> None:
        await wait_for_step(client, wid, at, actor, timeout=30)
        signed_run = await deployctl(env, d, "sign", action, wid, "--as", actor, *extra)
        assert signed_run.code == 0, signed_run.err
        payload = json.loads(signed_run.out)
        assert payload["actor"] == actor and payload["signature"].startswith("-----BEGIN SSH SIGNATURE-----")
        how = ("signal",) if signal else ("update", "execute")
        sent = await temporal(
            env, "workflow", *how, "--workflow-id", wid, "--name", action.replace("-", "_"),
            "--input", json.dumps(payload),
        )  # fmt: skip
        assert sent.code == 0, sent.err

    return step


async def _signed_throughout(client: Client, wid: str, people: int) -> None:
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    final = await status(client, wid)
    acted = [e for e in final.audit if e.accepted and e.actor != "deployctl"]
    assert len(acted) == people and all(e.identity.startswith("ssh:SHA256:") for e in acted)
    assert {e.channel for e in acted[1:]} == {"temporal"}


async def test_a_whole_deploy_through_the_temporal_cli_with_deployctl_sign(
    env: WorkflowEnvironment, client: Client, deployment: Deployment, worker: None
):
    """Every step of a com deploy as someone at a terminal would do it."""
    d = deployment
    wid = await start_oow(client, d)
    step = _terminal(env, client, d, wid)
    await step("approve", GATE1, Step.PCCR_REVIEW)
    await step("assign", GATE1, Step.SRE_ASSIGNMENT, "--sre", SRE1)
    await step("approve", SRE1, Step.CLEARANCE, signal=True)
    await step("trigger", OWNER, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
    await step("validate-diff", OWNER, Step.DIFF_VALIDATION, "--diff-sha256", st.build.diff_sha256 or "")
    await step("approve", SRE1, Step.DEPLOY_APPROVAL)
    await _signed_throughout(client, wid, 7)


async def test_a_whole_gov_deploy_through_the_temporal_cli_with_deployctl_sign(
    env: WorkflowEnvironment, client: Client, deployment: Deployment, worker: None
):
    from tests.support import SREG1, start_gov

    d = deployment
    wid = await start_gov(client, d)
    step = _terminal(env, client, d, wid)
    await step("approve", GATE1, Step.PCCR_REVIEW)
    await step("assign", GATE1, Step.SRE_ASSIGNMENT, "--sre", SREG1)
    await step("merge", SREG1, Step.VERSION_PR_MERGE)
    await step("trigger", SREG1, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
    await step("validate-diff", OWNER, Step.DIFF_VALIDATION, "--diff-sha256", st.build.diff_sha256 or "")
    await step("approve", SREG1, Step.DEPLOY_APPROVAL, signal=True)
    await _signed_throughout(client, wid, 7)


async def test_a_version_pr_merged_on_github_by_the_sre_is_theirs(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets
):
    from tests.conftest import CONFIGS_REPO, make_deployment
    from tests.support import SREG1, start_gov, to_merge
    from worker import create_worker

    d = make_deployment(tmp_path, jenkins, slack, github=github)
    text = d.config_path.read_text().replace(
        f'[people.{SREG1}]\nssh_keys = ["{keys.public(SREG1)}"]',
        f'[people.{SREG1}]\nssh_keys = ["{keys.public(SREG1)}"]\ngithub_login = "sreg-one"',
    )
    assert 'github_login = "sreg-one"' in text
    d.config_path.write_text(text)
    d = Deployment(load_config(str(d.config_path)), d.config_path, d.service, d.job, d.task_queue)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid = await start_gov(client, d)
        st = await to_merge(client, wid)
        github.merge_directly(CONFIGS_REPO, int(st.version_pr.rsplit("/", 1)[1]), by="sreg-one")
        st = await wait_for_step(client, wid, Step.TRIGGER, SREG1, timeout=60)
        entry = next(e for e in st.audit if e.action == "merged_on_github")
        assert (entry.actor, entry.identity, entry.out_of_policy) == (SREG1, "github:sreg-one", False)
        await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "trigger"})


async def test_a_malformed_start_is_rejected_and_opens_nothing(
    client: Client, deployment: Deployment, worker: None, slack: FakeSlack
):
    """A start typed by hand into `temporal workflow start` with a bad intent (an unknown key, no actor)."""
    for n, bad in enumerate(
        ({"process": "oow", "service": deployment.service}, {**_intent(deployment), "job": "x"})
    ):
        handle = await client.start_workflow(
            "Deploy",
            bad,
            id=f"deploy-bad-{n}-{deployment.task_queue}",
            task_queue=deployment.task_queue,
            result_type=DeployResult,
        )
        result = await handle.result()
        assert result.outcome is Outcome.REJECTED and result.reason.startswith("bad start: ")
    assert not [m for m in slack.messages if deployment.task_queue in str(m)]


def _intent(d: Deployment) -> dict:
    return {
        "process": "oow",
        "service": d.service,
        "environment": "kprod",
        "params": dict(PARAMS),
        "actor": OWNER,
    }


async def test_start_learns_the_refusal_even_after_the_deploy_ended(
    client: Client, deployment: Deployment, worker: None
):
    """`deployctl start` asks for the workers' verdict; a deploy already ended by then still answers."""
    from starter.client import admitted

    handle = await client.start_workflow(
        "Deploy",
        _intent(deployment),  # unsigned
        id=f"deploy-late-{deployment.task_queue}",
        task_queue=deployment.task_queue,
        result_type=DeployResult,
    )
    assert (await handle.result()).outcome is Outcome.REJECTED
    with pytest.raises(Refused) as err:
        await admitted(handle)
    assert str(err.value).startswith("unsigned action")


async def test_a_whole_release_deploy_through_the_temporal_cli_with_deployctl_sign(
    env: WorkflowEnvironment, client: Client, tmp_path: Path, jenkins: FakeJenkins, slack, github, secrets
):
    """Planned by the owner (who assigns the SRE), accepted by a gatekeeper, run in its window: every
    action signed by `deployctl sign` and sent by the `temporal` CLI."""
    from starter.devstack import release_calendar
    from tests.conftest import make_deployment
    from worker import create_worker

    d = make_deployment(
        tmp_path, jenkins, slack, github=github, extra=release_calendar(timedelta(seconds=20))
    )
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.RELEASE, d.service, "kstg", dict(PARAMS), None, OWNER
        )
        step = _terminal(env, client, d, wid)
        await step("assign", OWNER, Step.SRE_ASSIGNMENT, "--sre", SRE1)
        await step("approve", GATE1, Step.RELEASE_ACCEPTANCE, signal=True)
        await wait_for_step(client, wid, Step.CLEARANCE, SRE1, timeout=60)  # the window opens
        await step("approve", SRE1, Step.CLEARANCE)
        await step("trigger", OWNER, Step.TRIGGER)
        st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
        await step("validate-diff", OWNER, Step.DIFF_VALIDATION, "--diff-sha256", st.build.diff_sha256 or "")
        await step("approve", SRE1, Step.DEPLOY_APPROVAL)
        await _signed_throughout(client, wid, 7)
