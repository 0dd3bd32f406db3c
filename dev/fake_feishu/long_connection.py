"""Feishu's side of the long connection (WS): the peer `lark.ws.Client` connects to.

Protocol, as lark_oapi/ws/client.py (1.7.5) speaks it (docs/feishu-platform.md §6):
- frames are protobuf `lark_oapi.ws.pb.pbbp2_pb2.Frame`, sent as binary messages;
- `method` 0 = control (the client pings on connect and every PingInterval; we answer pong carrying the
  ClientConfig JSON, which the client applies), 1 = data;
- an event is a data frame with headers `type=event, message_id, trace_id, sum, seq` whose payload is
  the plaintext webhook envelope (split over `sum` frames, reassembled by `message_id`);
- the client acks by echoing the frame (plus a `biz_rt` header) with payload
  `{"code":200|500,"data":<base64 JSON of the handler's result>}`; `data` only for callbacks.
Frames of `type=card` are dropped by the SDK, so events and card callbacks both go as `type=event`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
import uuid
from typing import Any

from lark_oapi.ws.pb.pbbp2_pb2 import Frame
from pydantic import BaseModel, Field
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

CONTROL, DATA = 0, 1
START_TIMEOUT_S = 5.0


class ReceivedFrame(BaseModel):
    """A frame a client sent us: pings (control) and event acks (data)."""

    method: int
    headers: dict[str, str] = Field(default_factory=dict)
    payload: bytes = b""

    @property
    def type(self) -> str:
        return self.headers.get("type", "")


def _frame(method: int, service_id: int, seq_id: int, headers: dict[str, str], payload: bytes) -> Any:
    frame = Frame()
    frame.SeqID = seq_id
    frame.LogID = seq_id
    frame.service = service_id
    frame.method = method
    for key, value in headers.items():
        header = frame.headers.add()
        header.key = key
        header.value = value
    frame.payload = payload
    return frame


class LongConnectionPeer:
    """A websockets server on its own thread and event loop; each event goes to the newest client
    (Feishu sends each event to one connected client, docs/feishu-platform.md §1)."""

    def __init__(
        self, *, client_config: dict[str, int], service_id: int = 7, host: str = "127.0.0.1"
    ) -> None:
        self.client_config = client_config
        self.service_id = service_id
        self._host = host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._port = 0
        self._connections: list[ServerConnection] = []
        self._connected: asyncio.Event | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._received: list[ReceivedFrame] = []
        self.connection_paths: list[str] = []
        self.credentials_issued: list[str] = []  # access keys and tickets handed out in URLs

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as error:  # surfaced to start() below
                failure.append(error)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        threading.Thread(target=run, name="fake-feishu-ws", daemon=True).start()
        if not ready.wait(START_TIMEOUT_S):
            raise TimeoutError(f"fake Feishu long-connection peer did not start within {START_TIMEOUT_S} s")
        if failure:
            raise RuntimeError("fake Feishu long-connection peer failed to start") from failure[0]

    async def _open(self) -> None:
        self._connected = asyncio.Event()
        self._server = await serve(self._serve, self._host, self._port)  # the same port on a restart
        self._port = next(iter(self._server.sockets)).getsockname()[1]

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._close(), loop)
        try:
            future.result(START_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._loop = None

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()  # closes open connections too (1001 going away)
            await self._server.wait_closed()

    def url(self) -> str:
        """A fresh connection URL; `device_id` and `service_id` are required by the client
        (docs/feishu-platform.md §6). Like Feishu's, it carries credentials for the connection
        (`access_key`, `ticket`): the SDK logs this URL, so whoever writes its logs must mask
        them."""
        if not self._port:
            raise RuntimeError("the long-connection peer is not started; call FakeFeishu.start()")
        access_key, ticket = uuid.uuid4().hex, str(uuid.uuid4())
        with self._lock:
            self.credentials_issued += [access_key, ticket]
        return (
            f"ws://{self._host}:{self._port}/ws?device_id={uuid.uuid4().hex}&access_key={access_key}"
            f"&service_id={self.service_id}&ticket={ticket}"
        )

    @property
    def received(self) -> list[ReceivedFrame]:
        with self._lock:
            return list(self._received)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # --- serving -------------------------------------------------------------------------------

    async def _serve(self, connection: ServerConnection) -> None:
        self._connections.append(connection)
        with self._lock:
            self.connection_paths.append(connection.request.path if connection.request else "")
        assert self._connected is not None
        self._connected.set()
        try:
            async for message in connection:
                if isinstance(message, bytes):
                    await self._on_frame(connection, message)
        except ConnectionClosed:
            pass
        finally:
            if connection in self._connections:
                self._connections.remove(connection)
            if not self._connections:
                self._connected.clear()

    async def _on_frame(self, connection: ServerConnection, message: bytes) -> None:
        frame = Frame()
        frame.ParseFromString(message)
        headers = {header.key: header.value for header in frame.headers}
        with self._lock:
            self._received.append(ReceivedFrame(method=frame.method, headers=headers, payload=frame.payload))
        if frame.method == CONTROL and headers.get("type") == "ping":
            pong = _frame(
                CONTROL,
                self.service_id,
                0,
                {"type": "pong"},
                json.dumps(self.client_config).encode(),
            )
            await connection.send(pong.SerializeToString())
        elif frame.method == DATA:
            waiter = self._pending.get(headers.get("message_id", ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(frame.payload)

    def drop_connections(self) -> None:
        """Close every client connection (the SDK then reconnects per ClientConfig)."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(START_TIMEOUT_S)

    async def _drop(self) -> None:
        # Forget them first, so an event pushed right after this waits for the reconnect instead of
        # racing the closing handshake.
        dropped, self._connections[:] = list(self._connections), []
        assert self._connected is not None
        self._connected.clear()
        for connection in dropped:
            await connection.close()

    # --- pushing events ------------------------------------------------------------------------

    def push(self, envelope: dict[str, Any], *, timeout: float = 5.0, parts: int = 1) -> dict[str, Any]:
        """Send one event; return the client's ack payload with `data` decoded (blocking)."""
        future = asyncio.run_coroutine_threadsafe(self._push(envelope, timeout, parts), self._running_loop())
        return future.result(timeout + 1)

    async def apush(
        self,
        envelope: dict[str, Any],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - bounds the ack wait on the peer's own loop
        parts: int = 1,
    ) -> dict[str, Any]:
        """`push` for async callers: awaits the ack without blocking the caller's loop."""
        future = asyncio.run_coroutine_threadsafe(self._push(envelope, timeout, parts), self._running_loop())
        return await asyncio.wrap_future(future)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the long-connection peer is not started; call FakeFeishu.start()")
        return self._loop

    async def _push(self, envelope: dict[str, Any], budget_s: float, parts: int) -> dict[str, Any]:
        assert self._connected is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        try:
            await asyncio.wait_for(self._connected.wait(), budget_s)
        except TimeoutError:
            raise TimeoutError(
                f"no lark.ws.Client connected to the fake within {budget_s} s"
                " (is the client thread started with domain=fake.domain?)"
            ) from None
        connection = self._connections[-1]
        message_id = uuid.uuid4().hex
        payload = json.dumps(envelope, ensure_ascii=False).encode()
        size = -(-len(payload) // parts)  # ceil: `parts` chunks, the SDK joins them by `seq`
        ack: asyncio.Future[bytes] = loop.create_future()
        self._pending[message_id] = ack
        try:
            for seq in range(parts):
                headers = {
                    "type": "event",
                    "message_id": message_id,
                    "trace_id": uuid.uuid4().hex,
                    "sum": str(parts),
                    "seq": str(seq),
                }
                chunk = payload[seq * size : (seq + 1) * size]
                frame = _frame(DATA, self.service_id, next(self._seq), headers, chunk)
                await connection.send(frame.SerializeToString())
            try:
                raw = await asyncio.wait_for(ack, max(deadline - loop.time(), 0))
            except TimeoutError:
                raise TimeoutError(
                    f"no ack for event {message_id} within {budget_s} s"
                    " (a slow handler also blocks pings; Feishu re-pushes after 3 s)"
                ) from None
        finally:
            self._pending.pop(message_id, None)
        answer: dict[str, Any] = json.loads(raw)
        if isinstance(answer.get("data"), str):
            answer["data"] = json.loads(base64.b64decode(answer["data"]))
        return answer
