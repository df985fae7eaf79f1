"""GitHub activities: the gov-cloud version PR in the configs repo (open, read, merge, close) and the PCCR
as a GitHub issue (open, comment, labels, close).

`GithubActivities` is built once by the worker and holds one PyGithub client per worker thread. Every
activity is a sync `def` run by the worker's thread pool, takes one model and returns one model (or
None). Each one is idempotent, so a retry after a failure at any point does the effect once:
- `open_version_pr` reuses an open (or merged) PR for its branch, an existing branch (422 "Reference
  already exists"), a file that already carries the version (no second commit), and a PR opened by an
  attempt whose answer was lost (422 "A pull request already exists"). A stale file sha (409) is re-read
  and retried within the activity.
- `merge_pr` on a PR that is already merged answers `already_merged`; GitHub refusing the merge (405 not
  mergeable / missing reviews, 409 head moved, 422) is an answer (`refused_reason`, with the PR's head as
  GitHub shows it then), not an exception. Given `sha` (the head the SRE was shown), GitHub merges that
  commit or refuses (409 "Head branch was modified. Review and try the merge again.").
- `pr_diff` reads the PR's head and its files' patches (`GET pulls/n/files`) at that head: a read only.
- `close_pr`, `close_pccr` do nothing for what is already closed; the PCCR issue and its comments carry
  an HTML-comment marker (`<!-- deployctl:MARKER -->`) by which a retry finds them.

The client is configured so that failures surface here instead of being hidden by PyGithub: no
throttling, and retries only for connections that could not be opened (nothing was sent). Temporal's
retry policy does the rest. Failures are classified where they happen:
- 401 → non-retryable `GithubAuth`; 404 → non-retryable `GithubNotFound`.
- 403/429 with a rate limit (`X-RateLimit-Remaining: 0`, "rate limit" in the message, or 429) →
  retryable `GithubRateLimited` with `next_retry_delay` from `Retry-After` or `X-RateLimit-Reset`;
  other 403 → non-retryable `GithubForbidden`.
- other 4xx (422 validation errors included) → non-retryable `GithubRejected`.
- 5xx → retryable `GithubUnavailable`; connection errors and timeouts → retryable `GithubUnreachable`.
`watch_pr` is the exception: a rate limit slows it down instead of failing it (it waits what GitHub asks
and polls again), and it polls one request a minute once its first minute is over (`activities.budget`).
Messages name the API URL and the repository, never the token: every message built from a client's
error, and GitHub's reason for refusing a merge, is scrubbed (`activities.common.scrub`) of the token
(plain or URL-quoted) and of any URL's user name and password.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import requests
from github import Auth, Github, GithubException
from github.PullRequest import PullRequest
from github.Repository import Repository
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError
from urllib3.util.retry import Retry

from activities.budget import GITHUB_CAP, TIGHT_FOR, Pacer, PollSchedule
from activities.common import heartbeat, heartbeating, scrub, scrubbed
from workflows.models import (
    CommentInput,
    IssueRef,
    LabelsInput,
    MergePrInput,
    MergePrResult,
    OpenIssueInput,
    OpenVersionPrInput,
    PrDiff,
    PrDiffInput,
    PrRefInput,
    VersionPr,
    WatchPrInput,
)
from workflows.options import GITHUB_RATE_LIMITED, RATE_LIMIT_WAIT
from workflows.policy import PLAIN_VERSION

T = TypeVar("T")

#: Colors of the PCCR state labels, created when missing. Other labels get DEFAULT_LABEL_COLOR.
LABEL_COLORS = {
    "pccr": "5319e7",
    "pending-review": "fbca04",
    "approved": "0e8a16",
    "accepted-for-release": "1d76db",
    "done": "6f42c1",
    "rejected": "b60205",
    "cancelled": "6a737d",
    "expired": "d4c5f9",
}
DEFAULT_LABEL_COLOR = "c5def5"

#: Versions written to the version file: the policy's plain versions (checked again here, with fullmatch).
_VERSION = PLAIN_VERSION
_LINE_BREAK = re.compile(r"(\r\n|\n|\r)")
_VERSION_LINE = re.compile(
    r"""^(?P<indent>[ \t]*)(?P<key>version|"version"|'version')(?P<colon>[ \t]*:)(?P<space>[ \t]*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|(?:[^\s#][^#]*?)?)(?P<rest>[ \t]*(?:\#.*)?)$"""
)
_STALE_SHA_ATTEMPTS = 5
_RATE_LIMIT_MAX_DELAY = timedelta(hours=1)
#: Below this share of `X-RateLimit-Limit` left, the watcher spreads what is left until the reset.
RATE_LOW = 0.10


# ---------------------------------------------------------------------------------------------------
# Pure helpers (unit-testable, no I/O)


class NoVersionLine(ValueError):
    pass


@dataclass(frozen=True)
class VersionEdit:
    text: str  # the new file content
    old: str  # the version found (unquoted)
    changed: bool


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    return value


def set_version(text: str, version: str) -> VersionEdit:
    """`text` with the value of its `version:` line replaced by `version`, every other character kept:
    other lines, comments, line endings, the line's indentation, spacing, quoting and trailing comment.

    The line is the top-level `version:` key (no indentation); without one, the only `version:` line of
    the file. None, or several indented ones and no top-level one → `NoVersionLine`.
    """
    parts = _LINE_BREAK.split(text)  # lines at even indexes, their line breaks at odd ones
    found = [(i, m) for i in range(0, len(parts), 2) if (m := _VERSION_LINE.match(parts[i]))]
    top = [(i, m) for i, m in found if not m.group("indent")]
    if top:
        index, m = top[0]
    elif len(found) == 1:
        index, m = found[0]
    elif found:
        raise NoVersionLine(f"no top-level `version:` line and {len(found)} indented ones")
    else:
        raise NoVersionLine("no `version:` line")
    value = m.group("value")
    old = _unquote(value)
    if value.startswith('"'):
        new_value = f'"{version}"'
    elif value.startswith("'"):
        new_value = f"'{version}'"
    else:
        new_value = version
    space = m.group("space") or " "
    rest = m.group("rest")
    if not value and rest.startswith("#"):
        rest = " " + rest
    parts[index] = f"{m.group('indent')}{m.group('key')}{m.group('colon')}{space}{new_value}{rest}"
    new_text = "".join(parts)
    changed = old != version
    return VersionEdit(text=new_text if changed else text, old=old, changed=changed)


def marker_token(marker: str) -> str:
    """The hidden marker put in PCCR issue and comment bodies (an HTML comment GitHub does not render)."""
    return f"<!-- deployctl:{marker} -->"


def with_marker(body: str, marker: str) -> str:
    token = marker_token(marker)
    if token in body:
        return body
    return f"{body.rstrip()}\n\n{token}" if body.strip() else token


def github_message(exc: GithubException) -> str:
    """GitHub's message, with the `errors[].message` of a 422 appended."""
    data = exc.data if isinstance(exc.data, dict) else {}
    message = str(data.get("message") or exc.message or "")
    details = [
        str(e.get("message") or f"{e.get('resource', '')}.{e.get('field', '')} {e.get('code', '')}".strip())
        for e in data.get("errors") or []
        if isinstance(e, dict)
    ]
    return ": ".join([message, "; ".join(details)]) if details else message


def pr_diff_sha256(head_sha: str, text: str) -> str:
    """What the SRE's merge binds to (SPEC §10): the hex sha256 of the head commit's sha, a newline, and
    the PR's whole diff text (UTF-8). The head is in it so that two heads with the same diff text (a rebase
    that changes nothing, a binary file GitHub gives no patch for) are not the same review."""
    return hashlib.sha256(f"{head_sha}\n{text}".encode()).hexdigest()


def diff_text(files: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """A PR's diff as GitHub's "List pull request files" gives it: per file a `--- a/old` / `+++ b/new`
    header, then GitHub's `patch` (the hunks). A file without a patch (binary, or too large for GitHub
    to include) is said so in its place; those files are also returned."""
    out: list[str] = []
    no_patch: list[str] = []
    for f in files:
        name, status = str(f.get("filename") or "?"), str(f.get("status") or "modified")
        old = str(f.get("previous_filename") or name)
        out.append(f"--- {'/dev/null' if status == 'added' else 'a/' + old}")
        out.append(f"+++ {'/dev/null' if status == 'removed' else 'b/' + name}")
        patch = f.get("patch")
        if patch:
            out.append(str(patch).rstrip("\n"))
        elif status == "renamed" and not f.get("changes"):
            out.append(f"(renamed from {old}; content unchanged)")
        else:
            no_patch.append(name)
            out.append(
                f"(GitHub shows no patch for {name}: binary or too large; "
                f"+{f.get('additions') or 0} -{f.get('deletions') or 0} lines)"
            )
    return "\n".join(out), no_patch


def rate_limit_delay(headers: dict[str, Any], now: float | None = None) -> timedelta | None:
    """How long to wait before retrying, from `Retry-After` or `X-RateLimit-Reset` (bounded to an hour)."""
    h = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    delay: timedelta | None = None
    if h.get("retry-after", "").isdigit():
        delay = timedelta(seconds=max(1, int(h["retry-after"])))
    elif h.get("x-ratelimit-remaining") == "0" and h.get("x-ratelimit-reset", "").isdigit():
        wait = int(h["x-ratelimit-reset"]) - (time.time() if now is None else now)
        delay = timedelta(seconds=max(1, int(wait) + 1))
    return min(delay, _RATE_LIMIT_MAX_DELAY) if delay is not None else None


def rate_limit_spread(remaining: int, limit: int, reset: float, now: float, low: float = RATE_LOW) -> float:
    """The pause (seconds) that spreads the requests left in GitHub's window until it resets, once fewer than
    `low` of the limit are left (`X-RateLimit-Remaining` < `low` × `X-RateLimit-Limit`); 0 while enough
    are left, or when GitHub sent no rate-limit headers (`limit` ≤ 0). The caller bounds it by the
    notice rule: a watcher then polls once a minute, which spends at most 60 of the hour's requests."""
    if limit <= 0 or remaining < 0 or remaining >= low * limit:
        return 0.0
    return max(0.0, reset - now) / max(1, remaining)


def _is_rate_limited(status: int, headers: dict[str, Any], message: str) -> bool:
    h = {str(k).lower(): str(v).strip() for k, v in headers.items()}
    if status == 429:
        return True
    return status == 403 and (
        h.get("x-ratelimit-remaining") == "0" or "rate limit" in message.lower() or "retry-after" in h
    )


def connection_retry() -> Retry:
    """urllib3 retries: connections that could not be opened, and reads (GET) that met a 5xx, a few times
    with a short backoff, so a flaky GitHub does not send every read back through Temporal's growing
    backoff. A write that reached GitHub is never repeated here (Temporal retries it, after its checks)."""
    return Retry(
        total=3,
        connect=2,
        read=0,
        redirect=0,
        status=3,
        other=0,
        allowed_methods=frozenset({"GET", "HEAD"}),
        status_forcelist=(500, 502, 503, 504),
        backoff_factor=0.2,
        raise_on_status=False,
        respect_retry_after_header=False,
    )


# ---------------------------------------------------------------------------------------------------
# The activities


class GithubActivities:
    def __init__(
        self,
        api_url: str,
        token: str,
        timeout: int = 10,
        *,
        branch_prefix: str = "deployctl/",
        issue_scan_limit: int = 300,
        watch_interval: float = 15.0,
        watch_cap: float = GITHUB_CAP,
        tight_for: float = TIGHT_FOR,
    ) -> None:
        """`watch_interval` is `watch_pr`'s pause in the first `tight_for` seconds of a watch; after that it
        pauses `watch_cap` seconds per request (`activities.budget`: 1 request a minute)."""
        self.api_url = api_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.branch_prefix = branch_prefix
        self.watch_interval = watch_interval
        self.watch_cap = watch_cap
        self.tight_for = tight_for
        self.issue_scan_limit = issue_scan_limit
        self._local = threading.local()
        self._labels_lock = threading.Lock()
        self._known_labels: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"GithubActivities(api_url={scrub(self.api_url)!r})"

    def signing_keys(self, login: str) -> list[str]:
        """The public SSH signing keys GitHub lists for `login` (GET /users/{login}/ssh_signing_keys)."""
        _, data = self._call(
            f"reading the SSH signing keys of {login}",
            lambda: self._client().requester.requestJsonAndCheck(
                "GET", f"/users/{login}/ssh_signing_keys", parameters={"per_page": 100}
            ),
        )
        return [str(item["key"]).strip() for item in data or [] if isinstance(item, dict) and item.get("key")]

    # -- plumbing ----------------------------------------------------------------------------------

    def _client(self) -> Github:
        client = getattr(self._local, "client", None)
        if client is None:
            client = Github(
                auth=Auth.Token(self._token),
                base_url=self.api_url,
                timeout=self.timeout,
                retry=connection_retry(),
                seconds_between_requests=None,
                seconds_between_writes=None,
                per_page=100,
                user_agent="deployctl",
            )
            self._local.client = client
        return client

    def _lazy_client(self) -> Github:
        """This thread's client, but objects it hands out are lazy: `get_repo` sends nothing."""
        client = getattr(self._local, "lazy_client", None)
        if client is None:
            client = self._client().withLazy(True)
            self._local.lazy_client = client
        return client

    def _scrub(self, text: str) -> str:
        """`text` without our token and without any URL's user name and password."""
        return scrub(text, (self._token,))

    def _failure(self, exc: BaseException, what: str) -> BaseException:
        """Turn whatever the client raised into a classified ApplicationError (see module docstring),
        its message scrubbed of our token and of any URL's credentials (it reaches the history)."""
        return scrubbed(self._classify(exc, what), (self._token,))

    def _classify(self, exc: BaseException, what: str) -> BaseException:
        if isinstance(exc, ApplicationError | CancelledError):
            return exc
        where = f"GitHub at {self.api_url}"
        if isinstance(exc, GithubException):
            status = exc.status
            message = self._scrub(github_message(exc))[:500]
            headers = dict(exc.headers or {})
            if status == 401:
                return ApplicationError(
                    f"{what}: {where} rejected the token (HTTP 401: {message}). Check that GITHUB_TOKEN is "
                    "a valid token with access to the repository.",
                    type="GithubAuth",
                    non_retryable=True,
                )
            if _is_rate_limited(status, headers, message):
                delay = rate_limit_delay(headers) or RATE_LIMIT_WAIT
                return ApplicationError(
                    f"{what}: {where} is rate limiting (HTTP {status}: {message}); retrying in {delay}",
                    type=GITHUB_RATE_LIMITED,
                    next_retry_delay=delay,
                )
            if status == 403:
                return ApplicationError(
                    f"{what}: {where} refused it (HTTP 403: {message}). Check the token's permissions.",
                    type="GithubForbidden",
                    non_retryable=True,
                )
            if status == 404:
                return ApplicationError(
                    f"{what}: not found on {where} (HTTP 404: {message}); the repository may not exist or "
                    "the token may not see it",
                    type="GithubNotFound",
                    non_retryable=True,
                )
            if 400 <= status < 500:
                return ApplicationError(
                    f"{what}: {where} rejected the request (HTTP {status}: {message})",
                    type="GithubRejected",
                    non_retryable=True,
                )
            return ApplicationError(
                f"{what}: {where} answered HTTP {status}: {message}", type="GithubUnavailable"
            )
        if isinstance(exc, requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError):
            return ApplicationError(
                f"{what}: {where} is unreachable: {type(exc).__name__}: {self._scrub(str(exc))[:300]}",
                type="GithubUnreachable",
            )
        return ApplicationError(
            f"{what}: {type(exc).__name__}: {self._scrub(str(exc))[:300]}", type="GithubError"
        )

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            failure = self._failure(exc, what)
            if failure is exc:
                raise
            raise failure from None

    def _repo(self, name: str) -> Repository:
        return self._call(f"reading repository {name}", lambda: self._client().get_repo(name))

    def _version_pr(self, pr: PullRequest, reused: bool = False) -> VersionPr:
        return VersionPr(
            number=pr.number,
            url=pr.html_url,
            head_sha=pr.head.sha,
            branch=pr.head.ref,
            base_branch=pr.base.ref,
            state=pr.state,
            merged=bool(pr.merged),
            reused=reused,
            mergeable=pr.mergeable,
            mergeable_state=pr.mergeable_state,
            merged_by=pr.merged_by.login if pr.merged_by is not None else None,
            merge_commit_sha=pr.merge_commit_sha,
        )

    def _find_pr(self, repo: Repository, branch: str, base: str, what: str) -> PullRequest | None:
        """The PR from `branch` into `base`: an open one, else a merged one, else None. Read in full."""

        def find() -> PullRequest | None:
            pulls = list(repo.get_pulls(state="all", head=f"{repo.owner.login}:{branch}", base=base))
            numbers = [p.number for p in pulls if p.state == "open"]
            if not numbers:
                # The list lacks `merged`; merged PRs have a `merged_at`.
                numbers = [p.number for p in pulls if p.merged_at is not None]
            return repo.get_pull(min(numbers)) if numbers else None

        return self._call(what, find)

    # -- the version PR ----------------------------------------------------------------------------

    @activity.defn
    def open_version_pr(self, inp: OpenVersionPrInput) -> VersionPr:
        """Branch `inp.branch` off `inp.base_branch`, set `version:` in `inp.path` on it, open the PR."""
        if not _VERSION.fullmatch(inp.version):
            raise ApplicationError(
                f"version {inp.version!r} is not a plain version (letters, digits, . _ + -)",
                type="InvalidVersion",
                non_retryable=True,
            )
        if inp.branch == inp.base_branch:
            raise ApplicationError(
                f"the PR branch must differ from the base branch {inp.base_branch!r}",
                type="InvalidBranch",
                non_retryable=True,
            )
        where = f"{inp.repo}@{inp.branch}"
        repo = self._repo(inp.repo)

        existing = self._find_pr(repo, inp.branch, inp.base_branch, f"looking for a PR from {where}")
        if existing is not None:
            activity.logger.info("Reusing PR #%s of %s (%s)", existing.number, inp.repo, existing.state)
            return self._version_pr(existing, reused=True)

        base_sha = self._call(
            f"reading the head of {inp.base_branch} in {inp.repo}",
            lambda: repo.get_git_ref(f"heads/{inp.base_branch}").object.sha,
        )
        try:
            repo.create_git_ref(f"refs/heads/{inp.branch}", base_sha)
            activity.logger.info("Created branch %s from %s", where, base_sha)
        except GithubException as exc:
            if not (exc.status == 422 and "already exists" in github_message(exc).lower()):
                raise self._failure(exc, f"creating branch {where}") from None
            activity.logger.info("Branch %s already exists: reusing it", where)
        except Exception as exc:
            raise self._failure(exc, f"creating branch {where}") from None

        self._commit_version(repo, inp, where)

        what = f"opening a PR from {where} into {inp.base_branch}"
        try:
            pr = repo.create_pull(base=inp.base_branch, head=inp.branch, title=inp.title, body=inp.body)
            activity.logger.info("Opened PR #%s in %s", pr.number, inp.repo)
            return self._version_pr(pr)
        except GithubException as exc:
            message = self._scrub(github_message(exc))
            if exc.status == 422 and "already exists" in message.lower():
                found = self._find_pr(repo, inp.branch, inp.base_branch, what)
                if found is not None:
                    return self._version_pr(found, reused=True)
            if exc.status == 422 and "no commits between" in message.lower():
                raise ApplicationError(
                    f"{what}: {inp.path} on {inp.base_branch} of {inp.repo} already has version "
                    f"{inp.version}; there is nothing to change ({message})",
                    type="VersionAlreadySet",
                    non_retryable=True,
                ) from None
            raise self._failure(exc, what) from None
        except Exception as exc:
            raise self._failure(exc, what) from None

    def _commit_version(self, repo: Repository, inp: OpenVersionPrInput, where: str) -> None:
        """Commit the version change on the branch unless the file there already has it."""
        what = f"reading {inp.path} on {where}"
        for _ in range(_STALE_SHA_ATTEMPTS):
            content = self._call(what, lambda: repo.get_contents(inp.path, ref=inp.branch))
            if isinstance(content, list):
                raise ApplicationError(
                    f"{what}: {inp.path} is a directory, not a file",
                    type="GithubNotFound",
                    non_retryable=True,
                )
            try:
                text = content.decoded_content.decode("utf-8")
            except (UnicodeDecodeError, AssertionError) as exc:
                raise ApplicationError(
                    f"{what}: not a UTF-8 text file ({type(exc).__name__})",
                    type="NoVersionLine",
                    non_retryable=True,
                ) from None
            try:
                edit = set_version(text, inp.version)
            except NoVersionLine as exc:
                raise ApplicationError(
                    f"{inp.path} in {inp.repo} has no line to set the version on ({exc}); expected `version: X`",
                    type="NoVersionLine",
                    non_retryable=True,
                ) from None
            if not edit.changed:
                activity.logger.info("%s on %s already has version %s", inp.path, where, inp.version)
                return
            try:
                repo.update_file(
                    content.path, inp.commit_message or inp.title, edit.text, content.sha, branch=inp.branch
                )
                activity.logger.info(
                    "Committed %s: version %s → %s on %s", inp.path, edit.old, inp.version, where
                )
                return
            except GithubException as exc:
                if exc.status != 409:
                    raise self._failure(exc, f"committing {inp.path} on {where}") from None
                activity.logger.info("%s changed on %s while we edited it: reading it again", inp.path, where)
            except Exception as exc:
                raise self._failure(exc, f"committing {inp.path} on {where}") from None
        raise ApplicationError(
            f"committing {inp.path} on {where}: the file kept changing (HTTP 409 {_STALE_SHA_ATTEMPTS} times)",
            type="GithubConflict",
        )

    @activity.defn
    def pr_state(self, inp: PrRefInput) -> VersionPr:
        repo = self._repo(inp.repo)
        pr = self._call(f"reading PR #{inp.number} of {inp.repo}", lambda: repo.get_pull(inp.number))
        return self._version_pr(pr)

    @activity.defn
    def pr_diff(self, inp: PrDiffInput) -> PrDiff:
        """The PR's head and the diff at that head, as the SRE is shown it before merging (SPEC §10).

        The head is read before and after the files: if it moved in between, all is read again, so the
        diff returned is the diff of `head_sha`."""
        what = f"reading the diff of PR #{inp.number} of {inp.repo}"
        repo = self._repo(inp.repo)
        for _ in range(_STALE_SHA_ATTEMPTS):
            pr = self._call(what, lambda: repo.get_pull(inp.number))
            head = pr.head.sha
            files = self._call(what, lambda: self._files(pr))  # noqa: B023 (called at once)
            again = self._call(what, lambda: repo.get_pull(inp.number)).head.sha
            if again != head:
                activity.logger.info("PR #%s moved from %s to %s while we read it", inp.number, head, again)
                continue
            text, no_patch = diff_text(files)
            return PrDiff(
                head_sha=head,
                diff=text[: max(inp.limit, 0)],
                chars=len(text),
                files=len(files),
                changed_files=max(pr.changed_files or 0, len(files)),
                no_patch=no_patch[:50],
                files_url=f"{pr.html_url}/files",
                diff_sha256=pr_diff_sha256(head, text),
            )
        raise ApplicationError(
            f"{what}: its head kept moving while it was read ({_STALE_SHA_ATTEMPTS} times)",
            type="GithubConflict",
        )

    @staticmethod
    def _files(pr: PullRequest) -> list[dict[str, Any]]:
        return [
            {
                "filename": f.filename,
                "previous_filename": f.previous_filename,
                "status": f.status,
                "patch": f.patch,
                "additions": f.additions,
                "deletions": f.deletions,
                "changes": f.changes,
            }
            for f in pr.get_files()
        ]

    @activity.defn(no_thread_cancel_exception=True)
    def watch_pr(self, inp: WatchPrInput) -> VersionPr:
        """Return once the PR is no longer open (merged or closed directly on GitHub).

        One request a poll (`GET pulls/n`; the repository is not read), paced by `activities.budget`:
        every `watch_interval` seconds for the first `tight_for`, then every `watch_cap` (60 s), so a
        merge on GitHub is seen within a minute at one request a minute. When GitHub's
        `X-RateLimit-Remaining` falls below RATE_LOW of `X-RateLimit-Limit`, the pause spreads what is left
        until `X-RateLimit-Reset` (`rate_limit_spread`), still within the minute. A rate limit (primary or
        secondary, 403/429) does not fail the watch: it waits what GitHub asks (`Retry-After`, else until
        `X-RateLimit-Reset`, else a minute, doubling while GitHub keeps refusing without saying how long)
        and polls again.

        With webhooks configured the workflow passes `poll_cap` (300 s) and the polls after the first
        minute are that far apart (`PollSchedule.stretched`): the webhook brings the news, and the
        workflow restarts this watcher on it, so its first read is the one that matters.

        The workflow cancels it when the SRE merges through deployctl, and the cancellation is noticed
        between polls. It runs under a heartbeat timeout shorter than the pauses, so it heartbeats
        throughout: while it waits (`Pacer`, through `sleep_unless_cancelled`) and while a read of the PR
        waits for GitHub (`heartbeating`)."""
        what = f"watching PR #{inp.number} of {inp.repo}"
        schedule = PollSchedule(first=self.watch_interval, cap=self.watch_cap, tight_for=self.tight_for)
        pacer = Pacer(schedule.stretched(inp.poll_cap))  # webhooks configured: polls are the fallback
        client = self._lazy_client()
        repo = client.get_repo(inp.repo)  # lazy: no request, only `GET pulls/n` is polled
        limited = 0  # polls in a row GitHub refused for its rate limit
        while True:
            try:
                with heartbeating():  # (lazy: the PR is read when its fields are, inside the call)
                    state = self._call(what, lambda: self._version_pr(repo.get_pull(inp.number)))
            except ApplicationError as err:
                if err.type != GITHUB_RATE_LIMITED:
                    raise
                limited += 1
                delay = err.next_retry_delay or RATE_LIMIT_WAIT
                if delay == RATE_LIMIT_WAIT:  # GitHub said nothing: wait longer each time it refuses
                    delay = min(delay * 2 ** min(limited - 1, 6), _RATE_LIMIT_MAX_DELAY)
                activity.logger.info("%s: GitHub is rate limiting; polling again in %s", what, delay)
                heartbeat({"number": inp.number, "rate_limited": limited})
                pacer.wait(1, at_least=delay.total_seconds(), beyond_gap=True)
                continue
            limited = 0
            if state.merged or state.state != "open":
                return state
            heartbeat({"number": inp.number})
            remaining, limit = client.requester.rate_limiting  # from the last answer's X-RateLimit-* headers
            reset = client.requester.rate_limiting_resettime
            pacer.wait(1, at_least=rate_limit_spread(remaining, limit, reset, time.time()))

    @activity.defn
    def merge_pr(self, inp: MergePrInput) -> MergePrResult:
        """Merge through the API. Already merged → `already_merged`; refused → `refused_reason`."""
        what = f"merging PR #{inp.number} of {inp.repo}"
        repo = self._repo(inp.repo)
        pr = self._call(what, lambda: repo.get_pull(inp.number))
        if pr.merged:
            return self._already_merged(pr)
        if pr.state != "open":
            return MergePrResult(
                merged=False, refused_reason=f"pull request #{inp.number} is closed", head_sha=pr.head.sha
            )
        kwargs: dict[str, Any] = {"merge_method": inp.method}
        if inp.sha:
            kwargs["sha"] = inp.sha
        if inp.title:
            kwargs["commit_title"] = inp.title
        try:
            status = pr.merge(**kwargs)
        except GithubException as exc:
            if exc.status not in (405, 409, 422):
                raise self._failure(exc, what) from None
            reason = self._scrub(github_message(exc)) or f"HTTP {exc.status}"
            again = self._call(what, lambda: repo.get_pull(inp.number))
            if again.merged:
                return self._already_merged(again)
            activity.logger.info("GitHub refused %s: %s", what, reason)
            return MergePrResult(merged=False, refused_reason=reason, head_sha=again.head.sha)
        except Exception as exc:
            raise self._failure(exc, what) from None
        if not status.merged:
            return MergePrResult(
                merged=False,
                refused_reason=self._scrub(status.message or "") or "GitHub did not merge it",
                head_sha=pr.head.sha,
            )
        activity.logger.info("Merged PR #%s of %s: %s", inp.number, inp.repo, status.sha)
        return MergePrResult(merged=True, sha=status.sha)

    @staticmethod
    def _already_merged(pr: PullRequest) -> MergePrResult:
        return MergePrResult(
            merged=True,
            already_merged=True,
            sha=pr.merge_commit_sha,
            merged_by=pr.merged_by.login if pr.merged_by is not None else None,
        )

    @activity.defn
    def close_pr(self, inp: PrRefInput) -> VersionPr:
        """Close the PR if it is open, then delete its branch if it is ours (this repo, our prefix)."""
        what = f"closing PR #{inp.number} of {inp.repo}"
        repo = self._repo(inp.repo)
        pr = self._call(what, lambda: repo.get_pull(inp.number))
        if pr.state == "open":
            self._call(what, lambda: pr.edit(state="closed"))
            pr = self._call(what, lambda: repo.get_pull(inp.number))
            activity.logger.info("Closed PR #%s of %s", inp.number, inp.repo)
        head_repo = pr.head.repo
        ours = (
            head_repo is not None
            and head_repo.full_name.lower() == repo.full_name.lower()
            and pr.head.ref.startswith(self.branch_prefix)
            and pr.head.ref != repo.default_branch
        )
        if ours and pr.state != "open":
            self._delete_branch(repo, pr.head.ref)
        return self._version_pr(pr)

    def _delete_branch(self, repo: Repository, branch: str) -> None:
        try:
            ref = repo.get_git_ref(f"heads/{branch}")
            ref.complete()  # its `url` becomes GitHub's `…/git/refs/heads/…`, the path DELETE is documented on
            ref.delete()
            activity.logger.info("Deleted branch %s of %s", branch, repo.full_name)
        except GithubException as exc:
            if exc.status not in (404, 422):
                raise self._failure(exc, f"deleting branch {branch} of {repo.full_name}") from None
        except Exception as exc:
            raise self._failure(exc, f"deleting branch {branch} of {repo.full_name}") from None

    # -- the PCCR as an issue ----------------------------------------------------------------------

    @staticmethod
    def _check_marker(marker: str) -> None:
        if not marker.strip() or "-->" in marker or "--!>" in marker or "\n" in marker or "\r" in marker:
            raise ApplicationError(
                f"marker {marker!r} must be a non-empty single line that cannot end an HTML comment",
                type="InvalidMarker",
                non_retryable=True,
            )

    def _issue_ref(self, issue: Any, reused: bool = False) -> IssueRef:
        return IssueRef(
            number=issue.number,
            url=issue.html_url,
            state=issue.state,
            reused=reused,
            labels=[lb.name for lb in issue.labels],
        )

    def _ensure_labels(self, repo: Repository, names: list[str]) -> None:
        """Create the labels missing in the repo, with the PCCR colors (GitHub would create them grey)."""
        key = repo.full_name.lower()
        with self._labels_lock:
            known = set(self._known_labels.get(key, set()))
        missing = [n for n in dict.fromkeys(names) if n.lower() not in known]
        if not missing:
            return
        what = f"reading the labels of {repo.full_name}"
        known |= self._call(what, lambda: {lb.name.lower() for lb in repo.get_labels()})
        for name in missing:
            if name.lower() in known:
                continue
            color = LABEL_COLORS.get(name.lower(), DEFAULT_LABEL_COLOR)
            try:
                repo.create_label(name, color, "deployctl PCCR state")
                activity.logger.info("Created label %r in %s", name, repo.full_name)
            except GithubException as exc:
                if exc.status != 422 or "already_exists" not in str(exc.data):
                    raise self._failure(exc, f"creating label {name!r} in {repo.full_name}") from None
            except Exception as exc:
                raise self._failure(exc, f"creating label {name!r} in {repo.full_name}") from None
            known.add(name.lower())
        with self._labels_lock:
            self._known_labels[key] = known

    @activity.defn
    def open_pccr_issue(self, inp: OpenIssueInput) -> IssueRef:
        """Open the PCCR issue, or return the one whose body carries `inp.marker` (newest issues first)."""
        self._check_marker(inp.marker)
        token = marker_token(inp.marker)
        repo = self._repo(inp.repo)

        def find() -> Any:
            for n, issue in enumerate(repo.get_issues(state="all", sort="created", direction="desc")):
                if n >= self.issue_scan_limit:
                    return None
                if "/pull/" not in (issue.html_url or "") and token in (issue.body or ""):
                    return issue
            return None

        found = self._call(f"looking for the PCCR issue {inp.marker} in {inp.repo}", find)
        if found is not None:
            activity.logger.info("Reusing PCCR issue #%s of %s", found.number, inp.repo)
            return self._issue_ref(found, reused=True)
        self._ensure_labels(repo, inp.labels)
        issue = self._call(
            f"opening the PCCR issue in {inp.repo}",
            lambda: repo.create_issue(
                title=inp.title, body=with_marker(inp.body, inp.marker), labels=inp.labels
            ),
        )
        activity.logger.info("Opened PCCR issue #%s of %s", issue.number, inp.repo)
        return self._issue_ref(issue)

    @activity.defn
    def comment_pccr(self, inp: CommentInput) -> None:
        """Comment on the issue unless a comment carrying `inp.marker` is already there."""
        self._check_marker(inp.marker)
        token = marker_token(inp.marker)
        what = f"commenting on issue #{inp.number} of {inp.repo}"
        repo = self._repo(inp.repo)
        issue = self._call(what, lambda: repo.get_issue(inp.number))
        if self._call(what, lambda: any(token in (c.body or "") for c in issue.get_comments())):
            activity.logger.info("Comment %s is already on issue #%s of %s", inp.marker, inp.number, inp.repo)
            return
        self._call(what, lambda: issue.create_comment(with_marker(inp.body, inp.marker)))

    @activity.defn
    def set_pccr_labels(self, inp: LabelsInput) -> None:
        """Add `inp.labels` and take off `inp.remove` (a label in both stays); other labels are kept."""
        what = f"setting the labels of issue #{inp.number} of {inp.repo}"
        repo = self._repo(inp.repo)
        issue = self._call(what, lambda: repo.get_issue(inp.number))
        current = [lb.name for lb in issue.labels]
        have = {n.lower() for n in current}
        wanted = {n.lower() for n in inp.labels}
        to_add = [n for n in dict.fromkeys(inp.labels) if n.lower() not in have]
        dropped = {n.lower() for n in inp.remove} - wanted
        to_remove = [n for n in current if n.lower() in dropped]
        if to_add:
            self._ensure_labels(repo, to_add)
            self._call(what, lambda: issue.add_to_labels(*to_add))
        for name in to_remove:
            try:
                issue.remove_from_labels(name)
            except GithubException as exc:
                if exc.status != 404:  # 404 "Label does not exist": someone took it off already
                    raise self._failure(exc, what) from None
            except Exception as exc:
                raise self._failure(exc, what) from None
        if to_add or to_remove:
            activity.logger.info("Issue #%s of %s: +%s -%s", inp.number, inp.repo, to_add, to_remove)

    @activity.defn
    def close_pccr(self, inp: PrRefInput) -> None:
        what = f"closing issue #{inp.number} of {inp.repo}"
        repo = self._repo(inp.repo)
        issue = self._call(what, lambda: repo.get_issue(inp.number))
        if issue.state == "open":
            self._call(what, lambda: issue.edit(state="closed"))
            activity.logger.info("Closed issue #%s of %s", inp.number, inp.repo)
