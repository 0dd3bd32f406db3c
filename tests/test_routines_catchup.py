"""Catch-up after downtime: a routine's run that fell due while Temporal was down runs once when it
is back, within the routine's catch-up window; one older than the window is skipped, and counted
where `ally routines show` lists it.

A dev server of the test's own, with its SQLite file, stopped and started again like the embedded
one `ally up` runs (ally/temporal_server.py); the real chat worker and Codex runtime stay up.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client, ScheduleHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from ally import names
from ally.model_server import Say
from ally.routines import RoutineSpec
from ally.temporal_server import dev_server_command
from tests.routine_helpers import ally, routine, run_for, unique
from tests.stack import eventually, running_stack

pytestmark = [pytest.mark.faults, pytest.mark.codex]

EVERY_S = 20
WINDOW_S = 10  # the shortest catch-up window Temporal takes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class DevServer:
    def __init__(self, db: Path) -> None:
        self.port, self.ui_port = free_port(), free_port()
        self.command = dev_server_command(
            db_file=db, port=self.port, ui_port=self.ui_port, namespace="default"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=20)
        self.process = None


@contextlib.contextmanager
def dev_server(db: Path) -> Iterator[DevServer]:
    server = DevServer(db)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.stop()


async def connected(server: DevServer) -> Client:
    deadline = time.monotonic() + 30
    while True:
        try:
            return await Client.connect(f"127.0.0.1:{server.port}", data_converter=pydantic_data_converter)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def down_until(server: DevServer, due: float, *, late_by: float) -> AsyncIterator[None]:
    """Temporal is down from now until `late_by` seconds after the time `due` (epoch seconds)."""
    server.stop()
    await asyncio.sleep(max(due + late_by - time.time(), 0))
    server.start()
    await serving(server)
    yield


async def serving(server: DevServer) -> None:
    """Until the restarted server answers: on a loaded machine it takes seconds to listen again, and
    a describe sent before that exhausts the client's own retries ("tcp connect error")."""
    probe = await connected(server)
    await probe.workflow_service.get_system_info(GetSystemInfoRequest())


async def _until_missed(handle: ScheduleHandle) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (await handle.describe()).info.num_actions_missed_catchup_window:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the late run was not counted as missed")


async def test_a_run_due_while_temporal_was_down_runs_once_within_the_window_and_an_older_one_is_skipped(
    tmp_path: Path,
) -> None:
    with dev_server(tmp_path / "temporal.db") as server:
        client = await connected(server)
        async with running_stack(client, tmp_path) as stack:
            chat = stack.chat()
            stack.model.push(*(Say(text=f"Report {n}.") for n in range(1, 5)))
            spec = RoutineSpec(
                name=unique("nightly"),
                prompt="Write the report.",
                chat=chat.chat_id,
                every=f"{EVERY_S}s",
                catchup_window=f"{WINDOW_S}s",
            )
            async with routine(client, spec, run_for(stack, spec, chat)):
                handle = client.get_schedule_handle(names.routine_schedule_id(spec.name))
                await eventually(
                    lambda: stack.replies(chat, tone="answer"), within=EVERY_S + 10, what="a first run"
                )
                due = (await handle.describe()).info.next_action_times[0].timestamp()

                # Down across the next due time, back 3 s after it (inside the 10 s window).
                async with down_until(server, due, late_by=3):
                    await eventually(
                        lambda: len(stack.replies(chat, tone="answer")) >= 2,
                        within=40,
                        what="the catch-up run",
                    )
                described = await handle.describe()
                assert described.info.num_actions == 2  # exactly once for the run missed
                assert described.info.num_actions_missed_catchup_window == 0
                caught_up = described.info.recent_actions[-1]
                assert abs(caught_up.scheduled_at.timestamp() - due) < 1  # the missed one, late
                assert caught_up.started_at.timestamp() - due >= 3

                # Down across the next one until it is older than the window: skipped, and listed.
                due = described.info.next_action_times[0].timestamp()
                async with down_until(server, due, late_by=WINDOW_S + 3):
                    await _until_missed(handle)
                described = await handle.describe()
                assert not [
                    a for a in described.info.recent_actions if abs(a.scheduled_at.timestamp() - due) < 1
                ]
                assert len(stack.replies(chat, tone="answer")) == 2
                shown = await ally(client, tmp_path / "home", "routines", "show", spec.name)
                assert "older than the catch-up window (10s): " in shown.output, shown.output
