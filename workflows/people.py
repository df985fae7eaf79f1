"""Who a running deploy deals with: the rosters it captured, who may act now, and who acted elsewhere."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

from activities.slack import SlackActivities
from workflows import policy, trail
from workflows.models import UsergroupInput
from workflows.options import NOTICE, cause
from workflows.state import DeployState
from workflows.steps import step_def


def parties(s: DeployState) -> policy.Parties:
    return policy.Parties(
        code_owners=s.plan.service.code_owners, groups=s.groups, assigned_sre=s.sre, held=s.held
    )


def waiting_on(s: DeployState) -> list[str]:
    """Who the open step waits on now: nobody once the deploy ended or while the step is busy."""
    if s.outcome is not None or s.busy:
        return []
    return policy.eligible(step_def(s.steps, s.step), parties(s))


async def resolve_group(s: DeployState, name: str) -> None:
    """Capture a group's roster now: a list from the config, or a Slack user group's members."""
    spec = s.plan.settings.groups.get(name)
    if spec is None:
        s.groups.setdefault(name, ())
        return
    if spec.slack_usergroup is None:
        s.groups[name] = tuple(spec.members)
        return
    try:
        found = await workflow.execute_activity_method(
            SlackActivities.usergroup_members,
            UsergroupInput(usergroup=spec.slack_usergroup),
            summary=f"members of {name}",
            **NOTICE,
        )
        s.groups[name] = tuple(found.users)
    except ActivityError as err:
        trail.note(s, f"could not read Slack user group {spec.slack_usergroup} for {name}: {cause(err)}")
        s.groups.setdefault(name, ())


def out_of_band(s: DeployState, system: str, name: str | None) -> tuple[str, str, str | None]:
    """Who did something directly in Jenkins or on GitHub: (actor, identity, why it is out of policy).
    Their name there maps through `jenkins_user` / `github_login` to a person; only the assigned SRE's
    answer is in policy. Either way it happened, and deployctl follows it."""
    people = s.rules.people if s.rules else {}
    attr = "jenkins_user" if system == "jenkins" else "github_login"
    person = next((uid for uid, p in sorted(people.items()) if name and getattr(p, attr) == name), None)
    identity = f"{system}:{name or 'unknown'}"
    if person is not None and person == s.sre:
        return person, identity, None
    who = (
        f"{name} ({person})"
        if person
        else (f"{name}, who is not in [people] as {attr}" if name else "someone")
    )
    why = f"out of policy: {who} is not the assigned SRE ({s.sre or 'none assigned'})"
    return person or name or system, identity, why
