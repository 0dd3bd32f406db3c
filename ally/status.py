"""`ally status`: which parts run, how healthy each is, and whether Temporal sees the workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from ally.config import AllyConfig
from ally.names import FEISHU_CHATS_QUEUE, RUNTIME_DISCOVERY_QUEUE, runtime_queue
from ally.run_state import read_part_states
from ally.temporal_client import connect, target, ui_url


class PartReport(BaseModel):
    name: str
    pid: int
    alive: bool
    up_seconds: float
    detail: dict[str, Any]


class StatusReport(BaseModel):
    temporal: str
    temporal_reachable: bool
    ui: str | None
    parts: list[PartReport]
    pollers: dict[str, int]

    @property
    def running(self) -> bool:
        return any(p.alive for p in self.parts) or self.temporal_reachable

    def lines(self) -> list[str]:
        reach = "reachable" if self.temporal_reachable else "NOT reachable"
        lines = [f"temporal   {self.temporal} ({reach})" + (f"  UI {self.ui}" if self.ui else "")]
        if not self.parts:
            lines.append("nothing is running here (start it with `dev/ally up`)")
        for part in self.parts:
            state = f"up {part.up_seconds:.0f}s" if part.alive else "STALE (process gone)"
            extra = "  ".join(f"{k}={v}" for k, v in part.detail.items())
            lines.append(f"{part.name:<14} pid {part.pid:<7} {state}  {extra}".rstrip())
        for queue, count in self.pollers.items():
            lines.append(f"queue {queue}: {count} poller(s)" + ("" if count else "  <- no worker polls it"))
        return lines


async def collect_status(config: AllyConfig) -> StatusReport:
    now = datetime.now(UTC)
    parts = [
        PartReport(
            name=s.name,
            pid=s.pid,
            alive=s.alive,
            up_seconds=(now - s.started_at).total_seconds(),
            detail=s.detail,
        )
        for s in read_part_states()
    ]
    address, namespace = target(config)
    pollers: dict[str, int] = {}
    reachable = False
    try:
        client = await asyncio.wait_for(connect(config), 3)
        reachable = True
        queues = {
            RUNTIME_DISCOVERY_QUEUE: TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            runtime_queue(config.runtime.host): TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        }
        if config.feishu.configured:  # the gateway's chat worker; a terminal chat's runs in `ally chat`
            queues[FEISHU_CHATS_QUEUE] = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
        for queue, kind in queues.items():
            described = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
                )
            )
            pollers[queue] = len(described.pollers)
    except (TimeoutError, RuntimeError, OSError):
        pass
    return StatusReport(
        temporal=f"{address}/{namespace}",
        temporal_reachable=reachable,
        ui=ui_url(config),
        parts=parts,
        pollers=pollers,
    )
