"""activities.common.scrub / scrubbed, and the activities that use them: no token and no URL credentials
in what an activity raises (its message, `str()`, details and cause: what reaches the history, the
deploy's `outcome_reason` and the Slack thread), in what it returns from GitHub's refusals, or in its
log lines (SPEC §2, §10).

The activities run with ActivityEnvironment and the real clients against the fakes, whose existing
failure hooks are made to answer with the token in their error text; a fake's own behaviour is unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

from activities.common import MASK, scrub, scrubbed
from activities.github import GithubActivities
from activities.jenkins import JenkinsActivities
from activities.slack import SlackActivities
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from starter.slack_api import make_web_client
from workflows.models import (
    JobParametersInput,
    MergePrInput,
    OpenVersionPrInput,
    PrRefInput,
    SlackPostInput,
    UsergroupInput,
)

pytestmark = pytest.mark.timeout(30)

# Tokens with characters that URL-quoting changes, so the quoted forms are exercised too.
JENKINS_TOKEN = "jT0k/en+9f=2c~x"
GITHUB_TOKEN = "ghp_S3cr3t/T0ken+77c3="
SLACK_TOKEN = "xoxb-51ack/T0ken+9a1e="
USER = "deploy-bot"


def forms(token: str) -> list[str]:
    """The token as a message could carry it: as it is and URL-quoted."""
    return list(dict.fromkeys([token, quote(token, safe=""), quote(token), quote_plus(token)]))


def echo(token: str) -> str:
    """An error text that repeats the token every way a server or a client could."""
    q = quote(token, safe="")
    return (
        f"bad credentials {token} for {q} at https://{USER}:{q}@ci.example/job/x/?token={quote_plus(token)}"
    )


def history_text(err: BaseException) -> bytes:
    """What Temporal stores of `err` in the history: its Failure as the worker's converter encodes it."""
    failure = Failure()
    pydantic_data_converter.failure_converter.to_failure(
        err, pydantic_data_converter.payload_converter, failure
    )
    return failure.SerializeToString()


def assert_clean(err: BaseException, token: str) -> None:
    """No form of `token`, nor a URL's userinfo, in the error, anything it carries, or its history entry."""
    texts = [str(err), repr(err)]
    if isinstance(err, ApplicationError):
        texts += [err.message, repr(err.details)]
    cause = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    if cause is not None:
        texts += [str(cause), repr(cause)]
    stored = history_text(err)
    for form in forms(token):
        for text in texts:
            assert form not in text, text
        assert form.encode() not in stored
    for text in texts:
        assert f"{USER}:" not in text and f"{USER}@" not in text, text


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(fn: Callable[[Any], Any], inp: Any) -> Any:
    return ActivityEnvironment().run(fn, inp)


def app_error(fn: Callable[[Any], Any], inp: Any, type_: str) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        run(fn, inp)
    assert info.value.type == type_, str(info.value)
    return info.value


def with_userinfo(url: str, token: str) -> str:
    """`url` with our user and the (quoted) token in it, as an operator might have configured it."""
    return url.replace("://", f"://{USER}:{quote(token, safe='')}@", 1)


# ---------------------------------------------------------------------------------------------------
# scrub


@pytest.mark.parametrize(
    "text, secrets, expected",
    [
        ("Jenkins at https://bot:tok3n@ci.example/job/x", (), "Jenkins at https://***@ci.example/job/x"),
        (
            "https://tok3n@ci.example and http://u:p@127.0.0.1:8080/",
            (),
            "https://***@ci.example and http://***@127.0.0.1:8080/",
        ),
        ("HTTPS://U:P@CI.EXAMPLE", (), "HTTPS://***@CI.EXAMPLE"),
        ("https://u:p@ss@ci.example/path", (), "https://***@ci.example/path"),  # the last @ ends the userinfo
        ("https://@ci.example", (), "https://***@ci.example"),
        ("(url='https://u:p@h')", (), "(url='https://***@h')"),
        ("https://ci.example/a@b?to=x@y#z@w", (), "https://ci.example/a@b?to=x@y#z@w"),  # not userinfo
        ("write to ops@example.com", (), "write to ops@example.com"),
        ("token tok3n, again tok3n", ("tok3n",), "token ***, again ***"),
        ("quoted a%2Fb%2Bc and a/b%2bc and a%2fb+c", ("a/b+c",), "quoted *** and *** and ***"),
        ("form a+b and a%20b", ("a b",), "form *** and ***"),
        ("é: %C3%A9 %c3%a9", ("é",), "***: *** ***"),
        ("abcdef abc", ("abc", "abcdef"), "*** ***"),  # the longer secret first
        ("nothing to hide", ("", "absent"), "nothing to hide"),
        ("https://u:s3cret@h", ("s3cret",), "https://***@h"),
    ],
)
def test_scrub_examples(text: str, secrets: tuple[str, ...], expected: str) -> None:
    assert scrub(text, secrets) == expected


# A secret made of the mask's own character could never be told apart from the mask.
_secret_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="*")
_text_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="*@")
_userinfo_chars = st.characters(
    blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="*/?#\\"
)
_host = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}(:[0-9]{1,5})?", fullmatch=True)
_path = st.from_regex(r"(/[A-Za-z0-9._~%-]{0,10}){0,3}(\?[A-Za-z0-9=&]{0,10})?", fullmatch=True)


@given(
    secret=st.text(_secret_chars, min_size=1, max_size=30),
    before=st.text(_secret_chars, max_size=30),
    after=st.text(_secret_chars, max_size=30),
    encode=st.sampled_from(
        [
            lambda s: s,
            lambda s: quote(s, safe=""),
            lambda s: quote(s),
            lambda s: quote_plus(s),
            lambda s: quote(s, safe="").lower(),
        ]
    ),
)
@example(secret="ab", before="a", after="b", encode=lambda s: s)
@example(secret="aa", before="a", after="a", encode=lambda s: s)
def test_scrub_never_leaves_a_secret(
    secret: str, before: str, after: str, encode: Callable[[str], str]
) -> None:
    text = before + encode(secret) + after + secret
    out = scrub(text, [secret])
    assert secret not in out
    assert quote(secret, safe="") not in out and quote_plus(secret) not in out


@given(
    scheme=st.sampled_from(["https", "http", "HTTPS", "git+ssh", "ftp"]),
    user=st.text(_userinfo_chars, max_size=15),
    password=st.text(_userinfo_chars, min_size=1, max_size=20),
    host=_host,
    path=_path,
    before=st.text(_text_chars, max_size=20),
    after=st.text(_text_chars, max_size=20),
)
def test_scrub_never_leaves_a_urls_userinfo(
    scheme: str, user: str, password: str, host: str, path: str, before: str, after: str
) -> None:
    userinfo = f"{user}:{password}"
    url = f"{scheme}://{userinfo}@{host}{path}"
    out = scrub(f"{before} {url} {after}")
    assert f"{userinfo}@" not in out
    assert f" {scheme}://{MASK}@{host}{path} " in out, out


def test_scrubbed_rebuilds_an_application_error_alike() -> None:
    err = ApplicationError(
        "failed at https://u:tok3n@h: tok3n",
        {"error": "tok3n", "status": 500, "nested": ["x tok3n"]},
        "plain",
        type="SomethingFailed",
        non_retryable=True,
        next_retry_delay=timedelta(seconds=7),
        category=ApplicationErrorCategory.BENIGN,
    )
    out = scrubbed(err, ["tok3n"])
    assert isinstance(out, ApplicationError) and out is not err
    assert out.message == "failed at https://***@h: ***"
    assert list(out.details) == [{"error": "***", "status": 500, "nested": ["x ***"]}, "plain"]
    assert (out.type, out.non_retryable, out.next_retry_delay, out.category) == (
        "SomethingFailed",
        True,
        timedelta(seconds=7),
        ApplicationErrorCategory.BENIGN,
    )
    assert out.__cause__ is None


def test_scrubbed_keeps_what_has_nothing_to_hide() -> None:
    clean = ApplicationError("nothing here", {"a": 1}, type="X")
    assert scrubbed(clean, ["tok3n"]) is clean
    other = ValueError("tok3n")
    assert scrubbed(other, ["tok3n"]) is other  # only what the activities raise is rebuilt


# ---------------------------------------------------------------------------------------------------
# Jenkins


@pytest.fixture
def jenkins() -> Iterator[FakeJenkins]:
    with FakeJenkins(users={USER: JENKINS_TOKEN}) as fake:
        fake.add_job("deploy-x", parameters=[{"name": "IMAGE_TAG", "type": "string", "default": "1"}])
        yield fake


def jenkins_echoing(fake: FakeJenkins, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's injected failures (`fail_next`) answer with a page repeating the token."""
    plain = fake._error_response
    page = f"<html><body><h2>Error</h2><p>{echo(JENKINS_TOKEN)}</p></body></html>"
    monkeypatch.setattr(
        fake, "_error_response", lambda status: dataclasses.replace(plain(status), body=page.encode())
    )


def test_jenkins_error_body_with_the_token(jenkins: FakeJenkins, monkeypatch: pytest.MonkeyPatch) -> None:
    jenkins_echoing(jenkins, monkeypatch)
    jenkins.fail_next(status=400, method="GET", path_contains="/job/deploy-x/", after_effect=False)
    acts = JenkinsActivities(jenkins.url, USER, JENKINS_TOKEN, timeout=5.0)
    err = app_error(acts.job_parameters, JobParametersInput(job="deploy-x"), "JenkinsRejected")
    assert "bad credentials *** for ***" in err.message  # Jenkins' text is kept, the token is not
    assert_clean(err, JENKINS_TOKEN)


@pytest.mark.parametrize(
    "status, job, type_",
    [
        (404, "nope", "JenkinsNotFound"),
        (503, "deploy-x", "JenkinsUnavailable"),
        (401, "deploy-x", "JenkinsAuth"),
    ],
)
def test_jenkins_url_with_credentials_in_failures(
    jenkins: FakeJenkins, monkeypatch: pytest.MonkeyPatch, status: int, job: str, type_: str
) -> None:
    jenkins_echoing(jenkins, monkeypatch)
    if status != 404:
        jenkins.fail_next(status=status, method="GET", path_contains="/job/", times=5, after_effect=False)
    acts = JenkinsActivities(with_userinfo(jenkins.url, JENKINS_TOKEN), USER, JENKINS_TOKEN, timeout=5.0)
    err = app_error(acts.job_parameters, JobParametersInput(job=job), type_)
    assert f"Jenkins at http://{MASK}@127.0.0.1:" in err.message
    assert_clean(err, JENKINS_TOKEN)
    assert JENKINS_TOKEN not in repr(acts) and quote(JENKINS_TOKEN, safe="") not in repr(acts)


@pytest.mark.parametrize("port", ["closed", "99999"])
def test_jenkins_client_errors_quoting_the_url(port: str) -> None:
    """requests and urllib3 print the URL they failed on (unreachable; a URL they cannot parse)."""
    url = f"http://127.0.0.1:{closed_port() if port == 'closed' else port}"
    acts = JenkinsActivities(with_userinfo(url, JENKINS_TOKEN), USER, JENKINS_TOKEN, timeout=2.0)
    err = app_error(
        acts.job_parameters,
        JobParametersInput(job="deploy-x"),
        "JenkinsUnreachable" if port == "closed" else "JenkinsError",
    )
    assert_clean(err, JENKINS_TOKEN)


# ---------------------------------------------------------------------------------------------------
# GitHub

CONFIGS = "acme/product-configs"
PATH = "channel-gov/payments-api.yaml"


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=GITHUB_TOKEN) as fake:
        fake.add_repo(CONFIGS, files={PATH: "service: payments-api\nversion: 1.4.1\n"})
        yield fake


@pytest.fixture
def gh(github: FakeGitHub) -> GithubActivities:
    return GithubActivities(github.url, GITHUB_TOKEN, timeout=5)


def version_pr(**kw: Any) -> OpenVersionPrInput:
    values: dict[str, Any] = {
        "repo": CONFIGS,
        "base_branch": "master",
        "branch": "deployctl/deploy-payments-api-1",
        "path": PATH,
        "version": "1.4.2",
        "title": "payments-api: version 1.4.2",
        "body": "PCCR",
    }
    return OpenVersionPrInput(**(values | kw))


@pytest.mark.parametrize(
    "status, times, type_",
    [
        (403, 1, "GithubForbidden"),
        (404, 1, "GithubNotFound"),
        (401, 1, "GithubAuth"),
        (422, 1, "GithubRejected"),
        (503, 10, "GithubUnavailable"),  # (the client's own retries of a read see it too)
    ],
)
def test_github_error_message_with_the_token(
    github: FakeGitHub, gh: GithubActivities, status: int, times: int, type_: str
) -> None:
    github.fail_next(status, "GET", "/repos/", times=times, after_effect=False, message=echo(GITHUB_TOKEN))
    err = app_error(gh.pr_state, PrRefInput(repo=CONFIGS, number=1), type_)
    assert "bad credentials *** for ***" in err.message
    assert_clean(err, GITHUB_TOKEN)


def test_github_api_url_with_credentials(github: FakeGitHub) -> None:
    github.fail_next(500, "GET", "/repos/", times=10, after_effect=False)
    acts = GithubActivities(with_userinfo(github.url, GITHUB_TOKEN), GITHUB_TOKEN, timeout=5)
    err = app_error(acts.pr_state, PrRefInput(repo=CONFIGS, number=1), "GithubUnavailable")
    assert f"GitHub at http://{MASK}@127.0.0.1:" in err.message
    assert_clean(err, GITHUB_TOKEN)
    assert GITHUB_TOKEN not in repr(acts) and quote(GITHUB_TOKEN, safe="") not in repr(acts)

    gone = GithubActivities(
        with_userinfo(f"http://127.0.0.1:{closed_port()}/api/v3", GITHUB_TOKEN), GITHUB_TOKEN, timeout=2
    )
    assert_clean(
        app_error(gone.pr_state, PrRefInput(repo=CONFIGS, number=1), "GithubUnreachable"), GITHUB_TOKEN
    )


def test_github_nothing_to_commit_with_the_token(github: FakeGitHub, gh: GithubActivities) -> None:
    github.fail_next(
        422,
        "POST",
        "/pulls",
        after_effect=False,
        message=f"No commits between master and x: {echo(GITHUB_TOKEN)}",
    )
    err = app_error(gh.open_version_pr, version_pr(), "VersionAlreadySet")
    assert_clean(err, GITHUB_TOKEN)


def test_github_merge_refusal_with_the_token(
    github: FakeGitHub, gh: GithubActivities, caplog: pytest.LogCaptureFixture
) -> None:
    pr = run(gh.open_version_pr, version_pr())
    github.fail_next(405, "PUT", "/merge", after_effect=False, message=f"Not mergeable: {echo(GITHUB_TOKEN)}")
    with caplog.at_level(logging.INFO):
        result = run(gh.merge_pr, MergePrInput(repo=CONFIGS, number=pr.number))
    assert not result.merged and result.refused_reason and result.refused_reason.startswith("Not mergeable: ")
    logged = [r.getMessage() for r in caplog.records]
    assert any("GitHub refused" in line for line in logged), logged
    for form in forms(GITHUB_TOKEN):
        assert form not in result.refused_reason
        assert form not in result.model_dump_json()
        assert all(form not in line for line in logged), logged
    assert f"{USER}:" not in result.refused_reason


def test_github_signing_keys_failure_with_the_token(github: FakeGitHub, gh: GithubActivities) -> None:
    """The rules activity puts this error's text in the deploy's rules (its history): it is ours, scrubbed."""
    github.fail_next(403, "GET", "ssh_signing_keys", after_effect=False, message=echo(GITHUB_TOKEN))
    with pytest.raises(ApplicationError) as info:
        gh.signing_keys("alice")
    assert info.value.type == "GithubForbidden"
    assert_clean(info.value, GITHUB_TOKEN)


# ---------------------------------------------------------------------------------------------------
# Slack


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=SLACK_TOKEN) as fake:
        yield fake


@pytest.mark.parametrize(
    "status, code, type_",
    [
        (200, "plain", "SlackError"),
        (200, "quoted", "SlackError"),
        (500, "quoted", "SlackUnavailable"),
        (429, "plain", "SlackRateLimited"),
    ],
)
def test_slack_error_code_with_the_token(slack: FakeSlack, status: int, code: str, type_: str) -> None:
    """Slack's error code goes into the message and the details (both reach the history)."""
    error = SLACK_TOKEN if code == "plain" else quote(SLACK_TOKEN, safe="")
    slack.fail_next(method="chat.postMessage", error=error, status=status, retry_after=30, times=5)
    acts = SlackActivities(make_web_client(SLACK_TOKEN, slack.url, rate_limit_retries=0))
    err = app_error(acts.post_message, SlackPostInput(channel="C0TRIAGE", text="x"), type_)
    if status == 200:
        assert err.details[0]["error"] == MASK
    assert_clean(err, SLACK_TOKEN)


def test_slack_unreachable_with_credentials_in_the_url(slack: FakeSlack) -> None:
    url = with_userinfo(f"http://127.0.0.1:{closed_port()}/api/", SLACK_TOKEN)
    acts = SlackActivities(make_web_client(SLACK_TOKEN, url, connection_retries=0))
    err = app_error(acts.usergroup_members, UsergroupInput(usergroup="S0SREGOV"), "SlackUnavailable")
    assert_clean(err, SLACK_TOKEN)
