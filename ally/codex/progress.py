"""What Codex is doing in a turn, kept small: the progress a chat's card shows.

Fed with the turn's notifications by the journal (item/started, item/completed, turn/plan/updated,
the requests Codex waits on, and any other sign of life), it keeps counters, the plan, the step in
progress and the last few finished ones. `snapshot()` is a `TurnActivity` of bounded size whatever
the turn does (thousands of items, megabytes of command output): every text is cut short and every
list capped, so it fits a heartbeat (`run_turn` sends it every second, activities/codex.py).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from ally.contracts.agent import PlanItem, PlanStatus, ProgressStep, StepKind, StepStatus, TurnActivity

STEP_CHARS = 160  # a step's line: a long command or a summary is cut here
PLAN_CHARS = 120
RECENT_STEPS = 8
PLAN_ITEMS = 20
FILES_KEPT = 50
VIEWED_KEPT = 10

_KINDS: dict[str, StepKind] = {
    "reasoning": "thinking",
    "commandExecution": "command",
    "fileChange": "file_change",
    "mcpToolCall": "tool",
    "dynamicToolCall": "tool",
    "webSearch": "search",
    "contextCompaction": "compaction",
    "agentMessage": "message",
}
# Steps worth a line of their own; thinking and interim messages only show as what Codex does now.
_LISTED: frozenset[StepKind] = frozenset({"command", "file_change", "tool", "search", "compaction", "steer"})
_PLAN_STATUS: dict[str, PlanStatus] = {
    "pending": "pending",
    "inProgress": "in_progress",
    "in_progress": "in_progress",
    "completed": "completed",
}


class ProgressTracker:
    """One turn's progress; every method is O(1) in the size of the turn."""

    def __init__(self, now: float | None = None) -> None:
        started = time.time() if now is None else now
        self.started_at = started
        self.last_activity_at = started
        self.version = 0
        self._steps = 0
        self._open: OrderedDict[str, ProgressStep] = OrderedDict()  # item id -> its running step
        self._recent: list[ProgressStep] = []
        self._plan: list[PlanItem] = []
        self._files: dict[str, None] = {}
        self._viewed: dict[str, None] = {}  # images the agent viewed, first ones only
        self._files_total = 0
        self._users = 0
        self._waiting: set[str] = set()
        self.counts = {"command": 0, "file_change": 0, "tool": 0, "search": 0, "compaction": 0, "steer": 0}
        self.items = 0

    # --- fed by the journal --------------------------------------------------------------------------

    def touch(self) -> None:
        """Any sign of life of the turn (a token count, a diff update) that changes nothing shown."""
        self.last_activity_at = time.time()

    def item_started(self, item: dict[str, Any]) -> None:
        self.touch()
        kind = self._kind(item)
        if kind is None:
            return
        self._steps += 1
        self._open[str(item.get("id", ""))] = ProgressStep(
            n=self._steps, kind=kind, text=_describe(kind, item)
        )
        self._changed()

    def item_completed(self, item: dict[str, Any]) -> None:
        self.touch()
        self.items += 1
        if item.get("type") == "imageView" and item.get("path") and len(self._viewed) < VIEWED_KEPT:
            self._viewed[str(item["path"])] = None
        kind = self._kind(item, completing=True)
        if kind is None:
            self._changed()
            return
        step = self._open.pop(str(item.get("id", "")), None)
        if step is None:  # completed without a start we saw (a retry attached late)
            self._steps += 1
            step = ProgressStep(n=self._steps, kind=kind, text=_describe(kind, item))
        step.status = _status(item)
        step.text = _describe(kind, item) or step.text
        if kind in self.counts:
            self.counts[kind] += 1
        if kind == "file_change" and step.status == "done":
            for change in item.get("changes") or []:
                self._changed_file(str(change.get("path", "")))
        if kind in _LISTED:
            self._recent = [*self._recent, step][-RECENT_STEPS:]
        self._changed()

    def plan_updated(self, plan: list[dict[str, Any]]) -> None:
        self.touch()
        self._plan = [
            PlanItem(
                step=_cut(str(entry.get("step", "")), PLAN_CHARS),
                status=_PLAN_STATUS.get(str(entry.get("status")), "pending"),
            )
            for entry in plan[:PLAN_ITEMS]
        ]
        self._changed()

    def request_pending(self, key: str) -> None:
        self.touch()
        self._waiting.add(key)
        self._changed()

    def request_resolved(self, key: str) -> None:
        self.touch()
        self._waiting.discard(key)
        self._changed()

    # --- read by run_turn's heartbeat -------------------------------------------------------------

    @property
    def changed_files(self) -> list[str]:
        return list(self._files)

    @property
    def viewed_images(self) -> list[str]:
        return list(self._viewed)

    def snapshot(self) -> TurnActivity:
        doing = next(reversed(self._open.values()), None) if self._open else None
        return TurnActivity(
            started_at=self.started_at,
            last_activity_at=self.last_activity_at,
            version=self.version,
            doing=doing.model_copy() if doing else None,
            recent=[step.model_copy() for step in self._recent],
            plan=list(self._plan),
            commands=self.counts["command"],
            file_changes=self.counts["file_change"],
            files=list(self._files)[:FILES_KEPT],
            files_total=self._files_total,
            tool_calls=self.counts["tool"],
            searches=self.counts["search"],
            compactions=self.counts["compaction"],
            steers=self.counts["steer"],
            waiting=len(self._waiting),
            items=self.items,
        )

    # --- helpers ------------------------------------------------------------------------------------

    def _kind(self, item: dict[str, Any], *, completing: bool = False) -> StepKind | None:
        kind = str(item.get("type", ""))
        if kind == "userMessage":
            # The first is the prompt; every later one is a steer Codex took into this turn.
            if not completing:
                return None
            self._users += 1
            return "steer" if self._users > 1 else None
        return _KINDS.get(kind)

    def _changed_file(self, path: str) -> None:
        if not path or path in self._files:
            return
        self._files_total += 1
        if len(self._files) < FILES_KEPT * 4:  # the outcome lists more than a snapshot shows
            self._files[path] = None

    def _changed(self) -> None:
        self.version += 1


def _describe(kind: StepKind, item: dict[str, Any]) -> str:
    match kind:
        case "command":
            actions = item.get("commandActions") or []
            # Codex wraps commands in a login shell; its own reading of the command is plainer.
            plain = next(
                (str(a.get("command")) for a in actions if isinstance(a, dict) and a.get("command")), None
            )
            text = plain or str(item.get("command", ""))
            code = item.get("exitCode")
            return _cut(text, STEP_CHARS) + (f" (exit {code})" if code not in (None, 0) else "")
        case "file_change":
            changes = item.get("changes") or []
            paths = [f"{(c.get('kind') or {}).get('type', 'update')} {c.get('path', '?')}" for c in changes]
            return _cut(", ".join(paths), STEP_CHARS)
        case "tool":
            server, tool = item.get("server"), item.get("tool")
            return _cut(f"{server}.{tool}" if server else str(tool or item.get("type", "")), STEP_CHARS)
        case "search":
            return _cut(str(item.get("query", "")), STEP_CHARS)
        case "thinking":
            return _cut(" ".join(str(s) for s in item.get("summary") or []), STEP_CHARS)
        case "message":
            return _cut(str(item.get("text", "")), STEP_CHARS)
        case "steer":
            parts = item.get("content") or []
            return _cut(" ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict)), STEP_CHARS)
    return ""


def _status(item: dict[str, Any]) -> StepStatus:
    status = str(item.get("status", "completed"))
    if status == "failed" or (item.get("exitCode") not in (None, 0)):
        return "failed"
    return "declined" if status == "declined" else "done"


def _cut(text: str, limit: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
