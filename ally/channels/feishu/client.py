"""The Feishu Open API calls work-ally makes, and what each failure means for a retry.

Built on the real lark-oapi 1.7.5: its resource classes (`im.v1`, `contact.v3`), each sending with the
SDK's token and transport, on the `Config` `lark.Client` would hold (sdk.py: `lark.Client` itself
imports every Open API service). Facts this layer exists for (docs/feishu-platform.md §4-5):
- The SDK never retries and never raises for API errors: every response must be read. Here each
  result becomes success or one of three errors: `FeishuRateLimited` (HTTP 429 or code 99991400;
  carries the `x-ogw-ratelimit-reset` seconds), `FeishuRejected` (a `PermanentDeliveryError`:
  bad content, bot not in the chat, message gone, too long) or `FeishuUnavailable` (5xx,
  transport errors, anything unknown: retrying with the same `uuid` is safe, so doubt retries).
- The tenant token is cached process-wide (`TokenManager.cache`, key `self_tenant_token:{app_id}`)
  and never refreshed on 99991663/99991664/99991668: we clear that key and retry the call once.
- The SDK's sync calls run on `requests`; its async ones fetch the token synchronously anyway and
  see lowercased headers. So every call here is a sync SDK call in a worker thread: the event loop
  never blocks and headers keep the names the server sent.
- Non-JSON error pages (a proxy's HTML 502) make typed calls raise `JSONDecodeError`: retryable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import logging
from collections.abc import Callable
from typing import Any, Literal

from lark_oapi.api.contact.v3.model.get_user_request import GetUserRequest
from lark_oapi.api.contact.v3.resource.user import User
from lark_oapi.api.im.v1.model.create_file_request import CreateFileRequest
from lark_oapi.api.im.v1.model.create_file_request_body import CreateFileRequestBody
from lark_oapi.api.im.v1.model.create_image_request import CreateImageRequest
from lark_oapi.api.im.v1.model.create_image_request_body import CreateImageRequestBody
from lark_oapi.api.im.v1.model.create_message_reaction_request import CreateMessageReactionRequest
from lark_oapi.api.im.v1.model.create_message_reaction_request_body import CreateMessageReactionRequestBody
from lark_oapi.api.im.v1.model.create_message_request import CreateMessageRequest
from lark_oapi.api.im.v1.model.create_message_request_body import CreateMessageRequestBody
from lark_oapi.api.im.v1.model.delete_message_reaction_request import DeleteMessageReactionRequest
from lark_oapi.api.im.v1.model.emoji import Emoji
from lark_oapi.api.im.v1.model.get_chat_request import GetChatRequest
from lark_oapi.api.im.v1.model.get_message_request import GetMessageRequest
from lark_oapi.api.im.v1.model.get_message_resource_request import GetMessageResourceRequest
from lark_oapi.api.im.v1.model.patch_message_request import PatchMessageRequest
from lark_oapi.api.im.v1.model.patch_message_request_body import PatchMessageRequestBody
from lark_oapi.api.im.v1.model.reply_message_request import ReplyMessageRequest
from lark_oapi.api.im.v1.model.reply_message_request_body import ReplyMessageRequestBody
from lark_oapi.api.im.v1.resource.chat import Chat
from lark_oapi.api.im.v1.resource.file import File
from lark_oapi.api.im.v1.resource.image import Image
from lark_oapi.api.im.v1.resource.message import Message
from lark_oapi.api.im.v1.resource.message_reaction import MessageReaction
from lark_oapi.api.im.v1.resource.message_resource import MessageResource
from lark_oapi.core.enum import AccessTokenType, HttpMethod
from lark_oapi.core.exception import ObtainAccessTokenException
from lark_oapi.core.model import BaseRequest
from lark_oapi.core.token.manager import TokenManager
from pydantic import BaseModel

from ally.channels import PermanentDeliveryError, RetryLaterError, TransientDeliveryError
from ally.channels.feishu.sdk import sdk_config, send
from ally.config import FeishuConfig

log = logging.getLogger(__name__)

RATE_LIMITED = frozenset({99991400, 230020, 11232})  # app-wide, per chat, message service
INVALID_TOKEN = frozenset({99991661, 99991663, 99991664, 99991668})
# Retrying cannot help: bad content (230001, 230099, 99992402 field validation), bot not in the chat
# (230002), message gone or recalled (230005, 230011), too long (230021, 230022, 230025), too many
# tables or elements in a card (11310, 300305).
PERMANENT = frozenset(
    {230001, 230002, 230005, 230011, 230021, 230022, 230025, 230099, 11310, 300305, 99992402}
)
# The message a reply answers is gone: send into the chat instead of failing the reply.
PARENT_GONE = frozenset({230005, 230011})
RATE_LIMIT_RESET_HEADER = "x-ogw-ratelimit-reset"
DEFAULT_RATE_LIMIT_WAIT_S = 2.0  # when Feishu does not say how long to wait
DEFAULT_TIMEOUT_S = 10.0


class FeishuApiError(Exception):
    """A Feishu call that did not succeed; `code`/`log_id` are what Feishu support asks for."""

    def __init__(
        self,
        what: str,
        *,
        code: int | None = None,
        msg: str = "",
        status: int | None = None,
        log_id: str = "",
    ) -> None:
        detail = f"code {code}" if code is not None else f"HTTP {status}"
        # Exception's own init: the retry mixins of the subclasses take other arguments.
        Exception.__init__(
            self, f"{what} failed: {detail} {msg}".rstrip() + (f" (log_id {log_id})" if log_id else "")
        )
        self.code = code
        self.status = status
        self.log_id = log_id


class FeishuUnavailable(FeishuApiError, TransientDeliveryError):
    """Transport trouble, a 5xx or an unknown error: retry (with the same idempotency key)."""


class FeishuRejected(FeishuApiError, PermanentDeliveryError):
    """Feishu refused the request for good."""


class FeishuRateLimited(FeishuApiError, RetryLaterError):
    """Feishu's rate limit: retry after `retry_after_s` seconds."""

    def __init__(self, what: str, *, retry_after_s: float, **details: Any) -> None:
        FeishuApiError.__init__(self, what, **details)
        self.retry_after_s = retry_after_s


class SentFeishuMessage(BaseModel):
    message_id: str
    thread_id: str = ""


class FeishuMessage(BaseModel):
    """A message as GET /im/v1/messages/{id} returns it (the parts work-ally reads)."""

    message_id: str
    chat_id: str = ""
    msg_type: str = ""
    content: str = ""
    thread_id: str = ""
    root_id: str = ""
    parent_id: str = ""
    sender_id: str = ""  # an open_id for a person, the app id for a bot
    sender_type: str = ""  # "user" | "app"
    mentions: dict[str, str] = {}  # placeholder ("@_user_1") -> the name it stands for


class Download(BaseModel):
    data: bytes
    file_name: str | None = None


def build_sdk_config(config: FeishuConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """The SDK's `Config`; `config.domain` may point at Lark, a proxy or a local fake."""
    return sdk_config(
        config.app_id,
        config.app_secret.get_secret_value(),
        domain=config.domain.rstrip("/"),
        timeout_s=timeout_s,
    )


def forget_tenant_token(app_id: str) -> None:
    """Drop the SDK's cached tenant token for `app_id`, so the next call fetches a fresh one."""
    TokenManager.cache.set(f"self_tenant_token:{app_id}", "", 0)


class FeishuApi:
    """The calls work-ally makes, each classified (see the module docstring)."""

    def __init__(self, sdk: Any, app_id: str) -> None:
        self.sdk = sdk  # the SDK's `Config`: app, secret, domain, timeout
        self.app_id = app_id
        self.messages = Message(sdk)
        self.reactions = MessageReaction(sdk)
        self.resources = MessageResource(sdk)
        self.files = File(sdk)
        self.images = Image(sdk)
        self.chats = Chat(sdk)
        self.users = User(sdk)

    @classmethod
    def from_config(cls, config: FeishuConfig, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> FeishuApi:
        return cls(build_sdk_config(config, timeout_s=timeout_s), config.app_id)

    # --- messages --------------------------------------------------------------------------------

    async def reply(
        self, message_id: str, *, msg_type: str, content: str, uuid: str, in_thread: bool = False
    ) -> SentFeishuMessage:
        body = (
            ReplyMessageRequestBody.builder()
            .msg_type(msg_type)
            .content(content)
            .reply_in_thread(in_thread)
            .uuid(uuid)
            .build()
        )
        request = ReplyMessageRequest.builder().message_id(message_id).request_body(body).build()
        response = await self._call(f"reply to {message_id}", lambda: self.messages.reply(request))
        return SentFeishuMessage(message_id=response.data.message_id, thread_id=response.data.thread_id or "")

    async def create(self, chat_id: str, *, msg_type: str, content: str, uuid: str) -> SentFeishuMessage:
        body = (
            CreateMessageRequestBody.builder()
            .receive_id(chat_id)
            .msg_type(msg_type)
            .content(content)
            .uuid(uuid)
            .build()
        )
        # A person's open_id (ou_…) reaches their private chat with the bot: the owner's alerts.
        id_type = "open_id" if chat_id.startswith("ou_") else "chat_id"
        request = CreateMessageRequest.builder().receive_id_type(id_type).request_body(body).build()
        response = await self._call(f"send to {chat_id}", lambda: self.messages.create(request))
        return SentFeishuMessage(message_id=response.data.message_id, thread_id=response.data.thread_id or "")

    async def patch(self, message_id: str, content: str) -> None:
        body = PatchMessageRequestBody.builder().content(content).build()
        request = PatchMessageRequest.builder().message_id(message_id).request_body(body).build()
        await self._call(f"update card {message_id}", lambda: self.messages.patch(request))

    async def get_message(self, message_id: str) -> FeishuMessage:
        request = GetMessageRequest.builder().message_id(message_id).build()
        response = await self._call(f"read {message_id}", lambda: self.messages.get(request))
        item = response.data.items[0]
        return FeishuMessage(
            message_id=item.message_id,
            chat_id=item.chat_id or "",
            msg_type=item.msg_type or "",
            content=item.body.content if item.body else "",
            thread_id=item.thread_id or "",
            root_id=item.root_id or "",
            parent_id=item.parent_id or "",
            sender_id=(item.sender.id or "") if item.sender else "",
            sender_type=(item.sender.sender_type or "") if item.sender else "",
            mentions={m.key: m.name or m.id or "" for m in item.mentions or [] if m.key},
        )

    async def add_reaction(self, message_id: str, emoji: str) -> str:
        """Returns the reaction's id, needed to take it off again. Emoji names are case-sensitive."""
        return await asyncio.wrap_future(self.add_reaction_now(message_id, emoji))

    def add_reaction_now(self, message_id: str, emoji: str) -> concurrent.futures.Future[str]:
        """`add_reaction` started from any thread, at once: the call goes straight to the calls'
        pool, without waiting for an event loop's turn (the long connection's thread puts the
        receipt emoji on this way)."""
        emoji_type = Emoji.builder().emoji_type(emoji).build()
        body = CreateMessageReactionRequestBody.builder().reaction_type(emoji_type).build()
        request = CreateMessageReactionRequest.builder().message_id(message_id).request_body(body).build()
        reactions = self.reactions

        def react() -> str:
            response = self._call_here(f"react {emoji} on {message_id}", lambda: reactions.create(request))
            return str(response.data.reaction_id)

        return _CALLS.submit(react)

    async def delete_reaction(self, message_id: str, reaction_id: str) -> None:
        request = (
            DeleteMessageReactionRequest.builder().message_id(message_id).reaction_id(reaction_id).build()
        )
        reactions = self.reactions
        await self._call(f"unreact {reaction_id} on {message_id}", lambda: reactions.delete(request))

    # --- files -----------------------------------------------------------------------------------

    async def upload_file(self, file_name: str, data: bytes) -> str:
        """Upload a file for a `file` message; returns its file_key. `stream` = any binary type."""
        body = (
            CreateFileRequestBody.builder()
            .file_type("stream")
            .file_name(file_name)
            .file(io.BytesIO(data))
            .build()
        )
        request = CreateFileRequest.builder().request_body(body).build()
        response = await self._call(f"upload {file_name}", lambda: self.files.create(request))
        return str(response.data.file_key)

    async def upload_image(self, file_name: str, data: bytes) -> str:
        """Upload an image for an `image` message or a card's `img`; returns its image_key
        (POST /open-apis/im/v1/images, `image_type=message`: docs/feishu-platform.md §4)."""
        body = CreateImageRequestBody.builder().image_type("message").image(io.BytesIO(data)).build()
        request = CreateImageRequest.builder().request_body(body).build()
        response = await self._call(f"upload image {file_name}", lambda: self.images.create(request))
        return str(response.data.image_key)

    async def download(self, message_id: str, key: str, kind: Literal["image", "file"]) -> Download:
        """An image or file attached to a user's message (GET …/messages/{id}/resources/{key})."""
        request = GetMessageResourceRequest.builder().message_id(message_id).file_key(key).type(kind).build()
        response = await self._call(f"download {kind} {key}", lambda: self.resources.get(request))
        return Download(data=response.file.read(), file_name=response.file_name or None)

    # --- who is who ------------------------------------------------------------------------------

    async def chat_mode(self, chat_id: str) -> str:
        """ "group", "topic" (a topic group: every top-level message starts a topic) or "p2p"."""
        request = GetChatRequest.builder().chat_id(chat_id).build()
        response = await self._call(f"look up chat {chat_id}", lambda: self.chats.get(request))
        return str(response.data.chat_mode or "group")

    async def user_name(self, open_id: str) -> str:
        """A person's display name (needs a contact scope and the person in the app's contact range)."""
        request = GetUserRequest.builder().user_id(open_id).user_id_type("open_id").build()
        response = await self._call(f"look up {open_id}", lambda: self.users.get(request))
        return str(response.data.user.name or "")

    async def bot_open_id(self) -> str:
        """The bot's own open_id: GET /open-apis/bot/v3/info answers `bot` at top level, no `data`,
        and has no typed SDK call, so its raw body is read here."""
        request = bot_info_request()
        response = await self._call("read the bot's info", lambda: send(self.sdk, request))
        try:
            return str(json.loads(response.raw.content)["bot"]["open_id"])
        except (ValueError, KeyError, TypeError) as error:
            raise FeishuUnavailable("read the bot's info", msg=f"unexpected answer: {error}") from error

    # --- the call layer --------------------------------------------------------------------------

    async def _call(self, what: str, send: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(_CALLS, self._call_here, what, send)

    def _call_here(self, what: str, send: Callable[[], Any]) -> Any:
        """The call on this thread (one of the pool's): its response, or the error it stands for."""
        for attempt in (1, 2):
            try:
                response = send()
            except ObtainAccessTokenException as error:
                raise FeishuUnavailable(what, msg=f"no tenant access token: {error}") from error
            except Exception as error:  # requests/SDK: connection, timeout, a non-JSON error page
                raise FeishuUnavailable(what, msg=f"{type(error).__name__}: {error}") from error
            if response.success():
                return response
            if response.code in INVALID_TOKEN and attempt == 1:
                log.info("%s: tenant token rejected (%s); fetching a new one", what, response.code)
                forget_tenant_token(self.app_id)
                continue
            raise classify(what, response)
        raise AssertionError("unreachable")  # pragma: no cover


# The SDK is synchronous: each call holds a thread while it waits on Feishu. asyncio's default pool
# has cpu+4 threads (6 on 2 cores), so 50 chats' first emoji queued behind each other; calls are
# I/O, so many threads cost little.
_CALLS = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="feishu-call")


def classify(what: str, response: Any) -> FeishuApiError:
    """The error a failed SDK response stands for."""
    raw = response.raw
    status = getattr(raw, "status_code", None)
    headers: dict[str, str] = {
        str(k).lower(): str(v) for k, v in (getattr(raw, "headers", None) or {}).items()
    }
    details: dict[str, Any] = {
        "code": response.code,
        "msg": response.msg or "",
        "status": status,
        "log_id": headers.get("x-tt-logid", ""),
    }
    if status == 429 or response.code in RATE_LIMITED:
        return FeishuRateLimited(what, retry_after_s=_reset_seconds(headers), **details)
    if response.code in PERMANENT:
        return FeishuRejected(what, **details)
    return FeishuUnavailable(what, **details)


def _reset_seconds(headers: dict[str, str]) -> float:
    try:
        return max(float(headers[RATE_LIMIT_RESET_HEADER]), 0.0)
    except (KeyError, ValueError):
        return DEFAULT_RATE_LIMIT_WAIT_S


def bot_info_request() -> Any:
    """GET /open-apis/bot/v3/info with the tenant token: the SDK has no typed call for it."""
    return (
        BaseRequest.builder()
        .http_method(HttpMethod.GET)
        .uri("/open-apis/bot/v3/info")
        .token_types({AccessTokenType.TENANT})
        .build()
    )
