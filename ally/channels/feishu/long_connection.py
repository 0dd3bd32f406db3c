"""The long connection: `lark.ws.Client` on its own thread, with acks that never wait for other events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import lark_oapi.ws.client as lark_ws_client
from lark_oapi.core.enum import LogLevel
from lark_oapi.core.json import JSON
from lark_oapi.ws.const import HEADER_BIZ_RT, HEADER_MESSAGE_ID, HEADER_SEQ, HEADER_SUM, HEADER_TYPE
from lark_oapi.ws.enum import MessageType
from lark_oapi.ws.model import Response as AckFrame

from ally.channels.feishu import events
from ally.channels.feishu.acks import HandOverFailed, ThreadEnd, deferred_acks
from ally.config import FeishuConfig

log = logging.getLogger(__name__)


class LongConnection:
    """`lark.ws.Client` on its own thread and event loop (docs/feishu-platform.md §1 pitfalls): the
    SDK binds a module-level loop at import and `start()` never returns, so the thread sets a fresh
    loop as that module loop *before* building the client. Only one such client works per
    process."""

    def __init__(self, config: FeishuConfig, handler: Any) -> None:
        self.config = config
        self.handler = handler
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="feishu-long-connection", daemon=True)
        self._stopped = ThreadEnd()

    def start(self) -> None:
        """Call from the gateway loop; `watch()` then reports the thread's end on that loop."""
        self._stopped.arm()
        self._thread.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        lark_ws_client.loop = loop
        try:
            client = PromptAcks(
                self.config.app_id,
                self.config.app_secret.get_secret_value(),
                event_handler=self.handler,
                domain=self.config.domain.rstrip("/"),
                log_level=LogLevel.INFO,
            )
            client._reconnect = self._ending_on_failure(client._reconnect, loop)
            client.start()  # blocks for good; reconnects on its own (server's ClientConfig)
        except BaseException as error:  # bad credentials, app not allowed to use the long connection
            self.error = self.error or error
            log.error("Feishu long connection stopped: %s", self.error)
        finally:
            _close(loop)
            self._stopped.signal()

    def _ending_on_failure(
        self, reconnect: Callable[[], Coroutine[Any, Any, None]], loop: asyncio.AbstractEventLoop
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """When the SDK gives up reconnecting (a ClientException such as revoked credentials, or
        the server's ReconnectCount spent), its receive task dies quietly while `start()` keeps
        blocking: the process would stay up and deaf. Stopping the loop ends `start()` instead,
        so `watch()` reports it and the supervisor restarts the gateway."""

        async def reconnect_or_stop() -> None:
            try:
                await reconnect()
            except BaseException as error:
                self.error = error
                loop.stop()
                raise

        return reconnect_or_stop

    async def watch(self) -> None:
        """Returns never; raises once the connection thread died (the supervisor restarts us)."""
        await self._stopped.wait()
        raise RuntimeError(f"the Feishu long connection stopped: {self.error}")


class PromptAcks(lark_ws_client.Client):  # type: ignore[misc]  # lark-oapi has no type hints
    """`lark.ws.Client` whose acks never wait for other events (lark-oapi 1.7.5, pinned <1.8).

    The SDK calls the synchronous handler right on its receive loop, so every hand-over held back
    the acks of all the events behind it: under a burst they came seconds late, past Feishu's 3 s,
    and Feishu pushed them again. Here a handler only starts its work (`deferred_acks`), and each
    ack waits for its own event's work, bounded by its budget, in the task the SDK gave that
    frame. A card click's answer is the ack's payload, so its handler runs on a worker thread.
    The ack frame is the SDK's own: the event frame echoed with `biz_rt`, code and data. Only a
    failed hand-over answers 500 (the SDK answered 500 to anything it could not parse, too)."""

    async def _handle_data_frame(self, frame: Any) -> None:
        headers = {header.key: header.value for header in frame.headers}
        payload: bytes | None = frame.payload
        parts = int(headers.get(HEADER_SUM) or 1)
        if parts > 1:
            message_id, seq = headers.get(HEADER_MESSAGE_ID, ""), int(headers.get(HEADER_SEQ) or 0)
            payload = self._combine(message_id, parts, seq, payload)
        if payload is None or headers.get(HEADER_TYPE) != MessageType.EVENT.value:
            return  # a part still missing; or not an event (the SDK drops those too)
        started = time.monotonic()
        ack = AckFrame(code=http.HTTPStatus.OK)
        try:
            result = await self._dispatch(payload)
            if result is not None:
                ack.data = base64.b64encode(JSON.marshal(result).encode())
        except HandOverFailed as error:  # Feishu pushes it again, and the next try may land
            log.warning("event %s answered 500: %s", headers.get(HEADER_MESSAGE_ID), error)
            ack = AckFrame(code=http.HTTPStatus.INTERNAL_SERVER_ERROR)
        except Exception as error:  # the SDK could not read it: pushing it again cannot fix that
            log.warning(
                "event %s of a broken shape acknowledged, dropped: %s", headers.get(HEADER_MESSAGE_ID), error
            )
        took = frame.headers.add()
        took.key, took.value = HEADER_BIZ_RT, str(round((time.monotonic() - started) * 1000))
        frame.payload = JSON.marshal(ack).encode()
        await self._write_message(frame.SerializeToString())

    async def _dispatch(self, payload: bytes) -> Any:
        if _is_callback(payload):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self._event_handler._do_without_validation, payload)
        with deferred_acks() as waits:
            result = self._event_handler._do_without_validation(payload)
        for wait in waits:
            await wait.settled()
        return result


def _is_callback(payload: bytes) -> bool:
    try:
        header = json.loads(payload).get("header") or {}
        return bool(header.get("event_type") == events.CARD_ACTION)
    except (ValueError, AttributeError):
        return False


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what the SDK left on its loop, then close it (the SDK's caches cancel their cleanup
    task when collected, which fails noisily on a loop that was closed under them)."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()
