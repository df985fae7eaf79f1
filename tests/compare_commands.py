"""Compare the commands two recordings of the same scenarios issued (`python -m tests.compare_commands OLD
NEW`, two folders of histories from `python -m tests.record_histories`).

Replay (tests/test_replay.py) proves a change issues commands a history accepts; this proves a refactor
issues the *same* commands, with the same inputs, when the scenarios are run again. Each history is read
as three streams, each in its own order: the main line (activities, timers, signals to other workflows,
the result), the notices (Slack and PCCR activities, which interleave with the main line by when each
finishes) and the search-attribute upserts (one follows the triage message's posting, whenever that
lands, so they are compared as a set of values). Times, ports, ids, shas and numbers a run picks for
itself are masked; timers are compared to 10 s, and a timer until a release window (a wall-clock time)
by its name. Two recordings of the same code match (checked 2026-12-02); exit 0 when every pair does.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Any

COMMANDS = (
    "ACTIVITY_TASK_SCHEDULED",
    "TIMER_STARTED",
    "TIMER_CANCELED",
    "UPSERT",
    "SIGNAL_EXTERNAL",
    "ACTIVITY_TASK_CANCEL_REQUESTED",
    "MARKER_RECORDED",
    "EXECUTION_COMPLETED",
    "EXECUTION_FAILED",
    "CHILD_WORKFLOW",
    "UPDATE_COMPLETED",
    "PROPERTIES_MODIFIED",
)
NOTICES = ("post_message", "update_message", "comment_pccr", "set_pccr_labels", "close_pccr")
MASKS = (
    (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?", "<T>"),
    (r"\d{4}-\d\d-\d\d \d\d:\d\d", "<T>"),
    (r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "<U>"),
    (r"-[0-9a-f]{8}\b", "-<H>"),
    (r"\b1\d{9}\.\d+\b", "<TS>"),
    (r"\b[0-9a-f]{40}\b", "<SHA>"),
    (r"\b[0-9a-f]{64}\b", "<SHA256>"),
    (r"\b[0-9a-f]{12}\b", "<SHORT>"),
    (r"127\.0\.0\.1:\d+", "127.0.0.1:<P>"),
    (r"(pull/|issues/|#|number\\?\":|queue_id\\?\":|item )\d+", r"\1<N>"),
    (r"\"nonce\\?\":\\?\"[0-9a-f]+", '"nonce":<NONCE>'),
    (r"-----BEGIN SSH SIGNATURE-----[^\"]*-----END SSH SIGNATURE-----", "<SIG>"),
)


def _mask(text: str) -> str:
    for pattern, repl in MASKS:
        text = re.sub(pattern, repl, text)
    return text


def _payloads(p: dict[str, Any] | None) -> list[str]:
    out = []
    for item in (p or {}).get("payloads", []):
        try:
            out.append(_mask(base64.b64decode(item["data"]).decode()))
        except (KeyError, ValueError, UnicodeDecodeError):
            out.append("?")
    return out


def commands(path: Path) -> list[str]:
    """The history's commands as comparable lines: the main line, then the notices, then the upserts."""
    streams: dict[str, list[str]] = {"main": [], "notice": [], "upsert": []}
    for event in json.loads(path.read_text())["events"]:
        kind = event["eventType"]
        if not any(c in kind for c in COMMANDS):
            continue
        key: list[Any] = [kind]
        for name, attrs in event.items():
            if not (name.endswith("Attributes") and isinstance(attrs, dict)):
                continue
            if "activityType" in attrs:
                key += [attrs["activityType"]["name"], _payloads(attrs.get("input"))]
            if "signalName" in attrs:
                key += [attrs["signalName"], _payloads(attrs.get("input"))]
            if "searchAttributes" in attrs:
                fields = attrs["searchAttributes"].get("indexedFields", {})
                key.append(
                    {k: _mask(base64.b64decode(f["data"]).decode()) for k, f in sorted(fields.items())}
                )
            if "startToFireTimeout" in attrs:
                key.append(round(float(attrs["startToFireTimeout"].rstrip("s")) / 10))
        summary = (event.get("userMetadata") or {}).get("summary")
        if summary:
            key.append(_payloads({"payloads": [summary]}))
            if "TIMER" in kind and key[-1][0].startswith('"until'):
                key[1] = "<until a wall-clock time>"  # a release window's timer: when the run started
        stream = "notice" if len(key) > 1 and key[1] in NOTICES else "upsert" if "UPSERT" in kind else "main"
        streams[stream].append(f"{stream} {json.dumps(key, sort_keys=True)}")
    return streams["main"] + streams["notice"] + sorted(set(streams["upsert"]))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.compare_commands OLD_DIR NEW_DIR", file=sys.stderr)
        return 2
    old, new = (Path(a) for a in argv)
    different = 0
    for f in sorted(old.glob("*.json")):
        if not (new / f.name).exists():
            print(f"{f.name}: missing in {new}")
            different += 1
            continue
        a, b = commands(f), commands(new / f.name)
        if a == b:
            print(f"{f.name}: {len(a)} commands, the same")
            continue
        different += 1
        print(f"{f.name}: DIFFERENT")
        for line in list(difflib.unified_diff(a, b, lineterm="", n=1))[:40]:
            print("    " + line[:400])
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
