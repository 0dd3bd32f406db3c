"""What the workflows take, give, keep and show: a turn's input and result, the state a
conversation carries across continue-as-new, what each shows to a query, what is handed over.

Recorded histories hold these as JSON by field name: a class may be renamed freely, a field only
with its old spelling still accepted (docs/operations.md, "Restarts and upgrades").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, model_validator

from ally import names
from ally.contracts.agent import (
    AgentRequest,
    AgentThread,
    Decision,
    GoalProgress,
    Person,
    RuntimeLocation,
    ThreadSettings,
)
from ally.contracts.chat import ChatRef, InboundMessage
from ally.contracts.policy import Mode, PolicyConfig, SessionGrants
from ally.contracts.workspace import AutosaveResult

# --- a turn ----------------------------------------------------------------------------------------


class LongWork(BaseModel):
    """How long work is held (`[long_work]` in config.toml; docs/long-work.md): a turn that hits the
    account's usage limit waits for its reset; a goal runs within its budget."""

    unknown_reset_s: float = 15 * 60  # the wait when the limit did not say when it resets
    after_reset_s: float = 5.0  # run this long after the reset: clocks differ a little
    max_waits: int = 5  # a turn limited this often in a row fails after all
    goal_max_turns: int = 20  # the agent's turns for one goal, at most
    goal_max_s: float = 4 * 3600  # and the time it may take, at most


class LimitWait(BaseModel):
    """A turn waits for the account's usage limit to reset (`until`, unix seconds), or waits no more
    (`until` None): what a turn tells its conversation and the owner's alerts."""

    turn_workflow_id: str
    chat_id: str = ""
    until: float | None = None


class TurnOrigin(BaseModel):
    """Where a turn came from: a person's message in a chat, a person's `/goal` (the turn is the
    goal: every turn the agent runs for it, docs/long-work.md), or a routine's scheduled run
    (workflows/routine.py). A routine's turn has no person's message to answer: its `message_id` is
    the run's own id, its `sender` the routine, and its replies are posted to the chat (or topic)
    rather than as a reply; only the assistant's approvers may decide its approvals."""

    kind: Literal["message", "routine", "goal"] = "message"
    message_id: str
    sender: Person
    routine: str | None = None  # the routine's name, for kind "routine"


class TurnInput(BaseModel):
    message: InboundMessage  # the chat to answer in and the text to run, whatever the origin
    origin: TurnOrigin
    runtime: RuntimeLocation
    thread_id: str | None
    settings: ThreadSettings
    approvers: list[str] = []  # besides the sender, who may decide this turn's approvals
    approval_timeout_s: float = 30 * 60
    reminder_after_s: float = 10 * 60
    policy: PolicyConfig = PolicyConfig()
    mode: Mode = "ask"
    grants: SessionGrants = SessionGrants()  # "approve for session" answers in this thread so far
    assistant: str = names.DEFAULT_ASSISTANT  # the id of the assistant whose turn this is
    # After a turn that changed files in a git workspace, commit them locally (workflows/turn.py).
    autosave: bool = False
    long_work: LongWork = LongWork()
    alerts_workflow_id: str | None = None  # told when the turn waits for a usage limit; None = nobody
    goal: str | None = None  # the objective, for a goal's turn (origin "goal"); the budget is long_work's

    @model_validator(mode="before")
    @classmethod
    def _from_a_message(cls, data: Any) -> Any:
        """Turns started before `origin` existed were all a person's message."""
        if isinstance(data, dict) and data.get("origin") is None:
            message = data.get("message")
            if isinstance(message, InboundMessage):
                message = message.model_dump()
            if isinstance(message, dict):
                origin = {"message_id": message.get("message_id"), "sender": message.get("sender")}
                return {**data, "origin": origin}
        return data


class PendingRequest(BaseModel):
    """A request the turn workflow holds: shown, decided, answered (workflow state, never a payload)."""

    request: AgentRequest
    shown_at: float
    card_message_id: str | None = None
    decision: Decision | None = None
    answered: bool = False
    reminded: bool = False
    asked_because: str | None = None  # why the policy left it to a person, for the card


class DecisionRecord(BaseModel):
    """One line of the audit trail: who (or which rule) decided what, and when."""

    kind: str
    what: str
    decision: str
    decided_by: str
    decided_at: str
    by_policy: bool = False  # a rule, the chat's mode or a session grant decided, not a person
    key: str = ""  # the request's key: whoever decided can see what became of the decision


class TurnResult(BaseModel):
    thread_id: str | None
    turn_id: str | None
    status: str  # completed | interrupted | failed | host_lost
    runtime_restarted: bool = False
    grants: SessionGrants = SessionGrants()
    decisions: list[DecisionRecord] = []
    unsteered: list[str] = []  # steers that reached the turn only after the agent had finished it
    autosave: AutosaveResult | None = None  # None: autosave was off (or the host was lost)
    goal: GoalProgress | None = None  # a goal's turn: how the goal stood at its end


class TurnView(BaseModel):
    state: str
    thread_id: str | None
    turn_id: str | None
    pending: list[AgentRequest]
    steers: int
    decisions: list[DecisionRecord] = []


# --- a conversation --------------------------------------------------------------------------------


class GoalView(BaseModel):
    """The conversation's goal, running or last (what `/goal` shows)."""

    objective: str
    turn_workflow_id: str
    max_turns: int
    max_s: float
    progress: GoalProgress | None = None  # None until the first of its turns has ended
    ended: bool = False


class HeldAttachment(BaseModel):
    """A group image or file kept for its sender's next request (see `HELD_FOR_S`)."""

    message: InboundMessage
    held_at: float  # workflow time it arrived


class ConversationState(BaseModel):
    """Everything a conversation carries across continue-as-new.

    A conversation is one assistant in one chat, or in one topic of a topic group
    (`names.conversation_id`); conversations recorded before assistants existed are the default
    assistant's, at the chat's top level.
    """

    chat: ChatRef
    assistant: str = names.DEFAULT_ASSISTANT  # the assistant's id (stable across renames)
    assistant_name: str = ""  # its name as shown to people; "" = the id
    topic: str = ""  # the topic (its first message's id) in a topic group; "" = the whole chat
    autosave: bool = False
    settings: ThreadSettings
    discovery_queue: str = names.RUNTIME_DISCOVERY_QUEUE
    # How long a turn waits for a runtime host to take `locate_runtime` before the chat is told that
    # none answers (the assistant's host, when it has one). Tests shorten it.
    locate_timeout_s: float = 30.0
    thread_id: str | None = None
    runtime: RuntimeLocation | None = None
    busy_policy: Literal["queue", "steer"] = "queue"
    approvers: list[str] = []
    queue: list[InboundMessage] = []
    seen: list[str] = []
    last_message: InboundMessage | None = None
    turns: int = 0
    notices: int = 0  # numbers each notice, so its idempotency key is never reused
    policy: PolicyConfig = PolicyConfig()
    mode: Mode | None = None  # this chat's autonomy; None = the policy's default
    grants: SessionGrants = SessionGrants()  # "approve for session" answers in the current thread
    automatic: list[str] = []  # the latest decisions the policy took on its own, for /status
    held: list[HeldAttachment] = []  # attachments waiting for their sender's next request
    unannounced: list[str] = []  # ids of queued messages not told their position yet
    announce_at: float | None = None  # workflow time the next queue notice is due
    last_announced: float | None = None  # workflow time of the last queue notice
    alerts_workflow_id: str | None = None  # told of each failed turn (workflows/alerts.py); None = nobody
    # Continuity (docs/continuity.md): late messages held until the chat says run or drop them,
    # the cards that offered them; a thread handed off to a terminal, what waits meanwhile.
    stale: list[InboundMessage] = []
    stale_due: float | None = None  # workflow time the card for the held late messages is due
    stale_cards: list[str] = []
    handed_off: bool = False
    handoff_held: list[InboundMessage] = []
    handoff_cards: list[str] = []
    listed_threads: list[str] = []  # the thread ids /threads showed last, for /resume N
    long_work: LongWork = LongWork()
    goal: GoalView | None = None  # the goal running now, or the last one


class ChatConfig(BaseModel):
    """What this machine's configuration says about a chat now. Every hand-over carries it, so an
    edited config.toml reaches chats whose conversations were started before the edit."""

    settings: ThreadSettings
    policy: PolicyConfig = PolicyConfig()
    approvers: list[str] = []
    alerts_workflow_id: str | None = None
    assistant_name: str = ""  # the assistant may have been renamed since the conversation began
    discovery_queue: str | None = None  # where to find the assistant's host; None = as it was
    autosave: bool = False
    long_work: LongWork | None = None  # None: as it was


class Inbound(BaseModel):
    message: InboundMessage
    config: ChatConfig | None = None


class ConversationView(BaseModel):
    thread_id: str | None
    running: str | None
    running_turn_workflow_id: str | None
    queued: list[str]
    busy_policy: str
    turns: int
    handed_off: bool = False  # its thread is handed off to a terminal (docs/continuity.md)


# --- the threads of a host, for the terminal --------------------------------------------------------


class ThreadsLookup(BaseModel):
    """What `ally threads` and `ally handoff` ask a host (workflows/threads.py): the recent threads
    of a workspace, or one thread by id. The host is found as a conversation finds it."""

    discovery_queue: str
    cwd: str
    limit: int = 10
    thread_id: str | None = None  # just this one thread, with its last answer
    locate_timeout_s: float = 10.0


class BoundThreadsQuery(BaseModel):
    assistant: str  # its id


class ThreadBinding(BaseModel):
    """A running conversation of an assistant that holds a thread."""

    thread_id: str
    conversation_id: str
    chat: str
    topic: str = ""
    handed_off: bool = False


class ThreadsFound(BaseModel):
    host: str = ""  # the runtime host that answered; "" when none did
    threads: list[AgentThread] = []
    problem: str = ""  # in words for a person: no host answered, no such thread
