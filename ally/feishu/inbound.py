"""A Feishu message event becomes an `InboundMessage`, or a reason it is not one.

Rules (notes/feishu.md §1):
- Direct messages always count; in a group only messages that @-mention the bot do. The bot's own
  open_id comes from GET /open-apis/bot/v3/info, fetched once.
- Text holds placeholders (`@_user_1`), resolved through `mentions[]`: the bot's mention is removed,
  other people's become "@Name", so Codex reads what the person meant.
- `content` is a JSON string: text `{"text"}`, post (rich text) `{"title","content":[[…]]}` with no
  locale wrapper on receive, image `{"image_key"}`, file `{"file_key","file_name"}`. Images and
  files are downloaded into the workspace (Codex reads them from there): images go to Codex as
  `local_images`, files are named by path in the text.
- The sender's name is not in the event: it is looked up once (contact API, cached) and becomes
  `Person.name`, which the turn puts in front of a group message so Codex knows who speaks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ally.contracts import ChatRef, InboundMessage, Person
from ally.feishu import FEISHU_CHATS_QUEUE
from ally.feishu.client import FeishuApi, FeishuApiError, FeishuRejected
from ally.feishu.events import Mention, MessageReceived

log = logging.getLogger(__name__)

NAME_TTL_S = 6 * 3600.0  # people rarely rename; a stale name for a few hours is harmless
NAMES_KEPT = 5000
SUPPORTED = "text, rich text, images and files"


@dataclass(frozen=True)
class Ignored:
    """Not a message for Codex; `tell` is what to say to the person, if anything."""

    reason: str
    tell: str | None = None


@dataclass(frozen=True)
class Normalised:
    message: InboundMessage
    thread_id: str  # the topic/thread the message sits in ("" at top level): replies stay there


class MessageReader:
    """Reads message events for one bot: caches the bot's open_id and people's names."""

    def __init__(
        self,
        api: FeishuApi,
        *,
        inbox: Path,
        worker_queue: str = FEISHU_CHATS_QUEUE,
        name_lookup_timeout_s: float = 2.0,
    ) -> None:
        self.api = api
        self.inbox = inbox
        self.worker_queue = worker_queue
        self.name_lookup_timeout_s = name_lookup_timeout_s
        self._bot_open_id: str | None = None
        self._bot_lock = asyncio.Lock()
        self._names: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def read(self, event: MessageReceived) -> Normalised | Ignored:
        message = event.message
        if event.sender.sender_type != "user":
            return Ignored(f"sent by a {event.sender.sender_type}, not a person")
        sender_id = event.sender.sender_id.open_id
        if not sender_id:
            return Ignored("no sender open_id")
        chat_type: Literal["p2p", "group"] = "p2p" if message.chat_type == "p2p" else "group"
        mentions = message.mentions or []
        bot_id = await self.bot_open_id() if chat_type == "group" or mentions else ""
        if chat_type == "group" and not any(m.id.open_id == bot_id for m in mentions):
            return Ignored("a group message that does not @-mention the bot")
        try:
            content = json.loads(message.content)
        except ValueError:
            return Ignored(f"content is not JSON: {message.content[:80]!r}")
        if not isinstance(content, dict):
            return Ignored("content is not a JSON object")

        images: list[str] = []
        notes: list[str] = []
        kind = message.message_type
        if kind == "text":
            text = str(content.get("text") or "")
        elif kind == "post":
            text, image_keys = post_text(content)
            for key in image_keys:
                await self._attach(message.message_id, key, "image", None, images, notes)
        elif kind == "image":
            text = ""
            await self._attach(
                message.message_id, str(content.get("image_key") or ""), "image", None, images, notes
            )
        elif kind == "file":
            text = ""
            name = str(content.get("file_name") or "") or None
            await self._attach(
                message.message_id, str(content.get("file_key") or ""), "file", name, images, notes
            )
        else:
            return Ignored(
                f"unsupported message type {kind!r}",
                tell=f"I can read {SUPPORTED}; this was a {kind} message.",
            )
        text = resolve_mentions(text, mentions, bot_id)
        text = "\n\n".join(part for part in (text, *notes) if part)
        if images and not text:
            text = "(an image)" if len(images) == 1 else f"({len(images)} images)"
        if not text:
            return Ignored("nothing but a mention")

        chat = ChatRef(
            channel="feishu", chat_id=message.chat_id, chat_type=chat_type, worker_queue=self.worker_queue
        )
        inbound = InboundMessage(
            message_id=message.message_id,
            chat=chat,
            sender=await self.person(sender_id),
            text=text,
            local_images=images,
            reply_to=message.message_id,
        )
        return Normalised(message=inbound, thread_id=message.thread_id)

    async def bot_open_id(self) -> str:
        """Fetched once; a failure raises (retryable) rather than guessing who is mentioned."""
        async with self._bot_lock:
            if self._bot_open_id is None:
                self._bot_open_id = await self.api.bot_open_id()
                log.info("bot open_id is %s", self._bot_open_id)
            return self._bot_open_id

    async def person(self, open_id: str, *, timeout_s: float | None = None) -> Person:
        """The person with their display name; an empty name when it cannot be looked up in time
        (no contact scope, outside the contact range, Feishu slow) rather than holding the event."""
        cached = self._names.get(open_id)
        if cached is not None and cached[1] > time.monotonic():
            self._names.move_to_end(open_id)
            return Person(id=open_id, name=cached[0])
        try:
            name = await asyncio.wait_for(
                self.api.user_name(open_id), timeout_s or self.name_lookup_timeout_s
            )
        except (FeishuApiError, TimeoutError) as error:
            log.warning("no name for %s: %s", open_id, error)
            return Person(id=open_id, name=cached[0] if cached else "")
        self._names[open_id] = (name, time.monotonic() + NAME_TTL_S)
        self._names.move_to_end(open_id)
        while len(self._names) > NAMES_KEPT:
            self._names.popitem(last=False)
        return Person(id=open_id, name=name)

    async def _attach(
        self,
        message_id: str,
        key: str,
        kind: Literal["image", "file"],
        name: str | None,
        images: list[str],
        notes: list[str],
    ) -> None:
        if not key:
            return
        try:
            download = await self.api.download(message_id, key, kind)
        except FeishuRejected as error:  # gone or not allowed: say so instead of dropping the message
            log.warning("could not download %s %s: %s", kind, key, error)
            notes.append(f"(an attached {kind} could not be downloaded)")
            return
        folder = self.inbox / _safe_name(message_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / _safe_name(name or download.file_name or (key + (".png" if kind == "image" else "")))
        path.write_bytes(download.data)
        if kind == "image":
            images.append(str(path))
        else:
            notes.append(f"(attached file: {path})")


def resolve_mentions(text: str, mentions: list[Mention], bot_open_id: str) -> str:
    """Remove the bot's placeholder, turn other people's into "@Name"; "@_all" becomes "@all"."""
    for mention in sorted(mentions, key=lambda m: len(m.key), reverse=True):  # @_user_10 before @_user_1
        if bot_open_id and mention.id.open_id == bot_open_id:
            text = re.sub(re.escape(mention.key) + r"[ \t]*", "", text)  # "@_user_1 run" -> "run"
        else:
            text = text.replace(mention.key, f"@{mention.name or mention.id.open_id}")
    text = text.replace("@_all", "@all")
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def post_text(content: dict[str, Any]) -> tuple[str, list[str]]:
    """Plain text (markdown-ish) of a rich-text post, and the image keys in it."""
    images: list[str] = []
    paragraphs: list[str] = []
    title = str(content.get("title") or "").strip()
    if title:
        paragraphs.append(title)
    for paragraph in content.get("content") or []:
        if not isinstance(paragraph, list):
            continue
        parts: list[str] = []
        for element in paragraph:
            if not isinstance(element, dict):
                continue
            part, image = _post_element(element)
            parts.append(part)
            if image:
                images.append(image)
        line = "".join(parts).rstrip()
        if line:
            paragraphs.append(line)
    return "\n".join(paragraphs), images


def _post_element(element: dict[str, Any]) -> tuple[str, str | None]:
    tag = element.get("tag")
    text = str(element.get("text") or "")
    if tag in ("text", "md"):
        return text, None
    if tag == "a":
        href = str(element.get("href") or "")
        return (f"[{text}]({href})" if href and text else text or href), None
    if tag == "at":
        # On receive the at element carries the placeholder ("@_user_1") as user_id, resolved later.
        user = str(element.get("user_id") or "")
        return (user if user.startswith("@_") else f"@{element.get('user_name') or user}"), None
    if tag == "code_block":
        language = str(element.get("language") or "").lower()
        return f"\n```{language}\n{text.rstrip()}\n```\n", None
    if tag == "img":
        key = str(element.get("image_key") or "")
        return "", key or None
    if tag == "hr":
        return "\n---\n", None
    return text, None  # emotion, media and future tags: their text, if any


def _safe_name(name: str) -> str:
    """A file name safe on disk: no directories, no control characters, not empty, not hidden."""
    base = Path(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.\- ]", "_", base).strip(" .")
    return cleaned[:120] or "attachment"
