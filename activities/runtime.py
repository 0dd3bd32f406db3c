"""The agent runtime host's activities as the workflows see them: typed stubs, never run here.

The real ones (activities/codex.py, `CodexActivities`) live on the host's pinned queue and import
the Codex client, which the workflows must not: a second runtime would implement these same names
and shapes. Calling a stub by reference gives mypy the argument and result types and an editor the
way to the contract; tests/test_typed_edges.py proves each stub matches the activity it stands for.
"""

from __future__ import annotations

from temporalio import activity

from ally.contracts import (
    AnswerRequestInput,
    DayQuery,
    DayRecord,
    RuntimeLocation,
    StartTurnInput,
    SteerTurnInput,
    TurnOutcome,
)

_ELSEWHERE = "runs on an agent runtime host (activities/codex.py), never in this process"


@activity.defn(name="locate_runtime")
async def locate_runtime() -> RuntimeLocation:
    """Which host answers on the shared discovery queue, and its pinned queue."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="run_turn")
async def run_turn(request: StartTurnInput) -> TurnOutcome:
    """The whole agent side of a turn: load the thread, submit, follow, read the outcome back."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="answer_request")
async def answer_request(request: AnswerRequestInput) -> None:
    """Give the agent the decision on one of its requests, in the agent's own terms."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="steer_turn")
async def steer_turn(request: SteerTurnInput) -> str:
    """More text for the turn the calling workflow runs on this host."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="day_threads")
async def day_threads(query: DayQuery) -> DayRecord:
    """The conversations of one day in one workspace, read from the agent's own record."""
    raise NotImplementedError(_ELSEWHERE)
