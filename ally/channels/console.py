"""The terminal channel behind `ally chat`: the whole product with no Feishu app.

Deliveries arrive as activities on this terminal's own task queue and are handed to a sink (the
chat loop prints them and prompts for approvals). Like Feishu's `uuid`, an idempotency key that was
already delivered returns the first message and shows nothing twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel

from ally.channels.progress import relative, summary
from ally.contracts import (
    ApprovalOutcome,
    ApprovalPrompt,
    FileDelivery,
    FileSent,
    ProgressView,
    Reaction,
    ReactionRef,
    Reply,
    ReplyUpdate,
    SentMessage,
)

_ids = itertools.count(1)
PROGRESS_TURNS_KEPT = 200


class ConsoleEvent(BaseModel):
    kind: Literal["reply", "approval", "decided", "updated", "progress"]
    message_id: str
    reply: Reply | None = None
    prompt: ApprovalPrompt | None = None
    outcome: ApprovalOutcome | None = None
    update: ReplyUpdate | None = None
    lines: list[str] = []  # progress: what is new since the last lines of the same turn


class _Shown(BaseModel):
    """What the terminal already printed of one turn's progress."""

    step: int = 0
    plan: list[str] = []
    steers: int = 0
    compactions: int = 0
    quiet_minutes: int = 0


class ConsoleChannel:
    # A terminal takes a line whenever there is one: only the follower's own pace limits it.
    progress_interval_s = 0.0
    # A terminal may be on another machine than the workspace: it is told where the file is.
    takes_file_bytes = False

    def __init__(self, sink: Callable[[ConsoleEvent], None]) -> None:
        self.sink = sink
        self.delivered: dict[str, str] = {}  # idempotency key -> message id
        self.progress: dict[str, _Shown] = {}  # turn workflow id -> what was printed of it

    async def send_reply(self, reply: Reply) -> SentMessage:
        return SentMessage(
            message_id=self._once(
                reply.idempotency_key, lambda mid: ConsoleEvent(kind="reply", message_id=mid, reply=reply)
            )
        )

    async def send_approval(self, prompt: ApprovalPrompt) -> SentMessage:
        return SentMessage(
            message_id=self._once(
                prompt.idempotency_key,
                lambda mid: ConsoleEvent(kind="approval", message_id=mid, prompt=prompt),
            )
        )

    async def update_approval(self, outcome: ApprovalOutcome) -> None:
        self.sink(ConsoleEvent(kind="decided", message_id=outcome.message_id, outcome=outcome))

    async def update_reply(self, update: ReplyUpdate) -> None:
        self.sink(ConsoleEvent(kind="updated", message_id=update.message_id, update=update))

    async def react(self, reaction: Reaction) -> ReactionRef:
        # A terminal shows the turn's progress by its prompt; there is nothing to put an emoji on.
        return ReactionRef(chat=reaction.chat, message_id=reaction.message_id, reaction_id=None)

    async def unreact(self, reaction: ReactionRef) -> None:
        return None

    async def show_progress(self, view: ProgressView, *, final: bool = False) -> SentMessage | None:
        """Progress as lines, printed once each: every new step, the plan when it changed, steers
        and compactions taken, a long silence; at the end a one-line summary."""
        shown = self.progress.setdefault(view.turn_workflow_id, _Shown())
        while len(self.progress) > PROGRESS_TURNS_KEPT:
            del self.progress[next(iter(self.progress))]
        lines = _settled_line(view) if final else _new_lines(view, shown)
        message_id = view.message_id or f"console-progress-{next(_ids)}"
        if lines:
            self.sink(ConsoleEvent(kind="progress", message_id=message_id, lines=lines))
        return SentMessage(message_id=message_id)

    async def send_file(self, delivery: FileDelivery, data: bytes | None) -> FileSent:
        found = delivery.file
        text = f"{found.relative} ({_size(found.size)}) is on the host {delivery.host}: {found.path}"
        reply = Reply(
            chat=delivery.chat,
            reply_to=delivery.reply_to,
            text=text,
            idempotency_key=delivery.idempotency_key,
            tone="notice",
        )
        return FileSent(
            message_id=self._once(
                delivery.idempotency_key, lambda mid: ConsoleEvent(kind="reply", message_id=mid, reply=reply)
            )
        )

    def _once(self, key: str, event: Callable[[str], ConsoleEvent]) -> str:
        if key not in self.delivered:
            message_id = f"console-{next(_ids)}"
            self.sink(event(message_id))
            self.delivered[key] = message_id
        return self.delivered[key]


_MARKS = {"pending": "[ ]", "in_progress": "[>]", "completed": "[x]"}
_STEPS = {
    "command": "ran",
    "file_change": "edited",
    "tool": "called",
    "search": "searched",
    "compaction": "compacted the context",
    "steer": "took your follow-up:",
}


def _new_lines(view: ProgressView, shown: _Shown) -> list[str]:
    activity = view.activity
    if activity is None:
        return []
    lines: list[str] = []
    plan = [f"{_MARKS[item.status]} {item.step}" for item in activity.plan]
    if plan and plan != shown.plan:
        lines.append("plan:")
        lines += [f"  {line}" for line in plan]
        shown.plan = plan
    steps = [
        *activity.recent,
        *([activity.doing] if activity.doing and activity.doing.kind != "thinking" else []),
    ]
    for step in steps:
        if step.n <= shown.step or step.kind in ("message", "thinking"):
            continue
        if step.status == "running":
            lines.append(f"{_running(step.kind)} {relative(step.text, view.workspace)}".rstrip())
        else:
            failed = "" if step.status == "done" else f" ({step.status})"
            text = relative(step.text, view.workspace)
            lines.append(f"{_STEPS.get(step.kind, step.kind)} {text}{failed}".rstrip())
        shown.step = step.n
    quiet = int(view.quiet_s // 60)
    if quiet >= 1 and quiet != shown.quiet_minutes:
        lines.append(f"still working; last activity {quiet} min ago")
    shown.quiet_minutes = quiet
    return [f"  … {line}" for line in lines]


def _running(kind: str) -> str:
    return {"command": "running", "file_change": "editing", "tool": "calling", "search": "searching"}.get(
        kind, "doing"
    )


def _settled_line(view: ProgressView) -> list[str]:
    if view.activity is None:
        return []
    return [f"  … {summary(view.activity, view.state, view.elapsed_s)}"]


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"
