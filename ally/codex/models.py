"""The shapes `CodexRuntime` takes and gives: thread settings, turn inputs, turn events, snapshots.

Field names follow `ally.contracts` (AgentRequest) so activities convert by name; thread settings,
request kinds and end states are the contracts' own. These
are ours, not Codex's: the generated wire models live in `ally.codex.protocol`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

# The neutral vocabulary the workflows speak; this client takes and gives it as is.
from ally.contracts.agent import ApprovalPolicy as ApprovalPolicy
from ally.contracts.agent import EndStatus as EndStatus
from ally.contracts.agent import ReasoningEffort as ReasoningEffort
from ally.contracts.agent import RequestKind as RequestKind
from ally.contracts.agent import SandboxMode as SandboxMode
from ally.contracts.agent import ThreadSettings as ThreadSettings

TurnStatus = Literal["inProgress", "completed", "interrupted", "failed"]
RuntimeState = Literal["running", "restarting", "stopped"]


class InputPart(BaseModel):
    """One part of a user message: `InputPart(type="text", text=…)` or
    `InputPart(type="localImage", path=…)` (an image file on the runtime host, absolute path)."""

    type: Literal["text", "localImage"] = "text"
    text: str = ""
    path: str = ""

    @model_validator(mode="after")
    def _has_its_field(self) -> InputPart:
        if self.type == "localImage" and not self.path:
            raise ValueError("a localImage input needs a path")
        return self

    def to_wire(self) -> dict[str, Any]:
        """As `turn/start` and `turn/steer` take it (UserInput in the protocol)."""
        if self.type == "localImage":
            return {"type": "localImage", "path": self.path}
        return {"type": "text", "text": self.text, "text_elements": []}


# --- what watch_turn yields ---------------------------------------------------------------------


class RequestPending(BaseModel):
    """Codex waits on an answer to this; give it with `CodexRuntime.answer_request(key, result)`."""

    event: Literal["pending_request"] = "pending_request"
    key: str  # "<runtime instance>.<generation>:<server request id>": unique across restarts of both
    method: str
    kind: RequestKind
    thread_id: str
    turn_id: str
    item_id: str | None = None
    command: str | None = None
    cwd: str | None = None
    reason: str | None = None
    diff: str | None = None  # file changes: taken from the item/started that preceded the request
    questions: list[dict[str, Any]] = []  # user input: [{id, header, question, isOther, options}]
    params: dict[str, Any] = {}  # the request's params as Codex sent them


class RequestResolved(BaseModel):
    """Codex no longer waits on this request: answered, or cleared by an interrupt
    (docs/codex-app-server.md §7)."""

    event: Literal["request_resolved"] = "request_resolved"
    key: str


class ItemCompleted(BaseModel):
    """A finished item of the turn (`item/completed` is authoritative, docs/codex-app-server.md §5);
    text is short."""

    event: Literal["item_completed"] = "item_completed"
    item_type: str  # agentMessage, userMessage, commandExecution, fileChange, reasoning, ...
    item_id: str
    text: str = ""


class TurnEnded(BaseModel):
    """`turn/completed`, the only end-of-turn signal (docs/codex-app-server.md §5)."""

    event: Literal["turn_ended"] = "turn_ended"
    status: EndStatus
    error_message: str | None = None


TurnEvent = Annotated[
    RequestPending | RequestResolved | ItemCompleted | TurnEnded, Field(discriminator="event")
]


# --- what read_thread gives -----------------------------------------------------------------------


class TurnSnapshot(BaseModel):
    id: str
    status: TurnStatus
    user_text: str = ""
    final_text: str = ""  # the turn's final agent message ("" while in progress or when none)
    error: str | None = None
    error_info: Any = None  # Codex's `codexErrorInfo` of a failed turn, as sent (ally/codex/limits.py)
    started_at: float | None = None  # unix time Codex started it


class ThreadSnapshot(BaseModel):
    """The persisted truth of a thread (pull-primary, docs/codex-app-server.md §8), oldest turn first."""

    thread_id: str
    turns: list[TurnSnapshot]


class RuntimeHealth(BaseModel):
    state: RuntimeState
    pid: int | None = None
    generation: int = 0
    restarts: int = 0
    started_at: float | None = None  # unix time the current child was spawned
    version: str | None = None
    version_mismatch: str | None = None
    loaded_threads: int = 0
    pending_requests: int = 0
