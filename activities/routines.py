"""Routine activities on the chat worker: what a run, or a chat's `/routines`, asks of Temporal itself.

Workflows cannot call the Temporal client; these do, through the worker's own client.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus

from ally import names
from ally.contracts import ContinuingThreadQuery, RoutineRunResult

LOOKED_AT = 20  # the newest runs searched for a thread; a routine whose last 20 runs had none starts one


@activity.defn(name="routine_thread")
async def routine_thread(query: ContinuingThreadQuery) -> str | None:
    """The thread the routine's newest completed run ended in, for a routine that continues its
    own thread; None before its first run (or when none of its recent runs got a thread)."""
    client = activity.client()
    schedule = names.routine_schedule_id(query.routine)
    runs = []
    async for execution in client.list_workflows(
        f"WorkflowType = 'RoutineRunWorkflow' AND TemporalScheduledById = '{schedule}'"
    ):
        if execution.status == WorkflowExecutionStatus.COMPLETED and execution.close_time is not None:
            runs.append(execution)
    runs.sort(key=lambda execution: execution.close_time or execution.start_time, reverse=True)
    for execution in runs[:LOOKED_AT]:
        handle = client.get_workflow_handle(
            execution.id, run_id=execution.run_id, result_type=RoutineRunResult
        )
        result: RoutineRunResult = await handle.result()
        if result.thread_id:
            return result.thread_id
    return None


@activity.defn(name="routines_posting_in")
async def routines_posting_in(chat_id: str) -> str:
    """`/routines` in a chat: the routines that post there, with their next and last runs."""
    from ally.routines import chat_listing, statuses

    return chat_listing(chat_id, await statuses(activity.client()))
