"""The Feishu events the gateway subscribes to, as pydantic models: the boundary where raw JSON stops.

Shapes from docs/feishu-platform.md §1-2 (v2 envelopes:
`{"schema":"2.0","header":{…},"event":{…}}`). The SDK's own typed objects are turned back into JSON
and validated here (`from_sdk`), so the code after the gateway reads one kind of model whichever
transport (long connection or webhook) delivered the event; raw dict envelopes validate the same
way. Unknown fields are ignored: Feishu adds fields.
"""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

from lark_oapi.core.json import JSON
from pydantic import BaseModel, ConfigDict, Field

EventT = TypeVar("EventT", bound=BaseModel)

MESSAGE_RECEIVED = "im.message.receive_v1"
REACTION_CREATED = "im.message.reaction.created_v1"
REACTION_DELETED = "im.message.reaction.deleted_v1"
MESSAGE_RECALLED = "im.message.recalled_v1"
BOT_ADDED = "im.chat.member.bot.added_v1"
BOT_REMOVED = "im.chat.member.bot.deleted_v1"
P2P_CHAT_ENTERED = "im.chat.access_event.bot_p2p_chat_entered_v1"
MESSAGE_READ = "im.message.message_read_v1"
CARD_ACTION = "card.action.trigger"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class UserId(_Model):
    open_id: str = ""
    union_id: str = ""
    user_id: str | None = None


class Header(_Model):
    event_id: str
    event_type: str
    create_time: str | int = ""
    app_id: str = ""
    tenant_key: str = ""


class Envelope(_Model, Generic[EventT]):
    header: Header
    event: EventT


# --- im.message.receive_v1 -------------------------------------------------------------------------


class Sender(_Model):
    sender_id: UserId = UserId()
    sender_type: str = "user"


class Mention(_Model):
    key: str  # the placeholder in the text, e.g. "@_user_1"
    id: UserId = UserId()
    name: str = ""


class Message(_Model):
    message_id: str
    root_id: str = ""  # first message of the reply chain ("" at top level)
    parent_id: str = ""  # the message this one replies to
    thread_id: str = ""  # "omt_…" inside a topic/thread
    chat_id: str
    chat_type: str  # "p2p" | "group" (anything else is treated as a group)
    message_type: str
    content: str  # a JSON *string*
    mentions: list[Mention] | None = None
    create_time: str | int = ""


class MessageReceived(_Model):
    sender: Sender
    message: Message


# --- reactions, recalls, membership, reads ---------------------------------------------------------


class Emoji(_Model):
    emoji_type: str = ""


class ReactionEvent(_Model):
    message_id: str
    reaction_type: Emoji = Emoji()
    operator_type: str = "user"
    user_id: UserId = UserId()
    action_time: str | int = ""


class Recalled(_Model):
    message_id: str
    chat_id: str = ""
    recall_type: str = ""


class ChatMembership(_Model):
    """Bot added to / removed from a group, or a person opening the bot's DM."""

    chat_id: str
    operator_id: UserId = UserId()
    name: str = ""


class Reader(_Model):
    reader_id: UserId = UserId()


class MessageRead(_Model):
    reader: Reader = Reader()
    message_id_list: list[str] = []


# --- card.action.trigger ---------------------------------------------------------------------------


class CardAction(_Model):
    tag: str = ""
    value: dict[str, Any] | None = None  # the clicked button's behaviors[].value
    form_value: dict[str, Any] | None = None  # a submitted form's fields, by name
    option: str | None = None


class CardContext(_Model):
    open_message_id: str = ""
    open_chat_id: str = ""


class Operator(_Model):
    open_id: str = ""
    union_id: str = ""


class CardClick(_Model):
    operator: Operator = Operator()
    token: str = ""
    action: CardAction = CardAction()
    context: CardContext = CardContext()


class RawEvent(_Model):
    """Any other event: only its header is read (for the log line)."""

    header: Header | None = None
    event: dict[str, Any] = Field(default_factory=dict)


def from_sdk(data: Any) -> dict[str, Any]:
    """An SDK event object as the JSON Feishu sent (the SDK drops nothing we read, and nulls)."""
    raw: dict[str, Any] = json.loads(JSON.marshal(data) or "{}")
    return raw
