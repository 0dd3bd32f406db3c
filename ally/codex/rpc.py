"""JSON-RPC over newline-delimited JSON on a child's stdout/stdin, as `codex app-server` speaks it.

Three kinds of line arrive (docs/codex-app-server.md §1): a response (`id`, no `method`), a
notification (`method`, no `id`), and a server->client request (`method` AND `id`, ids from 0 per
connection, a separate id space from ours). The read loop decodes each line once and dispatches on
its keys; it validates nothing, so its per-message cost stays a `json.loads` and a few dict lookups.
Callers validate results and params to pydantic models where they use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

# A thread/read or thread/turns/list result of a long thread is one line; asyncio's default
# StreamReader limit (64 KiB) would cut it off.
STREAM_LIMIT = 64 * 1024 * 1024

# JSON-RPC 2.0 error codes.
METHOD_NOT_FOUND = -32601
INTERNAL_ERROR = -32603

NotificationHandler = Callable[[str, dict[str, Any]], None]
"""Called with (method, params) for each notification, synchronously, in arrival order."""

ServerRequestHandler = Callable[[str, "int | str", dict[str, Any]], Awaitable[dict[str, Any]]]
"""Called with (method, id, params) for each server request; returns the result or raises
`JsonRpcError`. Cancelling it sends no answer (the server cleared the request itself)."""


class RpcFailure(Exception):
    """Base of everything a call on `JsonRpcConnection` can raise."""


class JsonRpcError(RpcFailure):
    """An error answer: from the server to our request, or ours to a server request."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (JSON-RPC {code})")
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class RequestTimeout(RpcFailure):
    """No answer within the timeout; the server may still act on the request."""


class ConnectionClosed(RpcFailure):
    """The stream closed (the child exited) before an answer came."""


class LineWriter(Protocol):
    """What we need of the child's stdin: `asyncio.StreamWriter` fits."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def is_closing(self) -> bool: ...
    async def drain(self) -> None: ...


class JsonRpcConnection:
    """One JSON-RPC peer over a reader/writer pair. `start()` begins reading; `closed` ends it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: LineWriter,
        *,
        name: str = "codex",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        self._on_close = on_close  # called once, before in-flight requests fail
        self._writer = writer
        self._name = name
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscribers: list[NotificationHandler] = []
        self._request_handler: ServerRequestHandler | None = None
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._reader_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._close_reason = "connection not started"

    # --- wiring ------------------------------------------------------------------------------

    def start(self) -> None:
        self._reader_task = asyncio.create_task(self._read_loop(), name=f"{self._name}-rpc-reader")

    def subscribe(self, handler: NotificationHandler) -> Callable[[], None]:
        """Receive every notification; returns the unsubscribe function."""
        self._subscribers.append(handler)
        return lambda: self._subscribers.remove(handler) if handler in self._subscribers else None

    def set_request_handler(self, handler: ServerRequestHandler | None) -> None:
        self._request_handler = handler

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # --- outgoing ----------------------------------------------------------------------------

    async def request(self, method: str, params: Any = None, *, timeout_s: float | None = 30.0) -> Any:
        """Send a request and return its `result`; raise `JsonRpcError`, `RequestTimeout` or
        `ConnectionClosed`."""
        if self._closed.is_set():
            raise ConnectionClosed(f"{self._name}: {self._close_reason}; {method} not sent")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._write({"id": request_id, "method": method, "params": params})
            await self._writer.drain()
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            raise RequestTimeout(f"{self._name}: no answer to {method} within {timeout_s} s") from None
        except ConnectionError as error:  # stdin closed, or the pipe broke (drain raises)
            raise ConnectionClosed(f"{self._name}: cannot send {method}: {error}") from error
        finally:
            self._pending.pop(request_id, None)

    def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        self._write(message)

    def close(self) -> None:
        """Close our side (stdin): the Codex child treats it as a disconnect and exits
        (docs/codex-app-server.md §1)."""
        if not self._writer.is_closing():
            self._writer.close()

    def _write(self, message: dict[str, Any]) -> None:
        if self._writer.is_closing():
            raise ConnectionError("stdin is closed")
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    # --- incoming ----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "the stream closed"
        try:
            while True:
                try:
                    line = await self._reader.readline()
                except ValueError:
                    # Longer than STREAM_LIMIT: readline has dropped it. If it was a response its
                    # request times out; nothing else is lost.
                    log.error("%s: dropped a message longer than %d bytes", self._name, STREAM_LIMIT)
                    continue
                if not line:
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    log.warning("%s: not JSON: %.200r", self._name, line)
                    continue
                if isinstance(message, dict):
                    self._dispatch(message)
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            reason = f"the stream failed: {error}"
        finally:
            self._shut(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:
            future = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if future is None or future.done():
                log.debug("%s: answer to no pending request: %.200r", self._name, message)
            elif "error" in message:
                error = message["error"] or {}
                future.set_exception(
                    JsonRpcError(
                        error.get("code", INTERNAL_ERROR), error.get("message", ""), error.get("data")
                    )
                )
            else:
                future.set_result(message.get("result"))
        elif "id" in message:
            task = asyncio.create_task(self._answer(method, message["id"], message.get("params") or {}))
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)
        else:
            params = message.get("params") or {}
            for subscriber in tuple(self._subscribers):
                try:
                    subscriber(method, params)
                except Exception:
                    log.exception("%s: notification handler failed on %s", self._name, method)

    async def _answer(self, method: str, request_id: int | str, params: dict[str, Any]) -> None:
        # Every server request gets an answer: an unanswered one blocks its turn forever
        # (docs/codex-app-server.md §6).
        handler = self._request_handler
        try:
            if handler is None:
                raise JsonRpcError(METHOD_NOT_FOUND, f"this client does not handle {method}")
            reply: dict[str, Any] = {"id": request_id, "result": await handler(method, request_id, params)}
        except asyncio.CancelledError:
            return  # the request was cleared (turn ended, child gone): nothing to answer
        except JsonRpcError as error:
            reply = {"id": request_id, "error": error.to_json()}
        except Exception as error:
            log.exception("%s: handler for %s failed", self._name, method)
            reply = {"id": request_id, "error": {"code": INTERNAL_ERROR, "message": f"client error: {error}"}}
        with contextlib.suppress(ConnectionError):
            self._write(reply)

    def _shut(self, reason: str) -> None:
        if self._closed.is_set():
            return
        self._close_reason = reason
        self._closed.set()
        if self._on_close is not None:
            try:
                self._on_close()
            except Exception:
                log.exception("%s: close handler failed", self._name)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionClosed(f"{self._name}: {reason} before the answer came"))
        self._pending.clear()
        for task in tuple(self._handler_tasks):
            task.cancel()

    async def aclose(self) -> None:
        """Stop reading and fail whatever is still in flight."""
        self.close()
        if self._reader_task is not None and not self._reader_task.done():
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._shut("the connection was closed by us")
