"""What Codex says about one thread's goal, and the turns it starts for it by itself.

With a goal set (`thread/goal/set`) Codex starts a continuation turn whenever the thread goes idle,
for as long as the goal stays `active`: each announced only by `turn/started` (no user message),
the goal's tokens in `thread/goal/updated` before each turn completes, `thread/goal/cleared` when
it is cleared (docs/codex-app-server.md §15). A `GoalFeed` is subscribed before the goal is set, so
no turn of it is missed, and hands those turns out one by one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from ally.codex import protocol
from ally.codex.errors import RuntimeRestarted


class GoalFeed:
    __slots__ = ("_changed", "began", "cleared", "goal", "lost", "thread_id")

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.goal: protocol.ThreadGoal | None = None  # the latest Codex told of
        self.cleared = False
        self.began: deque[str] = deque()  # turns Codex started on the thread, not handed out yet
        self.lost = False  # the child died: nothing more will come
        self._changed = asyncio.Event()

    @property
    def active(self) -> bool:
        return (
            not self.cleared
            and self.goal is not None
            and self.goal.status == protocol.ThreadGoalStatus.active
        )

    def record(self, method: str, params: dict[str, Any]) -> None:
        if method == "turn/started":
            self.began.append((params.get("turn") or {}).get("id", ""))
        elif method == "thread/goal/updated":
            self.note(protocol.ThreadGoalUpdatedNotification.model_validate(params).goal)
        elif method == "thread/goal/cleared":
            self.cleared = True
        else:
            return
        self._wake()

    def note(self, goal: protocol.ThreadGoal) -> None:
        """A goal read from an answer (`thread/goal/set`), unless a notification was newer."""
        if self.goal is None or goal.updated_at >= self.goal.updated_at:
            self.goal = goal
            self.cleared = False
        self._wake()

    def lose(self) -> None:
        self.lost = True
        self._wake()

    async def next_turn(self, *, idle_s: float) -> str | None:
        """The next turn Codex started for the goal; None once the goal is no longer active and no
        turn is left, or when Codex starts none within `idle_s` although the goal is still active
        (it does so only when the thread goes idle, which takes milliseconds)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + idle_s
        while True:
            changed = self._changed
            if self.began:
                return self.began.popleft()
            if self.lost:
                raise RuntimeRestarted(f"the Codex child died while following the goal of {self.thread_id}")
            if not self.active:
                return None
            try:
                async with asyncio.timeout_at(give_up):
                    await changed.wait()
            except TimeoutError:
                return None

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
