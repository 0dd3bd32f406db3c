"""Feishu (Lark): the chat channel most people use work-ally through.

One module per concern, in the order a message travels:

    long_connection.py, webhook.py   the transports; acks.py   what they share with the handlers
    gateway.py   the SDK's event dispatcher: each event validated and its work started in < 3 s
    intake.py    messages: read, access checked, handed over in arrival order per chat
    decisions.py card clicks, text shortcuts ("y", "1 y 2 n") and approving reactions
    inbound.py   a Feishu message event -> `InboundMessage` (or why it is ignored)
    events.py    the subscribed events as pydantic models
    channel.py   `FeishuChannel`: replies, approval cards and their updates, as delivery activities
    cards.py     card JSON 2.0: answers split under Feishu's size limit, approval and decided cards
    client.py    the Open API call layer: rate limits, token expiry, permanent vs retryable errors
    sdk.py       lark-oapi loaded lean: only the SDK modules work-ally uses (imported first, below)

The gateway process (`workers/gateway.py`) runs the transport and the Feishu chats' worker (their
workflows and deliveries, on `FEISHU_CHATS_QUEUE`), so everything that talks to Feishu lives in
one process.
"""

from __future__ import annotations

# Before any module here imports lark-oapi: see sdk.py.
from ally.channels.feishu import sdk  # noqa: F401  # isort: skip
from ally.names import FEISHU_CHATS_QUEUE

__all__ = ["FEISHU_CHATS_QUEUE"]
