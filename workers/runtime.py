"""Runtime worker: owns this host's one `codex app-server` child, shared by every chat.

Hosts the Codex activities on the host's own queue (`codex-runtime@<host>`, so every call of a
turn reaches the process that holds the thread), with the workspace's (autosave: the workspace is a
directory on this machine), and `locate_runtime` on the shared discovery queue.
Stopping the worker stops the child: its process group is killed, so no orphan keeps a thread's
writer lock (docs/codex-app-server.md §1).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys

from temporalio.worker import Worker

from activities.codex import HEARTBEAT_FLUSH, CodexActivities
from activities.workspace import WorkspaceActivities
from ally.clean_exit import run_process
from ally.codex.binary import CodexBinaryNotFound, find_codex_binary
from ally.codex.runtime import CodexRuntime, CodexStartFailed
from ally.config import load_config
from ally.contracts import RuntimeLocation
from ally.memory import limit_malloc_arenas, returning_freed_memory
from ally.metrics import CodexGauges, MetricsUnavailable, metrics_runtime, refreshing
from ally.names import RUNTIME_DISCOVERY_QUEUE, runtime_queue, runtime_worker_identity
from ally.temporal_client import connect
from ally.worker_process import configure_logging, serve_until_signalled

# Concurrent Codex turns on this host; each waits mostly on the model, so this can be generous.
MAX_CONCURRENT_ACTIVITIES = 200


async def main() -> None:
    limit_malloc_arenas()  # before the Temporal core starts its threads
    log = configure_logging("runtime-worker")
    config = load_config()
    codex_home = config.codex.resolved_home()
    codex_home.mkdir(parents=True, exist_ok=True)  # codex exits at once without its home dir
    try:
        runtime = CodexRuntime(find_codex_binary(config.codex.binary), codex_home)
        await runtime.start()
    except (CodexBinaryNotFound, CodexStartFailed) as error:
        # One line with the cause and the fix: `ally up` shows it as the reason this part died.
        log.error("cannot start the Codex runtime: %s", error)
        sys.exit(2)
    try:
        try:
            client = await connect(config, metrics_for="runtime-worker")
        except MetricsUnavailable as error:
            log.error("%s", error)
            sys.exit(2)
        exporting = metrics_runtime(config, "runtime-worker")
        host = config.runtime.host
        codex = CodexActivities(runtime, RuntimeLocation(host=host, task_queue=runtime_queue(host)))
        identity = runtime_worker_identity(host, f"{os.getpid()}@{socket.gethostname()}")
        pinned = Worker(
            client,
            task_queue=runtime_queue(host),
            identity=identity,
            activities=[*codex.pinned(), *WorkspaceActivities().pinned()],
            max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
            max_heartbeat_throttle_interval=HEARTBEAT_FLUSH,
        )
        discovery = Worker(
            client, task_queue=RUNTIME_DISCOVERY_QUEUE, activities=[codex.locate_runtime], identity=identity
        )
        async with contextlib.AsyncExitStack() as alongside:
            await alongside.enter_async_context(returning_freed_memory())
            if exporting is not None:
                codex_gauges = CodexGauges(exporting.metric_meter, runtime)
                await alongside.enter_async_context(
                    refreshing(config.metrics.poll_seconds, codex_gauges.refresh)
                )
            await serve_until_signalled(
                "runtime-worker", [pinned, discovery], detail=lambda: runtime.health().model_dump(mode="json")
            )
    finally:
        await runtime.stop()


if __name__ == "__main__":
    run_process(main)
