"""Test helpers for process-level tests: servers coming up, processes left behind."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter


def processes_with_env(marker: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment contains `marker`.

    Every part `ally up` starts inherits WORK_ALLY_HOME, so this finds the dev server, the workers
    and the Codex child alike, however they were started.
    """
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if state != "Z" and marker.encode() in environ.split(b"\0"):
            found[int(entry.name)] = cmdline
    return found


async def temporal_when_up(port: int, *, within: float = 30.0) -> Client:
    """A client of a dev server this process just started, once it answers."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
        except RuntimeError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
