"""What the benchmarks' own worker processes (`python -m bench.baseline`, `python -m bench.probe_worker`)
share: a worker with the product worker's activity pool (64 threads, 64 activities at once) until told
to stop, and the way the process ends."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from temporalio.client import Client


async def serve_until(stop: asyncio.Event, client: Client, **options: Any) -> None:
    """Run a `Worker(client, **options)` with the activity pool until `stop` is set."""
    from temporalio.worker import Worker

    with ThreadPoolExecutor(max_workers=64) as pool:
        worker = Worker(client, activity_executor=pool, max_concurrent_activities=64, **options)
        async with worker:
            await stop.wait()


def main(serve: Callable[[], Coroutine[Any, Any, None]]) -> NoReturn:
    asyncio.run(serve())
    # Leave without interpreter finalisation: temporalio's native runtime can crash in it (sdk-python #300).
    sys.stdout.flush()
    os._exit(0)
