"""The gateway over a real long connection: lark.ws.Client on its own thread, talking to the fake's
WS peer, with the whole stack behind it. Only one lark.ws.Client works at a time per process (the
SDK's module-level loop): each test retires its own before the next starts, as test_fake_feishu.py
does."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import pytest
from temporalio.client import Client

from ally.channels.feishu.long_connection import LongConnection
from ally.model_server import RunCommand, Say
from dev.fake_feishu import FakeFeishu, Message, card_action_event, envelope, message_event
from tests.feishu_stack import card_markdown, feishu_stack

pytestmark = [pytest.mark.feishu, pytest.mark.codex]


async def test_a_message_and_a_card_click_over_the_long_connection(client: Client, tmp_path: Path) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_long_connection") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        target = fs.stack.workspace / "over-ws.txt"
        fs.stack.model.push(RunCommand(cmd=f"touch {target}"), Say(text="Touched over WS."))
        connection = LongConnection(fs.config, fs.handler)
        connection.start()
        try:
            await fs.fake.async_wait_for(lambda: fs.fake.long_connection.connection_count, timeout=10)
            fs.stack.chats.add("oc_dm_ws")
            event = message_event("oc_dm_ws", "touch it", sender_open_id="ou_alice", app_id=fs.fake.app_id)
            question = event["event"]["message"]["message_id"]

            ack = await fs.fake.apush_event(event)
            (card,) = await fs.wait_for_replies(question)
            approve = next(
                b["behaviors"][0]["value"]
                for column in card.content["body"]["elements"][-2]["columns"]
                for b in column["elements"]
                if b["behaviors"][0]["value"]["decision"] == "accept"
            )
            click = card_action_event("ou_alice", approve, card.message_id, "oc_dm_ws", app_id=fs.fake.app_id)
            clicked = await fs.fake.apush_event(click)
            answers = await fs.wait_for_replies(question, count=2)
            # A shape the SDK cannot read: acknowledged, since pushing it again cannot fix it.
            broken = envelope(
                "im.message.reaction.created_v1", {"reaction_type": "not an object"}, app_id=fs.fake.app_id
            )
            assert await fs.fake.apush_event(broken) == {"code": 200}

            assert ack == {"code": 200}
            assert clicked["code"] == 200 and clicked["data"]["toast"]["content"] == "Approved"
            assert card_markdown(answers[-1]) == "Touched over WS." and target.exists()
        finally:
            await retire(fs.fake, connection)


BURST_MESSAGES = 200
BURST_CHATS = 20
BURST_SECONDS = 10.0
FEISHU_ACK_DEADLINE_S = 3.0


async def test_a_burst_of_200_messages_in_20_chats_is_acknowledged_in_time_and_answered_once(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_long_connection_burst", demo=True) as fs:
        connection = LongConnection(fs.config, fs.handler)
        connection.start()
        try:
            await fs.fake.async_wait_for(lambda: fs.fake.long_connection.connection_count, timeout=10)
            events = [
                message_event(
                    f"oc_burst_{n % BURST_CHATS}",
                    f"burst message {n}",
                    sender_open_id=f"ou_person_{n % BURST_CHATS}",
                    app_id=fs.fake.app_id,
                )
                for n in range(BURST_MESSAGES)
            ]
            fs.stack.chats.update(e["event"]["message"]["chat_id"] for e in events)
            started = time.monotonic()

            async def push(n: int) -> float:
                await asyncio.sleep(max(0.0, started + n * BURST_SECONDS / BURST_MESSAGES - time.monotonic()))
                sent = time.monotonic()
                ack = await fs.fake.apush_event(events[n], timeout=10)
                assert ack == {"code": 200}
                return time.monotonic() - sent

            latencies = await asyncio.gather(*(push(n) for n in range(BURST_MESSAGES)))
            ids = {e["event"]["message"]["message_id"]: e["event"]["message"]["content"] for e in events}

            def answers() -> list[Message]:
                return [m for m in fs.fake.messages if "You said: burst message" in card_markdown(m)]

            await fs.fake.async_wait_for(lambda: len(answers()) >= BURST_MESSAGES, timeout=240)
            await asyncio.sleep(1.0)  # room for a duplicate, if one were coming
        finally:
            await retire(fs.fake, connection)

        print(f"ack latency: p50 {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s")
        assert max(latencies) < FEISHU_ACK_DEADLINE_S
        answered = sorted(m.parent_id for m in answers())
        assert answered == sorted(ids)  # every message answered, none twice
        for message in answers():
            text = json.loads(ids[message.parent_id])["text"]
            assert card_markdown(message).endswith(f"You said: {text}")
        for chat in {e["event"]["message"]["chat_id"] for e in events}:  # each chat in its own order
            sent = [
                e["event"]["message"]["message_id"]
                for e in events
                if e["event"]["message"]["chat_id"] == chat
            ]
            assert [m.parent_id for m in answers() if m.chat_id == chat] == sent


async def retire(fake: FakeFeishu, connection: LongConnection) -> None:
    """No stop() in lark-oapi 1.7.5: make the client's reconnects fail for good and drop it, so its
    thread goes quiet (the fake's own WS tests do the same)."""
    fake.fail_next("/callback/ws/endpoint", status=200, code=403, msg="retired", times=100)
    fake.drop_long_connections()
    await fake.async_wait_for(
        lambda: any(c.code == 403 for c in fake.calls_to("/callback/ws/endpoint")), timeout=10
    )
    with pytest.raises(RuntimeError, match="long connection stopped"):
        await connection.watch()
