"""Channels: where a conversation's messages come from and replies go.

A channel is what the delivery activities call. Each chat worker (workers/chat.py) serves exactly
one channel implementation (Feishu on the gateway; the terminal on `ally chat`'s own queue), and a
chat names its worker's queue in its `ChatRef`, so workflows never branch on the kind of chat.
"""

from __future__ import annotations

from typing import Protocol

from ally.contracts import (
    ApprovalOutcome,
    ApprovalPrompt,
    FileDelivery,
    FileSent,
    ProgressView,
    Reaction,
    ReactionRef,
    Reply,
    ReplyUpdate,
    SentMessage,
)


class PermanentDeliveryError(Exception):
    """The chat rejected the message for good (bad content, bot removed): retrying cannot help."""


class TransientDeliveryError(Exception):
    """The chat could not be reached this time (a 5xx, a timeout): retrying the same delivery,
    with the same idempotency key, is safe and expected to work."""


class RetryLaterError(Exception):
    """The chat asked us to wait (a rate limit): retry the same delivery after `retry_after_s`.

    The delivery activity turns it into a retry that waits exactly that long, instead of the
    retry policy's own backoff, so a rate-limited send neither hammers nor idles.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Channel(Protocol):
    # The least time between two edits of one progress card (the chat's own limits, coalesced).
    progress_interval_s: float
    # Whether a file of the workspace is sent with its bytes (Feishu), or only said where it is (a
    # terminal, which may not be on the workspace's host).
    takes_file_bytes: bool

    async def send_reply(self, reply: Reply) -> SentMessage:
        """Deliver a reply; the same idempotency key must never produce a second message."""
        ...

    async def send_approval(self, prompt: ApprovalPrompt) -> SentMessage:
        """Show a pending Codex request with its choices; returns the message that shows it."""
        ...

    async def update_approval(self, outcome: ApprovalOutcome) -> None:
        """Show on the request's message who decided what, and when."""
        ...

    async def update_reply(self, update: ReplyUpdate) -> None:
        """Rewrite a notice that offered choices, once one was taken (its buttons gone)."""
        ...

    async def react(self, reaction: Reaction) -> ReactionRef:
        """Put an emoji on a person's message (a turn started, a turn ended)."""
        ...

    async def unreact(self, reaction: ReactionRef) -> None:
        """Take an emoji off again."""
        ...

    async def show_progress(self, view: ProgressView, *, final: bool = False) -> SentMessage | None:
        """Show a turn's progress: a new card (`view.message_id` None, keyed by
        `view.idempotency_key`) or an edit of `view.message_id`; `final` settles it into a summary.
        None when the channel dropped this edit to stay within its limits (best effort). Raises
        `PermanentDeliveryError` when the card can no longer be edited."""
        ...

    async def send_file(self, delivery: FileDelivery, data: bytes | None) -> FileSent:
        """A workspace file into the chat: an image inline, anything else as a file (`data` is all
        of it; None where the channel does not take bytes). `purpose="image_key"`: only upload the
        image, for a card to show. The same idempotency key never sends a second message."""
        ...
