"""Benchmark: what the durable bridge adds to a Codex turn, through the whole stack.

Starts `ally up --demo` (the README's main command: tuned SQLite dev server, runtime worker with
its Codex child, scripted model) in a home of its own. This process plays `ally chat`: it hands
messages over and is the chats' worker (their conversation and turn workflows, beside the terminal
channel). It also runs the raw client, its own Codex child on the same binary and scripted model
(instant answers). CPU is counted per process and per side: over the bridge's timed runs for the
bridge, over the raw client's for the raw client.
  raw     the Codex client alone (`CodexRuntime`: start_turn -> turn end -> thread/read)
  bridge  a chat message handed over (signal-with-start) -> reply delivered by the channel
for three loads: (a) one chat, sequential turns, a raw turn and a bridge turn in turn (and
back-to-back bridge turns); (b) 50 chats, each sending a message every 5 s for a minute; (c) 50
messages at once (the same 50 chats). Prints latency
p50/p95, the bridge's added latency, turns per second, CPU seconds and peak memory per process, and
Temporal history events per turn.

    .venv/bin/python -m bench.turns            # all three
    .venv/bin/python -m bench.turns --quick    # fewer turns, shorter (b)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from temporalio.client import Client

from ally import names
from ally.channels.console import ConsoleChannel, ConsoleEvent
from ally.chat_client import ChatClient
from ally.codex.binary import find_codex_binary
from ally.codex.runtime import CodexRuntime, InputPart, TurnEnded
from ally.config import AllyConfig, data_dir, load_config
from ally.contracts import ChatRef, InboundMessage, Person
from ally.inbound import new_conversation, thread_settings
from ally.model_server import write_codex_home
from ally.processes import free_local_port, spawn_group, stop_group
from ally.run_state import read_part_states
from ally.temporal_client import connect
from workers.chat import chat_worker

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BURST_ROUNDS = 3
BURST_PAUSE_S = 5.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


class CpuMeter:
    """CPU seconds per process, summed apart over the bridge's timed runs and the raw client's:
    the bench process is the chats' worker in the one and the raw client in the other."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.spent: dict[str, dict[str, float]] = {"bridge": {}, "raw": {}}
        self.machine: dict[str, list[int]] = {"bridge": [0, 0], "raw": [0, 0]}  # steal, all ticks

    @contextlib.contextmanager
    def side(self, side: str) -> Iterator[None]:
        before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        steal_before, all_before = machine_ticks()
        yield
        for name, pid in self.pids.items():
            spent = self.spent[side]
            spent[name] = spent.get(name, 0.0) + cpu_seconds(pid) - before[name]
        steal, every = machine_ticks()
        self.machine[side][0] += steal - steal_before
        self.machine[side][1] += every - all_before

    def stolen(self, side: str) -> float:
        """The share of this VM's CPU time its host gave to others: a noisy neighbour slows every
        figure of the run, raw and bridge alike."""
        steal, every = self.machine[side]
        return steal / every if every else 0.0


def machine_ticks() -> tuple[int, int]:
    """(steal, all) CPU ticks of the whole machine so far, from /proc/stat."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[7], sum(ticks[:8])


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
    turn_id = await runtime.start_turn(thread_id, [InputPart(type="text", text=text)])
    async for event in runtime.watch_turn(thread_id, turn_id):
        if isinstance(event, TurnEnded):
            break
    snapshot = await runtime.read_thread(thread_id, last=1)
    assert snapshot.turns[-1].final_text, "the raw turn gave no answer"
    return (time.perf_counter() - started) * 1000


class BridgeClock:
    """Times each message from hand-over to the delivered reply, as the chat's channel sees it.

    The bench process is the chat's side, as `ally chat` is: it hands messages over and runs the
    chats' worker (workflows and the terminal channel), whose sink it watches.
    """

    def __init__(self, client: Client, config: AllyConfig) -> None:
        self.client = client
        self.config = config
        self.sent: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[None]] = {}
        self.worker_queue = "console@bench"
        self.worker = chat_worker(client, ConsoleChannel(self.observe), self.worker_queue)

    def chat(self) -> ChatRef:
        return ChatRef(
            channel="console",
            chat_id=f"bench-{uuid.uuid4().hex[:8]}",
            worker_queue=self.worker_queue,
            reactions=False,
        )

    def observe(self, event: ConsoleEvent) -> None:
        reply = event.reply
        if reply is not None and reply.tone == "answer" and reply.reply_to in self.sent:
            self.done[reply.reply_to] = time.perf_counter()
            waiter = self.waiters.get(reply.reply_to)
            if waiter and not waiter.done():
                waiter.set_result(None)

    async def turn(self, chat: ChatRef, text: str, *, until_closed: bool = False) -> float:
        """Milliseconds from hand-over to the delivered reply. With `until_closed`, returns only
        once the turn workflow has closed too (untimed), so that the next turn does not overlap it."""
        message = InboundMessage(
            message_id=f"b-{time.perf_counter_ns()}", chat=chat, sender=Person(id="bench"), text=text
        )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[message.message_id] = waiter
        self.sent[message.message_id] = time.perf_counter()
        await ChatClient(self.client).hand_over(message, new_conversation(self.config, chat))
        await asyncio.wait_for(waiter, 60)
        if until_closed:
            await self.client.get_workflow_handle(
                names.turn_workflow_id(chat.chat_id, message.message_id)
            ).result()
        return (self.done[message.message_id] - self.sent[message.message_id]) * 1000


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


async def alternating(
    meter: CpuMeter,
    raw: tuple[str, Callable[[], Awaitable[float]]],
    bridge: tuple[str, Callable[[], Awaitable[float]]],
    turns: int,
) -> tuple[Run, Run]:
    """A raw turn, then a bridge turn, `turns` times: both sides sample the machine in the same
    moments, so a slow spell of the (shared, virtual) machine cannot pass for the bridge's cost."""
    runs = {"raw": Run(raw[0]), "bridge": Run(bridge[0])}
    jobs = {"raw": raw[1], "bridge": bridge[1]}
    for _ in range(turns):
        for side in ("raw", "bridge"):
            with meter.side(side):
                started = time.perf_counter()
                runs[side].latencies_ms.append(await jobs[side]())
                runs[side].wall_s += time.perf_counter() - started
    return runs["raw"], runs["bridge"]


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


async def history_events_per_turn(client: Client, queue: str) -> float:
    events = turns = 0
    async for execution in client.list_workflows(f'TaskQueue="{queue}"'):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        events += len(history.events)
        turns += execution.workflow_type == "TurnWorkflow"
    return events / max(turns, 1)


@contextlib.asynccontextmanager
async def ally_up(root: Path) -> AsyncIterator[dict[str, int]]:
    """`ally up --demo` in a home of the bench's own, exactly as the README runs it; yields the pid
    of each part once every worker polls."""
    env = {
        "WORK_ALLY_HOME": str(root / "ally"),
        "WORK_ALLY_TEMPORAL__PORT": str(free_local_port()),
        "WORK_ALLY_TEMPORAL__UI_PORT": str(free_local_port()),
        "WORK_ALLY_RUNTIME__HOST": "bench",
        "HOME": str(root / "home"),  # Codex runs commands in a login shell: none of the user's dotfiles
    }
    (root / "home").mkdir(parents=True)
    os.environ.update(env)  # this process's client and config read the same home
    up = await spawn_group(
        [str(Path(sys.executable).parent / "ally"), "up", "--demo"], log_file=root / "ally-up.log"
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            parts = {state.name: state for state in read_part_states() if state.alive}
            if {"supervisor", "runtime-worker"} <= parts.keys():
                break
            if up.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ally up did not come up; see {root / 'ally-up.log'}")
            await asyncio.sleep(0.2)
        pids = {
            "temporal dev server": _child(up.pid, "start-dev"),
            "scripted model": _child(up.pid, "model_server"),
        }
        pids |= {name: state.pid for name, state in parts.items() if name != "supervisor"}
        pids["codex (bridge)"] = int(parts["runtime-worker"].detail["pid"])
        yield pids
    finally:
        await stop_group(up)


def _child(parent: int, marker: str) -> int:
    """The pid of the supervisor's child whose command line mentions `marker`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent_of = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
            if parent_of == parent and marker in command:
                return int(stat.parent.name)
    raise RuntimeError(f"ally up has no child running {marker}")


def demo_model_url() -> str:
    demo_home = data_dir() / "demo-codex-home" / "config.toml"
    return str(
        tomllib.loads(demo_home.read_text(encoding="utf-8"))["model_providers"]["scripted"]["base_url"]
    )


async def bench(quick: bool) -> None:
    sequential = 20 if quick else 100
    paced_s = 20.0 if quick else 60.0
    with tempfile.TemporaryDirectory(prefix="ally-bench-") as tmp:
        root = Path(tmp)
        async with ally_up(root) as pids:
            config = load_config()
            client = await connect(config)
            clock = BridgeClock(client, config)
            # The raw client: its own Codex child, the same binary and the same scripted model.
            raw_home = write_codex_home(root / "raw-codex-home", demo_model_url())
            runtime = CodexRuntime(find_codex_binary(), raw_home, env={"HOME": str(root / "home")})
            await runtime.start()
            settings = thread_settings(config)  # what every bridge thread gets: same cwd, sandbox, policy
            pids["codex (raw)"] = runtime.pid or 0
            pids["bench: chats' worker | raw client"] = os.getpid()
            meter = CpuMeter(pids)
            async with clock.worker:
                raw_thread = await runtime.ensure_thread(None, settings)
                raw_threads = [await runtime.ensure_thread(None, settings) for _ in range(50)]
                warm = clock.chat()
                for _ in range(3):  # first turns pay for thread start and caches
                    await clock.turn(warm, "warm up")
                    await raw_turn(runtime, raw_thread, "warm up")
                one_chat = clock.chat()
                chats = [clock.chat() for _ in range(50)]
                # Every thread and chat has had one turn before the clock starts, on both sides.
                await asyncio.gather(*(raw_turn(runtime, thread, "warm up") for thread in raw_threads))
                await asyncio.gather(*(clock.turn(chat, "warm up") for chat in [one_chat, *chats]))
                raw_a, bridge_a = await alternating(
                    meter,
                    ("(a) raw, sequential", lambda: raw_turn(runtime, raw_thread, "hi")),
                    ("(a) bridge, sequential", lambda: clock.turn(one_chat, "hi", until_closed=True)),
                    sequential,
                )
                with meter.side("bridge"):
                    back_to_back = await timed(
                        "(a) bridge, back-to-back",
                        [lambda: clock.turn(one_chat, "hi")] * sequential,
                        concurrent=False,
                    )
                with meter.side("raw"):
                    raw_b = await paced(
                        "(b) raw, 50 chats / 5 s",
                        50,
                        5.0,
                        paced_s,
                        lambda i, _: raw_turn(runtime, raw_threads[i], "tick"),
                    )
                with meter.side("bridge"):
                    bridge_b = await paced(
                        "(b) bridge, 50 chats / 5 s",
                        50,
                        5.0,
                        paced_s,
                        lambda i, _: clock.turn(chats[i], "tick"),
                    )
                # A burst lasts seconds, so one slow spell of the machine can decide it: several
                # rounds, each a raw burst then a bridge burst; the median round is the figure.
                bursts: list[tuple[Run, Run]] = []
                for _ in range(BURST_ROUNDS):
                    await asyncio.sleep(BURST_PAUSE_S)  # what the previous load left behind settles
                    with meter.side("raw"):
                        raw_burst = await timed(
                            "(c) raw, 50 at once",
                            [partial(raw_turn, runtime, thread, "burst") for thread in raw_threads],
                            concurrent=True,
                        )
                    with meter.side("bridge"):
                        bridge_burst = await timed(
                            "(c) bridge, 50 at once",
                            [partial(clock.turn, chat, "burst") for chat in chats],
                            concurrent=True,
                        )
                    bursts.append((raw_burst, bridge_burst))
                peak_rss = {name: peak_rss_mib(pid) for name, pid in pids.items()}
                per_turn_events = await history_events_per_turn(client, clock.worker_queue)
            await runtime.stop()

        gaps = [max(bridge.latencies_ms) - max(raw.latencies_ms) for raw, bridge in bursts]
        raw_c, bridge_c = bursts[sorted(range(len(bursts)), key=gaps.__getitem__)[len(bursts) // 2]]
        bridge_turns = sum(len(r.latencies_ms) for r in (bridge_a, back_to_back, bridge_b))
        bridge_turns += sum(len(bridge.latencies_ms) for _, bridge in bursts)
        raw_turns = len(raw_a.latencies_ms) + len(raw_b.latencies_ms)
        raw_turns += sum(len(raw.latencies_ms) for raw, _ in bursts)
        print(
            f"work-ally bridge benchmark, {os.cpu_count()} cores: `ally up --demo` (tuned SQLite dev server)"
        )
        for raw, bridge, goal in (
            (raw_a, bridge_a, "(a) goal: p50 added <= 50 ms (each message after the previous turn closed)"),
            (
                raw_a,
                back_to_back,
                "(a) no goal: each message the instant the reply lands, so the previous "
                "turn's last workflow tasks overlap it",
            ),
            (raw_b, bridge_b, "(b) goal: p95 added <= 200 ms"),
            (
                raw_c,
                bridge_c,
                "(c) goal: every reply within 2 s of the raw client's (the median of "
                f"{len(bursts)} rounds; slowest reply's gap per round: "
                + ", ".join(f"{gap / 1000:+.2f} s" for gap in gaps)
                + ")",
            ),
        ):
            print(raw.line())
            print(bridge.line())
            added_p50 = pct(bridge.latencies_ms, 0.5) - pct(raw.latencies_ms, 0.5)
            added_p95 = pct(bridge.latencies_ms, 0.95) - pct(raw.latencies_ms, 0.95)
            worst_gap = max(bridge.latencies_ms) - max(raw.latencies_ms)
            print(f"    added: p50 {added_p50:+.1f} ms, p95 {added_p95:+.1f} ms, worst {worst_gap:+.1f} ms")
            print(f"    {goal}")
        print(f"history events per turn (turn + share of conversation): {per_turn_events:.1f}")
        print(
            f"CPU over the timed runs ({bridge_turns} bridge turns, {raw_turns} raw ones), per turn, "
            "and peak memory:"
        )
        print(f"    {'':<34} {'bridge runs':>16} {'raw runs':>16}")
        for name in pids:
            bridge_s, raw_s = meter.spent["bridge"][name], meter.spent["raw"][name]
            print(
                f"    {name:<34} {bridge_s:6.2f} s {1000 * bridge_s / bridge_turns:5.1f} ms"
                f" {raw_s:6.2f} s {1000 * raw_s / raw_turns:5.1f} ms  {peak_rss[name]:6.0f} MiB"
            )
        own = {
            name: s for name, s in meter.spent["bridge"].items() if not name.startswith(("codex", "scripted"))
        }
        own_ms = 1000 * sum(own.values()) / bridge_turns
        print(f"    the bridge's own CPU per turn (not Codex, not its model): {own_ms:.1f} ms")
        print(f"    statistics: raw (a) stdev {statistics.pstdev(raw_a.latencies_ms):.1f} ms")
        print(
            f"    CPU stolen by the VM's host: {100 * meter.stolen('bridge'):.1f}% during the bridge's runs, "
            f"{100 * meter.stolen('raw'):.1f}% during the raw client's"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer turns and a 20 s paced run")
    asyncio.run(bench(parser.parse_args().quick))


if __name__ == "__main__":
    main()
