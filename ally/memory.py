"""Giving freed memory back to the system, for the long-running worker processes.

glibc's malloc keeps what a process frees for its own reuse, so a worker at rest holds pages that
start-up (imports, the first connections) or a burst of turns freed long ago. And each thread that
allocates may get an arena of its own, up to 8 per core, each holding on to its own free pages;
the Temporal core's threads are a few. Two glibc calls address these: `mallopt(M_ARENA_MAX)`
before the threads start, and `malloc_trim(0)` (well under a millisecond) from time to time.
Measured on the runtime worker at rest: docs/operations.md, "bench.footprint". Where the C library
is not glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import AbstractAsyncContextManager
from functools import cache

from ally.worker_process import repeating

M_ARENA_MAX = -8  # glibc's <malloc.h>
# The worker processes' settings, the defaults below: two arenas for their few threads (the Temporal
# core's, the Feishu SDK's), and what they freed handed back twice a minute, so at rest each holds
# what it uses.
WORKER_ARENAS = 2
WORKER_TRIM_EVERY_S = 30.0


@cache
def _glibc() -> ctypes.CDLL | None:
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
    except (ValueError, OSError):  # no such name on this system
        return None
    return ctypes.CDLL(None)  # the process's own symbols, glibc's among them


def limit_malloc_arenas(arenas: int = WORKER_ARENAS) -> None:
    """Call before any thread but the main one allocates: arenas already made stay."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def trim_heap() -> None:
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def returning_freed_memory(every_s: float = WORKER_TRIM_EVERY_S) -> AbstractAsyncContextManager[None]:
    """Trims at once (what start-up freed), then every `every_s` seconds while the block runs."""

    async def trim() -> None:
        trim_heap()

    return repeating("returning freed memory", every_s, trim)
