"""Feishu events in: one `lark.EventDispatcherHandler`, fed by the long connection or a webhook.

The handlers run on the transport's thread (the SDK calls them synchronously) and must answer
within 3 s, or Feishu pushes the event again (notes/feishu.md §1-2). So each handler only
validates and hands the work to the gateway's asyncio loop (thread-safely), where hand-overs run
concurrently; the ack waits at most `ACK_BUDGET_S` for that event's own work, never for another's
(over the long connection the wait is a task of its own, `PromptAcks`; over the webhook each
request has its own thread):
- a message is acknowledged once it was handed over to its conversation (signal-with-start, which
  Temporal records durably) or the budget ran out with the work still going; a hand-over that
  fails raises, the ack becomes an error and Feishu pushes the message again, and the conversation
  drops the redelivery if the first one did land (it remembers message ids). Messages of one
  chat are handed over in the order they arrived, whatever each one's reading costs;
- a decision shortcut ("y", "1 y 2 n") answers pending approvals when the chat has some;
- a card click becomes a `decide` update (its id derived from request and person, so a replay
  decides once) and is answered with a toast, and the decided card when we still know the prompt;
- a thumbs-up on an approval card approves it.

Every event type the app subscribes to is registered; anything else reaches a catch-all that logs
and acknowledges it (the SDK would answer "processor not found" with a 500 and Feishu would retry).
Malformed events are logged and acknowledged: pushing them again cannot fix them.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import hmac
import http
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import lark_oapi as lark
import lark_oapi.ws.client as lark_ws_client
from lark_oapi.core.const import (
    CONTENT_TYPE,
    LARK_REQUEST_NONCE,
    LARK_REQUEST_SIGNATURE,
    LARK_REQUEST_TIMESTAMP,
    X_REQUEST_ID,
)
from lark_oapi.core.utils.decryptor import AESCipher
from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTriggerResponse
from lark_oapi.event.custom import CustomizedEventProcessor
from lark_oapi.ws.const import HEADER_BIZ_RT, HEADER_MESSAGE_ID, HEADER_SEQ, HEADER_SUM, HEADER_TYPE
from lark_oapi.ws.enum import MessageType
from lark_oapi.ws.model import Response as AckFrame
from pydantic import BaseModel, ValidationError
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from ally import names
from ally.access import AccessConfig, may_prompt
from ally.config import FeishuConfig
from ally.contracts import AgentRequest, ChatRef, ConversationState, Decision, InboundMessage, Person, Reply
from ally.decisions import DecisionReceipt, submit_decision
from ally.feishu import cards, events
from ally.feishu.channel import FeishuChannel
from ally.feishu.client import FeishuApiError
from ally.feishu.events import (
    CardClick,
    ChatMembership,
    Envelope,
    MessageRead,
    MessageReceived,
    Reaction,
    Recalled,
)
from ally.feishu.inbound import Ignored, MessageReader
from ally.inbound import MessageRefused, hand_over
from ally.shortcuts import parse_decisions
from workflows.conversation import ConversationWorkflow
from workflows.turn import TurnWorkflow

log = logging.getLogger(__name__)
T = TypeVar("T")

ACK_BUDGET_S = 2.0  # of Feishu's 3 s: what is left covers the SDK's own work and the network
# A message still not handed over after this long (Temporal unreachable, a download that hangs)
# gives up, so the messages after it in its chat go on; acknowledged by then, it is logged as lost.
HAND_OVER_LIMIT_S = 60.0
CALLBACK_BUDGET_S = 2.0
EVENTS_REMEMBERED = 5000
# Reactions that approve the card they are put on (Feishu emoji_type names are case-sensitive).
APPROVING_EMOJIS = frozenset({"THUMBSUP", "OK", "DONE"})
# Webhook replay window: the SDK checks the signature but not the timestamp's age (notes §3).
WEBHOOK_MAX_AGE_S = 300.0
WEBHOOK_MAX_BODY = 1024 * 1024
WEBHOOK_LOG_EVERY_S = 10.0  # a refused kind of request is logged at most this often

DECISION_TOASTS = {
    "accept": "Approved",
    "acceptForSession": "Approved for this session",
    "decline": "Declined",
}


class HandOverFailed(Exception):
    """The work behind an event failed in time to say so in the ack: Feishu pushes it again."""


@dataclass
class PendingAck:
    """Work an event's ack waits for, awaited by the transport without blocking its loop."""

    future: concurrent.futures.Future[Any]
    budget_s: float
    what: str
    keep: Callable[[concurrent.futures.Future[Any], str], None]
    deadline: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.deadline += self.budget_s

    async def settled(self) -> None:
        """Returns once the work is done or its budget spent (it then goes on in the background);
        raises `HandOverFailed` if it failed in time."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not finished.done():
                finished.set_result(None)

        def wake(_: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the transport's loop closed meanwhile
                loop.call_soon_threadsafe(settle)

        self.future.add_done_callback(wake)
        try:
            await asyncio.wait_for(finished, max(self.deadline - time.monotonic(), 0.0))
        except TimeoutError:
            log.info("%s still in progress after %.1f s; acknowledged", self.what, self.budget_s)
            self.keep(self.future, self.what)
            return
        if not self.future.cancelled() and (error := self.future.exception()) is not None:
            raise HandOverFailed(f"{self.what}: {error}") from error


_ACK_WAITS: ContextVar[list[PendingAck] | None] = ContextVar("feishu_ack_waits", default=None)


@contextlib.contextmanager
def deferred_acks() -> Iterator[list[PendingAck]]:
    """Handlers called inside this return at once; what their acks must wait for is collected."""
    waits: list[PendingAck] = []
    token = _ACK_WAITS.set(waits)
    try:
        yield waits
    finally:
        _ACK_WAITS.reset(token)


class FeishuGateway:
    """Event handlers for one Feishu app; the async work runs on `loop` (the gateway's loop)."""

    def __init__(
        self,
        *,
        client: Client,
        channel: FeishuChannel,
        reader: MessageReader,
        new_state: Callable[[ChatRef], ConversationState],
        access: AccessConfig | None = None,
    ) -> None:
        """Build it on the gateway's event loop: the handlers hand their work to that loop."""
        self.client = client
        self.channel = channel
        self.reader = reader
        self.new_state = new_state
        self.access = access or AccessConfig()
        self._told_not_enabled: set[str] = set()
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._background: set[concurrent.futures.Future[Any]] = set()
        self._not_cards: OrderedDict[str, None] = OrderedDict()  # messages a thumbs-up cannot approve
        self._chat_tails: dict[str, asyncio.Future[None]] = {}  # each chat's latest hand-over
        self.handed_over = 0

    # --- the dispatcher --------------------------------------------------------------------------

    def event_handler(self, encrypt_key: str = "", verification_token: str = "") -> Any:
        """The SDK dispatcher with every subscribed event registered, and a catch-all for the rest.

        Over the long connection the keys are not used (no token or signature on that path)."""
        handler = (
            lark.EventDispatcherHandler.builder(encrypt_key, verification_token)
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
        # An error here (Temporal unreachable) fails the ack: Feishu pushes the message again.
        self._run(
            self._accept_message(envelope),
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
        try:
            answer = self._run(self._decide_from_card(click, value), CALLBACK_BUDGET_S, "card action")
        except Exception:
            log.exception("card action failed")
            return _callback(
                {"toast": {"type": "error", "content": "Could not record that; please try again."}}
            )
        if answer is None:  # still on its way: the card is PATCHed once the turn applied it
            return _callback({"toast": {"type": "info", "content": "Sending your decision…"}})
        return _callback(answer)

    def on_reaction_created(self, data: Any) -> None:
        envelope = _validated(Envelope[Reaction], data, "reaction")
        if envelope is None:
            return
        reaction = envelope.event
        if reaction.operator_type != "user" or reaction.reaction_type.emoji_type not in APPROVING_EMOJIS:
            return
        self._spawn(self._approve_by_reaction(reaction), f"reaction on {reaction.message_id}")

    def on_reaction_deleted(self, data: Any) -> None:
        envelope = _validated(Envelope[Reaction], data, "reaction removal")
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
                self._recall(event.chat_id, event.message_id),
                ACK_BUDGET_S,
                f"recall {event.message_id}",
                deferrable=True,
            )

    async def _recall(self, chat_id: str, message_id: str) -> None:
        handle = self.client.get_workflow_handle_for(ConversationWorkflow.run, names.conversation_id(chat_id))
        try:
            await handle.signal(ConversationWorkflow.recall, message_id)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            log.info("recall of %s in %s: no conversation there", message_id, chat_id)

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

    # --- the work (gateway loop) -----------------------------------------------------------------

    async def _accept_message(self, envelope: Envelope[MessageReceived]) -> None:
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
        else:
            message = result.message
            self.channel.remember_thread(message.message_id, result.thread_id)
            verdict = may_prompt(self.access, message)
            if message.attachment_only and not verdict.allowed:
                # Not addressed to the assistant: nothing to refuse out loud.
                log.info("attachment %s not kept: %s", message.message_id, verdict.reason)
            elif verdict.refusal == "chat":
                await self._not_enabled(message)
            elif not message.attachment_only and await self._decide_by_text(message):
                pass  # an answer to a waiting approval; the turn's validator says who may give it
            elif not verdict.allowed:
                log.info("message %s refused: %s", message.message_id, verdict.reason)
                await self._say(message.chat, message.message_id, "Sorry, you may not ask me things here.")
            else:
                try:
                    await hand_over(self.client, message, self.new_state(message.chat))
                    self.handed_over += 1
                    log.info(
                        "message %s handed over to %s",
                        message.message_id,
                        names.conversation_id(message.chat.chat_id),
                    )
                except MessageRefused as refused:  # too large, or not valid text
                    log.info("message %s refused: %s", message.message_id, refused)
                    await self._say(message.chat, message.message_id, str(refused))
        self._remember(envelope.header.event_id)

    async def _decide_by_text(self, message: InboundMessage) -> bool:
        """Decide this chat's waiting approvals when the text is "y", "n", "always" or "1 y 2 n"."""
        if parse_decisions(message.text, 1) is None and parse_decisions(message.text, 99) is None:
            return False  # cheap check first: most messages are not decisions
        waiting = await self.waiting_requests(message.chat.chat_id)
        choice = parse_decisions(message.text, len(waiting))
        if not waiting or choice is None:
            return False
        refused: list[str] = []
        for index, word in sorted(choice.items()):
            turn_workflow_id, request = waiting[index - 1]
            decision = Decision(key=request.key, decision=word, operator=message.sender)
            receipt = await submit_decision(self.client, turn_workflow_id, decision)
            log.info("text decision %s on %s: %s", word, request.key, receipt.status)
            if receipt.status in ("rejected", "closed", "expired"):
                refused.append(receipt.detail)
        if refused:
            await self._say(message.chat, message.message_id, "Not applied: " + "; ".join(refused))
        return True

    async def waiting_requests(self, chat_id: str) -> list[tuple[str, AgentRequest]]:
        """Approvals (not questions) waiting in this chat's running turn, in the order they were asked."""
        try:
            view = await self.client.get_workflow_handle_for(
                ConversationWorkflow.run, names.conversation_id(chat_id)
            ).query(ConversationWorkflow.view, rpc_timeout=timedelta(seconds=2))
        except (RPCError, WorkflowQueryFailedError) as error:
            log.info("no conversation view for %s: %s", chat_id, error)
            return []
        if view.running_turn_workflow_id is None:
            return []
        try:
            turn = await self.client.get_workflow_handle(view.running_turn_workflow_id).query(
                TurnWorkflow.view, rpc_timeout=timedelta(seconds=2)
            )
        except (RPCError, WorkflowQueryFailedError):
            return []
        return [(view.running_turn_workflow_id, r) for r in turn.pending if r.kind != "user_input"]

    async def _decide_from_card(self, click: CardClick, value: cards.CardValue) -> dict[str, Any]:
        # A name not cached yet must not cost the 3 s answer: an id-only operator is fine.
        operator = await self.reader.person(click.operator.open_id, timeout_s=0.8)
        decision = _decision_of(value, click, operator)
        receipt = await submit_decision(self.client, value.turn_workflow_id, decision)
        log.info("card decision on %s by %s: %s", value.key, operator.id, receipt.status)
        return self._card_answer(receipt, decision, click.context.open_message_id)

    def _card_answer(self, receipt: DecisionReceipt, decision: Decision, card_id: str) -> dict[str, Any]:
        if receipt.status == "decided":
            shown = DECISION_TOASTS.get(decision.decision or "", "Answer sent")
            answer: dict[str, Any] = {"toast": {"type": "success", "content": shown}}
            sent = self.channel.approvals.get(card_id)
            if sent is not None:  # cheap: we still know what the card asked
                now = datetime.now(UTC).isoformat(timespec="seconds")
                who = decision.operator.name or decision.operator.id
                card = cards.decided_card(sent.prompt.request, decision.decision or "answered", who, now)
                answer["card"] = {"type": "raw", "data": card}
            return answer
        if receipt.status == "queued":
            return {
                "toast": {"type": "info", "content": "Recorded; it applies as soon as work-ally is back."}
            }
        if receipt.status == "closed":
            return {"toast": {"type": "info", "content": "This turn has already ended."}}
        return {"toast": {"type": "warning", "content": _short(receipt.detail)}}

    async def _approve_by_reaction(self, reaction: Reaction) -> None:
        target = await self._card_decision(reaction.message_id)
        if target is None:
            log.debug("reaction on %s, which is not a pending approval card", reaction.message_id)
            return
        turn_workflow_id, key = target
        operator = await self.reader.person(reaction.user_id.open_id)
        decision = Decision(key=key, decision="accept", operator=operator)
        receipt = await submit_decision(self.client, turn_workflow_id, decision)
        log.info("reaction approval of %s by %s: %s", key, operator.id, receipt.status)

    async def _card_decision(self, message_id: str) -> tuple[str, str] | None:
        sent = self.channel.approvals.get(message_id)
        if sent is not None:
            return sent.prompt.turn_workflow_id, sent.prompt.request.key
        if message_id in self._not_cards:  # people thumbs-up answers too: read each one back once
            return None
        try:  # sent before a restart: read the card back and take its buttons' value
            message = await self.channel.api.get_message(message_id)
            values = (
                cards.decision_values(json.loads(message.content))
                if message.msg_type == "interactive"
                else []
            )
        except (FeishuApiError, ValueError) as error:
            log.info("cannot read %s back: %s", message_id, error)
            return None
        if not values:
            self._not_cards[message_id] = None
            while len(self._not_cards) > EVENTS_REMEMBERED:
                self._not_cards.popitem(last=False)
            return None
        return values[0].turn_workflow_id, values[0].key

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
        reply = Reply(
            chat=message.chat,
            reply_to=message.message_id,
            text="work-ally is not enabled in this chat. Ask its owner to add this chat to [access] chats.",
            idempotency_key=names.delivery_key(f"gateway:not-enabled:{chat}", "notice"),
            tone="notice",
        )
        try:
            await self.channel.send_reply(reply)
        except Exception as error:
            log.warning("could not tell %s it is not enabled: %s", chat, error)

    async def _say(self, chat: ChatRef, message_id: str, text: str) -> None:
        """A short notice from the gateway itself (not from a turn); failures are only logged."""
        reply = Reply(
            chat=chat,
            reply_to=message_id,
            text=text,
            idempotency_key=names.delivery_key(f"gateway:{message_id}", "notice"),
            tone="notice",
        )
        try:
            await self.channel.send_reply(reply)
        except Exception as error:
            log.warning("could not tell %s: %s", chat.chat_id, error)

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
        waits = _ACK_WAITS.get()
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


# --- transports ------------------------------------------------------------------------------------


class LongConnection:
    """`lark.ws.Client` on its own thread and event loop (notes §1 pitfalls): the SDK binds a
    module-level loop at import and `start()` never returns, so the thread sets a fresh loop as
    that module loop *before* building the client. Only one such client works per process."""

    def __init__(self, config: FeishuConfig, handler: Any) -> None:
        self.config = config
        self.handler = handler
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feishu-long-connection", daemon=True)
        self._stopped = _ThreadEnd()

    def start(self) -> None:
        """Call from the gateway loop; `watch()` then reports the thread's end on that loop."""
        self._stopped.arm()
        self._thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        lark_ws_client.loop = loop
        try:
            client = PromptAcks(
                self.config.app_id,
                self.config.app_secret.get_secret_value(),
                event_handler=self.handler,
                domain=self.config.domain.rstrip("/"),
                log_level=lark.LogLevel.INFO,
            )
            client._reconnect = self._ending_on_failure(client._reconnect, loop)
            client.start()  # blocks for good; reconnects on its own (server's ClientConfig)
        except BaseException as error:  # bad credentials, app not allowed to use the long connection
            self.error = self.error or error
            log.error("Feishu long connection stopped: %s", self.error)
        finally:
            _close(loop)
            self._stopped.signal()

    def _ending_on_failure(
        self, reconnect: Callable[[], Coroutine[Any, Any, None]], loop: asyncio.AbstractEventLoop
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """When the SDK gives up reconnecting (a ClientException such as revoked credentials, or
        the server's ReconnectCount spent), its receive task dies quietly while `start()` keeps
        blocking: the process would stay up and deaf. Stopping the loop ends `start()` instead,
        so `watch()` reports it and the supervisor restarts the gateway."""

        async def reconnect_or_stop() -> None:
            try:
                await reconnect()
            except BaseException as error:
                self.error = error
                loop.stop()
                raise

        return reconnect_or_stop

    async def watch(self) -> None:
        """Returns never; raises once the connection thread died (the supervisor restarts us)."""
        await self._stopped.wait()
        raise RuntimeError(f"the Feishu long connection stopped: {self.error}")


class PromptAcks(lark.ws.Client):  # type: ignore[misc]  # lark-oapi has no type hints
    """`lark.ws.Client` whose acks never wait for other events (lark-oapi 1.7.5, pinned <1.8).

    The SDK calls the synchronous handler right on its receive loop, so every hand-over held back
    the acks of all the events behind it: under a burst they came seconds late, past Feishu's 3 s,
    and Feishu pushed them again. Here a handler only starts its work (`deferred_acks`), and each
    ack waits for its own event's work, bounded by its budget, in the task the SDK gave that
    frame. A card click's answer is the ack's payload, so its handler runs on a worker thread.
    The ack frame is the SDK's own: the event frame echoed with `biz_rt`, code and data. Only a
    failed hand-over answers 500 (the SDK answered 500 to anything it could not parse, too)."""

    async def _handle_data_frame(self, frame: Any) -> None:
        headers = {header.key: header.value for header in frame.headers}
        payload: bytes | None = frame.payload
        parts = int(headers.get(HEADER_SUM) or 1)
        if parts > 1:
            message_id, seq = headers.get(HEADER_MESSAGE_ID, ""), int(headers.get(HEADER_SEQ) or 0)
            payload = self._combine(message_id, parts, seq, payload)
        if payload is None or headers.get(HEADER_TYPE) != MessageType.EVENT.value:
            return  # a part still missing; or not an event (the SDK drops those too)
        started = time.monotonic()
        ack = AckFrame(code=http.HTTPStatus.OK)
        try:
            result = await self._dispatch(payload)
            if result is not None:
                ack.data = base64.b64encode(lark.JSON.marshal(result).encode())
        except HandOverFailed as error:  # Feishu pushes it again, and the next try may land
            log.warning("event %s answered 500: %s", headers.get(HEADER_MESSAGE_ID), error)
            ack = AckFrame(code=http.HTTPStatus.INTERNAL_SERVER_ERROR)
        except Exception as error:  # the SDK could not read it: pushing it again cannot fix that
            log.warning(
                "event %s of a broken shape acknowledged, dropped: %s", headers.get(HEADER_MESSAGE_ID), error
            )
        took = frame.headers.add()
        took.key, took.value = HEADER_BIZ_RT, str(round((time.monotonic() - started) * 1000))
        frame.payload = lark.JSON.marshal(ack).encode()
        await self._write_message(frame.SerializeToString())

    async def _dispatch(self, payload: bytes) -> Any:
        if _is_callback(payload):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self._event_handler._do_without_validation, payload)
        with deferred_acks() as waits:
            result = self._event_handler._do_without_validation(payload)
        for wait in waits:
            await wait.settled()
        return result


def _is_callback(payload: bytes) -> bool:
    try:
        header = json.loads(payload).get("header") or {}
        return bool(header.get("event_type") == events.CARD_ACTION)
    except (ValueError, AttributeError):
        return False


class WebhookServer:
    """Feishu's HTTP event and callback delivery, checked here, then into the SDK's dispatcher.

    The check is ours, done before the SDK sees anything, so a request from anyone else is
    answered with a 4xx and one short log line (rate-limited: anyone on the network can send
    them), never with the SDK's 500 and traceback (Feishu would push a 500 again):
    - malformed (not a JSON object, not decryptable): 400;
    - unsigned or wrongly signed (with an encrypt key, every event is signed over timestamp,
      nonce, key and body), or the wrong verification token: 401;
    - a signed timestamp more than `max_age_s` old (or ahead): 400. The SDK checks the signature
      but not its age, so a captured request could otherwise be replayed forever.
    An authentic event then goes through the same dispatch as the long connection. One whose
    shape is broken is acknowledged (200) and logged once: pushing it again cannot fix it. One
    whose hand-over failed (Temporal unreachable) gets a 500, so Feishu pushes it again.
    """

    def __init__(
        self,
        handler: Any,
        *,
        port: int,
        host: str = "0.0.0.0",
        encrypt_key: str = "",
        verification_token: str = "",
        max_age_s: float = WEBHOOK_MAX_AGE_S,
    ) -> None:
        self.handler = handler
        self.encrypt_key = encrypt_key
        self.verification_token = verification_token
        self.max_age_s = max_age_s
        self.server = ThreadingHTTPServer((host, port), _webhook_request_handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="feishu-webhook", daemon=True)
        self._stopped = _ThreadEnd()
        self._refusals = QuietLog(WEBHOOK_LOG_EVERY_S)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Call from the gateway loop; `watch()` then reports the server's end on that loop."""
        self._stopped.arm()
        self._thread.start()
        log.info("Feishu webhook listening on port %d", self.port)

    def _serve(self) -> None:
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self._stopped.signal()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    async def watch(self) -> None:
        await self._stopped.wait()
        raise RuntimeError("the Feishu webhook server stopped")

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One webhook request: (status, headers, body). Never raises."""
        try:
            plaintext, envelope = self._authentic(headers, body)
        except WebhookRefused as refused:
            self._refusals.warning(refused.kind, "webhook request refused: %s", refused.reason)
            return _json_answer(refused.status, {"msg": f"refused: {refused.kind}"})
        if envelope.get("type") == "url_verification":
            return _json_answer(200, {"challenge": str(envelope.get("challenge") or "")})
        try:
            result = self.handler._do_without_validation(plaintext)
        except HandOverFailed as error:
            log.warning("webhook event answered 500 so that Feishu pushes it again: %s", error)
            return _json_answer(500, {"msg": "not accepted yet; push again"})
        except Exception as error:  # the SDK could not read its shape
            kind = _event_type(envelope)
            self._refusals.warning(
                "broken event", "signed %s event of a broken shape acknowledged, dropped: %s", kind, error
            )
            return _json_answer(200, {"msg": "success"})
        if result is None:
            return _json_answer(200, {"msg": "success"})
        return 200, {CONTENT_TYPE: "application/json; charset=utf-8"}, lark.JSON.marshal(result).encode()

    def _authentic(self, headers: dict[str, str], body: bytes) -> tuple[bytes, dict[str, Any]]:
        """The plaintext and the envelope of a request Feishu sent; `WebhookRefused` otherwise."""
        outer = _json_object(body, "the body")
        plaintext = body
        if "encrypt" in outer:
            if not self.encrypt_key:
                raise WebhookRefused(400, "encrypted", "encrypted, but no encrypt key is configured")
            try:
                plaintext = AESCipher(self.encrypt_key).decrypt_str(str(outer["encrypt"])).encode()
            except (ValueError, TypeError, UnicodeDecodeError):
                raise WebhookRefused(400, "malformed", "cannot be decrypted with the encrypt key") from None
        envelope = _json_object(plaintext, "the decrypted body") if plaintext is not body else outer
        challenge = envelope.get("type") == "url_verification"
        if self.encrypt_key and not challenge:  # Feishu signs every event once a key is set
            self._check_signature(headers, body)
        if self.verification_token:
            header = envelope.get("header")
            token = header.get("token") if isinstance(header, dict) else envelope.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), self.verification_token.encode()
            ):
                raise WebhookRefused(401, "token", "wrong or missing verification token")
        return plaintext, envelope

    def _check_signature(self, headers: dict[str, str], body: bytes) -> None:
        timestamp = headers.get(LARK_REQUEST_TIMESTAMP)
        nonce = headers.get(LARK_REQUEST_NONCE)
        signature = headers.get(LARK_REQUEST_SIGNATURE)
        if not (timestamp and nonce and signature):
            raise WebhookRefused(401, "unsigned", "unsigned")
        if (stale := self._stale(timestamp)) is not None:
            raise WebhookRefused(400, "timestamp", stale)
        expected = hashlib.sha256((timestamp + nonce + self.encrypt_key).encode() + body).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise WebhookRefused(401, "signature", "wrong signature")

    def _stale(self, timestamp: str) -> str | None:
        try:
            age = time.time() - float(timestamp)
        except ValueError:
            return f"timestamp {timestamp[:20]!r} is not a number"
        return f"timestamp is {age:.0f} s old" if abs(age) > self.max_age_s else None


class WebhookRefused(Exception):
    """A webhook request that did not come from Feishu (or not in one piece)."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind  # what the caller is told, and what the log is rate-limited by
        self.reason = reason  # for the log


class QuietLog:
    """Log lines anyone on the network can trigger: one per kind every `every_s` seconds, with
    the count of those left out since, so a flood cannot fill the log."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -self.every_s) < self.every_s:
                self._left_out[kind] = self._left_out.get(kind, 0) + 1
                return
            self._last[kind] = now
            left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += f" (and {left_out} more like it in the last {self.every_s:.0f} s)"
        log.warning(message, *args)


def canonical_headers(lookup: Callable[[str], str | None]) -> dict[str, str]:
    """The request headers the SDK reads, under the names it looks up exactly."""
    wanted = (LARK_REQUEST_TIMESTAMP, LARK_REQUEST_NONCE, LARK_REQUEST_SIGNATURE, CONTENT_TYPE, X_REQUEST_ID)
    return {name: value for name in wanted if (value := lookup(name)) is not None}


def _webhook_request_handler(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhook: " + format, *args)

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= WEBHOOK_MAX_BODY:
                self.close_connection = True  # the body was not read: the connection cannot be reused
                self._write(*_json_answer(413 if length > 0 else 400, {"msg": "bad length"}))
                return
            body = self.rfile.read(length)
            try:
                status, headers, content = server.answer(self.path, canonical_headers(self.headers.get), body)
            except Exception as error:  # `answer` never raises; this is the last resort
                log.error("webhook request failed: %s", error)
                status, headers, content = _json_answer(500, {"msg": "error"})
            self._write(status, headers, content)

        def _write(self, status: int, headers: dict[str, str], content: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    return Handler


# --- small pieces ----------------------------------------------------------------------------------


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the SDK left on its loop, then close it (the SDK's caches cancel their cleanup
    task when collected, which fails noisily on a loop that was closed under them)."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()


class _ThreadEnd:
    """An asyncio.Event a transport thread sets, thread-safely, when it ends."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def signal(self) -> None:
        if self._loop is not None and self._event is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        assert self._event is not None, "start() the transport first"
        await self._event.wait()


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


def _json_answer(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {CONTENT_TYPE: "application/json; charset=utf-8"}, json.dumps(body).encode()


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRefused(400, "malformed", f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise WebhookRefused(400, "malformed", f"{what} is not a JSON object")
    return value


def _event_type(envelope: dict[str, Any]) -> str:
    header = envelope.get("header")
    kind = header.get("event_type") if isinstance(header, dict) else None
    return kind if isinstance(kind, str) and kind else "(untyped)"


def _callback(answer: dict[str, Any]) -> Any:
    # Built from a plain dict: nested SDK objects in the constructor trip lark-oapi issue #90.
    return P2CardActionTriggerResponse(answer)


def _decision_of(value: cards.CardValue, click: CardClick, operator: Person) -> Decision:
    if isinstance(value, cards.DecisionValue):
        return Decision(key=value.key, decision=value.decision, operator=operator)
    if isinstance(value, cards.AnswerValue):
        return Decision(key=value.key, answers={value.question_id: [value.answer]}, operator=operator)
    form = click.action.form_value or {}
    answers = {
        question_id: [str(form[f"q{index}"])]
        for index, question_id in enumerate(value.questions)
        if form.get(f"q{index}") not in (None, "")
    }
    return Decision(key=value.key, answers=answers, operator=operator)


def _short(detail: str) -> str:
    return detail if len(detail) <= 120 else detail[:117] + "…"
