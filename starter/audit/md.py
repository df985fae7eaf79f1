"""The Markdown export. Everything taken from people or from Jenkins/GitHub goes through `_md`."""

from __future__ import annotations

import re

from starter.audit.collect import FROM_HISTORY, AuditRecord
from starter.audit.common import _LINK_NAMES, _identity_text, _params, header_facts, identity_summary, links

# Markdown (CommonMark with GitHub's extensions, as cmark-gfm renders it) gives meaning to these inline.
_MD_PUNCT = frozenset("\\`*[]~|$")
_MD_ENTITY = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# An e-mail address becomes a mailto link whatever is escaped in it: it goes in a code span, whose text is
# never a link. Nothing the pattern matches needs escaping there (no & < > | \\ or backtick).
_EMAIL = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9._-]+")


def _md_run(text: str) -> str:
    out: list[str] = []
    for i, ch in enumerate(text):
        if ch in _MD_ENTITY:
            out.append(_MD_ENTITY[ch])
        elif ch in _MD_PUNCT:
            out.append("\\" + ch)
        elif ch == "_":  # inert between two letters or digits (snake_case stays readable); else escaped
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append(ch if inner else "\\_")
        elif ch == ":" and text.startswith("//", i + 1):  # https://… would become a link
            out.append("\\:")
        elif ch == "." and text[max(0, i - 3) : i].lower() == "www":  # so would www.…
            out.append("\\.")
        elif ch == "#" and not text[i:].strip("#"):  # a heading's closing sequence would be dropped
            out.append("\\#")
        else:
            out.append(ch)
    return "".join(out)


def _md(value: object) -> str:
    """A value from outside (people, Jenkins, GitHub, the workflow id) as Markdown text that renders as
    exactly that text: one line, no markup, no link, no HTML. Every character Markdown gives meaning to
    inline is backslash-escaped, `&<>` become entities (so the raw file holds no HTML either), `://` and
    `www.` cannot start a link, and an e-mail address is put in a code span (escapes cannot stop it being
    a mailto link). Pipes are escaped, so it is also a safe table cell."""
    text = "" if value is None else str(value)
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ").strip()
    out, pos = [], 0
    for m in _EMAIL.finditer(text):
        out += [_md_run(text[pos : m.start()]), f"`{m.group(0)}`"]
        pos = m.end()
    out.append(_md_run(text[pos:]))
    return "".join(out)


def _fence(text: str) -> str:
    longest, run = 0, 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def _groups_text(groups: dict[str, list[str]]) -> str:
    return "; ".join(f"{name}: {', '.join(members) or '-'}" for name, members in groups.items())


def render_md(r: AuditRecord) -> str:
    st = r.status
    lines = [f"# Audit of {_md(st.workflow_id)}", ""]
    if r.from_history:
        lines += [
            f"> **{FROM_HISTORY}**: rebuilt from the workflow's input, result and events; the audit "
            "trail and rosters live in the workflow's state and need a worker to be read.",
            "",
        ]
    # Each fact is one line escaped whole: the Markdown audit marks nothing up (its URLs are text).
    lines += [f"- {_md(f'{f.label}: {f.text}' if f.label else f.text)}" for f in header_facts(r)]
    lines += ["", "## Links", ""]
    lines += [f"- {_LINK_NAMES[k]}: {_md(v) or '-'}" for k, v in links(r).items()]

    lines += ["", "## PCCR", ""]
    if st.pccr:
        p = st.pccr
        lines += [
            f"- id: {_md(p.id)}" + (f" (issue #{p.number})" if p.number else ""),
            f"- backend: {_md(p.backend)}",
            f"- state: {_md(p.state)}",
            f"- link: {_md(p.url) or '-'}",
        ]
        if p.vp_approved_by:
            lines.append(f"- VP approval: {_md(p.vp_approved_by)}")
    params = _params(r)
    lines += ["", "| parameter | value |", "|---|---|"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in params.items()] or ["| - | - |"]

    lines += [
        "",
        "## Actions",
        "",
        identity_summary(st.audit),
        "",
        "| time | step | action | actor | identity | role | channel | accepted | reason | comment |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in st.audit:
        lines.append(
            f"| {e.time.isoformat(timespec='seconds')} | {e.step.value} | {_md(e.action)} | {_md(e.actor)} "
            f"| {_md(_identity_text(e))} | {_md(e.role)} | {_md(e.channel)} | {'yes' if e.accepted else 'no'} "
            f"| {_md(e.reason)} | {_md(e.comment)} |"
        )
    if r.from_history:
        lines += [
            "",
            "### Signals and Updates received (from history; acceptance not re-evaluated)",
            "",
            "| time | kind | action | actor | step | channel | comment | result |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for a in r.received:
            lines.append(
                f"| {a.time.isoformat(timespec='seconds')} | {a.kind} | {_md(a.action)} | {_md(a.actor)} "
                f"| {_md(a.step)} | {_md(a.channel)} | {_md(a.comment)} | {_md(a.result) or 'unknown'} |"
            )

    lines += ["", "## Rosters", "", "| step started | eligible | groups |", "|---|---|---|"]
    lines += [
        f"| {r_.time.isoformat(timespec='seconds')} {r_.step.value} | {_md(', '.join(r_.eligible)) or '-'} "
        f"| {_md(_groups_text(r_.groups)) or '-'} |"
        for r_ in st.rosters
    ]

    lines += ["", "## Diff", "", f"sha256: {_md(st.build.diff_sha256) or '-'}", ""]
    if st.build.diff is not None:
        fence = _fence(st.build.diff)
        lines += [f"{fence}diff", st.build.diff.rstrip("\n"), fence]
    else:
        lines.append("(no diff: the build did not print one, or the deploy did not get that far)")
    return "\n".join(lines)
