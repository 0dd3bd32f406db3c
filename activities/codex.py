"""Codex activities: thin calls into this host's `codex app-server` child (the `CodexRuntime`).

They run on the host's own task queue (`codex-runtime@<host>`), because the child process, and the
thread's writer lock with it, live here. `locate_runtime` runs on the shared discovery queue and
tells a conversation which queue that is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
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
    RuntimeLocation,
    StartTurnInput,
    SteerTurnInput,
    TurnOutcome,
    TurnProgress,
)

HEARTBEAT_EVERY_S = 2.0  # well inside the workflow's 10 s heartbeat timeout
INTERRUPT_GRACE_S = 10.0
STEER_WAIT_S = 10.0  # a steer can arrive while the prompt is still being submitted
REMEMBERED_TURNS = 1000


class CodexActivities:
    def __init__(self, runtime: CodexRuntime, location: RuntimeLocation) -> None:
        self.runtime = runtime
        self.location = location
        self.turns = TurnsHere()

    def pinned(self) -> list[Callable[..., Any]]:
        """The activities that must run where the child process is."""
        return [self.run_turn, self.answer_request, self.steer_turn]

    @activity.defn(name="locate_runtime")
    async def locate_runtime(self) -> RuntimeLocation:
        return self.location

    @activity.defn(name="run_turn")
    async def run_turn(self, request: StartTurnInput) -> TurnOutcome:
        """The whole Codex side of a turn in one call: load the thread, submit the prompt, follow the
        turn to its end (forwarding each request Codex waits on), read the outcome back.

        The submitted turn is heartbeated at once, so a retry (this host's child or worker restarted,
        a heartbeat was missed) follows or reads back that turn and never submits the prompt twice.
        """
        info = activity.info()
        workflow_id = info.workflow_id
        assert workflow_id is not None, "run_turn is only ever called by a turn workflow"
        progress = _submitted(info.heartbeat_details)
        try:
            if progress is None:
                progress = await self._submit(request)
            elif not self.runtime.is_turn_live(progress.thread_id, progress.turn_id):
                return await self._outcome(progress, restarted=True)
            activity.heartbeat(progress)
            self.turns.started(workflow_id, progress)
            beating = asyncio.create_task(_heartbeat_forever(progress))
            try:
                await self._follow(workflow_id, progress)
            except asyncio.CancelledError:
                # The workflow cancelled us (/stop): interrupt Codex, then report what really happened.
                await asyncio.shield(self._interrupt_and_wait(progress))
                return await asyncio.shield(self._outcome(progress))
            finally:
                beating.cancel()
                self.turns.ended(workflow_id)
        except RuntimeRestarted:
            if progress is None:
                raise  # nothing was submitted: the retry submits it to the restarted child
            return await self._outcome(progress, restarted=True)
        return await self._outcome(progress)

    @activity.defn(name="answer_request")
    async def answer_request(self, request: AnswerRequestInput) -> None:
        try:
            await self.runtime.answer_request(request.key, request.result)
        except UnknownRequest as error:
            raise ApplicationError(str(error), type="UnknownRequest", non_retryable=True) from error

    @activity.defn(name="steer_turn")
    async def steer_turn(self, request: SteerTurnInput) -> str:
        """Add text to the turn the calling workflow runs here, once it has been submitted."""
        workflow_id = activity.info().workflow_id
        assert workflow_id is not None, "steer_turn is only ever called by a turn workflow"
        turn = await self.turns.live(workflow_id, within=STEER_WAIT_S)
        if turn is None:
            raise ApplicationError(
                "the turn is not running on this host", type="TurnNotLive", non_retryable=True
            )
        return await self.runtime.steer(turn.thread_id, turn.turn_id, request.text)

    # --- steps of run_turn ------------------------------------------------------------------------

    async def _submit(self, request: StartTurnInput) -> TurnProgress:
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
        return TurnProgress(thread_id=thread_id, turn_id=turn_id)

    async def _follow(self, workflow_id: str, progress: TurnProgress) -> None:
        caller = activity.client().get_workflow_handle(workflow_id)
        async for event in self.runtime.watch_turn(progress.thread_id, progress.turn_id):
            if isinstance(event, PendingRequest):
                await caller.signal("codex_request", _as_codex_request(event))
            elif isinstance(event, ItemCompleted):
                progress.last_item = f"{event.item_type}:{event.item_id}"
            elif isinstance(event, TurnEnded):
                return

    async def _interrupt_and_wait(self, turn: TurnProgress) -> None:
        with contextlib.suppress(Exception):
            await self.runtime.interrupt(turn.thread_id, turn.turn_id)
            async with asyncio.timeout(INTERRUPT_GRACE_S):
                async for event in self.runtime.watch_turn(turn.thread_id, turn.turn_id):
                    if isinstance(event, TurnEnded):
                        return

    async def _outcome(self, turn: TurnProgress, *, restarted: bool = False) -> TurnOutcome:
        """Read the turn back from `thread/read`: the truth, whatever the event stream said."""
        # The turn is almost always the newest: read just that, not the whole (ever longer) thread.
        recent = await self.runtime.read_thread(turn.thread_id, last=1)
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


class TurnsHere:
    """Which Codex turn each turn workflow runs on this host, so a steer needs no ids: the workflow
    learns its thread and turn ids only when `run_turn` reports the outcome."""

    def __init__(self) -> None:
        self._turns: OrderedDict[str, asyncio.Future[TurnProgress | None]] = OrderedDict()

    def started(self, workflow_id: str, turn: TurnProgress) -> None:
        self._settle(workflow_id, turn)

    def ended(self, workflow_id: str) -> None:
        self._settle(workflow_id, None)

    async def live(self, workflow_id: str, *, within: float) -> TurnProgress | None:
        """The workflow's running turn; waits `within` seconds for one still being submitted."""
        future = self._future(workflow_id)
        try:
            async with asyncio.timeout(within):
                return await asyncio.shield(future)
        except TimeoutError:
            return None

    def _settle(self, workflow_id: str, turn: TurnProgress | None) -> None:
        future = self._future(workflow_id)
        if future.done():  # a retry of run_turn follows the turn again: a fresh entry
            future = self._turns[workflow_id] = asyncio.get_running_loop().create_future()
        future.set_result(turn)

    def _future(self, workflow_id: str) -> asyncio.Future[TurnProgress | None]:
        if workflow_id not in self._turns:
            self._turns[workflow_id] = asyncio.get_running_loop().create_future()
            while len(self._turns) > REMEMBERED_TURNS:
                self._turns.popitem(last=False)
        self._turns.move_to_end(workflow_id)
        return self._turns[workflow_id]


def _submitted(details: Sequence[Any]) -> TurnProgress | None:
    """The turn an earlier attempt submitted, from its last heartbeat, if it got that far."""
    return TurnProgress.model_validate(details[0]) if details else None


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
