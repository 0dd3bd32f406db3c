"""What a chat worker can tell a conversation about the others: which chats hold which thread.

A workflow cannot list or query other workflows; an activity with the worker's client can. The
conversations answer their `view` query from their own chat worker (the gateway for Feishu chats).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from ally import names
from ally.contracts import BoundThreadsQuery, ConversationView, ThreadBinding

VIEW_TIMEOUT = timedelta(seconds=3)  # a conversation whose worker is down cannot answer


async def bound_threads(client: Client, assistant: str) -> tuple[list[ThreadBinding], list[str]]:
    """The threads the assistant's running conversations hold, and the conversations that did not
    answer (their chat worker is down: where they are bound is unknown)."""
    # Here, not at the top: the conversation workflow imports this module for the activity.
    from workflows.conversation import ConversationWorkflow

    which = f"{names.ASSISTANT.name}='{assistant}'"
    if assistant == names.DEFAULT_ASSISTANT:  # conversations started before the attribute existed
        which = f"({which} OR {names.ASSISTANT.name} IS NULL)"
    query = f"WorkflowType='{ConversationWorkflow.__name__}' AND ExecutionStatus='Running' AND {which}"
    ids = [execution.id async for execution in client.list_workflows(query)]

    async def view(conversation_id: str) -> ConversationView | None:
        handle = client.get_workflow_handle_for(ConversationWorkflow.run, conversation_id)
        try:
            seen: ConversationView = await handle.query(ConversationWorkflow.view, rpc_timeout=VIEW_TIMEOUT)
        except (RPCError, WorkflowQueryFailedError):
            return None
        return seen

    views = await asyncio.gather(*(view(i) for i in ids))
    bound, unanswered = [], []
    for conversation_id, seen in zip(ids, views, strict=True):
        if seen is None:
            unanswered.append(conversation_id)
        elif seen.thread_id is not None:
            place = conversation_id.removeprefix("chat:").split("@", 1)[0]
            chat, _, topic = place.partition("/")
            bound.append(
                ThreadBinding(
                    thread_id=seen.thread_id,
                    conversation_id=conversation_id,
                    chat=chat,
                    topic=topic,
                    handed_off=seen.handed_off,
                )
            )
    return bound, sorted(unanswered)


class ConversationActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn(name="bound_threads")
    async def bound_threads(self, query: BoundThreadsQuery) -> list[ThreadBinding]:
        """Which chats' conversations of the assistant hold which thread (those that answered)."""
        bound, _ = await bound_threads(self.client, query.assistant)
        return bound
