"""What the gateway's handlers and the transports share: the acks that wait for an event's own work,
and the end of a transport's thread as the gateway loop sees it.

A handler runs on the transport's thread and must not block it (Feishu wants its ack within 3 s);
inside `deferred_acks` it only starts its work and leaves a `PendingAck`, which the transport awaits
before it answers that one event (ally/channels/feishu/long_connection.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class HandOverFailed(Exception):
    """The work behind an event failed in time to say so in the ack: Feishu pushes it again."""


@dataclass
class PendingAck:
    """Work an event's ack waits for, awaited by the transport without blocking its loop."""

    future: concurrent.futures.Future[Any]
    budget_s: float
    what: str
    keep: Callable[[concurrent.futures.Future[Any], str], None]
    deadline: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.deadline += self.budget_s

    async def settled(self) -> None:
        """Returns once the work is done or its budget spent (it then goes on in the background);
        raises `HandOverFailed` if it failed in time."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not finished.done():
                finished.set_result(None)

        def wake(_: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the transport's loop closed meanwhile
                loop.call_soon_threadsafe(settle)

        self.future.add_done_callback(wake)
        try:
            await asyncio.wait_for(finished, max(self.deadline - time.monotonic(), 0.0))
        except TimeoutError:
            log.info("%s still in progress after %.1f s; acknowledged", self.what, self.budget_s)
            self.keep(self.future, self.what)
            return
        if not self.future.cancelled() and (error := self.future.exception()) is not None:
            raise HandOverFailed(f"{self.what}: {error}") from error


ACK_WAITS: ContextVar[list[PendingAck] | None] = ContextVar("feishu_ack_waits", default=None)


@contextlib.contextmanager
def deferred_acks() -> Iterator[list[PendingAck]]:
    """Handlers called inside this return at once; what their acks must wait for is collected."""
    waits: list[PendingAck] = []
    token = ACK_WAITS.set(waits)
    try:
        yield waits
    finally:
        ACK_WAITS.reset(token)


class ThreadEnd:
    """An asyncio.Event a transport thread sets, thread-safely, when it ends."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def signal(self) -> None:
        if self._loop is not None and self._event is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        assert self._event is not None, "start() the transport first"
        await self._event.wait()
