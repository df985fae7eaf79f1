"""The step table carries every fact about a step (workflows/steps.py): the rows agree with what the
workflow, the config and Slack take from them."""

from __future__ import annotations

from starter.config import TIMEOUT_DEFAULTS
from workflows import slack_blocks, steps
from workflows.effects import EFFECTS
from workflows.models import Action, Cloud, Process, Step
from workflows.steps import ALL, Effect, Shows, Watcher, steps_for


def test_every_effect_has_its_function_and_every_step_its_row() -> None:
    assert set(EFFECTS) == set(Effect)
    walked = {d for p in Process for c in Cloud for v in (False, True) for d in steps_for(p, c, v)}
    assert walked == set(ALL)  # no row that no process walks, none walked that ALL leaves out
    assert {d.step for d in ALL} == set(Step)


def test_a_step_that_waits_on_people_has_a_timeout_and_the_config_takes_them_from_the_table() -> None:
    for d in ALL:
        assert (d.timeout is not None) == d.waits_on_people, d.step
        assert (d.effect in (Effect.WAIT_WINDOW, Effect.FOLLOW_BUILD)) == (not d.waits_on_people), d.step
    assert TIMEOUT_DEFAULTS == {d.step: d.timeout for d in ALL if d.timeout}
    assert TIMEOUT_DEFAULTS[Step.DEPLOY_APPROVAL].total_seconds() == 4 * 3600


def test_rows_of_one_step_agree() -> None:
    """A step walked by two rows (the SRE assigned by the gatekeeper or found by the owner; triggered by
    the owner or the SRE) draws the same buttons, waits as long and does the same."""
    by_step: dict[Step, set[tuple[object, ...]]] = {}
    for d in ALL:
        by_step.setdefault(d.step, set()).add(
            (d.buttons, d.timeout, d.effect, d.shows, d.watcher, d.names_sre)
        )
    assert {step: len(facts) for step, facts in by_step.items() if len(facts) > 1} == {}


def test_buttons_that_end_a_deploy_or_touch_production_ask_first() -> None:
    for d in ALL:
        for b in d.buttons:
            asks = b.confirm is not None
            assert asks == (b.action is Action.REJECT or d.effect is Effect.PROCEED_INPUT), (d.step, b.action)
    assert slack_blocks.label(Step.DEPLOY_APPROVAL, Action.APPROVE) == "Approve deploy"
    assert slack_blocks.label(Step.CLEARANCE, Action.APPROVE) == "Clear to trigger"
    assert slack_blocks.label(Step.PCCR_REVIEW, Action.CANCEL) == "Cancel"  # not a button: the fallback


def test_what_a_step_shows_and_who_watches_it() -> None:
    assert [d.step for d in ALL if d.names_sre] == [Step.SRE_ASSIGNMENT, Step.SRE_ASSIGNMENT]
    assert {d.step: d.watcher for d in ALL if d.watcher} == {
        Step.VERSION_PR_MERGE: Watcher.VERSION_PR,
        Step.DEPLOY_APPROVAL: Watcher.JENKINS_INPUT,
    }
    bound = {d.step for d in ALL if d.shows in (Shows.BUILD_DIFF, Shows.PR_DIFF)}
    assert bound == {Step.DIFF_VALIDATION, Step.VERSION_PR_MERGE}
    # the buttons that carry the diff's sha256, derived from those rows
    assert set(slack_blocks.DIFF_BOUND) == {Action.VALIDATE_DIFF, Action.MERGE}
    assert steps.button(Step.VERSION_PR_MERGE, Action.MERGE) is not None
