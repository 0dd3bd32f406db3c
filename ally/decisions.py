"""Sending a person's decision to the turn that waits for it: a workflow update, or a signal.

An update is validated (still pending? may this person decide?) and answered, and its id is derived
from the request and the person, so a double click or a redelivered card callback decides once.
An update needs a live workflow worker; when none answers in time the decision goes as a signal,
which the server accepts durably and the workflow re-checks when it next runs (notes/temporal.md §2).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.exceptions import FailureError
from temporalio.service import RPCError, RPCStatusCode

from ally.contracts import Decision
from ally.names import decision_update_id
from workflows.turn import TurnWorkflow


class DecisionReceipt(BaseModel):
    status: Literal["decided", "rejected", "queued", "closed"]
    detail: str


async def submit_decision(
    client: Client, turn_workflow_id: str, decision: Decision, *, rpc_timeout: float = 5.0
) -> DecisionReceipt:
    handle = client.get_workflow_handle(turn_workflow_id)
    try:
        result = await handle.execute_update(
            TurnWorkflow.decide,
            decision,
            id=decision_update_id(decision.key, decision.operator.id),
            rpc_timeout=timedelta(seconds=rpc_timeout),
        )
        return DecisionReceipt(status="decided", detail=str(result))
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
