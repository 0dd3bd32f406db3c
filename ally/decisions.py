"""Sending a person's decision to the turn that waits for it: a workflow update, or a signal.

An update is validated (still pending? may this person decide?) and answered, and its id is derived
from the request and the person, so a double click or a redelivered card callback decides once.
An update needs a live workflow worker; when none answers in time the decision goes as a signal,
which the server accepts durably and the workflow re-checks when it next runs (notes/temporal.md §2).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from ally.contracts import Decision
from ally.names import decision_update_id
from workflows.turn import EXPIRED_RUNTIME_GONE, RUN_TURN_HEARTBEAT, TurnWorkflow

HOST_NOT_ANSWERING = (
    "this request no longer waits: the Codex runtime that asked it is not answering (it died or is "
    "stuck). The chat is told how the turn ends."
)


class DecisionReceipt(BaseModel):
    status: Literal["decided", "rejected", "queued", "closed", "expired"]
    detail: str


async def submit_decision(
    client: Client,
    turn_workflow_id: str,
    decision: Decision,
    *,
    rpc_timeout: float = 5.0,
    confirm_within: float = 0.0,
) -> DecisionReceipt:
    """Decide a waiting request. Refused at once when the host that holds it is gone; with
    `confirm_within`, also wait that long to learn whether the answer reached Codex (a terminal can
    wait a few seconds; a card's 3 s answer cannot)."""
    handle = client.get_workflow_handle(turn_workflow_id)
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
        # People read the detail: the validator's sentence, never the error's type in front of it
        # (str() of a Temporal failure starts with the class name of what was raised).
        cause = error.cause
        plain = cause.message if isinstance(cause, FailureError) else ""
        detail = plain or "The turn refused it."
        return DecisionReceipt(status="rejected", detail=detail)
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
