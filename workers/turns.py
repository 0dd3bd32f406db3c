"""Turns worker: hosts the conversation and turn workflows.

Workflows are deterministic stories with no I/O of their own; everything they do happens in
activities on the runtime host's pinned queue (Codex) or on a chat's delivery queue (channels).
"""

from __future__ import annotations

import asyncio

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from ally.config import load_config
from ally.names import TURNS_QUEUE
from ally.temporal_client import connect
from ally.worker_process import configure_logging, serve_until_signalled
from workflows.conversation import ConversationWorkflow
from workflows.turn import TurnWorkflow

WORKFLOWS = [ConversationWorkflow, TurnWorkflow]


def turns_worker(client: Client, task_queue: str = TURNS_QUEUE) -> Worker:
    """Runs the workflows outside Temporal's sandbox. The sandbox re-imports each workflow module
    for every new run and proxies every call: measured on turns without approvals, the Python CPU
    per turn fell from 86 to 41 ms without it. Its guard is kept where it matters:
    tests/test_replay.py replays every recorded history inside the sandbox, so a non-deterministic
    call on those paths still fails CI."""
    return Worker(
        client, task_queue=task_queue, workflows=WORKFLOWS, workflow_runner=UnsandboxedWorkflowRunner()
    )


async def main() -> None:
    configure_logging("turns-worker")
    client = await connect(load_config())
    await serve_until_signalled("turns-worker", [turns_worker(client)])


if __name__ == "__main__":
    asyncio.run(main())
