"""Turns worker: hosts the conversation and turn workflows.

Workflows are deterministic stories with no I/O of their own; everything they do happens in
activities on the runtime host's pinned queue (Codex) or on a chat's delivery queue (channels).
"""

from __future__ import annotations

import asyncio

from temporalio.worker import Worker

from ally.config import load_config
from ally.names import TURNS_QUEUE
from ally.temporal_client import connect
from ally.worker_process import configure_logging, serve_until_signalled
from workflows.conversation import ConversationWorkflow
from workflows.turn import TurnWorkflow


async def main() -> None:
    configure_logging("turns-worker")
    client = await connect(load_config())
    worker = Worker(client, task_queue=TURNS_QUEUE, workflows=[ConversationWorkflow, TurnWorkflow])
    await serve_until_signalled("turns-worker", [worker])


if __name__ == "__main__":
    asyncio.run(main())
