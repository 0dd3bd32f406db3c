"""Messages in: read (normalise, download held attachments), check access, then hand over.

A message is handed to its chat's conversation with signal-with-start (`ChatClient.hand_over`),
which Temporal records durably. Messages of one chat are handed over in the order they arrived,
whatever each one's reading costs: each takes its place in its chat's line before its first await.
The message goes to the conversation of the assistant its chat talks to, in its topic in a topic
group (ally/routing.py); `/assistant` and `/bind` are answered here, since they change where
messages go. A decision shortcut ("y", "1 y 2 n") answers that conversation's waiting approvals
instead (ally/channels/feishu/decisions.py).

A message Feishu says was sent more than `stale_after_s` ago is handed over marked stale: the
conversation asks before running it (docs/continuity.md). A click on a notice's button
(`cards.ChoiceValue`) reaches the conversation as the command it stands for.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ally import names
from ally.access import AccessConfig, may_ask, may_prompt
from ally.channels.feishu import cards
from ally.channels.feishu.channel import FeishuChannel
from ally.channels.feishu.decisions import FeishuDecisions
from ally.channels.feishu.events import CardClick, Envelope, MessageReceived
from ally.channels.feishu.inbound import Ignored, MessageReader
from ally.chat_client import ChatClient, MessageRefused
from ally.contracts import ChatRef, ConversationState, Inbound, InboundMessage
from ally.routing import NotRouted

log = logging.getLogger(__name__)

# A message still not handed over after this long (Temporal unreachable, a download that hangs)
# gives up, so the messages after it in its chat go on; acknowledged by then, it is logged as lost.
HAND_OVER_LIMIT_S = 60.0
CONVERSATIONS_REMEMBERED = 5000
STALE_AFTER_S = 10 * 60  # `[chats] stale_after_minutes` (ally/config.py)


class Conversations(Protocol):
    """Where a message goes (ally/routing.py `Router`): its conversation's starting state, or why it
    goes nowhere; and the answer to a routing command (`/assistant`, `/bind`), if it is one."""

    async def start_state(self, message: InboundMessage, topic: str) -> ConversationState | NotRouted: ...

    async def command(self, message: InboundMessage) -> str | None: ...


@dataclass
class Intake:
    chats: ChatClient
    channel: FeishuChannel
    reader: MessageReader
    decisions: FeishuDecisions
    conversations: Conversations
    access: AccessConfig
    stale_after_s: float = STALE_AFTER_S
    receipt_emoji: str = ""  # put on each message handed over, at once ("" = none)
    handed_over: int = 0
    _conversation_of: OrderedDict[str, str] = field(default_factory=OrderedDict)  # message -> conversation
    _told_not_enabled: set[str] = field(default_factory=set)
    _chat_tails: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # each chat's latest hand-over

    async def accept(self, envelope: Envelope[MessageReceived], *, receipt_shown: bool = False) -> None:
        """Read and hand over one message, after the earlier ones of its chat. Raises when the
        hand-over failed (the ack then fails and Feishu pushes the message again).
        `receipt_shown`: `receipt_on_arrival` already put the receipt emoji on."""
        # Its place in its chat's line is taken before the first await, so places follow arrival.
        chat_id = envelope.event.message.chat_id
        before = self._chat_tails.get(chat_id)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chat_tails[chat_id] = mine
        try:
            await asyncio.wait_for(
                self._read_and_hand_over(envelope, before, receipt_shown), HAND_OVER_LIMIT_S
            )
        finally:
            mine.set_result(None)
            if self._chat_tails.get(chat_id) is mine:
                del self._chat_tails[chat_id]

    async def _read_and_hand_over(
        self, envelope: Envelope[MessageReceived], before: asyncio.Future[None] | None, receipt_shown: bool
    ) -> None:
        result = await self.reader.read(envelope.event)  # reading runs beside the chat's earlier ones
        if before is not None:
            await asyncio.wait({before})  # not cancelled with this one: the next in line waits on it
        if isinstance(result, Ignored):
            log.info("message %s ignored: %s", envelope.event.message.message_id, result.reason)
            if result.tell:
                await self._tell_directly(envelope.event, result.tell)
            return
        message = self._dated(result.message, envelope.event.message.create_time)
        self.channel.remember_topic(message.message_id, result.topic_id)
        verdict = may_prompt(self.access, message)
        if message.attachment_only and not verdict.allowed:
            # Not addressed to the assistant: nothing to refuse out loud.
            log.info("attachment %s not kept: %s", message.message_id, verdict.reason)
            return
        if verdict.refusal == "chat":
            await self._not_enabled(message)
            return
        if not message.attachment_only and (answer := await self.conversations.command(message)) is not None:
            if verdict.allowed:
                await self._say(message.chat, message.message_id, answer)
            return
        state = await self.conversations.start_state(message, result.conversation_topic)
        if isinstance(state, NotRouted):
            if not message.attachment_only:
                await self._say(message.chat, message.message_id, state.text)
            return
        conversation = names.conversation_id(message.chat.chat_id, state.assistant, state.topic)
        # A "y" sent hours ago must not decide what waits now.
        if (
            not message.attachment_only
            and not message.stale
            and await self.decisions.by_text(message, conversation)
        ):
            return  # an answer to a waiting approval; the turn's validator says who may give it
        if not verdict.allowed:
            log.info("message %s refused: %s", message.message_id, verdict.reason)
            await self._say(message.chat, message.message_id, "Sorry, you may not ask me things here.")
            return
        try:
            # Beside the hand-over, not after it: the person sees at once that the bridge has it.
            if not receipt_shown:
                self._show_receipt(message)
            await self.chats.hand_over(message, state)
            self.handed_over += 1
            self._remember(message.message_id, conversation)
            log.info("message %s handed over to %s", message.message_id, conversation)
        except MessageRefused as refused:  # too large, or not valid text
            log.info("message %s refused: %s", message.message_id, refused)
            await self._say(message.chat, message.message_id, str(refused))

    def _dated(self, message: InboundMessage, create_time: str | int) -> InboundMessage:
        """The message with when Feishu says it was sent, marked stale when that is too long ago."""
        try:
            sent_at = int(create_time) / 1000  # Feishu gives milliseconds, as a string
        except ValueError:
            return message
        stale = time.time() - sent_at > self.stale_after_s
        if stale:
            log.info("message %s is stale: sent %.0f s ago", message.message_id, time.time() - sent_at)
        return message.model_copy(update={"sent_at": sent_at, "stale": stale})

    async def choose(self, click: CardClick, value: cards.ChoiceValue) -> dict[str, Any]:
        """A click on a notice's button: its command goes to the conversation that sent the notice.
        One id per card and choice: a second click (or a redelivered callback) is a redelivery."""
        card = click.context.open_message_id
        refused = await self._command_from_click(
            click, value.conversation, value.chat_type, f"{card}:choose:{value.command}", value.command
        )
        if refused:
            return {"toast": {"type": "warning", "content": "You may not decide this here."}}
        return {"toast": {"type": "success", "content": "Done"}}

    async def send_file(self, click: CardClick, value: cards.FileValue, event_id: str) -> dict[str, Any]:
        """A file's button on a turn's final card: `/file PATH` to that turn's conversation. Each
        click is its own message (the file may have changed since); a callback Feishu delivers again
        has the same event id, so it sends once."""
        card = click.context.open_message_id
        refused = await self._command_from_click(
            click, value.conversation, value.chat_type, f"{card}:file:{event_id}", f"/file {value.path}"
        )
        if refused:
            return {"toast": {"type": "warning", "content": "You may not ask for files here."}}
        return {"toast": {"type": "success", "content": f"Sending {value.path[:60]}…"}}

    async def _command_from_click(
        self,
        click: CardClick,
        conversation: str,
        chat_type: Literal["p2p", "group"],
        message_id: str,
        text: str,
    ) -> bool:
        """A card button's command, sent to `conversation` as a message of the person who clicked,
        replying to the card, so access applies as to anything they type. True when refused."""
        chat = ChatRef(
            channel="feishu",
            chat_id=click.context.open_chat_id,
            chat_type=chat_type,
            worker_queue=self.reader.worker_queue,
        )
        message = InboundMessage(
            message_id=message_id,
            chat=chat,
            sender=await self.reader.person(click.operator.open_id, timeout_s=0.8),
            text=text,
            reply_to=click.context.open_message_id,
        )
        if not may_prompt(self.access, message).allowed:
            return True
        await self.chats.signal_conversation(conversation, Inbound(message=message))
        return False

    def receipt_on_arrival(self, event: MessageReceived) -> bool:
        """A private message from someone [access] lets in gets its receipt the moment it arrives,
        on the transport's thread (any thread will do), before it is even read: reading may look
        the sender's name up, and under a burst the gateway's loop is busy handing the others over
        and running the chats' worker. Group messages wait for the read, which tells whether the
        bot was mentioned at all. True when the emoji is on its way."""
        message, sender = event.message, event.sender.sender_id.open_id
        if not self.receipt_emoji or message.chat_type != "p2p" or event.sender.sender_type != "user":
            return False
        if not sender or not may_ask(self.access, message.chat_id, "p2p", sender).allowed:
            return False
        self._react(message.message_id)
        return True

    def _show_receipt(self, message: InboundMessage) -> None:
        """The first thing the person sees: an emoji as the message is handed over. The turn's own
        emoji needs the chat's worker to run it, which under load takes seconds; this needs only
        Feishu. Not awaited (neither the hand-over nor the ack waits for it) and best effort; a
        hand-over that then fails is pushed again by Feishu, and the emoji is already there."""
        if not self.receipt_emoji or message.attachment_only:
            return
        self._react(message.message_id)

    def _react(self, message_id: str) -> None:
        def shown(call: concurrent.futures.Future[str]) -> None:
            if (error := call.exception()) is not None:  # an emoji is never worth more than a log line
                log.info("receipt emoji on %s not shown: %s", message_id, error)

        self.channel.react_now(message_id, self.receipt_emoji).add_done_callback(shown)

    async def recall(self, chat_id: str, message_id: str) -> None:
        """A recalled message leaves the queue of the conversation it was handed to (or, when this
        process did not hand it over, of whichever of the chat's conversations holds it)."""
        conversation = self._conversation_of.get(message_id)
        if conversation is not None:
            await self.chats.recall(conversation, message_id)
        else:
            await self.chats.recall_in_chat(chat_id, message_id)

    def _remember(self, message_id: str, conversation: str) -> None:
        self._conversation_of[message_id] = conversation
        while len(self._conversation_of) > CONVERSATIONS_REMEMBERED:
            self._conversation_of.popitem(last=False)

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
