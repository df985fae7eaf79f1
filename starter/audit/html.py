"""The HTML export: one self-contained page with inline CSS and an inline SVG timeline, no scripts, and
it loads nothing. Everything taken from people or from Jenkins/GitHub is escaped."""

from __future__ import annotations

import html
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from starter.audit.collect import FROM_HISTORY, AuditRecord
from starter.audit.common import (
    _LINK_NAMES,
    OUT_OF_POLICY,
    SYSTEM,
    _identity_text,
    _iso,
    _params,
    header_facts,
    identity_kind,
    identity_summary,
    links,
)
from workflows.messages import Fact, Span


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _a(url: str | None, text: str | None = None) -> str:
    """A plain link when the URL is http(s); anything else is shown as text, never as a link."""
    if not url:
        return "-"
    if url.startswith(("http://", "https://")):
        return f'<a href="{_e(url)}" rel="noreferrer noopener">{_e(text or url)}</a>'
    return _e(url)


CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --ok:#1a7f37; --no:#cf222e; --bar:#b6d4fe; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); }
code, pre, .mono { font-family: "DejaVu Sans Mono", ui-monospace, monospace; font-size: 12.5px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
table.kv th { width: 180px; }
tr.refused td { background: #ffebe9; } tr.system td { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; color: #fff; }
.badge.succeeded { background: var(--ok); } .badge.running { background: #0969da; }
.badge.failed, .badge.rejected, .badge.cancelled, .badge.expired, .badge.unknown { background: var(--no); }
.source { padding: 8px 12px; border-radius: 6px; background: #fff8c5; border: 1px solid #d4a72c; }
.yes { color: var(--ok); font-weight: 600; } .no { color: var(--no); font-weight: 600; }
.oop { color: var(--no); font-weight: 600; white-space: nowrap; } td.identity { word-break: break-all; }
.identities { color: var(--muted); }
pre { background: var(--bg); border: 1px solid var(--line); padding: 10px; overflow-x: auto; white-space: pre; }
.timeline { border: 1px solid var(--line); border-radius: 6px; padding: 8px; overflow-x: auto; }
.timeline svg { max-width: 100%; height: auto; }
.legend span { margin-right: 18px; color: var(--muted); }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
"""


def _span(s: Span, badge: bool = False) -> str:
    """A span of a fact as HTML, escaped whatever its kind; an outcome's stressed word is its badge."""
    if s.kind == "link":
        return _a(s.url, s.text)
    if s.kind == "code":
        return f"<code>{_e(s.text)}</code>"
    if s.kind == "strong":
        return f'<span class="badge {_e(s.text)}">{_e(s.text)}</span>' if badge else f"<b>{_e(s.text)}</b>"
    return _e(s.text)


def _fact_html(f: Fact) -> str:
    return "".join(_span(s, badge=f.key == "outcome") for s in f.spans)


def render_html(r: AuditRecord) -> str:
    st = r.status
    outcome = st.outcome.value if st.outcome else ("unknown" if r.closed else "running")
    headline, *facts = header_facts(r)
    kv = [(f.label or f.key.replace("_", " "), _fact_html(f)) for f in facts]

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Audit of {_e(st.workflow_id)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<header><h1>Audit of <code>{_e(st.workflow_id)}</code></h1>",
        f'<p>{_fact_html(headline)} — <span class="badge {_e(outcome)}">{_e(outcome)}</span></p>',
    ]
    if r.from_history:
        parts.append(
            f'<p class="source" id="source"><b>{_e(FROM_HISTORY)}</b>: rebuilt from the workflow\'s input, '
            "result and events; the audit trail and rosters live in the workflow's state and need a worker.</p>"
        )
    parts.append("</header>")
    parts += ['<section id="deploy"><h2>Deploy</h2><table class="kv">']
    parts += [f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in kv]
    parts.append("</table></section>")

    parts += ['<section id="links"><h2>Links</h2><table class="kv">']
    for key, value in links(r).items():
        cell = _e(value) if key == "slack_thread" and value else _a(value)
        parts.append(f"<tr><th>{_LINK_NAMES[key]}</th><td>{cell}</td></tr>")
    parts.append("</table></section>")

    parts += ['<section id="timeline"><h2>Timeline</h2><div class="timeline">', timeline_svg(r), "</div>"]
    parts.append(
        '<p class="legend"><span style="color:#1a7f37">● accepted</span><span style="color:#cf222e">○ refused</span>'
        "<span>◆ deployctl (system)</span><span>bars: from when a step started to when the next one did</span></p>"
        "</section>"
    )

    parts += ['<section id="pccr"><h2>PCCR</h2>']
    if st.pccr:
        p = st.pccr
        parts += [
            '<table class="kv">',
            f"<tr><th>id</th><td>{_e(p.id)}{f' (issue #{p.number})' if p.number else ''}</td></tr>",
            f"<tr><th>link</th><td>{_a(p.url)}</td></tr>",
            f"<tr><th>backend</th><td>{_e(p.backend)}</td></tr>",
            f"<tr><th>state</th><td>{_e(p.state)}</td></tr>",
        ]
        if p.vp_approved_by:
            parts.append(f"<tr><th>VP approval</th><td>{_e(p.vp_approved_by)}</td></tr>")
        parts.append("</table>")
    parts.append('<table class="params"><tr><th>parameter</th><th>value</th></tr>')
    parts += [
        f"<tr><td><code>{_e(k)}</code></td><td><code>{_e(v)}</code></td></tr>" for k, v in _params(r).items()
    ]
    parts.append("</table></section>")

    parts += [
        '<section id="actions"><h2>Actions</h2>',
        f'<p class="identities" id="identities">{_e(identity_summary(st.audit))}</p>',
        '<table class="audit">',
        "<tr><th>time (UTC)</th><th>step</th><th>action</th><th>actor</th><th>identity</th><th>role</th>"
        "<th>channel</th><th>accepted</th><th>reason</th><th>comment</th></tr>",
    ]
    for e in st.audit:
        cls = "system" if e.actor == SYSTEM else ("accepted" if e.accepted else "refused")
        ok = '<span class="yes">yes</span>' if e.accepted else '<span class="no">no</span>'
        oop = f' <span class="oop">{_e(OUT_OF_POLICY)}</span>' if e.out_of_policy else ""
        parts.append(
            f'<tr class="{cls}"><td class="mono">{_e(_iso(e.time))}</td><td>{_e(e.step.value)}</td>'
            f"<td>{_e(e.action)}</td><td>{_e(e.actor)}</td>"
            f'<td class="identity" data-kind="{_e(identity_kind(e.identity))}"><code>{_e(e.identity)}</code>{oop}</td>'
            f"<td>{_e(e.role or '')}</td><td>{_e(e.channel)}</td>"
            f"<td>{ok}</td><td>{_e(e.reason or '')}</td><td>{_e(e.comment or '')}</td></tr>"
        )
    if not st.audit:
        parts.append('<tr><td colspan="10">no audit trail in this record</td></tr>')
    parts.append("</table>")
    if r.from_history:
        parts += [
            "<h3>Signals and Updates received (from history; acceptance not re-evaluated)</h3>",
            '<table class="received"><tr><th>time (UTC)</th><th>kind</th><th>action</th><th>actor</th>'
            "<th>step</th><th>channel</th><th>comment</th><th>result</th></tr>",
        ]
        parts += [
            f'<tr><td class="mono">{_e(_iso(a.time))}</td><td>{_e(a.kind)}</td><td>{_e(a.action)}</td>'
            f"<td>{_e(a.actor or '')}</td><td>{_e(a.step or '')}</td><td>{_e(a.channel or '')}</td>"
            f"<td>{_e(a.comment or '')}</td><td>{_e(a.result or 'unknown')}</td></tr>"
            for a in r.received
        ]
        parts.append("</table>")
    parts.append("</section>")

    parts += [
        '<section id="rosters"><h2>Rosters</h2><table class="rosters">',
        "<tr><th>step</th><th>started (UTC)</th><th>eligible</th><th>groups as resolved then</th></tr>",
    ]
    for ro in st.rosters:
        groups = "<br>".join(f"<b>{_e(n)}</b>: {_e(', '.join(m) or '-')}" for n, m in ro.groups.items())
        parts.append(
            f'<tr><td>{_e(ro.step.value)}</td><td class="mono">{_e(_iso(ro.time))}</td>'
            f"<td>{_e(', '.join(ro.eligible) or '-')}</td><td>{groups or '-'}</td></tr>"
        )
    if not st.rosters:
        parts.append('<tr><td colspan="4">no rosters in this record</td></tr>')
    parts.append("</table></section>")

    parts += [
        '<section id="diff"><h2>Diff</h2>',
        f"<p>sha256: <code>{_e(st.build.diff_sha256 or '-')}</code>"
        + (
            f" — build #{_e(st.build.number)} {_a(st.build.url)} result {_e(st.build.result or '-')}"
            if st.build.number
            else ""
        )
        + "</p>",
        f"<pre>{_e(st.build.diff)}</pre>" if st.build.diff is not None else "<p>(no diff)</p>",
        "</section>",
        f"<footer>deployctl audit — source: {_e(r.source)}"
        + (f" — generated {_e(_iso(r.generated))}" if r.generated else "")
        + "</footer>",
        "</body></html>",
    ]
    return "\n".join(parts)


# -- the timeline picture

LABEL_W, CHART_W, ROW_H, TOP, AXIS_H, RIGHT = 200, 720, 72, 28, 40, 90
CHAR_W = 6.6  # an estimate of the width of one character of the 11px labels


class _Mark(BaseModel):
    time: datetime
    step: str
    kind: str  # accepted | refused | system | received
    label: str
    title: str


def _marks(r: AuditRecord) -> list[_Mark]:
    marks = [
        _Mark(
            time=e.time,
            step=e.step.value,
            kind="system" if e.actor == SYSTEM else ("accepted" if e.accepted else "refused"),
            label=e.actor,
            title=(
                f"{_iso(e.time)} {e.step.value}: {e.action} by {e.actor}"
                + (f" as {e.role}" if e.role else "")
                + f" via {e.channel} [{_identity_text(e)}] — {'accepted' if e.accepted else 'refused'}"
                + (f": {e.reason}" if e.reason else "")
                + (f" — “{e.comment}”" if e.comment else "")
            ),
        )
        for e in r.status.audit
    ]
    for a in r.received:
        failed = (a.result or "").startswith("failed")
        marks.append(
            _Mark(
                time=a.time,
                step=a.step or "",
                kind="refused" if failed else ("accepted" if a.result == "completed" else "received"),
                label=a.actor or "?",
                title=f"{_iso(a.time)} {a.step or '?'}: {a.kind} {a.action} from {a.actor or '?'} — {a.result or 'acceptance unknown'}",
            )
        )
    return sorted(marks, key=lambda m: m.time)


class _Lane(BaseModel):
    step: str
    start: datetime
    end: datetime | None = None
    eligible: list[str] = Field(default_factory=list)
    roster: bool = True  # False: no roster was recorded for it (a lane made from its actions)
    marks: list[_Mark] = Field(default_factory=list)


def _lanes(r: AuditRecord, marks: Iterable[_Mark]) -> list[_Lane]:
    lanes = [
        _Lane(step=ro.step.value, start=ro.time, eligible=list(ro.eligible))
        for ro in sorted(r.status.rosters, key=lambda ro: ro.time)
    ]
    for m in marks:
        # The lane of the mark's step that had started by then (the latest such); else a lane of its own.
        home = None
        for lane in lanes:
            if lane.step == m.step and lane.start <= m.time:
                home = lane
        if home is None:
            home = next((lane for lane in lanes if lane.step == m.step), None)
        if home is None:
            home = _Lane(step=m.step or "?", start=m.time, roster=False)
            lanes.append(home)
            lanes.sort(key=lambda lane: lane.start)
        home.marks.append(m)
    for i, lane in enumerate(lanes):
        lane.end = lanes[i + 1].start if i + 1 < len(lanes) else None
    return lanes


def _fmt_tick(t: datetime, span: timedelta) -> str:
    t = t.astimezone(UTC)
    if span < timedelta(seconds=20):
        return t.strftime("%H:%M:%S.%f")[:-3]
    if span < timedelta(days=1):
        return t.strftime("%H:%M:%S")
    return t.strftime("%m-%d %H:%M")


def timeline_svg(r: AuditRecord) -> str:
    """One lane per step in the order they started: a bar until the next step started (or the end), a
    filled marker per accepted action, a hollow red one per refused action, labelled with the actor."""
    marks = _marks(r)
    lanes = _lanes(r, marks)
    if not lanes:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40" role="img" aria-label="no steps">'
            '<text x="8" y="24" font-size="13">no steps recorded</text></svg>'
        )
    times = [lane.start for lane in lanes] + [m.time for m in marks]
    t0 = min(times)
    end = r.closed or max(times)
    end = max(end, max(times))
    span = max(end - t0, timedelta(seconds=1))

    def x(t: datetime) -> float:
        return round(LABEL_W + (t - t0) / span * CHART_W, 1)

    width = LABEL_W + CHART_W + RIGHT
    height = TOP + ROW_H * len(lanes) + AXIS_H
    outcome = r.status.outcome.value if r.status.outcome else ("ended" if r.closed else "now")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline-svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of {_e(r.status.workflow_id)}" '
        'font-family="DejaVu Sans, system-ui, sans-serif">',
        f"<title>Timeline of {_e(r.status.workflow_id)}</title>",
    ]
    for i in range(0, len(lanes), 2):
        out.append(f'<rect x="0" y="{TOP + ROW_H * i}" width="{width}" height="{ROW_H}" fill="#f6f8fa"/>')
    # The axis: five ticks from the first step to the end, with vertical grid lines.
    axis_y = TOP + ROW_H * len(lanes)
    for i in range(5):
        t = t0 + span * (i / 4)
        xi = x(t)
        out.append(f'<line x1="{xi}" y1="{TOP - 6}" x2="{xi}" y2="{axis_y}" stroke="#eaeef2"/>')
        anchor = "start" if i == 0 else ("end" if i == 4 else "middle")
        out.append(
            f'<text x="{xi}" y="{axis_y + 16}" font-size="11" fill="#59636e" text-anchor="{anchor}">'
            f"{_e(_fmt_tick(t, span))}</text>"
        )
    out.append(
        f'<text x="{LABEL_W}" y="{axis_y + 32}" font-size="11" fill="#59636e">UTC, {_e(_iso(t0))} → {_e(_iso(end))}</text>'
    )
    for i, lane in enumerate(lanes):
        y = TOP + ROW_H * i
        yc = y + ROW_H / 2
        x1 = x(lane.start)
        x2 = x(lane.end or end)
        bar_w = max(x2 - x1, 3)
        current = lane.end is None and r.status.outcome is None and r.closed is None
        out.append(f'<g class="lane" data-step="{_e(lane.step)}">')
        out.append(
            f'<text x="{LABEL_W - 12}" y="{yc - 2}" font-size="13" font-weight="600" text-anchor="end">'
            f"{_e(lane.step)}</text>"
        )
        who = ", ".join(lane.eligible) or ("nobody waited on" if lane.roster else "roster unknown")
        if len(who) > 30:
            who = who[:29] + "…"
        out.append(
            f'<text x="{LABEL_W - 12}" y="{yc + 13}" font-size="10.5" fill="#59636e" text-anchor="end">'
            f"{_e(who)}<title>eligible: {_e(', '.join(lane.eligible) or '-')}</title></text>"
        )
        dash = ' stroke-dasharray="4 3"' if current else ""
        out.append(
            f'<rect class="bar" x="{x1}" y="{yc - 7}" width="{round(bar_w, 1)}" height="14" rx="3" '
            f'fill="#b6d4fe" stroke="#0969da" stroke-width="1"{dash}>'
            f"<title>{_e(lane.step)}: {_e(_iso(lane.start))} → {_e(_iso(lane.end) if lane.end else outcome)}</title></rect>"
        )
        # Labels go in four slots (above, below, further above, further below), the first one free.
        slots = [yc - 12, yc + 21, yc - 24, yc + 33]
        busy_until = [float("-inf")] * len(slots)
        for m in lane.marks:
            xm = x(m.time)
            if m.kind == "system":
                out.append(
                    f'<path class="mark system" d="M{xm} {yc - 4} L{xm + 4} {yc} L{xm} {yc + 4} L{xm - 4} {yc} Z" '
                    f'fill="#8c959f"><title>{_e(m.title)}</title></path>'
                )
                continue
            if m.kind == "accepted":
                shape = 'fill="#1a7f37" stroke="#ffffff" stroke-width="1.5"'
            elif m.kind == "refused":
                shape = 'fill="#ffffff" stroke="#cf222e" stroke-width="2.5"'
            else:
                shape = 'fill="#ffffff" stroke="#59636e" stroke-width="2" stroke-dasharray="2 2"'
            out.append(
                f'<circle class="mark {m.kind}" cx="{xm}" cy="{yc}" r="6.5" {shape}><title>{_e(m.title)}</title></circle>'
            )
            w = len(m.label) * CHAR_W
            left = xm - w / 2
            slot = next((k for k, busy in enumerate(busy_until) if left > busy + 4), None)
            if slot is None:
                slot = min(range(len(slots)), key=lambda k: busy_until[k])
            busy_until[slot] = left + w
            color = "#cf222e" if m.kind == "refused" else "#1f2328"
            # Near an edge the label runs inwards from the marker instead of being centred on it.
            anchor, xt = "middle", xm
            if left < LABEL_W - 4:
                anchor, xt = "start", round(xm - 6, 1)
            elif left + w > width - 4:
                anchor, xt = "end", round(xm + 6, 1)
            out.append(
                f'<text class="actor" x="{xt}" y="{slots[slot]}" font-size="11" text-anchor="{anchor}" fill="{color}">'
                f"{_e(m.label)}</text>"
            )
        out.append("</g>")
    xe = x(end)
    out.append(
        f'<line x1="{xe}" y1="{TOP - 10}" x2="{xe}" y2="{axis_y}" stroke="#59636e" stroke-dasharray="3 3"/>'
        f'<text x="{xe + 6}" y="{TOP - 12}" font-size="12" font-weight="600" fill="#1f2328">{_e(outcome)}</text>'
    )
    out.append("</svg>")
    return "\n".join(out)
