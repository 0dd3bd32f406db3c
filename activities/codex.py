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
    InterruptTurnInput,
    ReadThreadInput,
    RuntimeLocation,
    StartTurnInput,
    SteerTurnInput,
    ThreadSummary,
    TurnOutcome,
    TurnProgress,
    TurnRef,
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
            self.start_turn,
            self.follow_turn,
            self.answer_request,
            self.steer_turn,
            self.interrupt_turn,
            self.read_thread,
        ]

    @activity.defn(name="locate_runtime")
    async def locate_runtime(self) -> RuntimeLocation:
        return self.location

    @activity.defn(name="start_turn")
    async def start_turn(self, request: StartTurnInput) -> TurnRef:
        """Load the chat's thread (start, or resume) and submit the prompt as a new turn."""
        try:
            thread_id = await self.runtime.ensure_thread(request.thread_id, request.settings)
        except ThreadNotFound:
            # Codex stores a thread only with its first message; one that never got a turn (or
            # whose store is gone) cannot be resumed, so the chat continues on a fresh thread.
            activity.logger.warning("thread %s cannot be resumed; starting a new one", request.thread_id)
            thread_id = await self.runtime.ensure_thread(None, request.settings)
        inputs = [TurnInput(type="text", text=request.text)]
        inputs += [TurnInput(type="localImage", path=path) for path in request.local_images]
        turn_id = await self.runtime.start_turn(thread_id, inputs, plan_mode=request.plan_mode)
        return TurnRef(thread_id=thread_id, turn_id=turn_id)

    @activity.defn(name="follow_turn")
    async def follow_turn(self, turn: TurnRef) -> TurnOutcome:
        """Follow the turn to its end, forward each request Codex waits on, read the outcome back.

        A retry after this host's child or worker restarted finds the turn gone from the child:
        it reads back how the turn ended (interrupted) instead of waiting for it.
        """
        progress = TurnProgress(thread_id=turn.thread_id, turn_id=turn.turn_id)
        activity.heartbeat(progress)
        beating = asyncio.create_task(_heartbeat_forever(progress))
        try:
            if activity.info().attempt > 1 and not self.runtime.is_turn_live(turn.thread_id, turn.turn_id):
                return await self._outcome(turn, restarted=True)
            await self._follow(progress)
        except RuntimeRestarted:
            return await self._outcome(turn, restarted=True)
        except asyncio.CancelledError:
            # The workflow cancelled us (/stop): interrupt Codex, then report what really happened.
            await asyncio.shield(self._interrupt_and_wait(turn))
            return await asyncio.shield(self._outcome(turn))
        finally:
            beating.cancel()
        return await self._outcome(turn)

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

    # --- steps of follow_turn -----------------------------------------------------------------------

    async def _follow(self, progress: TurnProgress) -> None:
        workflow_id = activity.info().workflow_id
        assert workflow_id is not None, "follow_turn is only ever called by a turn workflow"
        caller = activity.client().get_workflow_handle(workflow_id)
        async for event in self.runtime.watch_turn(progress.thread_id, progress.turn_id):
            if isinstance(event, PendingRequest):
                await caller.signal("codex_request", _as_codex_request(event))
            elif isinstance(event, ItemCompleted):
                progress.last_item = f"{event.item_type}:{event.item_id}"
            elif isinstance(event, TurnEnded):
                return

    async def _interrupt_and_wait(self, turn: TurnRef) -> None:
        with contextlib.suppress(Exception):
            await self.runtime.interrupt(turn.thread_id, turn.turn_id)
            async with asyncio.timeout(INTERRUPT_GRACE_S):
                async for event in self.runtime.watch_turn(turn.thread_id, turn.turn_id):
                    if isinstance(event, TurnEnded):
                        return

    async def _outcome(self, turn: TurnRef, *, restarted: bool = False) -> TurnOutcome:
        """Read the turn back from `thread/read`: the truth, whatever the event stream said."""
        # The turn is almost always the newest: read a few, not the whole (ever longer) thread.
        recent = await self.runtime.read_thread(turn.thread_id, last=3)
        found = next((t for t in recent.turns if t.id == turn.turn_id), None)
        if found is None:
            snapshot = await self.runtime.read_thread(turn.thread_id)
            found = next((t for t in snapshot.turns if t.id == turn.turn_id), None)
        if found is None:
            raise ApplicationError(
                f"turn {turn.turn_id} is not in thread {turn.thread_id}", type="TurnNotFound"
            )
        status = found.status if found.status in ("completed", "interrupted", "failed") else "interrupted"
        return TurnOutcome(
            thread_id=turn.thread_id,
            turn_id=turn.turn_id,
            status=status,
            final_text=found.final_text,
            error=found.error,
            runtime_restarted=restarted and status != "completed",
        )


async def _heartbeat_forever(progress: TurnProgress) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY_S)
        activity.heartbeat(progress)


def _as_codex_request(event: PendingRequest) -> CodexRequest:
    """The runtime's view of a waiting request, trimmed to the contract the workflow keeps."""
    fields = event.model_dump(include=set(CodexRequest.model_fields))
    if event.kind == "permissions":
        fields["permissions"] = event.params.get("permissions") or {}
    fields["additional_permissions"] = event.params.get("additionalPermissions") or {}
    return CodexRequest.model_validate(fields)
