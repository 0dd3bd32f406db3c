"""Benchmark: how fast the Feishu gateway acknowledges events under a burst.

Feishu pushes an event again when its ack takes longer than 3 s. This starts `ally up --demo` in a
home of its own with Feishu configured against the fake Feishu (dev/fake_feishu), so the real
gateway process connects its long connection (lark.ws.Client) to the fake's WS peer, and then
pushes a burst: 200 messages in 10 s across 20 chats (`--messages`, `--seconds`, `--chats`).
Every chat has had one message answered before the clock starts. Prints the ack latency (from
the frame sent to its ack received) p50/p95/max, the acks past 3 s, and whether every message got
exactly one answer.

    .venv/bin/python -m bench.acks
    .venv/bin/python -m bench.acks --messages 400 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.turns import ally_up, pct
from dev.fake_feishu import FakeFeishu, Message, message_event

FEISHU_ACK_DEADLINE_S = 3.0
ANSWER_WAIT_S = 600.0


def answer_text(message: Message) -> str:
    body = message.content.get("body") if isinstance(message.content, dict) else None
    elements = body.get("elements", []) if isinstance(body, dict) else []
    return "".join(str(e.get("content", "")) for e in elements if isinstance(e, dict))


async def burst(fake: FakeFeishu, messages: int, chats: int, seconds: float, tag: str) -> list[float]:
    """Push `messages` events over `seconds` across `chats`; each one's ack latency in seconds."""
    events = [
        message_event(
            f"oc_bench_{n % chats}",
            f"{tag} {n}",
            sender_open_id=f"ou_bench_{n % chats}",
            app_id=fake.app_id,
        )
        for n in range(messages)
    ]
    started = time.monotonic()

    async def push(n: int, event: dict[str, Any]) -> float:
        await asyncio.sleep(max(0.0, started + n * seconds / messages - time.monotonic()))
        sent = time.monotonic()
        ack = await fake.apush_event(event, timeout=30)
        if ack.get("code") != 200:
            raise RuntimeError(f"event {n} was answered {ack}")
        return time.monotonic() - sent

    return list(await asyncio.gather(*(push(n, event) for n, event in enumerate(events))))


async def answered(fake: FakeFeishu, tag: str, expected: int) -> collections.Counter[str]:
    """How many answers each message of the run `tag` got, once all `expected` arrived."""

    def count() -> collections.Counter[str]:
        return collections.Counter(
            m.parent_id for m in fake.messages if f"You said: {tag} " in answer_text(m)
        )

    with contextlib.suppress(TimeoutError):  # what is missing by then shows in the figures
        await fake.async_wait_for(lambda: len(count()) >= expected, timeout=ANSWER_WAIT_S)
    await asyncio.sleep(2.0)  # room for a duplicate, if one were coming
    return count()


async def bench(messages: int, chats: int, seconds: float) -> None:
    app_id = "cli_bench_acks"
    with tempfile.TemporaryDirectory(prefix="ally-bench-acks-") as tmp, FakeFeishu(app_id=app_id) as fake:
        os.environ.update(
            {
                "WORK_ALLY_FEISHU__APP_ID": app_id,
                "WORK_ALLY_FEISHU__APP_SECRET": fake.app_secret,
                "WORK_ALLY_FEISHU__DOMAIN": fake.domain,
            }
        )
        async with ally_up(Path(tmp)):
            await fake.async_wait_for(lambda: fake.long_connection.connection_count, timeout=60)
            await burst(fake, chats, chats, 1.0, "warm-up")  # threads started, names looked up
            await answered(fake, "warm-up", chats)
            started = time.monotonic()
            latencies = await burst(fake, messages, chats, seconds, "burst")
            counts = await answered(fake, "burst", messages)
            wall = time.monotonic() - started

    late = sum(1 for latency in latencies if latency >= FEISHU_ACK_DEADLINE_S)
    print(
        f"work-ally Feishu ack benchmark, {os.cpu_count()} cores: `ally up --demo`, gateway on the long "
        f"connection to the fake Feishu; {messages} messages in {seconds:.0f} s across {chats} chats"
    )
    print(
        f"ack latency: p50 {1000 * pct(latencies, 0.5):.0f} ms, p95 {1000 * pct(latencies, 0.95):.0f} ms, "
        f"max {1000 * max(latencies):.0f} ms; {late} of {len(latencies)} at or past Feishu's 3 s"
    )
    twice = sum(1 for n in counts.values() if n > 1)
    print(
        f"answered: {len(counts)} of {messages} messages, {twice} more than once; "
        f"the last answer {wall:.1f} s after the first message"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=200, help="messages in the burst (200)")
    parser.add_argument("--chats", type=int, default=20, help="chats they are spread over (20)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the burst lasts (10)")
    args = parser.parse_args()
    asyncio.run(bench(args.messages, args.chats, args.seconds))


if __name__ == "__main__":
    main()
