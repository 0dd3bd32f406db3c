"""Models that cross Temporal boundaries: workflow and activity inputs and outputs, signals, updates.

One model argument per workflow and activity, so fields can be added without breaking histories
(notes/temporal.md, style). Keep transcripts out: payloads carry ids and the final text only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from ally.codex.models import EndStatus, RequestKind
from ally.codex.models import ThreadSettings as ThreadSettings  # re-exported: it crosses Temporal too


class RuntimeLocation(BaseModel):
    """Where a conversation's Codex thread lives: the host and its pinned task queue."""

    host: str
    task_queue: str


class StartTurnInput(BaseModel):
    thread_id: str | None  # None: a new thread
    settings: ThreadSettings
    text: str
    local_images: list[str] = []
    plan_mode: bool = False


class TurnProgress(BaseModel):
    """Heartbeat details of `run_turn`: the submitted turn, sent the moment Codex accepts it, so a
    retry follows that turn instead of submitting the prompt again. Shown in the Temporal UI."""

    thread_id: str
    turn_id: str
    last_item: str | None = None


class CodexRequest(BaseModel):
    """A server request (approval, question) Codex is waiting on, forwarded to the turn workflow."""

    key: str
    kind: RequestKind
    method: str
    thread_id: str
    turn_id: str | None = None
    item_id: str | None = None
    command: str | None = None
    cwd: str | None = None
    reason: str | None = None
    diff: str | None = None
    questions: list[dict[str, Any]] = []
    permissions: dict[str, Any] = {}  # what a permissions request asks for (network, file system)
    # A command approval may also ask for more permissions; accepting it grants them (Codex 0.169).
    additional_permissions: dict[str, Any] = {}


class TurnOutcome(BaseModel):
    """How a turn ended, read back from `thread/read` (never assumed from the event stream)."""

    thread_id: str
    turn_id: str
    status: EndStatus
    final_text: str = ""
    error: str | None = None
    runtime_restarted: bool = False
    # Codex refused the prompt itself (too long): `error` says why in words for the person; no
    # turn was started, and sending the same text again fails the same way.
    input_refused: bool = False


class AnswerRequestInput(BaseModel):
    key: str
    result: dict[str, Any]


class SteerTurnInput(BaseModel):
    """More text for the turn the calling workflow runs on this host (the host knows which)."""

    text: str


# --- Chats -------------------------------------------------------------------------------------


class ChatRef(BaseModel):
    """A chat, and the task queue of the worker that serves it: that worker runs the chat's
    conversation and turns and speaks its channel (workers/chat.py).

    Feishu chats are served by the gateway; a terminal conversation (`ally chat`) serves its own
    queue, so the same workflows reach either without knowing which.
    """

    channel: Literal["feishu", "console"]
    chat_id: str
    chat_type: Literal["p2p", "group"] = "p2p"
    worker_queue: str
    reactions: bool = True  # whether the channel shows emoji on messages (the terminal does not)


class Person(BaseModel):
    id: str
    name: str = ""


class InboundMessage(BaseModel):
    message_id: str
    chat: ChatRef
    sender: Person
    text: str
    local_images: list[str] = []
    reply_to: str | None = None  # the channel message a reply should answer (thread-aware)
    quoted: str = ""  # the message this one quotes, as a blockquote Codex reads before the text
    # A group image or file sent without an @-mention (it cannot carry one): the conversation keeps
    # it for the sender's next request instead of running a turn for it.
    attachment_only: bool = False


class SentMessage(BaseModel):
    message_id: str


class Reply(BaseModel):
    chat: ChatRef
    reply_to: str | None
    text: str
    idempotency_key: str
    tone: Literal["answer", "notice", "problem"] = "answer"


class ApprovalPrompt(BaseModel):
    chat: ChatRef
    reply_to: str | None
    turn_workflow_id: str  # where a click on the card sends its decision
    request: CodexRequest
    idempotency_key: str
    expires_in_s: float
    asked_because: str | None = None  # why the policy did not decide it: "network access (curl)"


class ApprovalOutcome(BaseModel):
    chat: ChatRef
    message_id: str
    request: CodexRequest
    decision: str
    decided_by: str  # a person's name, or the rule that decided
    decided_at: str


class Reaction(BaseModel):
    """An emoji on a person's message: progress without a message (Feishu emoji_type names)."""

    chat: ChatRef
    message_id: str
    emoji: str


class ReactionRef(BaseModel):
    chat: ChatRef
    message_id: str
    reaction_id: str | None  # None where the channel shows no reactions (the terminal)


class FinalReply(BaseModel):
    """A turn's last message and the reactions settled with it, in one delivery: the working emoji
    comes off, and a completed turn gets its done emoji. Reactions are best effort; the reply is not."""

    reply: Reply
    working: ReactionRef | None = None
    done_emoji: str | None = None


class Decision(BaseModel):
    """A person's answer to a pending request (a card click, a text shortcut, the terminal)."""

    key: str
    decision: Literal["accept", "acceptForSession", "decline", "cancel"] | None = None
    answers: dict[str, list[str]] = {}  # user-input answers by question id
    operator: Person
