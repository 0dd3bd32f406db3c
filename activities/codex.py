"""Codex activities: thin calls into this host's `codex app-server` child (the `CodexRuntime`).

They run on the host's own task queue (`codex-runtime@<host>`), because the child process, and the
thread's writer lock with it, live here. `locate_runtime` runs on the shared discovery queue and
tells a conversation which queue that is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from ally.codex.runtime import (
    CodexRuntime,
    ItemCompleted,
    PendingRequest,
    RuntimeRestarted,
    ThreadNotFound,
    TurnEnded,
    TurnInput,
    UnknownRequest,
)
from ally.contracts import (
    AnswerRequestInput,
    CodexRequest,
    EnsureThreadInput,
    InterruptTurnInput,
    ReadThreadInput,
    RuntimeLocation,
    RunTurnInput,
    SteerTurnInput,
    ThreadRef,
    ThreadSummary,
    TurnOutcome,
    TurnProgress,
    TurnSummary,
)

HEARTBEAT_EVERY_S = 2.0  # well inside the workflow's 10 s heartbeat timeout
INTERRUPT_GRACE_S = 10.0


class CodexActivities:
    def __init__(self, runtime: CodexRuntime, location: RuntimeLocation) -> None:
        self.runtime = runtime
        self.location = location

    def pinned(self) -> list[Callable[..., Any]]:
        """The activities that must run where the child process is."""
        return [
            self.ensure_thread,
            self.run_turn,
            self.answer_request,
            self.steer_turn,
            self.interrupt_turn,
            self.read_thread,
        ]

    @activity.defn(name="locate_runtime")
    async def locate_runtime(self) -> RuntimeLocation:
        return self.location

    @activity.defn(name="ensure_thread")
    async def ensure_thread(self, request: EnsureThreadInput) -> ThreadRef:
        settings = request.settings
        try:
            return ThreadRef(thread_id=await self.runtime.ensure_thread(request.thread_id, settings))
        except ThreadNotFound:
            # Codex stores a thread only with its first message; one that never got a turn (or
            # whose store is gone) cannot be resumed, so the chat continues on a fresh thread.
            activity.logger.warning("thread %s cannot be resumed; starting a new one", request.thread_id)
            return ThreadRef(thread_id=await self.runtime.ensure_thread(None, settings))

    @activity.defn(name="run_turn")
    async def run_turn(self, request: RunTurnInput) -> TurnOutcome:
        """Start the turn (once), follow it to its end, forward each request Codex waits on.

        A retry of this activity (heartbeat timeout, restarted worker) finds the turn id in the
        last heartbeat and never submits the prompt twice: it reads back how the turn went.
        """
        progress = _previous_progress() or TurnProgress(thread_id=request.thread_id)
        resumed = progress.turn_id is not None
        if progress.turn_id is None:
            inputs = [TurnInput(type="text", text=request.text)]
            inputs += [TurnInput(type="localImage", path=path) for path in request.local_images]
            progress.turn_id = await self.runtime.start_turn(
                request.thread_id, inputs, plan_mode=request.plan_mode
            )
        activity.heartbeat(progress)
        beating = asyncio.create_task(_heartbeat_forever(progress))
        try:
            if resumed and not self.runtime.is_turn_live(request.thread_id, progress.turn_id):
                return await self._outcome(request.thread_id, progress.turn_id, restarted=True)
            await self._follow(progress)
        except RuntimeRestarted:
            return await self._outcome(request.thread_id, progress.turn_id, restarted=True)
        except asyncio.CancelledError:
            # The workflow cancelled us (/stop): interrupt Codex, then report what really happened.
            await asyncio.shield(self._interrupt_and_wait(progress))
            return await asyncio.shield(self._outcome(request.thread_id, progress.turn_id))
        finally:
            beating.cancel()
        return await self._outcome(request.thread_id, progress.turn_id)

    @activity.defn(name="answer_request")
    async def answer_request(self, request: AnswerRequestInput) -> None:
        try:
            await self.runtime.answer_request(request.key, request.result)
        except UnknownRequest as error:
            raise ApplicationError(str(error), type="UnknownRequest", non_retryable=True) from error

    @activity.defn(name="steer_turn")
    async def steer_turn(self, request: SteerTurnInput) -> str:
        return await self.runtime.steer(request.thread_id, request.turn_id, request.text)

    @activity.defn(name="interrupt_turn")
    async def interrupt_turn(self, request: InterruptTurnInput) -> None:
        await self.runtime.interrupt(request.thread_id, request.turn_id)

    @activity.defn(name="read_thread")
    async def read_thread(self, request: ReadThreadInput) -> ThreadSummary:
        snapshot = await self.runtime.read_thread(request.thread_id)
        return ThreadSummary(
            thread_id=request.thread_id,
            turns=[
                TurnSummary(
                    turn_id=turn.id,
                    status=turn.status,
                    user_text=turn.user_text,
                    final_text=turn.final_text,
                    error=turn.error,
                )
                for turn in snapshot.turns
            ],
        )

    # --- steps of run_turn -----------------------------------------------------------------------

    async def _follow(self, progress: TurnProgress) -> None:
        assert progress.turn_id is not None
        workflow_id = activity.info().workflow_id
        assert workflow_id is not None, "run_turn is only ever called by a turn workflow"
        caller = activity.client().get_workflow_handle(workflow_id)
        async for event in self.runtime.watch_turn(progress.thread_id, progress.turn_id):
            if isinstance(event, PendingRequest):
                await caller.signal("codex_request", _as_codex_request(event, progress.thread_id))
            elif isinstance(event, ItemCompleted):
                progress.last_item = f"{event.item_type}:{event.item_id}"
            elif isinstance(event, TurnEnded):
                return

    async def _interrupt_and_wait(self, progress: TurnProgress) -> None:
        assert progress.turn_id is not None
        with contextlib.suppress(Exception):
            await self.runtime.interrupt(progress.thread_id, progress.turn_id)
            async with asyncio.timeout(INTERRUPT_GRACE_S):
                async for event in self.runtime.watch_turn(progress.thread_id, progress.turn_id):
                    if isinstance(event, TurnEnded):
                        return

    async def _outcome(self, thread_id: str, turn_id: str, *, restarted: bool = False) -> TurnOutcome:
        """Read the turn back from `thread/read`: the truth, whatever the event stream said."""
        # The turn is almost always the newest: read a few, not the whole (ever longer) thread.
        recent = await self.runtime.read_thread(thread_id, last=3)
        turn = next((t for t in recent.turns if t.id == turn_id), None)
        if turn is None:
            snapshot = await self.runtime.read_thread(thread_id)
            turn = next((t for t in snapshot.turns if t.id == turn_id), None)
        if turn is None:
            raise ApplicationError(f"turn {turn_id} is not in thread {thread_id}", type="TurnNotFound")
        status = turn.status if turn.status in ("completed", "interrupted", "failed") else "interrupted"
        return TurnOutcome(
            thread_id=thread_id,
            turn_id=turn_id,
            status=status,
            final_text=turn.final_text,
            error=turn.error,
            runtime_restarted=restarted and status != "completed",
        )


def _previous_progress() -> TurnProgress | None:
    details = activity.info().heartbeat_details
    if not details:
        return None
    return TurnProgress.model_validate(details[0])


async def _heartbeat_forever(progress: TurnProgress) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY_S)
        activity.heartbeat(progress)


def _as_codex_request(event: PendingRequest, thread_id: str) -> CodexRequest:
    return CodexRequest(
        key=event.key,
        kind=event.kind,
        method=event.method,
        thread_id=thread_id,
        turn_id=event.turn_id,
        item_id=event.item_id,
        command=event.command,
        cwd=event.cwd,
        reason=event.reason,
        diff=event.diff,
        questions=event.questions,
    )
