"""Real-shaped Feishu v2 event envelopes, and webhook requests encrypted and signed as Feishu sends them.

Envelope (docs/feishu-platform.md §1):
`{"schema":"2.0","header":{event_id,event_type,create_time,token,app_id,tenant_key},"event":{…}}`;
every id and time is a string, and message `content` is a JSON *string*.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import time
import uuid
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

DEFAULT_APP_ID = "cli_test"
TENANT_KEY = "tenant_test"

# Header names exactly as Feishu sends them: the SDK looks them up exact-case (docs/feishu-platform.md §3).
TIMESTAMP_HEADER = "X-Lark-Request-Timestamp"
NONCE_HEADER = "X-Lark-Request-Nonce"
SIGNATURE_HEADER = "X-Lark-Signature"


def _now_ms() -> str:
    return str(int(time.time() * 1000))


def _user_id(open_id: str) -> dict[str, str]:
    # `user_id` needs an extra scope, so events normally carry only open_id and union_id
    # (docs/feishu-platform.md §1).
    return {"open_id": open_id, "union_id": "on_" + open_id.removeprefix("ou_")}


def envelope(
    event_type: str, event: dict[str, Any], *, app_id: str = DEFAULT_APP_ID, event_id: str | None = None
) -> dict[str, Any]:
    """A v2 envelope; `event_id` is unique unless given (pass the same one to simulate a re-push)."""
    header = {
        "event_id": event_id or uuid.uuid4().hex,
        "event_type": event_type,
        "create_time": _now_ms(),
        "token": "",  # webhook_request() stamps the verification token, as Feishu does
        "app_id": app_id,
        "tenant_key": TENANT_KEY,
    }
    return {"schema": "2.0", "header": header, "event": event}


def mention(open_id: str, name: str, *, index: int = 1) -> dict[str, Any]:
    """A `mentions[]` entry; the text then holds the placeholder `@_user_{index}`
    (docs/feishu-platform.md §1)."""
    return {"key": f"@_user_{index}", "id": _user_id(open_id), "name": name, "tenant_key": TENANT_KEY}


def message_event(
    chat_id: str,
    text: str = "",
    *,
    chat_type: str = "p2p",
    sender_open_id: str = "ou_user",
    message_id: str | None = None,
    mentions: list[dict[str, Any]] | None = None,
    message_type: str = "text",
    content: str | dict[str, Any] | None = None,
    root_id: str = "",
    parent_id: str = "",
    thread_id: str = "",
    app_id: str = DEFAULT_APP_ID,
    event_id: str | None = None,
    create_time_ms: int | None = None,
) -> dict[str, Any]:
    """`im.message.receive_v1`; `create_time_ms` backdates it (sent while the bridge was down).
    `content` defaults to `{"text": text}` for text messages; give it for other
    types (image `{"image_key"}`, file `{"file_key","file_name"}`, post: see post_message_event)."""
    if content is None:
        if message_type != "text":
            raise ValueError(f"content is required for message_type={message_type!r}")
        content = {"text": text}
    message = {
        "message_id": message_id or f"om_{uuid.uuid4().hex}",
        "root_id": root_id,
        "parent_id": parent_id,
        "create_time": str(create_time_ms) if create_time_ms is not None else _now_ms(),
        "update_time": _now_ms(),
        "chat_id": chat_id,
        "thread_id": thread_id,
        "chat_type": chat_type,
        "message_type": message_type,
        "content": content if isinstance(content, str) else json.dumps(content, ensure_ascii=False),
        "mentions": mentions or [],
    }
    sender = {"sender_id": _user_id(sender_open_id), "sender_type": "user", "tenant_key": TENANT_KEY}
    return envelope(
        "im.message.receive_v1", {"sender": sender, "message": message}, app_id=app_id, event_id=event_id
    )


def post_message_event(
    chat_id: str,
    paragraphs: list[list[dict[str, Any]]],
    *,
    title: str = "",
    chat_type: str = "p2p",
    sender_open_id: str = "ou_user",
    message_id: str | None = None,
    mentions: list[dict[str, Any]] | None = None,
    root_id: str = "",
    parent_id: str = "",
    thread_id: str = "",
    app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """A rich-text (`post`) message; received posts have no locale wrapper (docs/feishu-platform.md §1), e.g.
    `[[{"tag":"text","text":"see "},{"tag":"a","href":"https://x","text":"x"}],[{"tag":"img","image_key":"img_1"}]]`."""
    return message_event(
        chat_id,
        chat_type=chat_type,
        sender_open_id=sender_open_id,
        message_id=message_id,
        mentions=mentions,
        message_type="post",
        content={"title": title, "content": paragraphs},
        root_id=root_id,
        parent_id=parent_id,
        thread_id=thread_id,
        app_id=app_id,
    )


def card_action_event(
    operator_open_id: str,
    value: dict[str, Any],
    open_message_id: str,
    open_chat_id: str,
    *,
    tag: str = "button",
    form_value: dict[str, Any] | None = None,
    card_token: str | None = None,
    app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """The `card.action.trigger` callback: `value` is the clicked button's `behaviors[].value`
    (docs/feishu-platform.md §2)."""
    action: dict[str, Any] = {"value": value, "tag": tag}
    if form_value is not None:
        action["form_value"] = form_value
    event = {
        "operator": {"tenant_key": TENANT_KEY, **_user_id(operator_open_id)},
        # For /interactive/v1/card/update (docs/feishu-platform.md §2)
        "token": card_token or f"c-{uuid.uuid4().hex}",
        "action": action,
        "host": "im_message",
        "context": {"open_message_id": open_message_id, "open_chat_id": open_chat_id},
    }
    return envelope("card.action.trigger", event, app_id=app_id)


def reaction_event(
    message_id: str,
    emoji_type: str,
    *,
    operator_open_id: str = "ou_user",
    removed: bool = False,
    app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """`im.message.reaction.created_v1` (or `deleted_v1` when `removed`)."""
    event = {
        "message_id": message_id,
        "reaction_type": {"emoji_type": emoji_type},
        "operator_type": "user",
        "user_id": _user_id(operator_open_id),
        "action_time": _now_ms(),
    }
    kind = "deleted" if removed else "created"
    return envelope(f"im.message.reaction.{kind}_v1", event, app_id=app_id)


def recalled_event(
    message_id: str, chat_id: str, *, recall_type: str = "message_owner", app_id: str = DEFAULT_APP_ID
) -> dict[str, Any]:
    """`im.message.recalled_v1`: the user took a message back."""
    event = {
        "message_id": message_id,
        "chat_id": chat_id,
        "recall_time": _now_ms(),
        "recall_type": recall_type,
    }
    return envelope("im.message.recalled_v1", event, app_id=app_id)


def bot_added_event(
    chat_id: str,
    *,
    chat_name: str = "",
    operator_open_id: str = "ou_user",
    removed: bool = False,
    app_id: str = DEFAULT_APP_ID,
) -> dict[str, Any]:
    """`im.chat.member.bot.added_v1`: someone added the bot to a group (`deleted_v1` when `removed`)."""
    event = {
        "chat_id": chat_id,
        "operator_id": _user_id(operator_open_id),
        "external": False,
        "operator_tenant_key": TENANT_KEY,
        "name": chat_name,
    }
    kind = "deleted" if removed else "added"
    return envelope(f"im.chat.member.bot.{kind}_v1", event, app_id=app_id)


def url_verification(challenge: str = "challenge-token") -> dict[str, Any]:
    """The webhook URL check Feishu sends when the callback URL is saved (answered with the challenge)."""
    return {"challenge": challenge, "token": "", "type": "url_verification"}


def encrypt(plaintext: bytes, encrypt_key: str) -> str:
    """Feishu's event encryption: base64(iv ‖ AES-256-CBC(PKCS7(plaintext))), key = sha256(encrypt_key)."""
    iv = os.urandom(16)
    cipher = AES.new(hashlib.sha256(encrypt_key.encode()).digest(), AES.MODE_CBC, iv)
    return base64.b64encode(iv + cipher.encrypt(pad(plaintext, AES.block_size))).decode()


def sign(timestamp: str, nonce: str, encrypt_key: str, raw_body: bytes) -> str:
    """`X-Lark-Signature` = sha256_hex(timestamp + nonce + encrypt_key + raw_body)
    (docs/feishu-platform.md §3)."""
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + raw_body).hexdigest()


def webhook_request(
    event: dict[str, Any],
    *,
    encrypt_key: str,
    verification_token: str,
    timestamp: str | None = None,
    nonce: str | None = None,
    tamper_signature: bool = False,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of the POST Feishu would send for `event`: the verification token stamped in,
    encrypted when `encrypt_key` is set, then signed. Feed them to `EventDispatcherHandler.do(RawRequest)`
    or POST them to a webhook server."""
    stamped = copy.deepcopy(event)
    if isinstance(stamped.get("header"), dict):
        stamped["header"]["token"] = verification_token
    else:  # v1 shapes and url_verification carry the token at top level
        stamped["token"] = verification_token
    plaintext = json.dumps(stamped, ensure_ascii=False).encode()
    body = json.dumps({"encrypt": encrypt(plaintext, encrypt_key)}).encode() if encrypt_key else plaintext
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or uuid.uuid4().hex[:16]
    signature = sign(timestamp, nonce, encrypt_key, body)
    if tamper_signature:
        signature = sign(timestamp, nonce, encrypt_key, body + b" ")
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature,
    }
    return headers, body
