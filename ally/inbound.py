"""How a chat starts out on this machine: its thread settings and its first conversation state.

Handing a message over is `ally.chat_client.ChatClient.hand_over`.
"""

from __future__ import annotations

from pathlib import Path

from ally import names
from ally.alerts import owner_of
from ally.config import AllyConfig, data_dir
from ally.contracts import ChatRef, ConversationState, ThreadSettings


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
        alerts_workflow_id=names.ALERTS_WORKFLOW_ID if owner_of(config) else None,
    )


def console_chat(host: str) -> ChatRef:
    queue = f"console@{host}"
    return ChatRef(channel="console", chat_id=queue, worker_queue=queue, reactions=False)
