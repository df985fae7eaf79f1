"""What the end-to-end tests do over and over: read a deploy's status, act as a person, expect a refusal."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import Client

from starter.client import Refused, send_action, start_deploy
from starter.devstack import wait_for_step
from starter.signing import sign_payload
from tests import keys
from tests.conftest import PARAMS, Deployment
from workflows.models import Action, ActionInput, DeployStatus, Process, Step

GATE1, OWNER = "U0GATE1", "U0OWNER1"
SREG1 = "U0SREG1"  # a member of the sre-gov Slack user group S0SREGOV (tests/conftest.py)


def signed(payload: dict[str, Any], wid: str, action: str, by: str | None = None) -> dict[str, Any]:
    """`payload` signed for deploy `wid` and `action` with the key of `by` (default: its actor), as
    `deployctl sign` prints it for the `temporal` CLI."""
    return sign_payload(payload, wid, action, keys.private(by or payload["actor"]))


async def status(client: Client, wid: str) -> DeployStatus:
    return await client.get_workflow_handle(wid).query("status", result_type=DeployStatus)


async def act(client: Client, wid: str, action: Action, actor: str, step: Step, **extra: str) -> None:
    """Wait until the deploy waits on `actor` at `step`, then act there (channel "test")."""
    await wait_for_step(client, wid, step, actor, timeout=30)
    await send_action(client, wid, action, ActionInput(actor=actor, step=step, channel="test", **extra))


async def refused(
    client: Client, wid: str, action: Action, msg: ActionInput | dict[str, Any], sign: bool = True
) -> str:
    """Send an action that must be refused (signed with its actor's key unless `sign=False`: then exactly
    as given); return the one-line reason."""
    with pytest.raises(Refused) as err:
        await send_action(client, wid, action, msg, sign=sign)
    reason = str(err.value)
    assert "\n" not in reason
    return reason


async def to_trigger(client: Client, wid: str, sre: str) -> DeployStatus:
    """A com deploy through review, assignment of `sre` and clearance, up to its trigger."""
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(client, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=sre)
    await act(client, wid, Action.APPROVE, sre, Step.CLEARANCE)
    return await wait_for_step(client, wid, Step.TRIGGER, OWNER)


async def start_gov(client: Client, d: Deployment, version: str = "1.4.2") -> str:
    """An OOW gov deploy of the test's service to kprod-gov, opened by the owner."""
    wid, _ = await start_deploy(
        client, d.config, Process.OOW, d.service, "kprod-gov", dict(PARAMS), version, OWNER
    )
    return wid


async def to_merge(client: Client, wid: str, sre: str = SREG1) -> DeployStatus:
    """A gov deploy through review and the assignment of `sre`, up to the version PR's merge."""
    await act(client, wid, Action.APPROVE, GATE1, Step.PCCR_REVIEW)
    await act(client, wid, Action.ASSIGN, GATE1, Step.SRE_ASSIGNMENT, sre=sre)
    return await wait_for_step(client, wid, Step.VERSION_PR_MERGE, sre)


async def start_oow(client: Client, d: Deployment, environment: str = "kprod") -> str:
    """An OOW com deploy of the test's service, opened by the owner."""
    wid, _ = await start_deploy(
        client, d.config, Process.OOW, d.service, environment, dict(PARAMS), None, OWNER
    )
    return wid
