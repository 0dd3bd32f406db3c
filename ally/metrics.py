"""Prometheus metrics: the Temporal SDK's own and work-ally's, on one endpoint per part.

A part given a port in `[metrics]` builds its Temporal runtime with a Prometheus exporter; its
client, and so its workers, use that runtime, and our own metrics come from the same runtime's
meters, so one scrape returns both. Turn counters are made in the turn workflow with its own meter
(the SDK drops them while a history replays, so a worker restart counts nothing twice), delivery
retries in the channel activities; the gauges are refreshed every `poll_seconds` by the part that
owns what they measure. docs/metrics.md says what each one means and what to watch.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Literal

from temporalio import activity, workflow
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from ally import names
from ally.core_logs import core_logging
from ally.worker_process import repeating

if TYPE_CHECKING:  # the turn workflow imports this module: it needs none of these
    from temporalio.client import Client

    from ally.codex.runtime import CodexRuntime
    from ally.config import AllyConfig

log = logging.getLogger(__name__)

Part = Literal["runtime-worker", "gateway"]
PARTS: tuple[Part, ...] = ("runtime-worker", "gateway")

TURNS_STARTED = "work_ally_turns_started"
TURNS_FINISHED = "work_ally_turns_finished"
APPROVALS_WAITING = "work_ally_approvals_waiting"
DELIVERY_RETRIES = "work_ally_delivery_retries"
CODEX_RESTARTS = "work_ally_codex_restarts"
CODEX_UP = "work_ally_codex_up"

# The turns that wait for a person: the turn workflow sets this state while a request is open.
WAITING_QUERY = " AND ".join(
    (
        'WorkflowType="TurnWorkflow"',
        'ExecutionStatus="Running"',
        f'{names.TURN_STATE.name}="awaiting_approval"',
    )
)


class MetricsUnavailable(Exception):
    """The metrics endpoint could not be opened (its port taken, a bad host), said in one line."""


def metrics_address(config: AllyConfig, part: Part) -> str | None:
    """host:port where `part` serves its metrics, or None when it serves none."""
    metrics = config.metrics
    port = metrics.runtime_worker_port if part == "runtime-worker" else metrics.gateway_port
    host = f"[{metrics.host}]" if ":" in metrics.host else metrics.host  # an IPv6 address
    return f"{host}:{port}" if metrics.enabled and port else None


def metrics_url(config: AllyConfig, part: Part) -> str | None:
    address = metrics_address(config, part)
    return f"http://{address}/metrics" if address else None


_runtimes: dict[str, Runtime] = {}
_plain: list[Runtime] = []


def plain_runtime() -> Runtime:
    """The process's Temporal runtime when it exports no metrics: the default, with `core_logging`."""
    if not _plain:
        _plain.append(Runtime(telemetry=TelemetryConfig(logging=core_logging())))
    return _plain[0]


def metrics_runtime(config: AllyConfig, part: Part) -> Runtime | None:
    """The Temporal runtime that exports this part's metrics (one per process and address: the
    exporter holds its port for the life of the process), or None when metrics are off."""
    address = metrics_address(config, part)
    if address is None:
        return None
    if address not in _runtimes:
        try:
            telemetry = TelemetryConfig(
                metrics=PrometheusConfig(bind_address=address), logging=core_logging()
            )
            _runtimes[address] = Runtime(telemetry=telemetry)
        except ValueError as error:
            raise MetricsUnavailable(
                f"cannot serve metrics on {address} ({error}); choose another port in "
                f"[metrics] {part.replace('-', '_')}_port, or set it to 0"
            ) from None
    return _runtimes[address]


def turn_started() -> None:
    workflow.metric_meter().create_counter(TURNS_STARTED, "Turns that started.").add(1)


def turn_finished(status: str) -> None:
    counter = workflow.metric_meter().create_counter(TURNS_FINISHED, "Turns that ended, by how they ended.")
    counter.add(1, {"status": status})


def delivery_retried() -> None:
    """In a channel activity's attempt that retries a failed one."""
    activity.metric_meter().create_counter(
        DELIVERY_RETRIES, "Delivery attempts that retried a failed one."
    ).add(1)


class CodexGauges:
    """The runtime worker's view of its Codex child: restarts so far, and whether it is up now."""

    def __init__(self, meter: MetricMeter, runtime: CodexRuntime) -> None:
        self.runtime = runtime
        self.restarts = meter.create_counter(CODEX_RESTARTS, "Times the Codex child was restarted.")
        self.restarts.add(0)  # a series from the start, so `increase()` sees the first restart
        self.up = meter.create_gauge(CODEX_UP, "1 while the Codex child runs, 0 while it is down.")
        self.counted = 0

    async def refresh(self) -> None:
        health = self.runtime.health()
        if health.restarts > self.counted:
            self.restarts.add(health.restarts - self.counted)
            self.counted = health.restarts
        self.up.set(1 if health.state == "running" else 0)


class ApprovalsGauge:
    """Turns waiting for a person's decision, counted from Temporal's visibility: the count stays
    right across worker restarts and chat workers, which a tally kept in a process would not."""

    def __init__(self, meter: MetricMeter, client: Client) -> None:
        self.client = client
        self.gauge = meter.create_gauge(APPROVALS_WAITING, "Turns waiting for an approval decision.")

    async def refresh(self) -> None:
        self.gauge.set((await self.client.count_workflows(WAITING_QUERY)).count)


def refreshing(every: float, *refreshers: Callable[[], Awaitable[None]]) -> AbstractAsyncContextManager[None]:
    """Refresh the gauges now and then every `every` seconds, while the block runs."""

    async def refresh_all() -> None:
        for refresh in refreshers:
            try:
                await refresh()
            except Exception as error:  # one gauge not refreshed is no reason to skip the others
                log.warning("metrics not refreshed: %s", error)

    return repeating("metrics", every, refresh_all)
