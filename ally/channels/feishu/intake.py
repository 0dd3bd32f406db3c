"""Messages in: read (normalise, download held attachments), check access, then hand over.

A message is handed to its chat's conversation with signal-with-start (`ChatClient.hand_over`),
which Temporal records durably. Messages of one chat are handed over in the order they arrived,
whatever each one's reading costs: each takes its place in its chat's line before its first await.
A decision shortcut ("y", "1 y 2 n") answers the chat's waiting approvals instead
(ally/channels/feishu/decisions.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ally import names
from ally.access import AccessConfig, may_prompt
from ally.channels.feishu.channel import FeishuChannel
from ally.channels.feishu.decisions import FeishuDecisions
from ally.channels.feishu.events import Envelope, MessageReceived
from ally.channels.feishu.inbound import Ignored, MessageReader
from ally.chat_client import ChatClient, MessageRefused
from ally.contracts import ChatRef, ConversationState, InboundMessage

log = logging.getLogger(__name__)

# A message still not handed over after this long (Temporal unreachable, a download that hangs)
# gives up, so the messages after it in its chat go on; acknowledged by then, it is logged as lost.
HAND_OVER_LIMIT_S = 60.0


@dataclass
class Intake:
    chats: ChatClient
    channel: FeishuChannel
    reader: MessageReader
    decisions: FeishuDecisions
    new_state: Callable[[ChatRef], ConversationState]
    access: AccessConfig
    handed_over: int = 0
    _told_not_enabled: set[str] = field(default_factory=set)
    _chat_tails: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # each chat's latest hand-over

    async def accept(self, envelope: Envelope[MessageReceived]) -> None:
        """Read and hand over one message, after the earlier ones of its chat. Raises when the
        hand-over failed (the ack then fails and Feishu pushes the message again)."""
        # Its place in its chat's line is taken before the first await, so places follow arrival.
        chat_id = envelope.event.message.chat_id
        before = self._chat_tails.get(chat_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chat_tails[chat_id] = mine
        try:
            await asyncio.wait_for(self._read_and_hand_over(envelope, before), HAND_OVER_LIMIT_S)
        finally:
            mine.set_result(None)
            if self._chat_tails.get(chat_id) is mine:
                del self._chat_tails[chat_id]

    async def _read_and_hand_over(
        self, envelope: Envelope[MessageReceived], before: asyncio.Future[None] | None
    ) -> None:
        result = await self.reader.read(envelope.event)  # reading runs beside the chat's earlier ones
        if before is not None:
            await asyncio.wait({before})  # not cancelled with this one: the next in line waits on it
        if isinstance(result, Ignored):
            log.info("message %s ignored: %s", envelope.event.message.message_id, result.reason)
            if result.tell:
                await self._tell_directly(envelope.event, result.tell)
            return
        message = result.message
        self.channel.remember_topic(message.message_id, result.topic_id)
        verdict = may_prompt(self.access, message)
        if message.attachment_only and not verdict.allowed:
            # Not addressed to the assistant: nothing to refuse out loud.
            log.info("attachment %s not kept: %s", message.message_id, verdict.reason)
        elif verdict.refusal == "chat":
            await self._not_enabled(message)
        elif not message.attachment_only and await self.decisions.by_text(message):
            pass  # an answer to a waiting approval; the turn's validator says who may give it
        elif not verdict.allowed:
            log.info("message %s refused: %s", message.message_id, verdict.reason)
            await self._say(message.chat, message.message_id, "Sorry, you may not ask me things here.")
        else:
            try:
                await self.chats.hand_over(message, self.new_state(message.chat))
                self.handed_over += 1
                log.info(
                    "message %s handed over to %s",
                    message.message_id,
                    names.conversation_id(message.chat.chat_id),
                )
            except MessageRefused as refused:  # too large, or not valid text
                log.info("message %s refused: %s", message.message_id, refused)
                await self._say(message.chat, message.message_id, str(refused))

    async def _tell_directly(self, event: MessageReceived, text: str) -> None:
        chat = ChatRef(
            channel="feishu",
            chat_id=event.message.chat_id,
            chat_type="p2p" if event.message.chat_type == "p2p" else "group",
            worker_queue=self.reader.worker_queue,
        )
        await self._say(chat, event.message.message_id, text)

    async def _not_enabled(self, message: InboundMessage) -> None:
        """One "not enabled here" per chat, not a reply per message: the key is the chat's, so
        Feishu's uuid dedupe covers a gateway restart within the hour too."""
        chat = message.chat.chat_id
        log.info("message %s in %s refused: chat not enabled", message.message_id, chat)
        if chat in self._told_not_enabled:
            return
        self._told_not_enabled.add(chat)
        text = "work-ally is not enabled in this chat. Ask its owner to add this chat to [access] chats."
        key = names.delivery_key(f"gateway:not-enabled:{chat}", "notice")
        await self.channel.notice(message.chat, message.message_id, text, key)

    async def _say(self, chat: ChatRef, message_id: str, text: str) -> None:
        await self.channel.notice(
            chat, message_id, text, names.delivery_key(f"gateway:{message_id}", "notice")
        )
