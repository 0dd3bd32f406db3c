"""Channels: where a conversation's messages come from and replies go.

A channel is what the delivery activities call. Each delivery task queue is served by exactly one
channel implementation (Feishu on the turns worker; the terminal on `ally chat`'s own queue), and
a chat names its queue in its `ChatRef`, so workflows never branch on the kind of chat.
"""

from __future__ import annotations

from typing import Protocol

from ally.contracts import ApprovalOutcome, ApprovalPrompt, Reply, SentMessage


class PermanentDeliveryError(Exception):
    """The chat rejected the message for good (bad content, bot removed): retrying cannot help."""


class Channel(Protocol):
    async def send_reply(self, reply: Reply) -> SentMessage:
        """Deliver a reply; the same idempotency key must never produce a second message."""
        ...

    async def send_approval(self, prompt: ApprovalPrompt) -> SentMessage:
        """Show a pending Codex request with its choices; returns the message that shows it."""
        ...

    async def update_approval(self, outcome: ApprovalOutcome) -> None:
        """Show on the request's message who decided what, and when."""
        ...
