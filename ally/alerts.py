"""Starting the owner's alerts (workflows/alerts.py) from this machine's configuration."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from ally import names
from ally.assistants import all_assistants
from ally.config import AllyConfig
from ally.config import owner_of as owner_of
from ally.contracts import AlertsConfig, AlertsState, AlertsView, ChatRef
from workflows.alerts import AlertsWorkflow


def alerts_config(config: AllyConfig, owner: str, worker_queue: str) -> AlertsConfig:
    alerts = config.alerts
    hosts: dict[str, list[str]] = {}
    for assistant in all_assistants(config):
        if assistant.host is not None:
            hosts.setdefault(assistant.host, []).append(assistant.name)
    return AlertsConfig(
        owner=ChatRef(channel="feishu", chat_id=owner, chat_type="p2p", worker_queue=worker_queue),
        discovery_queue=names.RUNTIME_DISCOVERY_QUEUE,
        hosts=hosts,
        probe_every_s=alerts.probe_every_seconds,
        probe_timeout_s=alerts.probe_timeout_seconds,
        runtime_down_after_s=alerts.runtime_down_after_seconds,
        failures=alerts.failed_turns,
        failures_window_s=alerts.failed_turns_window_seconds,
        quiet_after_s=alerts.quiet_seconds,
    )


async def start_alerts(
    client: Client, config: AlertsConfig, *, workflow_id: str = names.ALERTS_WORKFLOW_ID
) -> None:
    """Start the deployment's alerts workflow, or hand the running one this configuration: its open
    incidents are kept, so a restart never alerts twice for one."""
    handle = await client.start_workflow(
        AlertsWorkflow.run,
        AlertsState(config=config),
        id=workflow_id,
        task_queue=config.owner.worker_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    await handle.signal(AlertsWorkflow.configure, config)


async def open_incidents(client: Client, *, workflow_id: str = names.ALERTS_WORKFLOW_ID) -> AlertsView | None:
    """The alerts workflow's incidents; None when it is not running (no owner, or not started yet)."""
    try:
        return await client.get_workflow_handle_for(AlertsWorkflow.run, workflow_id).query(
            AlertsWorkflow.view
        )
    except Exception:
        return None
