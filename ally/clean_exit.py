"""Ending a process that used the Temporal client, without a crash in the interpreter's shutdown.

The SDK's core runs threads of its own that still hold Python objects when a short command ends.
If the interpreter finalises while one of them releases the GIL, CPython aborts ("PyGILState_Release:
thread state … must be current when releasing") or segfaults, after the command printed its
correct output: a script sees a failure for a command that did its work. The SDK offers no way to
stop those threads, so a command ends here instead: it flushes what it has to say and leaves with
`os._exit`, which skips the finaliser (docs/operations.md, "Exit codes").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn


def exit_now(code: int) -> NoReturn:
    """Flush stdout, stderr and logging, then end the process with `code`, skipping finalisation.
    Only for the end of a process whose work is done: nothing after this runs (no atexit, no
    `finally` further up)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe (`ally … | head`) must not change the code
            stream.flush()
    with contextlib.suppress(Exception):
        logging.shutdown()
    os._exit(code)


def exit_code(status: object) -> int:
    """The process exit code a `SystemExit` argument stands for (None = 0, text = 1, as Python does)."""
    if status is None:
        return 0
    if isinstance(status, int):
        return status
    with contextlib.suppress(Exception):
        print(status, file=sys.stderr)
    return 1


def run_process(main: Callable[[], Coroutine[Any, Any, Any]]) -> NoReturn:
    """A worker process's `__main__`: run `main`, then leave through `exit_now` with its code (an
    uncaught error prints its traceback and exits 1, as Python would)."""
    code = 1
    try:
        asyncio.run(main())
        code = 0
    except SystemExit as stop:
        code = exit_code(stop.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    exit_now(code)
