"""The agent runtime host's activities as the workflows see them: typed stubs, never run here.

The real ones (activities/codex.py, `CodexActivities`; the workspace's, `WorkspaceActivities` in
activities/workspace.py) live on the host's pinned queue and import what the workflows must not
(the Codex client, subprocesses): a second runtime would implement these same names and shapes.
Calling a stub by reference gives mypy the argument and result types and an editor the way to the
contract; tests/test_typed_edges.py proves each stub matches the activity it stands for.
"""

from __future__ import annotations

from temporalio import activity

from ally.contracts import (
    AgentAccount,
    AgentThread,
    AnswerRequestInput,
    AutosaveRequest,
    AutosaveResult,
    DayQuery,
    DayRecord,
    FileChunkQuery,
    FileQuery,
    ForkInput,
    GoalInput,
    RuntimeLocation,
    SnapshotRequest,
    StartTurnInput,
    SteerTurnInput,
    ThreadRef,
    ThreadRelease,
    ThreadsQuery,
    TurnOutcome,
    WorkspaceFile,
    WorkspaceSnapshot,
)

_ELSEWHERE = "runs on an agent runtime host (activities/codex.py, activities/workspace.py), never here"


@activity.defn(name="locate_runtime")
async def locate_runtime() -> RuntimeLocation:
    """Which host answers on the shared discovery queue, and its pinned queue."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="run_turn")
async def run_turn(request: StartTurnInput) -> TurnOutcome:
    """The whole agent side of a turn: load the thread, submit, follow, read the outcome back."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="run_goal")
async def run_goal(request: GoalInput) -> TurnOutcome:
    """A goal: set it on the thread, follow each turn the agent starts for it, until it ends."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="answer_request")
async def answer_request(request: AnswerRequestInput) -> None:
    """Give the agent the decision on one of its requests, in the agent's own terms."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="steer_turn")
async def steer_turn(request: SteerTurnInput) -> str:
    """More text for the turn the calling workflow runs on this host."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="list_threads")
async def list_threads(query: ThreadsQuery) -> list[AgentThread]:
    """The recent threads of a workspace, from the agent's own store (a terminal's too)."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="describe_thread")
async def describe_thread(ref: ThreadRef) -> AgentThread:
    """One stored thread with the final answer of its latest turn."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="fork_thread")
async def fork_thread(request: ForkInput) -> AgentThread:
    """A new thread with another's history; the original stays as it was."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="release_thread")
async def release_thread(ref: ThreadRef) -> ThreadRelease:
    """Unload the thread on the host, so a terminal may write it; False if it could not."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="day_threads")
async def day_threads(query: DayQuery) -> DayRecord:
    """The conversations of one day in one workspace, read from the agent's own record."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="snapshot_workspace")
async def snapshot_workspace(request: SnapshotRequest) -> WorkspaceSnapshot:
    """Before an autosaved turn: which paths of the workspace the person already has uncommitted."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="autosave_workspace")
async def autosave_workspace(request: AutosaveRequest) -> AutosaveResult:
    """After the turn: commit what it changed in the workspace, locally, and nothing else."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="account_status")
async def account_status() -> AgentAccount:
    """Whether the agent on this host is logged in (or needs no login)."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="inspect_file")
async def inspect_file(query: FileQuery) -> WorkspaceFile:
    """Whether a path is a file of the workspace the chat may have (or why not), and its size."""
    raise NotImplementedError(_ELSEWHERE)


@activity.defn(name="read_file_chunk")
async def read_file_chunk(query: FileChunkQuery) -> bytes:
    """One chunk of a file `inspect_file` accepted, as raw bytes."""
    raise NotImplementedError(_ELSEWHERE)
