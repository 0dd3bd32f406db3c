"""What happened in each turn, recorded from the first notification on, so a late watcher misses nothing.

A scripted turn can start and complete in ~35 ms, before anyone calls watch_turn, and notifications
for a turn may arrive before the `turn/start` response that names it
(docs/codex-app-server.md §4, §10). So the journal creates a turn's record lazily from whichever
message names its turnId first, keeps the events, and `follow()` replays them and then waits for
more. Ended turns are forgotten after a retention period, so memory stays bounded on a long-lived
runtime host.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from ally.codex.errors import RuntimeRestarted
from ally.codex.models import EndStatus, ItemCompleted, RequestPending, RequestResolved, TurnEnded, TurnEvent
from ally.codex.progress import ProgressTracker

SHORT_TEXT = 500  # ItemCompleted.text is a hint for progress cards, not the reply: keep it short
_END_STATUSES: frozenset[str] = frozenset({"completed", "interrupted", "failed"})


class TurnRecord:
    """One turn as this runtime saw it."""

    __slots__ = (
        "_changed",
        "ended_at",
        "events",
        "file_changes",
        "generation",
        "last_error",
        "lost",
        "progress",
        "thread_id",
        "turn_id",
    )

    def __init__(self, thread_id: str, turn_id: str, generation: int) -> None:
        self.thread_id = thread_id
        self.turn_id = turn_id
        self.generation = generation
        self.events: list[TurnEvent] = []
        self.ended_at: float | None = None
        self.lost = False  # the child died before turn/completed
        # fileChange items by id, from item/started: the approval request carries no diff
        # (docs/codex-app-server.md §6).
        self.file_changes: dict[str, list[dict[str, Any]]] = {}
        self.last_error: str | None = None  # from an `error` notification with willRetry false
        self.progress = ProgressTracker()  # what a progress card shows of this turn
        self._changed = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def append(self, event: TurnEvent) -> None:
        if self.ended:
            # E.g. serverRequest/resolved arrives after turn/completed on interrupt
            # (docs/codex-app-server.md §7)
            return
        if isinstance(event, RequestPending):
            self.progress.request_pending(event.key)
        elif isinstance(event, RequestResolved):
            self.progress.request_resolved(event.key)
        self.events.append(event)
        self._wake()

    def end(self, status: EndStatus, error_message: str | None) -> None:
        if self.ended:
            return
        self.events.append(TurnEnded(status=status, error_message=error_message))
        self.ended_at = time.monotonic()
        self._wake()

    def lose(self) -> None:
        if self.ended:
            return
        self.lost = True
        self.ended_at = time.monotonic()
        self._wake()

    def _wake(self) -> None:
        # One Event per change: every waiter wakes, and later waiters wait on a fresh one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self) -> AsyncIterator[TurnEvent]:
        """Every event so far, then each new one, until TurnEnded; `RuntimeRestarted` if lost."""
        index = 0
        while True:
            changed = self._changed
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if isinstance(event, TurnEnded):
                    return
            if self.lost:
                raise RuntimeRestarted(
                    f"the Codex child died during turn {self.turn_id}; it reads back interrupted"
                )
            await changed.wait()


class TurnJournal:
    """Turn records by turn id, fed with the child's notifications."""

    def __init__(self, *, retention_s: float = 900.0, max_ended: int = 2000) -> None:
        self.retention_s = retention_s
        self.max_ended = max_ended
        self.generation = 0
        self._turns: dict[str, TurnRecord] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()  # turn id -> ended_at, oldest first
        self._active: dict[str, str] = {}  # thread id -> its in-progress turn id
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "turn/started": self._turn_started,
            "item/started": self._item_started,
            "item/completed": self._item_completed,
            "turn/plan/updated": self._plan_updated,
            "turn/completed": self._turn_completed,
            "error": self._error,
        }

    def __len__(self) -> int:
        return len(self._turns)

    def get(self, turn_id: str) -> TurnRecord | None:
        return self._turns.get(turn_id)

    def active_turn(self, thread_id: str) -> str | None:
        return self._active.get(thread_id)

    def turn(self, thread_id: str, turn_id: str) -> TurnRecord:
        """The record of `turn_id`, created in the current generation if new."""
        record = self._turns.get(turn_id)
        if record is None:
            record = self._turns[turn_id] = TurnRecord(thread_id, turn_id, self.generation)
        return record

    def started(self, thread_id: str, turn: dict[str, Any]) -> TurnRecord:
        """A Turn object (from turn/start's result or turn/started) names an in-progress turn."""
        record = self.turn(thread_id, turn["id"])
        if turn.get("status") == "inProgress" and not record.ended:
            self._active[thread_id] = record.turn_id
        return record

    def record(self, method: str, params: dict[str, Any]) -> None:
        """Feed one notification; the ones that say nothing about a turn cost one dict lookup."""
        handler = self._handlers.get(method)
        if handler is not None:
            handler(params)
        elif (turn_id := params.get("turnId")) and (record := self._turns.get(turn_id)) is not None:
            record.progress.touch()  # a token count, a diff: Codex is at work on it

    def lose_generation(self, generation: int) -> None:
        """The child of `generation` died: its unfinished turns will never complete
        (docs/codex-app-server.md §7)."""
        for record in self._turns.values():
            if record.generation == generation and not record.ended:
                record.lose()
                self._ended[record.turn_id] = record.ended_at or time.monotonic()
        self._active.clear()
        self._prune()

    # --- notifications ---------------------------------------------------------------------------

    def _turn_started(self, params: dict[str, Any]) -> None:
        self.started(params["threadId"], params["turn"])

    def _item_started(self, params: dict[str, Any]) -> None:
        item = params["item"]
        record = self.turn(params["threadId"], params["turnId"])
        if item.get("type") == "fileChange":
            record.file_changes[item["id"]] = item.get("changes") or []
        if not record.ended:
            record.progress.item_started(item)

    def _plan_updated(self, params: dict[str, Any]) -> None:
        record = self.turn(params["threadId"], params["turnId"])
        if not record.ended:
            record.progress.plan_updated(params.get("plan") or [])

    def _item_completed(self, params: dict[str, Any]) -> None:
        item = params["item"]
        record = self.turn(params["threadId"], params["turnId"])
        if not record.ended:
            record.progress.item_completed(item)
        record.append(
            ItemCompleted(item_type=item.get("type", "?"), item_id=item.get("id", ""), text=short_text(item))
        )

    def _error(self, params: dict[str, Any]) -> None:
        # willRetry:true is a transient "Reconnecting... 1/2", not the turn's fate
        # (docs/codex-app-server.md §5).
        turn_id = params.get("turnId")
        if turn_id and not params.get("willRetry"):
            message = (params.get("error") or {}).get("message")
            self.turn(params.get("threadId", ""), turn_id).last_error = message

    def _turn_completed(self, params: dict[str, Any]) -> None:
        thread_id, turn = params["threadId"], params["turn"]
        record = self.turn(thread_id, turn["id"])
        status = turn.get("status")
        error = (turn.get("error") or {}).get("message")
        if status == "failed" and not error:
            error = record.last_error
        record.end(status if status in _END_STATUSES else "failed", error)
        record.file_changes.clear()
        if self._active.get(thread_id) == record.turn_id:
            del self._active[thread_id]
        self._ended[record.turn_id] = record.ended_at or time.monotonic()
        self._prune()

    def _prune(self) -> None:
        horizon = time.monotonic() - self.retention_s
        while self._ended:
            turn_id, ended_at = next(iter(self._ended.items()))
            if ended_at >= horizon and len(self._ended) <= self.max_ended:
                break
            del self._ended[turn_id]
            self._turns.pop(turn_id, None)


def short_text(item: dict[str, Any]) -> str:
    """A one-line hint of what an item did."""
    match item.get("type"):
        case "agentMessage":
            text = item.get("text") or ""
        case "userMessage":
            text = user_text(item)
        case "commandExecution":
            text = f"{item.get('command', '')} -> {item.get('status')} (exit {item.get('exitCode')})"
        case "fileChange":
            changes = item.get("changes") or []
            paths = ", ".join(
                f"{(c.get('kind') or {}).get('type', '?')} {c.get('path', '?')}" for c in changes
            )
            text = f"{paths} -> {item.get('status')}"
        case "reasoning":
            text = " ".join(item.get("summary") or [])
        case _:
            text = ""
    return text if len(text) <= SHORT_TEXT else text[: SHORT_TEXT - 1] + "…"


def user_text(item: dict[str, Any]) -> str:
    """The text parts of a userMessage item."""
    return "\n".join(part.get("text", "") for part in item.get("content") or [] if part.get("type") == "text")
