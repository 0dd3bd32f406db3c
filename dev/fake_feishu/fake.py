"""`FakeFeishu`: the Open API over HTTP plus the long-connection peer, and what tests use to drive them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

from dev.fake_feishu import events
from dev.fake_feishu.app_console import NOT_GRANTED, AppConsole, AppRegistration, page_parameters
from dev.fake_feishu.http_server import FeishuHTTPServer
from dev.fake_feishu.long_connection import LongConnectionPeer, ReceivedFrame
from dev.fake_feishu.open_api import OpenApi, now_ms
from dev.fake_feishu.records import (
    Chat,
    Fault,
    Message,
    Reaction,
    RecordedCall,
    Resource,
    UploadedFile,
    UploadedImage,
    User,
)

T = TypeVar("T")


def _host_of(server: FeishuHTTPServer) -> str:
    host = server.server_address[0]
    return host.decode() if isinstance(host, bytes | bytearray) else host


def forget_sdk_token(app_id: str) -> None:
    """Drop lark-oapi's cached tenant token for `app_id`.

    The SDK caches tenant tokens in the process-global `TokenManager.cache`, keyed
    `self_tenant_token:{app_id}`, until `expire - 600 s`, and never refreshes on 99991663
    (docs/feishu-platform.md §5): a new fake with a reused app_id would get the old fake's token.
    Use distinct app ids, or call this."""
    from lark_oapi.core.token.manager import TokenManager

    TokenManager.cache.set(f"self_tenant_token:{app_id}", "", 0)  # expired at once: the next get() misses


class FakeFeishu:
    """A local Feishu for one app: the Open API subset the bridge uses, and the long-connection peer.

        with FakeFeishu(app_id="cli_send_test") as fake:
            client = lark.Client.builder().app_id(fake.app_id).app_secret(fake.app_secret) \\
                .domain(fake.domain).build()
            ...  # the bridge sends; the test asserts on fake.messages / fake.calls
            ack = fake.push_event(message_event("oc_1", "hi"))  # to a connected lark.ws.Client

    HTTP runs on a stdlib ThreadingHTTPServer thread, the WS peer on its own thread and event loop,
    so both work from sync and async tests.
    """

    def __init__(
        self,
        app_id: str = events.DEFAULT_APP_ID,
        app_secret: str = "secret",
        bot_open_id: str = "ou_bot",
        bot_name: str = "Ally",
        *,
        encrypt_key: str = "fake-encrypt-key",
        verification_token: str = "fake-verification-token",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.bot_open_id = bot_open_id
        self.bot_name = bot_name
        self.encrypt_key = encrypt_key
        self.verification_token = verification_token
        self._address = (host, port)
        # What /callback/ws/endpoint hands the client (docs/feishu-platform.md §6). ReconnectNonce 0
        # and a 1 s interval keep reconnect tests fast (the SDK's own default waits a random 0-30 s
        # first); -1 = retry forever.
        self.ws_client_config: dict[str, int] = {
            "ReconnectCount": -1,
            "ReconnectInterval": 1,
            "ReconnectNonce": 0,
            "PingInterval": 120,
        }
        self.long_connection = LongConnectionPeer(client_config=self.ws_client_config, host=host)
        self.api = OpenApi(
            app_id=app_id,
            app_secret=app_secret,
            bot_open_id=bot_open_id,
            bot_name=bot_name,
            long_connection_url=self.long_connection.url,
            client_config=self.ws_client_config,
        )
        self._http: FeishuHTTPServer | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeFeishu:
        self.api.stopping.clear()
        self.long_connection.start()
        self._http = FeishuHTTPServer(self._address, self.api)
        self._address = (_host_of(self._http), self._http.server_port)  # a restart reuses the port
        self._http.serve_in_thread()
        return self

    def stop(self) -> None:
        """Stop serving; state is kept, and start() serves it again on the same ports (an outage)."""
        self.api.stopping.set()  # ends injected delays at once
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        self.long_connection.stop()

    def __enter__(self) -> FakeFeishu:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def domain(self) -> str:
        """For `lark.Client.builder().domain(...)` and `lark.ws.Client(domain=...)`: plain http is accepted
        only for 127.0.0.1, localhost and ::1 (docs/feishu-platform.md §6)."""
        if self._http is None:
            raise RuntimeError("FakeFeishu is not started; call start() or use it as a context manager")
        return f"http://{_host_of(self._http)}:{self._http.server_port}"

    # --- what happened -------------------------------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """Every HTTP request, in arrival order (token, endpoint discovery and API calls)."""
        with self.api.changed:
            return list(self.api.calls)

    def calls_to(self, path_contains: str, method: str | None = None) -> list[RecordedCall]:
        return [
            call
            for call in self.calls
            if path_contains in call.path and (method is None or call.method == method.upper())
        ]

    @property
    def messages(self) -> list[Message]:
        """Messages the bot sent (create and reply), oldest first; `patches` holds each card update."""
        with self.api.changed:
            return [m for m in self.api.messages.values() if m.sender_type == "app"]

    @property
    def inbound_messages(self) -> list[Message]:
        """User messages the fake knows from events it delivered or recorded."""
        with self.api.changed:
            return [m for m in self.api.messages.values() if m.sender_type == "user"]

    def message(self, message_id: str) -> Message:
        with self.api.changed:
            return self.api.messages[message_id]

    @property
    def reactions(self) -> list[Reaction]:
        """Reactions the bot added, oldest first; removed ones stay, with `deleted=True`."""
        with self.api.changed:
            return list(self.api.reactions.values())

    @property
    def files(self) -> dict[str, UploadedFile]:
        with self.api.changed:
            return dict(self.api.files)

    @property
    def images(self) -> dict[str, UploadedImage]:
        with self.api.changed:
            return dict(self.api.images)

    @property
    def received_frames(self) -> list[ReceivedFrame]:
        """Frames lark.ws.Client sent the long-connection peer (pings and acks)."""
        return self.long_connection.received

    def wait_for(self, condition: Callable[[], T | None], timeout: float = 5.0) -> T:
        """Block until `condition()` is truthy (re-checked after every request); return its value."""
        deadline = time.monotonic() + timeout
        with self.api.changed:
            while not (value := condition()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s; last calls: {self._tail()}")
                self.api.changed.wait(min(remaining, 0.1))
            return value

    async def async_wait_for(
        self,
        condition: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - mirrors wait_for; a poll, not a wrapped await
    ) -> T:
        """`wait_for` for async tests: polls without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s; last calls: {self._tail()}")
            await asyncio.sleep(0.02)
        return value

    def _tail(self) -> list[str]:
        return [f"{c.method} {c.path} -> {c.status}/{c.code}" for c in self.calls[-5:]]

    # --- what exists ---------------------------------------------------------------------------

    def add_user(self, open_id: str, name: str, *, union_id: str = "", en_name: str = "") -> User:
        user = User(
            open_id=open_id,
            name=name,
            union_id=union_id or "on_" + open_id.removeprefix("ou_"),
            en_name=en_name,
        )
        with self.api.changed:
            self.api.users[open_id] = user
        return user

    @property
    def users(self) -> dict[str, User]:
        with self.api.changed:
            return dict(self.api.users)

    def add_chat(
        self, chat_id: str, name: str, *, mode: Literal["group", "topic", "p2p"] = "group", owner_id: str = ""
    ) -> Chat:
        chat = Chat(chat_id=chat_id, name=name, chat_mode=mode, owner_id=owner_id)
        with self.api.changed:
            self.api.chats[chat_id] = chat
        return chat

    def remove_bot(self, chat_id: str) -> None:
        """The bot is taken out of the chat: sending there fails with 230002 until `add_bot`."""
        with self.api.changed:
            self.api.bot_left.add(chat_id)

    def add_bot(self, chat_id: str) -> None:
        """The bot is back in the chat (after `remove_bot`)."""
        with self.api.changed:
            self.api.bot_left.discard(chat_id)

    @property
    def chats(self) -> dict[str, Chat]:
        with self.api.changed:
            return dict(self.api.chats)

    def add_resource(
        self,
        message_id: str,
        key: str,
        data: bytes,
        *,
        file_name: str | None = None,
        content_type: str = "application/octet-stream",
    ) -> Resource:
        """Bytes served by `GET /open-apis/im/v1/messages/{message_id}/resources/{key}?type=image|file`."""
        resource = Resource(
            message_id=message_id, key=key, data=data, file_name=file_name, content_type=content_type
        )
        with self.api.changed:
            self.api.resources[(message_id, key)] = resource
        return resource

    @property
    def resources(self) -> dict[tuple[str, str], Resource]:
        with self.api.changed:
            return dict(self.api.resources)

    def record_inbound(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """Remember the user message in an `im.message.receive_v1` envelope, so the bot can reply to it,
        react to it and GET it; returns the envelope. push_event and webhook_request call this."""
        header, event = envelope.get("header") or {}, envelope.get("event") or {}
        if header.get("event_type") != "im.message.receive_v1":
            return envelope
        message, sender = event["message"], event["sender"]["sender_id"]
        with self.api.changed:
            if message["chat_type"] == "p2p":
                self.api.p2p_chats.setdefault(sender["open_id"], message["chat_id"])
            self.api.messages.setdefault(
                message["message_id"],
                Message(
                    message_id=message["message_id"],
                    chat_id=message["chat_id"],
                    msg_type=message["message_type"],
                    raw_content=message["content"],
                    sender_type="user",
                    sender_id=sender["open_id"],
                    parent_id=message.get("parent_id", ""),
                    root_id=message.get("root_id", ""),
                    thread_id=message.get("thread_id", ""),
                    create_time=message.get("create_time") or now_ms(),
                    update_time=message.get("create_time") or now_ms(),
                ),
            )
            self.api.changed.notify_all()
        return envelope

    # --- the app in the developer console, and creating it by scan -----------------------------

    @property
    def console(self) -> AppConsole:
        """The app's scopes, event subscriptions and callbacks (a copy; change them with the methods
        below). By default the app is set up as docs/feishu-setup.md says."""
        with self.api.changed:
            return self.api.console.model_copy(deep=True)

    def remove_scope(self, scope: str) -> None:
        with self.api.changed:
            self.api.console.scopes.pop(scope, None)

    def withhold_scope(self, scope: str) -> None:
        """The scope is added to the app but not granted yet (no version published, or no admin)."""
        with self.api.changed:
            self.api.console.scopes[scope] = NOT_GRANTED

    def unsubscribe_event(self, event_type: str) -> None:
        with self.api.changed:
            self.api.console.events = [e for e in self.api.console.events if e != event_type]

    def deliver_events_by(self, subscription: str) -> None:
        """How the console sends events: "websocket" (long connection), "webhook", or "" (not chosen)."""
        with self.api.changed:
            self.api.console = self.api.console.model_copy(update={"event_subscription": subscription})

    @property
    def registrations(self) -> list[AppRegistration]:
        """Scan-to-create attempts (`POST /oauth/v1/app/registration`, action=begin), oldest first."""
        with self.api.changed:
            return [r.model_copy() for r in self.api.registrations]

    def scan(self, url: str, *, open_id: str = "ou_owner", decline: bool = False) -> AppRegistration:
        """What the person does with the QR code: open the page `url` and confirm (or decline).
        Confirming creates the app with what the page was asked to pre-fill (its `addons`); the next
        poll then hands out this fake's app id and secret, and `open_id` as the person who scanned."""
        user_code, addons = page_parameters(url)
        with self.api.changed:
            registration = next((r for r in self.api.registrations if r.user_code == user_code), None)
            if registration is None:
                raise ValueError(f"no registration has user code {user_code!r} (from {url})")
            if decline:
                registration.status = "denied"
            else:
                registration.status, registration.scanned_by = "authorized", open_id
                self.api.console = self.api.console.created_from(addons)
            self.api.changed.notify_all()
            return registration.model_copy()

    # --- faults --------------------------------------------------------------------------------

    def fail_next(
        self,
        path_contains: str,
        *,
        status: int = 429,
        code: int = 99991400,
        times: int = 1,
        reset_seconds: float | None = 1,
        delay_s: float = 0.0,
        body: bytes | str | None = None,
        msg: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next `times` requests whose path contains `path_contains` with a failure.

        Default: Feishu's rate limit, HTTP 429 + code 99991400 + `x-ogw-ratelimit-reset: 1`
        (docs/feishu-platform.md §5). Also: `status=500/503` (gateway trouble),
        `status=400, code=99991663` (invalid token; the SDK keeps its cached token, see
        forget_sdk_token), `delay_s` (answer late), `body` (raw, e.g. HTML). Faults are consumed in
        the order they were added."""
        raw = body.encode() if isinstance(body, str) else body
        fault = Fault(
            path_contains=path_contains,
            method=method,
            status=status,
            code=code,
            msg=msg,
            times=times,
            reset_seconds=reset_seconds,
            delay_s=delay_s,
            body=raw,
            content_type="application/json; charset=utf-8" if raw is None else "text/html; charset=utf-8",
        )
        with self.api.changed:
            self.api.faults.append(fault)

    def delay_next(
        self, path_contains: str, seconds: float, *, times: int = 1, method: str | None = None
    ) -> None:
        """Answer the next `times` matching requests normally, but only after `seconds`."""
        with self.api.changed:
            self.api.faults.append(
                Fault(path_contains=path_contains, method=method, status=None, times=times, delay_s=seconds)
            )

    def revoke_tokens(self) -> None:
        """Invalidate every issued tenant token: later calls get 99991663 until a new token is fetched."""
        with self.api.changed:
            self.api.tokens.clear()

    def drop_long_connections(self) -> None:
        """Close every lark.ws.Client connection; clients reconnect per `ws_client_config`."""
        self.long_connection.drop_connections()

    # --- delivering events ---------------------------------------------------------------------

    def push_event(self, envelope: dict[str, Any], timeout: float = 5.0, *, parts: int = 1) -> dict[str, Any]:
        """Deliver an event over the long connection and return the client's ack, e.g. `{"code": 200}`,
        or `{"code": 200, "data": {...}}` for card callbacks (the handler's result, decoded).
        `parts > 1` splits the payload over several frames, as Feishu does for large events."""
        return self.long_connection.push(self.record_inbound(envelope), timeout=timeout, parts=parts)

    async def apush_event(
        self,
        envelope: dict[str, Any],
        timeout: float = 5.0,  # noqa: ASYNC109 - bounds the ack wait on the peer's own loop
        *,
        parts: int = 1,
    ) -> dict[str, Any]:
        """push_event for async tests (does not block the test's event loop while the client acks)."""
        return await self.long_connection.apush(self.record_inbound(envelope), timeout=timeout, parts=parts)

    def webhook_request(
        self,
        envelope: dict[str, Any],
        *,
        timestamp: str | None = None,
        nonce: str | None = None,
        tamper_signature: bool = False,
    ) -> tuple[dict[str, str], bytes]:
        """`events.webhook_request` with this app's encrypt key and verification token."""
        return events.webhook_request(
            self.record_inbound(envelope),
            encrypt_key=self.encrypt_key,
            verification_token=self.verification_token,
            timestamp=timestamp,
            nonce=nonce,
            tamper_signature=tamper_signature,
        )
