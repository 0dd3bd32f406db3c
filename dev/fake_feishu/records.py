"""What the fake remembers: every request, every message, reaction and upload, and what tests registered.

Tests read these models to assert on what a user would have seen in Feishu; ids and times are strings
because Feishu sends them as strings (docs/feishu-platform.md §1).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field


class RecordedCall(BaseModel):
    """One HTTP request as the fake received it, and the answer it gave."""

    method: str
    path: str
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    """The parsed JSON body; the text fields of a multipart body; None when there is no JSON."""
    raw_body: bytes = b""
    status: int = 0
    """The HTTP status the fake answered."""
    code: int | None = None
    """The Feishu `code` the fake answered; None for binary answers (resource downloads)."""
    answer: Any = None
    """The JSON the fake answered, parsed; None for binary answers."""

    def header(self, name: str) -> str | None:
        """A request header, looked up case-insensitively."""
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)

    @property
    def bearer_token(self) -> str | None:
        authorization = self.header("Authorization") or ""
        return authorization.removeprefix("Bearer ") if authorization.startswith("Bearer ") else None


class Message(BaseModel):
    """A message in a chat: sent by the bot through the API (`sender_type="app"`), or by a user
    (`sender_type="user"`) when its event went through the fake (push_event / record_inbound)."""

    message_id: str
    chat_id: str
    msg_type: str
    raw_content: str
    """The content JSON string exactly as sent (Feishu's `content` is a JSON *string*)."""
    sender_type: Literal["app", "user"] = "app"
    sender_id: str = ""
    """The app_id for bot messages, the open_id for user messages."""
    receive_id_type: str | None = None
    receive_id: str | None = None
    parent_id: str = ""
    """The message this one replies to ("" at top level)."""
    root_id: str = ""
    thread_id: str = ""
    reply_in_thread: bool = False
    uuid: str | None = None
    create_time: str = ""
    update_time: str = ""
    patches: list[Any] = Field(default_factory=list)
    """Each PATCH's parsed content, oldest first; `content` is the newest."""
    recalled: bool = False

    @property
    def content(self) -> Any:
        """The current content, parsed (the original, or the last PATCH)."""
        return json.loads(self.raw_content)

    @property
    def reply_to(self) -> str:
        return self.parent_id

    @property
    def text(self) -> str | None:
        """The `text` of a text message, else None."""
        content = self.content
        return content.get("text") if self.msg_type == "text" and isinstance(content, dict) else None


class Reaction(BaseModel):
    reaction_id: str
    message_id: str
    emoji_type: str
    operator_id: str
    operator_type: Literal["app", "user"] = "app"
    action_time: str
    deleted: bool = False


class User(BaseModel):
    """A contact the bot may look up (`GET /open-apis/contact/v3/users/{open_id}`)."""

    open_id: str
    name: str
    union_id: str = ""
    user_id: str = ""
    en_name: str = ""


class Chat(BaseModel):
    """A chat the bot may look up (`GET /open-apis/im/v1/chats/{chat_id}`)."""

    chat_id: str
    name: str
    chat_mode: Literal["group", "topic", "p2p"] = "group"
    chat_type: Literal["private", "public"] = "private"
    description: str = ""
    owner_id: str = ""


class Resource(BaseModel):
    """A file or image attached to a user's message, served by the message-resource download."""

    message_id: str
    key: str
    data: bytes
    file_name: str | None = None
    content_type: str = "application/octet-stream"


class UploadedFile(BaseModel):
    """A file the bot uploaded (`POST /open-apis/im/v1/files`), to send as a `file` message."""

    file_key: str
    file_type: str
    file_name: str
    data: bytes
    duration: int | None = None


class UploadedImage(BaseModel):
    """An image the bot uploaded (`POST /open-apis/im/v1/images`), for an `image` message or a
    card's `img` element."""

    image_key: str
    image_type: str
    data: bytes


class Fault(BaseModel):
    """An injected answer for the next `times` requests whose path contains `path_contains`."""

    path_contains: str
    method: str | None = None
    status: int | None = 429
    """None: after `delay_s`, answer normally (a slow answer, not a failure)."""
    code: int = 99991400
    msg: str | None = None
    times: int = 1
    reset_seconds: float | None = 1
    delay_s: float = 0.0
    body: bytes | None = None
    content_type: str = "application/json; charset=utf-8"

    def matches(self, method: str, path: str) -> bool:
        return self.path_contains in path and (self.method is None or self.method.upper() == method)
