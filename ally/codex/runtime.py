"""The runtime host's one Codex child, shared by every chat, and the API the Temporal activities call.

One `codex app-server` serves all threads of this host (each loaded thread costs ~2 MiB,
docs/codex-app-server.md §10). A supervisor task restarts it with backoff when it dies; each child
is a new `generation`. What a dead child leaves behind (docs/codex-app-server.md §7, §8): its
in-flight turns read back `interrupted`, its pending approvals are gone for good, its threads must
be resumed. So on a death the runtime fails every watcher with `RuntimeRestarted`, forgets the
pending requests and the loaded set, and the next call on a thread resumes it.

Delivery reads the truth with `read_thread` (`thread/turns/list`), never from accumulated events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError

from ally.codex import protocol
from ally.codex.errors import (
    CodexRejected,
    CodexRuntimeError,
    CodexUnresponsive,
    InputRejected,
    InvalidAnswer,
    RuntimeNotRunning,
    RuntimeRestarted,
    ThreadLocked,
    ThreadNotFound,
    TurnNotActive,
    UnknownRequest,
    UnknownTurn,
    WorkspaceUnavailable,
)
from ally.codex.goals import GoalFeed
from ally.codex.journal import TurnJournal, user_text
from ally.codex.models import (
    InputPart,
    ItemCompleted,
    ReasoningEffort,
    RequestKind,
    RequestPending,
    RequestResolved,
    RuntimeHealth,
    RuntimeState,
    ThreadSettings,
    ThreadSnapshot,
    TurnEnded,
    TurnEvent,
    TurnSnapshot,
)
from ally.codex.process import CodexProcess, CodexStartFailed
from ally.codex.progress import ProgressTracker
from ally.codex.rpc import METHOD_NOT_FOUND, ConnectionClosed, JsonRpcError, RequestTimeout
from ally.persona import PERSONA_FILE, prepare_workspace

__all__ = [  # the runtime's public surface, so activities import from one place
    "CodexRejected",
    "CodexRuntime",
    "CodexRuntimeError",
    "CodexStartFailed",
    "CodexUnresponsive",
    "GoalFeed",
    "InputPart",
    "InputRejected",
    "InvalidAnswer",
    "ItemCompleted",
    "ProgressTracker",
    "RequestPending",
    "RequestResolved",
    "RuntimeHealth",
    "RuntimeNotRunning",
    "RuntimeRestarted",
    "ThreadLocked",
    "ThreadNotFound",
    "ThreadSettings",
    "ThreadSnapshot",
    "TurnEnded",
    "TurnEvent",
    "TurnNotActive",
    "TurnSnapshot",
    "UnknownRequest",
    "UnknownTurn",
    "WorkspaceUnavailable",
]

log = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)

INVALID_PARAMS = -32602
SERVER_OVERLOADED = -32001  # "Server overloaded; retry later." (docs/codex-app-server.md §1)

# Server requests we surface, by method; anything else is refused at once (docs/codex-app-server.md §6).
REQUEST_KINDS: dict[str, RequestKind] = {
    "item/commandExecution/requestApproval": "command",
    "item/fileChange/requestApproval": "file_change",
    "item/permissions/requestApproval": "permissions",
    "item/tool/requestUserInput": "user_input",
    "mcpServer/elicitation/request": "elicitation",
}
_PARAMS: dict[RequestKind, type[BaseModel]] = {
    "command": protocol.CommandExecutionRequestApprovalParams,
    "file_change": protocol.FileChangeRequestApprovalParams,
    "permissions": protocol.PermissionsRequestApprovalParams,
    "user_input": protocol.ToolRequestUserInputParams,
    "elicitation": protocol.McpServerElicitationRequestParams,
}
_RESULTS: dict[RequestKind, type[BaseModel]] = {
    "command": protocol.CommandExecutionRequestApprovalResponse,
    "file_change": protocol.FileChangeRequestApprovalResponse,
    "permissions": protocol.PermissionsRequestApprovalResponse,
    "user_input": protocol.ToolRequestUserInputResponse,
    "elicitation": protocol.McpServerElicitationRequestResponse,
}

_LOADING_METHODS = frozenset({"thread/start", "thread/resume", "thread/fork"})
# Calls that carry what a person wrote: -32602 there means Codex refuses that text (too long).
_INPUT_METHODS = frozenset({"turn/start", "turn/steer"})

# What thread/turns/list answers for a thread whose rollout is not written yet (see _turns_page).
_NOT_MATERIALIZED = (
    "is not materialized yet",
    "list_turns is not supported yet",
    "failed to read session metadata",
)

# `thread/resume` while the previous owner of the thread is still exiting fails with "already has an
# active writer"; an orphaned server lets go ~1.3 s after its stdin closes (docs/codex-app-server.md §1, §8).
WRITER_LOCK_RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.5)

# A thread this child has loaded holds Codex's writer lock on it, so a terminal's `codex resume` of
# it fails until the thread is unloaded. `thread/unsubscribe` unloads it only after the thread's
# `thread_unload_delay_secs` (30 min by default); every thread here is given this short one, which
# keeps a thread we are subscribed to loaded all the same (docs/continuity.md "Chat -> terminal").
UNLOAD_DELAY_S = 1
RELEASE_WAIT_S = 15.0
# `thread/list` shows only interactive sources unless told; a terminal's `codex exec` is not one.
LISTED_SOURCES = ["cli", "vscode", "exec", "appServer"]


@dataclass(slots=True)
class _Pending:
    request: RequestPending
    future: asyncio.Future[dict[str, Any]]


class CodexRuntime:
    """Owns one `codex app-server` child at a time; `start()` it, then call the thread/turn API."""

    def __init__(
        self,
        binary: Path,
        codex_home: Path,
        *,
        restart_backoff: Sequence[float] = (0.2, 0.5, 1, 2, 5),
        stable_after_s: float = 60.0,
        start_timeout_s: float = 30.0,
        request_timeout_s: float = 60.0,
        turn_retention_s: float = 900.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary
        self.codex_home = codex_home
        self.restart_backoff = tuple(restart_backoff) or (1.0,)
        self.stable_after_s = stable_after_s  # a child that lived this long resets the backoff
        self.start_timeout_s = start_timeout_s
        self.request_timeout_s = request_timeout_s
        self._env = dict(env or {})
        self._journal = TurnJournal(retention_s=turn_retention_s)
        self._child: CodexProcess | None = None
        self._generation = 0
        self._restarts = 0
        self._state: RuntimeState = "stopped"
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._loaded: dict[str, str] = {}  # thread id -> its model, for threads loaded in this child
        # thread id -> the config overrides it was last given, to give again when it is resumed:
        # kept across children, so a thread a restart unloaded comes back with its MCP servers.
        self._config: dict[str, dict[str, Any]] = {}
        self._thread_locks: dict[str, asyncio.Lock] = {}
        self._pending: dict[str, _Pending] = {}
        self._goal_feeds: dict[str, list[GoalFeed]] = {}  # thread id -> who follows its goal
        # In every request key: a runtime that restarted (a new worker process) counts generations
        # from 1 again, and without it a stale answer to "1:0" would answer a new child's "1:0",
        # a request of another turn that nobody has seen.
        self._instance = uuid.uuid4().hex[:8]
        self._version: str | None = None
        self._version_mismatch: str | None = None
        # The account's latest rate-limit snapshot (`account/rateLimits/updated`) and when it came.
        self.rate_limits: dict[str, Any] | None = None
        self.rate_limits_at: float | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    async def start(self) -> None:
        """Spawn the first child; raises `CodexStartFailed` if it does not come up."""
        if self._supervisor is not None:
            return
        self._stopping = False
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="codex-runtime-supervisor")

    async def stop(self) -> None:
        """Stop supervising and stop the child (stdin closed, then its process group SIGKILLed)."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        child, self._child = self._child, None
        self._child_gone(self._generation)
        self._state = "stopped"
        self._ready.set()  # wakes calls waiting for a restart; they find the runtime stopped
        if child is not None:
            await child.stop()

    def health(self) -> RuntimeHealth:
        child = self._child
        return RuntimeHealth(
            state=self._state,
            pid=child.pid if child and self._state == "running" else None,
            generation=self._generation,
            restarts=self._restarts,
            started_at=child.started_at if child else None,
            version=self._version,
            version_mismatch=self._version_mismatch,
            loaded_threads=len(self._loaded),
            pending_requests=sum(1 for p in self._pending.values() if not p.future.done()),
        )

    async def _spawn(self) -> None:
        self._generation = generation = self._generation + 1
        self._journal.generation = generation
        # Handlers are bound to their generation: a late message from a dead child changes nothing.
        child = CodexProcess(
            self.binary,
            self.codex_home,
            env=self._env,
            on_notification=lambda method, params: self._on_notification(generation, method, params),
            on_request=lambda method, request_id, params: self._on_server_request(
                generation, method, request_id, params
            ),
            on_close=lambda: self._connection_lost(generation),
        )
        await child.start(timeout_s=self.start_timeout_s)
        self._child = child
        self._version, self._version_mismatch = child.version, child.version_mismatch
        self._state = "running"
        self._ready.set()
        log.info("codex child %s up (generation %d, %s)", child.pid, generation, child.version)

    async def _supervise(self) -> None:
        attempt = 0
        while not self._stopping:
            child = self._child
            assert child is not None
            exited = asyncio.ensure_future(child.wait())
            closed = asyncio.ensure_future(child.rpc.wait_closed())
            try:
                await asyncio.wait((exited, closed), return_when=asyncio.FIRST_COMPLETED)
                # Exited: let the reader drain what the child wrote before it died. Stdout closed
                # but the child lives on: it cannot talk to us any more, stop() below kills it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(closed), 0.5)
            finally:
                closed.cancel()
                if self._stopping:
                    exited.cancel()
            if self._stopping:
                return
            lived = time.time() - child.started_at
            log.warning(
                "codex child %s gone (exit code %s) after %.1f s; restarting",
                child.pid,
                child.returncode,
                lived,
            )
            self._state = "restarting"
            self._child_gone(self._generation)
            # Kill what is left of its group (a command it started would keep running otherwise).
            await child.stop(grace=0 if exited.done() else 2.0)
            if lived >= self.stable_after_s:
                attempt = 0
            while not self._stopping:
                await asyncio.sleep(self.restart_backoff[min(attempt, len(self.restart_backoff) - 1)])
                attempt += 1
                try:
                    await self._spawn()
                except Exception as error:  # keep supervising whatever went wrong
                    log.error("codex child did not restart: %s", error)
                    continue
                self._restarts += 1
                break

    def _connection_lost(self, generation: int) -> None:
        # Runs as the child's stdout closes, before its in-flight calls fail: a caller that gets
        # RuntimeRestarted and calls again waits for the next child instead of reaching this one.
        if generation == self._generation and not self._stopping:
            self._state = "restarting"
            self._ready.clear()

    def _child_gone(self, generation: int) -> None:
        self._ready.clear()
        self._journal.lose_generation(generation)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()  # the rpc handler task ends without answering
        self._pending.clear()
        for feeds in self._goal_feeds.values():
            for feed in feeds:
                feed.lose()
        self._goal_feeds.clear()
        self._loaded.clear()
        self._thread_locks = {tid: lock for tid, lock in self._thread_locks.items() if lock.locked()}

    async def _running_child(self) -> CodexProcess:
        if self._state == "stopped":
            raise RuntimeNotRunning("the Codex runtime is stopped; start() it first")
        if not self._ready.is_set():
            wait = self.start_timeout_s + max(self.restart_backoff)
            try:
                await asyncio.wait_for(self._ready.wait(), wait)
            except TimeoutError:
                raise RuntimeNotRunning(f"the Codex child did not come back within {wait:.0f} s") from None
        if self._child is None:
            raise RuntimeNotRunning("the Codex runtime was stopped")
        return self._child

    async def _call(self, method: str, params: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        """One request to the current child, its failures mapped to the runtime's errors."""
        for delay in (0.05, 0.1, 0.2, 0.5, 1.0, None):
            child = await self._running_child()
            try:
                return await child.rpc.request(method, params, timeout_s=timeout_s or self.request_timeout_s)
            except ConnectionClosed as error:
                raise RuntimeRestarted(f"the Codex child exited during {method}") from error
            except RequestTimeout as error:
                raise CodexUnresponsive(str(error)) from error
            except JsonRpcError as error:
                if error.code == SERVER_OVERLOADED and delay is not None:
                    await asyncio.sleep(delay)
                    continue
                _raise_rejected(method, error)
        raise AssertionError("unreachable")

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """A raw request to the current child, for protocol methods this runtime does not wrap
        (e.g. `thread/name/set`); the result is returned unvalidated."""
        generation = self._generation
        result = await self._call(method, params)
        # thread/started follows the thread/start answer (observed): note the thread as loaded
        # now, or a start_turn right after would try to resume a thread with no rollout yet.
        thread = result.get("thread") if isinstance(result, dict) else None
        if method in _LOADING_METHODS and isinstance(thread, dict) and generation == self._generation:
            self._loaded.setdefault(thread["id"], result.get("model") or thread.get("model") or "")
        return result

    # --- threads ------------------------------------------------------------------------------

    async def ensure_thread(self, thread_id: str | None, settings: ThreadSettings) -> str:
        """A thread loaded in the current child: a new one (`thread/start`) when `thread_id` is None,
        else the stored one resumed, unless this child already has it loaded.

        A new thread's workspace is prepared first: `settings.cwd` created, and the persona
        (`settings.agents_md`) written to its AGENTS.md unless one is there (`WorkspaceUnavailable`
        when that fails). A thread loaded in a live child keeps the MCP servers and config it was
        loaded with; changed ones take effect in new threads and on the next resume.
        """
        config = {**thread_config(settings), "thread_unload_delay_secs": UNLOAD_DELAY_S}
        if thread_id is None:
            await _prepare_workspace(settings)
            params: dict[str, Any] = {
                "cwd": settings.cwd,
                "approvalPolicy": settings.approval_policy,
                "sandbox": settings.sandbox,
            }
            if settings.model:
                params["model"] = settings.model
            if settings.developer_instructions:
                params["developerInstructions"] = settings.developer_instructions
            if config:
                params["config"] = config
            generation = self._generation
            started = _validated(protocol.ThreadStartResponse, await self._call("thread/start", params))
            self._config[started.thread.id] = config
            if generation == self._generation:
                self._loaded[started.thread.id] = started.model
            return started.thread.id
        self._config[thread_id] = config
        await self._ensure_loaded(thread_id)
        return thread_id

    async def _ensure_loaded(self, thread_id: str) -> str:
        """The thread's model; resumes it first if this child has not loaded it."""
        if (model := self._loaded.get(thread_id)) is not None:
            return model
        lock = self._thread_locks.setdefault(thread_id, asyncio.Lock())
        async with lock:
            if (model := self._loaded.get(thread_id)) is not None:
                return model
            # excludeTurns: we page turns with thread/turns/list when we need them
            # (docs/codex-app-server.md §3).
            params: dict[str, Any] = {"threadId": thread_id, "excludeTurns": True}
            # A thread's config (its MCP servers among it) is not stored with it: a resume without
            # it loads the thread without them (docs/codex-app-server.md §12).
            if config := self._config.get(thread_id):
                params["config"] = config
            for delay in (*WRITER_LOCK_RETRY_DELAYS, None):
                generation = self._generation
                try:
                    result = await self._call("thread/resume", params)
                except ThreadLocked:
                    if delay is None:
                        raise
                    await asyncio.sleep(delay)
                    continue
                resumed = _validated(protocol.ThreadResumeResponse, result)
                if generation == self._generation:
                    self._loaded[thread_id] = resumed.model
                return resumed.model
        raise AssertionError("unreachable")

    async def list_threads(self, cwd: str, *, limit: int = 10) -> list[protocol.Thread]:
        """The workspace's stored threads, most recently updated first, whoever started them."""
        params: dict[str, Any] = {
            "cwd": cwd,
            "limit": limit,
            "sortKey": "updated_at",
            "sourceKinds": LISTED_SOURCES,
        }
        return _validated(protocol.ThreadListResponse, await self._call("thread/list", params)).data

    async def fork_thread(self, thread_id: str, settings: ThreadSettings) -> protocol.Thread:
        """A new thread with `thread_id`'s history, loaded here; the original stays as it was."""
        config = {**thread_config(settings), "thread_unload_delay_secs": UNLOAD_DELAY_S}
        params: dict[str, Any] = {"threadId": thread_id, "excludeTurns": True, "cwd": settings.cwd}
        if config:
            params["config"] = config
        generation = self._generation
        forked = _validated(protocol.ThreadForkResponse, await self._call("thread/fork", params))
        self._config[forked.thread.id] = config
        if generation == self._generation:
            self._loaded[forked.thread.id] = forked.model
        return forked.thread

    async def release_thread(self, thread_id: str) -> bool:
        """Unload the thread from this child, so another Codex process (a terminal) may write it;
        False when it is still loaded after `RELEASE_WAIT_S` (loaded with the default unload delay,
        by a child started before this release existed)."""
        if thread_id not in self._loaded:
            return True
        await self._call("thread/unsubscribe", {"threadId": thread_id})
        # `thread/closed` (which drops it from `_loaded`) follows once the unload delay has passed.
        for _ in range(int(RELEASE_WAIT_S / 0.1)):
            if thread_id not in self._loaded:
                return True
            await asyncio.sleep(0.1)
        return thread_id not in self._loaded

    async def read_thread(self, thread_id: str, *, last: int | None = None) -> ThreadSnapshot:
        """The thread's persisted turns (all, or the `last` n), oldest first. Works on threads no
        child has loaded (docs/codex-app-server.md §3); in-progress turns show only their completed items."""
        turns: list[protocol.Turn] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"threadId": thread_id, "itemsView": "summary", "sortDirection": "desc"}
            if cursor:
                params["cursor"] = cursor
            if last is not None:
                params["limit"] = last - len(turns)
            page = await self._turns_page(thread_id, params)
            if page is None:
                break
            turns.extend(page.data)
            cursor = page.next_cursor
            if not cursor or not page.data or (last is not None and len(turns) >= last):
                break
        return ThreadSnapshot(thread_id=thread_id, turns=[_snapshot(turn) for turn in reversed(turns)])

    async def threads_updated_since(self, cwd: str, updated_since: float) -> list[protocol.Thread]:
        """The stored threads whose working directory is `cwd`, updated at or after
        `updated_since` (unix time), newest first (`thread/list`, docs/codex-app-server.md §3)."""
        found: list[protocol.Thread] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"cwd": cwd, "sortKey": "updated_at", "limit": 50, "sourceKinds": []}
            if cursor:
                params["cursor"] = cursor
            page = _validated(protocol.ThreadListResponse, await self._call("thread/list", params))
            fresh = [thread for thread in page.data if thread.updated_at >= updated_since]
            found.extend(fresh)
            cursor = page.next_cursor
            if not cursor or len(fresh) < len(page.data):
                return found

    async def _turns_page(
        self, thread_id: str, params: dict[str, Any]
    ) -> protocol.ThreadTurnsListResponse | None:
        """One page of thread/turns/list; None while the thread has no persisted turn yet.

        A thread's rollout is written with its first user message. Before that, 0.169.0 answers
        "thread X is not materialized yet"; in the few ms after the first turn/start it answers
        "list_turns is not supported yet" (-32601) or "failed to read session metadata <path>:
        rollout at <path> is empty" (-32603).
        We wait those ms out when a turn is running (all observed, not documented).
        """
        for delay in (0.02, 0.05, 0.1, 0.2, 0.5, None):
            try:
                return _validated(
                    protocol.ThreadTurnsListResponse, await self._call("thread/turns/list", params)
                )
            except CodexRejected as error:
                if not any(sign in error.message for sign in _NOT_MATERIALIZED):
                    raise
                if delay is None or self._journal.active_turn(thread_id) is None:
                    return None
                await asyncio.sleep(delay)
        return None

    # --- turns --------------------------------------------------------------------------------

    async def start_turn(
        self,
        thread_id: str,
        inputs: Sequence[InputPart],
        *,
        plan_mode: bool = False,
        effort: ReasoningEffort | None = None,
    ) -> str:
        """Start a turn and return its id. On a busy thread Codex starts nothing: it appends the
        input to the active turn like a steer and returns that turn's id
        (docs/codex-app-server.md §4) — compare.

        `effort` is the model's reasoning effort for this turn (None: the model's default); it
        is given with every turn, as the collaboration mode is (docs/codex-app-server.md §14)."""
        model = await self._ensure_loaded(thread_id)
        params = {
            "threadId": thread_id,
            "input": [item.to_wire() for item in inputs],
            # Always say which mode: a Plan-mode turn/start persists to later turns that omit
            # collaborationMode (observed on 0.169.0). Plan mode is what lets request_user_input
            # reach us (docs/codex-app-server.md §6); it needs the experimentalApi capability (process.py).
            # The mode's reasoning_effort decides the turn's effort, over turn/start's `effort` and
            # any configured default; null means the model's default (docs/codex-app-server.md §14).
            "collaborationMode": {
                "mode": "plan" if plan_mode else "default",
                "settings": {"model": model, "reasoning_effort": effort, "developer_instructions": None},
            },
        }
        result = _validated(protocol.TurnStartResponse, await self._call("turn/start", params))
        # Notifications of this turn may already be in the journal: it keys records by turn id.
        self._journal.started(thread_id, {"id": result.turn.id, "status": "inProgress"})
        return result.turn.id

    async def watch_turn(self, thread_id: str, turn_id: str) -> AsyncIterator[TurnEvent]:
        """What happened in the turn so far, then what happens next, ending with `TurnEnded`.

        Raises `UnknownTurn` if this runtime never saw the turn (or forgot it long after it ended:
        read_thread has its outcome) and `RuntimeRestarted` if the child died before it ended.
        """
        record = self._journal.get(turn_id)
        if record is None or record.thread_id != thread_id:
            raise UnknownTurn(f"turn {turn_id} of thread {thread_id} is not known to this runtime")
        async for event in record.follow():
            yield event

    def is_turn_live(self, thread_id: str, turn_id: str) -> bool:
        """Whether watch_turn can follow this turn: the current child runs it, or ran it recently.
        False after a restart (the turn is gone: read_thread says `interrupted`) or for a turn
        forgotten long after it ended."""
        record = self._journal.get(turn_id)
        return record is not None and record.thread_id == thread_id and not record.lost

    def progress(self, turn_id: str) -> ProgressTracker | None:
        """What the turn did so far (its progress card), while this runtime remembers the turn."""
        record = self._journal.get(turn_id)
        return record.progress if record is not None else None

    async def answer_request(self, key: str, result: dict[str, Any]) -> None:
        """Answer a `RequestPending` (e.g. {"decision": "accept"}); raises `UnknownRequest` when it is
        not pending in this child generation and `InvalidAnswer` when `result` does not fit."""
        pending = self._pending.get(key)
        if pending is None or pending.future.done():
            raise UnknownRequest(key, self._why_not_pending(key, pending))
        try:
            _RESULTS[pending.request.kind].model_validate(result)
        except ValidationError as error:
            raise InvalidAnswer(f"answer to {pending.request.method} does not fit: {error}") from None
        pending.future.set_result(result)
        # The rpc handler task awaiting this future writes the answer when it next runs; yielding
        # once lets it run before we return, so the answer is on the wire when the caller resumes.
        await asyncio.sleep(0)

    def _request_key(self, generation: int, request_id: object) -> str:
        return f"{self._instance}.{generation}:{request_id}"

    def _why_not_pending(self, key: str, pending: _Pending | None) -> str:
        if pending is not None:
            return "answered"
        instance, _, generation = key.partition(":")[0].rpartition(".")
        if instance != self._instance:
            return "restarted"  # asked in an earlier life of this runtime (another process)
        if generation.isdigit() and int(generation) < self._generation:
            return "restarted"
        return "resolved" if generation == str(self._generation) else "unknown"

    async def steer(self, thread_id: str, turn_id: str, text: str) -> str:
        """Add `text` to the running turn (the model re-samples with it,
        docs/codex-app-server.md §4); the turn id."""
        await self._ensure_loaded(thread_id)
        params = {
            "threadId": thread_id,
            "expectedTurnId": turn_id,
            "input": [InputPart(text=text).to_wire()],
        }
        return _validated(protocol.TurnSteerResponse, await self._call("turn/steer", params)).turn_id

    async def interrupt(self, thread_id: str, turn_id: str) -> None:
        """Stop the running turn; `turn/completed(interrupted)` follows within ~10 ms
        (docs/codex-app-server.md §4)."""
        await self._ensure_loaded(thread_id)
        await self._call("turn/interrupt", {"threadId": thread_id, "turnId": turn_id})

    def active_turn(self, thread_id: str) -> str | None:
        """The turn in progress on the thread in this child, whoever started it."""
        return self._journal.active_turn(thread_id)

    # --- goals (docs/codex-app-server.md §15) ---------------------------------------------------

    @contextlib.contextmanager
    def goal_feed(self, thread_id: str) -> Iterator[GoalFeed]:
        """What Codex says about the thread's goal from now on, and the turns it starts for it."""
        feed = GoalFeed(thread_id)
        self._goal_feeds.setdefault(thread_id, []).append(feed)
        try:
            yield feed
        finally:
            feeds = self._goal_feeds.get(thread_id, [])
            if feed in feeds:
                feeds.remove(feed)
            if not feeds:
                self._goal_feeds.pop(thread_id, None)

    async def set_goal(
        self, thread_id: str, *, objective: str | None = None, status: protocol.ThreadGoalStatus | None = None
    ) -> protocol.ThreadGoal:
        """Set the thread's goal (a new objective starts it `active`, and Codex starts its turns
        once the thread is idle) or only its status, as the person (`origin: user`)."""
        await self._ensure_loaded(thread_id)
        params: dict[str, Any] = {"threadId": thread_id, "origin": "user"}
        if objective is not None:
            params["objective"] = objective
        if status is not None:
            params["status"] = status.value
        goal = _validated(protocol.ThreadGoalSetResponse, await self._call("thread/goal/set", params)).goal
        for feed in self._goal_feeds.get(thread_id, []):
            feed.note(goal)
        return goal

    async def get_goal(self, thread_id: str) -> protocol.ThreadGoal | None:
        await self._ensure_loaded(thread_id)
        params = {"threadId": thread_id}
        return _validated(protocol.ThreadGoalGetResponse, await self._call("thread/goal/get", params)).goal

    async def clear_goal(self, thread_id: str) -> bool:
        """Remove the thread's goal: Codex starts no more turns for it (a running one goes on)."""
        await self._ensure_loaded(thread_id)
        params = {"threadId": thread_id, "origin": "user"}
        return _validated(
            protocol.ThreadGoalClearResponse, await self._call("thread/goal/clear", params)
        ).cleared

    # --- messages from the child ----------------------------------------------------------------

    def _on_notification(self, generation: int, method: str, params: dict[str, Any]) -> None:
        if generation != self._generation:
            return
        self._journal.record(method, params)
        for feed in self._goal_feeds.get(params.get("threadId", ""), ()):
            try:
                feed.record(method, params)
            except ValidationError as error:
                log.error("codex sent %s with params we cannot read: %s", method, error)
        if method == "serverRequest/resolved":
            key = self._request_key(generation, params.get("requestId"))
            if (pending := self._pending.pop(key, None)) is not None:
                if not pending.future.done():
                    pending.future.cancel()  # cleared by Codex (interrupt): answering is pointless
                if (record := self._journal.get(pending.request.turn_id)) is not None:
                    record.append(RequestResolved(key=key))
        elif method == "turn/completed":
            # Nothing of an ended turn waits on us any more; its late answers would be dropped.
            turn_id = (params.get("turn") or {}).get("id")
            for key in [k for k, p in self._pending.items() if p.request.turn_id == turn_id]:
                pending = self._pending.pop(key)
                if not pending.future.done():
                    pending.future.cancel()
        elif method == "thread/started":
            # Any thread started in this child is loaded here, however it was started. Its rollout
            # is written only with its first turn: until then thread/resume says "no rollout found".
            thread = params.get("thread") or {}
            if thread.get("id") and thread.get("model"):
                self._loaded.setdefault(thread["id"], thread["model"])
        elif method == "thread/closed":
            self._loaded.pop(params.get("threadId", ""), None)
        elif method == "account/rateLimits/updated":
            # Sent just before a turn fails on a usage limit: the only exact word on its reset.
            self.rate_limits = params.get("rateLimits")
            self.rate_limits_at = time.time()
        elif method == "mcpServer/startupStatus/updated" and params.get("status") == "failed":
            # The thread goes on without that server's tools and nothing else tells of it
            # (docs/codex-app-server.md §12): the host's log is where a person can find out why.
            log.warning(
                "MCP server %r of thread %s did not start: %s",
                params.get("name"),
                params.get("threadId"),
                params.get("error") or params.get("failureReason") or "no reason given",
            )

    async def _on_server_request(
        self, generation: int, method: str, request_id: int | str, params: dict[str, Any]
    ) -> dict[str, Any]:
        kind = REQUEST_KINDS.get(method)
        if kind is None:
            raise JsonRpcError(METHOD_NOT_FOUND, f"work-ally does not handle {method}")
        key = self._request_key(generation, request_id)
        if (known := self._pending.get(key)) is not None:
            # thread/resume in a live child re-sends a pending request with its id
            # (docs/codex-app-server.md §7).
            return await asyncio.shield(known.future)
        request = self._describe(key, method, kind, params)
        pending = _Pending(request, asyncio.get_running_loop().create_future())
        self._pending[key] = pending
        self._journal.turn(request.thread_id, request.turn_id).append(request)
        return await pending.future

    def _describe(self, key: str, method: str, kind: RequestKind, params: dict[str, Any]) -> RequestPending:
        """The request as watchers see it; raises JsonRpcError (answered to Codex) when it cannot be shown."""
        try:
            parsed: Any = _PARAMS[kind].model_validate(params)
        except ValidationError as error:
            log.error("codex sent %s with params we cannot read: %s", method, error)
            raise JsonRpcError(INVALID_PARAMS, f"work-ally cannot read these {method} params") from None
        if kind == "elicitation":
            parsed = parsed.root
        thread_id: str = parsed.thread_id
        turn_id = getattr(parsed, "turn_id", None) or self._journal.active_turn(thread_id)
        if turn_id is None:
            raise JsonRpcError(INVALID_PARAMS, f"work-ally cannot show {method} outside a turn")
        fields: dict[str, Any] = {
            "item_id": getattr(parsed, "item_id", None),
            "reason": getattr(parsed, "reason", None),
        }
        match kind:
            case "command":
                cwd = parsed.cwd
                fields |= {"command": parsed.command, "cwd": cwd.root if cwd is not None else None}
            case "file_change":
                record = self._journal.turn(thread_id, turn_id)
                fields["diff"] = _render_changes(record.file_changes.get(parsed.item_id, []))
                fields["cwd"] = parsed.grant_root
            case "permissions":
                fields["cwd"] = parsed.cwd.root
            case "user_input":
                fields["questions"] = params.get("questions") or []
            case "elicitation":
                fields["reason"] = getattr(parsed, "message", None)
        return RequestPending(
            key=key, method=method, kind=kind, thread_id=thread_id, turn_id=turn_id, params=params, **fields
        )


def thread_config(settings: ThreadSettings) -> dict[str, Any]:
    """The per-thread config overrides of `thread/start` and `thread/resume`: `settings.config`,
    and the MCP servers as one `mcp_servers` table. Codex merges a table into its configured one
    (servers of its own config.toml stay) and takes any server name it accepts, dots included,
    which dotted keys (`mcp_servers.<name>.command`) would split (docs/codex-app-server.md §12)."""
    config = dict(settings.config)
    if settings.mcp_servers:
        servers = config.get("mcp_servers")
        servers = dict(servers) if isinstance(servers, dict) else {}
        for name, server in settings.mcp_servers.items():
            servers[name] = server.model_dump(exclude_defaults=True)
        config["mcp_servers"] = servers
    return config


async def _prepare_workspace(settings: ThreadSettings) -> None:
    cwd = Path(settings.cwd)
    try:
        written = await asyncio.to_thread(prepare_workspace, cwd, settings.agents_md)
    except OSError as error:
        raise WorkspaceUnavailable(cwd, error.strerror or str(error)) from None
    if written:
        log.info("wrote the persona to %s", cwd / PERSONA_FILE)


def _validated(model: type[Model], result: Any) -> Model:
    try:
        return model.model_validate(result)
    except ValidationError as error:
        raise CodexRuntimeError(
            f"codex answered with a {model.__name__} we cannot read (protocol drift?): {error}"
        ) from None


def _raise_rejected(method: str, error: JsonRpcError) -> NoReturn:
    # Codex reports these as -32600 with a message only; the message is the signal
    # (docs/codex-app-server.md §3, §4).
    message = error.message
    if "already has an active writer" in message:
        raise ThreadLocked(method, error.code, message, error.data) from error
    if "no rollout found" in message:
        raise ThreadNotFound(method, error.code, message, error.data) from error
    if "no active turn" in message or "expected active turn id" in message:
        raise TurnNotActive(method, error.code, message, error.data) from error
    if error.code == INVALID_PARAMS and method in _INPUT_METHODS:
        raise InputRejected(method, error.code, message, error.data) from error
    raise CodexRejected(method, error.code, message, error.data) from error


def _render_changes(changes: list[dict[str, Any]]) -> str | None:
    """The diff of a fileChange item: for an added file Codex gives the content, else a unified diff."""
    if not changes:
        return None
    parts = []
    for change in changes:
        kind = change.get("kind") or {}
        target = str(change.get("path", "?"))
        if moved := kind.get("move_path"):  # a move: the policy must see where the file goes too
            target = f"{target} -> {moved}"
        parts.append(f"*** {kind.get('type', 'update')} {target}\n{change.get('diff', '')}".rstrip("\n"))
    return "\n".join(parts) + "\n"


def _snapshot(turn: protocol.Turn) -> TurnSnapshot:
    user, final = "", ""
    for item in turn.items:
        wire = item.root
        kind = getattr(wire, "type", None)
        kind = getattr(kind, "value", kind)
        if kind == "userMessage" and not user:
            user = user_text(wire.model_dump(by_alias=True, mode="json"))
        elif kind == "agentMessage":
            final = getattr(wire, "text", "") or ""  # summary view: the final agent message last
    return TurnSnapshot(
        id=turn.id,
        status=turn.status.value,
        user_text=user,
        final_text=final,
        error=turn.error.message if turn.error else None,
        error_info=turn.error.codex_error_info.model_dump(mode="json", by_alias=True)
        if turn.error and turn.error.codex_error_info
        else None,
        started_at=turn.started_at,
    )
