"""`ally status`: which parts run, how healthy each is, and whether Temporal sees the workers."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from ally.alerts import open_incidents
from ally.assistants import all_assistants
from ally.codex.models import RuntimeHealth
from ally.config import AllyConfig
from ally.contracts import AlertsView
from ally.metrics import PARTS, metrics_url
from ally.names import FEISHU_CHATS_QUEUE, RUNTIME_DISCOVERY_QUEUE, host_of_worker, runtime_queue
from ally.run_state import read_part_states
from ally.temporal_client import connect, target, ui_url

# `ally up` first, then what it starts, in start order.
PART_ORDER = {"supervisor": 0, "runtime-worker": 1, "gateway": 2}
# A worker's long poll lasts up to a minute, and Temporal lists a poller for minutes after it went:
# one that has not polled for longer than this is gone.
POLLER_GONE_AFTER_S = 90.0


class PartReport(BaseModel):
    name: str
    pid: int
    alive: bool
    up_seconds: float
    last_seen_seconds: float = 0.0  # since the part last rewrote its state file
    detail: dict[str, Any]


class HostReport(BaseModel):
    """One runtime host: configured (this machine's [runtime] host, or an assistant's), or seen polling."""

    host: str
    this_machine: bool
    pollers: int  # runtime workers polling its pinned queue now
    last_polled_s: float | None  # since a worker last polled it; None = never seen
    assistants: list[str]  # the names of the assistants that live on it
    serves_any: bool = False  # it polls the discovery queue: it runs the assistants without a host

    def line(self) -> str:
        name = f"{self.host} (this machine)" if self.this_machine else self.host
        living = f"assistants {', '.join(self.assistants)}" if self.assistants else ""
        if self.serves_any:
            living = f"{living}, and those without a host" if living else "the assistants without a host"
        living = living or "no assistant lives here"
        if self.pollers:
            return f"  {name}: polled by {_count(self.pollers, 'runtime worker')}; {living}."
        since = (
            "never seen" if self.last_polled_s is None else f"last seen {duration(self.last_polled_s)} ago"
        )
        waiting = f"; {', '.join(self.assistants)} cannot answer until it is back" if self.assistants else ""
        return f"  {name}: NO runtime worker ({since}){waiting}. Start `ally up` there."


class StatusReport(BaseModel):
    temporal: str
    temporal_reachable: bool
    ui: str | None
    parts: list[PartReport]
    pollers: dict[str, int]
    hosts: list[HostReport] = []
    any_host: list[str] = []  # the names of the assistants that run on whichever host answers
    metrics: dict[str, str] = {}  # part -> its Prometheus endpoint, when [metrics] gives it one
    alerts: AlertsView | None = None  # None: no alerts workflow answered (no owner, or no gateway)

    @property
    def running(self) -> bool:
        return any(p.alive for p in self.parts) or self.temporal_reachable

    def lines(self) -> list[str]:
        address, _, namespace = self.temporal.rpartition("/")
        reach = "reachable" if self.temporal_reachable else "NOT reachable"
        lines = [
            f"Temporal {address} (namespace {namespace}): {reach}" + (f", UI {self.ui}" if self.ui else "")
        ]
        if not self.parts:
            lines.append("Nothing is running here; start it with `ally up`.")
        for part in sorted(self.parts, key=lambda p: (PART_ORDER.get(p.name, len(PART_ORDER)), p.name)):
            lines += part_lines(part)
        for queue, count in self.pollers.items():
            what = f"Queue {queue} ({_queue_role(queue)})"
            if count:
                lines.append(f"{what}: polled by {_count(count, 'worker')}.")
            else:
                lines.append(f"{what}: NO worker polls it; what is sent there waits.")
        if self.hosts:
            lines.append("Runtime hosts:")
            lines += [host.line() for host in self.hosts]
            if self.any_host:
                lines.append(f"  any host: {', '.join(self.any_host)}.")
        if self.alerts is not None:
            lines += alert_lines(self.alerts, time.time())
        if self.metrics:
            lines.append("Metrics: " + ", ".join(f"{part} {url}" for part, url in self.metrics.items()))
        return lines


def alert_lines(alerts: AlertsView, now: float) -> list[str]:
    """The owner's open incidents, as their alert said them."""
    if not alerts.open:
        return ["Alerts: none open."]
    return [
        f"Alert #{incident.number}, open for {duration(now - incident.opened_at)}: {incident.text}"
        for incident in alerts.open
    ]


def _queue_role(queue: str) -> str:
    if queue == RUNTIME_DISCOVERY_QUEUE:
        return "where a new conversation finds a runtime host"
    if queue == FEISHU_CHATS_QUEUE:
        return "the Feishu chats' workflows"
    return "this host's Codex runtime"


def part_lines(part: PartReport) -> list[str]:
    """One sentence about a part (and a warning line when it has one)."""
    if not part.alive:
        seen = duration(part.last_seen_seconds)
        return [f"{part.name}: NOT running (pid {part.pid} is gone; last seen {seen} ago)."]
    words = [f"{part.name}: running for {duration(part.up_seconds)} (pid {part.pid})"]
    warnings: list[str] = []
    if part.name == "runtime-worker" and part.detail:
        health = RuntimeHealth.model_validate(part.detail)
        words += _codex_words(health)
        if health.version_mismatch:
            warnings.append(f"  warning: {health.version_mismatch}")
    elif part.name == "gateway":
        transport, handed = part.detail.get("transport"), part.detail.get("handed_over")
        if transport:
            words.append(f"Feishu {transport}")
        if isinstance(handed, int):
            words.append(f"{_count(handed, 'message')} handed over")
    else:
        words += [f"{key} {value}" for key, value in part.detail.items()]
    return [", ".join(words) + ".", *warnings]


def _codex_words(health: RuntimeHealth) -> list[str]:
    version = health.version.split()[-1] if health.version else "(version unknown)"
    if health.state == "running" and health.pid is not None:
        since = f", up {duration(time.time() - health.started_at)}" if health.started_at else ""
        codex = f"Codex {version} (pid {health.pid}{since})"
    elif health.state == "restarting":
        codex = "Codex is restarting"
    else:
        codex = "Codex is stopped"
    words = [codex, _count(health.restarts, "restart")]
    if health.loaded_threads:
        words.append(f"{_count(health.loaded_threads, 'thread')} loaded")
    if health.pending_requests:
        words.append(f"{_count(health.pending_requests, 'request')} waiting for a decision")
    return words


def duration(seconds: float) -> str:
    """A span as a person says it: 40 s, 3 min, 2 h 5 min, 3 days."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


async def collect_status(config: AllyConfig) -> StatusReport:
    now = datetime.now(UTC)
    parts = [
        PartReport(
            name=s.name,
            pid=s.pid,
            alive=s.alive,
            up_seconds=(now - s.started_at).total_seconds(),
            last_seen_seconds=(now - s.updated_at).total_seconds(),
            detail=s.detail,
        )
        for s in read_part_states()
    ]
    address, namespace = target(config)
    pollers: dict[str, int] = {}
    hosts: list[HostReport] = []
    reachable = False
    alerts: AlertsView | None = None
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
        hosts = await runtime_hosts(client, namespace, config)
        alerts = await asyncio.wait_for(open_incidents(client), 3) if config.feishu.configured else None
    except (TimeoutError, RuntimeError, OSError):
        pass
    return StatusReport(
        temporal=f"{address}/{namespace}",
        temporal_reachable=reachable,
        ui=ui_url(config),
        parts=parts,
        pollers=pollers,
        hosts=hosts,
        any_host=[a.name for a in all_assistants(config) if a.host is None],
        alerts=alerts,
        metrics={part: url for part in PARTS if (url := metrics_url(config, part))},
    )


async def runtime_hosts(client: Client, namespace: str, config: AllyConfig) -> list[HostReport]:
    """Every runtime host this machine knows of, with the assistants living there: its own, those the
    assistants name, and any other seen on the discovery queue (it serves the assistants without a
    host). Whether a host is up is whether a worker polls its pinned queue."""
    living: dict[str, list[str]] = {config.runtime.host: []}
    for assistant in all_assistants(config):
        if assistant.host is not None:
            living.setdefault(assistant.host, []).append(assistant.name)
    now = time.time()
    serving: set[str] = set()
    for poller in await _pollers(client, namespace, RUNTIME_DISCOVERY_QUEUE):
        host = host_of_worker(poller.identity)
        if host is not None and now - poller.last_access_time.ToSeconds() <= POLLER_GONE_AFTER_S:
            living.setdefault(host, [])
            serving.add(host)
    reports: list[HostReport] = []
    for host, assistants in living.items():
        ages = [
            now - p.last_access_time.ToSeconds()
            for p in await _pollers(client, namespace, runtime_queue(host))
        ]
        reports.append(
            HostReport(
                host=host,
                this_machine=host == config.runtime.host,
                pollers=sum(1 for age in ages if age <= POLLER_GONE_AFTER_S),
                last_polled_s=max(0.0, min(ages)) if ages else None,
                assistants=assistants,
                serves_any=host in serving,
            )
        )
    return sorted(reports, key=lambda report: (not report.this_machine, report.host))


async def _pollers(client: Client, namespace: str, queue: str) -> list[PollerInfo]:
    described = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=namespace,
            task_queue=TaskQueue(name=queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        )
    )
    return list(described.pollers)
