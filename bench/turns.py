"""Benchmark: what the durable bridge adds to a Codex turn, through the whole stack.

Runs, in one process and one run, against the same scripted model (instant answers):
  raw     the Codex client alone (`CodexRuntime`: start_turn -> turn end -> thread/read)
  bridge  a chat message handed over (signal-with-start) -> reply delivered by the channel
for three loads: (a) one chat, sequential turns; (b) 50 chats, each sending a message every 5 s for
a minute; (c) 50 messages at once (50 chats). Prints latency p50/p95, the bridge's added latency,
turns per second, CPU seconds per process, and Temporal history events per turn.

The dev server is the one `ally up` runs: the same binary, SQLite file and tuning.

    .venv/bin/python -m bench.turns            # all three
    .venv/bin/python -m bench.turns --quick    # fewer turns, shorter (b)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from temporalio.client import Client

from ally.channels.console import ConsoleEvent
from ally.codex.runtime import CodexRuntime, TurnEnded, TurnInput
from ally.codex.runtime import ThreadSettings as CodexThreadSettings
from ally.contracts import ChatRef
from ally.processes import spawn_group, stop_group
from ally.temporal_server import dev_server_command
from tests.processes import free_port, temporal_when_up
from tests.stack import Stack, running_stack

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Run:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def line(self) -> str:
        n = len(self.latencies_ms)
        rate = n / self.wall_s if self.wall_s else 0.0
        return (
            f"{self.name:<28} n={n:<4} p50={pct(self.latencies_ms, 0.5):7.1f} ms  "
            f"p95={pct(self.latencies_ms, 0.95):7.1f} ms  {rate:6.1f} turns/s"
        )


async def raw_turn(runtime: CodexRuntime, thread_id: str, text: str) -> float:
    started = time.perf_counter()
    turn_id = await runtime.start_turn(thread_id, [TurnInput(type="text", text=text)])
    async for event in runtime.watch_turn(thread_id, turn_id):
        if isinstance(event, TurnEnded):
            break
    snapshot = await runtime.read_thread(thread_id, last=1)
    assert snapshot.turns[-1].final_text, "the raw turn gave no answer"
    return (time.perf_counter() - started) * 1000


class BridgeClock:
    """Times each message from hand-over to the delivered reply, by watching the channel's sink."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.sent: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[None]] = {}
        stack.listeners.append(self.observe)

    def observe(self, event: ConsoleEvent) -> None:
        reply = event.reply
        if reply is not None and reply.tone == "answer" and reply.reply_to in self.sent:
            self.done[reply.reply_to] = time.perf_counter()
            waiter = self.waiters.get(reply.reply_to)
            if waiter and not waiter.done():
                waiter.set_result(None)

    async def turn(self, chat: ChatRef, text: str) -> float:
        message_id = f"b-{time.perf_counter_ns()}"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[message_id] = waiter
        self.sent[message_id] = time.perf_counter()
        await self.stack.send(chat, text, message_id=message_id)
        await asyncio.wait_for(waiter, 60)
        return (self.done[message_id] - self.sent[message_id]) * 1000


async def timed(name: str, jobs: list[Callable[[], Awaitable[float]]], *, concurrent: bool) -> Run:
    run = Run(name)
    started = time.perf_counter()
    if concurrent:
        run.latencies_ms = list(await asyncio.gather(*(job() for job in jobs)))
    else:
        for job in jobs:
            run.latencies_ms.append(await job())
    run.wall_s = time.perf_counter() - started
    return run


async def paced(
    name: str, chats: int, every_s: float, duration_s: float, turn: Callable[[int, int], Awaitable[float]]
) -> Run:
    """Each chat sends one message every `every_s`, staggered, for `duration_s`."""
    run = Run(name)
    started = time.perf_counter()

    async def one_chat(index: int) -> None:
        await asyncio.sleep(every_s * index / chats)
        tick = 0
        while time.perf_counter() - started < duration_s:
            run.latencies_ms.append(await turn(index, tick))
            tick += 1
            await asyncio.sleep(max(0.0, started + every_s * (tick + index / chats) - time.perf_counter()))

    await asyncio.gather(*(one_chat(i) for i in range(chats)))
    run.wall_s = time.perf_counter() - started
    return run


async def history_events_per_turn(client: Client, stack: Stack) -> float:
    events = turns = 0
    async for execution in client.list_workflows(f'TaskQueue="{stack.turns_queue}"'):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        events += len(history.events)
        turns += execution.workflow_type == "TurnWorkflow"
    return events / max(turns, 1)


async def bench(quick: bool) -> None:
    sequential = 20 if quick else 100
    paced_s = 20.0 if quick else 60.0
    with tempfile.TemporaryDirectory(prefix="ally-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        command = dev_server_command(
            db_file=root / "temporal.db", port=port, ui_port=free_port(), namespace="default"
        )
        server = await spawn_group([*command, "--headless"])
        try:
            client = await temporal_when_up(port)
            async with running_stack(client, root, demo=True) as stack:
                raw_thread = await stack.runtime.ensure_thread(
                    None, CodexThreadSettings(cwd=str(stack.workspace))
                )
                clock = BridgeClock(stack)
                codex_pid = stack.runtime.pid or 0
                cpu_before = {
                    "dev server": cpu_seconds(server.pid),
                    "codex": cpu_seconds(codex_pid),
                    "bridge (python)": cpu_seconds(os.getpid()),
                }

                warm = stack.chat()
                for _ in range(3):  # first turns pay for thread start and caches
                    await clock.turn(warm, "warm up")
                    await raw_turn(stack.runtime, raw_thread, "warm up")

                one_chat = stack.chat()
                raw_a = await timed(
                    "(a) raw, sequential",
                    [lambda: raw_turn(stack.runtime, raw_thread, "hi")] * sequential,
                    concurrent=False,
                )
                bridge_a = await timed(
                    "(a) bridge, sequential",
                    [lambda: clock.turn(one_chat, "hi")] * sequential,
                    concurrent=False,
                )

                raw_threads = [
                    await stack.runtime.ensure_thread(None, CodexThreadSettings(cwd=str(stack.workspace)))
                    for _ in range(50)
                ]
                chats = [stack.chat() for _ in range(50)]
                raw_b = await paced(
                    "(b) raw, 50 chats / 5 s",
                    50,
                    5.0,
                    paced_s,
                    lambda i, _: raw_turn(stack.runtime, raw_threads[i], "tick"),
                )
                bridge_b = await paced(
                    "(b) bridge, 50 chats / 5 s", 50, 5.0, paced_s, lambda i, _: clock.turn(chats[i], "tick")
                )

                raw_c = await timed(
                    "(c) raw, 50 at once",
                    [partial(raw_turn, stack.runtime, thread, "burst") for thread in raw_threads],
                    concurrent=True,
                )
                burst_chats = [stack.chat() for _ in range(50)]
                bridge_c = await timed(
                    "(c) bridge, 50 at once",
                    [partial(clock.turn, chat, "burst") for chat in burst_chats],
                    concurrent=True,
                )

                cpu = {
                    name: cpu_seconds(pid) - cpu_before[name]
                    for name, pid in (
                        ("dev server", server.pid),
                        ("codex", codex_pid),
                        ("bridge (python)", os.getpid()),
                    )
                }
                per_turn_events = await history_events_per_turn(client, stack)
                turns_total = sum(len(r.latencies_ms) for r in (bridge_a, bridge_b, bridge_c)) + 3

            print(
                f"work-ally bridge benchmark, {os.cpu_count()} cores: tuned SQLite dev server, scripted model"
            )
            for raw, bridge, goal in (
                (raw_a, bridge_a, "(a) goal: p50 added <= 50 ms"),
                (raw_b, bridge_b, "(b) goal: p95 added <= 200 ms"),
                (raw_c, bridge_c, "(c) goal: every reply within 2 s of the raw client's"),
            ):
                print(raw.line())
                print(bridge.line())
                added_p50 = pct(bridge.latencies_ms, 0.5) - pct(raw.latencies_ms, 0.5)
                added_p95 = pct(bridge.latencies_ms, 0.95) - pct(raw.latencies_ms, 0.95)
                worst_gap = max(bridge.latencies_ms) - max(raw.latencies_ms)
                print(
                    f"    added: p50 {added_p50:+.1f} ms, p95 {added_p95:+.1f} ms, worst {worst_gap:+.1f} ms"
                )
                print(f"    {goal}")
            print(f"history events per turn (turn + share of conversation): {per_turn_events:.1f}")
            print("CPU seconds over the whole run (" + f"{turns_total} bridge turns + the raw ones):")
            for name, seconds in cpu.items():
                print(f"    {name:<16} {seconds:7.2f} s")
            print(f"    statistics: raw (a) stdev {statistics.pstdev(raw_a.latencies_ms):.1f} ms")
        finally:
            await stop_group(server)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer turns and a 20 s paced run")
    asyncio.run(bench(parser.parse_args().quick))


if __name__ == "__main__":
    main()
