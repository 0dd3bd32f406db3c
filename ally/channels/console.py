"""The terminal channel behind `ally chat`: the whole product with no Feishu app.

Deliveries arrive as activities on this terminal's own task queue and are handed to a sink (the
chat loop prints them and prompts for approvals). Like Feishu's `uuid`, an idempotency key that was
already delivered returns the first message and shows nothing twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from ally.contracts import (
    ApprovalOutcome,
    ApprovalPrompt,
    Reaction,
    ReactionRef,
    Reply,
    ReplyUpdate,
    SentMessage,
)

_ids = itertools.count(1)


class ConsoleEvent(BaseModel):
    kind: Literal["reply", "approval", "decided", "updated"]
    message_id: str
    reply: Reply | None = None
    prompt: ApprovalPrompt | None = None
    outcome: ApprovalOutcome | None = None
    update: ReplyUpdate | None = None


class ConsoleChannel:
    def __init__(self, sink: Callable[[ConsoleEvent], None]) -> None:
        self.sink = sink
        self.delivered: dict[str, str] = {}  # idempotency key -> message id

    async def send_reply(self, reply: Reply) -> SentMessage:
        return SentMessage(
            message_id=self._once(
                reply.idempotency_key, lambda mid: ConsoleEvent(kind="reply", message_id=mid, reply=reply)
            )
        )

    async def send_approval(self, prompt: ApprovalPrompt) -> SentMessage:
        return SentMessage(
            message_id=self._once(
                prompt.idempotency_key,
                lambda mid: ConsoleEvent(kind="approval", message_id=mid, prompt=prompt),
            )
        )

    async def update_approval(self, outcome: ApprovalOutcome) -> None:
        self.sink(ConsoleEvent(kind="decided", message_id=outcome.message_id, outcome=outcome))

    async def update_reply(self, update: ReplyUpdate) -> None:
        self.sink(ConsoleEvent(kind="updated", message_id=update.message_id, update=update))

    async def react(self, reaction: Reaction) -> ReactionRef:
        # A terminal shows the turn's progress by its prompt; there is nothing to put an emoji on.
        return ReactionRef(chat=reaction.chat, message_id=reaction.message_id, reaction_id=None)

    async def unreact(self, reaction: ReactionRef) -> None:
        return None

    def _once(self, key: str, event: Callable[[str], ConsoleEvent]) -> str:
        if key not in self.delivered:
            message_id = f"console-{next(_ids)}"
            self.sink(event(message_id))
            self.delivered[key] = message_id
        return self.delivered[key]
