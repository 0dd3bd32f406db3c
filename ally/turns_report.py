"""`ally turns` and `ally approvals`: running and stuck turns, and what they wait for.

Read from Temporal's visibility (the search attributes every turn keeps current) and from each
turn's `view` query, so what the terminal shows is what the Temporal UI shows.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from ally import names
from ally.contracts import DecisionRecord
from workflows.turn import TurnWorkflow


class TurnRow(BaseModel):
    workflow_id: str
    chat: str
    assistant: str  # the assistant's id; turns from before there were assistants are the default's
    state: str
    started: datetime
    running_s: float
    ui_link: str | None


def ui_link(ui: str | None, namespace: str, workflow_id: str) -> str | None:
    return f"{ui}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}" if ui else None


async def running_turns(client: Client, *, ui: str | None, assistant: str | None = None) -> list[TurnRow]:
    """Running turns, oldest first; only `assistant`'s (an id) when given."""
    now = datetime.now(UTC)
    rows: list[TurnRow] = []
    query = f'WorkflowType="{TurnWorkflow.__name__}" AND ExecutionStatus="Running"'
    if assistant is not None:
        which = f"{names.ASSISTANT.name}='{assistant}'"
        if assistant == names.DEFAULT_ASSISTANT:  # turns started before the attribute existed
            which = f"({which} OR {names.ASSISTANT.name} IS NULL)"
        query += f" AND {which}"
    async for execution in client.list_workflows(query):
        attributes = execution.typed_search_attributes
        started = execution.start_time
        rows.append(
            TurnRow(
                workflow_id=execution.id,
                chat=attributes.get(names.CHAT) or "?",
                assistant=attributes.get(names.ASSISTANT) or names.DEFAULT_ASSISTANT,
                state=attributes.get(names.TURN_STATE) or "starting",
                started=started,
                running_s=(now - started).total_seconds(),
                ui_link=ui_link(ui, client.namespace, execution.id),
            )
        )
    return sorted(rows, key=lambda row: row.started)


class HistoryRow(BaseModel):
    workflow_id: str
    chat: str
    record: DecisionRecord


async def decision_history(client: Client, *, days: float = 7) -> list[HistoryRow]:
    """Every decision on a request in turns started in the last `days`: a person's, a rule's, or
    expiry's, oldest first. Finished turns answer from their result (no worker needed)."""
    since = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds").replace("+00:00", "Z")
    rows: list[HistoryRow] = []
    async for execution in client.list_workflows(
        f'WorkflowType="{TurnWorkflow.__name__}" AND StartTime > "{since}"'
    ):
        chat = execution.typed_search_attributes.get(names.CHAT) or "?"
        handle = client.get_workflow_handle_for(TurnWorkflow.run, execution.id, run_id=execution.run_id)
        with contextlib.suppress(RPCError, WorkflowFailureError):
            if execution.status == WorkflowExecutionStatus.COMPLETED:
                records = (await handle.result()).decisions
            elif execution.status == WorkflowExecutionStatus.RUNNING:
                records = (await handle.query(TurnWorkflow.view)).decisions
            else:
                continue
            rows += [HistoryRow(workflow_id=execution.id, chat=chat, record=r) for r in records]
    return sorted(rows, key=lambda row: row.record.decided_at)
