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
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError

from ally.codex import limits, protocol
from ally.codex.account import describe_login
from ally.codex.runtime import (
    CodexRejected,
    CodexRuntime,
    GoalFeed,
    InputPart,
    InputRejected,
    ItemCompleted,
    RequestPending,
    RuntimeRestarted,
    ThreadNotFound,
    TurnEnded,
    UnknownRequest,
    WorkspaceUnavailable,
)
from ally.contracts import (
    AgentAccount,
    AgentRequest,
    AgentThread,
    AnswerRequestInput,
    DayConversation,
    DayQuery,
    DayRecord,
    Decision,
    Exchange,
    ForkInput,
    GoalInput,
    GoalProgress,
    GoalStatus,
    RuntimeLocation,
    StartTurnInput,
    SteerTurnInput,
    ThreadRef,
    ThreadRelease,
    ThreadsQuery,
    TurnOutcome,
    TurnProgress,
)
from workflows.turn import TurnWorkflow

# A dead worker is noticed when its heartbeats stop (workflows/turn.py RUN_TURN_HEARTBEAT, 3 s):
# one a second, and the worker sends each at once (its throttle, `HEARTBEAT_FLUSH`, would
# otherwise hold them back for 0.8 x the timeout), so a stall of 2 s still goes unnoticed.
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_FLUSH = timedelta(seconds=1)
INTERRUPT_GRACE_S = 10.0
STEER_WAIT_S = 10.0  # a steer can arrive while the prompt is still being submitted
REMEMBERED_TURNS = 1000
# Codex starts a goal's next turn within milliseconds of the last one's end: waiting this long
# for one means it will not start any.
GOAL_NEXT_TURN_WAIT_S = 30.0
GOAL_TEXT_KEPT = 500  # of each goal turn's final message, for the progress line
_GOAL_STATUSES: dict[str, GoalStatus] = {
    "active": "active",
    "paused": "paused",
    "blocked": "blocked",
    "usageLimited": "usage_limited",
    "budgetLimited": "budget_limited",
    "complete": "complete",
}


class CodexActivities:
    def __init__(self, runtime: CodexRuntime, location: RuntimeLocation) -> None:
        self.runtime = runtime
        self.location = location
        self.turns = TurnsHere()

    def pinned(self) -> list[Callable[..., Any]]:
        """The activities that must run where the child process is."""
        # locate_runtime too: a conversation of an assistant pinned to this host asks it here.
        return [
            self.locate_runtime,
            self.run_turn,
            self.run_goal,
            self.answer_request,
            self.steer_turn,
            self.list_threads,
            self.describe_thread,
            self.fork_thread,
            self.release_thread,
            self.day_threads,
            self.account_status,
        ]

    @activity.defn(name="locate_runtime")
    async def locate_runtime(self) -> RuntimeLocation:
        return self.location

    @activity.defn(name="account_status")
    async def account_status(self) -> AgentAccount:
        """Codex's own word on its login (`account/read`), asked of the running child."""
        login = describe_login(
            protocol.GetAccountResponse.model_validate(
                await self.runtime.call("account/read", {"refreshToken": False})
            )
        )
        return AgentAccount(logged_in=login.logged_in, detail=login.detail)

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
            beating = asyncio.create_task(_heartbeat_forever(progress, self.runtime))
            try:
                await self._follow(workflow_id, progress)
            except asyncio.CancelledError:
                if await self._superseded():
                    # This attempt missed its heartbeats (a stalled loop) and a newer attempt
                    # follows the same turn: leave the turn alone, nothing went wrong with it.
                    raise _quietly("a newer attempt follows this turn") from None
                # The workflow cancelled us (/stop), or ended: interrupt Codex, then report.
                await asyncio.shield(self._interrupt_and_wait(progress))
                return await asyncio.shield(self._outcome(progress))
            finally:
                beating.cancel()
                self.turns.ended(workflow_id, progress)
        except RuntimeRestarted:
            if progress is None:
                # Nothing was submitted: the retry submits it to the restarted child.
                raise _quietly("the Codex child restarted before the prompt reached it") from None
            return await self._outcome(progress, restarted=True)
        except _Refused as refused:
            activity.logger.warning("the turn cannot run: %s", refused.reason)
            return refused.outcome()
        return await self._outcome(progress)

    @activity.defn(name="run_goal")
    async def run_goal(self, request: GoalInput) -> TurnOutcome:
        """Set a goal on the thread, then follow each turn Codex starts for it by itself as run_turn
        follows one (requests forwarded, heartbeats, the turn read back), telling the workflow as
        each ends, until the goal is no longer active or over its budget (docs/long-work.md).
        Cancelled (/goal clear, /stop): the goal is cleared and its running turn interrupted.

        The goal is heartbeated from the moment it is set, so a retry follows it on, never sets it
        twice."""
        info = activity.info()
        workflow_id = info.workflow_id
        assert workflow_id is not None, "run_goal is only ever called by a turn workflow"
        goal = _goal_so_far(info.heartbeat_details)
        fresh = goal is None
        beating: asyncio.Task[None] | None = None
        try:
            if goal is None:
                try:
                    thread_id = await self._thread(
                        StartTurnInput(thread_id=request.thread_id, settings=request.settings, text="")
                    )
                except WorkspaceUnavailable as error:
                    return _Refused(request.thread_id or "", str(error)).outcome()
                started_at = _now() - request.seconds_before
                goal = GoalProgress(thread_id=thread_id, turns=request.turns_before, started_at=started_at)
            elif goal.turn_id is not None and not self.runtime.is_turn_live(goal.thread_id, goal.turn_id):
                return await self._goal_lost(goal)
            try:
                with self.runtime.goal_feed(goal.thread_id) as feed:
                    if fresh:
                        feed.note(await self.runtime.set_goal(goal.thread_id, objective=request.objective))
                    else:  # a retry: the goal is set already; follow what runs now
                        await self._pick_up_goal(goal, feed)
                    activity.heartbeat(goal)
                    beating = asyncio.create_task(_heartbeat_forever(goal, self.runtime))
                    last = await self._pursue(workflow_id, request, goal, feed)
            except asyncio.CancelledError:
                if await self._superseded():
                    raise _quietly("a newer attempt follows this goal") from None
                return await asyncio.shield(self._clear_goal(goal))
            finally:
                if beating is not None:
                    beating.cancel()
        except RuntimeRestarted:
            if goal is None or (fresh and beating is None):
                raise _quietly("the Codex child restarted before the goal reached it") from None
            return await self._goal_lost(goal)
        if last is None:  # Codex started no turn for it
            return TurnOutcome(thread_id=goal.thread_id, turn_id="", status="completed", goal=goal)
        return last.model_copy(update={"goal": goal})

    async def _pursue(
        self, workflow_id: str, request: GoalInput, goal: GoalProgress, feed: GoalFeed
    ) -> TurnOutcome | None:
        """Each turn Codex starts for the goal, followed to its end; the last one's outcome."""
        caller = activity.client().get_workflow_handle(workflow_id)
        deadline = goal.started_at + request.max_seconds
        last: TurnOutcome | None = None
        while True:
            try:
                async with asyncio.timeout(max(deadline - _now(), 0)):
                    turn_id = await feed.next_turn(idle_s=GOAL_NEXT_TURN_WAIT_S)
            except TimeoutError:
                await self._over_budget(goal, "hours")
                break
            if turn_id is None:
                break
            if turn_id != goal.turn_id:
                goal.turns += 1
            goal.turn_id, goal.turn_status, goal.turn_text = turn_id, None, ""
            if goal.turns >= request.max_turns and feed.active:
                # The last turn the budget allows: it finishes, and Codex starts no next one.
                await self._over_budget(goal, "turns")
            progress = TurnProgress(thread_id=goal.thread_id, turn_id=turn_id)
            self.turns.started(workflow_id, progress)
            try:
                async with asyncio.timeout(max(deadline - _now(), 0)):
                    await self._follow(workflow_id, progress)
            except TimeoutError:
                await self._over_budget(goal, "hours")
                await self._interrupt_and_wait(progress)
            finally:
                self.turns.ended(workflow_id, progress)
            last = await self._outcome(progress)
            self._note_goal(goal, feed, last)
            await caller.signal(TurnWorkflow.goal_progress, goal)
            if last.status != "completed" or goal.status != "active":
                break
        if goal.over_budget is not None and (late := self.runtime.active_turn(goal.thread_id)):
            # Started just as the budget ran out: not followed, so not left running either.
            await self._interrupt_and_wait(TurnProgress(thread_id=goal.thread_id, turn_id=late))
        self._note_goal(goal, feed, last, final=True)
        return last

    async def _pick_up_goal(self, goal: GoalProgress, feed: GoalFeed) -> None:
        """A retry of run_goal: the turn the last attempt followed, if it still runs, or the one
        Codex started since."""
        running = self.runtime.active_turn(goal.thread_id)
        if goal.turn_id is not None and running == goal.turn_id:
            feed.began.appendleft(goal.turn_id)
        elif running is not None:
            feed.began.appendleft(running)
        if (now := await self.runtime.get_goal(goal.thread_id)) is not None:
            feed.note(now)
        else:
            feed.cleared = True

    async def _over_budget(self, goal: GoalProgress, why: Literal["turns", "hours"]) -> None:
        goal.over_budget = why
        with contextlib.suppress(CodexRejected):
            await self.runtime.set_goal(goal.thread_id, status=protocol.ThreadGoalStatus.budget_limited)

    def _note_goal(
        self, goal: GoalProgress, feed: GoalFeed, last: TurnOutcome | None, *, final: bool = False
    ) -> None:
        if feed.goal is not None:
            goal.status = _GOAL_STATUSES.get(feed.goal.status.value, "active")
            goal.tokens = feed.goal.tokens_used
        if feed.cleared:
            goal.status = "cleared"
        elif final and goal.status == "active" and (last is None or last.status == "completed"):
            goal.status = "idle"  # still active, but Codex started no next turn for it
        goal.seconds = _now() - goal.started_at
        if last is not None:
            goal.turn_status = last.status
            text = last.final_text
            goal.turn_text = text if len(text) <= GOAL_TEXT_KEPT else text[: GOAL_TEXT_KEPT - 1] + "…"

    async def _clear_goal(self, goal: GoalProgress) -> TurnOutcome:
        """/goal clear or /stop: Codex's own clear (no next turn), then the running turn interrupted."""
        with contextlib.suppress(Exception):
            await self.runtime.clear_goal(goal.thread_id)
        goal.status = "cleared"
        goal.seconds = _now() - goal.started_at
        turn_id = self.runtime.active_turn(goal.thread_id) or goal.turn_id
        if turn_id is None:
            return TurnOutcome(thread_id=goal.thread_id, turn_id="", status="interrupted", goal=goal)
        progress = TurnProgress(thread_id=goal.thread_id, turn_id=turn_id)
        await self._interrupt_and_wait(progress)
        outcome = await self._outcome(progress)
        goal.turn_status = outcome.status
        return outcome.model_copy(update={"goal": goal})

    async def _goal_lost(self, goal: GoalProgress) -> TurnOutcome:
        """The Codex child restarted under the goal: its turn reads back interrupted. The goal is
        paused, so that nothing runs for it unattended; /goal TEXT sets it again."""
        with contextlib.suppress(Exception):
            await self.runtime.set_goal(goal.thread_id, status=protocol.ThreadGoalStatus.paused)
            # Loading the thread into the new child may already have started a turn for the goal,
            # which a pause would let run to its end, unattended: stop it too.
            await asyncio.sleep(GOAL_SETTLE_S)
            if (started := self.runtime.active_turn(goal.thread_id)) is not None:
                await self.runtime.interrupt(goal.thread_id, started)
        goal.status = "paused"
        if goal.turn_id is None:
            return TurnOutcome(
                thread_id=goal.thread_id, turn_id="", status="interrupted", runtime_restarted=True, goal=goal
            )
        outcome = await self._outcome(
            TurnProgress(thread_id=goal.thread_id, turn_id=goal.turn_id), restarted=True
        )
        return outcome.model_copy(update={"goal": goal})

    async def _superseded(self) -> bool:
        """Cancelled because this attempt timed out while a newer one took over, rather than by the
        workflow (/stop: cancel requested) or its end (the turn is followed by nobody now)? The
        worker shutting down counts too: the retry on the next worker reads the turn back."""
        details = activity.cancellation_details()
        if details is None or details.cancel_requested:
            return False
        if details.worker_shutdown:
            return True
        info = activity.info()
        try:
            handle = activity.client().get_workflow_handle(info.workflow_id or "")
            described = await handle.describe()
        except RPCError:
            return False
        if described.status != WorkflowExecutionStatus.RUNNING:
            return False
        return any(
            pending.activity_id == info.activity_id and pending.attempt > info.attempt
            for pending in described.raw_description.pending_activities
        )

    @activity.defn(name="answer_request")
    async def answer_request(self, request: AnswerRequestInput) -> None:
        """Answer Codex in its own terms: the turn sends the neutral decision and the request."""
        try:
            await self.runtime.answer_request(request.key, answer_of(request))
        except UnknownRequest as error:
            # Handled by the workflow (the card says the request expired): one log line, no trace.
            raise ApplicationError(
                str(error),
                type="UnknownRequest",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            ) from None

    @activity.defn(name="steer_turn")
    async def steer_turn(self, request: SteerTurnInput) -> str:
        """Add text to the turn the calling workflow runs here, once it has been submitted."""
        workflow_id = activity.info().workflow_id
        assert workflow_id is not None, "steer_turn is only ever called by a turn workflow"
        turn = await self.turns.live(workflow_id, within=STEER_WAIT_S)
        if turn is None:
            raise ApplicationError(
                "the turn is not running on this host",
                type="TurnNotLive",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            )
        return await self.runtime.steer(turn.thread_id, turn.turn_id, request.text)

    # --- threads (docs/continuity.md) ------------------------------------------------------------

    @activity.defn(name="list_threads")
    async def list_threads(self, query: ThreadsQuery) -> list[AgentThread]:
        """The workspace's recent threads from Codex's own store: a terminal's appear too."""
        return [
            _agent_thread(thread) for thread in await self.runtime.list_threads(query.cwd, limit=query.limit)
        ]

    @activity.defn(name="describe_thread")
    async def describe_thread(self, ref: ThreadRef) -> AgentThread:
        """One thread with its latest answer, for the chat that picks it up."""
        try:
            read = await self.runtime.call("thread/read", {"threadId": ref.thread_id, "includeTurns": False})
        except CodexRejected as error:
            raise ApplicationError(
                f"no thread {ref.thread_id} here: {error.message}",
                type="ThreadNotFound",
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        thread = _agent_thread(protocol.ThreadReadResponse.model_validate(read).thread)
        recent = await self.runtime.read_thread(ref.thread_id, last=1)
        if recent.turns:
            thread.last_answer = recent.turns[-1].final_text
        return thread

    @activity.defn(name="fork_thread")
    async def fork_thread(self, request: ForkInput) -> AgentThread:
        return _agent_thread(await self.runtime.fork_thread(request.thread_id, request.settings))

    @activity.defn(name="release_thread")
    async def release_thread(self, ref: ThreadRef) -> ThreadRelease:
        """Let go of the thread's writer lock, so a terminal can continue it."""
        released = await self.runtime.release_thread(ref.thread_id)
        return ThreadRelease(released=released, codex_home=str(self.runtime.codex_home))

    @activity.defn(name="day_threads")
    async def day_threads(self, query: DayQuery) -> DayRecord:
        """The conversations of one day in one workspace, from Codex's own record (`thread/list`,
        then each thread's turns): what was asked and what was answered, nothing else."""
        start, end, day = day_bounds(query)
        record = DayRecord(day=day)
        left = query.max_chars
        for thread in await self.runtime.threads_updated_since(query.cwd, start):
            if thread.preview.startswith(query.skip_marker):
                continue  # a digest's own thread
            snapshot = await self.runtime.read_thread(thread.id)
            exchanges = []
            for turn in snapshot.turns:
                if turn.started_at is None or not start <= turn.started_at < end:
                    continue
                if turn.user_text.startswith(query.skip_marker):
                    continue
                exchange = Exchange(
                    asked=turn.user_text[:left],
                    answered=turn.final_text[: max(left - len(turn.user_text), 0)],
                )
                left -= len(exchange.asked) + len(exchange.answered)
                exchanges.append(exchange)
                if left <= 0:
                    record.truncated = True
                    break
            if exchanges:
                # Oldest conversation first, as the day went.
                record.conversations.insert(0, DayConversation(thread_id=thread.id, exchanges=exchanges))
            if left <= 0:
                break
        return record

    # --- steps of run_turn ------------------------------------------------------------------------

    async def _submit(self, request: StartTurnInput) -> TurnProgress:
        try:
            thread_id = await self._thread(request)
        except WorkspaceUnavailable as error:
            raise _Refused(request.thread_id or "", str(error)) from None
        inputs = [InputPart(type="text", text=request.text)]
        inputs += [InputPart(type="localImage", path=path) for path in request.local_images]
        try:
            turn_id = await self.runtime.start_turn(
                thread_id, inputs, plan_mode=request.plan_mode, effort=request.settings.reasoning_effort
            )
        except InputRejected as error:
            raise _Refused.input(thread_id, error) from None
        return TurnProgress(thread_id=thread_id, turn_id=turn_id)

    async def _thread(self, request: StartTurnInput) -> str:
        try:
            return await self.runtime.ensure_thread(request.thread_id, request.settings)
        except ThreadNotFound:
            # Codex stores a thread only with its first message; one that never got a turn (or
            # whose store is gone) cannot be resumed, so the chat continues on a fresh thread.
            activity.logger.warning("thread %s cannot be resumed; starting a new one", request.thread_id)
            return await self.runtime.ensure_thread(None, request.settings)

    async def _follow(self, workflow_id: str, progress: TurnProgress) -> None:
        caller = activity.client().get_workflow_handle(workflow_id)
        async for event in self.runtime.watch_turn(progress.thread_id, progress.turn_id):
            if isinstance(event, RequestPending):
                await caller.signal(TurnWorkflow.agent_request, _as_agent_request(event))
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
        kind = limits.error_kind(found.error_info) if status == "failed" else None
        tracker = self.runtime.progress(turn.turn_id)
        return TurnOutcome(
            thread_id=turn.thread_id,
            turn_id=turn.turn_id,
            status=status,
            final_text=found.final_text,
            error=found.error,
            runtime_restarted=restarted and status != "completed",
            error_kind=kind,
            retry_at=limits.reset_time(
                kind,
                found.error or "",
                self.runtime.rate_limits,
                self.runtime.rate_limits_at,
                now=datetime.now().timestamp(),
            ),
            activity=tracker.snapshot() if tracker is not None else turn.activity,
            changed_files=tracker.changed_files if tracker is not None else [],
            viewed_images=tracker.viewed_images if tracker is not None else [],
        )


# How long a thread just loaded into a restarted child is given to start a goal turn on its own.
GOAL_SETTLE_S = 0.5


class _Refused(Exception):
    """Codex cannot take this turn as asked (a prompt too long, a workspace that cannot be made):
    the turn's outcome, said in words, not a failure to retry — the same request fails the same way."""

    def __init__(self, thread_id: str, reason: str, *, input_refused: bool = False) -> None:
        super().__init__(reason)
        self.thread_id = thread_id
        self.reason = reason
        self.input_refused = input_refused

    @classmethod
    def input(cls, thread_id: str, error: InputRejected) -> _Refused:
        too_long = error.too_long
        if too_long is not None:
            actual, limit = too_long
            reason = (
                f"This message is too long for Codex: it has {actual:,} characters, and Codex takes "
                f"at most {limit:,} in one message. Send a shorter one, or save the text as a file in "
                "the workspace and ask Codex to read it."
            )
        else:
            reason = f"Codex did not accept this message: {error.message}"
        return cls(thread_id, reason, input_refused=True)

    def outcome(self) -> TurnOutcome:
        return TurnOutcome(
            thread_id=self.thread_id,
            turn_id="",
            status="failed",
            error=self.reason,
            input_refused=self.input_refused,
        )


def _quietly(message: str) -> ApplicationError:
    """A failure the retry handles (or the server ignores, for an attempt already replaced): logged
    at debug level by the SDK, not as a warning with a traceback."""
    return ApplicationError(message, type="RetryQuietly", category=ApplicationErrorCategory.BENIGN)


class TurnsHere:
    """Which Codex turn each turn workflow runs on this host, so a steer needs no ids: the workflow
    learns its thread and turn ids only when `run_turn` reports the outcome."""

    def __init__(self) -> None:
        self._turns: OrderedDict[str, asyncio.Future[TurnProgress | None]] = OrderedDict()

    def started(self, workflow_id: str, turn: TurnProgress) -> None:
        self._settle(workflow_id, turn)

    def ended(self, workflow_id: str, turn: TurnProgress) -> None:
        current = self._turns.get(workflow_id)
        if current is not None and current.done() and current.result() is not turn:
            return  # a newer attempt of run_turn follows this turn now: it stays live
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


def day_bounds(query: DayQuery) -> tuple[float, float, str]:
    """[start, end) of the query's day in unix time, and the day as YYYY-MM-DD."""
    at = datetime.fromisoformat(query.at).astimezone(ZoneInfo(query.time_zone))
    day = at.date() - (timedelta(days=1) if query.which == "yesterday" else timedelta(0))
    start = datetime.combine(day, time(), tzinfo=at.tzinfo)
    # Midnight to midnight in the zone: a day with a daylight-saving change is 23 or 25 hours.
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=at.tzinfo)
    return start.timestamp(), end.timestamp(), day.isoformat()


def _now() -> float:
    return datetime.now().timestamp()


def _goal_so_far(details: Sequence[Any]) -> GoalProgress | None:
    """The goal an earlier attempt of run_goal set, from its last heartbeat, if it got that far."""
    return GoalProgress.model_validate(details[0]) if details else None


def _submitted(details: Sequence[Any]) -> TurnProgress | None:
    """The turn an earlier attempt submitted, from its last heartbeat, if it got that far."""
    return TurnProgress.model_validate(details[0]) if details else None


async def _heartbeat_forever(progress: TurnProgress | GoalProgress, runtime: CodexRuntime) -> None:
    """Each beat of a turn also carries what Codex is doing now: the chat's progress card reads it
    from the pending activity, so progress costs the turn's history nothing (docs/architecture.md)."""
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY_S)
        if isinstance(progress, TurnProgress) and (tracker := runtime.progress(progress.turn_id)) is not None:
            progress.activity = tracker.snapshot()
        activity.heartbeat(progress)


def _agent_thread(thread: protocol.Thread) -> AgentThread:
    title = thread.name or " ".join(thread.preview.split())
    return AgentThread(
        thread_id=thread.id,
        title=title[:80],
        updated_at=float(thread.updated_at),
        forked_from=thread.forked_from_id,
        cwd=str(thread.cwd.root),
    )


def _as_agent_request(event: RequestPending) -> AgentRequest:
    """The runtime's view of a waiting request, trimmed to the contract the workflow keeps."""
    fields = event.model_dump(include=set(AgentRequest.model_fields))
    if event.kind == "permissions":
        fields["permissions"] = event.params.get("permissions") or {}
    fields["additional_permissions"] = event.params.get("additionalPermissions") or {}
    return AgentRequest.model_validate(fields)


def answer_of(request: AnswerRequestInput) -> dict[str, Any]:
    if request.result is not None:  # scheduled before an upgrade, with the answer already built
        return request.result
    if request.request is None or request.decision is None:
        raise ApplicationError(
            "an answer needs the request and its decision", type="BadAnswer", non_retryable=True
        )
    return wire_answer(request.request, request.decision)


def wire_answer(request: AgentRequest, decision: Decision) -> dict[str, Any]:
    """The JSON-RPC result Codex expects for each kind of request (docs/codex-app-server.md §6)."""
    if request.kind == "user_input":
        return {"answers": {qid: {"answers": answers} for qid, answers in decision.answers.items()}}
    if request.kind == "permissions":
        granted = decision.decision in ("accept", "acceptForSession")
        scope = "session" if decision.decision == "acceptForSession" else "turn"
        # Granting = handing back what was asked for; {} denies it all (docs/codex-app-server.md §6).
        return {"permissions": request.permissions if granted else {}, "scope": scope}
    if request.kind == "elicitation":
        action = {"accept": "accept", "acceptForSession": "accept", "decline": "decline"}.get(
            decision.decision or "", "cancel"
        )
        return {"action": action, "content": None}
    return {"decision": decision.decision or "decline"}
