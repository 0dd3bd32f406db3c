"""A Feishu message event becomes an `InboundMessage`, or a reason it is not one.

Rules (docs/feishu-platform.md §1):
- Direct messages always count; in a group only messages that @-mention the bot do. The bot's own
  open_id comes from GET /open-apis/bot/v3/info, fetched once.
- Text holds placeholders (`@_user_1`), resolved through `mentions[]`: the bot's mention is removed,
  other people's become "@Name", so Codex reads what the person meant. Nothing else is touched:
  indentation, tabs, trailing spaces and blank lines reach Codex as they were typed (pasted code,
  tracebacks and YAML depend on them).
- `content` is a JSON string: text `{"text"}`, post (rich text) `{"title","content":[[…]]}` with no
  locale wrapper on receive, image `{"image_key"}`, file `{"file_key","file_name"}`. Images and
  files are downloaded into the workspace (Codex reads them from there): images go to Codex as
  `local_images`, files are named by path in the text.
- A reply that quotes an earlier message (`parent_id`) brings that message along as a quote, its
  images too, so Codex sees what the person points at (`InboundMessage.quoted`). Inside a topic,
  a message that answers the topic's first message is not a quote: the topic is the context.
- A group image or file cannot carry an @-mention. When one reaches the gateway (only with the
  `im:message.group_msg` scope), it is handed over as `attachment_only`: the conversation keeps it
  for that person's next @-mention in the chat, within a few minutes (workflows/conversation.py).
- In a topic group (chat mode "topic", looked up once per chat) each topic is a conversation of its
  own, named by its first message (`Normalised.conversation_topic`); replies stay in their topic.
- The sender's name is not in the event: it is looked up once (contact API, cached) and becomes
  `Person.name`, which the turn puts in front of a group message so Codex knows who speaks. A
  lookup Feishu refused is not asked again for 10 minutes, one that failed for a minute: without
  the contact scope every message would otherwise cost a call of its own.
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

from ally.channels.feishu import FEISHU_CHATS_QUEUE
from ally.channels.feishu.client import FeishuApi, FeishuApiError, FeishuRejected
from ally.channels.feishu.events import Mention, MessageReceived
from ally.contracts import ChatRef, InboundMessage, Person

log = logging.getLogger(__name__)

NAME_TTL_S = 6 * 3600.0  # people rarely rename; a stale name for a few hours is harmless
# A lookup that failed is not asked again for every message meanwhile: Feishu refusing it (no
# contact scope, the person outside the app's contact range) will refuse it again for a while; a
# slow or failing Feishu gets a minute's rest.
NAME_REFUSED_RETRY_S = 600.0
NAME_FAILED_RETRY_S = 60.0
NAMES_KEPT = 5000
CHATS_KEPT = 5000
CHAT_MODE_RETRY_S = 60.0
SUPPORTED = "text, rich text, images and files"
QUOTE_MAX_CHARS = 4000  # a quote is context, not the question: a long one is shortened
# Post `emotion` elements carry Feishu's emoji_type; the common ones read better as emoji.
EMOJI = {
    "SMILE": "🙂",
    "LAUGH": "😄",
    "JOYFUL": "😊",
    "WINK": "😉",
    "THUMBSUP": "👍",
    "THUMBSDOWN": "👎",
    "OK": "👌",
    "DONE": "✅",
    "HEART": "❤️",
    "CLAP": "👏",
    "FIRE": "🔥",
    "PARTY": "🎉",
    "THINKING": "🤔",
    "CRY": "😢",
    "SOB": "😭",
    "FACEPALM": "🤦",
    "SHOCKED": "😮",
    "ROSE": "🌹",
    "MUSCLE": "💪",
    "PRAY": "🙏",
    "HEART_EYES": "😍",
    "WAVE": "👋",
}


@dataclass(frozen=True)
class Ignored:
    """Not a message for Codex; `tell` is what to say to the person, if anything."""

    reason: str
    tell: str | None = None


@dataclass(frozen=True)
class Normalised:
    message: InboundMessage
    topic_id: str  # the topic/thread the message sits in ("" at top level): replies stay there
    # In a topic group, the topic as a conversation: its first message's id (a top-level message
    # starts one). "" elsewhere: one conversation for the whole chat.
    conversation_topic: str = ""


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
        self._chat_modes: OrderedDict[str, tuple[str, float | None]] = OrderedDict()  # mode, retry at

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
        attachment_only = False
        if chat_type == "group" and not any(m.id.open_id == bot_id for m in mentions):
            if message.message_type not in ("image", "file"):
                return Ignored("a group message that does not @-mention the bot")
            attachment_only = True  # cannot carry a mention: kept for the sender's next one
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
        quoted = ""
        if message.parent_id and not (message.thread_id and message.parent_id == message.root_id):
            quoted = await self._quote(message.parent_id, message.message_id, bot_id, images)
        text = "\n\n".join(part for part in (text, *notes) if part.strip())
        if images and not text and not attachment_only:
            text = "(an image)" if len(images) == 1 else f"({len(images)} images)"
        if not text and not quoted and not attachment_only:
            return Ignored("nothing but a mention")
        if attachment_only and not (images or text):
            return Ignored("a group attachment that could not be read")

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
            quoted=quoted,
            attachment_only=attachment_only,
        )
        topic = ""
        if chat_type == "group" and await self.chat_mode(message.chat_id) == "topic":
            # A reply carries its topic's first message as root; a top-level message starts a topic.
            # Keyed by that id rather than thread_id, which a brand-new topic may not have yet.
            topic = message.root_id or message.message_id
        return Normalised(message=inbound, topic_id=message.thread_id or topic, conversation_topic=topic)

    async def chat_mode(self, chat_id: str) -> str:
        """The chat's mode, asked once per chat (a group does not become a topic group). A failed
        lookup (no `im:chat:readonly` scope, Feishu down) counts as a plain group for a minute."""
        known = self._chat_modes.get(chat_id)
        now = time.monotonic()
        if known is not None and (known[1] is None or known[1] > now):
            return known[0]
        try:
            mode = await self.api.chat_mode(chat_id)
            self._chat_modes[chat_id] = (mode, None)
        except FeishuApiError as error:
            log.info(
                "cannot tell whether %s is a topic group (%s); treating it as a plain group", chat_id, error
            )
            mode = "group"
            self._chat_modes[chat_id] = (mode, now + CHAT_MODE_RETRY_S)
        while len(self._chat_modes) > CHATS_KEPT:
            self._chat_modes.popitem(last=False)
        return mode

    async def _quote(self, parent_id: str, message_id: str, bot_id: str, images: list[str]) -> str:
        """The quoted message as a blockquote for Codex; its images are attached to this message."""
        try:
            parent = await self.api.get_message(parent_id)
        except FeishuApiError as error:
            log.warning("message %s quotes %s, which cannot be read: %s", message_id, parent_id, error)
            return "Quoting a message that could not be read."
        if parent.sender_type == "app":
            who = "your earlier reply"
        else:
            person = await self.person(parent.sender_id) if parent.sender_id else None
            who = (person.name if person else "") or "an earlier message"
        try:
            content = json.loads(parent.content) if parent.content else {}
        except ValueError:
            content = {}
        if not isinstance(content, dict):
            content = {}
        notes: list[str] = []
        kind = parent.msg_type
        if kind == "text":
            text = str(content.get("text") or "")
        elif kind == "post":
            text, image_keys = post_text(content)
            for key in image_keys:
                await self._attach(parent_id, key, "image", None, images, notes)
        elif kind == "image":
            text = "(an image, attached)"
            await self._attach(parent_id, str(content.get("image_key") or ""), "image", None, images, notes)
        elif kind == "file":
            text = ""
            name = str(content.get("file_name") or "") or None
            await self._attach(parent_id, str(content.get("file_key") or ""), "file", name, images, notes)
        elif kind == "interactive":
            text = card_text(content)
        else:
            text = f"(a {kind} message)"
        for key, name in parent.mentions.items():
            text = text.replace(key, f"@{name}")
        text = "\n\n".join(part for part in (text, *notes) if part.strip()) or f"(a {kind} message)"
        if len(text) > QUOTE_MAX_CHARS:
            text = text[:QUOTE_MAX_CHARS] + "\n… (quote shortened)"
        return f"Quoting {who}:\n" + "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))

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
            name = cached[0] if cached else ""
            retry_s = NAME_REFUSED_RETRY_S if isinstance(error, FeishuRejected) else NAME_FAILED_RETRY_S
            self._remember_name(open_id, name, retry_s)
            return Person(id=open_id, name=name)
        self._remember_name(open_id, name, NAME_TTL_S)
        return Person(id=open_id, name=name)

    def _remember_name(self, open_id: str, name: str, for_s: float) -> None:
        self._names[open_id] = (name, time.monotonic() + for_s)
        self._names.move_to_end(open_id)
        while len(self._names) > NAMES_KEPT:
            self._names.popitem(last=False)

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
    """Remove the bot's placeholder, turn other people's into "@Name"; "@_all" becomes "@all".

    Only the placeholder and the blanks that separate it from the words go: "@_user_1 run" becomes
    "run", "please @_user_1 run" becomes "please run". Every other character stays as typed."""
    for mention in sorted(mentions, key=lambda m: len(m.key), reverse=True):  # @_user_10 before @_user_1
        key = re.escape(mention.key)
        if bot_open_id and mention.id.open_id == bot_open_id:
            text = re.sub(rf"(?m)^[ \t]*{key}[ \t]*(\n|$)", "", text)  # alone on its line
            text = re.sub(rf"(?m)^{key}[ \t]*", "", text)  # starting a line, with its blanks
            text = re.sub(rf"(?m)[ \t]*{key}$", "", text)  # ending one
            text = re.sub(rf"{key} ?", "", text)  # inside a line: one separating space
        else:
            text = text.replace(mention.key, f"@{mention.name or mention.id.open_id}")
    return text.replace("@_all", "@all")


def post_text(content: dict[str, Any]) -> tuple[str, list[str]]:
    """The text (markdown-ish) of a rich-text post, and the image keys in it.

    One line per paragraph, empty paragraphs kept as blank lines, every space kept: a post is how
    Feishu sends a message with formatting or a code block, and code is whitespace."""
    images: list[str] = []
    lines: list[str] = []
    title = str(content.get("title") or "")
    if title.strip():
        lines.append(title)
    for paragraph in content.get("content") or []:
        if not isinstance(paragraph, list):
            continue
        line = ""
        after_block = False
        pictures = len(images)
        for element in paragraph:
            if not isinstance(element, dict):
                continue
            if element.get("tag") == "code_block":
                # Fences must start a line, and so must whatever follows the block.
                line += ("\n" if line else "") + _code_block(element)
                after_block = True
                continue
            part, image = _post_element(element)
            if image:
                images.append(image)
            if part and after_block:
                line, after_block = line + "\n", False
            line += part
        if line or len(images) == pictures:  # a paragraph that only held images is no blank line
            lines.append(line)
    return "\n".join(lines), images


def _code_block(element: dict[str, Any]) -> str:
    text = str(element.get("text") or "")
    language = str(element.get("language") or "").lower()
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)  # a fence the code itself cannot close
    newline = "" if not text or text.endswith("\n") else "\n"
    return f"{fence}{language}\n{text}{newline}{fence}"


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
    if tag == "img":
        key = str(element.get("image_key") or "")
        return "", key or None
    if tag == "emotion":
        emoji = str(element.get("emoji_type") or "")
        return (EMOJI.get(emoji) or (f":{emoji.lower()}:" if emoji else "")), None
    if tag == "hr":
        return "---", None
    return text, None  # media and future tags: their text, if any


def card_text(card: Any) -> str:
    """The words of a card (one of ours, read back with GET message): its markdown and plain
    texts in order, one per line."""
    found: list[str] = []
    if isinstance(card, dict):
        tag = card.get("tag")
        for field in ("content", "text"):
            value = card.get(field)
            if isinstance(value, str) and tag in ("markdown", "plain_text", "lark_md", "text", "md"):
                found.append(value)
        nested = [
            value
            for key, value in card.items()
            if key not in ("behaviors", "config") and isinstance(value, dict | list)
        ]
        found += [part for value in nested if (part := card_text(value))]
    elif isinstance(card, list):
        found += [part for item in card if (part := card_text(item))]
    return "\n".join(found)


def _safe_name(name: str) -> str:
    """A file name safe on disk: no directories, no control characters, not empty, not hidden."""
    base = Path(name.replace("\\", "/")).name
    cleaned = re.sub(r"[^\w.\- ]", "_", base).strip(" .")
    return cleaned[:120] or "attachment"
