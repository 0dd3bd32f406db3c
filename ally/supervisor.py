"""`ally up`: start, supervise and stop together every part of work-ally on this machine.

Parts, in start order: the embedded Temporal dev server (unless a cluster is configured), the
scripted demo model (with --demo), the runtime worker (owns `codex app-server`) and the Feishu
gateway (when credentials exist; it also runs the Feishu chats' workflows, workers/chat.py). A
terminal chat's workflows run in its own `ally chat`. A part that dies is restarted with backoff;
SIGINT or SIGTERM stops them all in reverse order, each process group SIGTERMed, then SIGKILLed
after a grace period, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel
from temporalio.client import Client

from ally.alerts import owner_of
from ally.codex.binary import CodexBinaryNotFound, find_codex_binary
from ally.config import AllyConfig, data_dir
from ally.contracts import PartCrashed
from ally.names import ALERTS_WORKFLOW_ID, runtime_queue
from ally.processes import free_local_port, spawn_group, stop_group
from ally.readiness import MissingPiece, missing_pieces
from ally.run_state import PartState, logs_dir, read_part_states, remove_part_state, write_part_state
from ally.temporal_client import connect, ui_url, uses_embedded_server
from ally.temporal_server import dev_server_command
from workflows.alerts import AlertsWorkflow

SUPERVISOR = "supervisor"


class UpOptions(BaseModel):
    demo: bool = False
    ready_timeout: float = 60.0


@dataclass
class Part:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    log_offset: int = 0  # where this run's output starts in the (appended) log

    @property
    def log_file(self) -> Path:
        return logs_dir() / f"{self.name}.log"

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


def _python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def plan_parts(config: AllyConfig, options: UpOptions, demo_port: int | None = None) -> list[Part]:
    parts: list[Part] = []
    if uses_embedded_server(config):
        command = dev_server_command(
            db_file=data_dir() / "temporal.db",
            port=config.temporal.port,
            ui_port=config.temporal.ui_port,
            namespace=config.temporal.namespace,
        )
        parts.append(Part("temporal", [*command, "--ui-disable-news-fetch"]))
    runtime_env: dict[str, str] = {}
    if demo_port is not None:
        # A fixed port, so a restarted demo model is where the demo CODEX_HOME points.
        command = [*_python_module("ally.model_server"), "--demo", "--port", str(demo_port)]
        parts.append(Part("demo-model", command))
        runtime_env["WORK_ALLY_CODEX__HOME"] = str(_demo_codex_home(demo_port))
    parts.append(Part("runtime-worker", _python_module("workers.runtime"), env=runtime_env))
    if config.feishu.configured:
        parts.append(Part("gateway", _python_module("workers.gateway")))
    return parts


def _demo_codex_home(port: int) -> Path:
    """A CODEX_HOME of the demo's own, pointing at the scripted model: never the user's."""
    from ally.model_server import write_codex_home

    return write_codex_home(data_dir() / "demo-codex-home", f"http://127.0.0.1:{port}/v1")


class Supervisor:
    def __init__(self, config: AllyConfig, options: UpOptions, say: Callable[[str], None]) -> None:
        self.config = config
        self.options = options
        self.say = say
        self.stopping = asyncio.Event()
        self.parts: list[Part] = []
        self._client: Client | None = None  # connected when a part dies, to tell the owner

    async def run(self) -> int:
        self._preflight()
        self._claim()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            demo_port = free_local_port() if self.options.demo else None
            self.parts = plan_parts(self.config, self.options, demo_port)
            for part in self.parts:
                await self._start(part)
                if part.name == "temporal":
                    await self._wait_for_temporal()
            await self._wait_for_workers()
            self._announce()
            await self._supervise()
        finally:
            await self._stop_all()
            remove_part_state(SUPERVISOR)
            self.say("work-ally stopped; no process left behind.")
        return 0

    def _preflight(self) -> None:
        """What would only make a part die at start, said before anything starts."""
        try:
            find_codex_binary(self.config.codex.binary)
        except CodexBinaryNotFound as error:
            raise CannotStart(f"cannot start the Codex runtime: {error}") from None

    def _claim(self) -> None:
        for state in read_part_states():
            if state.name == SUPERVISOR and state.alive and state.pid != os.getpid():
                raise AlreadyRunning(f"ally up is already running (pid {state.pid}); see `ally status`")
        now = datetime.now(UTC)
        write_part_state(PartState(name=SUPERVISOR, pid=os.getpid(), started_at=now))

    async def _start(self, part: Part) -> None:
        env = {**os.environ, **part.env, "WORK_ALLY_HOME": str(data_dir())}
        part.log_file.parent.mkdir(parents=True, exist_ok=True)
        part.log_offset = part.log_file.stat().st_size if part.log_file.exists() else 0
        part.process = await spawn_group(part.command, log_file=part.log_file, env=env)
        part.started_at = time.monotonic()

    async def _wait_for_temporal(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.stopping.is_set():
                return
            if _port_open(self.config.temporal.port):
                try:
                    await connect(self.config)
                    return
                except RuntimeError as e:
                    last_error = e
            await asyncio.sleep(0.2)
        raise CannotStart(
            f"the Temporal dev server did not get ready: {last_error}; see {logs_dir() / 'temporal.log'}"
        )

    async def _wait_for_workers(self) -> None:
        """Ready = each worker wrote its run-state file (it does so once it polls)."""
        names = {p.name for p in self.parts if p.name.endswith("worker") or p.name == "gateway"}
        deadline = time.monotonic() + self.options.ready_timeout
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
            raise CannotStart(f"workers not ready in {self.options.ready_timeout:.0f}s; see {logs_dir()}")

    def _announce(self) -> None:
        url = ui_url(self.config)
        lines = ["work-ally is up."]
        if url:
            lines.append(f"  Temporal UI      {url}")
        lines.append(f"  runtime worker   {runtime_queue(self.config.runtime.host)} (owns codex app-server)")
        lines.append(
            "  gateway          "
            + (
                f"Feishu {self.config.feishu.transport}, and the Feishu chats' workflows"
                if any(p.name == "gateway" for p in self.parts)
                else "not started"
            )
        )
        lines.append("  terminal chat    `ally chat` in another terminal (it runs that chat's workflows)")
        if self.options.demo:
            lines.append(
                "  demo model       DEMO MODE: answers come from a scripted local model, not a real one"
            )
        missing: list[MissingPiece] = missing_pieces(self.config, demo=self.options.demo)
        if missing:
            lines.append("Missing:")
            lines += [f"  - {piece.what}: {piece.next_step}" for piece in missing]
        lines.append(f"Logs: {logs_dir()}   Stop: Ctrl-C")
        self.say("\n".join(lines))

    async def _supervise(self) -> None:
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)
            if self.stopping.is_set():
                return
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
        """The owner hears of a part that died on its own (workflows/alerts.py). Best effort: with
        no owner, no alerts workflow yet, or Temporal itself the part that died, the restart goes on."""
        if owner_of(self.config) is None or not self.config.feishu.configured:
            return
        crash = PartCrashed(part=part.name, exit_code=exit_code, reason=part.last_words())
        try:
            if self._client is None:
                self._client = await asyncio.wait_for(connect(self.config), 3)
            alerts = self._client.get_workflow_handle_for(AlertsWorkflow.run, ALERTS_WORKFLOW_ID)
            await asyncio.wait_for(alerts.signal(AlertsWorkflow.part_crashed, crash), 3)
        except Exception as error:  # any failure to tell must not stop the restart
            self.say(f"could not alert the owner that {part.name} died: {error}")

    def _restart_delay(self, part: Part) -> float:
        """The next step of the backoff; a part that ran `healthy_after_seconds` starts it over
        (a fresh failure, not a crash loop)."""
        settings = self.config.supervisor
        if time.monotonic() - part.started_at >= settings.healthy_after_seconds:
            part.restarts = 0
        backoff = settings.restart_backoff_seconds
        delay = backoff[min(part.restarts, len(backoff) - 1)]
        part.restarts += 1
        return delay

    async def _stop_all(self) -> None:
        for part in reversed(self.parts):
            if part.process is not None:
                await stop_group(part.process, grace=10.0)
            remove_part_state(part.name)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_up(config: AllyConfig, options: UpOptions, say: Callable[[str], None]) -> int:
    return asyncio.run(Supervisor(config, options, say).run())
