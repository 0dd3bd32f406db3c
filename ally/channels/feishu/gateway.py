"""Feishu events in: one `lark.EventDispatcherHandler`, fed by the long connection or a webhook.

Where things are, in this folder: the transports (long_connection.py, webhook.py, and what they
share with the handlers in acks.py); messages (intake.py); decisions by card, text or reaction
(decisions.py). This file registers the handlers and bridges the
transport's thread to the gateway's asyncio loop.

The handlers run on the transport's thread (the SDK calls them synchronously) and must answer
within 3 s, or Feishu pushes the event again (docs/feishu-platform.md §1-2). So each handler only
validates and hands the work to the gateway's loop (thread-safely), where hand-overs run
concurrently; a private message's receipt emoji is started right here, not on that loop, which a
burst keeps busy (docs/architecture.md, "The receipt emoji"). The ack waits at most `ACK_BUDGET_S`
for that event's own work, never for another's (`PromptAcks` over the long connection; a thread
per request over the webhook). A hand-over that fails in time makes the ack an error, so Feishu
pushes the message again; the conversation drops a redelivery whose first copy did land (it
remembers message ids).

Every event type the app subscribes to is registered; anything else reaches a catch-all that logs
and acknowledges it (the SDK would answer "processor not found" with a 500 and Feishu would retry).
Malformed events are logged and acknowledged: pushing them again cannot fix them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, TypeVar

from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTriggerResponse
from lark_oapi.event.custom import CustomizedEventProcessor
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler
from pydantic import BaseModel, ValidationError
from temporalio.client import Client

from ally.access import AccessConfig
from ally.channels.feishu import cards, events
from ally.channels.feishu.acks import ACK_WAITS, HandOverFailed, PendingAck
from ally.channels.feishu.channel import FeishuChannel
from ally.channels.feishu.decisions import APPROVING_EMOJIS, FeishuDecisions
from ally.channels.feishu.events import (
    CardClick,
    ChatMembership,
    Envelope,
    MessageRead,
    MessageReceived,
    ReactionEvent,
    Recalled,
)
from ally.channels.feishu.inbound import MessageReader
from ally.channels.feishu.intake import STALE_AFTER_S, Conversations, Intake
from ally.chat_client import ChatClient

log = logging.getLogger(__name__)
T = TypeVar("T")

ACK_BUDGET_S = 2.0  # of Feishu's 3 s: what is left covers the SDK's own work and the network
CALLBACK_BUDGET_S = 2.0
EVENTS_REMEMBERED = 5000


class FeishuGateway:
    """Event handlers for one Feishu app; the async work runs on `loop` (the gateway's loop)."""

    def __init__(
        self,
        *,
        client: Client,
        channel: FeishuChannel,
        reader: MessageReader,
        conversations: Conversations,
        access: AccessConfig | None = None,
        stale_after_s: float = STALE_AFTER_S,
        receipt_emoji: str = "",
    ) -> None:
        """Build it on the gateway's event loop: the handlers hand their work to that loop."""
        self.chats = ChatClient(client)
        rules = access or AccessConfig()
        self.decisions = FeishuDecisions(
            self.chats, channel, reader, may_stop=lambda person, chat: may_stop(rules, person, chat)
        )
        self.intake = Intake(
            chats=self.chats,
            channel=channel,
            reader=reader,
            decisions=self.decisions,
            conversations=conversations,
            access=access or AccessConfig(),
            stale_after_s=stale_after_s,
            receipt_emoji=receipt_emoji,
        )
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._background: set[concurrent.futures.Future[Any]] = set()

    @property
    def handed_over(self) -> int:
        return self.intake.handed_over

    # --- the dispatcher --------------------------------------------------------------------------

    def event_handler(self, encrypt_key: str = "", verification_token: str = "") -> Any:
        """The SDK dispatcher with every subscribed event registered, and a catch-all for the rest.

        Over the long connection the keys are not used (no token or signature on that path)."""
        handler = (
            EventDispatcherHandler.builder(encrypt_key, verification_token)
            .register_p2_im_message_receive_v1(self.on_message)
            .register_p2_im_message_reaction_created_v1(self.on_reaction_created)
            .register_p2_im_message_reaction_deleted_v1(self.on_reaction_deleted)
            .register_p2_im_message_recalled_v1(self.on_recalled)
            .register_p2_im_chat_member_bot_added_v1(self.on_bot_added)
            .register_p2_im_chat_member_bot_deleted_v1(self.on_bot_removed)
            .register_p2_im_chat_access_event_bot_p2p_chat_entered_v1(self.on_p2p_chat_entered)
            .register_p2_im_message_message_read_v1(self.on_message_read)
            .register_p2_card_action_trigger(self.on_card_action)
            .build()
        )
        # lark-oapi 1.7.5 has no wildcard registration: it looks processors up with
        # `_processorMap.get("p2.<event type>")` and answers 500 ("processor not found") on a miss,
        # which makes Feishu push the event again. A map that falls back to a logging processor
        # acknowledges any other event type instead (pinned SDK: lark-oapi <1.8).
        handler._processorMap = _WithCatchAll(
            handler._processorMap, CustomizedEventProcessor(self.on_other_event)
        )
        return handler

    # --- handlers (transport thread: validate, hand over, return) --------------------------------

    def on_message(self, data: Any) -> None:
        envelope = _validated(Envelope[MessageReceived], data, "message")
        if envelope is None or self._already_handled(envelope.header.event_id):
            return
        receipt_shown = self.intake.receipt_on_arrival(envelope.event)
        # An error here (Temporal unreachable) fails the ack: Feishu pushes the message again.
        self._run(
            self._accept(envelope, receipt_shown),
            ACK_BUDGET_S,
            f"message {envelope.event.message.message_id}",
            deferrable=True,
        )

    def on_card_action(self, data: Any) -> Any:
        envelope = _validated(Envelope[CardClick], data, "card action")
        if envelope is None:
            return _callback({"toast": {"type": "warning", "content": "This button could not be read."}})
        click = envelope.event
        try:
            value = cards.CARD_VALUE.validate_python(click.action.value or {})
        except ValidationError:
            log.warning("card action with a value work-ally did not make: %s", click.action.value)
            return _callback({"toast": {"type": "warning", "content": "This button is not work-ally's."}})
        work = (
            self.intake.choose(click, value)
            if isinstance(value, cards.ChoiceValue)
            else self.intake.send_file(click, value, envelope.header.event_id)
            if isinstance(value, cards.FileValue)
            else self.decisions.by_card(click, value)
        )
        try:
            answer = self._run(work, CALLBACK_BUDGET_S, "card action")
        except Exception:
            log.exception("card action failed")
            return _callback(
                {"toast": {"type": "error", "content": "Could not record that; please try again."}}
            )
        if answer is None:  # still on its way: the card is PATCHed once the turn applied it
            return _callback({"toast": {"type": "info", "content": "Sending your decision…"}})
        return _callback(answer)

    def on_reaction_created(self, data: Any) -> None:
        envelope = _validated(Envelope[ReactionEvent], data, "reaction")
        if envelope is None:
            return
        reaction = envelope.event
        if reaction.operator_type != "user" or reaction.reaction_type.emoji_type not in APPROVING_EMOJIS:
            return
        self._spawn(self.decisions.by_reaction(reaction), f"reaction on {reaction.message_id}")

    def on_reaction_deleted(self, data: Any) -> None:
        envelope = _validated(Envelope[ReactionEvent], data, "reaction removal")
        if envelope is not None:
            # A decision cannot be taken back: Codex already has it.
            log.info(
                "reaction %s removed from %s",
                envelope.event.reaction_type.emoji_type,
                envelope.event.message_id,
            )

    def on_recalled(self, data: Any) -> None:
        envelope = _validated(Envelope[Recalled], data, "recall")
        if envelope is not None:
            # A queued message is dropped from the queue; a running turn keeps running (/stop).
            event = envelope.event
            self._run(
                self.intake.recall(event.chat_id, event.message_id),
                ACK_BUDGET_S,
                f"recall {event.message_id}",
                deferrable=True,
            )

    def on_bot_added(self, data: Any) -> None:
        envelope = _validated(Envelope[ChatMembership], data, "bot added")
        if envelope is not None:
            log.info("added to chat %s (%s)", envelope.event.chat_id, envelope.event.name)

    def on_bot_removed(self, data: Any) -> None:
        envelope = _validated(Envelope[ChatMembership], data, "bot removed")
        if envelope is not None:
            log.info("removed from chat %s; replies to it will fail permanently", envelope.event.chat_id)

    def on_p2p_chat_entered(self, data: Any) -> None:
        envelope = _validated(Envelope[ChatMembership], data, "p2p chat entered")
        if envelope is not None:
            log.info("%s opened a chat with the bot", envelope.event.operator_id.open_id)

    def on_message_read(self, data: Any) -> None:
        envelope = _validated(Envelope[MessageRead], data, "message read")
        if envelope is not None:
            log.debug("%d message(s) read", len(envelope.event.message_id_list))

    def on_other_event(self, data: Any) -> None:
        try:
            raw = events.RawEvent.model_validate(events.from_sdk(data))
            kind = raw.header.event_type if raw.header else "(no header)"
        except (ValidationError, ValueError, TypeError) as error:
            kind = f"(unreadable: {error})"
        log.info("acknowledged %s event without acting on it (not one work-ally handles)", kind)

    async def _accept(self, envelope: Envelope[MessageReceived], receipt_shown: bool) -> None:
        await self.intake.accept(envelope, receipt_shown=receipt_shown)
        self._remember(envelope.header.event_id)

    # --- between threads -------------------------------------------------------------------------

    def _run(
        self, work: Coroutine[Any, Any, T], wait_s: float, what: str, *, deferrable: bool = False
    ) -> T | None:
        """Run `work` on the gateway loop and wait up to `wait_s` for it: its result, or None when
        it is still going (it finishes in the background). Its exception, if it failed in time.

        `deferrable` work whose result the handler does not need is not waited for here when the
        transport waits for it itself (`deferred_acks`): the handler returns at once."""
        if threading.get_ident() == self._loop_thread:  # called on the loop itself: cannot block it
            self._spawn(work, what)
            return None
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        waits = ACK_WAITS.get()
        if deferrable and waits is not None:
            waits.append(PendingAck(future, wait_s, what, self._keep))
            return None
        try:
            return future.result(timeout=wait_s)
        except TimeoutError:
            log.info("%s still in progress after %.1f s; acknowledged", what, wait_s)
            self._keep(future, what)
            return None
        except Exception as error:
            raise HandOverFailed(f"{what}: {error}") from error

    def _spawn(self, work: Coroutine[Any, Any, Any], what: str) -> None:
        self._keep(asyncio.run_coroutine_threadsafe(work, self.loop), what)

    def _keep(self, future: concurrent.futures.Future[Any], what: str) -> None:
        self._background.add(future)

        def done(finished: concurrent.futures.Future[Any]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and (error := finished.exception()) is not None:
                log.error("%s failed after it was acknowledged: %s", what, error, exc_info=error)

        future.add_done_callback(done)

    def _already_handled(self, event_id: str) -> bool:
        with self._seen_lock:
            if event_id in self._seen:
                log.info("event %s again (Feishu re-pushed it); already handled", event_id)
                return True
            return False

    def _remember(self, event_id: str) -> None:
        with self._seen_lock:
            self._seen[event_id] = None
            while len(self._seen) > EVENTS_REMEMBERED:
                self._seen.popitem(last=False)


def may_stop(access: AccessConfig, person: str, chat_id: str) -> bool:
    """Who may press Stop: whoever may talk to the assistant in that chat (as for /stop)."""
    if access.chats and chat_id not in access.chats:
        return False
    return not access.users or person in access.users or person in access.approvers


class _WithCatchAll(dict[str, Any]):
    """The SDK's processor map, answering `get` for unknown event types with a catch-all."""

    def __init__(self, known: dict[str, Any], fallback: Any) -> None:
        super().__init__(known)
        self.fallback = fallback

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key) or self.fallback


ModelT = TypeVar("ModelT", bound=BaseModel)


def _validated(model: type[ModelT], data: Any, what: str) -> ModelT | None:
    try:
        return model.model_validate(events.from_sdk(data))
    except (ValidationError, ValueError, TypeError) as error:
        log.warning("malformed %s event acknowledged and dropped: %s", what, error)
        return None


def _callback(answer: dict[str, Any]) -> Any:
    # Built from a plain dict: nested SDK objects in the constructor trip lark-oapi issue #90.
    return P2CardActionTriggerResponse(answer)
