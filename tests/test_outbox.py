"""The notice outbox's ordering invariant (workflows/outbox.py), unit-tested without a server.

A fake `start` stands for the workflow's: it records each notice it is asked to send, at the moment it is
asked (the moment the workflow would schedule the activity), and hands back a token. The tests settle the
notices by hand, as the workflow's `_settle` does when an activity returns.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.models import SlackPostResult, Step
from workflows.outbox import Notice, NoticeKind, Outbox

K = NoticeKind
BUTTONS = [{"type": "actions", "elements": []}]


class Sender:
    """The workflow's side: what was started, in order, and what is in flight now."""

    def __init__(self, nothing_to_send: frozenset[NoticeKind] = frozenset()) -> None:
        self.started: list[Notice] = []
        self.in_flight: list[Notice] = []
        self.nothing_to_send = nothing_to_send
        self.outbox = Outbox(self.start)

    def start(self, notice: Notice) -> object | None:
        assert not self.in_flight, f"{notice} started while {self.in_flight[0]} is in flight"
        self.started.append(notice)
        if notice.kind in self.nothing_to_send:
            return None
        self.in_flight.append(notice)
        return notice

    def settle(self, ok: bool = True, channel: str = "D1", ts: str = "1.1") -> Notice:
        notice = self.in_flight.pop()
        self.outbox.settled(notice, SlackPostResult(channel=channel, ts=ts) if ok else None)
        return notice

    def kinds(self) -> list[str]:
        return [n.kind.value for n in self.started]


def note(kind: NoticeKind, text: str = "", step: Step = Step.PCCR_REVIEW, **kw) -> Notice:
    return Notice(kind, text, step, **kw)


def test_the_nine_kinds_keep_their_names():
    """The names are in summaries and audit notes: the enum replaced strings, it did not rename them."""
    assert sorted(k.value for k in NoticeKind) == sorted(
        [
            "root",
            "thread",
            "dm",
            "root_update",
            "done",
            "dm_done",
            "pccr_comment",
            "pccr_labels",
            "pccr_close",
        ]
    )
    assert {k for k in NoticeKind if k.is_pccr} == {K.PCCR_COMMENT, K.PCCR_LABELS, K.PCCR_CLOSE}


def test_a_notice_starts_inside_the_put_that_queues_it():
    s = Sender()
    s.outbox.put(note(K.ROOT, "root"))
    assert s.kinds() == ["root"]  # synchronously: no later call is needed to schedule it
    assert not s.outbox.idle


def test_one_at_a_time_and_the_next_starts_inside_settled():
    s = Sender()
    for text in ("a", "b", "c"):
        s.outbox.put(note(K.THREAD, text))
    assert [n.text for n in s.started] == ["a"]  # b and c wait for a
    s.settle()
    assert [n.text for n in s.started] == ["a", "b"]  # b started inside a's settled
    s.settle()
    assert [n.text for n in s.started] == ["a", "b", "c"]
    s.settle()
    assert s.outbox.idle


def test_a_failed_notice_releases_the_next_too():
    s = Sender()
    s.outbox.put(note(K.THREAD, "a"))
    s.outbox.put(note(K.THREAD, "b"))
    s.settle(ok=False)
    assert [n.text for n in s.started] == ["a", "b"]


def test_a_notice_with_nothing_to_send_is_skipped_in_the_same_call():
    s = Sender(nothing_to_send=frozenset({K.ROOT_UPDATE}))
    s.outbox.put(note(K.THREAD, "a"))
    s.outbox.put(note(K.ROOT_UPDATE, "u"))
    s.outbox.put(note(K.THREAD, "b"))
    s.settle()
    assert [n.text for n in s.started] == ["a", "u", "b"]  # u asked, nothing sent, b at once
    assert s.in_flight[0].text == "b"


def test_done_closes_the_dms_with_buttons_sent_before_it_in_order_before_what_follows():
    s = Sender()
    s.outbox.put(note(K.DM, "ask gate\nmore", Step.PCCR_REVIEW, to="U1", blocks=BUTTONS))
    s.outbox.put(note(K.DM, "reminder", Step.PCCR_REVIEW, to="U1"))  # no buttons: nothing to close
    s.outbox.put(note(K.DM, "ask sre", Step.SRE_ASSIGNMENT, to="U2", blocks=BUTTONS))
    s.outbox.put(note(K.DM, "failed", Step.SRE_ASSIGNMENT, to="U3", blocks=BUTTONS))
    s.outbox.put(note(K.DONE, "closed by U1"))
    s.outbox.put(note(K.THREAD, "after"))
    s.settle(channel="D1", ts="1.1")
    s.settle()
    s.settle(channel="D2", ts="2.2")
    s.settle(ok=False)  # never posted: nothing to close
    first = s.settle()
    assert first.kind is K.DM_DONE
    second = s.settle()
    s.settle()
    assert s.kinds() == ["dm", "dm", "dm", "dm", "dm_done", "dm_done", "thread"]
    assert (first.to, first.ts, first.first, first.step, first.text) == (
        "D1",
        "1.1",
        "ask gate",
        Step.PCCR_REVIEW,
        "closed by U1",
    )
    assert (second.to, second.ts, second.first, second.step, second.text) == (
        "D2",
        "2.2",
        "ask sre",
        Step.SRE_ASSIGNMENT,
        "closed by U1",
    )
    assert s.outbox.idle


def test_done_forgets_the_dms_it_closed_and_leaves_later_ones_open():
    s = Sender()
    s.outbox.put(note(K.DM, "one", to="U1", blocks=BUTTONS))
    s.outbox.put(note(K.DONE))
    s.outbox.put(note(K.DM, "two", to="U2", blocks=BUTTONS))
    s.outbox.put(note(K.DONE))
    s.outbox.put(note(K.DONE))  # nothing left open: no notice at all
    s.settle(channel="D1", ts="1")
    s.settle()  # dm_done of one
    s.settle(channel="D2", ts="2")
    s.settle()  # dm_done of two
    assert [(n.kind.value, n.ts) for n in s.started] == [
        ("dm", None),
        ("dm_done", "1"),
        ("dm", None),
        ("dm_done", "2"),
    ]
    assert s.outbox.idle


def test_done_with_no_open_dm_lets_the_next_start_at_once():
    s = Sender()
    s.outbox.put(note(K.DONE))
    assert s.outbox.idle
    s.outbox.put(note(K.THREAD, "x"))
    assert s.kinds() == ["thread"]


def test_the_old_label_has_its_own_field():
    n = note(K.PCCR_LABELS, "approved", old_label="open")
    assert (n.text, n.old_label, n.to) == ("approved", "open", None)


# Any interleaving of puts and settlements: the notices start in the order they were put (a DONE in its
# place, as the DM_DONEs of the DMs with buttons posted before it), never two at once, and each starts in
# the very call (put or settled) that made it the next one.
PUT_KINDS = [K.ROOT, K.THREAD, K.DM, K.ROOT_UPDATE, K.DONE, K.PCCR_COMMENT, K.PCCR_LABELS, K.PCCR_CLOSE]
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(PUT_KINDS), st.booleans()),
        st.tuples(st.just("settle"), st.booleans(), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=200, derandomize=True, deadline=None)
@given(OPS)
def test_any_interleaving_keeps_the_order(ops):
    s = Sender(nothing_to_send=frozenset({K.ROOT_UPDATE}))
    # A model of the invariant, written out plainly: what must have started after each call.
    expected: list[tuple[str, str]] = []  # (kind, text or the closed DM's ts)
    queued: list[Notice] = []
    open_dms: list[str] = []  # ts of the DMs with buttons that were posted
    busy = False
    posted = 0
    for i, (op, a, b) in enumerate(ops):
        if op == "put":
            notice = note(a, str(i), to="U1", blocks=BUTTONS if b else None)
            queued.append(notice)
            s.outbox.put(notice)
        elif busy:
            posted += 1
            sent = s.settle(ok=a, ts=str(posted))
            if a and sent.kind is K.DM and sent.blocks:
                open_dms.append(str(posted))
            busy = False
        while not busy and queued:
            head = queued.pop(0)
            if head.kind is K.DONE:
                queued[:0] = [note(K.DM_DONE, head.text, ts=ts) for ts in open_dms]
                open_dms = []
                continue
            expected.append((head.kind.value, head.ts or head.text))
            busy = head.kind is not K.ROOT_UPDATE  # the fake has nothing to send for ROOT_UPDATE
        # Each notice started in the very call that made it the next one, and never two at once.
        assert [(n.kind.value, n.ts or n.text) for n in s.started] == expected
        assert len(s.in_flight) == int(busy)
    assert s.outbox.idle == (not queued and not busy)
