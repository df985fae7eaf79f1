"""The GitHub activities, run with ActivityEnvironment and the real PyGithub client against FakeGitHub (a
real HTTP server speaking GitHub's REST API). No Temporal server needed."""

from __future__ import annotations

import dataclasses
import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment

from activities.github import LABEL_COLORS, GithubActivities, NoVersionLine, set_version
from starter.simulators.github import FakeGitHub
from workflows.models import (
    CommentInput,
    LabelsInput,
    MergePrInput,
    OpenIssueInput,
    OpenVersionPrInput,
    PrDiffInput,
    PrRefInput,
    WatchPrInput,
)

pytestmark = pytest.mark.timeout(20)

TOKEN = "ghp_t0ps3cret5f2cDEADBEEF"
CONFIGS = "acme/product-configs"
PCCR = "acme/pccr"
PATH = "channel-gov/payments-api.yaml"
BRANCH = "deployctl/deploy-payments-api-kprod-gov-1"
FILE = """\
# payments-api, gov cloud. Owned by the payments team.
service: payments-api
version: 1.4.1   # set by deployctl
replicas: 3
image:
  repository: registry.gov/payments-api
  version: sidecar-2.0
env:
  LOG_LEVEL: info
"""
WANT = FILE.replace("version: 1.4.1   #", "version: 1.4.2   #")


@pytest.fixture
def fake() -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN) as f:
        f.add_repo(
            CONFIGS, files={PATH: FILE, "channel-gov/other.yaml": "version: 9.9.9\n", "README.md": "hi\n"}
        )
        f.add_repo(PCCR, default_branch="main", files={"README.md": "PCCRs\n"})
        yield f


@pytest.fixture
def acts(fake: FakeGitHub) -> GithubActivities:
    return GithubActivities(fake.url, TOKEN, timeout=5)


def run(fn: Callable[[Any], Any], inp: Any) -> Any:
    return ActivityEnvironment().run(fn, inp)


def app_error(fn: Callable[[Any], Any], inp: Any, type_: str, non_retryable: bool) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        run(fn, inp)
    err = info.value
    assert (err.type, err.non_retryable) == (type_, non_retryable), str(err)
    assert TOKEN not in str(err) and TOKEN not in repr(err.details)
    return err


def version_pr(**kw: Any) -> OpenVersionPrInput:
    values: dict[str, Any] = {
        "repo": CONFIGS,
        "base_branch": "master",
        "path": PATH,
        "version": "1.4.2",
        "branch": BRANCH,
        "title": "payments-api kprod-gov: version 1.4.2",
        "body": "Opened by deployctl for deploy-payments-api-kprod-gov-1",
    }
    values.update(kw)
    return OpenVersionPrInput(**values)


def writes(fake: FakeGitHub, path_part: str = "") -> list[tuple[str, str]]:
    return [(m, p) for m, p, _, _ in fake.requests if m != "GET" and path_part in p]


def our_branches(fake: FakeGitHub) -> list[str]:
    return [b for b in fake.branches(CONFIGS) if b.startswith("deployctl/")]


# ---------------------------------------------------------------------------------------------------
# set_version (pure)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("version: 1.0\n", "version: 2.0.1\n"),
        ('version: "1.0"  # pinned\n', 'version: "2.0.1"  # pinned\n'),
        ("version: '1.0'\n", "version: '2.0.1'\n"),
        ("a: 1\r\nversion:   1.0\r\nb: 2\r\n", "a: 1\r\nversion:   2.0.1\r\nb: 2\r\n"),
        ("version:\nx: 1\n", "version: 2.0.1\nx: 1\n"),
        ("version: # todo\n", "version: 2.0.1 # todo\n"),
        ("app:\n  version: 1.0 # only one\n", "app:\n  version: 2.0.1 # only one\n"),
        ("sidecar:\n  version: 7\nversion: 1.0\n", "sidecar:\n  version: 7\nversion: 2.0.1\n"),
        ('"version": 1.0', '"version": 2.0.1'),
    ],
)
def test_set_version_keeps_the_line_style(before: str, after: str) -> None:
    edit = set_version(before, "2.0.1")
    assert edit.text == after and edit.changed


def test_set_version_unchanged_and_missing() -> None:
    edit = set_version('version: "2.0.1"\n', "2.0.1")
    assert not edit.changed and edit.text == 'version: "2.0.1"\n' and edit.old == "2.0.1"
    with pytest.raises(NoVersionLine):
        set_version("# version: 1.0\nversions: 3\nmy_version: 2\n", "2.0.1")
    with pytest.raises(NoVersionLine):
        set_version("a:\n  version: 1\nb:\n  version: 2\n", "2.0.1")


# ---------------------------------------------------------------------------------------------------
# The version PR


def test_open_version_pr_changes_only_the_version_line(fake: FakeGitHub, acts: GithubActivities) -> None:
    pr = run(acts.open_version_pr, version_pr())
    assert fake.file(CONFIGS, BRANCH, PATH) == WANT
    assert fake.file(CONFIGS, BRANCH, "channel-gov/other.yaml") == "version: 9.9.9\n"
    assert fake.file(CONFIGS, "master", PATH) == FILE
    assert fake.commits_on(CONFIGS, BRANCH) == ["payments-api kprod-gov: version 1.4.2", "Initial commit"]
    (doc,) = fake.pulls(CONFIGS)
    assert (pr.number, pr.branch, pr.base_branch, pr.state, pr.merged, pr.reused) == (
        doc["number"],
        BRANCH,
        "master",
        "open",
        False,
        False,
    )
    assert pr.url == f"{fake.web_url}/{CONFIGS}/pull/{pr.number}"
    assert pr.head_sha == fake.branches(CONFIGS)[BRANCH]
    assert doc["title"] == "payments-api kprod-gov: version 1.4.2"
    assert doc["body"] == "Opened by deployctl for deploy-payments-api-kprod-gov-1"


def test_open_version_pr_twice_reuses_the_pr(fake: FakeGitHub, acts: GithubActivities) -> None:
    first = run(acts.open_version_pr, version_pr())
    before = len(writes(fake))
    again = run(acts.open_version_pr, version_pr())
    assert again.reused and again.number == first.number and again.head_sha == first.head_sha
    assert len(writes(fake)) == before  # nothing written the second time
    assert len(fake.pulls(CONFIGS)) == 1 and our_branches(fake) == [BRANCH]


@pytest.mark.parametrize(
    ("method", "path_part"),
    [("POST", "/git/refs"), ("PUT", "/contents/"), ("POST", "/pulls")],
    ids=["branch-created", "commit-made", "pr-opened"],
)
def test_open_version_pr_retry_after_a_lost_answer(
    fake: FakeGitHub, acts: GithubActivities, method: str, path_part: str
) -> None:
    fake.fail_next(500, method, path_part, after_effect=True)
    err = app_error(acts.open_version_pr, version_pr(), "GithubUnavailable", non_retryable=False)
    assert "500" in str(err)
    pr = run(acts.open_version_pr, version_pr())
    assert pr.reused == (method == "POST" and path_part == "/pulls")
    assert our_branches(fake) == [BRANCH]
    assert len(fake.pulls(CONFIGS)) == 1
    assert fake.commits_on(CONFIGS, BRANCH) == ["payments-api kprod-gov: version 1.4.2", "Initial commit"]
    assert fake.file(CONFIGS, BRANCH, PATH) == WANT


def test_open_version_pr_when_a_concurrent_attempt_opened_the_pr(
    fake: FakeGitHub, acts: GithubActivities
) -> None:
    # The PR appears between our lookup and our POST: GitHub answers 422 "A pull request already exists".
    fake.before_next("POST", "/pulls", lambda: fake.open_pull(CONFIGS, BRANCH, title="the other attempt"))
    pr = run(acts.open_version_pr, version_pr())
    assert pr.reused and pr.state == "open"
    assert [p["number"] for p in fake.pulls(CONFIGS)] == [pr.number]


def test_open_version_pr_rereads_on_a_stale_sha(fake: FakeGitHub, acts: GithubActivities) -> None:
    # Someone commits to the branch between our read of the file and our update: 409, read again, retry.
    other = FILE.replace("replicas: 3", "replicas: 5")
    fake.before_next("PUT", "/contents/", lambda: fake.commit_file(CONFIGS, BRANCH, PATH, other))
    run(acts.open_version_pr, version_pr())
    assert fake.file(CONFIGS, BRANCH, PATH) == WANT.replace("replicas: 3", "replicas: 5")
    puts = [(m, p) for m, p in writes(fake, "/contents/") if m == "PUT"]
    assert len(puts) == 2
    assert fake.commits_on(CONFIGS, BRANCH)[:2] == ["payments-api kprod-gov: version 1.4.2", "Update " + PATH]


def test_open_version_pr_without_a_version_line(fake: FakeGitHub, acts: GithubActivities) -> None:
    fake.add_repo("acme/broken", files={PATH: "service: payments-api\n# version: none\n"})
    err = app_error(acts.open_version_pr, version_pr(repo="acme/broken"), "NoVersionLine", non_retryable=True)
    assert PATH in str(err)
    assert not fake.pulls("acme/broken")


def test_open_version_pr_when_the_base_already_has_the_version(
    fake: FakeGitHub, acts: GithubActivities
) -> None:
    app_error(acts.open_version_pr, version_pr(version="1.4.1"), "VersionAlreadySet", non_retryable=True)
    assert not fake.pulls(CONFIGS)


def test_open_version_pr_rejects_odd_versions_and_missing_files(
    fake: FakeGitHub, acts: GithubActivities
) -> None:
    app_error(acts.open_version_pr, version_pr(version='1.0"\nx: 1'), "InvalidVersion", non_retryable=True)
    app_error(acts.open_version_pr, version_pr(version="1.4.2\n"), "InvalidVersion", non_retryable=True)
    app_error(
        acts.open_version_pr, version_pr(path="channel-gov/nope.yaml"), "GithubNotFound", non_retryable=True
    )
    app_error(acts.open_version_pr, version_pr(base_branch="main"), "GithubNotFound", non_retryable=True)
    assert not writes(fake, "/contents/") and not fake.pulls(CONFIGS)


# ---------------------------------------------------------------------------------------------------
# Merging, reading and closing the PR


@pytest.fixture
def opened(fake: FakeGitHub, acts: GithubActivities) -> Any:
    return run(acts.open_version_pr, version_pr())


def test_merge_pr(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    result = run(
        acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number, sha=opened.head_sha, title="v1.4.2")
    )
    assert result.merged and not result.already_merged and result.refused_reason is None
    assert result.sha == fake.branches(CONFIGS)["master"]
    assert fake.file(CONFIGS, "master", PATH) == WANT
    assert fake.commits_on(CONFIGS, "master")[0] == "v1.4.2"  # squash: one commit with our title
    (_, _, _, body) = next(r for r in fake.requests if r[0] == "PUT" and r[1].endswith("/merge"))
    assert '"merge_method": "squash"' in body
    state = run(acts.pr_state, PrRefInput(repo=CONFIGS, number=opened.number))
    assert (state.state, state.merged, state.merged_by) == ("closed", True, fake.login)
    assert state.merge_commit_sha == result.sha


def test_merge_refused_for_conflicts(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    fake.set_mergeable(CONFIGS, opened.number, False, reason="dirty")
    state = run(acts.pr_state, PrRefInput(repo=CONFIGS, number=opened.number))
    assert (state.mergeable, state.mergeable_state) == (False, "dirty")
    result = run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number))
    assert not result.merged and not result.already_merged
    assert result.refused_reason == "Pull Request is not mergeable"
    state = run(acts.pr_state, PrRefInput(repo=CONFIGS, number=opened.number))
    assert (state.state, state.merged) == ("open", False)
    assert fake.file(CONFIGS, "master", PATH) == FILE


def test_a_real_conflict_makes_the_pr_unmergeable(
    fake: FakeGitHub, acts: GithubActivities, opened: Any
) -> None:
    fake.commit_file(CONFIGS, "master", PATH, FILE.replace("1.4.1", "1.4.9"))
    state = run(acts.pr_state, PrRefInput(repo=CONFIGS, number=opened.number))
    assert (state.mergeable, state.mergeable_state) == (False, "dirty")
    result = run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number))
    assert result.refused_reason == "Pull Request is not mergeable"


def test_merge_refused_for_missing_reviews(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    fake.require_reviews(CONFIGS, opened.number)
    state = run(acts.pr_state, PrRefInput(repo=CONFIGS, number=opened.number))
    assert state.mergeable_state == "blocked"
    result = run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number))
    assert not result.merged
    assert result.refused_reason == "At least 1 approving review is required by reviewers with write access."
    fake.approve(CONFIGS, opened.number, by="U0SREG1")
    assert run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number)).merged


def test_merge_refused_when_the_head_moved(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    moved = fake.commit_file(CONFIGS, BRANCH, PATH, WANT + "# late change\n")
    master = fake.branches(CONFIGS)["master"]
    result = run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number, sha=opened.head_sha))
    assert not result.merged
    assert result.refused_reason == "Head branch was modified. Review and try the merge again."
    assert [s for m, p, s in fake.statuses if m == "PUT" and p.endswith("/merge")] == [409]
    assert result.head_sha == moved  # where the head is now, read after the refusal
    assert fake.branches(CONFIGS)["master"] == master
    assert run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number, sha=moved)).merged


def test_pr_diff_is_the_diff_of_its_head(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    """`GET pulls/n/files` as GitHub answers it: one entry per file with GitHub's `patch` (hunks only);
    none for a binary file or one GitHub finds too large, which the diff says in its place."""
    fake.commit_file(CONFIGS, BRANCH, "channel-gov/new.yaml", "```\n<!channel>\n")
    fake.commit_file(CONFIGS, BRANCH, "logo.png", "\x00PNG")
    fake.commit_file(CONFIGS, BRANCH, "README.md", "hi\n" + "big\n" * 50)
    fake.omit_patch("README.md")
    head = fake.branches(CONFIGS)[BRANCH]
    d = run(acts.pr_diff, PrDiffInput(repo=CONFIGS, number=opened.number))
    assert d.head_sha == head and (d.files, d.changed_files) == (4, 4)
    assert d.diff.startswith("--- a/README.md\n+++ b/README.md\n(GitHub shows no patch for README.md")
    assert "--- /dev/null\n+++ b/channel-gov/new.yaml\n@@ -0,0 +1,2 @@\n+```\n+<!channel>\n" in d.diff
    assert f"--- a/{PATH}\n+++ b/{PATH}\n@@ -1,6 +1,6 @@\n" in d.diff
    assert "-version: 1.4.1   # set by deployctl\n+version: 1.4.2   # set by deployctl\n" in d.diff
    assert d.no_patch == ["README.md", "logo.png"] and d.chars == len(d.diff)
    assert d.files_url == f"{fake.web_url}/{CONFIGS}/pull/{opened.number}/files"
    short = run(acts.pr_diff, PrDiffInput(repo=CONFIGS, number=opened.number, limit=50))
    assert short.diff == d.diff[:50] and short.chars == d.chars


def test_the_same_diff_at_another_head_is_another_review(
    fake: FakeGitHub, acts: GithubActivities, opened: Any
) -> None:
    """A binary file GitHub gives no patch for changes, and the diff text stays the same: the sha256 the
    SRE's merge binds to changes with the head, so an old DM's button cannot merge the new head."""
    fake.commit_file(CONFIGS, BRANCH, "logo.png", "\x00PNG one")
    before = run(acts.pr_diff, PrDiffInput(repo=CONFIGS, number=opened.number))
    fake.commit_file(CONFIGS, BRANCH, "logo.png", "\x00PNG two")
    after = run(acts.pr_diff, PrDiffInput(repo=CONFIGS, number=opened.number))
    assert after.diff == before.diff and after.head_sha != before.head_sha
    assert after.diff_sha256 != before.diff_sha256
    assert after.diff_sha256 == hashlib.sha256(f"{after.head_sha}\n{after.diff}".encode()).hexdigest()


def test_pr_diff_reads_again_when_the_head_moves_meanwhile(
    fake: FakeGitHub, acts: GithubActivities, opened: Any
) -> None:
    fake.before_next("GET", "/files", lambda: fake.commit_file(CONFIGS, BRANCH, "late.yaml", "late: 1\n"))
    d = run(acts.pr_diff, PrDiffInput(repo=CONFIGS, number=opened.number))
    assert d.head_sha == fake.branches(CONFIGS)[BRANCH] != opened.head_sha
    assert "+++ b/late.yaml\n@@ -0,0 +1 @@\n+late: 1" in d.diff
    assert len([p for m, p, _, _ in fake.requests if m == "GET" and p.endswith("/files")]) == 2


def test_pr_diff_pages_through_the_files(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    for i in range(130):  # more than one page of 100
        fake.commit_file(CONFIGS, BRANCH, f"many/{i:03}.yaml", f"n: {i}\n")
    d = run(acts.pr_diff, PrDiffInput(repo=CONFIGS, number=opened.number, limit=100_000))
    assert (d.files, d.changed_files) == (131, 131) and "+++ b/many/129.yaml" in d.diff


def test_already_merged_on_github(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    fake.merge_directly(CONFIGS, opened.number, by="alice")
    result = run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number))
    assert (result.merged, result.already_merged, result.merged_by) == (True, True, "alice")
    assert result.sha == fake.branches(CONFIGS)["master"]
    assert not [r for r in fake.requests if r[0] == "PUT" and r[1].endswith("/merge")]


def test_merged_on_github_while_we_merge(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    fake.before_next("PUT", "/merge", lambda: fake.merge_directly(CONFIGS, opened.number, by="alice"))
    result = run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number))
    assert (result.merged, result.already_merged, result.merged_by) == (True, True, "alice")


def test_merge_retry_after_a_lost_answer(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    fake.fail_next(502, "PUT", "/merge", after_effect=True)
    app_error(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number), "GithubUnavailable", False)
    result = run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number))
    assert (result.merged, result.already_merged, result.merged_by) == (True, True, fake.login)
    assert len([c for c in fake.commits_on(CONFIGS, "master") if "1.4.2" in c]) == 1


def test_merge_a_closed_pr_is_refused(fake: FakeGitHub, acts: GithubActivities, opened: Any) -> None:
    fake.close_directly(CONFIGS, opened.number)
    result = run(acts.merge_pr, MergePrInput(repo=CONFIGS, number=opened.number))
    assert not result.merged and "closed" in (result.refused_reason or "")


def test_close_pr_is_idempotent_and_deletes_our_branch(
    fake: FakeGitHub, acts: GithubActivities, opened: Any
) -> None:
    closed = run(acts.close_pr, PrRefInput(repo=CONFIGS, number=opened.number))
    assert (closed.state, closed.merged) == ("closed", False)
    assert BRANCH not in fake.branches(CONFIGS)
    before = len(writes(fake))
    again = run(acts.close_pr, PrRefInput(repo=CONFIGS, number=opened.number))
    assert again.state == "closed"
    assert len(writes(fake)) == before  # no PATCH, no DELETE: the branch is already gone
    assert [m for m, p in writes(fake) if m == "DELETE"] == ["DELETE"]
    assert any(p.endswith(f"/git/refs/heads/{BRANCH}") for m, p in writes(fake) if m == "DELETE")


def test_close_pr_after_a_lost_answer_still_deletes_the_branch(
    fake: FakeGitHub, acts: GithubActivities, opened: Any
) -> None:
    fake.fail_next(500, "PATCH", f"/pulls/{opened.number}", after_effect=True)
    app_error(acts.close_pr, PrRefInput(repo=CONFIGS, number=opened.number), "GithubUnavailable", False)
    assert BRANCH in fake.branches(CONFIGS)
    closed = run(acts.close_pr, PrRefInput(repo=CONFIGS, number=opened.number))
    assert closed.state == "closed" and BRANCH not in fake.branches(CONFIGS)


def test_close_a_merged_pr_is_a_noop_and_foreign_branches_stay(
    fake: FakeGitHub, acts: GithubActivities
) -> None:
    fake.create_branch(CONFIGS, "alice/tweak")  # a person's branch, not ours
    fake.commit_file(CONFIGS, "alice/tweak", "README.md", "hello\n", by="alice")
    number = fake.open_pull(CONFIGS, "alice/tweak", by="alice")
    fake.merge_directly(CONFIGS, number, by="alice")
    closed = run(acts.close_pr, PrRefInput(repo=CONFIGS, number=number))
    assert (closed.state, closed.merged, closed.merged_by) == ("closed", True, "alice")
    assert "alice/tweak" in fake.branches(CONFIGS)
    assert not writes(fake)


# ---------------------------------------------------------------------------------------------------
# Watching the PR: heartbeats well inside the heartbeat timeout, cancellation between polls


def watching_env(heartbeat_timeout: float) -> tuple[ActivityEnvironment, list[tuple[float, tuple[Any, ...]]]]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=heartbeat_timeout))
    beats: list[tuple[float, tuple[Any, ...]]] = []
    env.on_heartbeat = lambda *d: beats.append((time.monotonic(), d))
    return env, beats


def test_watch_pr_heartbeats_through_slow_reads_and_sleeps(fake: FakeGitHub, opened: Any) -> None:
    """Under a 1 s heartbeat timeout, with a 1.5 s poll and a read of the PR that takes 1.5 s, no two
    heartbeats are more than a quarter of the timeout apart; the PR merged on GitHub ends the watch."""
    acts = GithubActivities(fake.url, TOKEN, timeout=5, watch_interval=1.5)
    env, beats = watching_env(heartbeat_timeout=1.0)
    fake.before_next("GET", f"/pulls/{opened.number}", lambda: time.sleep(1.5))
    threading.Timer(2.5, lambda: fake.merge_directly(CONFIGS, opened.number, by="alice")).start()
    start = time.monotonic()
    state = env.run(acts.watch_pr, WatchPrInput(repo=CONFIGS, number=opened.number))
    end = time.monotonic()
    assert (state.merged, state.merged_by) == (True, "alice")
    times = [start, *(t for t, _ in beats), end]
    assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= 0.5, beats
    polled = [d for _, d in beats if d]
    assert polled and all(d == ({"number": opened.number},) for d in polled)


def test_watch_pr_is_cancelled_between_polls(fake: FakeGitHub, opened: Any) -> None:
    acts = GithubActivities(fake.url, TOKEN, timeout=5, watch_interval=30)
    env, beats = watching_env(heartbeat_timeout=10.0)
    threading.Timer(0.5, env.cancel).start()
    start = time.monotonic()
    with pytest.raises(CancelledError):
        env.run(acts.watch_pr, WatchPrInput(repo=CONFIGS, number=opened.number))
    assert time.monotonic() - start < 2.0
    assert [d for _, d in beats] == [({"number": opened.number},)]  # the one poll's heartbeat


# ---------------------------------------------------------------------------------------------------
# The PCCR as a GitHub issue


def pccr_input(**kw: Any) -> OpenIssueInput:
    values: dict[str, Any] = {
        "repo": PCCR,
        "title": "PCCR: payments-api to kprod-gov",
        "body": "Parameters:\n- VERSION=1.4.2\n",
        "labels": ["pccr", "pending-review"],
        "marker": "deploy-payments-api-kprod-gov-1",
    }
    values.update(kw)
    return OpenIssueInput(**values)


def test_open_pccr_issue_is_idempotent(fake: FakeGitHub, acts: GithubActivities) -> None:
    for i in range(3):  # other PCCRs, one mentioning our id in passing
        run(
            acts.open_pccr_issue, pccr_input(marker=f"other-{i}", body="see deploy-payments-api-kprod-gov-10")
        )
    first = run(acts.open_pccr_issue, pccr_input())
    assert not first.reused and first.state == "open" and first.labels == ["pccr", "pending-review"]
    assert first.url == f"{fake.web_url}/{PCCR}/issues/{first.number}"
    again = run(acts.open_pccr_issue, pccr_input())
    assert again.reused and again.number == first.number
    ours = [i for i in fake.issues(PCCR) if "<!-- deployctl:deploy-payments-api-kprod-gov-1 -->" in i["body"]]
    assert len(ours) == 1 and ours[0]["body"].startswith("Parameters:\n- VERSION=1.4.2")
    assert fake.labels(PCCR) == {
        "pccr": LABEL_COLORS["pccr"],
        "pending-review": LABEL_COLORS["pending-review"],
    }


def test_open_pccr_issue_retry_after_a_lost_answer(fake: FakeGitHub, acts: GithubActivities) -> None:
    fake.fail_next(500, "POST", f"/repos/{PCCR}/issues", after_effect=True)
    app_error(acts.open_pccr_issue, pccr_input(), "GithubUnavailable", non_retryable=False)
    ref = run(acts.open_pccr_issue, pccr_input())
    assert ref.reused and len(fake.issues(PCCR)) == 1


def test_pccr_issue_found_among_many(fake: FakeGitHub, acts: GithubActivities) -> None:
    first = run(acts.open_pccr_issue, pccr_input())
    for i in range(120):  # more than one page (100) of newer issues
        run(acts.open_pccr_issue, pccr_input(marker=f"later-{i}", labels=[]))
    again = run(acts.open_pccr_issue, pccr_input())
    assert again.reused and again.number == first.number
    assert any("page=2" in p or q.get("page") == "2" for _, p, q, _ in fake.requests)


def test_set_pccr_labels_replaces_the_state(fake: FakeGitHub, acts: GithubActivities) -> None:
    ref = run(acts.open_pccr_issue, pccr_input())
    move = LabelsInput(repo=PCCR, number=ref.number, labels=["approved"], remove=["pending-review"])
    run(acts.set_pccr_labels, move)
    (issue,) = fake.issues(PCCR)
    assert [lb["name"] for lb in issue["labels"]] == ["pccr", "approved"]
    assert fake.labels(PCCR)["approved"] == LABEL_COLORS["approved"]  # created, with its color
    before = len(writes(fake))
    run(acts.set_pccr_labels, move)  # again: nothing to do
    assert len(writes(fake)) == before
    run(
        acts.set_pccr_labels,
        LabelsInput(repo=PCCR, number=ref.number, labels=["done"], remove=["approved", "x"]),
    )
    (issue,) = fake.issues(PCCR)
    assert [lb["name"] for lb in issue["labels"]] == ["pccr", "done"]


def test_comment_pccr_is_idempotent(fake: FakeGitHub, acts: GithubActivities) -> None:
    ref = run(acts.open_pccr_issue, pccr_input())
    comment = CommentInput(
        repo=PCCR, number=ref.number, body="Approved by <@U0GATE1>", marker="wf-1:pccr_review"
    )
    run(acts.comment_pccr, comment)
    run(acts.comment_pccr, comment)
    run(acts.comment_pccr, comment.model_copy(update={"marker": "wf-1:trigger", "body": "Triggered"}))
    (issue,) = fake.issues(PCCR)
    assert issue["comments"] == [
        "Approved by <@U0GATE1>\n\n<!-- deployctl:wf-1:pccr_review -->",
        "Triggered\n\n<!-- deployctl:wf-1:trigger -->",
    ]


def test_close_pccr_is_idempotent(fake: FakeGitHub, acts: GithubActivities) -> None:
    ref = run(acts.open_pccr_issue, pccr_input())
    run(acts.close_pccr, PrRefInput(repo=PCCR, number=ref.number))
    before = len(writes(fake))
    run(acts.close_pccr, PrRefInput(repo=PCCR, number=ref.number))
    assert len(writes(fake)) == before
    (issue,) = fake.issues(PCCR)
    assert issue["state"] == "closed"


def test_invalid_marker(fake: FakeGitHub, acts: GithubActivities) -> None:
    app_error(acts.open_pccr_issue, pccr_input(marker="a --> b"), "InvalidMarker", non_retryable=True)
    app_error(
        acts.comment_pccr, CommentInput(repo=PCCR, number=1, body="x", marker=""), "InvalidMarker", True
    )
    assert not fake.requests


# ---------------------------------------------------------------------------------------------------
# Failure classification


def test_bad_token_is_non_retryable(fake: FakeGitHub) -> None:
    acts = GithubActivities(fake.url, "ghp_wrong_token_123456", timeout=5)
    err = app_error(acts.pr_state, PrRefInput(repo=CONFIGS, number=1), "GithubAuth", non_retryable=True)
    assert "401" in str(err) and "ghp_wrong_token_123456" not in str(err)


def test_missing_repo_is_not_found(acts: GithubActivities) -> None:
    err = app_error(acts.open_version_pr, version_pr(repo="acme/nope"), "GithubNotFound", non_retryable=True)
    assert "acme/nope" in str(err)
    app_error(acts.pr_state, PrRefInput(repo=CONFIGS, number=99), "GithubNotFound", non_retryable=True)


def test_server_errors_on_reads_are_retried_briefly_then_retryable(
    fake: FakeGitHub, acts: GithubActivities
) -> None:
    # One 500 on a read is absorbed by the client's short retry…
    fake.fail_next(500, "GET", f"/repos/{CONFIGS}", times=1, after_effect=False)
    with pytest.raises(ApplicationError) as err:  # (PR #1 does not exist: the retry reached GitHub)
        run(acts.pr_state, PrRefInput(repo=CONFIGS, number=1))
    assert err.value.type == "GithubNotFound"
    assert [r[1] for r in fake.requests].count(f"/api/v3/repos/{CONFIGS}") == 2
    # …a read that keeps failing becomes a retryable failure for Temporal.
    fake.requests.clear()
    fake.fail_next(500, "GET", f"/repos/{CONFIGS}", times=10, after_effect=False)
    app_error(acts.pr_state, PrRefInput(repo=CONFIGS, number=1), "GithubUnavailable", non_retryable=False)
    assert [r[1] for r in fake.requests].count(f"/api/v3/repos/{CONFIGS}") == 4  # a try and three retries


def test_server_error_on_a_write_is_not_retried_by_the_client(
    fake: FakeGitHub, acts: GithubActivities
) -> None:
    fake.fail_next(500, "POST", f"/repos/{PCCR}/issues", after_effect=False)
    inp = OpenIssueInput(repo=PCCR, title="t", body="b", labels=[], marker="wf-500")
    app_error(acts.open_pccr_issue, inp, "GithubUnavailable", non_retryable=False)
    assert len([r for r in fake.requests if r[0] == "POST"]) == 1  # Temporal retries writes, after its checks


def test_rate_limit_is_retryable_with_a_delay(fake: FakeGitHub, acts: GithubActivities) -> None:
    fake.rate_limit_next(reset_in=42)
    err = app_error(
        acts.pr_state, PrRefInput(repo=CONFIGS, number=1), "GithubRateLimited", non_retryable=False
    )
    assert err.next_retry_delay is not None
    assert timedelta(seconds=35) <= err.next_retry_delay <= timedelta(seconds=44)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_honours_retry_after(
    fake: FakeGitHub, acts: GithubActivities, status: int
) -> None:
    fake.rate_limit_next(retry_after=7, status=status)
    err = app_error(
        acts.pr_state, PrRefInput(repo=CONFIGS, number=1), "GithubRateLimited", non_retryable=False
    )
    assert err.next_retry_delay == timedelta(seconds=7)


def test_other_forbidden_is_non_retryable(fake: FakeGitHub, acts: GithubActivities) -> None:
    fake.fail_next(
        403, "GET", "/repos/", after_effect=False, message="Resource not accessible by integration"
    )
    err = app_error(acts.pr_state, PrRefInput(repo=CONFIGS, number=1), "GithubForbidden", non_retryable=True)
    assert "Resource not accessible by integration" in str(err)


def test_unreachable_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    acts = GithubActivities(f"http://127.0.0.1:{port}/api/v3", TOKEN, timeout=2)
    started = time.monotonic()
    app_error(acts.pr_state, PrRefInput(repo=CONFIGS, number=1), "GithubUnreachable", non_retryable=False)
    assert time.monotonic() - started < 10
