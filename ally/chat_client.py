"""`ChatClient`: what the outside world asks of chats, in one place, for every channel and the CLI.

- `hand_over` delivers a person's message to its chat's conversation with signal-with-start. It
  works with no worker running (the server records the signal durably, docs/temporal.md §3), so a
  message accepted here is never lost; it is answered when the workers are back. A message that
  cannot travel is refused here, in words for the person: text that is not valid UTF-8, or more
  than `MAX_MESSAGE_BYTES` as it is encoded in Temporal's payloads (Temporal refuses any payload
  over 2 MB; a message rides in payloads beside some configuration, docs/operations.md "Limits").
- `decide` sends a person's decision to the turn that waits for it: a workflow update, validated
  (still pending? may this person decide?) and answered, its id derived from the request and the
  person so a double click or a redelivered card callback decides once. An update needs a live
  workflow worker; when none answers in time the decision goes as a signal, which the server
  accepts durably and the workflow re-checks when it next runs (docs/temporal.md §2).
- `waiting` / `waiting_everywhere` list the requests that wait for a decision, in one chat or in
  every running turn, each with a short id that does not move while it waits.
- `recall` drops a queued message; `stop` interrupts a conversation's running turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from ally import names
from ally.contracts import (
    AgentRequest,
    ChatConfig,
    ConversationState,
    ConversationView,
    Decision,
    Inbound,
    InboundMessage,
    TurnView,
)
from ally.names import decision_update_id
from ally.turns_report import running_turns
from workflows.conversation import ConversationWorkflow
from workflows.turn import EXPIRED_RUNTIME_GONE, RUN_TURN_HEARTBEAT, TurnWorkflow

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1536 * 1024
HOST_NOT_ANSWERING = (
    "this request no longer waits: the Codex runtime that asked it is not answering (it died or is "
    "stuck). The chat is told how the turn ends."
)
REQUEST_ID_LENGTH = 8


class MessageRefused(Exception):
    """The message cannot be handed over; the text says why, in words for the person."""


class DecisionReceipt(BaseModel):
    status: Literal["decided", "rejected", "queued", "closed", "expired"]
    detail: str


class WaitingRequest(BaseModel):
    id: str  # stable while the request waits: `ally approvals --decide <id>`
    workflow_id: str  # the turn's
    chat: str
    number: int  # its place among its turn's waiting requests, from 1
    request: AgentRequest


def refusal(text: str) -> str | None:
    """Why `text` cannot be handed over as a message, or None when it can."""
    try:
        size = len(to_json(text))  # as the payload converter encodes it
    except PydanticSerializationError:  # lone surrogates: bytes that were not UTF-8 to begin with
        return (
            "This message is not valid text (it has bytes that are not UTF-8), so it was not sent. "
            "Send it again as plain text."
        )
    if size > MAX_MESSAGE_BYTES:
        return (
            f"This message is too large to send on: {size // 1024:,} KB, and a message can be at "
            f"most {MAX_MESSAGE_BYTES // 1024:,} KB. Save the text as a file in the workspace and ask "
            "Codex to read it."
        )
    return None


def request_id(workflow_id: str, key: str) -> str:
    """A short id for one waiting request that does not move when others are decided (a position
    would: deciding "2" after "1" was gone once declined the wrong chat's command). Codex's own
    request keys repeat across turns, so the turn is part of it."""
    digest = hashlib.sha256(f"{workflow_id}\n{key}".encode()).hexdigest()
    return digest[:REQUEST_ID_LENGTH]


def matching(rows: list[WaitingRequest], wanted: str) -> list[WaitingRequest]:
    """The waiting requests whose id starts with `wanted` (case-insensitive)."""
    prefix = wanted.strip().lower()
    return [row for row in rows if prefix and row.id.startswith(prefix)]


class ChatClient:
    """The chats' workflows as the gateway, `ally chat` and the CLI see them."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def hand_over(self, message: InboundMessage, new_state: ConversationState) -> None:
        """Deliver the message to its chat's conversation, starting it (from `new_state`) if needed.
        The message carries the chat's current configuration too: a conversation that already runs
        adopts it for the turns to come. Raises `MessageRefused` for a message that cannot travel."""
        if (reason := refusal(message.text)) is not None:
            raise MessageRefused(reason)
        chat_config = ChatConfig(
            settings=new_state.settings,
            policy=new_state.policy,
            approvers=new_state.approvers,
            alerts_workflow_id=new_state.alerts_workflow_id,
            assistant_name=new_state.assistant_name,
            discovery_queue=new_state.discovery_queue,
            autosave=new_state.autosave,
            long_work=new_state.long_work,
        )
        chat = message.chat.chat_id
        where = f"{chat}/{new_state.topic}" if new_state.topic else chat
        await self.client.start_workflow(
            ConversationWorkflow.run,
            new_state,
            id=names.conversation_id(chat, new_state.assistant, new_state.topic),
            task_queue=message.chat.worker_queue,  # the worker that serves this chat runs its workflows
            start_signal=ConversationWorkflow.inbound.__name__,  # the signal is named for its method
            start_signal_args=[Inbound(message=message, config=chat_config)],
            # Set at the start (not upserted by the workflow), so recorded histories replay unchanged;
            # continue-as-new and the turns (started with a copy) carry them on.
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(names.CHAT, chat),
                    SearchAttributePair(names.ASSISTANT, new_state.assistant),
                ]
            ),
            static_summary=f"{new_state.assistant_name or new_state.assistant} in {where}",
        )

    async def signal_conversation(self, conversation_id: str, inbound: Inbound) -> None:
        """A message for a conversation that runs already (a button on its own notice, a handoff
        from the terminal); raises `MessageRefused` when there is no such conversation."""
        handle = self.client.get_workflow_handle_for(ConversationWorkflow.run, conversation_id)
        try:
            await handle.signal(ConversationWorkflow.inbound, inbound)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise MessageRefused(f"There is no conversation {conversation_id} running.") from None
            raise

    async def decide(
        self,
        turn_workflow_id: str,
        decision: Decision,
        *,
        rpc_timeout: float = 5.0,
        confirm_within: float = 0.0,
    ) -> DecisionReceipt:
        """Decide a waiting request. Refused at once when the host that holds it is gone; with
        `confirm_within`, also wait that long to learn whether the answer reached Codex (a terminal
        can wait a few seconds; a card's 3 s answer cannot)."""
        handle = self.client.get_workflow_handle(turn_workflow_id)
        if await _host_gone(handle):
            return DecisionReceipt(status="expired", detail=HOST_NOT_ANSWERING)
        try:
            result = await handle.execute_update(
                TurnWorkflow.decide,
                decision,
                id=decision_update_id(decision.key, decision.operator.id),
                rpc_timeout=timedelta(seconds=rpc_timeout),
            )
        except WorkflowUpdateFailedError as error:
            # People read the detail: the validator's sentence, never the error's type in front of
            # it (str() of a Temporal failure starts with the class name of what was raised).
            cause = error.cause
            plain = cause.message if isinstance(cause, FailureError) else ""
            return DecisionReceipt(status="rejected", detail=plain or "The turn refused it.")
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            await handle.signal(TurnWorkflow.decide_later, decision)
            return DecisionReceipt(
                status="queued", detail="recorded; the turn applies it when its worker is back"
            )
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return DecisionReceipt(status="closed", detail="this turn has already ended")
            raise
        if confirm_within > 0:
            return await _confirmed(handle, decision.key, str(result), confirm_within)
        return DecisionReceipt(status="decided", detail=str(result))

    async def waiting(self, conversation_id: str, *, rpc_timeout: float = 2.0) -> list[WaitingRequest]:
        """What waits for a decision in this conversation's running turn (`names.conversation_id`),
        in the order it was asked; nothing when there is no such conversation or running turn, or
        it does not answer."""
        timeout = timedelta(seconds=rpc_timeout)
        conversation = self.client.get_workflow_handle_for(ConversationWorkflow.run, conversation_id)
        chat_id = names.chat_of(conversation_id)
        try:
            view: ConversationView = await conversation.query(ConversationWorkflow.view, rpc_timeout=timeout)
        except (RPCError, WorkflowQueryFailedError) as error:
            log.info("no conversation view for %s: %s", conversation_id, error)
            return []
        if view.running_turn_workflow_id is None:
            return []
        try:
            turn = await self.client.get_workflow_handle(view.running_turn_workflow_id).query(
                TurnWorkflow.view, rpc_timeout=timeout
            )
        except (RPCError, WorkflowQueryFailedError):
            return []
        return _rows(view.running_turn_workflow_id, chat_id, turn)

    async def waiting_everywhere(self) -> list[WaitingRequest]:
        """What waits for a decision in every running turn, oldest turn first."""
        rows: list[WaitingRequest] = []
        for turn in await running_turns(self.client, ui=None):
            with contextlib.suppress(RPCError):  # ended between the listing and the query
                view = await self.client.get_workflow_handle(turn.workflow_id).query(TurnWorkflow.view)
                rows += _rows(turn.workflow_id, turn.chat, view)
        return rows

    async def recall(self, conversation_id: str, message_id: str) -> None:
        """Drop a message still queued in this conversation; a turn it already started keeps running."""
        handle = self.client.get_workflow_handle_for(ConversationWorkflow.run, conversation_id)
        try:
            await handle.signal(ConversationWorkflow.recall, message_id)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            log.info("recall of %s: no conversation %s", message_id, conversation_id)

    async def recall_in_chat(self, chat_id: str, message_id: str) -> None:
        """`recall` when the message's conversation is not known (one per assistant and topic): each
        of the chat's running conversations is told; those that do not hold it ignore it."""
        query = (
            f"WorkflowType = '{ConversationWorkflow.__name__}' AND ExecutionStatus = 'Running' "
            f"AND {names.CHAT.name} = '{chat_id}'"
        )
        async for execution in self.client.list_workflows(query):
            await self.recall(execution.id, message_id)

    async def stop(self, conversation_id: str) -> bool:
        """Interrupt the conversation's running turn (its queued messages stay); False when none runs."""
        handle = self.client.get_workflow_handle_for(ConversationWorkflow.run, conversation_id)
        try:
            view = await handle.query(ConversationWorkflow.view)
            if view.running_turn_workflow_id is None:
                return False
            await self.client.get_workflow_handle(view.running_turn_workflow_id).signal(TurnWorkflow.stop)
        except (RPCError, WorkflowQueryFailedError) as error:
            log.info("stop in %s: no running turn reached: %s", conversation_id, error)
            return False
        return True

    async def stop_turn(self, turn_workflow_id: str) -> bool:
        """Interrupt this turn (a Stop button names its turn); False when it is not running."""
        try:
            await self.client.get_workflow_handle(turn_workflow_id).signal(TurnWorkflow.stop)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            return False
        return True


def conversation_exists(client: Client) -> Callable[[str], Awaitable[bool]]:
    """Whether a conversation with this id was ever started (running or not): a group that talked
    before there were several assistants keeps talking to the default one (ally/routing.py)."""

    async def exists(conversation_id: str) -> bool:
        try:
            await client.get_workflow_handle(conversation_id).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    return exists


def _rows(turn_workflow_id: str, chat: str, view: TurnView) -> list[WaitingRequest]:
    return [
        WaitingRequest(
            id=request_id(turn_workflow_id, request.key),
            workflow_id=turn_workflow_id,
            chat=chat,
            number=number,
            request=request,
        )
        for number, request in enumerate(view.pending, start=1)
    ]


async def _host_gone(handle: WorkflowHandle[Any, Any]) -> bool:
    """Whether the turn's `run_turn` has stopped heartbeating: its worker (and the Codex child that
    holds the turn's requests) died, or is stuck. The server concludes the same a moment later."""
    try:
        described = await handle.describe()
    except RPCError:
        return False  # the update says what is wrong
    if described.status != WorkflowExecutionStatus.RUNNING:
        return False
    now = datetime.now(UTC)
    for pending in described.raw_description.pending_activities:
        if pending.activity_type.name != "run_turn":
            continue
        if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
            return True  # its attempt timed out: the next waits for a worker
        beat = pending.last_heartbeat_time if pending.HasField("last_heartbeat_time") else None
        last = (beat or pending.last_started_time).ToDatetime(tzinfo=UTC)
        return now - last > RUN_TURN_HEARTBEAT
    return False


async def _confirmed(
    handle: WorkflowHandle[Any, Any], key: str, decided: str, within: float
) -> DecisionReceipt:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        try:
            view = await handle.query(TurnWorkflow.view)
        except RPCError:
            break
        record = next((r for r in reversed(view.decisions) if r.key == key), None)
        if record is not None:
            if record.decision == EXPIRED_RUNTIME_GONE:
                return DecisionReceipt(status="expired", detail=HOST_NOT_ANSWERING)
            return DecisionReceipt(status="decided", detail=record.decision)
        await asyncio.sleep(0.1)
    return DecisionReceipt(status="decided", detail=f"{decided} (sent; Codex has not taken it yet)")
