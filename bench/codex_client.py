"""What the Codex client costs: child start-up, per-turn overhead over a raw exchange, child memory.

    .venv/bin/python -m bench.codex_client [--turns 100] [--threads 1,10,50]

Drives the pinned native binary against the scripted model server, run as a separate process so
this process's CPU time is the client's alone. Goals: overhead < 5 ms per turn, 50 loaded threads
under 300 MiB of child RSS. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ally.codex.binary import find_codex_binary
from ally.codex.process import OPT_OUT_NOTIFICATIONS, CodexProcess
from ally.codex.rpc import STREAM_LIMIT
from ally.codex.runtime import CodexRuntime, InputPart, ThreadSettings, TurnEnded
from ally.model_server import write_codex_home

ROOT = Path(__file__).resolve().parents[1]


class ModelServerProcess:
    """`python -m ally.model_server` in its own process; steps queued over its control endpoint."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ally.model_server", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()

    def push_says(self, count: int, text: str = "ok") -> None:
        body = json.dumps([{"kind": "say", "text": text}] * count).encode()
        request = urllib.request.Request(f"{self.base_url.removesuffix('/v1')}/_control/steps", data=body)
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class Timings:
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values: Sequence[float]) -> str:
    return f"p50 {statistics.median(values):6.2f} ms   p95 {percentile(values, 0.95):6.2f} ms"


async def measure(timings: Timings, turn: Callable[[], Any]) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    await turn()
    timings.wall_ms.append((time.perf_counter() - wall) * 1000)
    timings.cpu_ms.append((time.process_time() - cpu) * 1000)


# --- the raw exchange: the least any client must do -------------------------------------------------


class RawClient:
    """turn/start, then read lines until turn/completed; no validation, no bookkeeping."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary, self.home = binary, home
        self.next_id = 0

    async def start(self, settings: ThreadSettings) -> None:
        env = {**os.environ, "CODEX_HOME": str(self.home)}
        self.process = await asyncio.create_subprocess_exec(
            str(self.binary),
            "app-server",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
            limit=STREAM_LIMIT,
            start_new_session=True,
        )
        capabilities = {"experimentalApi": True, "optOutNotificationMethods": OPT_OUT_NOTIFICATIONS}
        client = {"name": "bench-raw", "version": "0"}
        await self.call("initialize", {"clientInfo": client, "capabilities": capabilities})
        self.send({"method": "initialized"})
        # The same thread and turn parameters CodexRuntime sends: Codex's work differs with them
        # (e.g. the sandbox mode), and that is not client overhead.
        started = await self.call(
            "thread/start",
            {"cwd": settings.cwd, "approvalPolicy": settings.approval_policy, "sandbox": settings.sandbox},
        )
        self.thread_id, self.model = started["thread"]["id"], started["model"]

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.read()
            if message.get("id") == self.next_id and "method" not in message:
                return message["result"]

    async def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        message: dict[str, Any] = json.loads(await self.process.stdout.readline())
        return message

    async def turn(self) -> None:
        self.next_id += 1
        mode = {"model": self.model, "reasoning_effort": None, "developer_instructions": None}
        params = {
            "threadId": self.thread_id,
            "input": [{"type": "text", "text": "hello", "text_elements": []}],
            "collaborationMode": {"mode": "default", "settings": mode},
        }
        self.send({"id": self.next_id, "method": "turn/start", "params": params})
        while (await self.read()).get("method") != "turn/completed":
            pass

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        await self.process.wait()


# --- the figures ------------------------------------------------------------------------------------


async def startup(binary: Path, base: Path, base_url: str, runs: int) -> None:
    fresh: list[float] = []
    warm: list[float] = []
    warm_home = write_codex_home(base / "startup-warm", base_url)
    for run in range(runs):
        for home, into in ((write_codex_home(base / f"startup-{run}", base_url), fresh), (warm_home, warm)):
            child = CodexProcess(binary, home)
            began = time.perf_counter()
            await child.start()
            into.append((time.perf_counter() - began) * 1000)
            await child.stop()
    print("child start-up (spawn -> initialize result, incl. the concurrent `--version` probe)")
    print(f"  fresh CODEX_HOME: {summary(fresh)}")
    print(f"  warm CODEX_HOME:  {summary(warm)}")


async def turns(binary: Path, base: Path, model: ModelServerProcess, count: int) -> None:
    workspace = base / "workspace"
    workspace.mkdir(exist_ok=True)
    runtime = CodexRuntime(binary, write_codex_home(base / "turns-runtime", model.base_url))
    raw = RawClient(binary, write_codex_home(base / "turns-raw", model.base_url))
    settings = ThreadSettings(cwd=str(workspace), sandbox="read-only")
    await runtime.start()
    await raw.start(settings)
    thread_id = await runtime.ensure_thread(None, settings)

    async def runtime_turn() -> None:
        turn_id = await runtime.start_turn(thread_id, [InputPart(text="hello")])
        async for event in runtime.watch_turn(thread_id, turn_id):
            if isinstance(event, TurnEnded):
                return

    ours, bare = Timings(), Timings()
    warmup = 5
    model.push_says(2 * (count + warmup))
    for index in range(count + warmup):
        # Interleaved one at a time, alternating who goes first, so both see the same machine,
        # model server and after-turn work of the other child.
        pairs = ((ours, runtime_turn), (bare, raw.turn))
        for timings, turn in pairs if index % 2 else reversed(pairs):
            if index < warmup:
                await turn()
            else:
                await measure(timings, turn)
    await runtime.stop()
    await raw.stop()

    print(f"plain scripted turn, turn/start -> turn/completed, {count} turns each, interleaved")
    print(f"  CodexRuntime   wall {summary(ours.wall_ms)}   client CPU {summary(ours.cpu_ms)}")
    print(f"  raw exchange   wall {summary(bare.wall_ms)}   client CPU {summary(bare.cpu_ms)}")
    # Differences of adjacent turns: load on this shared machine drifts, a pair sees the same load.
    wall = [a - b for a, b in zip(ours.wall_ms, bare.wall_ms, strict=True)]
    cpu = [a - b for a, b in zip(ours.cpu_ms, bare.cpu_ms, strict=True)]
    print("  overhead, CodexRuntime minus raw, paired turn by turn (goal < 5 ms/turn):")
    print(f"    client CPU  {summary(cpu)}")
    print(f"    wall        {summary(wall)}   (mostly the two children's own variance)")


async def memory(binary: Path, base: Path, model: ModelServerProcess, checkpoints: Sequence[int]) -> None:
    workspace = base / "workspace"
    workspace.mkdir(exist_ok=True)
    runtime = CodexRuntime(binary, write_codex_home(base / "memory", model.base_url))
    await runtime.start()
    pid = runtime.pid
    assert pid is not None
    print("child RSS (VmRSS of the codex process) with N loaded threads, each after one turn")
    print(f"  after initialize: {rss_mib(pid):6.1f} MiB")
    loaded = 0
    model.push_says(max(checkpoints))
    for goal in sorted(checkpoints):
        while loaded < goal:
            thread_id = await runtime.ensure_thread(None, ThreadSettings(cwd=str(workspace)))
            turn_id = await runtime.start_turn(thread_id, [InputPart(text="hello")])
            async for event in runtime.watch_turn(thread_id, turn_id):
                if isinstance(event, TurnEnded):
                    break
            loaded += 1
        note = "  (goal < 300 MiB)" if goal == 50 else ""
        print(
            f"  {goal:3d} threads: {rss_mib(pid):6.1f} MiB ({runtime.health().loaded_threads} loaded){note}"
        )
    await runtime.stop()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.codex_client", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100, help="measured turns per client")
    parser.add_argument("--startups", type=int, default=5)
    parser.add_argument("--threads", default="1,10,50", help="RSS checkpoints")
    args = parser.parse_args(argv)
    binary = find_codex_binary()
    model = ModelServerProcess()
    # Outside the system temp dir: Codex refuses to create its helper binaries under it
    # (docs/codex-app-server.md §1).
    with tempfile.TemporaryDirectory(prefix="codex-bench-", dir=Path.home()) as tmp:
        base = Path(tmp)
        try:
            print(f"{binary} ({os.cpu_count()} CPUs)")
            await startup(binary, base, model.base_url, args.startups)
            await turns(binary, base, model, args.turns)
            await memory(binary, base, model, [int(n) for n in args.threads.split(",")])
        finally:
            model.stop()


if __name__ == "__main__":
    asyncio.run(main())
