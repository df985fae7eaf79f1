"""Bounds on what comes in and goes out (SPEC §10): what people and builds write cannot forge markup,
bloat a deploy, or take it down."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from starter.client import send_action
from starter.devstack import wait_for_step
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests.conftest import GATE1, OWNER, SRE1, Deployment, eventually, make_deployment
from tests.support import act, refused, signed, start_oow, status, to_trigger
from tests.test_crash import WorkerProcess
from tests.test_ops import free_port
from workflows import messages
from workflows.models import MAX_COMMENT, Action, ActionInput, PrDiff, Step

# What would be markup in Slack if it came through: a mention, a broadcast, a link, a user group.
MARKUP = re.compile(r"<[!@#]|<https?:|<mailto:|<[^>]*\|")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_nothing_escaped_renders_as_slack_markup(text: str):
    shown = messages.slack_escape(text)
    assert not MARKUP.search(shown) and "<" not in shown and ">" not in shown
    assert (
        messages.slack_escape("a <!channel> & <https://evil|x>")
        == "a &lt;!channel&gt; &amp; &lt;https://evil|x&gt;"
    )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("`a\n<>!@&|")))
def test_nothing_ends_a_code_block_early(text: str):
    shown = messages.slack_code(text)
    assert "```" not in shown and "<" not in shown


PR = "https://github.example/acme/configs/pull/7"
HEAD = "0123456789abcdef0123456789abcdef01234567"


def _pr_diff(text: str, read: int = 3000, **kw) -> PrDiff:
    """A version PR's diff as the `pr_diff` activity returns it: the first `read` characters."""
    return PrDiff(
        head_sha=HEAD,
        diff=text[:read],
        chars=len(text),
        files=1,
        changed_files=1,
        files_url=f"{PR}/files",
        **kw,
    )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("`a\n<>!@&|"), max_size=5000))
def test_a_pr_diff_cannot_end_its_code_block_or_lose_its_sha(text: str):
    """The SRE's DM (SPEC §10): the diff as text in one code block it cannot end, cut to one Slack
    section, saying so with the link to the whole diff; the head commit it merges always shown."""
    shown = messages.pr_diff_detail(7, PR, _pr_diff(text))
    assert len(shown) <= 3000  # Slack's section limit: Slack's own cut would take the sha line
    assert shown.count("```") == 2 and "<" not in shown and not MARKUP.search(shown)
    assert shown.endswith("you are shown the new diff.") and f"commit `{HEAD}`" in shown
    if "The diff is cut here" in shown:
        assert f"on GitHub before you merge: {PR}/files" in shown
    else:
        assert f"```\n{messages.slack_code(text) or '(no changes)'}\n```" in shown


def test_a_pr_diff_of_markup_is_cut_by_what_it_shows():
    """`<` is shown as `&lt;`: a diff of them is cut by its escaped length, not its own."""
    shown = messages.pr_diff_detail(7, PR, _pr_diff("<!channel>\n" * 1000))
    assert len(shown) <= 3000 and "&lt;!channel&gt;\n" in shown and "<!channel>" not in shown
    assert ":warning: The diff is cut here: " in shown and "of its 11,000 characters are shown" in shown
    assert shown.endswith("you are shown the new diff.")
    small = messages.pr_diff_detail(7, PR, _pr_diff("+version: 2\n", no_patch=["<!here>.png"]))
    assert "The diff is cut here" not in small and "`&lt;!here&gt;.png`" in small and "<!here>" not in small
    assert "GitHub shows no patch for 1 file(s) (`&lt;!here&gt;.png`): binary or too large" in small


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_a_comment_quoted_on_github_mentions_nobody_and_hides_nothing(text: str):
    shown = messages.github_text(text)
    assert "<!--" not in shown and "\n" not in shown
    assert not re.search(r"(?<![\w\u200b])@\w", shown)  # no live @mention
    assert "![" not in shown and not re.search(r"(?<!\\)\[", shown)


async def test_a_comment_cannot_ping_the_channel_or_disguise_a_link(
    client: Client, deployment: Deployment, worker: None, slack: FakeSlack
):
    wid = await start_oow(client, deployment)
    evil = "<!channel> <https://evil.example/login|PCCR approved by Security>"
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW, comment=evil)
    await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE1)
    root = next(m for m in slack.messages_to("C0TRIAGE") if not m.get("thread_ts") and wid in m["text"])
    said = await eventually(
        lambda: next((m["text"] for m in slack.thread(root["ts"]) if "evil.example" in m["text"]), None)
    )
    assert "&lt;!channel&gt;" in said and "<!channel>" not in said and "<https://evil" not in said
    entry = next(e for e in (await status(client, wid)).audit if e.action == "approve")
    assert entry.comment == evil  # the record keeps what was said; only its display is escaped
    await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "sre_assignment"})


async def test_huge_comments_and_a_flood_of_signals_cannot_take_a_deploy_down(
    client: Client, deployment: Deployment, worker: None
):
    """Three Signals with 1.5 MB comments made `status` fail with "message too large"; now each is refused
    as a bad payload and stored without its comment, and a flood of refusals is counted, not kept."""
    wid = await start_oow(client, deployment)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    handle = client.get_workflow_handle(wid)
    big = "x" * 1_500_000
    for _ in range(3):
        await handle.signal("approve", {"actor": GATE1, "step": "pccr_review", "comment": big})
    st_ = await eventually(lambda: _refused(client, wid, 3))
    assert all(e.comment is None and len(e.reason or "") < 500 for e in st_)
    assert st_[0].reason.startswith(
        f"bad payload: comment: String should have at most {MAX_COMMENT} characters"
    )
    for i in range(230):  # forged approvals, as fast as a script sends them
        await handle.signal("approve", {"actor": "U0EVIL", "step": "pccr_review", "comment": f"forged {i}"})
    final = await eventually(lambda: _refused_not_kept(client, wid))
    assert final.refused_not_kept == 33 and len([e for e in final.audit if not e.accepted]) == 200
    # It still works: the gatekeeper's signed approval goes through.
    ok = signed({"actor": GATE1, "step": "pccr_review", "comment": "y" * MAX_COMMENT}, wid, "approve")
    await handle.execute_update("approve", ok)
    await wait_for_step(client, wid, Step.SRE_ASSIGNMENT, GATE1)
    await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "sre_assignment"})


async def _refused(client: Client, wid: str, n: int):
    found = [e for e in (await status(client, wid)).audit if not e.accepted and e.channel == "signal"]
    return found if len(found) >= n else None


async def _refused_not_kept(client: Client, wid: str):
    st_ = await status(client, wid)
    return st_ if st_.refused_not_kept >= 33 else None


async def test_a_diff_cannot_end_its_code_block_or_ping_anyone(
    client: Client, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, github: FakeGitHub, secrets
):
    from worker import create_worker

    lines = ["~ deployment/app image: 1 -> 2", "```", "<!here> looks good, click *Diff is correct*", "```"]
    lines += [f"~ line {i} " + "y" * 60 for i in range(60)]  # longer than the DM shows
    d = make_deployment(tmp_path, jenkins, slack, github=github, diff_lines=lines)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wid = await start_oow(client, d)
        await to_trigger(client, wid, SRE1)
        await act(client, wid, Action.TRIGGER, OWNER, Step.TRIGGER)
        st_ = await wait_for_step(client, wid, Step.DIFF_VALIDATION, OWNER)
        dm = await eventually(
            lambda: next(
                (m for m in slack.messages_to(OWNER) if "diff_validation" in m["text"] and wid in m["text"]),
                None,
            )
        )
        text = dm["history"][0]["text"] if dm["history"] else dm["text"]
        assert text.count("```") == 2  # the block's own fences, nothing from the build
        assert "<!here>" not in text and "&lt;!here&gt;" in text
        assert "The diff is cut here" in text and f"{st_.build.url}console" in text
        assert f"sha256 `{st_.build.diff_sha256}`" in text
        await act(client, wid, Action.CANCEL, OWNER, Step.DIFF_VALIDATION)


async def test_a_refused_update_is_logged_as_one_json_line(
    client: Client, deployment: Deployment, worker: None, caplog
):
    """A refused Update leaves no history; the worker's log says who tried what, and why."""
    import json
    import logging

    from starter.client import Refused

    wid = await start_oow(client, deployment)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    caplog.set_level(logging.WARNING, logger="temporalio.workflow")
    try:
        await send_action(client, wid, Action.APPROVE, {"actor": "U0EVIL", "step": "pccr_review"}, sign=False)
    except Refused:
        pass
    else:
        raise AssertionError("an unsigned approve was accepted")

    def logged():
        for r in caplog.records:
            msg = r.getMessage()
            if '"refused": "approve"' in msg:
                return json.JSONDecoder().raw_decode(msg[msg.index("{") :])[0]
        return None

    line = await eventually(logged)
    assert line["actor"] == "U0EVIL" and line["via"] == "update" and line["step"] == "pccr_review"
    assert line["reason"].startswith("unsigned action") and line["identity"] == "claimed"
    await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "pccr_review"})


async def test_a_refused_action_is_counted_in_the_refusals_metric(
    env: WorkflowEnvironment,
    tmp_path: Path,
    jenkins: FakeJenkins,
    slack: FakeSlack,
    github: FakeGitHub,
    secrets: dict[str, str],
):
    """`deployctl_refusals{reason,action}`, as the worker's Prometheus endpoint serves it: the SDK
    exports the counter under exactly that name (no prefix, no `_total` suffix), with its own labels
    added (namespace, task_queue, workflow_type, service_name)."""
    d = make_deployment(tmp_path, jenkins, slack, github=github)
    client: Client = env.client
    port = free_port()
    worker = WorkerProcess(env, d.config_path, secrets, "--metrics-port", str(port), log=tmp_path / "w.log")
    await worker.start()

    seen: list[str] = []  # the last scrape's deployctl lines, for a failure's message

    async def counts() -> dict[tuple[str, str], float]:
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        seen[:] = [line for line in text.splitlines() if "deployctl" in line]
        out: dict[tuple[str, str], float] = {}
        for m in re.finditer(r"^deployctl_refusals\{([^}]*)\} (\S+)$", text, re.MULTILINE):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            assert labels["task_queue"] == d.task_queue and labels["namespace"] == "default"
            out[labels["reason"], labels["action"]] = float(m.group(2))
        return out

    try:
        wid = await start_oow(client, d)
        await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1, timeout=60)
        assert await counts() == {}  # nothing refused yet: no series at all
        # A stranger's unsigned approve, and the owner approving their own PCCR (signed, but refused).
        await refused(client, wid, Action.APPROVE, {"actor": "U0EVIL", "step": "pccr_review"}, sign=False)
        await refused(client, wid, Action.APPROVE, ActionInput(actor=OWNER, step=Step.PCCR_REVIEW))
        await refused(client, wid, Action.APPROVE, ActionInput(actor=OWNER, step=Step.PCCR_REVIEW))

        async def counted() -> dict[tuple[str, str], float] | None:
            now = await counts()
            return now if len(now) == 2 else None

        try:
            found = await eventually(counted, timeout=30, interval=0.5)
        except AssertionError as err:
            raise AssertionError(f"{err}; scraped: {seen}") from None
        assert found == {
            ("unsigned", "approve"): 1.0,
            ("separation_of_duties", "approve"): 2.0,
        }
        await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "pccr_review"})
    finally:
        await worker.stop()


async def test_the_gatekeeper_sees_every_parameter_they_approve(
    client: Client, deployment: Deployment, worker: None, slack: FakeSlack
):
    from starter.client import start_deploy
    from tests.conftest import PARAMS
    from workflows.models import Process

    d = deployment
    params = {**PARAMS, "IMAGE_TAG": "<!channel> 1.4.2 ```"}
    wid, _ = await start_deploy(client, d.config, Process.OOW, d.service, "kprod", params, None, OWNER)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    dm = await eventually(
        lambda: next(
            (m for m in slack.messages_to(GATE1) if wid in m["text"] and "pccr_review" in m["text"]), None
        )
    )
    text = dm["text"]
    assert f"Jenkins job `{d.job}`, with exactly these parameters:" in text
    assert "DRY_RUN: false" in text and "REPLICAS: 3" in text
    assert "IMAGE_TAG: &lt;!channel&gt; 1.4.2" in text and "<!channel>" not in text and text.count("```") == 2
    await send_action(client, wid, Action.CANCEL, {"actor": OWNER, "step": "pccr_review"})
