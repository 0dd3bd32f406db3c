"""Gateway: everything that talks to Feishu, in one process.

Hosts the Feishu chats' worker (workers/chat.py: their conversation and turn workflows, and the
Feishu channel's activities) on `FEISHU_CHATS_QUEUE`, and runs the transport that brings Feishu's
events in: the long connection (default; no public URL needed) or a webhook server on
`feishu.webhook_port`. Events become signal-with-start of the chat's conversation
(ally/channels/feishu/gateway.py). If the transport dies (bad credentials, the app not allowed a long
connection), the process exits and `ally up` restarts it; the chats' workflows wait durably.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from ally.alerts import alerts_config, owner_of, start_alerts
from ally.bindings import BindingsFile
from ally.channels.feishu import FEISHU_CHATS_QUEUE
from ally.channels.feishu.channel import FeishuChannel
from ally.channels.feishu.client import FeishuApi
from ally.channels.feishu.gateway import FeishuGateway
from ally.channels.feishu.inbound import MessageReader
from ally.channels.feishu.long_connection import LongConnection
from ally.channels.feishu.webhook import WebhookServer
from ally.chat_client import conversation_exists
from ally.clean_exit import run_process
from ally.config import load_config
from ally.inbound import thread_settings
from ally.memory import limit_malloc_arenas, returning_freed_memory
from ally.metrics import ApprovalsGauge, MetricsUnavailable, metrics_runtime, refreshing
from ally.routing import LiveConfig, Router
from ally.temporal_client import connect
from ally.worker_process import configure_logging, serve_until_signalled
from workers.chat import chat_worker

# Attachments are saved here, inside the workspace, where Codex can read them.
INBOX_DIR = "feishu-inbox"


async def main() -> None:
    limit_malloc_arenas()  # before the Temporal core and the SDK's threads start
    log = configure_logging("gateway")
    # lark-oapi gives its "Lark" logger a handler of its own: drop it, or every SDK line prints twice.
    logging.getLogger("Lark").handlers.clear()
    config = load_config()
    if not config.feishu.configured:
        log.error("Feishu is not configured: set [feishu] app_id and app_secret (docs/feishu-setup.md)")
        sys.exit(2)
    try:
        client = await connect(config, metrics_for="gateway")
    except MetricsUnavailable as unavailable:
        log.error("%s", unavailable)
        sys.exit(2)
    exporting = metrics_runtime(config, "gateway")
    api = FeishuApi.from_config(config.feishu)
    channel = FeishuChannel(api)
    reader = MessageReader(api, inbox=Path(thread_settings(config).cwd) / INBOX_DIR)
    router = Router(LiveConfig(config), BindingsFile(), has_default_conversation=conversation_exists(client))
    gateway = FeishuGateway(
        client=client,
        channel=channel,
        reader=reader,
        conversations=router,
        access=config.access,
        stale_after_s=config.chats.stale_after_minutes * 60,
        receipt_emoji=config.feishu.receipt_emoji,
    )
    chats = chat_worker(client, channel, FEISHU_CHATS_QUEUE)

    feishu = config.feishu
    transport: LongConnection | WebhookServer
    if feishu.transport == "webhook":
        keys = feishu.encrypt_key.get_secret_value(), feishu.verification_token.get_secret_value()
        transport = WebhookServer(
            gateway.event_handler(*keys),
            port=feishu.webhook_port,
            encrypt_key=keys[0],
            verification_token=keys[1],
        )
    else:
        transport = LongConnection(feishu, gateway.event_handler())
    transport.start()
    if (owner := owner_of(config)) is not None:
        await start_alerts(client, alerts_config(config, owner, FEISHU_CHATS_QUEUE))
    else:
        log.info("no owner to alert: set [alerts] owner or [access] approvers")

    serving = asyncio.create_task(
        serve_until_signalled(
            "gateway",
            [chats],
            detail=lambda: {"transport": feishu.transport, "handed_over": gateway.handed_over},
        )
    )
    watching = asyncio.create_task(transport.watch())
    try:
        async with contextlib.AsyncExitStack() as alongside:
            await alongside.enter_async_context(returning_freed_memory())
            if exporting is not None:
                approvals = ApprovalsGauge(exporting.metric_meter, client)
                await alongside.enter_async_context(
                    refreshing(config.metrics.poll_seconds, approvals.refresh)
                )
            await asyncio.wait({serving, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not serving.done():
            serving.cancel()  # its own cleanup shuts the worker down and removes the state file
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        if isinstance(transport, WebhookServer):
            transport.stop()
    if watching.done() and not watching.cancelled() and (error := watching.exception()) is not None:
        raise error


if __name__ == "__main__":
    run_process(main)
