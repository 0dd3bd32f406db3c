"""`ally up`, second half: start, supervise and stop together every part of work-ally on this machine.

Parts, in start order: the embedded Temporal dev server (unless a cluster is configured), the
scripted demo model (with --demo), the runtime worker (owns `codex app-server`) and the Feishu
gateway (when credentials exist; it also runs the Feishu chats' workflows, workers/chat.py). A
terminal chat's workflows run in its own `ally chat`. A part that dies is restarted with backoff;
SIGINT or SIGTERM stops them all in reverse order, each process group SIGTERMed, then SIGKILLed
after a grace period, so nothing is left behind.

What to start is worked out by the first half (ally/up.py), which then becomes this module in the
same process (`python -m ally.supervisor PLAN_FILE`): this is what stays running, so it imports only what
starting, watching and stopping processes needs (no Temporal SDK, no configuration models), to stay
small at rest (docs/operations.md, "bench.footprint"). It learns that the dev server is ready from
the server's HTTP API; it tells the owner about a crash through a short-lived process
(ally/crash_alert.py), which has the Temporal client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from ally.paths import data_dir
from ally.processes import AdoptedChild, Child, die_with_parent_hook, signal_group, spawn_group, stop_group
from ally.run_state import PartState, logs_dir, read_part_states, remove_part_state, write_part_state

SUPERVISOR = "supervisor"


class StartedChild(BaseModel):
    pid: int
    log_offset: int


def part_log(name: str) -> Path:
    """Where a part's output goes (`ally logs PART` reads it)."""
    return logs_dir() / f"{name}.log"


class PartPlan(BaseModel):
    name: str
    command: list[str]
    env: dict[str, str] = {}
    started: StartedChild | None = None  # already started by ally/up.py (the dev server)

    @property
    def log_file(self) -> Path:
        return part_log(self.name)


class DevServerCheck(BaseModel):
    """How to see the embedded dev server is ready: its HTTP API knows the namespace."""

    http_port: int
    namespace: str


class Plan(BaseModel):
    """Everything the supervisor needs, worked out by ally/up.py from the configuration."""

    parts: list[PartPlan]
    dev_server: DevServerCheck | None = None  # None: a configured cluster, nothing to wait for
    ready_timeout: float = 60.0
    restart_backoff_seconds: list[float]
    healthy_after_seconds: float
    ready_lines: list[str]  # said once every part runs
    alert_crashes: bool = False  # an owner gets alerts: tell them when a part dies


@dataclass
class Part:
    name: str
    command: list[str]
    env: dict[str, str]
    started: StartedChild | None = None
    process: Child | None = None
    restarts: int = 0
    started_at: float = 0.0
    log_offset: int = 0  # where this run's output starts in the (appended) log

    @property
    def log_file(self) -> Path:
        return part_log(self.name)

    def last_words(self) -> str:
        """The reason a part gave for dying, from what this run wrote: its last ERROR line (the
        workers log the cause and fix in one), else the last line of a traceback."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(self.log_offset)
                lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()]
        except OSError:
            return "no log"
        lines = [line for line in lines if line]
        errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
        if errors:
            return errors[-1].split(": ", 1)[-1]
        return lines[-1] if lines else "it wrote nothing"


class AlreadyRunning(Exception):
    pass


class CannotStart(Exception):
    """A part cannot start; the message is one line: the cause, and the fix where one is known."""


def running_supervisor() -> PartState | None:
    """Another live `ally up`, if there is one."""
    for state in read_part_states():
        if state.name == SUPERVISOR and state.alive and state.pid != os.getpid():
            return state
    return None


class Supervisor:
    def __init__(self, plan: Plan, say: Callable[[str], None]) -> None:
        self.plan = plan
        self.say = say
        self.stopping = asyncio.Event()
        self.parts = [Part(p.name, p.command, p.env, p.started) for p in plan.parts]
        self._alerting: set[asyncio.subprocess.Process] = set()

    async def run(self) -> int:
        self._claim()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            for part in self.parts:
                await self._start(part)
                if part.name == "temporal" and self.plan.dev_server is not None:
                    await self._wait_for_dev_server(part, self.plan.dev_server)
            await self._wait_for_workers()
            if not self.stopping.is_set():
                self.say("\n".join(self.plan.ready_lines))
            await self._supervise()
        finally:
            await self._stop_all()
            remove_part_state(SUPERVISOR)
            self.say("work-ally stopped; no process left behind.")
        return 0

    def _claim(self) -> None:
        if (other := running_supervisor()) is not None:  # started since ally/up.py looked
            for part in self.parts:
                if part.started is not None:
                    signal_group(part.started.pid, signal.SIGKILL)
            raise AlreadyRunning(f"ally up is already running (pid {other.pid}); see `ally status`")
        write_part_state(PartState(name=SUPERVISOR, pid=os.getpid(), started_at=datetime.now(UTC)))

    async def _start(self, part: Part) -> None:
        part.started_at = time.monotonic()
        if part.started is not None:  # the first run, started before the exec: watched from here
            part.process = AdoptedChild(part.started.pid)
            part.log_offset = part.started.log_offset
            part.started = None
            return
        part.log_offset = log_offset(part.log_file)
        part.process = await spawn_group(part.command, log_file=part.log_file, env=part_env(part.env))

    async def _wait_for_dev_server(self, part: Part, check: DevServerCheck) -> None:
        deadline = time.monotonic() + self.plan.ready_timeout
        path = f"/api/v1/namespaces/{urllib.parse.quote(check.namespace, safe='')}"
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.stopping.is_set():
                return
            if part.process is not None and part.process.returncode is not None:
                raise CannotStart(
                    f"the Temporal dev server exited at start: {part.last_words()} (see {part.log_file})"
                )
            try:
                status = await http_status(check.http_port, path)
                if status == 200:
                    return
                last_error = f"HTTP {status} for namespace {check.namespace!r}"
            except (OSError, TimeoutError, ValueError, IndexError) as error:
                last_error = str(error) or type(error).__name__
            await asyncio.sleep(0.1)
        raise CannotStart(f"the Temporal dev server did not get ready: {last_error}; see {part.log_file}")

    async def _wait_for_workers(self) -> None:
        """Ready = each worker wrote its run-state file (it does so once it polls)."""
        names = {p.name for p in self.parts if p.name.endswith("worker") or p.name == "gateway"}
        deadline = time.monotonic() + self.plan.ready_timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            ready = {s.name for s in read_part_states() if s.alive}
            if names <= ready:
                return
            for part in self.parts:
                if part.process and part.process.returncode is not None:
                    raise CannotStart(
                        f"{part.name} exited at start: {part.last_words()} (see {part.log_file})"
                    )
            await asyncio.sleep(0.2)
        if not self.stopping.is_set():
            raise CannotStart(f"workers not ready in {self.plan.ready_timeout:.0f}s; see {logs_dir()}")

    async def _supervise(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)
            if self.stopping.is_set():
                return
            self._alerting = {p for p in self._alerting if p.returncode is None}
            for part in self.parts:
                if part.process is None or part.process.returncode is None:
                    continue
                delay = self._restart_delay(part)
                self.say(f"{part.name} exited ({part.process.returncode}); restarting in {delay:g}s")
                await self._tell_alerts(part, part.process.returncode)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                if self.stopping.is_set():
                    return
                await self._start(part)

    async def _tell_alerts(self, part: Part, exit_code: int | None) -> None:
        """The owner hears of a part that died on its own (workflows/alerts.py), from a process of
        its own that says why it could not, if so. Best effort: the restart does not wait for it."""
        if not self.plan.alert_crashes:
            return
        command = [sys.executable, "-m", "ally.crash_alert", part.name, str(exit_code), part.last_words()]
        try:  # its own group, as every child here; what it says goes where the supervisor's goes
            self._alerting.add(
                await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=die_with_parent_hook(),
                )
            )
        except OSError as error:
            self.say(f"could not alert the owner that {part.name} died: {error}")

    def _restart_delay(self, part: Part) -> float:
        """The next step of the backoff; a part that ran `healthy_after_seconds` starts it over
        (a fresh failure, not a crash loop)."""
        if time.monotonic() - part.started_at >= self.plan.healthy_after_seconds:
            part.restarts = 0
        backoff = self.plan.restart_backoff_seconds
        delay = backoff[min(part.restarts, len(backoff) - 1)]
        part.restarts += 1
        return delay

    async def _stop_all(self) -> None:
        for alerting in self._alerting:
            await stop_group(alerting, grace=2.0)
        for part in reversed(self.parts):
            if part.process is not None:
                await stop_group(part.process, grace=10.0)
            remove_part_state(part.name)


async def http_status(port: int, path: str) -> int:
    """The status of `GET path` on this machine's `port` (HTTP/1.0: one request, then closed)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 2.0)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return int(status_line.split()[1])  # "HTTP/1.1 200 OK"; an empty or odd line: ValueError/IndexError


def part_env(env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **env, "WORK_ALLY_HOME": str(data_dir())}


def log_offset(log_file: Path) -> int:
    """Where the next run's output will start in `log_file` (appended to), creating its folder."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return log_file.stat().st_size if log_file.exists() else 0


def say(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str]) -> int:
    """`python -m ally.supervisor PLAN_FILE`: what `ally up` becomes once it knows what to start."""
    if len(argv) != 2:
        print("ally: the supervisor is started by `ally up`", file=sys.stderr)
        return 2
    plan_file = Path(argv[1])
    plan = Plan.model_validate_json(plan_file.read_text(encoding="utf-8"))
    plan_file.unlink()
    try:
        return asyncio.run(Supervisor(plan, say).run())
    except (AlreadyRunning, CannotStart) as error:
        print(f"ally: {error}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv))
