"""The Temporal dev server restarted on the same SQLite file while deploys wait: every deploy completes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from starter.client import send_action, start_deploy
from starter.devstack import free_port, wait_for_step
from starter.simulators.jenkins import FakeJenkins
from starter.simulators.slack import FakeSlack
from tests.conftest import BIN, GATE1, OWNER, PARAMS, SRE1, make_deployment
from worker import create_worker, ensure_search_attributes
from workflows.models import Action, ActionInput, DeployResult, Outcome, Process, Step


class DevServer:
    """`temporal server start-dev` on a SQLite file, stoppable and restartable on the same port."""

    def __init__(self, db: Path) -> None:
        self.db, self.port = db, free_port()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(BIN / "temporal"),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--headless",
            "--db-filename",
            str(self.db),
            "--log-level",
            "error",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                await Client.connect(f"127.0.0.1:{self.port}", data_converter=pydantic_data_converter)
                return
            except RuntimeError:
                await asyncio.sleep(0.1)
        raise AssertionError("the dev server did not come up")

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[DevServer]:
    s = DevServer(tmp_path / "temporal.db")
    await s.start()
    yield s
    await s.stop()


async def test_deploys_survive_a_server_restart(
    server: DevServer, tmp_path: Path, jenkins: FakeJenkins, slack: FakeSlack, secrets: dict
):
    d = make_deployment(tmp_path, jenkins, slack)
    client = await Client.connect(f"127.0.0.1:{server.port}", data_converter=pydantic_data_converter)
    await ensure_search_attributes(client)
    async with create_worker(client, d.config, task_queue=d.task_queue):
        wids = []
        for _ in range(3):
            wid, _ = await start_deploy(
                client, d.config, Process.OOW, d.service, "kstg", dict(PARAMS), None, OWNER
            )
            await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
            wids.append(wid)
        await send_action(client, wids[0], Action.APPROVE, ActionInput(actor=GATE1, step=Step.PCCR_REVIEW))
        await wait_for_step(client, wids[0], Step.SRE_ASSIGNMENT, GATE1)

        await server.stop()  # the server goes away while the deploys wait…
        await asyncio.sleep(1)
        await server.start()  # …and comes back on the same SQLite file

        await send_action(
            client, wids[0], Action.ASSIGN, ActionInput(actor=GATE1, step=Step.SRE_ASSIGNMENT, sre=SRE1)
        )
        await wait_for_step(client, wids[0], Step.CLEARANCE, SRE1, timeout=60)
        await send_action(client, wids[0], Action.CANCEL, ActionInput(actor=OWNER, step=Step.CLEARANCE))
        for wid in wids[1:]:
            await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1, timeout=60)
            await send_action(client, wid, Action.REJECT, ActionInput(actor=GATE1, step=Step.PCCR_REVIEW))
        outcomes = [
            (await client.get_workflow_handle(w, result_type=DeployResult).result()).outcome for w in wids
        ]
    assert outcomes == [Outcome.CANCELLED, Outcome.REJECTED, Outcome.REJECTED]
