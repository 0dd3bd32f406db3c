"""`ally turns` and `ally approvals`: running and stuck turns, and what they wait for.

Read from Temporal's visibility (the search attributes every turn keeps current) and from each
turn's `view` query, so what the terminal shows is what the Temporal UI shows.
"""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from pydantic import BaseModel
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from ally import names
from ally.contracts import AgentRequest, DecisionRecord
from workflows.turn import TurnWorkflow


class TurnRow(BaseModel):
    workflow_id: str
    chat: str
    state: str
    started: datetime
    running_s: float
    ui_link: str | None


class PendingRow(BaseModel):
    id: str  # stable while the request waits: `ally approvals --decide <id>`
    workflow_id: str
    chat: str
    number: int
    request: AgentRequest


REQUEST_ID_LENGTH = 8


def request_id(workflow_id: str, key: str) -> str:
    """A short id for one waiting request that does not move when others are decided (a position
    would: deciding "2" after "1" was gone once declined the wrong chat's command). Codex's own
    request keys repeat across turns, so the turn is part of it."""
    digest = hashlib.sha256(f"{workflow_id}\n{key}".encode()).hexdigest()
    return digest[:REQUEST_ID_LENGTH]


def matching(rows: list[PendingRow], wanted: str) -> list[PendingRow]:
    """The waiting requests whose id starts with `wanted` (case-insensitive)."""
    prefix = wanted.strip().lower()
    return [row for row in rows if prefix and row.id.startswith(prefix)]


def ui_link(ui: str | None, namespace: str, workflow_id: str) -> str | None:
    return f"{ui}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}" if ui else None


async def running_turns(client: Client, *, ui: str | None) -> list[TurnRow]:
    now = datetime.now(UTC)
    rows: list[TurnRow] = []
    query = f'WorkflowType="{TurnWorkflow.__name__}" AND ExecutionStatus="Running"'
    async for execution in client.list_workflows(query):
        attributes = execution.typed_search_attributes
        started = execution.start_time
        rows.append(
            TurnRow(
                workflow_id=execution.id,
                chat=attributes.get(names.CHAT) or "?",
                state=attributes.get(names.TURN_STATE) or "starting",
                started=started,
                running_s=(now - started).total_seconds(),
                ui_link=ui_link(ui, client.namespace, execution.id),
            )
        )
    return sorted(rows, key=lambda row: row.started)


async def pending_approvals(client: Client) -> list[PendingRow]:
    rows: list[PendingRow] = []
    for turn in await running_turns(client, ui=None):
        with contextlib.suppress(RPCError):  # ended between the listing and the query
            view = await client.get_workflow_handle(turn.workflow_id).query(TurnWorkflow.view)
            rows += [
                PendingRow(
                    id=request_id(turn.workflow_id, request.key),
                    workflow_id=turn.workflow_id,
                    chat=turn.chat,
                    number=i,
                    request=request,
                )
                for i, request in enumerate(view.pending, start=1)
            ]
    return rows


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
