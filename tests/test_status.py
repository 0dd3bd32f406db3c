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
from temporalio.client import Client

from ally import names
from ally.codex.models import RuntimeHealth
from ally.codex.version import CODEX_VERSION
from ally.config import AllyConfig, AssistantConfig, RuntimeConfig, TemporalConfig, load_config
from ally.processes import free_local_port
from ally.run_state import PartState, write_part_state
from ally.status import collect_status, duration
from tests.processes import processes_with_env
from tests.stack import codex_workers, running_stack, second_host
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
    # The runtime worker names its host to Temporal: this machine runs the assistants without a host.
    hosts = lines.index("Runtime hosts:")
    assert lines[hosts + 1 : hosts + 3] == [
        "  test-host (this machine): polled by 1 runtime worker; the assistants without a host.",
        "  any host: default.",
    ], lines
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


@pytest.mark.codex
@pytest.mark.faults
async def test_status_lists_each_runtime_host_with_its_assistants_and_flags_a_host_nobody_runs(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORK_ALLY_HOME", str(tmp_path / "ally"))
    async with (
        running_stack(client, tmp_path / "a") as stack,
        second_host(stack, tmp_path / "b", "host-b") as host_b,
    ):
        desk = f"desk-{stack.host}"  # an assistant lives there, but no runtime worker has ever run there
        # A host no assistant names, whose runtime worker serves the assistants without a host.
        spare = f"spare-{stack.host}"
        spare_workers = codex_workers(client, stack.runtime, spare, names.RUNTIME_DISCOVERY_QUEUE)
        config = AllyConfig(
            temporal=TemporalConfig(port=int(client.service_client.config.target_host.rsplit(":", 1)[1])),
            runtime=RuntimeConfig(host=stack.host),
            assistants={
                "alpha": AssistantConfig(host=stack.host, workspace=tmp_path),
                "beta": AssistantConfig(name="Beta", host=host_b.name, workspace=tmp_path),
                "gamma": AssistantConfig(host=desk, workspace=tmp_path),
                "delta": AssistantConfig(workspace=tmp_path),
            },
        )
        async with spare_workers[0], spare_workers[1]:
            report = await collect_status(config)

    lines = report.lines()
    start = lines.index("Runtime hosts:")
    others = sorted(
        [
            f"  {host_b.name}: polled by 1 runtime worker; assistants Beta.",
            f"  {desk}: NO runtime worker (never seen); gamma cannot answer until it is back. "
            "Start `ally up` there.",
            f"  {spare}: polled by 1 runtime worker; the assistants without a host.",
        ]
    )
    assert lines[start + 1 :] == [
        f"  {stack.host} (this machine): polled by 1 runtime worker; assistants alpha.",
        *others,
        "  any host: default, delta.",
    ]
    as_json = report.model_dump(mode="json")
    by_host = {host["host"]: host for host in as_json["hosts"]}
    assert by_host[desk] == {
        "host": desk,
        "this_machine": False,
        "pollers": 0,
        "last_polled_s": None,
        "assistants": ["gamma"],
        "serves_any": False,
    }
    assert by_host[host_b.name]["pollers"] == 1 and by_host[host_b.name]["last_polled_s"] < 90
    assert as_json["any_host"] == ["default", "delta"]
