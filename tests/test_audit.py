"""`deployctl audit`: the Markdown, JSON and HTML exports, from the status query and from history alone.

The renderers are pure, so most checks run on a hand-built `DeployStatus`; then whole com and gov deploys
on the dev server are exported and checked field by field, the HTML page is opened in headless Chromium,
and a deploy whose worker is gone is exported from its history.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import re
import struct
import uuid
import xml.etree.ElementTree as ET
import zlib
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options as cmarkgfm_options
from pydantic import BaseModel
from temporalio import workflow
from temporalio.api.common.v1 import ActivityType, Payloads, WorkflowType
from temporalio.api.history.v1 import (
    ActivityTaskCompletedEventAttributes,
    ActivityTaskScheduledEventAttributes,
    HistoryEvent,
    WorkflowExecutionCompletedEventAttributes,
    WorkflowExecutionStartedEventAttributes,
)
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from starter.audit import (
    FROM_HISTORY,
    FROM_QUERY,
    AuditRecord,
    ReceivedAction,
    audit_export,
    fetch_audit,
    record_from_history,
    render_audit,
)
from starter.audit.common import audit_now
from starter.audit.md import _md
from starter.cli import render_audit as cli_render_audit
from starter.client import Refused, send_action, start_deploy
from starter.devstack import wait_for_step
from starter.signing import sign_payload
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.verify import verify_export
from tests import keys
from tests.conftest import (
    CONFIGS_REPO,
    DIFF_LINES,
    GATE1,
    GATE2,
    OUTSIDER,
    OWNER,
    PARAMS,
    SRE1,
    SRE2,
    Deployment,
)
from tests.support import act
from tests.test_cli import deployctl
from worker import create_worker
from workflows import signing
from workflows.messages import status_lines
from workflows.models import (
    Action,
    ActionInput,
    AuditEntry,
    BuildInfo,
    Cloud,
    DeployResult,
    DeploySettings,
    DeployStatus,
    Outcome,
    Pccr,
    Process,
    ReleaseWindow,
    Roster,
    Rules,
    ServiceSpec,
    SlackPostInput,
    SlackPostResult,
    Step,
)
from workflows.steps import steps_for

CHROMIUM = Path("/usr/bin/chromium")
SREG1, SREG2 = "U0SREG1", "U0SREG2"  # the sre-gov Slack user group S0SREGOV (tests/conftest.py)
XSS = "<script>alert(1)</script>"
WID = "deploy-payments-api-kprod-1a2b3c4d"
UI = f"http://127.0.0.1:8233/namespaces/default/workflows/{WID}"
T0 = datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)
BRIDGE_ID = "slack-bridge:SHA256:bridgeBRIDGEbridge0000000000000000000000000"
GATE2_ID = "ssh:SHA256:gate2+GATE2/gate20000000000000000000000000000000"


def _plain(url: str | None) -> str:
    """A URL as the Markdown audit writes it: text, its `://` escaped so that it is not a link."""
    return (url or "").replace("://", "\\://")


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sample() -> DeployStatus:
    """A finished com deploy with accepted, refused and system entries, rosters with groups, a diff."""
    diff = "~ deployment/app image: app:1.4.1 -> app:1.4.2\n~ deployment/app replicas: 2 -> 3\n"
    return DeployStatus(
        workflow_id=WID,
        process=Process.RELEASE,
        cloud=Cloud.COM,
        service="payments-api",
        environment="kprod",
        step=Step.DEPLOYING,
        waiting_on=[],
        allowed_actions=[],
        pccr=Pccr(id=WID, url=UI, state="done", params=dict(PARAMS)),
        build=BuildInfo(
            number=7,
            url="http://jenkins.test/job/deploy-payments-api/7/",
            diff=diff,
            diff_sha256=hashlib.sha256(diff.encode()).hexdigest(),
            result="SUCCESS",
        ),
        release_window=ReleaseWindow(name="2026.03", start=at(0), end=at(4 * 3600)),
        sre=SRE1,
        outcome=Outcome.SUCCEEDED,
        outcome_reason="build #7 ended SUCCESS",
        slack_thread="1712345678.000100",
        ui_url=UI,
        rosters=[
            Roster(
                step=Step.PCCR_REVIEW,
                time=at(0),
                eligible=[GATE1, GATE2],
                groups={"pccr-gatekeeper": [GATE1, GATE2, OWNER]},
            ),
            Roster(
                step=Step.SRE_ASSIGNMENT,
                time=at(300),
                eligible=[GATE1, GATE2],
                groups={"pccr-gatekeeper": [GATE1, GATE2, OWNER], "sre": [SRE1, SRE2]},
            ),
            Roster(step=Step.CLEARANCE, time=at(600), eligible=[SRE1]),
            Roster(step=Step.TRIGGER, time=at(900), eligible=[OWNER]),
            Roster(step=Step.DIFF_VALIDATION, time=at(1300), eligible=[OWNER]),
            Roster(step=Step.DEPLOY_APPROVAL, time=at(1500), eligible=[SRE1]),
            Roster(step=Step.DEPLOYING, time=at(1700), eligible=[]),
        ],
        audit=[
            AuditEntry(
                time=at(60),
                step=Step.PCCR_REVIEW,
                action="approve",
                actor=OWNER,
                channel="cli",
                accepted=False,
                reason=f"separation of duties: {OWNER} is a code owner of payments-api",
                comment=XSS,
            ),
            AuditEntry(
                time=at(300),
                step=Step.PCCR_REVIEW,
                action="approve",
                actor=GATE1,
                channel="slack",
                accepted=True,
                role="pccr-gatekeeper",
                comment="params | look right",
                identity=BRIDGE_ID,
            ),
            AuditEntry(
                time=at(500),
                step=Step.SRE_ASSIGNMENT,
                action="assign",
                actor="<b>mallory</b>",
                channel="signal",
                accepted=False,
                reason="<b>mallory</b> may not assign at sre_assignment",
            ),
            AuditEntry(
                time=at(600),
                step=Step.SRE_ASSIGNMENT,
                action="assign",
                actor=GATE2,
                channel="cli",
                accepted=True,
                role="pccr-gatekeeper",
                identity=GATE2_ID,
            ),
            AuditEntry(
                time=at(900),
                step=Step.CLEARANCE,
                action="approve",
                actor=SRE1,
                channel="cli",
                accepted=True,
                role="assigned-sre",
            ),
            AuditEntry(
                time=at(1000),
                step=Step.TRIGGER,
                action="trigger",
                actor=OWNER,
                channel="cli",
                accepted=True,
                role="code-owner",
            ),
            AuditEntry(
                time=at(1200),
                step=Step.TRIGGER,
                action="note",
                actor="deployctl",
                channel="deployctl",
                accepted=True,
                reason="build #7 started",
                identity="deployctl",
            ),
            AuditEntry(
                time=at(1400),
                step=Step.DIFF_VALIDATION,
                action="validate_diff",
                actor=OWNER,
                channel="cli",
                accepted=False,
                reason="sha256 0000 is not the build's diff",
            ),
            AuditEntry(
                time=at(1500),
                step=Step.DIFF_VALIDATION,
                action="validate_diff",
                actor=OWNER,
                channel="cli",
                accepted=True,
                role="code-owner",
            ),
            AuditEntry(
                time=at(1700),
                step=Step.DEPLOY_APPROVAL,
                action="approve",
                actor=SRE1,
                channel="slack",
                accepted=True,
                role="assigned-sre",
            ),
        ],
    )


def svg_of(page: str) -> ET.Element:
    """The page's one inline SVG, parsed as XML (so it is well-formed)."""
    start, end = page.index("<svg"), page.index("</svg>") + len("</svg>")
    return ET.fromstring(page[start:end])


NS = "{http://www.w3.org/2000/svg}"


def num(element: ET.Element, attribute: str) -> float:
    return float(element.get(attribute) or "nan")


def assert_self_contained(page: str) -> None:
    low = page.lower()
    assert low.count("<svg") == 1
    assert "<script" not in low and "javascript:" not in low
    assert "<link" not in low and "<img" not in low and "@import" not in low and "<iframe" not in low
    assert "src=" not in low and "url(" not in low  # nothing is loaded: no sources, no CSS urls
    # http(s) appears only in plain links, in text and in the SVG's namespace.
    for m in re.finditer(r'(\w[\w-]*)="(https?://[^"]*)"', page):
        assert m.group(1) in {"href", "xmlns"}, m.group(0)
        if m.group(1) == "href":
            assert page[: m.start()].rstrip().endswith("<a"), m.group(0)
    assert "default-src 'none'" in page  # and the page forbids loading anything anyway


# ------------------------------------------------------------------------------------- unit: renderers


def test_render_audit_is_importable_from_the_cli():
    assert cli_render_audit is render_audit


def test_the_history_parser_matches_the_real_names():
    """The fallback matches activity types and search attributes by name: each is the name the worker
    registers (an `@activity.defn` takes its method's name); search attributes come from workflows/search_attributes.py."""
    from activities.github import GithubActivities
    from activities.jenkins import JenkinsActivities
    from activities.rules import RulesActivities
    from activities.slack import SlackActivities
    from starter.audit import collect
    from workflows.deploy import DeployWorkflow

    assert collect.LOAD_RULES == RulesActivities.load_rules.__name__
    assert collect.JOB_PARAMETERS == JenkinsActivities.job_parameters.__name__
    assert collect.READ_DIFF == JenkinsActivities.read_diff.__name__
    assert collect.TRIGGER_BUILD == JenkinsActivities.trigger_build.__name__
    assert collect.WAIT_BUILD_STARTED == JenkinsActivities.wait_build_started.__name__
    assert collect.WAIT_BUILD_RESULT == JenkinsActivities.wait_build_result.__name__
    assert collect.OPEN_VERSION_PR == GithubActivities.open_version_pr.__name__
    assert collect.OPEN_PCCR_ISSUE == GithubActivities.open_pccr_issue.__name__
    assert collect.POST_MESSAGE == SlackActivities.post_message.__name__
    assert collect.WORKFLOW_TYPE == workflow_defn_name(DeployWorkflow)


def workflow_defn_name(cls: type) -> str:
    from temporalio import workflow

    defn = workflow._Definition.from_class(cls)
    assert defn is not None
    return defn.name or cls.__name__


def test_markdown_report():
    st = sample()
    md = render_audit(st, "md")
    assert md.startswith(f"# Audit of {WID}\n")
    # The header says what `status` says (workflows/messages.py `status_facts`), escaped for Markdown.
    assert f"- RELEASE deploy of payments-api to kprod ({WID}, com-cloud)\n- workflow id: {WID}\n" in md
    assert "- outcome: succeeded — build #7 ended SUCCESS (ended at deploying)" in md
    assert f"- SRE: {SRE1}" in md and "- build result: SUCCESS" in md
    assert "- release window: 2026.03 2026-03-02T14:00:00Z – 2026-03-02T18:00:00Z" in md
    # The PCCR and its parameters as a table.
    assert "- backend: builtin" in md and "- state: done" in md
    assert "| parameter | value |" in md
    for k, v in PARAMS.items():
        assert f"| {k} | {v} |" in md
    # Every action, accepted or refused, with role, channel, reason and comment (escaped for a table).
    assert (
        f"| pccr_review | approve | {GATE1} | {BRIDGE_ID} | pccr-gatekeeper | slack | yes |  "
        "| params \\| look right |" in md
    )
    assert f"| pccr_review | approve | {OWNER} | claimed |  | cli | no | separation of duties" in md
    assert f"| sre_assignment | assign | {GATE2} | {GATE2_ID} | pccr-gatekeeper | cli | yes |" in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md and XSS not in md and "<b>" not in md
    # Rosters with the group rosters captured then.
    assert f"pccr-gatekeeper: {GATE1}, {GATE2}, {OWNER}; sre: {SRE1}, {SRE2}" in md
    # Links, the diff's sha256 and the diff itself in a code block.
    # URLs are text, not links: `://` is escaped (it renders as itself).
    assert f"- PCCR: {_plain(UI)}" in md and f"- Web UI: {_plain(UI)}" in md
    assert f"- Build: {_plain(st.build.url)}" in md and "- Slack thread: thread 1712345678.000100" in md
    assert f"sha256: {st.build.diff_sha256}" in md
    assert "```diff\n" + (st.build.diff or "").rstrip("\n") + "\n```" in md
    assert FROM_HISTORY not in md


def test_markdown_fence_outgrows_backticks_in_the_diff():
    st = sample()
    st.build.diff = "a ``` b\n"
    md = render_audit(st, "md")
    assert "````diff\na ``` b\n````" in md


# Everything Markdown or HTML could make something of: a link, an image, raw HTML, emphasis, a code span,
# strikethrough, math, bare links GitHub would make links of, an e-mail address, a table pipe, a backslash
# and a heading's closing sequence.
EVIL = (
    "x](https://evil.example) <img src=x onerror=alert(1)> [y](javascript:alert(1)) ![i](https://evil/p.png) "
    "*b* __s__ `c` ~~d~~ $m$ &amp; https://evil.example www.evil.example mallory@evil.example | \\ #"
)
EVIL_URL = "https://evil.example/[x](https://evil)/<img src=x>"


def hostile() -> AuditRecord:
    """Every value a deploy takes from outside set to EVIL (URLs to EVIL_URL), in a record from history so
    that the table of received Signals and Updates is rendered too."""
    st = sample()
    entry = st.audit[0].model_copy(
        update={
            "action": EVIL,
            "actor": EVIL,
            "identity": EVIL,
            "role": EVIL,
            "channel": EVIL,
            "reason": EVIL,
            "comment": EVIL,
        }
    )
    st = st.model_copy(
        update={
            "workflow_id": EVIL,
            "service": EVIL,
            "environment": EVIL,
            "sre": EVIL,
            "version": EVIL,
            "outcome_reason": EVIL,
            "config_sha256": EVIL,
            "ui_url": EVIL_URL,
            "version_pr": EVIL_URL,
            "slack_thread": EVIL,
            "audit": [entry],
            "pccr": Pccr(
                id=EVIL, url=EVIL_URL, state=EVIL, backend=EVIL, vp_approved_by=EVIL, params={EVIL: EVIL}
            ),
            "build": st.build.model_copy(update={"url": EVIL_URL, "diff_sha256": EVIL, "result": EVIL}),
            "rosters": [Roster(step=Step.PCCR_REVIEW, time=at(0), eligible=[EVIL], groups={EVIL: [EVIL]})],
            "release_window": ReleaseWindow(name=EVIL, start=at(0), end=at(60)),
        }
    )
    received = ReceivedAction(
        time=at(30),
        kind="signal",
        action=EVIL,
        actor=EVIL,
        step=EVIL,
        channel=EVIL,
        comment=EVIL,
        result=EVIL,
    )
    return AuditRecord(
        status=st, source=FROM_HISTORY, opened_by=EVIL, triage_channel=EVIL, received=[received]
    )


class _Page(HTMLParser):
    """The tags of an HTML fragment, its text per element kind, and its table rows as lists of cell texts."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.rows: list[list[str]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str] = []
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        while self._open and self._open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for tag in set(self._open):
            self.texts.setdefault(tag, []).append(data)


def gfm(md: str) -> str:
    """The Markdown as GitHub renders it (cmark-gfm with its extensions), raw HTML let through, as the
    least careful renderer would."""
    return cmarkgfm.github_flavored_markdown_to_html(md, options=cmarkgfm_options.CMARK_OPT_UNSAFE)


def test_markdown_renders_every_outside_value_as_its_text():
    md = render_audit(hostile(), "md")
    assert "<img" not in md and "<script" not in md  # no raw HTML in the file itself
    page = _Page(gfm(md))
    tags = {tag for tag, _ in page.tags}
    # Nothing became a link, an image, HTML, emphasis or strikethrough; the only code is the e-mail
    # address (a code span, so that it is no mailto link) and the diff's block.
    assert tags <= {
        "h1",
        "h2",
        "h3",
        "p",
        "ul",
        "li",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "code",
        "pre",
        "blockquote",
        "strong",
    }, tags
    assert set(page.texts["code"]) == {"mallory@evil.example", sample().build.diff}
    assert page.texts["strong"] == [FROM_HISTORY]  # the one bold text is ours
    # Every table row has as many cells as its header: no `|` from outside split a cell.
    assert [len(row) for row in page.rows] == [2, 2] + [10, 10] + [8, 8] + [3, 3]
    # And each value renders as exactly itself.
    assert "".join(page.texts["h1"]) == f"Audit of {EVIL}"
    assert page.rows[1] == [EVIL, EVIL]
    assert page.rows[3][2:7] == [EVIL, EVIL, EVIL, EVIL, EVIL] and page.rows[3][8:] == [EVIL, EVIL]
    assert page.rows[5][2:] == [EVIL] * 6
    assert page.rows[7][1:] == [EVIL, f"{EVIL}: {EVIL}"]
    items = page.texts["li"]
    for line in (
        f"workflow id: {EVIL}",
        f"SRE: {EVIL}",
        f"version: {EVIL}",
        f"Build: {EVIL_URL}",
        f"Web UI: {EVIL_URL}",
        f"Version PR: {EVIL_URL}",
        f"link: {EVIL_URL}",
        f"id: {EVIL}",
    ):
        assert line in "".join(items), line
    assert f"sha256: {EVIL}" in "".join(page.texts["p"])


def test_html_report_renders_every_outside_value_as_its_text():
    page_html = render_audit(hostile(), "html")
    page = _Page(page_html)
    for tag, attrs in page.tags:
        assert tag not in {"img", "script", "iframe", "object", "embed", "link", "base", "form"}, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "a":  # only http(s) links, shown as the URL they go to
            assert attrs["href"] == EVIL_URL
    assert "javascript:" not in page_html.split("<body>")[1].replace("javascript:alert(1))", "")
    assert "".join(page.texts["h1"]) == f"Audit of {EVIL}"
    assert [EVIL, EVIL] in page.rows  # the parameters table
    assert "default-src 'none'" in page_html


def running(st: DeployStatus, **update: object) -> DeployStatus:
    """`st` while it still runs: at deploy_approval, waiting on the SRE for four minutes."""
    return st.model_copy(
        update={
            "outcome": None,
            "outcome_reason": None,
            "step": Step.DEPLOY_APPROVAL,
            "waiting_on": [SRE1],
            "allowed_actions": [Action.APPROVE, Action.REJECT],
            "waiting_for": f"{SRE1} to approve",
            "waiting_since": at(1460),
            "blocked_by": "deploy-payments-api-kprod-00000000",
            "version_pr": "http://github.test/o/r/pull/3",
            "version_pr_head_sha": "0123456789abcdef",
            **update,
        }
    )


def test_the_header_says_what_status_says():
    """One wording: each line `status` prints is a line of the Markdown header, escaped whole; the audit's
    own facts follow. With no clock, the audit ages what the deploy waits for up to its last event."""
    st = running(sample())
    record = AuditRecord(status=st, opened_by=OWNER, started=at(-60))
    assert audit_now(record) == max(e.time for e in st.audit) == at(1700)
    md = render_audit(record, "md")
    header = md.split("\n## Links")[0].split("\n")[2:-1]
    shown = [f"- {_md(line)}" for line in status_lines(st, audit_now(record))]
    assert header[0] == shown[0] and header[2 : len(shown) + 1] == shown[1:]
    assert header[1] == f"- workflow id: {WID}"
    assert header[len(shown) + 1 :] == [
        f"- opened by: {OWNER} at 2026-03-02T13:59:00Z",
        "- build result: SUCCESS",
        "- release window: 2026.03 2026-03-02T14:00:00Z – 2026-03-02T18:00:00Z",
    ]
    assert f"- waits for: {SRE1} to approve (4m)" in header
    assert audit_now(record.model_copy(update={"closed": at(9000)})) == at(9000)
    page = render_audit(record, "html")
    assert "<tr><th>waits for</th><td>U0SRE1 to approve (4m)</td></tr>" in page
    assert (
        "<tr><th>blocked by</th><td>waits for deploy <code>deploy-payments-api-kprod-00000000</code>" in page
    )
    ended = render_audit(AuditRecord(status=sample(), closed=at(5000)), "html")
    assert '<tr><th>outcome</th><td><span class="badge succeeded">succeeded</span> — build #7' in ended


def test_a_running_deploys_header_renders_every_outside_value_as_its_text():
    """The live facts only a running deploy has (who and what it waits for, the deploy it waits behind,
    the version PR's head) are escaped too, in Markdown and in HTML."""
    record = hostile()
    record.status = running(
        record.status,
        waiting_on=[EVIL, EVIL],
        waiting_for=EVIL,
        blocked_by=EVIL,
        version_pr=EVIL_URL,
        version_pr_head_sha=EVIL,
        audit=[record.status.audit[0].model_copy(update={"accepted": True})],
    )
    md = render_audit(record, "md")
    assert "<img" not in md and "<script" not in md
    page = _Page(gfm(md))
    assert {tag for tag, _ in page.tags} <= {
        *("h1", "h2", "h3", "p", "ul", "li", "table", "thead", "tbody", "tr", "th", "td"),
        *("code", "pre", "blockquote", "strong"),
    }
    assert page.texts["strong"] == [FROM_HISTORY]
    items = "".join(page.texts["li"])
    for line in (
        f"waiting on: {EVIL}, {EVIL}",
        f"waits for: {EVIL}",
        f"waits for deploy {EVIL} of the same service",
        f"version PR: {EVIL_URL} (head {EVIL[:12]}",
        f"last action: {EVIL} by {EVIL} at pccr_review",
    ):
        assert line in items, line
    page_html = render_audit(record, "html")
    for tag, attrs in _Page(page_html).tags:
        assert tag not in {"img", "script", "iframe", "object", "embed", "link", "base", "form"}, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "a":
            assert attrs["href"] == EVIL_URL


def test_json_report_keeps_the_status_audit_entries():
    st = sample()
    doc = json.loads(render_audit(st, "json"))
    status_json = json.loads(st.model_dump_json(indent=2))  # what `status --json` prints
    assert doc["audit"] == status_json["audit"]
    assert doc["rosters"] == status_json["rosters"]
    assert doc["rosters"][1]["groups"] == {"pccr-gatekeeper": [GATE1, GATE2, OWNER], "sre": [SRE1, SRE2]}
    assert (doc["workflow_id"], doc["process"], doc["cloud"], doc["service"], doc["environment"]) == (
        WID,
        "release",
        "com",
        "payments-api",
        "kprod",
    )
    assert doc["source"] == FROM_QUERY and doc["from_history"] is False and "received" not in doc
    assert doc["outcome"] == "succeeded" and doc["outcome_reason"] == "build #7 ended SUCCESS"
    assert doc["pccr"] == status_json["pccr"] and doc["params"] == PARAMS
    assert doc["build"] == status_json["build"] and doc["diff_sha256"] == st.build.diff_sha256
    assert doc["release_window"]["name"] == "2026.03"
    assert doc["links"] == {
        "pccr": UI,
        "version_pr": None,
        "build": st.build.url,
        "web_ui": UI,
        "slack_thread": "thread 1712345678.000100",
    }
    refused = [e for e in doc["audit"] if not e["accepted"]]
    assert [e["comment"] for e in refused][0] == XSS  # JSON keeps the text as it was typed


def test_html_page_is_self_contained_escaped_and_has_a_timeline():
    st = sample()
    page = render_audit(st, "html")
    assert page.startswith("<!DOCTYPE html>")
    assert_self_contained(page)
    # User input is escaped wherever it lands (tables, SVG labels, SVG tooltips).
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>mallory</b>" not in page and "&lt;b&gt;mallory&lt;/b&gt;" in page
    # The tables: parameters, actions (accepted and refused), rosters with groups, links, the diff.
    for k, v in PARAMS.items():
        assert f"<tr><td><code>{k}</code></td><td><code>{v}</code></td></tr>" in page
    assert page.count('<tr class="refused">') == 3 and page.count('<tr class="accepted">') == 6
    assert page.count('<tr class="system">') == 1
    assert f"<b>sre</b>: {SRE1}, {SRE2}" in page
    assert f'<a href="{st.build.url}" rel="noreferrer noopener">' in page
    assert (st.build.diff_sha256 or "-") in page and "app:1.4.1 -&gt; app:1.4.2" in page

    svg = svg_of(page)
    lanes = [g for g in svg.iter(f"{NS}g") if g.get("class") == "lane"]
    assert [g.get("data-step") for g in lanes] == [r.step.value for r in st.rosters]  # in order
    marks = {
        kind: [c for c in svg.iter(f"{NS}circle") if c.get("class") == f"mark {kind}"]
        for kind in ("accepted", "refused")
    }
    assert len(marks["accepted"]) == 6 and len(marks["refused"]) == 3
    assert all(c.get("fill") == "#ffffff" and c.get("stroke") == "#cf222e" for c in marks["refused"])
    assert all(c.get("fill") == "#1a7f37" for c in marks["accepted"])
    # Each bar runs from its step's start to the next step's start; markers sit at their times.
    bars = [next(r for r in g.iter(f"{NS}rect") if r.get("class") == "bar") for g in lanes]
    for this, nxt in zip(bars, bars[1:], strict=False):
        assert abs(num(this, "x") + num(this, "width") - num(nxt, "x")) < 0.2
    review_marks = [c for c in lanes[0].iter(f"{NS}circle")]
    assert num(bars[0], "x") < num(review_marks[0], "cx") < num(review_marks[1], "cx")
    assert abs(num(review_marks[1], "cx") - num(bars[1], "x")) < 0.2  # approve opened the next
    labels = [t.text for t in lanes[0].iter(f"{NS}text") if t.get("class") == "actor"]
    assert labels == [OWNER, GATE1]


def test_html_timeline_gives_a_step_without_roster_a_lane_of_its_own():
    st = sample()
    st.rosters = st.rosters[:2]
    st.audit = [
        *st.audit[:4],
        AuditEntry(
            time=at(5000),
            step=Step.VERSION_PR_MERGE,
            action="merge",
            actor=SREG1,
            channel="cli",
            accepted=False,
            reason="GitHub refused",
        ),
    ]
    lanes = [g.get("data-step") for g in svg_of(render_audit(st, "html")).iter(f"{NS}g")]
    assert lanes == ["pccr_review", "sre_assignment", "version_pr_merge"]


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="md, json, html"):
        render_audit(sample(), "pdf")


def identities_record() -> AuditRecord:
    """One entry of every kind of identity (SPEC §9), an out-of-policy one with a hostile Jenkins user."""
    st = sample()
    st.audit = [
        AuditEntry(
            time=at(10),
            step=Step.PCCR_REVIEW,
            action="rules",
            actor="deployctl",
            channel="deployctl",
            accepted=True,
            reason="rules read",
            identity="deployctl",
        ),
        AuditEntry(
            time=at(20),
            step=Step.PCCR_REVIEW,
            action="start",
            actor=OWNER,
            channel="cli",
            accepted=True,
            identity=GATE2_ID,
            payload={"actor": OWNER, "workflow_id": WID, "action": "start"},
            signature="-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----",
            key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB4U0OWNER owner@laptop",
        ),
        AuditEntry(
            time=at(300),
            step=Step.PCCR_REVIEW,
            action="approve",
            actor=GATE1,
            channel="slack",
            accepted=True,
            identity=BRIDGE_ID,
        ),
        AuditEntry(
            time=at(400),
            step=Step.SRE_ASSIGNMENT,
            action="assign",
            actor=GATE2,
            channel="signal",
            accepted=True,
        ),
        AuditEntry(
            time=at(900),
            step=Step.VERSION_PR_MERGE,
            action="merged_on_github",
            actor=SREG1,
            channel="github",
            accepted=True,
            identity="github:sreg1",
        ),
        AuditEntry(
            time=at(1700),
            step=Step.DEPLOY_APPROVAL,
            action="answered_in_jenkins",
            actor="<i>eve</i>|x",
            channel="jenkins",
            accepted=True,
            identity="jenkins:<i>eve</i>|x",
            out_of_policy=True,
        ),
    ]
    return AuditRecord(status=st)


LEGEND = (
    "identities: 1 verified (ssh: signed with a key of the actor) · 1 bridge-verified (slack-bridge: a "
    "Slack click the bridge verified and signed) · 2 out-of-band (jenkins:/github: done outside deployctl; "
    "1 ⚠ out of policy) · 1 claimed (claimed: nobody checked) · 1 deployctl (deployctl's own entries)"
)


def test_markdown_shows_identities_apart_with_a_legend():
    md = render_audit(identities_record(), "md")
    assert LEGEND in md.splitlines()  # a line of its own, above the table
    assert "| time | step | action | actor | identity | role | channel | accepted | reason | comment |" in md
    assert f"| start | {OWNER} | {GATE2_ID} | code-owner" not in md  # no role was given: the cell is empty
    assert f"| start | {OWNER} | {GATE2_ID} |  | cli | yes |" in md
    assert f"| approve | {GATE1} | {BRIDGE_ID} |  | slack | yes |" in md
    assert f"| assign | {GATE2} | claimed |  | signal | yes |" in md
    assert f"| merged_on_github | {SREG1} | github:sreg1 |  | github | yes |" in md
    assert "| rules | deployctl | deployctl |  | deployctl | yes |" in md
    # The out-of-policy one is marked, and Jenkins' user name is escaped like any other cell.
    assert (
        "| &lt;i&gt;eve&lt;/i&gt;\\|x | jenkins:&lt;i&gt;eve&lt;/i&gt;\\|x ⚠ out of policy |  | jenkins |"
        in md
    )
    assert md.count("⚠ out of policy") == 2  # the row and the legend
    assert "<i>" not in md


def test_html_shows_identities_apart_with_a_legend():
    page = render_audit(identities_record(), "html")
    assert_self_contained(page)
    assert f'<p class="identities" id="identities">{html.escape(LEGEND)}</p>' in page
    assert "<th>actor</th><th>identity</th><th>role</th>" in page
    kinds = re.findall(r'<td class="identity" data-kind="([a-z-]+)"><code>([^<]*)</code>', page)
    assert kinds == [
        ("deployctl", "deployctl"),
        ("verified", GATE2_ID),
        ("bridge-verified", BRIDGE_ID),
        ("claimed", "claimed"),
        ("out-of-band", "github:sreg1"),
        ("out-of-band", "jenkins:&lt;i&gt;eve&lt;/i&gt;|x"),
    ]
    assert page.count('<span class="oop">⚠ out of policy</span>') == 1
    row = next(r for r in page.split("<tr") if "<td>answered_in_jenkins</td>" in r)
    assert '<span class="oop">⚠ out of policy</span>' in row and "<i>" not in page


def test_json_keeps_every_audit_entry_field_and_counts_identities():
    record = identities_record()
    doc = json.loads(render_audit(record, "json"))
    assert doc["audit"] == [json.loads(e.model_dump_json()) for e in record.status.audit]
    start = doc["audit"][1]
    assert set(start) == set(AuditEntry.model_fields)
    assert start["payload"] == {"actor": OWNER, "workflow_id": WID, "action": "start"}
    assert start["signature"].startswith("-----BEGIN SSH SIGNATURE-----") and start["key"].startswith("ssh-")
    assert [e["out_of_policy"] for e in doc["audit"]] == [False] * 5 + [True]
    assert doc["identities"] == {
        "verified": 1,
        "bridge-verified": 1,
        "out-of-band": 2,
        "claimed": 1,
        "deployctl": 1,
        "out_of_policy": 1,
    }


def test_a_deploy_whose_cloud_is_not_known_yet_renders():
    st = sample()
    st.cloud = None
    st.config_sha256 = "ab" * 32
    md = render_audit(st, "md")
    assert f"- RELEASE deploy of payments-api to kprod ({WID}, cloud not known yet)" in md
    assert f"- workers' config sha256: {'ab' * 32}" in md
    page = render_audit(st, "html")
    assert f"(<code>{WID}</code>, cloud not known yet) — " in page
    doc = json.loads(render_audit(st, "json"))
    assert doc["cloud"] is None and doc["config_sha256"] == "ab" * 32


# ------------------------------------------------------------------- unit: the record from history alone

CONVERTER = pydantic_data_converter


def _payloads(*values: object) -> Payloads:
    return Payloads(payloads=CONVERTER.payload_converter.to_payloads(list(values)))


def _event(event_id: int, seconds: int, **attributes: object) -> HistoryEvent:
    ev = HistoryEvent(event_id=event_id, **attributes)  # type: ignore[arg-type]
    ev.event_time.FromDatetime(at(seconds).replace(tzinfo=None))
    return ev


def _started(intent: object, workflow_type: str = "Deploy") -> HistoryEvent:
    return _event(
        1,
        0,
        workflow_execution_started_event_attributes=WorkflowExecutionStartedEventAttributes(
            workflow_type=WorkflowType(name=workflow_type), input=_payloads(intent)
        ),
    )


def _activity(
    scheduled_id: int, seconds: int, name: str, result: BaseModel, input: BaseModel | None = None
) -> list[HistoryEvent]:
    return [
        _event(
            scheduled_id,
            seconds,
            activity_task_scheduled_event_attributes=ActivityTaskScheduledEventAttributes(
                activity_type=ActivityType(name=name), input=_payloads(input) if input else None
            ),
        ),
        _event(
            scheduled_id + 1,
            seconds,
            activity_task_completed_event_attributes=ActivityTaskCompletedEventAttributes(
                scheduled_event_id=scheduled_id, result=_payloads(result)
            ),
        ),
    ]


def _completed(event_id: int, seconds: int, result: DeployResult) -> HistoryEvent:
    return _event(
        event_id,
        seconds,
        workflow_execution_completed_event_attributes=WorkflowExecutionCompletedEventAttributes(
            result=_payloads(result)
        ),
    )


INTENT = {
    "process": "oow",
    "service": "payments-api",
    "environment": "kprod-gov",
    "params": dict(PARAMS),
    "version": "1.4.2",
    "actor": OWNER,
    "channel": "cli",
    "issued_at": "2026-03-02T14:00:00Z",
    "nonce": "9f2c4e1a0b7d6c35",
    "signature": "-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----",
}


def _rules(sha: str, triage_channel: str = "C0GOV") -> Rules:
    return Rules(
        config_path="/etc/deployctl.toml",
        config_sha256=sha,
        service=ServiceSpec(name="payments-api", code_owners=(OWNER,), jenkins_job="deploy-payments-api"),
        cloud=Cloud.GOV,
        settings=DeploySettings(
            ui_url="https://temporal.example/", namespace="deploys", triage_channel=triage_channel
        ),
    )


async def test_record_from_history_reads_the_intent_and_the_first_rules():
    events = [
        _started(INTENT),
        *_activity(5, 1, "load_rules", _rules("aa" * 32)),
        *_activity(  # the thread's root: a post without thread_ts in the first rules' triage channel
            7,
            2,
            "post_message",
            SlackPostResult(channel="C0GOV", ts="1712345678.000100"),
            SlackPostInput(channel="C0GOV", text="payments-api → kprod-gov"),
        ),
        *_activity(9, 30, "load_rules", _rules("bb" * 32, triage_channel="C0OTHER")),
        _completed(11, 40, DeployResult(outcome=Outcome.FAILED, reason="build #3 ended FAILURE")),
    ]
    record = await record_from_history(WID, events, CONVERTER)
    st = record.status
    assert record.from_history and record.opened_by == OWNER and record.params == PARAMS
    assert (st.process, st.cloud, st.service, st.environment, st.version) == (
        Process.OOW,
        Cloud.GOV,
        "payments-api",
        "kprod-gov",
        "1.4.2",
    )
    # The settings are the first rules' (what the deploy runs by); the config sha the last one read.
    assert st.ui_url == f"https://temporal.example/namespaces/deploys/workflows/{WID}"
    assert record.triage_channel == "C0GOV" and st.config_sha256 == "bb" * 32
    assert st.step is steps_for(Process.OOW, Cloud.GOV, False)[0].step
    assert st.pccr is not None and st.pccr.params == PARAMS and st.pccr.url == st.ui_url
    assert (st.outcome, record.execution) == (Outcome.FAILED, "completed")
    md = render_audit(record, "md")
    assert st.slack_thread == "1712345678.000100"
    assert (
        ", gov-cloud)" in md and FROM_HISTORY in md and "- Slack thread: C0GOV thread 1712345678.000100" in md
    )


async def test_record_from_history_before_the_rules_are_read_or_of_a_refused_start():
    # Only the start: the workers have not answered yet.
    record = await record_from_history(WID, [_started(INTENT)], CONVERTER)
    assert record.status.cloud is None and record.status.pccr is None
    assert record.triage_channel == DeploySettings().triage_channel
    assert record.status.ui_url == f"{DeploySettings().ui_url}/namespaces/default/workflows/{WID}"
    for fmt in ("md", "html"):
        assert "cloud not known yet" in render_audit(record, fmt)
    assert json.loads(render_audit(record, "json"))["cloud"] is None

    # The workers' config does not know the service: the start is refused and opens nothing.
    refused = Rules(config_path="/etc/deployctl.toml", config_sha256="cc" * 32, refusal="no such service")
    events = [
        _started(INTENT),
        *_activity(5, 1, "load_rules", refused),
        _completed(7, 2, DeployResult(outcome=Outcome.REJECTED, reason="no such service")),
    ]
    record = await record_from_history(WID, events, CONVERTER)
    assert record.status.cloud is None and record.status.outcome is Outcome.REJECTED
    assert record.status.config_sha256 == "cc" * 32 and "cloud not known yet" in render_audit(record, "md")

    # Known service, but the start was refused (a bad signature): still nothing opened, cloud unknown.
    events = [
        _started(INTENT),
        *_activity(5, 1, "load_rules", _rules("dd" * 32)),
        _completed(7, 2, DeployResult(outcome=Outcome.REJECTED, reason="signature does not verify")),
    ]
    record = await record_from_history(WID, events, CONVERTER)
    assert record.status.cloud is None and record.status.pccr is None


async def test_record_from_history_of_a_malformed_start_or_another_workflow():
    record = await record_from_history(WID, [_started({"service": 5, "actor": OWNER})], CONVERTER)
    assert (record.status.service, record.status.environment, record.opened_by) == (
        "unknown",
        "unknown",
        OWNER,
    )
    assert "cloud not known yet" in render_audit(record, "html")
    odd = {"process": ["oow"], "service": "svc", "params": {"A": 1}, "version": 7}
    record = await record_from_history(WID, [_started(odd)], CONVERTER)
    assert (record.status.process, record.status.service, record.params) == (Process.OOW, "svc", {"A": "1"})
    assert record.status.version is None and record.opened_by == "unknown"
    with pytest.raises(ValueError, match="is not a deploy"):
        await record_from_history(WID, [_started(INTENT, workflow_type="DeployLock")], CONVERTER)
    with pytest.raises(ValueError, match="has no history"):
        await record_from_history(WID, [], CONVERTER)


# --------------------------------------------------------------------------- helpers for the dev server


async def refuse(client: Client, wid: str, action: Action, actor: str, step: Step, **extra: str) -> None:
    """A refused action, recorded in the audit trail (a Signal cannot be answered, so it is recorded).
    Signed with the actor's own key (SPEC §9), so it is the rules that refuse it, not the signature check."""
    payload = sign_payload(
        {"actor": actor, "step": step.value, **extra}, wid, action.value, keys.private(actor)
    )
    await client.get_workflow_handle(wid).signal(action.value, payload)


async def com_deploy(client: Client, d: Deployment) -> str:
    """A whole com deploy with two refusals and a comment; returns once it has succeeded."""
    wid, _ = await start_deploy(client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    await refuse(client, wid, Action.APPROVE, OWNER, Step.PCCR_REVIEW, comment=XSS)
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW, comment="params look right")
    await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE2)
    await refuse(client, wid, Action.ASSIGN, GATE2, Step.SRE_ASSIGNMENT, sre=OUTSIDER)
    await act(client, wid, Action.ASSIGN, GATE2, Step.SRE_ASSIGNMENT, sre=SRE1)
    await act(client, wid, Action.APPROVE, SRE1, Step.CLEARANCE)
    await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=30)
    await act(
        client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256 or ""
    )
    await act(client, wid, Action.APPROVE, SRE1, Step.DEPLOY_APPROVAL, comment="ship it")
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED
    return wid


def ui_link(wid: str) -> str:
    return f"http://127.0.0.1:8233/namespaces/default/workflows/{wid}"


EXPECTED_DIFF = "\n".join(DIFF_LINES) + "\n"


# ---------------------------------------------------------------------------------------- dev server


async def test_audit_of_a_finished_com_deploy(
    client: Client, deployment: Deployment, worker: None, jenkins: FakeJenkins, tmp_path: Path
):
    d = deployment
    wid = await com_deploy(client, d)
    status = await client.get_workflow_handle(wid).query("status", result_type=DeployStatus)
    status_json = json.loads(status.model_dump_json(indent=2))

    doc = json.loads(await audit_export(client, wid, "json"))
    assert doc["audit"] == status_json["audit"]  # the same entries as `status --json`
    assert doc["rosters"] == status_json["rosters"]
    assert doc["source"] == FROM_QUERY and doc["from_history"] is False
    assert doc["workflow_id"] == wid
    assert doc["process"] == "oow" and doc["cloud"] == "com"
    assert doc["service"] == d.service and doc["environment"] == "kprod"
    assert doc["opened_by"] == OWNER
    started = datetime.fromisoformat(doc["started"])
    closed = datetime.fromisoformat(doc["closed"])
    assert started <= closed and doc["execution"] == "completed"
    assert doc["step"] == "deploying" and doc["waiting_on"] == []
    assert doc["outcome"] == "succeeded" and "SUCCESS" in doc["outcome_reason"]
    assert doc["pccr"]["url"] == ui_link(wid) and doc["pccr"]["backend"] == "builtin"
    assert doc["pccr"]["state"] == "done" and doc["pccr"]["params"] == PARAMS and doc["params"] == PARAMS
    build = jenkins.builds(d.job)
    assert len(build) == 1
    assert doc["build"]["number"] == build[0]["number"] and doc["build"]["result"] == "SUCCESS"
    assert doc["build"]["diff"] == EXPECTED_DIFF
    assert (
        doc["diff_sha256"]
        == doc["build"]["diff_sha256"]
        == hashlib.sha256(EXPECTED_DIFF.encode()).hexdigest()
    )
    assert doc["version"] is None and doc["version_pr"] is None and doc["release_window"] is None
    assert doc["sre"] == SRE1
    assert doc["slack_thread"] == status.slack_thread and status.slack_thread
    assert doc["links"] == {
        "pccr": ui_link(wid),
        "version_pr": None,
        "build": doc["build"]["url"],
        "web_ui": ui_link(wid),
        "slack_thread": f"C0TRIAGE thread {status.slack_thread}",
    }
    assert doc["build"]["url"].startswith(jenkins.url)
    people = [
        (e["step"], e["action"], e["actor"], e["role"], e["channel"], e["accepted"], e["comment"])
        for e in doc["audit"]
        if e["actor"] != "deployctl"
    ]
    assert people == [
        ("pccr_review", "start", OWNER, "code-owner", "cli", True, None),
        ("pccr_review", "approve", OWNER, "pccr-gatekeeper", "signal", False, XSS),
        ("pccr_review", "approve", GATE1, "pccr-gatekeeper", "test", True, "params look right"),
        ("sre_assignment", "assign", GATE2, "pccr-gatekeeper", "signal", False, None),
        ("sre_assignment", "assign", GATE2, "pccr-gatekeeper", "test", True, None),
        ("clearance", "approve", SRE1, "assigned-sre", "test", True, None),
        ("trigger", "trigger", OWNER, "code-owner", "test", True, None),
        ("diff_validation", "validate_diff", OWNER, "code-owner", "test", True, None),
        ("deploy_approval", "approve", SRE1, "assigned-sre", "test", True, "ship it"),
    ]
    # Every accepted action was signed with its actor's own key, and the export verifies offline.
    for e in doc["audit"]:
        if e["actor"] != "deployctl" and e["accepted"]:
            assert e["identity"] == "ssh:" + signing.fingerprint(keys.public(e["actor"])), e
            assert e["payload"]["workflow_id"] == wid and e["key"] == keys.public(e["actor"])
    report = verify_export(doc)
    assert (report.total, report.verified) == (7, 7), report.lines()
    refusals = [e["reason"] for e in doc["audit"] if not e["accepted"]]
    assert refusals[0].startswith("separation of duties") and refusals[1].startswith(
        f"{OUTSIDER} is not in sre"
    )
    steps = [r["step"] for r in doc["rosters"]]
    assert steps[:6] == [
        "pccr_review",
        "sre_assignment",
        "clearance",
        "trigger",
        "diff_validation",
        "deploy_approval",
    ]
    assert doc["rosters"][0]["eligible"] == [GATE1, GATE2]
    assert doc["rosters"][1]["groups"]["sre"] == [SRE1, SRE2]

    md = await audit_export(client, wid, "md")
    assert re.search(
        rf"\| pccr_review \| approve \| {GATE1} \| ssh:SHA256:[^|]+ \| pccr-gatekeeper \| test \| yes \|", md
    )
    assert "```diff\n" + EXPECTED_DIFF + "```" in md and f"- opened by: {OWNER} at " in md

    page = await audit_export(client, wid, "html")
    assert_self_contained(page)
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    lanes = [g.get("data-step") for g in svg_of(page).iter(f"{NS}g") if g.get("class") == "lane"]
    assert lanes == steps
    path = tmp_path / "audit.html"
    path.write_text(page, encoding="utf-8")
    await opens_in_chromium(path, tmp_path, [str(lane) for lane in lanes])


async def test_audit_of_a_finished_gov_deploy(
    env: WorkflowEnvironment,
    client: Client,
    deployment: Deployment,
    worker: None,
    github: FakeGitHub,
    jenkins: FakeJenkins,
):
    d = deployment
    wid, _ = await start_deploy(
        client, d.config, Process.OOW, d.service, "kprod-gov", dict(PARAMS), "1.4.2", OWNER
    )
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(client, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=SREG1)
    st = await wait_for_step(client, wid, Step.VERSION_PR_MERGE, SREG1)
    number = int((st.version_pr or "").rsplit("/", 1)[1])
    github.set_mergeable(CONFIGS_REPO, number, False, reason="dirty")
    with pytest.raises(Refused, match="GitHub refused the merge"):
        await send_action(client, wid, Action.MERGE, ActionInput(actor=SREG1, step=Step.VERSION_PR_MERGE))
    github.set_mergeable(CONFIGS_REPO, number, True)
    await act(client, wid, Action.MERGE, SREG1, Step.VERSION_PR_MERGE)
    await act(client, wid, Action.TRIGGER, SREG1, Step.TRIGGER)
    st = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER, timeout=30)
    await act(
        client, wid, Action.VALIDATE_DIFF, OWNER, Step.DIFF_VALIDATION, diff_sha256=st.build.diff_sha256 or ""
    )
    await act(client, wid, Action.APPROVE, SREG1, Step.DEPLOY_APPROVAL)
    result = await client.get_workflow_handle(wid, result_type=DeployResult).result()
    assert result.outcome is Outcome.SUCCEEDED
    status = await client.get_workflow_handle(wid).query("status", result_type=DeployStatus)

    doc = json.loads(await audit_export(client, wid, "json"))
    assert doc["audit"] == json.loads(status.model_dump_json())["audit"]
    assert doc["source"] == FROM_QUERY and doc["workflow_id"] == wid
    assert (doc["process"], doc["cloud"], doc["service"], doc["environment"]) == (
        "oow",
        "gov",
        d.service,
        "kprod-gov",
    )
    assert doc["opened_by"] == OWNER and doc["execution"] == "completed"
    assert doc["version"] == "1.4.2" and doc["sre"] == SREG1
    pr = next(p for p in github.pulls(CONFIGS_REPO) if p["number"] == number)
    assert pr["merged"] and doc["version_pr"] == pr["html_url"] == doc["links"]["version_pr"]
    assert doc["outcome"] == "succeeded" and doc["pccr"]["state"] == "done" and doc["params"] == PARAMS
    assert doc["build"]["number"] == jenkins.builds(d.job)[0]["number"]
    assert doc["diff_sha256"] == hashlib.sha256(EXPECTED_DIFF.encode()).hexdigest()
    assert doc["links"]["web_ui"] == ui_link(wid) and doc["links"]["build"] == doc["build"]["url"]
    assignment = next(r for r in doc["rosters"] if r["step"] == "sre_assignment")
    assert assignment["groups"]["sre-gov"] == [SREG1, SREG2]  # the Slack user group, as resolved then
    # The first merge passed the rules, then GitHub refused it: recorded as accepted, then refused.
    merges = [(e["actor"], e["accepted"]) for e in doc["audit"] if e["action"] == "merge"]
    assert merges == [(SREG1, True), (SREG1, False), (SREG1, True)]
    reason = next(e["reason"] for e in doc["audit"] if e["action"] == "merge" and not e["accepted"])
    assert reason.startswith("GitHub refused the merge") and "not mergeable" in reason
    triggers = [(e["actor"], e["role"]) for e in doc["audit"] if e["action"] == "trigger" and e["accepted"]]
    assert triggers == [(SREG1, "assigned-sre")]

    md = await audit_export(client, wid, "md")
    assert f"sre-gov: {SREG1}, {SREG2}" in md and f"- Version PR: {_plain(pr['html_url'])}" in md
    page = await audit_export(client, wid, "html")
    assert_self_contained(page)
    lanes = [g.get("data-step") for g in svg_of(page).iter(f"{NS}g") if g.get("class") == "lane"]
    assert lanes[:4] == ["pccr_review", "sre_assignment", "version_pr_merge", "trigger"]
    assert f'<a href="{pr["html_url"]}"' in page
    r = await deployctl(env, d, "audit", wid, "--format", "html")  # the installed CLI, as a user runs it
    assert r.code == 0, r.err
    assert r.out.startswith("<!DOCTYPE html>") and r.out.count("<svg") == 1


async def test_audit_from_history_when_no_worker_answers(
    client: Client, deployment: Deployment, jenkins: FakeJenkins, tmp_path: Path
):
    d = deployment
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid = await com_deploy(client, d)
        handle = client.get_workflow_handle(wid)
        status = await handle.query("status", result_type=DeployStatus)
        with_worker = await audit_export(client, wid, "json")
    # The worker is gone, and nobody needs it: a finished deploy's audit is in its result, as it was.
    record = await fetch_audit(client, wid, query_timeout=2)
    assert record.source == FROM_QUERY and record.status == status and record.status.audit
    assert record.execution == "completed" and record.opened_by == OWNER
    assert await audit_export(client, wid, "json", query_timeout=2) == with_worker
    # What a run that did not finish (or finished before its result carried the status) falls back to:
    # the history alone, read without a worker.
    record = await record_from_history(wid, await handle.fetch_history(), client.data_converter)
    assert record.from_history and record.source == FROM_HISTORY
    doc = json.loads(render_audit(record, "json"))
    assert doc["source"] == FROM_HISTORY and doc["from_history"] is True
    assert doc["workflow_id"] == wid and doc["opened_by"] == OWNER and doc["execution"] == "completed"
    assert (doc["process"], doc["cloud"], doc["service"], doc["environment"]) == (
        "oow",
        "com",
        d.service,
        "kprod",
    )
    assert doc["outcome"] == "succeeded" and "SUCCESS" in doc["outcome_reason"]  # the workflow's result
    assert doc["params"] == PARAMS and doc["pccr"]["params"] == PARAMS and doc["pccr"]["state"] == "unknown"
    assert doc["step"] == "deploying"  # the last DeployStep it set
    assert (
        doc["build"]["number"] == jenkins.builds(d.job)[0]["number"] and doc["build"]["result"] == "SUCCESS"
    )
    assert doc["build"]["diff"] == EXPECTED_DIFF
    assert doc["diff_sha256"] == hashlib.sha256(EXPECTED_DIFF.encode()).hexdigest()
    assert doc["links"]["web_ui"] == ui_link(wid) and doc["links"]["pccr"] == ui_link(wid)
    assert doc["links"]["slack_thread"].startswith("C0TRIAGE thread ")
    assert doc["audit"] == [] and doc["rosters"] == []  # they live in the workflow's state
    assert doc["sre"] == SRE1  # the assign Update that completed
    received = [(a["kind"], a["action"], a["actor"], a["step"], a["result"]) for a in doc["received"]]
    assert received == [
        ("signal", "approve", OWNER, "pccr_review", None),
        ("update", "approve", GATE1, "pccr_review", "completed"),
        ("signal", "assign", GATE2, "sre_assignment", None),
        ("update", "assign", GATE2, "sre_assignment", "completed"),
        ("update", "approve", SRE1, "clearance", "completed"),
        ("update", "trigger", OWNER, "trigger", "completed"),
        ("update", "validate_diff", OWNER, "diff_validation", "completed"),
        ("update", "approve", SRE1, "deploy_approval", "completed"),
    ]
    assert doc["received"][0]["comment"] == XSS

    md = render_audit(record, "md")
    assert FROM_HISTORY in md and "Signals and Updates received" in md
    page = render_audit(record, "html")
    assert_self_contained(page)
    assert FROM_HISTORY in page and XSS not in page
    (tmp_path / "audit-from-history.html").write_text(page, encoding="utf-8")
    lanes = [g.get("data-step") for g in svg_of(page).iter(f"{NS}g") if g.get("class") == "lane"]
    assert lanes == [
        "pccr_review",
        "sre_assignment",
        "clearance",
        "trigger",
        "diff_validation",
        "deploy_approval",
    ]


async def test_audit_of_a_terminated_deploy_falls_back_to_its_history(
    client: Client, deployment: Deployment, tmp_path: Path
):
    """A deploy that did not finish has no result to read: without a worker its history is read."""
    d = deployment
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid, _ = await start_deploy(
            client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER
        )
        await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
        await client.get_workflow_handle(wid).terminate(reason="operator stopped it")
    record = await fetch_audit(client, wid, query_timeout=2)
    assert record.from_history and record.execution == "terminated"
    assert record.status.outcome_reason == "terminated: operator stopped it"
    assert record.status.step is Step.PCCR_REVIEW and record.opened_by == OWNER


@workflow.defn(name="Deploy", sandboxed=False)
class _DeployOfOldCode:
    """A deploy as code before this change finished one: its result has no status."""

    @workflow.run
    async def run(self, intent: dict) -> DeployResult:
        return DeployResult(outcome=Outcome.SUCCEEDED, reason="build #1 ended SUCCESS")


async def test_audit_of_a_result_without_the_status_falls_back_to_its_history(client: Client):
    wid, queue = f"audit-old-{uuid.uuid4()}", f"audit-old-{uuid.uuid4()}"
    intent = {
        "process": "oow",
        "service": "payments-api",
        "environment": "kprod",
        "params": {},
        "actor": OWNER,
    }
    async with Worker(client, task_queue=queue, workflows=[_DeployOfOldCode]):
        await client.execute_workflow("Deploy", intent, id=wid, task_queue=queue)
    record = await fetch_audit(client, wid, query_timeout=2)
    assert record.from_history and record.execution == "completed"
    assert (
        record.status.outcome is Outcome.SUCCEEDED
        and record.status.outcome_reason == "build #1 ended SUCCESS"
    )
    assert record.opened_by == OWNER and record.status.audit == []


# ------------------------------------------------------------------------------------ headless Chromium


async def opens_in_chromium(path: Path, tmp_path: Path, lanes: list[str]) -> None:
    """Open the page in headless Chromium: its DOM has the SVG and one lane per step; it paints a picture."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} is not installed (apt-get install chromium): the page was not opened in a browser; "
            "every other check of this test passed"
        )
    profile = tmp_path / "chromium-profile"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ]
    dom = await chromium(*flags, "--dump-dom", path.as_uri())
    assert dom.count("<svg") == 1 and 'class="timeline-svg"' in dom
    assert re.findall(r'<g class="lane" data-step="([a-z_]+)"', dom) == lanes
    assert "<script" not in dom.lower()

    png = tmp_path / "audit.png"
    await chromium(*flags, "--window-size=1280,2200", f"--screenshot={png}", path.as_uri())
    data = png.read_bytes()
    assert len(data) > 20_000, len(data)
    width, height, distinct = png_facts(data)
    assert (width, height) == (1280, 2200)
    assert distinct > 50  # not a blank page: text, bars, markers and badges in many shades


async def chromium(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


def png_facts(data: bytes) -> tuple[int, int, int]:
    """A PNG's width, height and how many distinct byte values its pixel rows hold (1-2 when blank)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


def test_png_facts_tells_a_blank_image():
    rows = b"".join(b"\x00" + b"\xff\xff\xff" * 64 for _ in range(64))
    header = struct.pack(">II", 64, 64) + b"\x08\x02\x00\x00\x00"
    blank = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )
    assert png_facts(blank) == (64, 64, 2)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
