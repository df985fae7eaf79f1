"""The words deployctl says in Slack and the Web UI. Pure functions; the workflow decides when."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from workflows.models import SYSTEM, Cloud, DeployStatus, PrDiff, Process, Rules, Step
from workflows.steps import Shows, StepDef


def triage_text(cloud: Cloud, mention: str, link: str) -> str:
    """SPEC §3's exact triage message."""
    if cloud is Cloud.GOV:
        return f"{mention} requesting review for OOW gov deploy job PR {link}"
    return f"{mention} requesting review for OOW deploy job PR {link}"


def acceptance_text(mention: str, window: str, link: str) -> str:
    return f"{mention} requesting acceptance for release {window} of deploy job PR {link}"


def window_reminder_text(name: str, window: str, opens: datetime, user: str) -> str:
    return f"<@{user}> {name}: release window {window} opens tomorrow, {opens:%Y-%m-%d %H:%M} UTC."


def deploy_name(service: str, environment: str, process: Process) -> str:
    return f"{process.value.upper()} deploy of {service} to {environment}"


#: The cloud before the workers' rules said it (or when the start was refused).
NO_CLOUD = "cloud not known yet"


def cloud_text(cloud: Cloud | None) -> str:
    """ "com-cloud", or that the workers' rules have not said yet."""
    return f"{cloud.value}-cloud" if cloud is not None else NO_CLOUD


def ui_link(ui_url: str, namespace: str, workflow_id: str) -> str:
    """The deploy's page in the Temporal Web UI."""
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{workflow_id}"


#: How a face marks text up: the CLI prints plain text, `/deploy status` answers in Slack mrkdwn, the
#: Web UI's current details are markdown. (The audit's Markdown and HTML render the same facts their
#: own way: starter/audit/.)
Markup = Literal["plain", "slack", "markdown"]

#: What a stretch of a fact is, so that each face marks it up its own way: `text` is shown as it is by
#: the live faces (deployctl's words, the cloud, the PCCR's state, action names); `strong` is stressed
#: (the deploy, its outcome); `code` is an identifier (the workflow id, a step, a sha256); `user` a Slack
#: user id (a mention in Slack); `link` goes to `url` and is labelled `text`; `said` comes from people or
#: other systems (a reason, what the deploy waits for) and is escaped wherever markup could take it.
SpanKind = Literal["text", "strong", "code", "user", "link", "said"]


@dataclass(frozen=True)
class Span:
    text: str
    kind: SpanKind = "text"
    url: str = ""  # a `link`'s target

    @property
    def plain(self) -> str:
        """The span as plain text: a link is its URL."""
        return self.url if self.kind == "link" else self.text


@dataclass(frozen=True)
class Fact:
    """One line of where a deploy stands: `label: spans` (a fact with no label is its spans alone).
    `key` names the fact for a face that places or leaves out one (`slack_thread` in Slack)."""

    key: str
    label: str
    spans: tuple[Span, ...]

    @property
    def text(self) -> str:
        """The fact's value as plain, unescaped text."""
        return "".join(s.plain for s in self.spans)


def _fact(key: str, label: str, *spans: Span | str) -> Fact:
    return Fact(key, label, tuple(s if isinstance(s, Span) else Span(s) for s in spans))


def _code(text: str) -> Span:
    return Span(text, "code")


def _user(text: str) -> Span:
    return Span(text, "user")


def status_facts(st: DeployStatus, now: datetime) -> list[Fact]:
    """Where a deploy stands, in the order every face says it: the CLI's `status`, `/deploy status`, the
    Web UI's current details (`status_lines`) and the audit's header. Pure: `now` only ages what the
    deploy waits for."""
    facts = [
        _fact(
            "deploy",
            "",
            Span(deploy_name(st.service, st.environment, st.process), "strong"),
            " (",
            _code(st.workflow_id),
            f", {cloud_text(st.cloud)})",
        )
    ]
    if st.outcome is not None:
        reason = (" — ", Span(st.outcome_reason, "said")) if st.outcome_reason else ()
        step = (" (ended at ", _code(st.step.value), ")")
        facts.append(_fact("outcome", "outcome", Span(st.outcome.value, "strong"), *reason, *step))
    else:
        facts.append(_fact("step", "step", _code(st.step.value)))
        people: list[Span | str] = []
        for u in st.waiting_on:
            people += [", ", _user(u)] if people else [_user(u)]
        facts.append(_fact("waiting_on", "waiting on", *(people or ["nobody (it is working)"])))
        if st.allowed_actions:
            facts.append(_fact("actions", "actions now", ", ".join(a.value for a in st.allowed_actions)))
        waits = waiting_line(st.waiting_for, st.waiting_since, now)
        if waits:
            facts.append(_fact("waits_for", "waits for", Span(waits, "said")))
        if st.blocked_by:
            ends = " of the same service and environment to end"
            facts.append(_fact("blocked_by", "", "waits for deploy ", _code(st.blocked_by), ends))
    if st.sre:
        facts.append(_fact("sre", "SRE", _user(st.sre)))
    if st.pccr:
        facts.append(_fact("pccr", "PCCR", Span("PCCR", "link", st.pccr.url), f" [{st.pccr.state}]"))
    if st.build.url:
        sha = (" (diff sha256 ", _code(st.build.diff_sha256), ")") if st.build.diff_sha256 else ()
        facts.append(_fact("build", "build", Span(f"build #{st.build.number}", "link", st.build.url), *sha))
    if st.version_pr:
        head = st.version_pr_head_sha
        shown = (
            (" (head ", _code(head[:12]), ", diff sha256 ", _code(st.version_pr_diff_sha256 or "-"), ")")
            if head
            else ()
        )
        facts.append(_fact("version_pr", "version PR", Span("version PR", "link", st.version_pr), *shown))
    if st.slack_thread:
        facts.append(_fact("slack_thread", "Slack thread", st.slack_thread))
    last = next((e for e in reversed(st.audit) if e.accepted and e.actor != SYSTEM), None)
    if last:
        by = (f"{last.action} by ", _user(last.actor), " at ", _code(last.step.value))
        facts.append(_fact("last_action", "last action", *by))
    if st.ui_url:
        facts.append(_fact("ui", "Temporal UI", Span("Temporal UI", "link", st.ui_url)))
    return facts


def status_lines(st: DeployStatus, now: datetime, markup: Markup = "plain") -> list[str]:
    """`status_facts` as lines: the CLI's `status`, `/deploy status` and the Web UI's current details
    differ only in `markup`. Text from people or other systems is escaped for Slack (SPEC §10); Slack
    leaves out the thread it answers in."""
    return [
        _fact_line(f, markup)
        for f in status_facts(st, now)
        if not (markup == "slack" and f.key == "slack_thread")
    ]


def _fact_line(fact: Fact, markup: Markup = "plain") -> str:
    """One fact as a line of `markup`."""
    body = "".join(_marked(s, markup) for s in fact.spans)
    return f"{fact.label}: {body}" if fact.label else body


def _marked(s: Span, markup: Markup) -> str:
    slack = markup == "slack"
    if s.kind == "strong":
        return {"plain": s.text, "slack": f"*{s.text}*", "markdown": f"**{s.text}**"}[markup]
    if s.kind == "code":
        return s.text if markup == "plain" else f"`{s.text}`"
    if s.kind == "user":
        return f"<@{s.text}>" if slack else s.text
    if s.kind == "link":
        return f"<{s.url}|{s.text}>" if slack else s.url
    if s.kind == "said":
        return slack_escape(s.text) if slack else s.text
    return s.text


def action_hint(workflow_id: str, defn: StepDef, user: str, diff_sha256: str | None = None) -> str:
    """The command that acts at the step; at version_pr_merge it names the diff shown (`diff_sha256`),
    so that a merge typed from this DM is refused once the PR's diff changed."""
    actions = " | ".join(a.value.replace("_", "-") for a in defn.actions)
    extra = " --sre SRE_ID" if defn.names_sre else ""
    if defn.shows is Shows.PR_DIFF and diff_sha256:
        extra += f" --diff-sha256 {diff_sha256}"
    return f"deployctl {actions} {workflow_id}{extra} --as {user}"


def ask_text(
    name: str,
    workflow_id: str,
    defn: StepDef,
    user: str,
    link: str,
    detail: str = "",
    diff_sha256: str | None = None,
) -> str:
    """The DM to one person the deploy now waits on."""
    lines = [
        f"<@{user}> {name} waits on you at `{defn.step.value}`: {defn.does}.",
        f"Deploy `{workflow_id}`: {link}",
    ]
    if detail:
        lines.append(detail)
    lines.append(f"Act with `{action_hint(workflow_id, defn, user, diff_sha256)}`")
    return "\n".join(lines)


def reminder_text(name: str, step: Step, people: list[str], left: str) -> str:
    who = " ".join(f"<@{p}>" for p in people) or "nobody"
    return f"Reminder: {name} still waits at `{step.value}` on {who}; it expires in {left}."


def escalation_text(name: str, step: Step, people: list[str], left: str) -> str:
    who = " ".join(f"<@{p}>" for p in people) or "nobody"
    return f"Escalation: {name} has waited at `{step.value}` on {who} for three quarters of its time; expires in {left}."


def human_duration(seconds: float) -> str:
    """3d, 4h, 1.5h, 30m, 20s: the largest unit, with one decimal when it is not whole."""
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}" if s % size == 0 else f"{s / size:.1f}{unit}"
    return f"{s}s"


def waiting_line(waiting_for: str | None, since: datetime | None, now: datetime) -> str | None:
    """Status `waiting_for` as people read it: the line and how long it has lasted, "… (4m)"."""
    if not waiting_for:
        return None
    if since is None:
        return waiting_for
    return f"{waiting_for} ({human_duration(max((now - since).total_seconds(), 0))})"


def rules_line(rules: Rules, changed_from: str | None = None) -> str:
    """What a deploy read from the workers' config, for its audit trail (SPEC §9)."""
    head = f"rules read from the workers' config {rules.config_path} (sha256 {rules.config_sha256})"
    if changed_from:
        head = f"the workers' config changed (sha256 {changed_from[:12]}… → {rules.config_sha256}); " + head
    if rules.refusal or rules.service is None:
        return f"{head}: {rules.refusal}"
    svc = rules.service
    groups = "; ".join(
        f"{name}: {spec.mention() if spec.slack_usergroup else ', '.join(spec.members) or 'nobody'}"
        for name, spec in sorted(rules.settings.groups.items())
    )
    keys = sum(len(p.ssh_keys) for p in rules.people.values())
    signed = "signed actions required" if rules.require_signed else "identities taken as claimed"
    return (
        f"{head}: service {svc.name} ({rules.cloud.value if rules.cloud else '?'}-cloud), code owners "
        f"{', '.join(svc.code_owners)}, Jenkins job {svc.jenkins_job}, input {svc.input_id or '(the one pending)'}"
        f"; groups {groups}; {keys} signing keys of {len(rules.people)} people, "
        f"{len(rules.bridge_keys)} Slack bridge keys; {signed}"
    )


# Text from people or builds is shown in Slack and on GitHub as text, never as markup (SPEC §10).


def slack_escape(text: str) -> str:
    """Slack mrkdwn: `&`, `<`, `>` as entities, so no `<!channel>`, `<@U…>` or `<url|label>` comes
    through from a comment, a build's output or another system's message."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_BACKTICKS = re.compile(r"`{3,}")


def slack_code(text: str) -> str:
    """Text for inside a ``` block: escaped, and a zero-width space between the backticks of every run
    of three or more, so that nothing in it can end the block early."""
    return _BACKTICKS.sub(lambda m: "\u200b".join(m.group(0)), slack_escape(text))


def github_text(text: str) -> str:
    """A comment quoted into a GitHub PCCR comment: no HTML (`<!-- deployctl:… -->` markers), no
    @mentions, no images or links, on one quoted line."""
    flat = " ".join(text.split())
    for bad, good in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("@", "@\u200b"), ("![", "!\u200b[")):
        flat = flat.replace(bad, good)
    return flat.replace("[", "\\[").replace("]", "\\]")


def params_detail(job: str, params: dict[str, str], version: str | None, limit: int = 2500) -> str:
    """What a reviewer approves: the job and every parameter of the PCCR, as text (SPEC §10)."""
    rows = "\n".join(f"{name}: {value}" for name, value in sorted(params.items())) or "(no parameters)"
    cut = len(rows) > limit
    head = f"Jenkins job `{slack_code(job)}`" + (f", version `{slack_code(version)}`" if version else "")
    return f"{head}, with exactly these parameters:\n```\n{slack_code(rows[:limit])}\n```" + (
        "\n:warning: The parameters are cut here; the PCCR holds them all." if cut else ""
    )


def diff_detail(number: int | None, url: str | None, diff: str, diff_sha256: str | None, limit: int) -> str:
    """What the owner validates: the build's diff in a code block of at most `limit` characters as
    escaped (cut at a line end, saying so and where to read the rest), and the sha256 the button approves
    (SPEC §10). The cut is measured after escaping, so the sha256 line always fits in the section."""
    link = slack_escape(url or "")
    shown, kept = _fenced(diff, limit)
    note = (
        f"\n:warning: The diff is cut here: {kept:,} of its {len(diff):,} characters are shown. "
        f"Read the whole diff in the console before you approve: {link}console"
        if kept < len(diff)
        else ""
    )
    return (
        f"Build #{number}: {link}console\n```\n{shown}\n```{note}\n"
        f"The button approves the whole diff: diff sha256 `{diff_sha256}`"
    )


def _fenced(text: str, room: int) -> tuple[str, int]:
    """The longest start of `text` whose `slack_code` fits in `room` characters (cut at a line end when
    it is cut), escaped; and how many characters of `text` that is."""
    if len(slack_code(text)) <= room:
        return slack_code(text), len(text)
    lo, hi = 0, len(text)
    while lo < hi:  # escaping never shortens text: the longest prefix that fits
        mid = (lo + hi + 1) // 2
        if len(slack_code(text[:mid])) <= room:
            lo = mid
        else:
            hi = mid - 1
    line_end = text.rfind("\n", 0, lo)
    if line_end > lo // 2:  # a whole last line, unless that gives up most of what fits
        lo = line_end
    return slack_code(text[:lo]), lo


def pr_diff_detail(number: int, url: str, diff: PrDiff, limit: int = 3000) -> str:
    """What the SRE merges (SPEC §10): the version PR's diff at its head, as text in a code block that
    the diff cannot end, cut (saying so, with the link to the whole diff) to fit one Slack section of
    `limit` characters; the head commit the merge is pinned to, and the sha256 of the whole diff as read
    (not only the part shown), which the button and `merge --diff-sha256` bind to."""
    files = diff.files_url
    head = f"Version PR #{number}: {url}. Its diff at head commit `{diff.head_sha}`:"
    warnings: list[str] = []
    if diff.no_patch:
        names = ", ".join(f"`{slack_escape(n[:80])}`" for n in diff.no_patch[:5])
        more = f" and {len(diff.no_patch) - 5} more" if len(diff.no_patch) > 5 else ""
        warnings.append(
            f":warning: GitHub shows no patch for {len(diff.no_patch)} file(s) ({names}{more}): binary or "
            f"too large. Read them on GitHub before you merge: {files}"
        )
    if diff.changed_files > diff.files:
        warnings.append(
            f":warning: GitHub lists {diff.files:,} of the PR's {diff.changed_files:,} files. "
            f"Read them all on GitHub before you merge: {files}"
        )
    binds = (
        f"Merging (the button, or the command below) merges exactly commit `{diff.head_sha}`. If the "
        "branch moves after this, GitHub refuses the merge and you are shown the new diff."
        + (
            f" The button merges only this diff, the whole of it (not only what is shown here): "
            f"diff sha256 `{diff.diff_sha256}`"
            if diff.diff_sha256
            else ""
        )
    )
    cut_note = (
        f":warning: The diff is cut here: {diff.chars:,} of its {diff.chars:,} characters are shown. "
        f"Read the whole diff on GitHub before you merge: {files}"
    )
    fixed = len(head) + len("\n```\n\n```\n") + sum(len(w) + 1 for w in warnings) + len(binds)
    room = max(limit - fixed - len(cut_note) - 1, 0)
    shown, kept = _fenced(diff.diff, room)
    lines = [head, f"```\n{shown or ('' if diff.chars else '(no changes)')}\n```"]
    if kept < diff.chars:
        lines.append(
            f":warning: The diff is cut here: {kept:,} of its {diff.chars:,} characters are shown. "
            f"Read the whole diff on GitHub before you merge: {files}"
        )
    return "\n".join([*lines, *warnings, binds])
