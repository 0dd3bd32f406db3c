"""Runtime worker: owns this host's one `codex app-server` child, shared by every chat.

Hosts the Codex activities on the host's own queue (`codex-runtime@<host>`, so every call of a
turn reaches the process that holds the thread) and `locate_runtime` on the shared discovery queue.
Stopping the worker stops the child: its process group is killed, so no orphan keeps a thread's
writer lock (notes/codex-app-server.md §1).
"""

from __future__ import annotations

import asyncio

from temporalio.worker import Worker

from activities.codex import CodexActivities
from ally.codex.binary import find_codex_binary
from ally.codex.runtime import CodexRuntime
from ally.config import load_config
from ally.contracts import RuntimeLocation
from ally.names import RUNTIME_DISCOVERY_QUEUE, runtime_queue
from ally.temporal_client import connect
from ally.worker_process import configure_logging, serve_until_signalled

# Concurrent Codex turns on this host; each waits mostly on the model, so this can be generous.
MAX_CONCURRENT_ACTIVITIES = 200


async def main() -> None:
    configure_logging("runtime-worker")
    config = load_config()
    codex_home = config.codex.resolved_home()
    codex_home.mkdir(parents=True, exist_ok=True)  # codex exits at once without its home dir
    runtime = CodexRuntime(find_codex_binary(config.codex.binary), codex_home)
    await runtime.start()
    try:
        client = await connect(config)
        host = config.runtime.host
        codex = CodexActivities(runtime, RuntimeLocation(host=host, task_queue=runtime_queue(host)))
        pinned = Worker(
            client,
            task_queue=runtime_queue(host),
            activities=codex.pinned(),
            max_concurrent_activities=MAX_CONCURRENT_ACTIVITIES,
        )
        discovery = Worker(client, task_queue=RUNTIME_DISCOVERY_QUEUE, activities=[codex.locate_runtime])
        await serve_until_signalled(
            "runtime-worker", [pinned, discovery], detail=lambda: runtime.health().model_dump(mode="json")
        )
    finally:
        await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main())
