"""What the routine tests share: a routine aimed at a test stack's chat, and `ally routines` run in-process
against the test's own Temporal dev server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import Client, ScheduleActionExecution, ScheduleActionExecutionStartWorkflow
from typer.testing import CliRunner, Result

from ally import routines
from ally.cli import app
from ally.contracts import ChatRef, PolicyConfig, RoutineRun, ThreadSettings
from ally.routines import RoutineSpec
from tests.stack import Stack


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


def run_for(
    stack: Stack, spec: RoutineSpec, chat: ChatRef, *, cwd: Path | None = None, **fields: Any
) -> RoutineRun:
    """The run `ally routines apply` would make, aimed at the stack's chat worker and runtime host."""
    resolved: dict[str, Any] = {
        "chat": chat,
        "assistant": "default",
        "assistant_name": "default",
        "settings": ThreadSettings(cwd=str(cwd or stack.workspace)),
        "policy": PolicyConfig(),
        "approvers": ["ou_owner"],
        "discovery_queue": stack.discovery_queue,
    }
    return routines.run_of(spec, **{**resolved, **fields})


@contextlib.asynccontextmanager
async def routine(client: Client, spec: RoutineSpec, run: RoutineRun) -> AsyncIterator[str]:
    """The routine's schedule, created and then deleted when the block ends (schedules outlive tests)."""
    applied = await routines.put(client, spec, run)
    try:
        yield applied
    finally:
        with contextlib.suppress(Exception):
            await routines.remove(client, spec.name)


async def ally(client: Client, home: Path, *args: str) -> Result:
    """`ally ARGS` as a person runs it, with the data dir `home` and this test's Temporal."""
    _host, _, port = client.service_client.config.target_host.rpartition(":")
    env = {"WORK_ALLY_HOME": str(home), "WORK_ALLY_TEMPORAL__PORT": port}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def started_id(action: ScheduleActionExecution) -> str:
    """The id of the workflow one of the schedule's actions started."""
    assert isinstance(action, ScheduleActionExecutionStartWorkflow)
    return action.workflow_id
