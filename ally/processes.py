"""Child processes that cannot outlive us.

Every process work-ally starts (the Temporal dev server, the workers, the Codex child) runs in its
own process group, so a stop can signal the whole group, and on Linux asks the kernel to SIGKILL it
if its parent dies first (PR_SET_PDEATHSIG): a `kill -9` of a parent must not leave an orphan that
holds a port or a Codex thread's writer lock (docs/codex-app-server.md §1).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child between fork and exec."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def die_with_parent_hook() -> Callable[[], None] | None:
    return _die_with_parent if sys.platform.startswith("linux") else None


async def spawn_group(
    command: list[str],
    *,
    log_file: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start `command` as the leader of a new process group; its output goes to `log_file`."""
    out = open(log_file, "ab") if log_file else asyncio.subprocess.DEVNULL  # noqa: ASYNC230, SIM115 (a local log file)
    try:
        return await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
    finally:
        if not isinstance(out, int):
            out.close()


def start_group(command: list[str], *, log_file: Path, env: dict[str, str]) -> int:
    """`spawn_group` without an event loop, for a child this process hands over to the program it
    then execs (`ally up` starts the dev server, then becomes the supervisor): its pid."""
    with open(log_file, "ab") as out:
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
    return child.pid


class AdoptedChild:
    """A child started before this process exec'd its current program (`start_group`), as the
    supervisor sees its other children: `pid`, `returncode` (None while it runs) and `wait()`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # not (or no longer) ours to wait for
                self._returncode = -1
            else:
                if done:
                    self._returncode = os.waitstatus_to_exitcode(status)
        return self._returncode

    async def wait(self) -> int:
        while (code := self.returncode) is None:  # noqa: ASYNC110  # no watcher knows this child: poll
            await asyncio.sleep(0.05)
        return code


Child = asyncio.subprocess.Process | AdoptedChild


def signal_group(pid: int, sig: signal.Signals) -> bool:
    """Signal the process group led by `pid`; False when it is already gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def stop_group(process: Child, *, grace: float = 10.0) -> int | None:
    """SIGTERM the group, wait up to `grace` seconds, then SIGKILL whatever is left of it."""
    if process.returncode is None:
        signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), grace)
    # The leader may be gone while members of its group live on: kill the group regardless.
    signal_group(process.pid, signal.SIGKILL)
    if process.returncode is None:
        await process.wait()
    return process.returncode


PORTS_BELOW_EPHEMERAL = 12000  # where free_local_port picks: just under the OS's own range


def free_local_port() -> int:
    """A loopback port nobody listens on right now, below the OS's ephemeral range.

    Not one the OS picks (bind to 0): the dev server binds its own internal ports that way while
    it starts, so it could be handed the very port chosen here for its UI, and fail to start
    ("address already in use", seen in CI)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - PORTS_BELOW_EPHEMERAL), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def _ephemeral_low() -> int:
    """The first port of the range the OS hands out for bind-to-0."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
