"""A stateful fake GitHub: a real HTTP server on 127.0.0.1 that speaks the parts of GitHub's REST API
(v3, GitHub Enterprise style under `/api/v3`) that deployctl and PyGithub use (see
/work/shared/INTEGRATIONS.md §2).

State per repository: branches (ref → commit sha), commits (files, parents), pull requests, issues (PRs
and issues share one number sequence, as on GitHub), comments and labels. Blob shas are real git blob
shas of the content; commit shas are unique made-up hex.

What it answers like GitHub does (checked against GitHub's docs and reported client behaviour):
- Auth: `Authorization: token X` or `Bearer X`. A wrong token → 401 "Bad credentials"; none → 401
  "Requires authentication". Every response carries the `X-RateLimit-*` headers (`Limit`, `Remaining`
  after this request, `Reset` of a fixed hour window that starts again once passed, `Used`, `Resource`);
  `set_rate_limit` sets them up. `rate_limit_next` answers the next K requests with a primary limit (403
  or 429, `X-RateLimit-Remaining: 0`) or, given `retry_after`, a secondary one (403 or 429, "You have
  exceeded a secondary rate limit", `Retry-After`), as GitHub's "Rate limits for the REST API" describes.
- Every absolute `url` points at this server under `/api/v3` (PyGithub asserts the host, port and
  prefix); `html_url`s point at the same host without the prefix, like GitHub Enterprise.
- `POST git/refs` for an existing ref → 422 "Reference already exists"; `DELETE git/refs/heads/b` for a
  missing one → 422 "Reference does not exist". DELETE is only routed on the plural `git/refs/` path.
- `PUT contents/p` with a stale blob sha → 409 "p does not match SHA"; without a sha for an existing
  file → 422; on a missing branch → 404.
- `POST pulls` for a head that already has an open PR → 422 "A pull request already exists for
  owner:branch."; with no commits between base and head → 422 "No commits between base and head".
- `PUT pulls/n/merge`: merged already → 405 "Pull Request is not mergeable"; closed → 422 "Pull
  Request is not mergeable" (status as the brief asked; GitHub's docs only list 405/409/422); `sha`
  given and ≠ head → 409 "Head branch was modified. Review and try the merge again."; conflicts (or
  `set_mergeable(False)`) → 405 "Pull Request is not mergeable"; missing required approvals → 405 "At
  least N approving review(s) ... required by reviewers with write access.".
- `GET pulls/n/files` lists the files the PR changes (head against its merge base with the base
  branch, as GitHub's three-dot diff does), paginated, each with `filename`, `status`
  (added/removed/modified), `additions`, `deletions`, `changes`, `blob_url`, `raw_url`, `contents_url`
  and `patch`: the unified-diff hunks from the first `@@` on, without the `diff --git`/`---`/`+++`
  header. A binary file (a NUL byte, or not UTF-8) has no `patch`, as on GitHub; so does a file named
  with `omit_patch` (GitHub leaves out patches that are too large). At most 3,000 files, like GitHub.
  `GET pulls/n` counts them in `changed_files`, `additions` and `deletions`.
- Adding an unknown label to an issue creates it with color `ededed` (GitHub does); creating an
  existing label → 422 `already_exists`; removing a label the issue does not have → 404 "Label does
  not exist". Label names compare case-insensitively.
- Lists paginate with `page`/`per_page` and a `Link` header; the issues list includes PRs (with a
  `pull_request` key), as GitHub's does.

Merging is simulated with real three-way semantics on whole files: the merge base is found by walking
parents, a file changed on both sides (differently) since the merge base is a conflict and makes the
PR unmergeable (`mergeable_state` "dirty").
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote, urlencode

from starter.simulators import server
from starter.simulators.server import LocalServer, QuietHandler, Request

DOCS = "https://docs.github.com/rest"
EMPTY_LABEL_COLOR = "ededed"
_FULL_PULL_ONLY = (
    "merged",
    "mergeable",
    "rebaseable",
    "mergeable_state",
    "merged_by",
    "comments",
    "review_comments",
    "maintainer_can_modify",
    "commits",
    "additions",
    "deletions",
    "changed_files",
)


def _now_iso(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(content: bytes) -> str | None:
    """`content` as text, or None when GitHub would call it binary (a NUL byte, or not UTF-8)."""
    if b"\0" in content:
        return None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def blob_sha(content: bytes) -> str:
    """The git blob sha of `content` (what GitHub returns as a file's `sha`)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class _Commit:
    sha: str
    files: dict[str, bytes]
    parents: list[str]
    message: str
    author: str
    at: float


@dataclass
class _Label:
    id: int
    name: str
    color: str
    description: str | None = None


@dataclass
class _Review:
    id: int
    user: str
    state: str
    commit_id: str
    at: float


@dataclass
class _Issue:
    """An issue, or the issue side of a pull request (`pull` is set)."""

    number: int
    id: int
    title: str
    body: str | None
    user: str
    labels: list[str] = field(default_factory=list)  # label names as stored in the repo
    state: str = "open"
    state_reason: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    closed: float | None = None
    closed_by: str | None = None
    comments: list[dict[str, Any]] = field(default_factory=list)
    pull: _Pull | None = None


@dataclass
class _Pull:
    number: int
    id: int
    head_ref: str
    base_ref: str
    head_sha: str  # frozen once the PR is closed or merged; otherwise follows the branch
    merged: bool = False
    merged_at: float | None = None
    merged_by: str | None = None
    merge_commit_sha: str | None = None
    mergeable_override: bool | None = None  # set_mergeable
    unmergeable_reason: str = "dirty"
    required_approvals: int = 0
    reviews: list[_Review] = field(default_factory=list)


@dataclass
class _Repo:
    owner: str
    name: str
    id: int
    default_branch: str
    refs: dict[str, str] = field(default_factory=dict)  # branch → commit sha
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    issues: dict[int, _Issue] = field(default_factory=dict)
    labels: dict[str, _Label] = field(default_factory=dict)  # lower-cased name → label
    next_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class _FailRule(server.FailRule):
    message: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Hook:
    method: str | None
    path_contains: str
    fn: Callable[[], None]


@dataclass
class _Response:
    status: int
    body: Any = None  # JSON-able, or None for no body
    headers: dict[str, str] = field(default_factory=dict)


class _HttpError(Exception):
    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


def _validation(
    resource: str, code: str, message: str | None = None, field_: str | None = None
) -> _HttpError:
    err: dict[str, Any] = {"resource": resource, "code": code}
    if field_ is not None:
        err["field"] = field_
    if message is not None:
        err["message"] = message
    return _HttpError(422, "Validation Failed", [err])


class _Request(Request):
    def json(self) -> Any:
        if not self.body:
            return {}
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            raise _HttpError(400, "Problems parsing JSON") from None


class FakeGitHub(LocalServer):
    """A fake GitHub on `ThreadingHTTPServer` in a daemon thread. See the module docstring."""

    def __init__(self, port: int = 0, token: str = "ghp-test", login: str = "deployctl-bot") -> None:
        super().__init__(port)
        self.token = token
        self.login = login
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.statuses: list[tuple[str, str, int]] = []  # (method, path, the status answered)
        #: (epoch seconds when answered, method, path, status): what a wait cost, and when.
        self.timeline: list[tuple[float, str, str, int]] = []
        self._lock = threading.RLock()
        self._repos: dict[str, _Repo] = {}
        self._fail_rules: list[_FailRule] = []
        self._hooks: list[_Hook] = []
        self._ids = itertools.count(1000)
        self._sha_counter = itertools.count(1)
        self.rate_limit = 5000
        self.rate_remaining = 5000
        self.rate_reset = int(time.time()) + 3600  # when the current window ends (epoch seconds)
        self._signing_keys: dict[str, list[dict[str, Any]]] = {}
        self._omit_patch: set[str] = set()  # paths whose patch is left out, as GitHub does for large ones

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeGitHub:
        fake = self

        class Handler(QuietHandler):
            disable_nagle_algorithm = True
            server_version = "GitHub.com"

            def _handle(self) -> None:
                rsp = fake._serve(self.read_request(_Request))
                github = [
                    ("X-GitHub-Media-Type", "github.v3; format=json"),
                    ("X-GitHub-Request-Id", hashlib.md5(str(time.time_ns()).encode()).hexdigest()[:16]),
                    *rsp.headers.items(),
                ]
                if rsp.body is None:
                    self.reply(rsp.status, b"", None, after=github)
                else:
                    self.reply_json(rsp.status, rsp.body, after=github)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        return self._listen(Handler, "fake-github")

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL to give PyGithub (`base_url`)."""
        return f"{self.web_url}/api/v3"

    # -- configuration and test hooks --------------------------------------------------------------

    def add_repo(
        self, full_name: str, default_branch: str = "master", files: dict[str, str | bytes] | None = None
    ) -> None:
        """Create a repository whose default branch holds one initial commit with `files`."""
        owner, name = full_name.split("/", 1)
        with self._lock:
            repo = _Repo(owner=owner, name=name, id=next(self._ids), default_branch=default_branch)
            content = {p: c.encode() if isinstance(c, str) else c for p, c in (files or {}).items()}
            c = self._new_commit(repo, content, [], "Initial commit", "someone")
            repo.refs[default_branch] = c.sha
            self._repos[full_name.lower()] = repo

    def file(self, repo: str, branch: str, path: str) -> str | None:
        """The text of `path` at the head of `branch`, or None."""
        with self._lock:
            r = self._repo(repo)
            sha = r.refs.get(branch)
            if sha is None:
                return None
            data = r.commits[sha].files.get(path)
            return None if data is None else data.decode("utf-8")

    def branches(self, repo: str) -> dict[str, str]:
        """Branch name → head commit sha."""
        with self._lock:
            return dict(self._repo(repo).refs)

    def commits_on(self, repo: str, branch: str) -> list[str]:
        """The commit messages of `branch`, newest first (first parents only)."""
        with self._lock:
            r = self._repo(repo)
            out: list[str] = []
            sha: str | None = r.refs.get(branch)
            while sha is not None:
                c = r.commits[sha]
                out.append(c.message)
                sha = c.parents[0] if c.parents else None
            return out

    def create_branch(self, repo: str, branch: str, from_branch: str | None = None) -> str:
        """Someone pushes a new branch at the head of `from_branch` (default branch); its sha."""
        with self._lock:
            r = self._repo(repo)
            sha = r.refs[from_branch or r.default_branch]
            r.refs[branch] = sha
            return sha

    def commit_file(self, repo: str, branch: str, path: str, content: str, by: str = "someone") -> str:
        """Someone pushes a commit changing `path` on `branch`; returns the new commit sha."""
        with self._lock:
            r = self._repo(repo)
            head = r.commits[r.refs[branch]]
            files = dict(head.files)
            files[path] = content.encode()
            c = self._new_commit(r, files, [head.sha], f"Update {path}", by)
            r.refs[branch] = c.sha
            return c.sha

    def omit_patch(self, path: str) -> None:
        """From now on `GET pulls/n/files` gives no `patch` for `path`, as GitHub does for a large diff."""
        with self._lock:
            self._omit_patch.add(path)

    def pulls(self, repo: str) -> list[dict[str, Any]]:
        """Every pull request of `repo`, oldest first, as the API shows it."""
        with self._lock:
            r = self._repo(repo)
            return [self._pull_doc(r, i) for i in sorted(r.issues.values(), key=lambda i: i.number) if i.pull]

    def issues(self, repo: str) -> list[dict[str, Any]]:
        """Every issue (not PR) of `repo`, oldest first, with `comments` as a list of comment bodies."""
        with self._lock:
            r = self._repo(repo)
            out = []
            for i in sorted(r.issues.values(), key=lambda i: i.number):
                if i.pull is None:
                    doc = self._issue_doc(r, i)
                    doc["comments"] = [c["body"] for c in i.comments]
                    out.append(doc)
            return out

    def labels(self, repo: str) -> dict[str, str]:
        """Label name → color."""
        with self._lock:
            return {lb.name: lb.color for lb in self._repo(repo).labels.values()}

    def set_mergeable(self, repo: str, number: int, mergeable: bool | None, reason: str = "dirty") -> None:
        """Force the PR's mergeability (None: compute it from the branches again)."""
        with self._lock:
            p = self._pull(self._repo(repo), number)
            p.mergeable_override = mergeable
            p.unmergeable_reason = reason

    def require_reviews(self, repo: str, number: int, count: int = 1) -> None:
        """Branch protection: the PR needs `count` approving reviews before it can be merged."""
        with self._lock:
            self._pull(self._repo(repo), number).required_approvals = count

    def approve(self, repo: str, number: int, by: str = "reviewer") -> None:
        with self._lock:
            r = self._repo(repo)
            p = self._pull(r, number)
            p.reviews.append(_Review(next(self._ids), by, "APPROVED", self._head_sha(r, p), time.time()))

    def add_signing_key(self, login: str, key: str, title: str = "laptop") -> None:
        """A public SSH signing key on `login`'s account (GET /users/{login}/ssh_signing_keys lists it)."""
        with self._lock:
            keys = self._signing_keys.setdefault(login.lower(), [])
            keys.append({"id": next(self._ids), "key": key, "title": title, "created_at": _now_iso()})

    def merge_directly(self, repo: str, number: int, by: str = "someone") -> None:
        """A person merges the PR on GitHub (bypassing any protection)."""
        with self._lock:
            r = self._repo(repo)
            issue = r.issues[number]
            if issue.pull is None or issue.state != "open":
                raise ValueError(f"#{number} of {repo} is not an open pull request")
            self._merge(r, issue, "merge", None, by)

    def open_pull(
        self,
        repo: str,
        head: str,
        base: str | None = None,
        title: str = "A pull request",
        by: str = "someone",
    ) -> int:
        """Someone opens a PR from `head` (a branch of `repo`) into `base` (default branch); its number."""
        with self._lock:
            r = self._repo(repo)
            number = r.next_number
            r.next_number += 1
            issue = _Issue(number=number, id=next(self._ids), title=title, body=None, user=by)
            issue.pull = _Pull(
                number=number,
                id=next(self._ids),
                head_ref=head,
                base_ref=base or r.default_branch,
                head_sha=r.refs[head],
            )
            r.issues[number] = issue
            return number

    def close_directly(self, repo: str, number: int, by: str = "someone") -> None:
        """A person closes the PR or issue on GitHub."""
        with self._lock:
            r = self._repo(repo)
            self._close(r, r.issues[number], by, None)

    def fail_next(
        self,
        status: int = 500,
        method: str | None = "POST",
        path_contains: str = "/pulls",
        times: int = 1,
        after_effect: bool = True,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status`. With `after_effect` the request is
        processed first (the branch is created, the PR opened…) and only the answer is lost."""
        with self._lock:
            self._fail_rules.append(_FailRule(status, method, path_contains, times, after_effect, message))

    def rate_limit_next(
        self,
        reset_in: int = 30,
        retry_after: int | None = None,
        status: int = 403,
        times: int = 1,
        method: str | None = None,
        path_contains: str = "",
    ) -> None:
        """The next `times` requests (of `method` whose path holds `path_contains`; any by default) hit
        the rate limit: 403 (or 429) "API rate limit exceeded" with `X-RateLimit-Remaining: 0` and
        `X-RateLimit-Reset` `reset_in` seconds ahead; with `retry_after` a secondary rate limit with a
        `Retry-After` header instead."""
        reset = str(int(time.time()) + reset_in)
        if retry_after is not None:
            message = (
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
            )
            headers = {"Retry-After": str(retry_after)}
        else:
            message = f"API rate limit exceeded for user ID 1. (But here's the good news: ...) reset {reset}"
            headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        with self._lock:
            self._fail_rules.append(_FailRule(status, method, path_contains, times, False, message, headers))

    def before_next(self, method: str | None, path_contains: str, fn: Callable[[], None]) -> None:
        """Run `fn` (e.g. someone else's commit) just before the next matching request is handled."""
        with self._lock:
            self._hooks.append(_Hook(method, path_contains, fn))

    # -- the model ---------------------------------------------------------------------------------

    def _repo(self, full_name: str) -> _Repo:
        try:
            return self._repos[full_name.lower()]
        except KeyError:
            raise KeyError(f"no repository {full_name!r} in the fake") from None

    def _new_commit(
        self, repo: _Repo, files: dict[str, bytes], parents: list[str], message: str, author: str
    ) -> _Commit:
        seed = f"{repo.full_name}:{next(self._sha_counter)}:{time.time_ns()}"
        c = _Commit(hashlib.sha1(seed.encode()).hexdigest(), files, parents, message, author, time.time())
        repo.commits[c.sha] = c
        return c

    @staticmethod
    def _pull(repo: _Repo, number: int) -> _Pull:
        issue = repo.issues.get(number)
        if issue is None or issue.pull is None:
            raise KeyError(f"no pull request #{number} in {repo.full_name}")
        return issue.pull

    @staticmethod
    def _head_sha(repo: _Repo, p: _Pull) -> str:
        issue = repo.issues[p.number]
        if issue.state == "open" and p.head_ref in repo.refs:
            return repo.refs[p.head_ref]
        return p.head_sha

    def _ancestors(self, repo: _Repo, sha: str) -> list[str]:
        """`sha` and its ancestors, breadth first."""
        seen: list[str] = []
        queue = [sha]
        while queue:
            s = queue.pop(0)
            if s in seen or s not in repo.commits:
                continue
            seen.append(s)
            queue.extend(repo.commits[s].parents)
        return seen

    def _merge_base(self, repo: _Repo, a: str, b: str) -> str | None:
        of_a = set(self._ancestors(repo, a))
        return next((s for s in self._ancestors(repo, b) if s in of_a), None)

    def _three_way(self, repo: _Repo, base_sha: str, head_sha: str) -> tuple[dict[str, bytes], list[str]]:
        """The base branch's files with the head's changes applied, and the conflicting paths."""
        mb = self._merge_base(repo, base_sha, head_sha)
        ancestor = repo.commits[mb].files if mb else {}
        ours, theirs = repo.commits[base_sha].files, repo.commits[head_sha].files
        merged = dict(ours)
        conflicts: list[str] = []
        for path in set(ancestor) | set(theirs):
            old, new, cur = ancestor.get(path), theirs.get(path), ours.get(path)
            if new == old:
                continue  # not changed on the head side
            if cur != old and cur != new:
                conflicts.append(path)
                continue
            if new is None:
                merged.pop(path, None)
            else:
                merged[path] = new
        return merged, sorted(conflicts)

    def _pull_files(self, repo: _Repo, p: _Pull) -> list[dict[str, Any]]:
        """The files a PR changes, as `GET pulls/n/files` lists them (see the module docstring)."""
        head = self._head_sha(repo, p)
        if p.merge_commit_sha and repo.commits[p.merge_commit_sha].parents:
            base = repo.commits[p.merge_commit_sha].parents[0]  # the base as it was when it was merged
        else:
            base = repo.refs.get(p.base_ref, head)
        mb = self._merge_base(repo, base, head)
        old_files = repo.commits[mb].files if mb else {}
        new_files = repo.commits[head].files
        out: list[dict[str, Any]] = []
        web = f"{self.web_url}/{repo.full_name}"
        for path in sorted(set(old_files) | set(new_files)):
            old, new = old_files.get(path), new_files.get(path)
            if old == new:
                continue
            status = "added" if old is None else "removed" if new is None else "modified"
            entry: dict[str, Any] = {
                "sha": blob_sha(new if new is not None else old or b""),
                "filename": path,
                "status": status,
                "additions": 0,
                "deletions": 0,
                "changes": 0,
                "blob_url": f"{web}/blob/{head}/{quote(path)}",
                "raw_url": f"{web}/raw/{head}/{quote(path)}",
                "contents_url": self._api(f"/repos/{repo.full_name}/contents/{quote(path)}?ref={head}"),
            }
            texts = [_text(old or b""), _text(new or b"")]
            if texts[0] is not None and texts[1] is not None:
                a, b = texts[0].splitlines(), texts[1].splitlines()
                hunks = list(difflib.unified_diff(a, b, lineterm="", n=3))[2:]  # GitHub's patch: no header
                entry["additions"] = sum(1 for h in hunks if h.startswith("+"))
                entry["deletions"] = sum(1 for h in hunks if h.startswith("-"))
                entry["changes"] = entry["additions"] + entry["deletions"]
                if path not in self._omit_patch:
                    entry["patch"] = "\n".join(hunks)
            out.append(entry)
        return out[:3000]

    def _mergeability(self, repo: _Repo, issue: _Issue) -> tuple[bool | None, str]:
        p = issue.pull
        assert p is not None
        if issue.state != "open":
            return None, "unknown"
        if p.mergeable_override is not None:
            if not p.mergeable_override:
                return False, p.unmergeable_reason
        else:
            base = repo.refs.get(p.base_ref)
            head = repo.refs.get(p.head_ref)
            if base is None or head is None:
                return False, "dirty"
            _, conflicts = self._three_way(repo, base, head)
            if conflicts:
                return False, "dirty"
        if self._approvals(repo, p) < p.required_approvals:
            return True, "blocked"
        return True, "clean"

    @staticmethod
    def _approvals(repo: _Repo, p: _Pull) -> int:
        latest: dict[str, str] = {}
        for r in p.reviews:
            if r.state != "COMMENTED":
                latest[r.user] = r.state
        return sum(1 for s in latest.values() if s == "APPROVED")

    def _merge(self, repo: _Repo, issue: _Issue, method: str, title: str | None, by: str) -> str:
        p = issue.pull
        assert p is not None
        base_sha, head_sha = repo.refs[p.base_ref], self._head_sha(repo, p)
        files, _ = self._three_way(repo, base_sha, head_sha)
        message = title or (
            f"Merge pull request #{p.number} from {repo.owner}/{p.head_ref}"
            if method == "merge"
            else f"{issue.title} (#{p.number})"
        )
        parents = [base_sha, head_sha] if method == "merge" else [base_sha]
        c = self._new_commit(repo, files, parents, message, by)
        repo.refs[p.base_ref] = c.sha
        p.head_sha = head_sha
        p.merged, p.merged_at, p.merged_by, p.merge_commit_sha = True, time.time(), by, c.sha
        self._close(repo, issue, by, "completed")
        return c.sha

    def _close(self, repo: _Repo, issue: _Issue, by: str, reason: str | None) -> None:
        if issue.state == "closed":
            return
        if issue.pull is not None:
            issue.pull.head_sha = self._head_sha(repo, issue.pull)
        issue.state, issue.closed, issue.closed_by = "closed", time.time(), by
        issue.state_reason = reason or "completed"
        issue.updated = time.time()

    def _label(self, repo: _Repo, name: str, create: bool) -> _Label:
        label = repo.labels.get(name.lower())
        if label is None:
            if not create:
                raise _HttpError(404, "Label does not exist")
            label = _Label(next(self._ids), name, EMPTY_LABEL_COLOR)
            repo.labels[name.lower()] = label
        return label

    # -- documents ---------------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        return f"{self.url}{path}"

    def _user_doc(self, login: str) -> dict[str, Any]:
        return {
            "login": login,
            "id": int(hashlib.md5(login.encode()).hexdigest()[:6], 16),
            "type": "Bot" if login.endswith("[bot]") else "User",
            "site_admin": False,
            "url": self._api(f"/users/{quote(login)}"),
            "html_url": f"{self.web_url}/{quote(login)}",
        }

    def _repo_doc(self, r: _Repo) -> dict[str, Any]:
        return {
            "id": r.id,
            "node_id": f"R_{r.id}",
            "name": r.name,
            "full_name": r.full_name,
            "owner": self._user_doc(r.owner),
            "private": True,
            "html_url": f"{self.web_url}/{r.full_name}",
            "url": self._api(f"/repos/{r.full_name}"),
            "default_branch": r.default_branch,
            "fork": False,
            "archived": False,
            "visibility": "private",
            "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
            "allow_squash_merge": True,
            "allow_merge_commit": True,
            "allow_rebase_merge": True,
            "delete_branch_on_merge": False,
            "has_issues": True,
        }

    def _ref_doc(self, r: _Repo, branch: str) -> dict[str, Any]:
        sha = r.refs[branch]
        return {
            "ref": f"refs/heads/{branch}",
            "node_id": f"REF_{hashlib.md5(branch.encode()).hexdigest()[:10]}",
            "url": self._api(f"/repos/{r.full_name}/git/refs/heads/{quote(branch)}"),
            "object": {
                "sha": sha,
                "type": "commit",
                "url": self._api(f"/repos/{r.full_name}/git/commits/{sha}"),
            },
        }

    def _commit_doc(self, r: _Repo, c: _Commit) -> dict[str, Any]:
        who = {"name": c.author, "email": f"{c.author}@users.noreply.github.com", "date": _now_iso(c.at)}
        return {
            "sha": c.sha,
            "node_id": f"C_{c.sha[:10]}",
            "url": self._api(f"/repos/{r.full_name}/git/commits/{c.sha}"),
            "html_url": f"{self.web_url}/{r.full_name}/commit/{c.sha}",
            "author": who,
            "committer": who,
            "message": c.message,
            "tree": {
                "sha": hashlib.sha1(c.sha.encode()).hexdigest(),
                "url": self._api(f"/repos/{r.full_name}/git/trees/x"),
            },
            "parents": [
                {
                    "sha": p,
                    "url": self._api(f"/repos/{r.full_name}/git/commits/{p}"),
                    "html_url": f"{self.web_url}/{r.full_name}/commit/{p}",
                }
                for p in c.parents
            ],
        }

    def _content_doc(self, r: _Repo, ref: str, path: str, data: bytes | None) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        doc: dict[str, Any] = {
            "type": "file",
            "name": name,
            "path": path,
            "sha": blob_sha(data) if data is not None else None,
            "size": len(data or b""),
            "url": self._api(f"/repos/{r.full_name}/contents/{quote(path)}?ref={quote(ref)}"),
            "html_url": f"{self.web_url}/{r.full_name}/blob/{quote(ref)}/{quote(path)}",
            "git_url": self._api(f"/repos/{r.full_name}/git/blobs/{blob_sha(data or b'')}"),
            "download_url": f"{self.web_url}/raw/{r.full_name}/{quote(ref)}/{quote(path)}",
        }
        if data is not None:
            b64 = base64.b64encode(data).decode()
            doc["encoding"] = "base64"
            doc["content"] = "\n".join(b64[i : i + 60] for i in range(0, len(b64), 60)) + "\n"
        return doc

    def _label_doc(self, r: _Repo, lb: _Label) -> dict[str, Any]:
        return {
            "id": lb.id,
            "node_id": f"LA_{lb.id}",
            "url": self._api(f"/repos/{r.full_name}/labels/{quote(lb.name)}"),
            "name": lb.name,
            "color": lb.color,
            "default": False,
            "description": lb.description,
        }

    def _issue_doc(self, r: _Repo, i: _Issue) -> dict[str, Any]:
        base = f"/repos/{r.full_name}/issues/{i.number}"
        doc: dict[str, Any] = {
            "url": self._api(base),
            "repository_url": self._api(f"/repos/{r.full_name}"),
            "labels_url": self._api(f"{base}/labels{{/name}}"),
            "comments_url": self._api(f"{base}/comments"),
            "events_url": self._api(f"{base}/events"),
            "html_url": f"{self.web_url}/{r.full_name}/{'pull' if i.pull else 'issues'}/{i.number}",
            "id": i.id,
            "node_id": f"I_{i.id}",
            "number": i.number,
            "title": i.title,
            "user": self._user_doc(i.user),
            "labels": [self._label_doc(r, self._label(r, n, create=True)) for n in i.labels],
            "state": i.state,
            "state_reason": i.state_reason,
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": len(i.comments),
            "created_at": _now_iso(i.created),
            "updated_at": _now_iso(i.updated),
            "closed_at": _now_iso(i.closed) if i.closed else None,
            "closed_by": self._user_doc(i.closed_by) if i.closed_by else None,
            "author_association": "MEMBER",
            "body": i.body,
        }
        if i.pull is not None:
            doc["pull_request"] = {
                "url": self._api(f"/repos/{r.full_name}/pulls/{i.number}"),
                "html_url": f"{self.web_url}/{r.full_name}/pull/{i.number}",
                "diff_url": f"{self.web_url}/{r.full_name}/pull/{i.number}.diff",
                "patch_url": f"{self.web_url}/{r.full_name}/pull/{i.number}.patch",
                "merged_at": _now_iso(i.pull.merged_at) if i.pull.merged_at else None,
            }
        return doc

    def _branch_side(self, r: _Repo, ref: str, sha: str) -> dict[str, Any]:
        return {
            "label": f"{r.owner}:{ref}",
            "ref": ref,
            "sha": sha,
            "user": self._user_doc(r.owner),
            "repo": self._repo_doc(r),
        }

    def _pull_doc(self, r: _Repo, i: _Issue, full: bool = True) -> dict[str, Any]:
        """The PR as `GET pulls/n` shows it; `full=False`: as in `GET pulls` lists, which (on GitHub)
        lack `merged`, `mergeable`, `mergeable_state`, `merged_by` and the counters."""
        p = i.pull
        assert p is not None
        base = f"/repos/{r.full_name}/pulls/{i.number}"
        mergeable, mergeable_state = self._mergeability(r, i)
        head_sha = self._head_sha(r, p)
        doc: dict[str, Any] = {
            "url": self._api(base),
            "id": p.id,
            "node_id": f"PR_{p.id}",
            "html_url": f"{self.web_url}/{r.full_name}/pull/{i.number}",
            "diff_url": f"{self.web_url}/{r.full_name}/pull/{i.number}.diff",
            "patch_url": f"{self.web_url}/{r.full_name}/pull/{i.number}.patch",
            "issue_url": self._api(f"/repos/{r.full_name}/issues/{i.number}"),
            "commits_url": self._api(f"{base}/commits"),
            "review_comments_url": self._api(f"{base}/comments"),
            "comments_url": self._api(f"/repos/{r.full_name}/issues/{i.number}/comments"),
            "statuses_url": self._api(f"/repos/{r.full_name}/statuses/{head_sha}"),
            "number": i.number,
            "state": i.state,
            "locked": False,
            "title": i.title,
            "user": self._user_doc(i.user),
            "body": i.body,
            "labels": [self._label_doc(r, self._label(r, n, create=True)) for n in i.labels],
            "milestone": None,
            "created_at": _now_iso(i.created),
            "updated_at": _now_iso(i.updated),
            "closed_at": _now_iso(i.closed) if i.closed else None,
            "merged_at": _now_iso(p.merged_at) if p.merged_at else None,
            "merge_commit_sha": p.merge_commit_sha,
            "assignee": None,
            "assignees": [],
            "requested_reviewers": [],
            "head": self._branch_side(r, p.head_ref, head_sha),
            "base": self._branch_side(r, p.base_ref, r.refs.get(p.base_ref, "")),
            "author_association": "MEMBER",
            "draft": False,
            "merged": p.merged,
            "mergeable": mergeable,
            "rebaseable": mergeable,
            "mergeable_state": mergeable_state,
            "merged_by": self._user_doc(p.merged_by) if p.merged_by else None,
            "comments": len(i.comments),
            "review_comments": 0,
            "maintainer_can_modify": False,
            "commits": 1,
        }
        files = self._pull_files(r, p)
        doc["additions"] = sum(f["additions"] for f in files)
        doc["deletions"] = sum(f["deletions"] for f in files)
        doc["changed_files"] = len(files)
        if not full:
            for key in _FULL_PULL_ONLY:
                doc.pop(key)
        return doc

    def _comment_doc(self, r: _Repo, number: int, c: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": c["id"],
            "node_id": f"IC_{c['id']}",
            "url": self._api(f"/repos/{r.full_name}/issues/comments/{c['id']}"),
            "html_url": f"{self.web_url}/{r.full_name}/issues/{number}#issuecomment-{c['id']}",
            "issue_url": self._api(f"/repos/{r.full_name}/issues/{number}"),
            "body": c["body"],
            "user": self._user_doc(c["user"]),
            "created_at": _now_iso(c["at"]),
            "updated_at": _now_iso(c["at"]),
            "author_association": "MEMBER",
        }

    # -- HTTP --------------------------------------------------------------------------------------

    def _rate_headers(self) -> dict[str, str]:
        """GitHub's primary rate-limit headers: a fixed window of an hour, which starts again (all
        requests back) once `X-RateLimit-Reset` has passed."""
        if time.time() >= self.rate_reset:
            self.rate_remaining, self.rate_reset = self.rate_limit, int(time.time()) + 3600
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(self.rate_remaining),
            "X-RateLimit-Reset": str(self.rate_reset),
            "X-RateLimit-Used": str(self.rate_limit - self.rate_remaining),
            "X-RateLimit-Resource": "core",
        }

    def set_rate_limit(self, remaining: int, limit: int = 5000, reset_in: int = 3600) -> None:
        """The primary rate limit's state from now: `remaining` of `limit` left, the window ending in
        `reset_in` seconds. Each authenticated request then spends one, as on GitHub."""
        with self._lock:
            self.rate_limit, self.rate_remaining = limit, remaining
            self.rate_reset = int(time.time()) + reset_in

    def _serve(self, req: _Request) -> _Response:
        rsp = self._answer(req)
        with self._lock:
            self.statuses.append((req.method, req.path, rsp.status))
            self.timeline.append((time.time(), req.method, req.path, rsp.status))
        return rsp

    def _answer(self, req: _Request) -> _Response:
        with self._lock:
            self.requests.append(req.recorded())
            for hook in list(self._hooks):
                if (
                    hook.method is None or hook.method.upper() == req.method
                ) and hook.path_contains in req.path:
                    self._hooks.remove(hook)
                    hook.fn()
                    break
            headers = self._rate_headers()
            denied = self._authenticate(req)
            if denied is not None:
                denied.headers = {**headers, **denied.headers}
                return denied
            rule = self._match_fail_rule(req)
            if rule is not None and not rule.after_effect:
                return self._fail_response(rule, headers)
            if self.rate_remaining > 0:
                self.rate_remaining -= 1
            headers = self._rate_headers()  # what is left after this request, as GitHub shows it
            try:
                rsp = self._dispatch(req)
            except _HttpError as e:
                body: dict[str, Any] = {"message": e.message, "documentation_url": DOCS}
                if e.errors is not None:
                    body["errors"] = e.errors
                rsp = _Response(e.status, body)
            except Exception as exc:  # a bug in the fake: answer like GitHub's 500
                rsp = _Response(500, {"message": f"Server Error: {exc!r}"})
            if rule is not None:
                return self._fail_response(rule, headers)
            rsp.headers = {**headers, **rsp.headers}
            return rsp

    def chaos(self, rate: float, seed: int = 0, path_contains: str = "") -> None:
        """From now on answer a share `rate` of the requests whose path holds `path_contains` with a 5xx,
        half of them after doing the work (the answer is lost), half before. `rate=0` stops it."""
        import random

        with self._lock:
            self._chaos = (rate, random.Random(seed), path_contains)

    def _match_fail_rule(self, req: _Request) -> _FailRule | None:
        rng = server.chaos_strikes(getattr(self, "_chaos", None), req)
        if rng is not None:
            return server.chaos_failure(_FailRule, rng)
        return server.take_fail_rule(self._fail_rules, req)

    @staticmethod
    def _fail_response(rule: _FailRule, headers: dict[str, str]) -> _Response:
        default = {
            500: "Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }
        message = rule.message or default.get(rule.status, f"Error {rule.status}")
        return _Response(
            rule.status, {"message": message, "documentation_url": DOCS}, {**headers, **rule.headers}
        )

    def _authenticate(self, req: _Request) -> _Response | None:
        header = req.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if not header:
            return _Response(401, {"message": "Requires authentication", "documentation_url": DOCS})
        if scheme.lower() not in ("token", "bearer") or not hmac.compare_digest(
            token.strip().encode(), self.token.encode()
        ):
            return _Response(401, {"message": "Bad credentials", "documentation_url": DOCS})
        req.user = self.login
        return None

    def _dispatch(self, req: _Request) -> _Response:
        if not req.path.startswith("/api/v3/"):
            raise _HttpError(404, "Not Found")
        segs = [unquote(s) for s in req.path[len("/api/v3/") :].split("/") if s]
        if segs == ["user"]:
            return _Response(200, self._user_doc(self.login))
        if len(segs) == 2 and segs[0] == "users":
            return _Response(200, self._user_doc(segs[1]))
        if len(segs) == 3 and segs[0] == "users" and segs[2] == "ssh_signing_keys":
            return self._page(req, list(self._signing_keys.get(segs[1].lower(), [])))
        if segs == ["rate_limit"]:
            core = {
                "limit": self.rate_limit,
                "remaining": self.rate_remaining,
                "reset": int(time.time()) + 3600,
                "used": 0,
            }
            core["reset"], core["used"] = self.rate_reset, self.rate_limit - self.rate_remaining
            return _Response(200, {"resources": {"core": core}, "rate": core})
        if len(segs) >= 3 and segs[0] == "repos":
            repo = self._repos.get(f"{segs[1]}/{segs[2]}".lower())
            if repo is None:
                raise _HttpError(404, "Not Found")
            return self._repo_route(req, repo, segs[3:])
        raise _HttpError(404, "Not Found")

    def _page(self, req: _Request, items: list[Any]) -> _Response:
        per_page = max(1, min(100, int(req.query.get("per_page") or 30)))
        page = max(1, int(req.query.get("page") or 1))
        last = max(1, (len(items) + per_page - 1) // per_page)
        chunk = items[(page - 1) * per_page : page * per_page]
        links = []

        def link(n: int, rel: str) -> str:
            q = {**req.query, "page": str(n), "per_page": str(per_page)}
            return f'<{self.web_url}{req.path}?{urlencode(q)}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        return _Response(200, chunk, {"Link": ", ".join(links)} if links else {})

    def _repo_route(self, req: _Request, r: _Repo, rest: list[str]) -> _Response:
        m = req.method
        if not rest:
            if m == "GET":
                return _Response(200, self._repo_doc(r))
            raise _HttpError(404, "Not Found")
        head = rest[0]
        if head == "git":
            return self._git_route(req, r, rest[1:])
        if head == "branches" and len(rest) >= 2 and m == "GET":
            name = "/".join(rest[1:])
            if name not in r.refs:
                raise _HttpError(404, "Branch not found")
            c = r.commits[r.refs[name]]
            return _Response(
                200,
                {
                    "name": name,
                    "commit": {
                        "sha": c.sha,
                        "url": self._api(f"/repos/{r.full_name}/commits/{c.sha}"),
                        "commit": self._commit_doc(r, c),
                    },
                    "protected": False,
                },
            )
        if head == "contents":
            return self._contents_route(req, r, "/".join(rest[1:]))
        if head == "pulls":
            return self._pulls_route(req, r, rest[1:])
        if head == "issues":
            return self._issues_route(req, r, rest[1:])
        if head == "labels":
            return self._labels_route(req, r, rest[1:])
        raise _HttpError(404, "Not Found")

    # -- git refs ----------------------------------------------------------------------------------

    def _git_route(self, req: _Request, r: _Repo, rest: list[str]) -> _Response:
        m = req.method
        if rest == ["refs"] and m == "POST":
            body = req.json()
            ref, sha = body.get("ref"), body.get("sha")
            if not isinstance(ref, str) or not isinstance(sha, str):
                raise _HttpError(422, 'Invalid request.\n\n"ref" and "sha" are required.')
            if not ref.startswith("refs/") or ref.count("/") < 2:
                raise _HttpError(422, "Reference name is invalid")
            if sha not in r.commits:
                raise _HttpError(422, "Object does not exist")
            if ref.startswith("refs/heads/"):
                name = ref[len("refs/heads/") :]
                if name in r.refs:
                    raise _HttpError(422, "Reference already exists")
                r.refs[name] = sha
                return _Response(
                    201, self._ref_doc(r, name), {"Location": self._api(f"/repos/{r.full_name}/git/{ref}")}
                )
            r.tags[ref] = sha
            return _Response(
                201,
                {
                    "ref": ref,
                    "url": self._api(f"/repos/{r.full_name}/git/{ref}"),
                    "object": {"sha": sha, "type": "commit"},
                },
            )
        if len(rest) >= 3 and rest[0] in ("ref", "refs") and rest[1] == "heads":
            name = "/".join(rest[2:])
            if m == "GET":
                if name in r.refs:
                    return _Response(200, self._ref_doc(r, name))
                matches = [b for b in sorted(r.refs) if b.startswith(name)] if rest[0] == "refs" else []
                if matches:
                    return _Response(200, [self._ref_doc(r, b) for b in matches])
                raise _HttpError(404, "Not Found")
            if rest[0] == "refs" and m == "DELETE":
                if name not in r.refs:
                    raise _HttpError(422, "Reference does not exist")
                if name == r.default_branch:
                    raise _HttpError(422, "Cannot delete the default branch")
                del r.refs[name]
                return _Response(204)
            if rest[0] == "refs" and m == "PATCH":
                if name not in r.refs:
                    raise _HttpError(422, "Reference does not exist")
                body = req.json()
                sha = body.get("sha")
                if sha not in r.commits:
                    raise _HttpError(422, "Object does not exist")
                if not body.get("force") and r.refs[name] not in self._ancestors(r, sha):
                    raise _HttpError(422, "Update is not a fast forward")
                r.refs[name] = sha
                return _Response(200, self._ref_doc(r, name))
        if len(rest) == 2 and rest[0] == "commits" and m == "GET":
            c = r.commits.get(rest[1])
            if c is None:
                raise _HttpError(404, "Not Found")
            return _Response(200, self._commit_doc(r, c))
        raise _HttpError(404, "Not Found")

    # -- contents ----------------------------------------------------------------------------------

    def _contents_route(self, req: _Request, r: _Repo, path: str) -> _Response:
        if req.method == "GET":
            ref = req.query.get("ref") or r.default_branch
            sha = r.refs.get(ref) or (ref if ref in r.commits else None)
            if sha is None:
                raise _HttpError(404, f"No commit found for the ref {ref}")
            files = r.commits[sha].files
            if path in files:
                return _Response(200, self._content_doc(r, ref, path, files[path]))
            prefix = f"{path}/" if path else ""
            entries: dict[str, dict[str, Any]] = {}
            for p in sorted(files):
                if p.startswith(prefix):
                    child = p[len(prefix) :].split("/", 1)[0]
                    full = prefix + child
                    doc = self._content_doc(r, ref, full, None)
                    if full in files:
                        doc.update(sha=blob_sha(files[full]), size=len(files[full]))
                    else:
                        doc["type"] = "dir"
                    entries[child] = doc
            if entries:
                return _Response(200, list(entries.values()))
            raise _HttpError(404, "Not Found")
        if req.method == "PUT":
            body = req.json()
            message, content = body.get("message"), body.get("content")
            if not isinstance(message, str) or not isinstance(content, str):
                raise _HttpError(422, 'Invalid request.\n\n"message" and "content" are required.')
            try:
                data = base64.b64decode(content, validate=True)
            except ValueError:
                raise _HttpError(422, "content is not valid Base64") from None
            branch = body.get("branch") or r.default_branch
            if branch not in r.refs:
                raise _HttpError(404, f"Branch {branch} not found")
            head = r.commits[r.refs[branch]]
            existing = head.files.get(path)
            sha = body.get("sha")
            if existing is not None:
                if not sha:
                    raise _HttpError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
                if sha != blob_sha(existing):
                    raise _HttpError(409, f"{path} does not match {sha}")
            files = dict(head.files)
            files[path] = data
            c = self._new_commit(r, files, [head.sha], message, req.user or "unknown")
            r.refs[branch] = c.sha
            doc = self._content_doc(r, branch, path, data)
            doc.pop("content", None)
            doc.pop("encoding", None)
            return _Response(
                201 if existing is None else 200, {"content": doc, "commit": self._commit_doc(r, c)}
            )
        raise _HttpError(404, "Not Found")

    # -- pulls -------------------------------------------------------------------------------------

    def _pulls_route(self, req: _Request, r: _Repo, rest: list[str]) -> _Response:
        m = req.method
        if not rest:
            if m == "GET":
                return self._list_pulls(req, r)
            if m == "POST":
                return self._create_pull(req, r)
            raise _HttpError(404, "Not Found")
        if not rest[0].isdigit():
            raise _HttpError(404, "Not Found")
        issue = r.issues.get(int(rest[0]))
        if issue is None or issue.pull is None:
            raise _HttpError(404, "Not Found")
        tail = rest[1:]
        if not tail:
            if m == "GET":
                return _Response(200, self._pull_doc(r, issue))
            if m == "PATCH":
                return self._edit_pull(req, r, issue)
        if tail == ["merge"]:
            if m == "GET":
                if issue.pull.merged:
                    return _Response(204)
                raise _HttpError(404, "Not Found")
            if m == "PUT":
                return self._merge_pull(req, r, issue)
        if tail == ["files"] and m == "GET":
            return self._page(req, self._pull_files(r, issue.pull))
        if tail == ["reviews"] and m == "GET":
            return self._page(
                req,
                [
                    {
                        "id": rv.id,
                        "user": {"login": rv.user},
                        "state": rv.state,
                        "submitted_at": _now_iso(rv.at),
                        "commit_id": rv.commit_id,
                        "body": "",
                    }
                    for rv in issue.pull.reviews
                ],
            )
        raise _HttpError(404, "Not Found")

    def _list_pulls(self, req: _Request, r: _Repo) -> _Response:
        state = req.query.get("state") or "open"
        head = req.query.get("head")
        base = req.query.get("base")
        found = []
        for i in sorted(
            r.issues.values(), key=lambda i: i.number, reverse=req.query.get("direction") != "asc"
        ):
            p = i.pull
            if p is None or (state != "all" and i.state != state):
                continue
            if base and p.base_ref != base:
                continue
            if head:
                owner, _, ref = head.partition(":")
                if not ref or owner.lower() != r.owner.lower() or p.head_ref != ref:
                    continue
            found.append(self._pull_doc(r, i, full=False))
        return self._page(req, found)

    def _create_pull(self, req: _Request, r: _Repo) -> _Response:
        body = req.json()
        title, head, base = body.get("title"), body.get("head"), body.get("base")
        if not isinstance(head, str) or not isinstance(base, str) or not (title or body.get("issue")):
            raise _validation("PullRequest", "missing_field", field_="title" if not title else "head")
        owner, _, ref = head.rpartition(":")
        if owner and owner.lower() != r.owner.lower():
            raise _validation("PullRequest", "invalid", field_="head")
        if base not in r.refs:
            raise _validation("PullRequest", "invalid", field_="base")
        if ref not in r.refs:
            raise _validation("PullRequest", "invalid", field_="head")
        for i in r.issues.values():
            if i.pull and i.state == "open" and i.pull.head_ref == ref and i.pull.base_ref == base:
                raise _validation(
                    "PullRequest", "custom", f"A pull request already exists for {r.owner}:{ref}."
                )
        if r.refs[ref] in self._ancestors(r, r.refs[base]):
            raise _validation("PullRequest", "custom", f"No commits between {base} and {ref}")
        number = r.next_number
        r.next_number += 1
        issue = _Issue(
            number=number,
            id=next(self._ids),
            title=str(title),
            body=body.get("body"),
            user=req.user or "unknown",
        )
        issue.pull = _Pull(
            number=number, id=next(self._ids), head_ref=ref, base_ref=base, head_sha=r.refs[ref]
        )
        r.issues[number] = issue
        doc = self._pull_doc(r, issue)
        return _Response(201, doc, {"Location": doc["url"]})

    def _edit_pull(self, req: _Request, r: _Repo, issue: _Issue) -> _Response:
        body = req.json()
        p = issue.pull
        assert p is not None
        if "title" in body:
            issue.title = str(body["title"])
        if "body" in body:
            issue.body = body["body"]
        state = body.get("state")
        if state == "closed" and issue.state == "open":
            self._close(r, issue, req.user or "unknown", None)
        elif state == "open" and issue.state == "closed":
            if p.merged:
                raise _validation(
                    "PullRequest",
                    "custom",
                    "state cannot be changed. The pull request has already been merged.",
                    "state",
                )
            if p.head_ref not in r.refs:
                raise _validation(
                    "PullRequest", "custom", "state cannot be changed. The head branch was deleted.", "state"
                )
            issue.state, issue.closed, issue.closed_by, issue.state_reason = "open", None, None, "reopened"
        elif state not in (None, "open", "closed"):
            raise _validation("PullRequest", "invalid", field_="state")
        issue.updated = time.time()
        return _Response(200, self._pull_doc(r, issue))

    def _merge_pull(self, req: _Request, r: _Repo, issue: _Issue) -> _Response:
        body = req.json()
        p = issue.pull
        assert p is not None
        method = body.get("merge_method") or "merge"
        if method not in ("merge", "squash", "rebase"):
            raise _validation("PullRequest", "invalid", field_="merge_method")
        if p.merged:
            raise _HttpError(405, "Pull Request is not mergeable")
        if issue.state != "open":
            raise _HttpError(422, "Pull Request is not mergeable")
        if body.get("sha") and body["sha"] != self._head_sha(r, p):
            raise _HttpError(409, "Head branch was modified. Review and try the merge again.")
        mergeable, _ = self._mergeability(r, issue)
        if not mergeable:
            raise _HttpError(405, "Pull Request is not mergeable")
        need = p.required_approvals
        if self._approvals(r, p) < need:
            are = "review is" if need == 1 else "reviews are"
            raise _HttpError(405, f"At least {need} approving {are} required by reviewers with write access.")
        sha = self._merge(r, issue, method, body.get("commit_title"), req.user or "unknown")
        return _Response(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})

    # -- issues, comments and labels ---------------------------------------------------------------

    def _issues_route(self, req: _Request, r: _Repo, rest: list[str]) -> _Response:
        m = req.method
        if not rest:
            if m == "GET":
                return self._list_issues(req, r)
            if m == "POST":
                return self._create_issue(req, r)
            raise _HttpError(404, "Not Found")
        if not rest[0].isdigit():
            raise _HttpError(404, "Not Found")
        issue = r.issues.get(int(rest[0]))
        if issue is None:
            raise _HttpError(404, "Not Found")
        tail = rest[1:]
        if not tail:
            if m == "GET":
                return _Response(200, self._issue_doc(r, issue))
            if m == "PATCH":
                return self._edit_issue(req, r, issue)
        if tail == ["comments"]:
            if m == "GET":
                return self._page(req, [self._comment_doc(r, issue.number, c) for c in issue.comments])
            if m == "POST":
                text = req.json().get("body")
                if not isinstance(text, str) or not text:
                    raise _validation("IssueComment", "missing_field", field_="body")
                c = {"id": next(self._ids), "body": text, "user": req.user or "unknown", "at": time.time()}
                issue.comments.append(c)
                issue.updated = time.time()
                doc = self._comment_doc(r, issue.number, c)
                return _Response(201, doc, {"Location": doc["url"]})
        if tail and tail[0] == "labels":
            return self._issue_labels(req, r, issue, "/".join(tail[1:]))
        raise _HttpError(404, "Not Found")

    def _list_issues(self, req: _Request, r: _Repo) -> _Response:
        state = req.query.get("state") or "open"
        wanted = [w.strip().lower() for w in (req.query.get("labels") or "").split(",") if w.strip()]
        creator = req.query.get("creator")
        sort = req.query.get("sort") or "created"
        desc = (req.query.get("direction") or "desc") == "desc"
        keys: dict[str, Callable[[_Issue], Any]] = {
            "created": lambda i: i.created,
            "updated": lambda i: i.updated,
            "comments": lambda i: len(i.comments),
        }
        key = keys.get(sort, keys["created"])
        found = []
        for i in sorted(r.issues.values(), key=lambda i: (key(i), i.number), reverse=desc):
            if state != "all" and i.state != state:
                continue
            if creator and i.user.lower() != creator.lower():
                continue
            have = {n.lower() for n in i.labels}
            if any(w not in have for w in wanted):
                continue
            found.append(self._issue_doc(r, i))
        return self._page(req, found)

    def _create_issue(self, req: _Request, r: _Repo) -> _Response:
        body = req.json()
        title = body.get("title")
        if not isinstance(title, str) or not title:
            raise _validation("Issue", "missing_field", field_="title")
        number = r.next_number
        r.next_number += 1
        issue = _Issue(
            number=number, id=next(self._ids), title=title, body=body.get("body"), user=req.user or "unknown"
        )
        issue.labels = self._label_names(r, body.get("labels") or [])
        r.issues[number] = issue
        doc = self._issue_doc(r, issue)
        return _Response(201, doc, {"Location": doc["url"]})

    def _label_names(self, r: _Repo, names: list[Any]) -> list[str]:
        out: list[str] = []
        for n in names:
            name = n.get("name") if isinstance(n, dict) else n
            if not isinstance(name, str) or not name:
                raise _validation("Label", "invalid", field_="name")
            label = self._label(r, name, create=True)
            if label.name not in out:
                out.append(label.name)
        return out

    def _edit_issue(self, req: _Request, r: _Repo, issue: _Issue) -> _Response:
        body = req.json()
        if "title" in body:
            issue.title = str(body["title"])
        if "body" in body:
            issue.body = body["body"]
        if "labels" in body:
            issue.labels = self._label_names(r, body["labels"] or [])
        state = body.get("state")
        if state == "closed":
            self._close(r, issue, req.user or "unknown", body.get("state_reason"))
        elif state == "open" and issue.state == "closed":
            if issue.pull is not None and issue.pull.merged:
                raise _validation(
                    "Issue",
                    "custom",
                    "state cannot be changed. The pull request has already been merged.",
                    "state",
                )
            issue.state, issue.closed, issue.closed_by, issue.state_reason = "open", None, None, "reopened"
        issue.updated = time.time()
        return _Response(200, self._issue_doc(r, issue))

    def _issue_labels(self, req: _Request, r: _Repo, issue: _Issue, name: str) -> _Response:
        m = req.method

        def current() -> _Response:
            return _Response(200, [self._label_doc(r, self._label(r, n, create=True)) for n in issue.labels])

        if name:
            if m != "DELETE":
                raise _HttpError(404, "Not Found")
            have = [n for n in issue.labels if n.lower() == name.lower()]
            if not have:
                raise _HttpError(404, "Label does not exist")
            issue.labels = [n for n in issue.labels if n.lower() != name.lower()]
            issue.updated = time.time()
            return current()
        if m == "GET":
            return self._page(req, current().body)
        body = req.json()
        names = body.get("labels", []) if isinstance(body, dict) else body
        if not isinstance(names, list):
            raise _validation("Label", "invalid", field_="labels")
        if m == "POST":
            for n in self._label_names(r, names):
                if n not in issue.labels:
                    issue.labels.append(n)
        elif m == "PUT":
            issue.labels = self._label_names(r, names)
        elif m == "DELETE":
            issue.labels = []
            return _Response(204)
        else:
            raise _HttpError(404, "Not Found")
        issue.updated = time.time()
        return current()

    def _labels_route(self, req: _Request, r: _Repo, rest: list[str]) -> _Response:
        m = req.method
        if not rest:
            if m == "GET":
                return self._page(req, [self._label_doc(r, lb) for lb in r.labels.values()])
            if m == "POST":
                body = req.json()
                name = body.get("name")
                if not isinstance(name, str) or not name:
                    raise _validation("Label", "missing_field", field_="name")
                if name.lower() in r.labels:
                    raise _validation("Label", "already_exists", field_="name")
                color = str(body.get("color") or EMPTY_LABEL_COLOR).lstrip("#").lower()
                if len(color) != 6 or any(ch not in "0123456789abcdef" for ch in color):
                    raise _validation("Label", "invalid", field_="color")
                lb = _Label(next(self._ids), name, color, body.get("description"))
                r.labels[name.lower()] = lb
                doc = self._label_doc(r, lb)
                return _Response(201, doc, {"Location": doc["url"]})
            raise _HttpError(404, "Not Found")
        name = "/".join(rest)
        found = r.labels.get(name.lower())
        if found is None:
            raise _HttpError(404, "Not Found")
        lb = found
        if m == "GET":
            return _Response(200, self._label_doc(r, lb))
        if m == "DELETE":
            del r.labels[name.lower()]
            for i in r.issues.values():
                i.labels = [n for n in i.labels if n.lower() != name.lower()]
            return _Response(204)
        raise _HttpError(404, "Not Found")
