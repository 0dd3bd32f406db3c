"""How a chat starts out on this machine: its thread settings and its first conversation state.

Handing a message over is `ally.chat_client.ChatClient.hand_over`.
"""

from __future__ import annotations

from pathlib import Path

from ally import routing
from ally.assistants import default_assistant, resolve
from ally.config import AllyConfig, data_dir
from ally.contracts import ChatRef, ConversationState, ThreadSettings
from ally.routing import Route


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


def new_conversation(config: AllyConfig, chat: ChatRef, assistant: str | None = None) -> ConversationState:
    """How a chat's conversation with `assistant` (default: the default assistant) starts out."""
    chosen = resolve(config, assistant) if assistant else default_assistant(config)
    return routing.new_conversation(config, chat, Route(assistant=chosen))


def console_chat(host: str) -> ChatRef:
    queue = f"console@{host}"
    return ChatRef(channel="console", chat_id=queue, worker_queue=queue, reactions=False)
