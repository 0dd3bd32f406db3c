"""The life of a worker process: poll until SIGTERM/SIGINT, keep its run-state file current.

Each `workers/*.py` builds its Temporal workers and hands them here; this is the only place that
knows about signals and status files, so each worker file reads as "what this process hosts".
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from temporalio.worker import Worker

from ally.redaction import redact_handlers
from ally.run_state import PartState, remove_part_state, write_part_state

STATE_REFRESH_SECONDS = 2.0


def configure_logging(name: str) -> logging.Logger:
    logging.basicConfig(
        level=os.environ.get("WORK_ALLY_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redact_handlers()  # no credential in any line, whichever library wrote it
    return logging.getLogger(name)


@contextlib.asynccontextmanager
async def repeating(name: str, every_s: float, step: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """`step` now, then every `every_s` seconds while the block runs, in a task of its own (a worker's
    upkeep beside its serving: metrics gauges, handing freed memory back). A step that fails is
    logged, and the next one comes on time."""

    async def loop() -> None:
        while True:
            try:
                await step()
            except Exception as error:  # one missed round is no reason to stop the upkeep
                logging.getLogger(__name__).warning("%s: %s", name, error)
            await asyncio.sleep(every_s)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def freeze_what_was_built() -> None:
    """Keep what the process built before serving (modules, the generated Codex protocol's models,
    the SDKs: ~380,000 objects in the gateway) out of the garbage collector's sight. They live as
    long as the process, yet each full collection walked all of them: ~200 ms with every thread
    stopped, which under a burst of messages fell between an event's arrival and its receipt emoji
    (docs/operations.md, "bench.progress")."""
    gc.collect()
    gc.freeze()


async def serve_until_signalled(
    name: str,
    workers: list[Worker],
    *,
    detail: Callable[[], dict[str, Any]] = dict,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started_at = datetime.now(UTC)
    freeze_what_was_built()
    running = [asyncio.create_task(worker.run(), name=f"{name}:{worker.task_queue}") for worker in workers]
    try:
        while not stop.is_set():
            write_part_state(PartState(name=name, pid=os.getpid(), started_at=started_at, detail=detail()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATE_REFRESH_SECONDS)
            for task in running:
                if task.done():
                    # A worker that stopped on its own is fatal: let the supervisor restart us.
                    task.result()
                    raise RuntimeError(f"worker {task.get_name()} stopped")
    finally:
        await asyncio.gather(*(worker.shutdown() for worker in workers), return_exceptions=True)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        remove_part_state(name)
