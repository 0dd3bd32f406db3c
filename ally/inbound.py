"""Handing an inbound chat message to its conversation: signal-with-start, nothing else.

Works with no worker running (the server records the signal durably, notes/temporal.md §3), so a
message accepted here is never lost; it is answered when the workers are back.

Every channel hands over here, so this is where a message that cannot travel is refused, in words
for the person: text that is not valid UTF-8, or more than `MAX_MESSAGE_BYTES` as it is encoded in
Temporal's payloads (Temporal refuses any payload over 2 MB; a message rides in payloads beside
some configuration, docs/operations.md "Limits").
"""

from __future__ import annotations

from pathlib import Path

from pydantic_core import PydanticSerializationError, to_json
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from ally import names
from ally.config import AllyConfig, data_dir
from ally.contracts import ChatConfig, ChatRef, ConversationState, Inbound, InboundMessage, ThreadSettings
from workflows.conversation import ConversationWorkflow

MAX_MESSAGE_BYTES = 1536 * 1024


class MessageRefused(Exception):
    """The message cannot be handed over; the text says why, in words for the person."""


def refusal(text: str) -> str | None:
    """Why `text` cannot be handed over as a message, or None when it can."""
    try:
        size = len(to_json(text))  # as the payload converter encodes it
    except PydanticSerializationError:  # lone surrogates: bytes that were not UTF-8 to begin with
        return (
            "This message is not valid text (it has bytes that are not UTF-8), so it was not sent. "
            "Send it again as plain text."
        )
    if size > MAX_MESSAGE_BYTES:
        return (
            f"This message is too large to send on: {size // 1024:,} KB, and a message can be at "
            f"most {MAX_MESSAGE_BYTES // 1024:,} KB. Save the text as a file in the workspace and ask "
            "Codex to read it."
        )
    return None


def thread_settings(config: AllyConfig) -> ThreadSettings:
    workspace = config.codex.workspace or data_dir() / "workspace"
    Path(workspace).mkdir(parents=True, exist_ok=True)
    return ThreadSettings(
        cwd=str(workspace),
        model=config.codex.model,
        sandbox=config.codex.sandbox,
        approval_policy=config.codex.approval_policy,
        developer_instructions=config.codex.persona or None,
    )


def new_conversation(config: AllyConfig, chat: ChatRef) -> ConversationState:
    """How a chat starts out: this machine's thread settings, no thread yet."""
    return ConversationState(
        chat=chat,
        settings=thread_settings(config),
        policy=config.policy,
        approvers=config.access.approvers,
    )


async def hand_over(
    client: Client,
    message: InboundMessage,
    new_state: ConversationState,
) -> None:
    """Deliver the message to its chat's conversation, starting it (from `new_state`) if needed.
    The message carries the chat's current configuration too: a conversation that already runs
    adopts it for the turns to come. Raises `MessageRefused` for a message that cannot travel."""
    if (reason := refusal(message.text)) is not None:
        raise MessageRefused(reason)
    chat_config = ChatConfig(
        settings=new_state.settings, policy=new_state.policy, approvers=new_state.approvers
    )
    await client.start_workflow(
        ConversationWorkflow.run,
        new_state,
        id=names.conversation_id(message.chat.chat_id),
        task_queue=message.chat.worker_queue,  # the worker that serves this chat runs its workflows
        start_signal=ConversationWorkflow.inbound.__name__,  # the signal is named for its method
        start_signal_args=[Inbound(message=message, config=chat_config)],
        search_attributes=TypedSearchAttributes([SearchAttributePair(names.CHAT, message.chat.chat_id)]),
        static_summary=f"conversation {message.chat.chat_id}",
    )


def console_chat(host: str) -> ChatRef:
    queue = f"console@{host}"
    return ChatRef(channel="console", chat_id=queue, worker_queue=queue, reactions=False)
