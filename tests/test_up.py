"""`ally up` runs the whole product and stops it without leaving a process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ally.config import AllyConfig, RuntimeConfig, TemporalConfig
from ally.processes import free_local_port
from ally.up import UpOptions, plan_parts
from dev.fake_feishu import FakeFeishu, message_event
from tests.processes import processes_with_env

READY_LINE = "work-ally is up."


class RunningUp:
    def __init__(
        self, process: subprocess.Popen[str], home: Path, env: dict[str, str], output: list[str]
    ) -> None:
        self.process = process
        self.home = home
        self.env = env  # what `ally up` was started with: other `ally` commands reuse it
        self.output = output

    @property
    def marker(self) -> str:
        return f"WORK_ALLY_HOME={self.home}"

    def stop(self) -> None:
        """SIGTERM, as Ctrl-C or a service manager would: a clean exit, and no process left."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0
        assert wait_gone(self.marker) == {}


def start_up(
    home: Path,
    *extra: str,
    ready_timeout: float = 120,
    env: dict[str, str] | None = None,
    ally: tuple[str, ...] = (sys.executable, "-m", "ally"),
    cwd: Path | None = None,
) -> RunningUp:
    overrides = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORK_ALLY_", "TEMPORAL_"))}
    env.update(overrides)
    env.update(
        WORK_ALLY_HOME=str(home),
        WORK_ALLY_TEMPORAL__PORT=str(free_local_port()),
        WORK_ALLY_TEMPORAL__UI_PORT=str(free_local_port()),
        WORK_ALLY_CODEX__HOME=str(home / "codex-home"),
        WORK_ALLY_RUNTIME__HOST="test-host",
        PYTHONUNBUFFERED="1",
    )
    process = subprocess.Popen(
        [*ally, "up", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert process.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line.rstrip())
        if line.startswith(READY_LINE):
            # The summary follows the ready line; read it up to its last line.
            while not output[-1].startswith("Logs:"):
                output.append(process.stdout.readline().rstrip())
            return RunningUp(process, home, env, output)
    process.kill()
    raise AssertionError("ally up did not get ready:\n" + "\n".join(output) + _logs(home))


def _logs(home: Path) -> str:
    logs = sorted((home / "logs").glob("*.log"))
    return "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)


def wait_gone(marker: str, timeout: float = 20) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    left = processes_with_env(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_with_env(marker)
    return left


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ally-home"
    leftovers = processes_with_env(f"WORK_ALLY_HOME={tmp_path / 'ally-home'}")
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)  # never let one test's failure leak processes into the next


@pytest.mark.codex
def test_up_runs_every_part_and_sigterm_leaves_no_process_behind(home: Path) -> None:
    up = start_up(home)
    summary = "\n".join(up.output)
    ui = next(line.split()[-1] for line in up.output if "Temporal UI" in line)
    with urllib.request.urlopen(ui, timeout=10) as page:
        assert page.status == 200
    # With no credentials it still runs, and says what is missing and what to do next.
    assert "Feishu credentials" in summary and "app_id" in summary
    assert "Codex login" in summary and "--demo" in summary
    assert "ally chat" in summary  # the way to talk to it with no Feishu app

    status = subprocess.run(
        [sys.executable, "-m", "ally", "status", "--json"],
        capture_output=True,
        text=True,
        env=up.env,
        timeout=60,
    )
    report = json.loads(status.stdout)
    parts = {part["name"]: part for part in report["parts"]}
    assert {"supervisor", "runtime-worker"} <= {n for n, p in parts.items() if p["alive"]}
    codex_pid = parts["runtime-worker"]["detail"]["pid"]
    assert "app-server" in Path(f"/proc/{codex_pid}/cmdline").read_bytes().decode()
    assert report["temporal_reachable"]
    assert all(count >= 1 for count in report["pollers"].values()), report["pollers"]

    running = processes_with_env(up.marker)
    assert any("start-dev" in cmd for cmd in running.values())
    assert any("app-server" in cmd for cmd in running.values())

    up.stop()
    # A clean stop is quiet: nothing at warning level in the dev server's log, start to end.
    server_log = (home / "logs" / "temporal.log").read_text()
    assert "Temporal Server:" in server_log
    assert "level=WARN" not in server_log and "level=ERROR" not in server_log, server_log


@pytest.mark.codex
@pytest.mark.faults
def test_a_killed_supervisor_takes_its_children_with_it(home: Path) -> None:
    up = start_up(home)
    assert processes_with_env(up.marker)
    up.process.kill()  # SIGKILL: no chance to clean up; the kernel's parent-death signal must
    up.process.wait(timeout=10)
    assert wait_gone(up.marker) == {}


@pytest.mark.codex
@pytest.mark.faults
def test_a_dev_server_that_dies_is_restarted_though_ally_up_started_it_before_becoming_the_supervisor(
    home: Path,
) -> None:
    up = start_up(home, env={"WORK_ALLY_SUPERVISOR__RESTART_BACKOFF_SECONDS": "0.5"})
    assert up.process.stdout is not None

    def dev_servers() -> list[int]:
        return [pid for pid, cmd in processes_with_env(up.marker).items() if "start-dev" in cmd]

    (first,) = dev_servers()
    os.kill(first, signal.SIGKILL)
    line = up.process.stdout.readline()
    assert line.startswith("temporal exited (-9); restarting in 0.5s"), line
    deadline = time.monotonic() + 30
    while dev_servers() in ([], [first]):
        assert time.monotonic() < deadline, "the dev server did not come back"
        time.sleep(0.1)
    up.stop()


@pytest.mark.codex
def test_with_nothing_configured_the_demo_answers_a_terminal_chat_end_to_end(home: Path) -> None:
    up = start_up(home, "--demo")
    assert any("DEMO MODE" in line for line in up.output)
    chat = subprocess.Popen(
        [sys.executable, "-m", "ally", "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=up.env,
    )
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write("hello from the terminal\n")
    chat.stdin.flush()
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("You said: hello from the terminal" in s for s in seen):
        seen.append(chat.stdout.readline().rstrip())
    chat.stdin.close()
    assert chat.wait(timeout=30) == 0
    assert "codex> (demo model) You said: hello from the terminal" in seen, seen
    up.stop()


@pytest.mark.codex
@pytest.mark.feishu
def test_ally_up_with_feishu_answers_a_message_over_the_long_connection(home: Path) -> None:
    app_id = "cli_ally_up_e2e"
    with FakeFeishu(app_id=app_id) as fake:
        fake.add_user("ou_alice", "Alice")
        up = start_up(
            home,
            "--demo",
            env={
                "WORK_ALLY_FEISHU__APP_ID": app_id,
                "WORK_ALLY_FEISHU__APP_SECRET": fake.app_secret,
                "WORK_ALLY_FEISHU__DOMAIN": fake.domain,
            },
        )
        assert any("gateway" in line and "Feishu websocket" in line for line in up.output), up.output
        fake.wait_for(lambda: fake.long_connection.connection_count, timeout=30)

        event = message_event("oc_dm_alice", "hello over feishu", sender_open_id="ou_alice", app_id=app_id)
        assert fake.push_event(event, timeout=10)["code"] == 200
        question = event["event"]["message"]["message_id"]
        reply = fake.wait_for(
            lambda: next(
                (m for m in fake.messages if m.parent_id == question and m.msg_type == "interactive"), None
            ),
            timeout=60,
        )
        assert "(demo model) You said: hello over feishu" in json.dumps(reply.content, ensure_ascii=False)

        # The SDK logs the connection URL; its access_key and ticket are credentials.
        logs = "".join(log.read_text(errors="replace") for log in (home / "logs").glob("*.log"))
        issued = fake.long_connection.credentials_issued
        assert issued and not [secret for secret in issued if secret in logs]
        assert "access_key=<redacted>" in logs and "ticket=<redacted>" in logs
        assert fake.app_secret not in logs

        up.stop()


def run_up_expecting_failure(home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("WORK_ALLY_", "TEMPORAL_"))}
    full.update(
        WORK_ALLY_HOME=str(home),
        WORK_ALLY_TEMPORAL__PORT=str(free_local_port()),
        WORK_ALLY_TEMPORAL__UI_PORT=str(free_local_port()),
        WORK_ALLY_CODEX__HOME=str(home / "codex-home"),
        **env,
    )
    return subprocess.run(
        [sys.executable, "-m", "ally", "up"], capture_output=True, text=True, env=full, timeout=120
    )


@pytest.mark.codex
@pytest.mark.faults
def test_a_missing_or_broken_codex_binary_is_one_line_with_the_cause_and_the_fix(
    home: Path, tmp_path: Path
) -> None:
    missing = run_up_expecting_failure(home, {"WORK_ALLY_CODEX__BINARY": str(tmp_path / "no-codex")})
    assert missing.returncode == 1
    assert "Traceback" not in missing.stdout + missing.stderr
    assert missing.stderr.strip().splitlines() == [
        f"ally: cannot start the Codex runtime: codex.binary {tmp_path / 'no-codex'} does not exist; "
        "fix codex.binary or unset it"
    ]
    assert processes_with_env(f"WORK_ALLY_HOME={home}") == {}  # nothing was started

    # A binary that is there but dies at once: the runtime worker's own one-line reason.
    broken = tmp_path / "broken-codex"
    broken.write_text("#!/bin/sh\necho 'this is not codex' >&2\nexit 3\n")
    broken.chmod(0o755)
    died = run_up_expecting_failure(home, {"WORK_ALLY_CODEX__BINARY": str(broken)})
    assert died.returncode == 1
    assert "Traceback" not in died.stdout + died.stderr
    (line,) = died.stderr.strip().splitlines()
    assert line.startswith("ally: runtime-worker exited at start: cannot start the Codex runtime: ")
    assert str(broken) in line and "runtime-worker.log" in line
    assert wait_gone(f"WORK_ALLY_HOME={home}") == {}


def _runtime_worker_pid(home: Path) -> int | None:
    state = home / "run" / "runtime-worker.json"
    try:
        return int(json.loads(state.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.codex
@pytest.mark.faults
def test_the_restart_backoff_starts_over_once_a_part_has_been_healthy(home: Path) -> None:
    healthy_after = 10.0  # well above a worker's start-up, even on a slow machine
    up = start_up(
        home,
        env={
            "WORK_ALLY_SUPERVISOR__RESTART_BACKOFF_SECONDS": "0.5, 1, 1.5, 2",
            "WORK_ALLY_SUPERVISOR__HEALTHY_AFTER_SECONDS": str(healthy_after),
        },
    )
    assert up.process.stdout is not None

    def kill_the_runtime_worker() -> str:
        pid = _runtime_worker_pid(home)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        line = ""
        while "restarting in" not in line:
            line = up.process.stdout.readline()  # type: ignore[union-attr]
            assert line, "ally up stopped talking"
        deadline = time.monotonic() + 60
        while _runtime_worker_pid(home) in (None, pid):  # back, and polling
            assert time.monotonic() < deadline, "the runtime worker did not come back"
            time.sleep(0.1)
        return line.split("restarting in ")[1].strip()

    quick = [kill_the_runtime_worker() for _ in range(3)]  # a crash loop climbs the backoff
    assert quick == ["0.5s", "1s", "1.5s"]
    time.sleep(healthy_after + 0.5)
    assert kill_the_runtime_worker() == "0.5s"  # healthy for a while: a fresh failure
    up.stop()


def test_a_second_runtime_host_with_a_shared_temporal_and_no_feishu_runs_only_its_runtime_worker() -> None:
    """docs/operations.md, "Several runtime hosts": `ally up` there needs no flag of its own."""
    config = AllyConfig(
        temporal=TemporalConfig(address="first-machine:7233"), runtime=RuntimeConfig(host="desk")
    )
    assert [part.name for part in plan_parts(config, UpOptions())] == ["runtime-worker"]
