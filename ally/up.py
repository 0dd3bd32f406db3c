"""`ally up`, first half: check, plan what to start, then become the supervisor (ally/supervisor.py).

Knowing what to start takes the configuration, the Temporal SDK's reading of a configured cluster
(environment variables and profiles), the Codex binary and the dev server's command line: imports
of tens of MiB (the contracts' models, temporalio) that the supervisor has no use for once the parts
run. So this half works it all out into a `Plan`, then replaces its own program with
`python -m ally.supervisor PLAN_FILE` (`os.execv`: the same process, so the terminal, a service manager
and `ally status` see one `ally up`), which starts from a fresh, small interpreter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from pydantic import BaseModel

from ally.codex.binary import CodexBinaryNotFound, find_codex_binary
from ally.config import AllyConfig, data_dir, owner_of
from ally.names import runtime_queue
from ally.processes import free_local_port, start_group
from ally.readiness import MissingPiece, missing_pieces
from ally.run_state import logs_dir, run_dir
from ally.supervisor import (
    AlreadyRunning,
    CannotStart,
    DevServerCheck,
    PartPlan,
    Plan,
    StartedChild,
    log_offset,
    part_env,
    running_supervisor,
)
from ally.temporal_client import ui_url, uses_embedded_server
from ally.temporal_server import dev_server_command

__all__ = ["AlreadyRunning", "CannotStart", "UpOptions", "become_supervisor", "plan", "plan_parts"]


class UpOptions(BaseModel):
    demo: bool = False
    ready_timeout: float = 60.0


def _python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def plan_parts(
    config: AllyConfig, options: UpOptions, demo_port: int | None = None, http_port: int | None = None
) -> list[PartPlan]:
    """The parts in start order; `http_port` is where the embedded dev server answers HTTP (the
    supervisor asks it whether it is ready)."""
    parts: list[PartPlan] = []
    if uses_embedded_server(config):
        command = dev_server_command(
            db_file=data_dir() / "temporal.db",
            port=config.temporal.port,
            ui_port=config.temporal.ui_port,
            namespace=config.temporal.namespace,
        )
        http = http_port or free_local_port()
        parts.append(
            PartPlan(name="temporal", command=[*command, "--ui-disable-news-fetch", f"--http-port={http}"])
        )
    runtime_env: dict[str, str] = {}
    if demo_port is not None:
        # A fixed port, so a restarted demo model is where the demo CODEX_HOME points.
        command = [*_python_module("ally.model_server"), "--demo", "--port", str(demo_port)]
        parts.append(PartPlan(name="demo-model", command=command))
        runtime_env["WORK_ALLY_CODEX__HOME"] = str(_demo_codex_home(demo_port))
    parts.append(PartPlan(name="runtime-worker", command=_python_module("workers.runtime"), env=runtime_env))
    if config.feishu.configured:
        parts.append(PartPlan(name="gateway", command=_python_module("workers.gateway")))
    return parts


def _demo_codex_home(port: int) -> Path:
    """A CODEX_HOME of the demo's own, pointing at the scripted model: never the user's."""
    from ally.model_server import write_codex_home

    return write_codex_home(data_dir() / "demo-codex-home", f"http://127.0.0.1:{port}/v1")


def plan(config: AllyConfig, options: UpOptions) -> Plan:
    """What would only make a part die at start is said here, before anything starts."""
    if (other := running_supervisor()) is not None:
        raise AlreadyRunning(f"ally up is already running (pid {other.pid}); see `ally status`")
    try:
        find_codex_binary(config.codex.binary)
    except CodexBinaryNotFound as error:
        raise CannotStart(f"cannot start the Codex runtime: {error}") from None
    demo_port = free_local_port() if options.demo else None
    http_port = free_local_port() if uses_embedded_server(config) else None
    parts = plan_parts(config, options, demo_port, http_port)
    return Plan(
        parts=parts,
        dev_server=(
            DevServerCheck(http_port=http_port, namespace=config.temporal.namespace)
            if http_port is not None
            else None
        ),
        ready_timeout=options.ready_timeout,
        restart_backoff_seconds=config.supervisor.restart_backoff_seconds,
        healthy_after_seconds=config.supervisor.healthy_after_seconds,
        ready_lines=_ready_lines(config, options, parts),
        alert_crashes=owner_of(config) is not None and config.feishu.configured,
    )


def _ready_lines(config: AllyConfig, options: UpOptions, parts: list[PartPlan]) -> list[str]:
    url = ui_url(config)
    lines = ["work-ally is up."]
    if url:
        lines.append(f"  Temporal UI      {url}")
    lines.append(f"  runtime worker   {runtime_queue(config.runtime.host)} (owns codex app-server)")
    lines.append(
        "  gateway          "
        + (
            f"Feishu {config.feishu.transport}, and the Feishu chats' workflows"
            if any(p.name == "gateway" for p in parts)
            else "not started"
        )
    )
    lines.append("  terminal chat    `ally chat` in another terminal (it runs that chat's workflows)")
    if options.demo:
        lines.append("  demo model       DEMO MODE: answers come from a scripted local model, not a real one")
    missing: list[MissingPiece] = missing_pieces(config, demo=options.demo)
    if missing:
        lines.append("Missing:")
        lines += [f"  - {piece.what}: {piece.next_step}" for piece in missing]
    lines.append(f"Logs: {logs_dir()}   Stop: Ctrl-C")
    return lines


def become_supervisor(up_plan: Plan) -> NoReturn:
    """Replace this process's program with the supervisor's (it keeps the pid, its children, the
    terminal and the environment; what this half printed is flushed first). The dev server, which
    everything else waits for, is started first, so it starts while the supervisor does."""
    first = up_plan.parts[0] if up_plan.parts else None
    if first is not None and first.name == "temporal":
        offset = log_offset(first.log_file)
        pid = start_group(first.command, log_file=first.log_file, env=part_env(first.env))
        first.started = StartedChild(pid=pid, log_offset=offset)
    plan_file = run_dir() / f"up-{os.getpid()}.plan"  # not *.json: no part state; read, then removed
    plan_file.write_text(up_plan.model_dump_json(), encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    command = [*_python_module("ally.supervisor"), str(plan_file)]
    os.execv(command[0], command)
