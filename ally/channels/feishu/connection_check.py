"""Does the long connection connect, and does a message arrive over it? For `ally setup`.

A short-lived `lark.ws.Client` on a thread of its own, with the same event-loop handling as the
gateway's `LongConnection` (the SDK binds a module-level loop at import and its `start()` never
returns): the thread sets a fresh loop as that module loop, connects once (`_connect`: endpoint
discovery with the app's credentials, then the WebSocket), and keeps the loop running so events
arrive, until `close()`. A refused connection raises at once instead of reconnecting forever.

While it is connected the developer console can save "receive events through persistent
connection", which it refuses while no client is connected (docs/feishu-setup.md, step 4).
Every event is acknowledged; the first `im.message.receive_v1` is kept as `message`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from typing import Any

import lark_oapi.ws.client as lark_ws_client
from lark_oapi.core.enum import LogLevel
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler
from pydantic import BaseModel

from ally.config import FeishuConfig


class ReceivedMessage(BaseModel):
    sender_open_id: str
    chat_id: str
    chat_type: str
    text: str


class ConnectionProbe:
    def __init__(self, config: FeishuConfig) -> None:
        self.config = config
        self.error = ""
        self.message: ReceivedMessage | None = None
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.received = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name="feishu-setup-probe", daemon=True)

    def connect(self, timeout_s: float) -> bool:
        """True once connected; False with `error` set when refused, or after `timeout_s`."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not (self.connected.is_set() or self.ended.is_set()) and time.monotonic() < deadline:
            self.connected.wait(0.05)
        if not self.connected.is_set() and not self.error:
            self.error = "no answer from the long-connection endpoint in time"
        return self.connected.is_set()

    def wait_for_message(self, timeout_s: float) -> ReceivedMessage | None:
        self.received.wait(timeout_s)
        return self.message

    def close(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)

    def _handler(self) -> Any:
        def on_message(data: Any) -> None:
            event = data.event
            message, sender = event.message, event.sender.sender_id
            try:
                text = str(json.loads(message.content or "{}").get("text", ""))
            except (ValueError, AttributeError):
                text = ""
            if self.message is None:
                self.message = ReceivedMessage(
                    sender_open_id=str(sender.open_id or ""),
                    chat_id=str(message.chat_id or ""),
                    chat_type=str(message.chat_type or ""),
                    text=text,
                )
            self.received.set()

        def acknowledge(data: Any) -> None:
            """Other subscribed events: acknowledged (unregistered ones would be pushed again)."""

        builder = EventDispatcherHandler.builder("", "").register_p2_im_message_receive_v1(on_message)
        for event_type in (
            "im.message.reaction.created_v1",
            "im.message.reaction.deleted_v1",
            "im.message.recalled_v1",
            "im.message.message_read_v1",
            "im.chat.member.bot.added_v1",
            "im.chat.member.bot.deleted_v1",
            "im.chat.access_event.bot_p2p_chat_entered_v1",
        ):
            builder = builder.register_p2_customized_event(event_type, acknowledge)
        return builder.build()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        lark_ws_client.loop = loop
        self._loop = loop
        try:
            client = lark_ws_client.Client(
                self.config.app_id,
                self.config.app_secret.get_secret_value(),
                event_handler=self._handler(),
                domain=self.config.domain.rstrip("/"),
                auto_reconnect=False,
                log_level=LogLevel.ERROR,
            )
            self._client = client
            loop.run_until_complete(client._connect())
            self.connected.set()
            loop.run_forever()
        except Exception as error:  # the SDK's ClientException/ServerException carry Feishu's code and msg
            self.error = _explain(error)
        finally:
            # The SDK's receive loop first: closing the socket under it would make it log an error.
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            with contextlib.suppress(Exception):
                if self._client is not None and self._client._conn is not None:
                    loop.run_until_complete(self._client._conn.close())
            loop.close()
            self.ended.set()


def _explain(error: Exception) -> str:
    code = getattr(error, "code", None)
    if code is not None:
        msg = error.args[0] if error.args else ""
        return f"Feishu refused the long connection (code {code}: {msg})"
    text = str(error).strip().splitlines()
    return f"could not connect: {text[0][:200] if text else 'no answer'}"
