"""`FeishuChannel`: what the delivery activities call for a Feishu chat.

- A reply answers the person's message (thread-aware: a message inside a topic gets its answer in
  that topic) with one card, several cards for a long answer, or a card and a file for a very long
  one (`cards.reply_layout`). Each message carries its own `uuid` (`names.chunk_key`), so a retry
  after a timeout, a 5xx or a 429 re-sends nothing Feishu already has (one message per uuid per
  hour, docs/feishu-platform.md §4).
- An approval is a card with buttons whose values name the turn workflow and the request; the
  card's message id is remembered here (for thumbs-up reactions and text shortcuts), and
  `update_approval` PATCHes it in place with who decided what, and when.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from ally.channels import PermanentDeliveryError
from ally.channels.feishu import cards
from ally.channels.feishu.client import PARENT_GONE, FeishuApi, FeishuApiError, FeishuRejected
from ally.contracts import (
    ApprovalOutcome,
    ApprovalPrompt,
    ChatRef,
    FileDelivery,
    FileSent,
    ProgressView,
    Reaction,
    ReactionRef,
    Reply,
    ReplyUpdate,
    SentMessage,
)
from ally.names import chunk_key

log = logging.getLogger(__name__)

CARDS_KEPT = 2000
TOPICS_KEPT = 5000
# Feishu allows 5 messages a second per chat (docs/feishu-platform.md §5); a long answer's cards go
# out a bit slower.
PACE_S = 0.25
# Progress cards (docs/feishu-platform.md §5, §8): one card is edited at most every 2 s (Feishu
# allows 5 edits a second per message), and all cards of this app together at most 10 times a
# second (its quota for the update API is 50 a second and 1000 a minute; answers and approval
# cards need the rest). An edit over budget is dropped: the next one shows the same, newer state.
PROGRESS_EDIT_EVERY_S = 2.0
PROGRESS_EDITS_PER_S = 10.0


class EditBudget:
    """A token bucket: `rate` edits a second, at most `rate` at once."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


@dataclass(frozen=True)
class ApprovalCard:
    message_id: str
    prompt: ApprovalPrompt


class ApprovalCards:
    """Approval cards this process sent, newest last. Memory only and bounded: after a restart the
    card's own button values (read back with GET message) are the fallback."""

    def __init__(self, limit: int = CARDS_KEPT) -> None:
        self.limit = limit
        self._cards: OrderedDict[str, ApprovalCard] = OrderedDict()

    def remember(self, message_id: str, prompt: ApprovalPrompt) -> None:
        self._cards[message_id] = ApprovalCard(message_id, prompt)
        self._cards.move_to_end(message_id)
        while len(self._cards) > self.limit:
            self._cards.popitem(last=False)

    def get(self, message_id: str) -> ApprovalCard | None:
        return self._cards.get(message_id)


class FeishuChannel:
    progress_interval_s = PROGRESS_EDIT_EVERY_S
    takes_file_bytes = True

    def __init__(
        self, api: FeishuApi, *, pace_s: float = PACE_S, progress_edits_per_s: float = PROGRESS_EDITS_PER_S
    ) -> None:
        self.api = api
        self.pace_s = pace_s
        self.edits = EditBudget(progress_edits_per_s)
        self.approvals = ApprovalCards()
        self._topics: OrderedDict[str, str] = OrderedDict()  # message id -> its Feishu topic ("" if none)

    # --- what the gateway asks -------------------------------------------------------------------

    def remember_topic(self, message_id: str, topic_id: str) -> None:
        """The gateway tells us which topic an inbound message is in, so replies need no lookup."""
        self._topics[message_id] = topic_id
        self._topics.move_to_end(message_id)
        while len(self._topics) > TOPICS_KEPT:
            self._topics.popitem(last=False)

    def react_now(self, message_id: str, emoji: str) -> concurrent.futures.Future[str]:
        """An emoji put on from any thread, at once (the receipt): no event loop's turn to wait for."""
        return self.api.add_reaction_now(message_id, emoji)

    def approval_card(self, message_id: str) -> ApprovalCard | None:
        """The approval this process sent as `message_id`, while it is still remembered."""
        return self.approvals.get(message_id)

    async def card_decisions(self, message_id: str) -> list[cards.DecisionValue]:
        """The decision buttons of the card `message_id`, read back from Feishu (an approval sent
        before a restart); none for any other message. Raises `FeishuApiError` or `ValueError`."""
        message = await self.api.get_message(message_id)
        if message.msg_type != "interactive":
            return []
        return cards.decision_values(json.loads(message.content))

    async def notice(self, chat: ChatRef, reply_to: str, text: str, key: str) -> bool:
        """A short notice from the gateway itself (not from a turn); False, logged, if it failed."""
        reply = Reply(chat=chat, reply_to=reply_to, text=text, idempotency_key=key, tone="notice")
        try:
            await self.send_reply(reply)
        except Exception as error:
            log.warning("could not tell %s: %s", chat.chat_id, error)
            return False
        return True

    # --- the Channel protocol --------------------------------------------------------------------

    async def send_reply(self, reply: Reply) -> SentMessage:
        if reply.choices:
            card = cards.choice_card(reply)
            content = cards.card_content(card)
            return SentMessage(
                message_id=await self._send(
                    reply.chat, reply.reply_to, "interactive", content, chunk_key(reply.idempotency_key, 0)
                )
            )
        layout = cards.reply_layout(reply.text, reply.tone)
        if reply.files or reply.images:  # no progress card lists them: the answer does
            shown = cards.FilesShown(
                files=reply.files,
                total=len(reply.files),
                workspace=reply.workspace,
                conversation=reply.conversation,
                chat_type=reply.chat.chat_type,
                images=reply.images,
            )
            last = layout.cards[-1]
            last["body"]["elements"] = [*last["body"]["elements"], *cards.files_elements(shown)]
            if cards.size_on_the_wire(last) > cards.CARD_BUDGET_BYTES:
                last["body"]["elements"] = last["body"]["elements"][: -len(cards.files_elements(shown))]
        sent: list[str] = []
        for index, card in enumerate(layout.cards):
            if index:
                await asyncio.sleep(self.pace_s)
            sent.append(
                await self._send(
                    reply.chat,
                    reply.reply_to,
                    "interactive",
                    cards.card_content(card),
                    chunk_key(reply.idempotency_key, index),
                )
            )
        if layout.file_name and layout.file_data is not None:
            # Uploading twice on a retry only leaves an unused file; the message itself is keyed.
            file_key = await self.api.upload_file(layout.file_name, layout.file_data)
            await self._send(
                reply.chat,
                reply.reply_to,
                "file",
                json.dumps({"file_key": file_key}),
                chunk_key(reply.idempotency_key, len(layout.cards)),
            )
        return SentMessage(message_id=sent[0])

    async def send_file(self, delivery: FileDelivery, data: bytes | None) -> FileSent:
        """An image inline (an `image` message), anything else as a `file` message; uploaded first
        (docs/feishu-platform.md §4). A retry may upload again (an unused upload), never send twice."""
        if data is None:
            raise PermanentDeliveryError("no bytes to send")
        name = delivery.file.relative.rsplit("/", 1)[-1]
        if delivery.purpose == "image_key" and delivery.file.kind != "image":
            return FileSent(refused="over the size limit of an image")
        if delivery.file.kind == "image":
            key = await self.api.upload_image(name, data)
            if delivery.purpose == "image_key":
                return FileSent(image_key=key)
            msg_type, content = "image", {"image_key": key}
        else:
            msg_type, content = "file", {"file_key": await self.api.upload_file(name, data)}
        message_id = await self._send(
            delivery.chat, delivery.reply_to, msg_type, json.dumps(content), delivery.idempotency_key
        )
        return FileSent(message_id=message_id)

    async def send_approval(self, prompt: ApprovalPrompt) -> SentMessage:
        card = cards.approval_card(prompt)
        message_id = await self._send(
            prompt.chat, prompt.reply_to, "interactive", cards.card_content(card), prompt.idempotency_key
        )
        self.approvals.remember(message_id, prompt)
        return SentMessage(message_id=message_id)

    async def update_approval(self, outcome: ApprovalOutcome) -> None:
        card = cards.decided_card(outcome.request, outcome.decision, outcome.decided_by, outcome.decided_at)
        try:
            await self.api.patch(outcome.message_id, cards.card_content(card))
        except FeishuRejected as error:
            # The card was recalled or is too old to edit (14 days): there is nothing left to
            # show the decision on, and failing would only fail the turn that already moved on.
            log.warning("could not show the decision on card %s: %s", outcome.message_id, error)

    async def update_reply(self, update: ReplyUpdate) -> None:
        card = cards.reply_card(cards.escape_mentions(update.text), "notice")
        try:
            await self.api.patch(update.message_id, cards.card_content(card))
        except FeishuRejected as error:  # recalled, or too old to edit: nothing left to update
            log.warning("could not update card %s: %s", update.message_id, error)

    async def show_progress(self, view: ProgressView, *, final: bool = False) -> SentMessage | None:
        """The progress card: sent as a reply to the person's message the first time, then PATCHed
        in place (`update_multi`). A settled card is always sent; an edit over the app's budget is
        dropped. A card Feishu will not let us edit any more raises `FeishuRejected`."""
        if view.message_id is None and final:
            return None
        if not final and not self.edits.take():
            return None
        content = cards.card_content(cards.progress_card(view, final=final))
        if view.message_id is None:
            message_id = await self._send(
                view.chat, view.reply_to, "interactive", content, view.idempotency_key
            )
            return SentMessage(message_id=message_id)
        await self.api.patch(view.message_id, content)
        return SentMessage(message_id=view.message_id)

    async def react(self, reaction: Reaction) -> ReactionRef:
        reaction_id = await self.api.add_reaction(reaction.message_id, reaction.emoji)
        return ReactionRef(chat=reaction.chat, message_id=reaction.message_id, reaction_id=reaction_id)

    async def unreact(self, reaction: ReactionRef) -> None:
        if reaction.reaction_id is None:
            return
        try:
            await self.api.delete_reaction(reaction.message_id, reaction.reaction_id)
        except PermanentDeliveryError as error:
            # Already gone (the message was recalled): nothing left to take off.
            log.info("reaction %s not removed: %s", reaction.reaction_id, error)

    # --- sending ---------------------------------------------------------------------------------

    async def _send(self, chat: ChatRef, reply_to: str | None, msg_type: str, content: str, uuid: str) -> str:
        parent = reply_to or None
        if parent:
            try:
                sent = await self.api.reply(
                    parent,
                    msg_type=msg_type,
                    content=content,
                    uuid=uuid,
                    in_thread=await self._in_thread(parent),
                )
                return sent.message_id
            except FeishuRejected as error:
                if error.code not in PARENT_GONE:
                    raise
                log.info("message %s is gone (%s); sending into the chat instead", parent, error.code)
        sent = await self.api.create(chat.chat_id, msg_type=msg_type, content=content, uuid=uuid)
        return sent.message_id

    async def _in_thread(self, message_id: str) -> bool:
        """Whether `message_id` sits in a topic: then the reply goes there too (`reply_in_thread`);
        a top-level message must not get one, or Feishu starts a new topic from it."""
        if message_id not in self._topics:
            try:
                self.remember_topic(message_id, (await self.api.get_message(message_id)).thread_id)
            except FeishuApiError as error:
                log.info("cannot tell whether %s is in a topic (%s); replying in place", message_id, error)
                return False
        return bool(self._topics[message_id])
