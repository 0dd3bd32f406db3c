"""The chat worker: a chat's workflows, beside the channel that speaks to it.

Every process that serves chats runs one, on the chat's own queue (`ChatRef.worker_queue`): the
Feishu gateway for Feishu chats (workers/gateway.py), `ally chat` for the terminal. It hosts the
conversation and turn workflows and the channel's activities (and the approval policy, a local
activity of the turn: activities/policy.py), so a reply is a local activity of
the turn (no task-queue hop, no extra workflow task: bench/turns.py) and every other channel call
is dispatched eagerly to this same worker. Codex is never called here: that is the runtime
host's pinned queue (workers/runtime.py).

A chat whose worker is down waits, durably: its workflow tasks run when the worker is back.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.channel import ChannelActivities
from activities.conversations import ConversationActivities
from activities.policy import evaluate_policy
from activities.routines import routine_thread, routines_posting_in
from ally.channels import Channel
from workflows.alerts import AlertsWorkflow
from workflows.conversation import ConversationWorkflow
from workflows.files import SendFileWorkflow
from workflows.routine import RoutineRunWorkflow
from workflows.turn import TurnWorkflow

WORKFLOWS = [ConversationWorkflow, TurnWorkflow, AlertsWorkflow, RoutineRunWorkflow, SendFileWorkflow]


def chat_worker(client: Client, channel: Channel, task_queue: str) -> Worker:
    """Runs the workflows outside Temporal's sandbox. The sandbox re-imports each workflow module
    for every new run and proxies every call: measured on turns without approvals, the Python CPU
    per turn fell from 86 to 41 ms without it. Its guard is kept where it matters:
    tests/test_replay.py replays every recorded history inside the sandbox, so a non-deterministic
    call on those paths still fails CI."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[
            *ChannelActivities(channel, client).all(),
            evaluate_policy,
            routine_thread,
            routines_posting_in,
            ConversationActivities(client).bound_threads,
        ],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
