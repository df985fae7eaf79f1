"""Load on the systems deployctl watches (issue 15): requests to Jenkins, GitHub and Slack per deploy and
per waiting hour, with and without webhooks, beside the floor; and how soon an answer given outside
deployctl is noticed.

`python -m bench.requests [--wait SECONDS] [--json FILE]` (also `make bench`'s `--only requests`). Each
setting (webhooks off, webhooks on) gets an embedded stack of its own (`starter.devstack.embedded_stack`:
a dev server, the Jenkins, GitHub and Slack simulators, one worker with the product's activities and
their production schedule, `activities/budget.py`), and then:

The baseline, in the same run: "no budget", the same activities polling at their tight first-minute
interval for the whole wait (how every wait polled before `activities/budget.py`).

1. **Per deploy**: a com and a gov OOW deploy, their people acting as soon as they are asked (the demo's
   scripts). Requests are counted on the simulators. The **floor** counts each write once and each
   resource read once (a GET of the same path again is a poll): what a deploy needs if every wait were
   answered at its first look.
2. **Per waiting hour**: a com deploy parked at `deploy_approval` (Jenkins' input) and a gov deploy parked
   at `version_pr_merge` (the version PR) for `--wait` seconds. Printed: the requests of the first
   minute (the budget's tight period), the rate after it as measured, and the hour as the schedule gives
   it (`PollSchedule`): measured windows are short, the model is exact.
3. **Noticing**: at the end of the wait the input is answered in Jenkins and the PR merged on GitHub,
   directly on the simulators; with webhooks on, the Signal the webhook routes send
   (`starter.client.signal_outside_event`, called here without the HTTP hop) follows at once. Printed:
   the seconds until each deploy's status shows the next step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from activities.budget import GITHUB_CAP, JENKINS_CAP, TIGHT_FOR, PollSchedule
from activities.github import GithubActivities
from activities.jenkins import JenkinsActivities
from starter.client import query_status, signal_outside_event, start_deploy
from starter.devstack import (
    COM_SCRIPT,
    DEMO_PARAMS,
    GOV_SCRIPT,
    OWNER,
    Stack,
    embedded_stack,
    free_port,
    run_demo,
    wait_for_step,
)
from starter.simulators.github import FakeGitHub
from starter.simulators.jenkins import FakeJenkins
from workflows.models import ActionInput, OutsideEvent, Process, Step

WEBHOOKS = "\n[webhooks]\ngithub = true\njenkins = true\n"
SERVICE = "payments-api"


@dataclass
class Counts:
    """Requests each simulator has served so far (and the floor of those since a mark)."""

    jenkins: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    github: list[tuple[str, str]] = field(default_factory=list)
    slack: int = 0


def counts(st: Stack) -> Counts:
    return Counts(
        jenkins=[(m, p) for _, _, m, p, _ in _timeline(st.jenkins)],
        github=[(m, p) for _, m, p, _ in _timeline(st.github)],
        slack=len(st.slack.requests),
    )


def _timeline(sim: FakeJenkins | FakeGitHub) -> list[Any]:
    with sim._lock:  # the simulators' own record of what they served
        return list(sim.timeline)


def floor(requests: list[tuple[str, str]]) -> int:
    """Each write once, each resource read once: a repeated GET of a path is a poll the floor leaves out."""
    reads = {p for m, p in requests if m in ("GET", "HEAD")}
    return len(reads) + sum(1 for m, _ in requests if m not in ("GET", "HEAD"))


def since(before: Counts, after: Counts) -> dict[str, int]:
    j, g = after.jenkins[len(before.jenkins) :], after.github[len(before.github) :]
    return {
        "jenkins": len(j),
        "jenkins_floor": floor(j),
        "github": len(g),
        "github_floor": floor(g),
        "slack": after.slack - before.slack,
    }


async def per_deploy(st: Stack) -> dict[str, dict[str, int]]:
    out = {}
    for name, environment, version, script in (
        ("com", "kprod", None, COM_SCRIPT),
        ("gov", "kprod-gov", "1.4.2", GOV_SCRIPT),
    ):
        before = counts(st)
        with contextlib.redirect_stdout(io.StringIO()):  # the demo narrates; the bench counts
            await run_demo(st, name, Process.OOW, environment, version, script)
        out[name] = since(before, counts(st))
    return out


async def park(st: Stack, environment: str, version: str | None, script: list[Any], at: Step) -> str:
    """Start a deploy and act until it waits at `at`."""
    from starter.client import send_action

    wid, _ = await start_deploy(
        st.client, st.config, Process.OOW, SERVICE, environment, dict(DEMO_PARAMS), version, OWNER
    )
    for action, actor, step, extra in script:
        s = await wait_for_step(st.client, wid, step, actor, timeout=120)
        if step is at:
            return wid
        fields = {k: (s.build.diff_sha256 or "" if v == "<diff>" else v) for k, v in extra.items()}
        await send_action(
            st.client, wid, action, ActionInput(actor=actor, step=step, channel="bench", **fields)
        )
    raise AssertionError(f"the script never reaches {at.value}")


async def until_step_is_not(st: Stack, wid: str, step: Step, timeout: float = 400) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = await query_status(st.client, wid)
        if s.step is not step or s.outcome is not None:
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    return float("nan")


async def waiting(st: Stack, wait: float, webhooks: bool) -> dict[str, Any]:
    com = await park(st, "kprod", None, COM_SCRIPT, Step.DEPLOY_APPROVAL)
    gov = await park(st, "kprod-gov", "1.4.3", GOV_SCRIPT, Step.VERSION_PR_MERGE)  # 1.4.2 is merged
    parked = time.time()
    com_st, gov_st = await query_status(st.client, com), await query_status(st.client, gov)
    job, number = f"deploy-{SERVICE}", com_st.build.number
    assert number is not None and gov_st.version_pr is not None
    pr = int(gov_st.version_pr.rstrip("/").rsplit("/", 1)[1])
    slack_before = len(st.slack.requests)
    await asyncio.sleep(wait)
    jenkins_times = [t for t, *_ in st.jenkins.requests_of(job=job, number=number)]
    github_times = [t for t, _, p, _ in _timeline(st.github) if p.endswith(f"/pulls/{pr}")]
    figures = {
        "jenkins": window(jenkins_times, parked, wait),
        "github": window(github_times, parked, wait),
        "slack_in_window": len(st.slack.requests) - slack_before,
    }
    st.jenkins.answer_input(job, number, proceed=True, by="someone-in-jenkins")
    st.github.merge_directly(st.config.github.configs_repo, pr, by="someone-on-github")
    if webhooks:  # what the webhook routes do once the delivery is verified
        await signal_outside_event(st.client, com, OutsideEvent(system="jenkins", detail="input_answered"))
        await signal_outside_event(st.client, gov, OutsideEvent(system="github", detail="closed"))
    noticed = await asyncio.gather(
        until_step_is_not(st, com, Step.DEPLOY_APPROVAL), until_step_is_not(st, gov, Step.VERSION_PR_MERGE)
    )
    figures["noticed_jenkins_s"], figures["noticed_github_s"] = noticed
    return figures


def window(times: list[float], start: float, wait: float) -> dict[str, float]:
    """Requests in the first minute of the wait, and the rate after it (per minute) as measured."""
    rel = sorted(t - start for t in times if start <= t <= start + wait)
    first = sum(1 for t in rel if t < TIGHT_FOR)
    later = [t for t in rel if t >= TIGHT_FOR]
    span = max(wait - TIGHT_FOR, 1e-9)
    return {"first_minute": first, "after": len(later), "per_minute_after": 60 * len(later) / span}


def model_hour(first: float, cap: float, poll_cap: float | None, tight_for: float = TIGHT_FOR) -> float:
    """Requests in one hour of waiting by the schedule (`activities.budget.PollSchedule`), one a poll."""
    requests_per_poll = 1
    schedule = PollSchedule(first=first, cap=cap, tight_for=tight_for).stretched(poll_cap)
    t, n = 0.0, 0
    while t < 3600:
        n += requests_per_poll
        t += schedule.pause(t, requests_per_poll)
    return n


async def run_setting(webhooks: bool, wait: float, budget: bool = True) -> dict[str, Any]:
    """One setting's figures. `budget` False is the baseline of the same run: the same activities with
    their tight first-minute interval for the whole wait, as every wait polled before the budget."""

    @contextlib.asynccontextmanager
    async def worker(client: Any, config: Any) -> Any:
        from worker import build_activities, create_worker

        acts = build_activities(client, config)
        if not budget:
            for owner in {getattr(a, "__self__", None) for a in acts}:
                if isinstance(owner, JenkinsActivities | GithubActivities):
                    owner.tight_for = float("inf")
        async with create_worker(client, config, activities=acts):
            yield None

    async with embedded_stack(
        worker, free_port(), free_port(), None, quiet=True, extra_config=WEBHOOKS if webhooks else ""
    ) as st:
        deploys = await per_deploy(st)
        waits = await waiting(st, wait, webhooks)
    cap = 300.0 if webhooks else None
    tight = float("inf") if not budget else TIGHT_FOR
    waits["jenkins_hour_model"] = model_hour(1.0, JENKINS_CAP, cap, tight)
    waits["github_hour_model"] = model_hour(15.0, GITHUB_CAP, cap, tight)
    return {"per_deploy": deploys, "waiting": waits}


async def measure(wait: float) -> dict[str, dict[str, Any]]:
    """Every setting, the baseline first."""
    return {
        "no budget": await run_setting(False, wait, budget=False),  # the baseline
        "webhooks off": await run_setting(False, wait),
        "webhooks on": await run_setting(True, wait),
    }


def report(results: dict[str, dict[str, Any]], wait: float) -> str:
    lines = ["requests per deploy (people act at once) — measured; floor: each write once, each read once"]
    lines.append(f"  {'':<18}{'Jenkins':>10}{'(floor)':>9}{'GitHub':>9}{'(floor)':>9}{'Slack':>8}")
    for setting, r in results.items():
        for name, c in r["per_deploy"].items():
            lines.append(
                f"  {setting + ' ' + name:<18}{c['jenkins']:>10}{c['jenkins_floor']:>9}"
                f"{c['github']:>9}{c['github_floor']:>9}{c['slack']:>8}"
            )
    lines.append(
        f"per waiting hour — first minute and the rate after it measured over {wait:.0f} s; the hour by"
    )
    lines.append(
        "the schedule (activities/budget.py); Jenkins: a com deploy at deploy_approval, GitHub: gov at"
    )
    lines.append("version_pr_merge")
    lines.append(
        f"  {'':<18}{'1st min':>9}{'/min after':>12}{'hour':>7}   {'1st min':>9}{'/min after':>12}{'hour':>7}"
        f"{'noticed (J, G)':>18}"
    )
    for setting, r in results.items():
        w = r["waiting"]
        j, g = w["jenkins"], w["github"]
        lines.append(
            f"  {setting:<18}{j['first_minute']:>9}{j['per_minute_after']:>12.2f}{w['jenkins_hour_model']:>7.0f}"
            f"   {g['first_minute']:>9}{g['per_minute_after']:>12.2f}{w['github_hour_model']:>7.0f}"
            f"{w['noticed_jenkins_s']:>9.1f}s{w['noticed_github_s']:>7.1f}s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.requests", description=__doc__.split("\n")[0])
    p.add_argument("--wait", type=float, default=150.0, help="seconds each deploy stays parked (default 150)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    logging.getLogger("temporalio").setLevel(logging.ERROR)  # the workers' notes are not the figures

    results = asyncio.run(measure(args.wait))
    print(report(results, args.wait))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
