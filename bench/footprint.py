"""Benchmark: what `ally up` costs at rest, against the goals: start time, memory, idle CPU.

Starts `ally up --demo` in a home of its own, with Feishu configured against the fake Feishu (the
gateway holds a real lark-oapi long connection to it; `--no-feishu` leaves the gateway out), and
measures:
  ready     seconds from spawning `ally up` to its "work-ally is up." line (goal < 5 s on 2 cores),
            the median of `--starts` starts (the first in a fresh data dir);
  memory    each part's RSS (and PSS) after the idle window, its children included, the Codex child
            apart (goal: every part but Codex <= 300 MiB together);
  idle CPU  each part's CPU over the idle window, as a share of one core (goal < 1%, every part);
  imports   where the memory goes: a fresh interpreter importing each heavy package and each part's
            entry module, its RSS and import time.

    .venv/bin/python -m bench.footprint [--idle-seconds 60] [--starts 3] [--no-feishu]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ally.processes import free_local_port, spawn_group, stop_group
from dev.fake_feishu import FakeFeishu

GOAL_RSS_MIB = 300.0
GOAL_IDLE_CPU_PCT = 1.0
GOAL_READY_S = 5.0
READY_LINE = "work-ally is up."
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Each part of `ally up`, by what its command line says.
PART_MARKERS = {
    "temporal dev server": "start-dev",
    "demo model": "ally.model_server",
    "runtime worker": "workers.runtime",
    "gateway": "workers.gateway",
}
CODEX_MARKER = "app-server"
# What each part imports at start, heaviest first; each measured alone in a fresh interpreter.
IMPORTS = {
    "python alone": "",
    "pydantic": "import pydantic",
    "temporalio client + worker": "import temporalio.client, temporalio.worker",
    "lark_oapi (the whole SDK)": "import lark_oapi",
    "feishu client + long connection": "import ally.channels.feishu.client, "
    "ally.channels.feishu.long_connection",
    "ally.codex.protocol (generated models)": "import ally.codex.protocol",
    "`ally up` until its exec (cli, up)": "import ally.cli, ally.up",
    "supervisor (ally.supervisor)": "import ally.supervisor",
    "runtime worker (workers.runtime)": "import workers.runtime",
    "gateway (workers.gateway)": "import workers.gateway",
    "demo model (ally.model_server)": "import ally.model_server",
}


@dataclass
class Proc:
    pid: int
    ppid: int
    command: str


def processes() -> dict[int, Proc]:
    found: dict[int, Proc] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(stat.parent.name)] = Proc(int(stat.parent.name), ppid, command)
    return found


def tree(root: int, table: dict[int, Proc], *, without: frozenset[int] = frozenset()) -> list[int]:
    """`root` and its descendants, leaving out the subtrees rooted at `without`."""
    members: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid in without:
            continue
        members.append(pid)
        frontier += [p.pid for p in table.values() if p.ppid == pid]
    return members


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; PSS splits shared pages among the processes sharing them."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


@dataclass
class Part:
    name: str
    pids: list[int]
    cpu_before: float = 0.0
    cpu_after: float = 0.0
    rss_kib: int = 0
    pss_kib: int = 0

    def cpu_now(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def measure_memory(self) -> None:
        sizes = [memory_kib(pid) for pid in self.pids]
        self.rss_kib = sum(rss for rss, _ in sizes)
        self.pss_kib = sum(pss for _, pss in sizes)


def find_parts(up_pid: int) -> list[Part]:
    table = processes()
    children = [p for p in table.values() if p.ppid == up_pid]
    parts = [Part("supervisor (ally up)", [up_pid])]
    codex: list[int] = []
    for name, marker in PART_MARKERS.items():
        for child in children:
            if marker in child.command:
                inside = tree(child.pid, table)
                codex_roots = frozenset(pid for pid in inside if CODEX_MARKER in table[pid].command)
                for root in codex_roots:
                    codex += tree(root, table)
                parts.append(Part(name, tree(child.pid, table, without=codex_roots)))
    parts.append(Part("codex app-server", codex))
    return parts


def mib(kib: float) -> str:
    return f"{kib / 1024:7.1f} MiB"


def verdict(ok: bool) -> str:
    return "ok" if ok else "OVER"


@dataclass
class Start:
    """One start of `ally up`: seconds from the spawn to each milestone, and to the ready line."""

    up: asyncio.subprocess.Process
    ready_s: float
    milestones: dict[str, float]


async def start_up(root: Path, feishu: FakeFeishu | None, attempt: int) -> Start:
    temporal_port = free_local_port()
    env = {
        **os.environ,
        "WORK_ALLY_HOME": str(root / "ally"),
        "WORK_ALLY_TEMPORAL__PORT": str(temporal_port),
        "WORK_ALLY_TEMPORAL__UI_PORT": str(free_local_port()),
        "WORK_ALLY_RUNTIME__HOST": "footprint",
        "HOME": str(root / "home"),  # Codex runs commands in a login shell: none of the user's dotfiles
        "PYTHONUNBUFFERED": "1",  # the ready line reaches the log as it is printed
    }
    if feishu is not None:
        env |= {
            "WORK_ALLY_FEISHU__APP_ID": feishu.app_id,
            "WORK_ALLY_FEISHU__APP_SECRET": feishu.app_secret,
            "WORK_ALLY_FEISHU__DOMAIN": feishu.domain,
        }
    (root / "home").mkdir(parents=True, exist_ok=True)
    log = root / f"ally-up-{attempt}.log"  # one per start: its own ready line
    # What each milestone looks like from outside: a port that answers, a worker's run-state file
    # (written once it polls).
    run = root / "ally" / "run"
    probes: dict[str, Callable[[], bool]] = {
        "dev server answers": lambda: port_open(temporal_port),
        "runtime worker polls": lambda: (run / "runtime-worker.json").exists(),
    }
    if feishu is not None:
        probes["gateway polls"] = lambda: (run / "gateway.json").exists()
    milestones: dict[str, float] = {}
    started = time.perf_counter()
    up = await spawn_group([str(Path(sys.executable).parent / "ally"), "up", "--demo"], log_file=log, env=env)
    while READY_LINE not in (log.read_text(errors="replace") if log.exists() else ""):
        if up.returncode is not None or time.perf_counter() - started > 120:
            raise RuntimeError(f"ally up did not get ready; see {log}:\n{log.read_text(errors='replace')}")
        for name, reached in probes.items():
            if name not in milestones and reached():
                milestones[name] = time.perf_counter() - started
        await asyncio.sleep(0.02)
    return Start(up, time.perf_counter() - started, milestones)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.05)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def import_costs() -> Iterator[tuple[str, float, float]]:
    """(what, RSS MiB after importing it in a fresh interpreter, seconds the import took)."""
    probe = (
        "import time, json, pathlib; t = time.perf_counter(); {code}; t = time.perf_counter() - t; "
        "rss = next(int(l.split()[1]) for l in pathlib.Path('/proc/self/status').read_text().splitlines() "
        "if l.startswith('VmRSS:')); print(json.dumps([rss, t]))"
    )
    for what, code in IMPORTS.items():
        done = subprocess.run(
            [sys.executable, "-c", probe.format(code=code or "pass")],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        rss_kib, seconds = json.loads(done.stdout)
        yield what, rss_kib / 1024, seconds


async def measure(idle_seconds: float, with_feishu: bool, starts: int) -> None:
    cores = os.cpu_count()
    feishu = " with Feishu (the fake, over a real lark-oapi long connection)" if with_feishu else ""
    print(f"footprint of `ally up --demo`{feishu} on {cores} cores; idle window {idle_seconds:.0f} s")
    print(f"machine load before: {load()} (1, 5, 15 min; other work here slows every start)")
    with tempfile.TemporaryDirectory(prefix="ally-footprint-") as tmp, contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakeFeishu(app_id="cli_footprint")) if with_feishu else None
        # The first start makes the data dir (the dev server's database); later ones find it.
        starts_seen: list[Start] = []
        for attempt in range(starts - 1):
            starts_seen.append(await start_up(Path(tmp), fake, attempt))
            await stop_group(starts_seen[-1].up)
        starts_seen.append(await start_up(Path(tmp), fake, starts - 1))
        up = starts_seen[-1].up
        try:
            await asyncio.sleep(5)  # let start-up work (first polls, the long connection) settle
            parts = find_parts(up.pid)
            for part in parts:
                part.cpu_before = part.cpu_now()
            clock = time.perf_counter()
            await asyncio.sleep(idle_seconds)
            window = time.perf_counter() - clock
            for part in parts:
                part.cpu_after = part.cpu_now()
                part.measure_memory()
        finally:
            await stop_group(up)
    readies = [start.ready_s for start in starts_seen]
    median = statistics.median(readies)
    print(
        f"{'ready (median)':<34} {median:6.2f} s      goal < {GOAL_READY_S:.0f} s        "
        f"{verdict(median < GOAL_READY_S)}  (each start: {', '.join(f'{r:.2f}' for r in readies)} s; "
        "the first in a fresh data dir)"
    )
    for milestone in starts_seen[-1].milestones:
        at = statistics.median(start.milestones.get(milestone, float("nan")) for start in starts_seen)
        print(f"  {milestone:<32} {at:6.2f} s after the spawn (median)")
    report(parts, window)
    print(f"machine load after: {load()}")
    print("where the memory goes (a fresh interpreter importing only that; RSS, import time):")
    for what, rss, seconds in import_costs():
        print(f"  {what:<40} {rss:7.1f} MiB  {seconds:5.2f} s")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(parts: list[Part], window: float) -> None:
    codex = next(p for p in parts if p.name == "codex app-server")
    ours = [p for p in parts if p is not codex]
    for part in parts:
        cpu = 100 * (part.cpu_after - part.cpu_before) / window
        print(
            f"  {part.name:<32} {mib(part.rss_kib)} RSS {mib(part.pss_kib)} PSS  "
            f"idle CPU {cpu:5.2f}% of a core  ({len(part.pids)} process{'es' if len(part.pids) != 1 else ''})"
        )
    rss = sum(p.rss_kib for p in ours)
    print(
        f"{'RSS, every part but Codex':<34} {mib(rss)}   goal <= {GOAL_RSS_MIB:.0f} MiB  "
        f"{verdict(rss / 1024 <= GOAL_RSS_MIB)}"
    )
    without_demo = sum(p.rss_kib for p in ours if p.name != "demo model")
    print(
        f"{'  the same without the demo model':<34} {mib(without_demo)}   goal <= {GOAL_RSS_MIB:.0f} MiB  "
        f"{verdict(without_demo / 1024 <= GOAL_RSS_MIB)}"
    )
    print(f"{'  Codex apart':<34} {mib(codex.rss_kib)}")
    cpu = 100 * sum(p.cpu_after - p.cpu_before for p in parts) / window
    print(
        f"{'idle CPU, every part and Codex':<34} {cpu:6.2f}% of a core  goal < {GOAL_IDLE_CPU_PCT:.0f}%  "
        f"{verdict(cpu < GOAL_IDLE_CPU_PCT)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="the idle window (default 60)")
    parser.add_argument("--no-feishu", action="store_true", help="without Feishu: no gateway")
    parser.add_argument("--starts", type=int, default=3, help="starts of `ally up` timed (default 3)")
    args = parser.parse_args()
    asyncio.run(measure(args.idle_seconds, with_feishu=not args.no_feishu, starts=max(1, args.starts)))


if __name__ == "__main__":
    main()
