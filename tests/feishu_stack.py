"""The whole product behind a fake Feishu: `running_stack` plus the Feishu chats' worker and the
gateway's real `EventDispatcherHandler`, driven by the real lark-oapi SDK against `FakeFeishu`.

Events go in exactly as the long connection delivers them: `handler._do_without_validation(bytes)`
on a thread of its own (lark.ws.Client calls it from its thread; the gateway hands work to the test's
loop). What a person would see is what the fake recorded: `fake.messages` and their PATCHes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from ally.access import AccessConfig
from ally.channels.feishu.channel import FeishuChannel
from ally.channels.feishu.client import FeishuApi
from ally.channels.feishu.gateway import FeishuGateway
from ally.channels.feishu.inbound import MessageReader
from ally.channels.feishu.intake import Conversations
from ally.config import FeishuConfig
from ally.contracts import ChatRef, ConversationState, InboundMessage
from dev.fake_feishu import FakeFeishu, Message, forget_sdk_token, message_event
from tests.stack import Stack, running_stack


@dataclass
class FeishuStack:
    stack: Stack
    fake: FakeFeishu
    config: FeishuConfig
    channel: FeishuChannel
    gateway: FeishuGateway
    handler: Any  # lark.EventDispatcherHandler, as the long connection uses it (no keys)
    worker_queue: str

    async def deliver(self, envelope: dict[str, Any]) -> Any:
        """Exactly what lark.ws.Client does with an event frame (its result is the ack's data)."""
        self.fake.record_inbound(envelope)
        return await self.deliver_bytes(json.dumps(envelope, ensure_ascii=False).encode())

    async def deliver_bytes(self, payload: bytes) -> Any:
        return await asyncio.to_thread(self.handler._do_without_validation, payload)

    async def say(self, chat_id: str, text: str, **fields: Any) -> dict[str, Any]:
        """A person's message event into the gateway; returns the envelope."""
        self.stack.chats.add(chat_id)
        envelope = message_event(chat_id, text, app_id=self.fake.app_id, **fields)
        await self.deliver(envelope)
        return envelope

    def replies_to(self, message_id: str) -> list[Message]:
        return [m for m in self.fake.messages if m.parent_id == message_id]

    async def wait_for_replies(self, message_id: str, count: int = 1, within: float = 60.0) -> list[Message]:
        def enough() -> list[Message] | None:
            found = self.replies_to(message_id)
            return found if len(found) >= count else None

        return await self.fake.async_wait_for(enough, timeout=within)


def card_markdown(message: Message) -> str:
    """The markdown a reply card shows (all markdown elements, in order)."""
    elements = message.content["body"]["elements"]
    return "".join(e["content"] for e in elements if e.get("tag") == "markdown")


@dataclass
class OneAssistant:
    """Every chat (and each topic of a topic group) talks to one assistant, set up by the test."""

    new_state: Callable[[ChatRef], ConversationState]

    async def start_state(self, message: InboundMessage, topic: str) -> ConversationState:
        return self.new_state(message.chat).model_copy(update={"topic": topic})

    async def command(self, message: InboundMessage) -> str | None:
        return None


@contextlib.asynccontextmanager
async def feishu_stack(
    client: Client,
    tmp_path: Path,
    app_id: str,
    *,
    sdk_timeout_s: float = 5.0,
    access: AccessConfig | None = None,
    demo: bool = False,
    with_runtime_worker: bool = True,
    alerts_workflow_id: str | None = None,
    conversations: Callable[[Stack], Conversations] | None = None,
    receipt_emoji: str = "",
) -> AsyncIterator[FeishuStack]:
    """`conversations`: where messages go; by default every chat talks to one assistant with the
    stack's settings (tests of assistants give a real `ally.routing.Router`)."""
    # lark-oapi caches tenant tokens process-wide by app_id: one app id per test (docs/feishu-platform.md §5).
    forget_sdk_token(app_id)
    with FakeFeishu(app_id=app_id) as fake:
        config = FeishuConfig.model_validate(
            {"app_id": app_id, "app_secret": fake.app_secret, "domain": fake.domain}
        )
        api = FeishuApi.from_config(config, timeout_s=sdk_timeout_s)
        channel = FeishuChannel(api, pace_s=0.0)
        queue = f"feishu-{uuid.uuid4().hex[:8]}"

        def delivery(stack: Stack) -> list[Worker]:
            return [stack.chat_worker(channel, queue)]

        async with running_stack(
            client, tmp_path, extra_workers=delivery, demo=demo, with_runtime_worker=with_runtime_worker
        ) as stack:
            reader = MessageReader(api, inbox=stack.workspace / "feishu-inbox", worker_queue=queue)
            one = OneAssistant(
                lambda chat: stack.conversation(
                    chat,
                    approvers=(access or AccessConfig()).approvers,
                    alerts_workflow_id=alerts_workflow_id,
                )
            )
            gateway = FeishuGateway(
                client=client,
                channel=channel,
                reader=reader,
                conversations=conversations(stack) if conversations else one,
                access=access,
                receipt_emoji=receipt_emoji,
            )
            yield FeishuStack(
                stack=stack,
                fake=fake,
                config=config,
                channel=channel,
                gateway=gateway,
                handler=gateway.event_handler(),
                worker_queue=queue,
            )
