"""Feishu (Lark): the chat channel most people use work-ally through.

One module per concern, in the order a message travels:

    gateway.py   events in (long connection or webhook), handed over to Temporal in < 3 s
    inbound.py   a Feishu message event -> `InboundMessage` (or why it is ignored)
    channel.py   `FeishuChannel`: replies, approval cards and their updates, as delivery activities
    cards.py     card JSON 2.0: answers split under Feishu's size limit, approval and decided cards
    client.py    the `lark.Client` call layer: rate limits, token expiry, permanent vs retryable errors

The gateway process (`workers/gateway.py`) runs the transport and the Feishu chats' worker (their
workflows and deliveries, on `FEISHU_CHATS_QUEUE`), so everything that talks to Feishu lives in
one process.
"""

from __future__ import annotations

from ally.names import FEISHU_CHATS_QUEUE

__all__ = ["FEISHU_CHATS_QUEUE"]
