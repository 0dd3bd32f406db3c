"""Benchmark: how soon a person sees that work-ally took their message, and what live progress
costs on a long turn.

Starts `ally up --demo` in a home of its own with Feishu configured against the fake Feishu (like
bench/acks.py): the real gateway holds the long connection, runs the Feishu chats' worker and its
progress followers. Then:

(a) one chat, `--messages` messages one after another: from the event pushed to the gateway to the
    first thing the fake Feishu recorded for it (the "working" emoji, or a card);
(b) `--chats` chats at once, each turn a few seconds long (the demo's slow answer), so every
    chat's progress follower runs while the others' messages arrive: the same latency;
(c) one long scripted turn (`--rounds` rounds of a pause, a burst of thinking items and a
    command, about 5 s each): the progress card's versions per minute, and the turn's history
    events in total and written per minute while it ran.

    .venv/bin/python -m bench.progress
    .venv/bin/python -m bench.progress --chats 50 --rounds 24
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

from temporalio.client import Client

from ally import names
from ally.config import load_config
from ally.model_server import STEPS, Burst, Hang, Say, Step
from ally.temporal_client import connect
from bench.turns import ally_up, demo_model_url, pct
from dev.fake_feishu import FakeFeishu, message_event

ANSWER_WAIT_S = 300.0


def first_feedback(fake: FakeFeishu, message_id: str) -> float | None:
    """Unix time of the first thing the chat showed for `message_id`: an emoji on it or a reply."""
    times = [int(r.action_time) for r in fake.reactions if r.message_id == message_id]
    times += [int(m.create_time) for m in fake.messages if m.parent_id == message_id]
    return min(times) / 1000 if times else None


async def push(fake: FakeFeishu, chat_id: str, text: str) -> tuple[str, float]:
    event = message_event(chat_id, text, sender_open_id=f"ou_{chat_id}", app_id=fake.app_id)
    sent = time.time()
    ack = await fake.apush_event(event, timeout=30)
    if ack.get("code") != 200:
        raise RuntimeError(f"the gateway answered {ack}")
    return event["event"]["message"]["message_id"], sent


def answered(fake: FakeFeishu, message_id: str, text: str) -> bool:
    return any(m.parent_id == message_id and text in m.raw_content for m in fake.messages)


async def latencies(fake: FakeFeishu, pushed: list[tuple[str, float]], answer: str) -> list[float]:
    # Polled gently: the fake answers the gateway from this process, and a busy poll here (over
    # the fake's lock) would slow its answers down and show in the figures.
    deadline = time.monotonic() + ANSWER_WAIT_S
    waiting = {mid for mid, _ in pushed}
    while waiting:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(waiting)} messages were not answered")
        await asyncio.sleep(0.25)
        done = {m.parent_id for m in fake.messages if answer in m.raw_content}
        waiting -= done
    found = [(first_feedback(fake, mid), sent) for mid, sent in pushed]
    return [seen - sent for seen, sent in found if seen is not None]


def queue_steps(steps: list[Step]) -> None:
    control = demo_model_url().removesuffix("/v1") + "/_control/steps"
    body = json.dumps(STEPS.dump_python(steps, mode="json")).encode()
    request = urllib.request.Request(control, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        answer.read()


async def history_size(client: Client, workflow_id: str) -> int:
    return len([e async for e in client.get_workflow_handle(workflow_id).fetch_history_events()])


async def long_turn(fake: FakeFeishu, client: Client, rounds: int) -> None:
    steps: list[Step] = [
        Hang(seconds=4.0, then=Burst(count=400, text=f"round {n}", run=f"echo round {n}"))
        for n in range(rounds)
    ]
    queue_steps([*steps, Say(text="the long turn is over")])
    chat = "oc_bench_long"
    message_id, _ = await push(fake, chat, "a long job")
    turn_id = names.turn_workflow_id(chat, message_id)
    started = time.monotonic()
    samples: list[tuple[float, int]] = []  # (when, history size) while run_turn still runs
    while not answered(fake, message_id, "the long turn is over"):
        if time.monotonic() - started > ANSWER_WAIT_S:
            raise RuntimeError("the long turn did not end")
        await asyncio.sleep(5.0)
        pending = (await client.get_workflow_handle(turn_id).describe()).raw_description.pending_activities
        if any(a.activity_type.name == "run_turn" for a in pending):
            samples.append((time.monotonic(), await history_size(client, turn_id)))
    total_s = time.monotonic() - started
    described = await client.get_workflow_handle(turn_id).describe()
    ran_s = ((described.close_time or described.start_time) - described.start_time).total_seconds()
    total = await history_size(client, turn_id)
    (first_at, first_size), (last_at, last_size) = samples[0], samples[-1]
    during = last_size - first_size
    per_minute = during / max((last_at - first_at) / 60, 1e-9)
    cards = [
        m for m in fake.messages if m.parent_id == message_id and '"ally": "stop"' in json.dumps(m.patches)
    ]
    versions = sum(1 + len(m.patches) for m in cards)
    minutes = ran_s / 60
    print(
        f"(c) a long turn: {rounds} rounds, {rounds * 400} thinking items and {rounds} commands "
        f"(~{rounds * 800 + rounds * 2} Codex notifications) in {ran_s:.0f} s (answer after {total_s:.0f} s):"
    )
    print(
        f"    progress card: {len(cards)} card(s), {versions} versions = {versions / minutes:.1f} a minute "
        f"(at most {60 / 2.0:.0f} a minute: one edit per 2 s)"
    )
    print(
        f"    turn history: {total} events in all; {during} written in the {last_at - first_at:.0f} s "
        f"sampled while Codex worked ({per_minute:.1f} a minute)"
    )


async def bench(messages: int, chats: int, rounds: int) -> None:
    app_id = "cli_bench_progress"
    with tempfile.TemporaryDirectory(prefix="ally-bench-progress-") as tmp, FakeFeishu(app_id=app_id) as fake:
        os.environ.update(
            {
                "WORK_ALLY_FEISHU__APP_ID": app_id,
                "WORK_ALLY_FEISHU__APP_SECRET": fake.app_secret,
                "WORK_ALLY_FEISHU__DOMAIN": fake.domain,
            }
        )
        async with ally_up(Path(tmp)):
            client = await connect(load_config())
            await fake.async_wait_for(lambda: fake.long_connection.connection_count, timeout=60)
            warm = [await push(fake, f"oc_bench_{n}", "hello") for n in range(max(chats, 1))]
            await latencies(fake, warm, "You said: hello")

            one: list[float] = []
            for n in range(messages):
                one += await latencies(
                    fake, [await push(fake, "oc_bench_0", f"one {n}")], f"You said: one {n}"
                )

            burst = await asyncio.gather(*(push(fake, f"oc_bench_{n}", "slow please") for n in range(chats)))
            many = await latencies(fake, list(burst), "like a real model")
            started = []
            for n, (mid, sent) in enumerate(burst):
                described = await client.get_workflow_handle(
                    names.turn_workflow_id(f"oc_bench_{n}", mid)
                ).describe()
                started.append(described.start_time.timestamp() - sent)

            print(
                f"work-ally first-feedback benchmark, {os.cpu_count()} cores: `ally up --demo`, the gateway "
                "on the long connection to the fake Feishu; from the event pushed to the first emoji or "
                "card recorded"
            )
            for label, values in (
                (f"(a) one chat, {messages} messages", one),
                (f"(b) {chats} chats at once", many),
            ):
                print(
                    f"{label}: p50 {1000 * pct(values, 0.5):.0f} ms, p95 {1000 * pct(values, 0.95):.0f} ms, "
                    f"max {1000 * max(values):.0f} ms (goal: p50 <= 300 ms, p95 <= 1000 ms)"
                )
            print(
                f"    of which the turn started after: p50 {1000 * pct(started, 0.5):.0f} ms, "
                f"p95 {1000 * pct(started, 0.95):.0f} ms"
            )
            await long_turn(fake, client, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20, help="messages in (a), one after another (20)")
    parser.add_argument("--chats", type=int, default=50, help="chats at once in (b) (50)")
    parser.add_argument(
        "--rounds", type=int, default=12, help="rounds of the long turn in (c), ~5 s each (12)"
    )
    args = parser.parse_args()
    asyncio.run(bench(args.messages, args.chats, args.rounds))


if __name__ == "__main__":
    main()
