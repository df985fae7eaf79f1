"""The notice outbox: the order in which a deploy's best-effort notices go out.

A notice is a Slack post or update, or a comment, label or close on the PCCR issue. None of them blocks a
deploy; each is one activity. The workflow builds and schedules that activity (`start`, given to
`Outbox`); this module decides which notice goes next, and when. It calls no Temporal API.

The ordering invariant (docs/replay.md, "A crash plus a `status` query ..."):

    Notices start one at a time, in the order they were put, and synchronously: a notice's activity is
    scheduled inside the `put` that queued it (when none is in flight) or inside the `settled` of the
    notice before it, never later. So it is never scheduled after a `wait_condition`.

Why synchronously: a `wait_condition` wakes its waiter only after every other coroutine woken in the same
activation has run, so a schedule command issued from there lands elsewhere among the task's commands
whenever the server batches a workflow task's events differently (a query served by a fresh worker after a
crash does that), and replay of the history fails. Why one at a time: the order of the notices is the
order of the commands, and a DM's buttons can only be closed once the DM is known to exist.

Two kinds are not sent as they are:
- `DONE` (close the buttons of the DMs sent so far) becomes, where it stands in the queue, one `DM_DONE`
  per DM with buttons that was posted before it, in the order they were posted; those DMs are then
  forgotten. Because notices go one at a time, these are exactly the DMs put before the `DONE`.
- A notice for which `start` returns None (nothing to send: the triage message was never posted) is
  skipped, and the next one starts in the same call.

`tests/test_outbox.py` tests each of these without a server.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from workflows.models import Step


class NoticeKind(StrEnum):
    ROOT = "root"  # the triage thread's root message
    THREAD = "thread"  # a reply in the triage thread
    DM = "dm"  # a direct message to `to`
    ROOT_UPDATE = "root_update"  # the root message redrawn (where the deploy stands, the step's buttons)
    DONE = "done"  # close the buttons of the DMs sent so far (becomes one DM_DONE per DM)
    DM_DONE = "dm_done"  # one DM's buttons replaced by `text` (the DM: `to`, `ts`; its first line: `first`)
    PCCR_COMMENT = "pccr_comment"  # a comment on the PCCR issue
    PCCR_LABELS = "pccr_labels"  # the PCCR issue's state label: `text`, replacing `old_label`
    PCCR_CLOSE = "pccr_close"  # the PCCR issue closed

    @property
    def is_pccr(self) -> bool:
        return self in (NoticeKind.PCCR_COMMENT, NoticeKind.PCCR_LABELS, NoticeKind.PCCR_CLOSE)


@dataclass
class Notice:
    kind: NoticeKind
    text: str
    step: Step
    to: str | None = None  # DM: the user; DM_DONE: the DM's channel
    blocks: list[dict[str, Any]] | None = None
    ts: str | None = None  # DM_DONE: the DM whose buttons are replaced
    first: str = ""  # DM_DONE: the DM's first line
    old_label: str | None = None  # PCCR_LABELS: the state label it replaces


@dataclass
class _OpenDm:
    """A DM with buttons that was posted: its buttons are still open until a DONE closes them."""

    step: Step
    channel: str
    ts: str
    first: str


class Outbox:
    """The queue of notices. `start(notice)` schedules a notice's activity now and returns what tracks it
    (the workflow's task that awaits it), or None if there is nothing to send; the workflow calls
    `settled` once that activity returned or failed."""

    def __init__(self, start: Callable[[Notice], object | None]) -> None:
        self._start = start
        self._queue: deque[Notice] = deque()
        self._in_flight: object | None = None
        self._open_dms: list[_OpenDm] = []

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing in flight (the deploy may end)."""
        return not self._queue and self._in_flight is None

    def put(self, notice: Notice) -> None:
        """Queue `notice`; it starts now if no notice is in flight."""
        self._queue.append(notice)
        self._pump()

    def settled(self, notice: Notice, sent: Any) -> None:
        """The notice in flight is over; the next one starts now. `sent`: what its activity returned
        (for a DM, a SlackPostResult), None if it failed."""
        if sent is not None and notice.kind is NoticeKind.DM and notice.blocks:
            self._open_dms.append(_OpenDm(notice.step, sent.channel, sent.ts, notice.text.split("\n")[0]))
        self._in_flight = None
        self._pump()

    def _pump(self) -> None:
        while self._in_flight is None and self._queue:
            notice = self._queue.popleft()
            if notice.kind is NoticeKind.DONE:  # one chat.update per DM whose buttons are still open
                dms, self._open_dms = self._open_dms, []
                done = [
                    Notice(NoticeKind.DM_DONE, notice.text, dm.step, to=dm.channel, ts=dm.ts, first=dm.first)
                    for dm in dms
                ]
                self._queue.extendleft(reversed(done))
                continue
            self._in_flight = self._start(notice)
