"""Password parameters (SPEC §10): never in a params file, a PCCR, a history, a log or an audit.

The worker supplies each one from `DEPLOYCTL_PARAM_<NAME>` in its environment; everyone else sees
`(secret, supplied by the worker)`. Unit tests of the rule and the Jenkins activity (against FakeJenkins,
no server), then whole deploys on the real dev server with the Jenkins, Slack and GitHub fakes.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import example, given
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.jenkins import JenkinsActivities
from starter import logs
from starter.audit import FORMATS, audit_export, record_from_history, render_audit
from starter.client import Refused, admitted, new_workflow_id, signed, start_deploy
from starter.devstack import wait_for_step
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests import keys
from tests.conftest import (
    GATE1,
    JOB_PARAMETERS,
    OWNER,
    PARAMS,
    PCCR_REPO,
    SRE1,
    Deployment,
    eventually,
    make_deployment,
)
from tests.support import act, status, to_trigger
from worker import create_worker
from workflows import messages, policy
from workflows.models import (
    Action,
    DeployResult,
    JobParameter,
    JobParametersInput,
    Outcome,
    Process,
    Step,
    TriggerBuildInput,
)

SHOWN = "(secret, supplied by the worker)"
NAME = "db.password"  # a name the mapping changes: upper-cased, "." → "_"
ENV = "DEPLOYCTL_PARAM_DB_PASSWORD"
SECRET_PARAMETERS = [*JOB_PARAMETERS, {"name": NAME, "type": "password"}]


def secret_value() -> str:
    """A password no test text could hold by chance (and with characters a URL or a form encodes)."""
    return f"pw-{uuid.uuid4().hex[:12]}&x=1 +%"


# ---------------------------------------------------------------------------------------------------
# The rule (pure)

DEFS = [
    JobParameter(name="IMAGE_TAG"),
    JobParameter(name=NAME, type="PasswordParameterDefinition"),
]


def test_env_var_of_a_password_parameter() -> None:
    assert policy.secret_env("DB_PASSWORD") == "DEPLOYCTL_PARAM_DB_PASSWORD"
    assert policy.secret_env("db.password") == "DEPLOYCTL_PARAM_DB_PASSWORD"
    assert policy.secret_env("api-key 2") == "DEPLOYCTL_PARAM_API_KEY_2"
    assert policy.secret_env("mot_de_passe_é") == "DEPLOYCTL_PARAM_MOT_DE_PASSE__"


@given(name=st.text(min_size=1, max_size=40))
@example(name="ß")  # upper-cases to two letters
@example(name="ﬁ")  # a ligature: "FI"
def test_env_var_is_always_a_valid_name_and_keeps_valid_ones(name: str) -> None:
    env = policy.secret_env(name)
    assert re.fullmatch(r"DEPLOYCTL_PARAM_[A-Z0-9_]+", env), env
    assert policy.secret_env(env[len("DEPLOYCTL_PARAM_") :]) == env  # a valid name maps to itself
    assert policy.secret_env(name.lower()) == env or name.lower().upper() != name.upper()


def test_a_password_parameter_in_the_params_is_refused_in_one_line_without_its_value() -> None:
    why = policy.params_refusal(DEFS, {"IMAGE_TAG": "1", NAME: "hunter2-value"}, "deploy-x")
    assert why == (
        "db.password is a password parameter of job deploy-x: the worker supplies it from "
        "DEPLOYCTL_PARAM_DB_PASSWORD; take it out of the params file"
    )
    assert "hunter2" not in why


def test_a_password_parameter_is_not_missing_from_the_params() -> None:
    assert policy.params_refusal(DEFS, {"IMAGE_TAG": "1"}, "deploy-x") is None
    assert (
        policy.params_refusal(DEFS, {}, "deploy-x")
        == "params do not match Jenkins job deploy-x: missing IMAGE_TAG"
    )


def test_two_password_parameters_read_from_one_variable_are_refused() -> None:
    defs = [*DEFS, JobParameter(name="DB_PASSWORD", type="PasswordParameterDefinition")]
    why = policy.params_refusal(defs, {"IMAGE_TAG": "1"}, "deploy-x")
    assert why == (
        "password parameters db.password, DB_PASSWORD of job deploy-x would all be read from "
        "DEPLOYCTL_PARAM_DB_PASSWORD: rename one of them in the job"
    )


def test_the_reviewers_text_shows_the_secret_as_supplied_by_the_worker() -> None:
    shown = policy.shown_params({"IMAGE_TAG": "1.4.2"}, [NAME])
    assert shown == {"IMAGE_TAG": "1.4.2", NAME: SHOWN}
    text = messages.params_detail("deploy-x", shown, None)
    assert f"IMAGE_TAG: 1.4.2\n{NAME}: {SHOWN}\n" in text


def test_the_worker_log_masks_the_password_parameters_of_its_environment() -> None:
    assert "hunter2-value" in logs.secret_values({ENV: "hunter2-value", "OTHER": "not-a-secret"})
    assert "not-a-secret" not in logs.secret_values({ENV: "hunter2-value", "OTHER": "not-a-secret"})


# ---------------------------------------------------------------------------------------------------
# The Jenkins activity against FakeJenkins (no Temporal server)

USER, TOKEN, JOB = "deploy-bot", "11c0ffee5e1f0ba5e5ca1ab1e", "deploy-secret-job"


@pytest.fixture
def fake() -> Any:
    with FakeJenkins(users={USER: TOKEN}) as f:
        f.add_job(JOB, parameters=SECRET_PARAMETERS, diff_lines=["+x"], queue_seconds=0.05)
        yield f


@pytest.fixture
def acts(fake: FakeJenkins) -> JenkinsActivities:
    return JenkinsActivities(fake.url, USER, TOKEN, timeout=5.0, poll_interval=0.05)


def trigger_input(secret_params: list[str] | None = None) -> TriggerBuildInput:
    return TriggerBuildInput(
        job=JOB,
        params=dict(PARAMS),
        secret_params=[NAME] if secret_params is None else secret_params,
        not_before=datetime.now(UTC),
    )


@pytest.mark.timeout(15)
def test_the_fake_jenkins_keeps_a_password_as_jenkins_does(
    fake: FakeJenkins, acts: JenkinsActivities
) -> None:
    defs = ActivityEnvironment().run(acts.job_parameters, JobParametersInput(job=JOB)).parameters
    assert [(p.name, p.type, p.default) for p in defs if policy.is_password(p)] == [
        (NAME, "PasswordParameterDefinition", None)
    ]
    fake.add_job(JOB, parameters=SECRET_PARAMETERS, diff_lines=["+x"], queue_seconds=1.0)  # seen queued
    client = requests.Session()
    client.auth = (USER, TOKEN)
    crumb = client.get(f"{fake.url}/crumbIssuer/api/json").json()
    rsp = client.post(
        f"{fake.url}/job/{JOB}/buildWithParameters",
        data={**PARAMS, NAME: "plain-text-in"},
        headers={crumb["crumbRequestField"]: crumb["crumb"]},
    )
    assert rsp.status_code == 201
    queued = client.get(f"{fake.url}/queue/api/json").json()["items"]
    assert "plain-text-in" not in json.dumps(queued) and f"\n{NAME}=****" in queued[0]["params"]
    build = eventually_sync(lambda: fake.builds(JOB))
    assert build[0]["params"][NAME] == "plain-text-in"  # Jenkins has it, and shows it to nobody:
    shown = client.get(f"{fake.url}/job/{JOB}/1/api/json").json()
    [values] = [a["parameters"] for a in shown["actions"] if "parameters" in a]
    assert {"_class": "hudson.model.PasswordParameterValue", "name": NAME} in values
    assert "plain-text-in" not in json.dumps(shown) and "plain-text-in" not in fake.console(JOB, 1)


def eventually_sync(check: Any, tries: int = 100) -> Any:
    for _ in range(tries):
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met")


@pytest.mark.timeout(15)
def test_trigger_sends_the_password_from_the_workers_environment_in_the_form_body(
    fake: FakeJenkins, acts: JenkinsActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = secret_value()
    monkeypatch.setenv(ENV, value)
    first = ActivityEnvironment().run(acts.trigger_build, trigger_input())
    assert first.queue_id is not None and not first.reused
    [post] = [r for r in fake.requests if r[0] == "POST" and "buildWithParameters" in r[1]]
    _, path, query, _ = post
    assert value not in path and value not in json.dumps(query)  # never in a URL
    assert query == PARAMS
    build = eventually_sync(lambda: fake.builds(JOB))
    assert build[0]["params"] == {**PARAMS, NAME: value}
    # A retry finds the build by its parameters, though Jenkins hides the password's value.
    again = ActivityEnvironment().run(acts.trigger_build, trigger_input())
    assert again.reused and len(fake.builds(JOB)) == 1


@pytest.mark.timeout(15)
@pytest.mark.parametrize("unset", ["", "   "])
def test_a_worker_without_the_variable_fails_the_trigger_naming_the_variable(
    fake: FakeJenkins, acts: JenkinsActivities, monkeypatch: pytest.MonkeyPatch, unset: str
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    if unset:
        monkeypatch.setenv(ENV, unset)
    with pytest.raises(ApplicationError) as info:
        ActivityEnvironment().run(acts.trigger_build, trigger_input())
    err = info.value
    assert (err.type, err.non_retryable) == ("SecretParamMissing", True)
    assert err.message == (
        f"triggering '{JOB}': this worker has no {ENV} in its environment (the value of password "
        f"parameter {NAME} of the job): set it on every worker and restart the workers"
    )
    assert not [r for r in fake.requests if r[0] == "POST"]


@pytest.mark.timeout(15)
def test_a_secret_is_not_sent_to_a_parameter_that_is_no_longer_a_password(
    fake: FakeJenkins, acts: JenkinsActivities, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, secret_value())
    fake.add_job(JOB, parameters=[*JOB_PARAMETERS, {"name": NAME, "type": "string"}], diff_lines=["+x"])
    with pytest.raises(ApplicationError) as info:
        ActivityEnvironment().run(acts.trigger_build, trigger_input())
    assert (info.value.type, info.value.non_retryable) == ("SecretParamNotPassword", True)
    assert not [r for r in fake.requests if r[0] == "POST"]


def test_an_error_of_the_post_is_scrubbed_of_the_secret(acts: JenkinsActivities) -> None:
    value = secret_value()
    exc = requests.ConnectionError(f"failed to send {value} (form: {quote(value)})")
    failure = acts._failure(exc, "triggering 'x'", (value,))
    assert isinstance(failure, ApplicationError)
    assert value not in str(failure) and quote(value) not in str(failure)
    assert "***" in str(failure)


# ---------------------------------------------------------------------------------------------------
# Whole deploys on the dev server


@pytest.fixture
def secret_deployment(
    tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets: dict[str, str]
) -> Deployment:
    return make_deployment(
        tmp_path, jenkins, slack, github=github, pccr_backend="github", parameters=SECRET_PARAMETERS
    )


async def test_start_refuses_a_params_file_with_a_password_and_starts_nothing(
    client: Client, secret_deployment: Deployment, jenkins: FakeJenkins
) -> None:
    d = secret_deployment
    value = secret_value()
    async with create_worker(client, d.config, task_queue=d.task_queue):
        with pytest.raises(Refused) as err:
            await start_deploy(
                client, d.config, Process.OOW, d.service, "kprod", {**PARAMS, NAME: value}, None, OWNER
            )
    why = str(err.value)
    assert why == (
        f"{NAME} is a password parameter of job {d.job}: the worker supplies it from {ENV}; "
        "take it out of the params file"
    )
    started = [
        w async for w in client.list_workflows(f'WorkflowType="Deploy" AND TaskQueue="{d.task_queue}"')
    ]
    assert started == [] and jenkins.builds(d.job) == []


async def test_the_workflow_refuses_a_start_with_a_password_and_its_audit_hides_it(
    client: Client, secret_deployment: Deployment, slack: FakeSlack
) -> None:
    """A start that skips the CLI (`temporal workflow start`): the workers refuse it once they have read
    the job; the value is in the start's input (nothing can take it out), but in no status or audit."""
    d = secret_deployment
    value = secret_value()
    wid = new_workflow_id(d.service, "kprod")
    intent = {
        "process": "oow",
        "service": d.service,
        "environment": "kprod",
        "params": {**PARAMS, NAME: value},
        "actor": OWNER,
        "channel": "cli",
    }
    async with create_worker(client, d.config, task_queue=d.task_queue):
        handle = await client.start_workflow(
            "Deploy",
            signed(intent, wid, "start", keys.private(OWNER)),
            id=wid,
            task_queue=d.task_queue,
            result_type=DeployResult,
        )
        with pytest.raises(Refused) as err:
            await admitted(handle)
        result = await handle.result()
        st = await status(client, wid)
        audits = [await audit_export(client, wid, fmt) for fmt in FORMATS]
    assert str(err.value) == result.reason and result.outcome is Outcome.REJECTED
    assert result.reason.startswith(f"{NAME} is a password parameter of job {d.job}")
    assert st.pccr is None and st.secret_params == [NAME]
    assert value not in st.model_dump_json()
    for text in audits:
        assert value not in text and SHOWN in text
    assert not [m for m in slack.messages if wid in json.dumps(m)]


async def _at_review(client: Client, d: Deployment) -> str:
    wid, _ = await start_deploy(client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    return wid


async def test_the_password_comes_from_the_worker_and_is_nowhere_else(
    client: Client,
    secret_deployment: Deployment,
    jenkins: FakeJenkins,
    slack: FakeSlack,
    github: FakeGitHub,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = secret_deployment
    value = secret_value()
    monkeypatch.setenv(ENV, value)
    caplog.set_level(logging.DEBUG)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid = await _at_review(client, d)
        st = await status(client, wid)
        # Everyone who reviews sees the parameter, as supplied by the worker.
        assert st.pccr is not None and st.pccr.params == {**PARAMS, NAME: SHOWN}
        assert st.secret_params == [NAME]
        dm = await eventually(
            lambda: [
                m for m in slack.messages if m["channel"] != "C0TRIAGE" and f"{NAME}: {SHOWN}" in m["text"]
            ]
        )
        assert wid in dm[0]["text"]
        issue = next(i for i in github.issues(PCCR_REPO) if wid in i["body"])
        assert f"{NAME}: {SHOWN}\n" in issue["body"]
        desc = await client.get_workflow_handle(wid).describe()  # the Web UI's static details
        assert f"{NAME}: {SHOWN}" in (await desc.static_details() or "")
        await to_trigger(client, wid, SRE1)
        await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
        st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=30)
        await act(
            client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256
        )
        await act(client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL)
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
        audits = [await audit_export(client, wid, fmt) for fmt in FORMATS]
        history = await client.get_workflow_handle(wid).fetch_history()
    assert result.outcome is Outcome.SUCCEEDED, result.reason
    # The value reached Jenkins, from the worker's environment …
    [build] = jenkins.builds(d.job)
    assert build["params"] == {**PARAMS, NAME: value}
    # … and nothing else: no history, audit, Slack message, PCCR issue or worker log holds it.
    assert value not in history.to_json()
    for text in audits:
        assert value not in text and SHOWN in text
    from_history = render_audit(await record_from_history(wid, history, client.data_converter), "md")
    assert value not in from_history and SHOWN in from_history
    assert value not in json.dumps(slack.messages)
    final = await eventually(
        lambda: [i for i in github.issues(PCCR_REPO) if wid in i["body"] and i["state"] == "closed"]
    )
    assert value not in json.dumps(final)
    assert caplog.records and value not in caplog.text


async def test_a_worker_without_the_variable_fails_the_deploy_and_says_why(
    client: Client,
    secret_deployment: Deployment,
    jenkins: FakeJenkins,
    slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = secret_deployment
    monkeypatch.delenv(ENV, raising=False)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid = await _at_review(client, d)  # the start needs no secret: only the trigger does
        await to_trigger(client, wid, SRE1)
        await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
        result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
        st = await status(client, wid)
    assert result.outcome is Outcome.FAILED
    assert result.reason == (
        f"SecretParamMissing: triggering '{d.job}': this worker has no {ENV} in its environment (the value of password "
        f"parameter {NAME} of the job): set it on every worker and restart the workers"
    )
    assert st.outcome_reason == result.reason and st.waiting_for is None
    assert jenkins.builds(d.job) == []
    ended = await eventually(
        lambda: [
            m for m in slack.messages_to("C0TRIAGE") if "ended *failed*" in m["text"] and ENV in m["text"]
        ]
    )
    assert ended
