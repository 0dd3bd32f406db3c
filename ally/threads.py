"""An assistant's Codex threads as the terminal sees them (`ally threads`, `ally handoff`).

The threads come from the assistant's runtime host (`ThreadsWorkflow`, run on a worker this process
starts for the command, workflows/threads.py); where each is bound comes from the assistant's
running conversations, each asked for its view (activities/conversations.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import uuid
from datetime import timedelta

from pydantic import BaseModel
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.conversations import VIEW_TIMEOUT, bound_threads
from ally import names
from ally.assistants import Assistant
from ally.chat_client import ChatClient, MessageRefused
from ally.contracts import (
    AgentThread,
    ChatRef,
    Inbound,
    InboundMessage,
    Person,
    ThreadBinding,
    ThreadsFound,
    ThreadsLookup,
)
from workflows.conversation import CLI_MESSAGE_PREFIX, ConversationWorkflow
from workflows.threads import ThreadsWorkflow

THREADS_LISTED = 20
LOOKUP_TIMEOUT = timedelta(seconds=90)


class ThreadRow(BaseModel):
    thread: AgentThread
    bound: list[ThreadBinding] = []


class ThreadsReport(BaseModel):
    assistant: str
    workspace: str
    host: str
    threads: list[ThreadRow]
    unanswered: list[str] = []  # conversations that did not answer: where they are bound is unknown


def discovery_queue(assistant: Assistant) -> str:
    """Where the assistant's conversations find its host (as ally/routing.py `chat_config`)."""
    return names.runtime_queue(assistant.host) if assistant.host else names.RUNTIME_DISCOVERY_QUEUE


def where(assistant: Assistant) -> str:
    return f"on host {assistant.host}" if assistant.host else "on any runtime host"


async def ask_host(
    client: Client, assistant: Assistant, *, thread_id: str | None = None, limit: int = THREADS_LISTED
) -> ThreadsFound:
    """The workspace's recent threads (or one thread) from the assistant's host."""
    queue = f"ally-cli-{uuid.uuid4().hex[:12]}"  # only this process's worker polls it
    lookup = ThreadsLookup(
        discovery_queue=discovery_queue(assistant),
        cwd=assistant.settings.cwd,
        limit=limit,
        thread_id=thread_id,
    )
    worker = Worker(
        client, task_queue=queue, workflows=[ThreadsWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
    )
    async with worker:
        return await client.execute_workflow(
            ThreadsWorkflow.run,
            lookup,
            id=f"ally-threads-{uuid.uuid4().hex[:12]}",
            task_queue=queue,
            execution_timeout=LOOKUP_TIMEOUT,
            static_summary=f"threads of {assistant.name}",
        )


async def threads_report(
    client: Client, assistant: Assistant, *, limit: int = THREADS_LISTED
) -> ThreadsReport:
    """Raises `NoHost` when no runtime host answered for the assistant."""
    found, (bound, unanswered) = await asyncio.gather(
        ask_host(client, assistant, limit=limit), bound_threads(client, assistant.id)
    )
    if found.problem:
        raise NoHost(found.problem)
    rows = [
        ThreadRow(thread=t, bound=[b for b in bound if b.thread_id == t.thread_id]) for t in found.threads
    ]
    return ThreadsReport(
        assistant=assistant.name,
        workspace=assistant.settings.cwd,
        host=found.host,
        threads=rows,
        unanswered=unanswered,
    )


class NoHost(Exception):
    """No runtime host answered, or it could not answer; the text says which, in words."""


class HandoffRefused(Exception):
    """The handoff cannot be made; the text says why, in words for the person. `exit_code` 2: bad
    input (no such thread or conversation); 1: something did not answer."""

    def __init__(self, text: str, exit_code: int = 2) -> None:
        super().__init__(text)
        self.exit_code = exit_code


class Handoff(BaseModel):
    thread: AgentThread
    host: str
    conversation_id: str
    done: bool  # the conversation holds the thread now; False: it waits for its running turn


HANDOFF_WAIT_S = 20.0


async def hand_off(client: Client, assistant: Assistant, thread_id: str, chat: str) -> Handoff:
    """Bind the chat's conversation with the assistant to the thread, as `/resume` in the chat does:
    the chat is told what it picked up. Raises `HandoffRefused` (no such thread or conversation)."""
    found = await ask_host(client, assistant, thread_id=thread_id)
    if not found.host:
        raise HandoffRefused(
            f"{found.problem} for {assistant.name} ({where(assistant)}); is `ally up` running there?", 1
        )
    if found.problem or not found.threads:
        raise HandoffRefused(f"{found.problem or 'no such thread'} on host {found.host} ({assistant.name})")
    thread = found.threads[0]
    conversation_id = names.conversation_id(chat, assistant.id)
    message = InboundMessage(
        message_id=f"{CLI_MESSAGE_PREFIX}handoff:{uuid.uuid4().hex[:12]}",
        # The conversation answers in the chat it belongs to; this reference only names it.
        chat=ChatRef(channel="feishu", chat_id=chat, worker_queue=names.FEISHU_CHATS_QUEUE),
        sender=Person(id=names.LOCAL_OPERATOR, name=getpass.getuser()),
        text=f"/resume {thread.thread_id}",
    )
    handle = client.get_workflow_handle_for(ConversationWorkflow.run, conversation_id)
    try:
        await ChatClient(client).signal_conversation(conversation_id, Inbound(message=message))
    except MessageRefused:
        raise HandoffRefused(_no_conversation(chat, assistant)) from None
    deadline = asyncio.get_running_loop().time() + HANDOFF_WAIT_S
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(RPCError, WorkflowQueryFailedError):
            view = await handle.query(ConversationWorkflow.view, rpc_timeout=VIEW_TIMEOUT)
            if view.thread_id == thread.thread_id:
                return Handoff(thread=thread, host=found.host, conversation_id=conversation_id, done=True)
            if view.running is not None:
                return Handoff(thread=thread, host=found.host, conversation_id=conversation_id, done=False)
        await asyncio.sleep(0.3)
    raise HandoffRefused(
        f"the conversation {conversation_id} did not pick the thread up within {HANDOFF_WAIT_S:.0f} s "
        "(is the chat's worker, the gateway, running?); it will when it runs again",
        1,
    )


def _no_conversation(chat: str, assistant: Assistant) -> str:
    return (
        f"chat {chat} has no conversation with {assistant.name} running: the chat must have talked to "
        "it first (send it a message, then hand the thread over)"
    )


def ago(seconds: float) -> str:
    if seconds < 90:
        return "just now" if seconds < 30 else "a minute ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min ago"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"
