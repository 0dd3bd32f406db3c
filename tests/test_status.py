"""`ally status` speaks in words and relative times; `--json` keeps every field."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ally.codex.models import RuntimeHealth
from ally.codex.version import CODEX_VERSION
from ally.config import load_config
from ally.processes import free_local_port
from ally.run_state import PartState, write_part_state
from ally.status import collect_status, duration
from tests.processes import processes_with_env
from tests.test_up import start_up


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ally-home"
    for pid in processes_with_env(f"WORK_ALLY_HOME={tmp_path / 'ally-home'}"):
        with contextlib.suppress(ProcessLookupError):  # it ended between the listing and the kill
            os.kill(pid, signal.SIGKILL)  # never leak a failed test's stack into the next


@pytest.mark.codex
def test_status_of_a_running_stack_reads_as_sentences_and_its_logs_are_one_command_away(home: Path) -> None:
    up = start_up(home, "--demo")
    shown = subprocess.run(
        [sys.executable, "-m", "ally", "status"], capture_output=True, text=True, env=up.env, timeout=60
    )
    # Not its exit code: about 1 run in 6 the interpreter still aborts at exit, after printing
    # (PyGILState_Release from the Temporal client's threads), until CLI commands close them first.
    lines = shown.stdout.splitlines()
    port = up.env["WORK_ALLY_TEMPORAL__PORT"]
    assert lines[0].startswith(f"Temporal 127.0.0.1:{port} (namespace default): reachable, UI http://")
    assert re.fullmatch(r"supervisor: running for \d+ s \(pid \d+\)\.", lines[1]), lines
    assert re.fullmatch(
        rf"runtime-worker: running for \d+ s \(pid \d+\), Codex {re.escape(CODEX_VERSION)} "
        r"\(pid \d+, up \d+ s\), 0 restarts\.",
        lines[2],
    ), lines
    assert "Queue codex-runtime@test-host (this host's Codex runtime): polled by 1 worker." in lines
    # Nothing a person reads is a raw field: no epoch seconds, no `key=None`.
    assert not re.search(r"\d{9,}|=None|version_mismatch", shown.stdout), shown.stdout

    as_json = subprocess.run(
        [sys.executable, "-m", "ally", "status", "--json"],
        capture_output=True,
        text=True,
        env=up.env,
        timeout=60,
    )
    report = json.loads(as_json.stdout)  # one document
    worker = next(part for part in report["parts"] if part["name"] == "runtime-worker")
    health = RuntimeHealth.model_validate(worker["detail"])
    assert health.state == "running" and health.version_mismatch is None and health.started_at
    assert worker["alive"] and worker["up_seconds"] >= 0 and worker["last_seen_seconds"] >= 0

    logs = subprocess.run(
        [sys.executable, "-m", "ally", "logs", "runtime-worker"], capture_output=True, text=True, env=up.env
    )
    assert f"codex child {health.pid} up" in logs.stdout

    up.stop()


async def test_status_says_which_part_is_gone_and_what_troubles_the_codex_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORK_ALLY_HOME", str(tmp_path / "ally"))
    monkeypatch.setenv("WORK_ALLY_TEMPORAL__PORT", str(free_local_port()))  # nothing listens there
    ended = await asyncio.create_subprocess_exec("true")  # a pid that has just ended
    await ended.wait()
    now = datetime.now(UTC)
    write_part_state(
        PartState(
            name="gateway",
            pid=ended.pid,
            started_at=now - timedelta(hours=3),
            updated_at=now - timedelta(minutes=2, seconds=5),
            detail={"transport": "websocket", "handed_over": 7},
        )
    )
    health = RuntimeHealth(
        state="restarting",
        generation=4,
        restarts=3,
        version="codex-cli 0.1.0",
        version_mismatch="codex binary is 0.1.0, but work-ally is pinned to something else",
    )
    write_part_state(
        PartState(
            name="runtime-worker",
            pid=os.getpid(),
            started_at=now - timedelta(hours=2, minutes=5),
            detail=health.model_dump(mode="json"),
        )
    )

    report = await collect_status(load_config())
    assert report.lines()[1:] == [
        f"runtime-worker: running for 2 h 5 min (pid {os.getpid()}), Codex is restarting, 3 restarts.",
        "  warning: codex binary is 0.1.0, but work-ally is pinned to something else",
        f"gateway: NOT running (pid {ended.pid} is gone; last seen 2 min ago).",
    ]
    assert "NOT reachable" in report.lines()[0]


def test_durations_read_as_a_person_says_them() -> None:
    assert [duration(s) for s in (0.4, 59, 60, 3599, 3600, 7500, 49 * 3600)] == [
        "0 s",
        "59 s",
        "1 min",
        "59 min",
        "1 h",
        "2 h 5 min",
        "2 days",
    ]
