"""The agent's side of a turn, in words that fit any agent runtime: where it runs, what a turn asks
of it, what it waits on (an `AgentRequest`), how a person or rule answers (a `Decision`), how the
turn ended. The runtime host translates these to and from its own wire format (for Codex:
activities/codex.py and ally/codex/); nothing here knows that format.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

ApprovalPolicy = Literal["untrusted", "on-request", "never"]
SandboxMode = Literal["read-only", "workspace-write", "danger-full-access"]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
RequestKind = Literal["command", "file_change", "permissions", "user_input", "elicitation", "other"]
EndStatus = Literal["completed", "interrupted", "failed"]
# Why a turn failed, when the agent says so in a form that calls for something other than /retry:
# the account's usage limit (wait for its reset), a rate limit (wait a little), a login that is gone.
ErrorKind = Literal["usage_limit", "rate_limit", "logged_out"]
# How a person (or a rule) answers a request: one spelling for cards, text shortcuts and the terminal.
DecisionWord = Literal["accept", "acceptForSession", "decline", "cancel"]
# Where a goal stands (docs/long-work.md, "Goals"): the agent's own statuses, and "cleared" (a person
# ended it) and "idle" (still active, but the agent stopped starting turns for it).
GoalStatus = Literal[
    "active", "paused", "blocked", "usage_limited", "budget_limited", "complete", "cleared", "idle"
]


class McpServer(BaseModel):
    """An MCP server (stdio) an assistant's threads may use: started by the agent for them only."""

    model_config = ConfigDict(extra="forbid")

    command: str
    args: list[str] = []
    env: dict[str, str] = {}


class ThreadSettings(BaseModel):
    """What a thread is started with. A resumed thread keeps its model, sandbox and approval policy;
    its `config` and MCP servers are given again at every resume, and the reasoning effort with every
    turn (docs/codex-app-server.md §12, §14)."""

    cwd: str
    model: str | None = None  # None: the model in the agent's own configuration
    reasoning_effort: ReasoningEffort | None = None  # None: the model's own default
    sandbox: SandboxMode = "workspace-write"
    approval_policy: ApprovalPolicy = "on-request"
    developer_instructions: str | None = None
    # Dotted config keys for this thread only, e.g. {"features.request_permissions_tool": True}.
    config: dict[str, Any] = {}
    # The assistant's MCP servers, by name: this thread's only (the host translates them).
    mcp_servers: dict[str, McpServer] = {}
    # The assistant's persona: written to AGENTS.md in `cwd` by the host when the workspace has none
    # (a person's own AGENTS.md is never overwritten). None: leave the workspace as it is.
    agents_md: str | None = None


class RuntimeLocation(BaseModel):
    """Where a conversation's agent thread lives: the host and its pinned task queue."""

    host: str
    task_queue: str


class StartTurnInput(BaseModel):
    thread_id: str | None  # None: a new thread
    settings: ThreadSettings
    text: str
    local_images: list[str] = []
    plan_mode: bool = False


StepKind = Literal[
    "thinking", "command", "file_change", "tool", "search", "compaction", "steer", "message", "other"
]
StepStatus = Literal["running", "done", "failed", "declined"]
PlanStatus = Literal["pending", "in_progress", "completed"]


class ProgressStep(BaseModel):
    """One thing the agent did or does in a turn, in a line: `text` is already cut short."""

    n: int  # its place among the turn's steps, from 1: a follower shows each new one once
    kind: StepKind
    text: str = ""
    status: StepStatus = "running"


class PlanItem(BaseModel):
    step: str
    status: PlanStatus = "pending"


class TurnActivity(BaseModel):
    """What the agent is doing in a running turn, as the host saw it: a snapshot of bounded size
    (a few KB whatever the turn does, `ally/codex/progress.py`), carried in `run_turn`'s heartbeat
    details (never in history) and, once, in its outcome."""

    started_at: float  # unix time the host saw the turn start
    last_activity_at: float  # unix time of the agent's latest sign of life in this turn
    version: int = 0  # grows with every change: a follower redraws only when it moved
    doing: ProgressStep | None = None  # the newest step still running; None: the model is thinking
    recent: list[ProgressStep] = []  # the latest finished steps, oldest first
    plan: list[PlanItem] = []
    commands: int = 0
    file_changes: int = 0
    files: list[str] = []  # the paths changed, first ones only (`files_total` counts them all)
    files_total: int = 0
    tool_calls: int = 0
    searches: int = 0
    compactions: int = 0
    steers: int = 0  # more text the agent took into this turn
    waiting: int = 0  # requests (approvals, questions) the agent waits on now
    items: int = 0  # every item of the turn, thinking included


class GoalInput(BaseModel):
    """Set a goal on the thread and follow the turns the agent starts for it by itself, until the
    goal is done, blocked, cleared (the activity cancelled) or over its budget."""

    thread_id: str | None  # None: a new thread
    settings: ThreadSettings
    objective: str
    max_turns: int
    max_seconds: float
    # A goal taken up again on the same turn (after a usage limit): what it used before.
    turns_before: int = 0
    seconds_before: float = 0.0


class GoalProgress(BaseModel):
    """A goal so far: `run_goal`'s heartbeat details, its report to the turn workflow as each of the
    agent's turns for it ends, and how the goal stood when `run_goal` returned."""

    thread_id: str
    status: GoalStatus = "active"
    turns: int = 0  # turns the agent started for the goal
    tokens: int = 0
    seconds: float = 0.0
    started_at: float = 0.0  # host time (unix s) the goal was set, less `seconds_before`
    turn_id: str | None = None  # the agent's latest turn for the goal
    turn_status: EndStatus | None = None  # how that turn ended; None while it runs
    turn_text: str = ""  # its final message, shortened
    over_budget: Literal["turns", "hours"] | None = None


class TurnProgress(BaseModel):
    """Heartbeat details of `run_turn`: the submitted turn, sent the moment the agent accepts it, so
    a retry follows that turn instead of submitting the prompt again. Shown in the Temporal UI.
    Every second after that it also carries what the agent is doing (`activity`), which the chat's
    progress follower reads from the pending activity (activities/channel.py)."""

    thread_id: str
    turn_id: str  # the agent's id of the turn, not a workflow id
    last_item: str | None = None
    activity: TurnActivity | None = None


class AgentRequest(BaseModel):
    """A request (approval, question) the agent is waiting on, forwarded to the turn workflow."""

    key: str
    kind: RequestKind
    method: str  # the agent's own name for the request, shown to no one but kept for the audit
    thread_id: str
    turn_id: str | None = None
    item_id: str | None = None
    command: str | None = None
    cwd: str | None = None
    reason: str | None = None
    diff: str | None = None
    questions: list[dict[str, Any]] = []
    permissions: dict[str, Any] = {}  # what a permissions request asks for (network, file system)
    # A command approval may also ask for more permissions; accepting it grants them.
    additional_permissions: dict[str, Any] = {}


class TurnOutcome(BaseModel):
    """How a turn ended, read back from the agent's stored thread (never assumed from events)."""

    thread_id: str
    turn_id: str
    status: EndStatus
    final_text: str = ""
    error: str | None = None
    runtime_restarted: bool = False
    # The agent refused the prompt itself (too long): `error` says why in words for the person; no
    # turn was started, and sending the same text again fails the same way.
    input_refused: bool = False
    error_kind: ErrorKind | None = None  # None: any other failure, or none
    # For a usage or rate limit: when it resets (unix seconds), if the agent said; the turn waits.
    retry_at: float | None = None
    goal: GoalProgress | None = None  # for a goal (`run_goal`): how it stood at the end

    # What the turn did, as its progress card's summary shows it (None: not followed).
    activity: TurnActivity | None = None
    # The files the turn changed (paths as the agent gave them), for the final card's file list.
    changed_files: list[str] = []
    # The images the agent viewed (its view_image tool), paths as it gave them, for the final card.
    viewed_images: list[str] = []


class AgentAccount(BaseModel):
    """Whether the agent on a host can reach its model: logged in, or needing no login."""

    logged_in: bool
    detail: str = ""  # in words: "an OpenAI API key", "not logged in"


class Person(BaseModel):
    id: str
    name: str = ""


class Decision(BaseModel):
    """A person's (or a rule's) answer to a pending request: a card click, a text shortcut, the
    terminal, the policy."""

    key: str
    decision: DecisionWord | None = None
    answers: dict[str, list[str]] = {}  # user-input answers by question id
    operator: Person


class AnswerRequestInput(BaseModel):
    """The decision on one request, for the host to answer its agent in the agent's own terms.

    Turns scheduled before this shape carried the wire answer already built (`result`); a retry of
    such an activity may still arrive after an upgrade, so the host takes that shape too.
    """

    key: str
    request: AgentRequest | None = None
    decision: Decision | None = None
    result: dict[str, Any] | None = None  # the old shape: the agent's answer, built by the workflow


class SteerTurnInput(BaseModel):
    """More text for the turn the calling workflow runs on this host (the host knows which)."""

    text: str


# --- threads of a workspace (docs/continuity.md) ---------------------------------------------------


class ThreadsQuery(BaseModel):
    """The recent threads of one workspace on the host, whoever started them (a terminal too)."""

    cwd: str
    limit: int = 10


class ThreadRef(BaseModel):
    thread_id: str


class ForkInput(BaseModel):
    """A new thread with the history of `thread_id`, in `settings` (its MCP servers among them)."""

    thread_id: str
    settings: ThreadSettings


class AgentThread(BaseModel):
    """One stored thread as a person picks it: what it began with, when it last moved."""

    thread_id: str
    title: str = ""  # its name when it has one, else its first words
    updated_at: float = 0.0  # unix seconds
    last_answer: str = ""  # the final answer of its latest turn (only where asked for)
    forked_from: str | None = None
    cwd: str = ""


class ThreadRelease(BaseModel):
    """The host let go of a thread (or could not), and where a terminal finds it."""

    released: bool
    codex_home: str = ""  # the agent's home on the host: a terminal must use the same one
