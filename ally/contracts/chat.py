"""The chat's side: which chat, who spoke, what the channel shows (replies, approval cards, emoji).

Channels (ally/channels/, ally/channels/feishu/) speak these; the workflows never see a channel's own shapes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ally.contracts.agent import AgentRequest, Person, TurnActivity


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


class InboundMessage(BaseModel):
    message_id: str
    chat: ChatRef
    sender: Person
    text: str
    local_images: list[str] = []
    reply_to: str | None = None  # the channel message a reply should answer (thread-aware)
    quoted: str = ""  # the message this one quotes, as a blockquote the agent reads before the text
    # A group image or file sent without an @-mention (it cannot carry one): the conversation keeps
    # it for the sender's next request instead of running a turn for it.
    attachment_only: bool = False
    # Sent this long before it reached the bridge (Feishu redelivers for hours; the bridge may have
    # been down): the conversation asks before running it (docs/continuity.md "Stale messages").
    stale: bool = False
    sent_at: float | None = None  # unix seconds the chat says it was sent; None: not known


class Choice(BaseModel):
    """A button under a notice: clicking it is the same as sending `command` in the chat (a
    terminal without buttons types the command instead)."""

    label: str
    command: str  # e.g. "/stale run"
    style: Literal["primary", "default", "danger"] = "default"


class SentMessage(BaseModel):
    message_id: str


class Reply(BaseModel):
    chat: ChatRef
    reply_to: str | None
    text: str
    idempotency_key: str
    tone: Literal["answer", "notice", "problem"] = "answer"
    choices: list[Choice] = []  # buttons under the text; a click sends the command to `conversation`
    conversation: str = ""  # the workflow id of the conversation a choice goes to
    # An answer with no progress card to list them: the files the turn changed (each with a button
    # sending `/file PATH` to `conversation`), shown relative to `workspace`, and uploaded images.
    files: list[str] = []
    workspace: str | None = None
    images: dict[str, str] = {}


class ReplyUpdate(BaseModel):
    """A notice with choices, rewritten once one was taken (its buttons gone)."""

    chat: ChatRef
    message_id: str
    text: str


class ApprovalPrompt(BaseModel):
    chat: ChatRef
    reply_to: str | None
    turn_workflow_id: str  # where a click on the card sends its decision
    request: AgentRequest
    idempotency_key: str
    expires_in_s: float
    asked_because: str | None = None  # why the policy did not decide it: "network access (curl)"


class ApprovalOutcome(BaseModel):
    chat: ChatRef
    message_id: str
    request: AgentRequest
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


ProgressState = Literal["running", "completed", "interrupted", "failed"]


class ProgressWatch(BaseModel):
    """What the chat's progress follower needs (`follow_progress`, activities/channel.py): the turn
    whose `run_turn` heartbeats it reads, and where its card goes."""

    chat: ChatRef
    reply_to: str | None
    turn_workflow_id: str
    started_at: float  # unix time the turn started: elapsed time is counted from here
    workspace: str | None = None  # paths inside it are shown relative to it


class ProgressCardRef(BaseModel):
    """The follower's heartbeat: the card it shows, so a retry (its worker was killed) goes on with
    the same card; `cards` counts the cards it started (a card that could no longer be edited is
    replaced by a new one)."""

    message_id: str | None = None
    cards: int = 0
    shown_version: int = -1  # the activity version the card shows


class ProgressView(BaseModel):
    """One rendering of a turn's progress card: a new card (`message_id` None, sent with
    `idempotency_key`) or an edit of the card it names."""

    chat: ChatRef
    reply_to: str | None
    turn_workflow_id: str
    message_id: str | None
    idempotency_key: str
    state: ProgressState = "running"
    activity: TurnActivity | None = None
    elapsed_s: float = 0.0
    quiet_s: float = 0.0  # how long since the agent's last sign of life
    workspace: str | None = None
    # A settled card: the files the turn changed, each with a button sending `/file PATH` to
    # `conversation`, and the images among them already uploaded (path -> the channel's image key).
    files: list[str] = []
    conversation: str = ""
    images: dict[str, str] = {}


class ProgressEnd(BaseModel):
    """How a followed turn ended, for the channel to settle its progress card into a summary."""

    turn_workflow_id: str
    state: ProgressState
    activity: TurnActivity | None = None
    elapsed_s: float = 0.0
    workspace: str | None = None
    # Files out (docs/operations.md "Files out"): every file the turn changed, each with a button
    # that sends `/file PATH` to `conversation`; images among them are fetched from the host (its
    # pinned queue) and shown on the card. Empty in turns started before files out.
    files: list[str] = []
    conversation: str = ""
    host_queue: str = ""
    host: str = ""
    viewed_images: list[str] = []  # images the agent looked at in the turn: shown beside those it wrote


class FinalReply(BaseModel):
    """A turn's last message and the reactions settled with it, in one delivery: the working emoji
    comes off, and a completed turn gets its done emoji. Reactions are best effort; the reply is not.
    A turn whose progress was followed also settles its progress card here, before the answer goes
    out, also best effort."""

    reply: Reply
    working: ReactionRef | None = None
    done_emoji: str | None = None
    progress: ProgressEnd | None = None
