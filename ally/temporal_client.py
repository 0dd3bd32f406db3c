"""Connecting to Temporal: the embedded dev server by default, a configured cluster otherwise.

A cluster is configured either in work-ally's own `[temporal] address`, or the way every Temporal
tool reads it (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TLS and API-key variables, TOML profiles via
TEMPORAL_CONFIG_FILE / TEMPORAL_PROFILE; docs/temporal.md §8). Then `ally up` starts no server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio.envconfig import ClientConfig

from ally.config import AllyConfig

if TYPE_CHECKING:
    from temporalio.client import Client

    from ally.metrics import Part


def cluster_settings(config: AllyConfig) -> dict[str, Any]:
    """Connect arguments for a configured cluster, or {} when the embedded server is meant."""
    settings: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if config.temporal.address:
        settings["target_host"] = config.temporal.address
        settings.setdefault("namespace", config.temporal.namespace)
    return settings if settings.get("target_host") else {}


def uses_embedded_server(config: AllyConfig) -> bool:
    return not cluster_settings(config)


def target(config: AllyConfig) -> tuple[str, str]:
    """(host:port, namespace) this configuration talks to."""
    settings = cluster_settings(config)
    if settings:
        return settings["target_host"], settings.get("namespace") or "default"
    return f"127.0.0.1:{config.temporal.port}", config.temporal.namespace


async def connect(config: AllyConfig, *, metrics_for: Part | None = None) -> Client:
    """A client; `metrics_for` names the part whose metrics it (and its workers) export, when
    `[metrics]` gives that part a port."""
    # Here, not at the top: `ally up` reads the cluster settings above without the client.
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from ally.metrics import metrics_runtime, plain_runtime

    settings = cluster_settings(config) or {
        "target_host": f"127.0.0.1:{config.temporal.port}",
        "namespace": config.temporal.namespace,
    }
    runtime = metrics_runtime(config, metrics_for) if metrics_for else None
    settings["runtime"] = runtime or plain_runtime()
    return await Client.connect(**settings, data_converter=pydantic_data_converter)


def ui_url(config: AllyConfig) -> str | None:
    return f"http://127.0.0.1:{config.temporal.ui_port}" if uses_embedded_server(config) else None
