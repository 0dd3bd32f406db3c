"""`ally logs`: a person reads what the parts wrote without knowing where it is."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ally.config import load_config
from ally.logs import PARTS
from ally.up import UpOptions, plan_parts


def ally(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ally", *args],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=60,
        check=False,
    )


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_ALLY_")}
    return {**env, "WORK_ALLY_HOME": str(home), "PYTHONUNBUFFERED": "1"}


def write_log(home: Path, part: str, lines: list[str]) -> Path:
    path = home / "logs" / f"{part}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_ally_logs_shows_the_last_lines_of_each_part_that_wrote_one_labelled(tmp_path: Path) -> None:
    home = tmp_path / "ally"
    write_log(home, "runtime-worker", [f"worker line {i}" for i in range(1, 101)])
    write_log(home, "temporal", ["server started", "server ready"])

    every = ally("logs", "-n", "3", home=home)
    assert every.returncode == 0, every.stderr
    assert every.stdout.splitlines() == [
        f"== temporal ({home}/logs/temporal.log) ==",
        "server started",
        "server ready",
        "",
        f"== runtime-worker ({home}/logs/runtime-worker.log) ==",
        "worker line 98",
        "worker line 99",
        "worker line 100",
        "",
    ]
    default = ally("logs", "runtime-worker", home=home)
    assert default.stdout.splitlines() == [f"worker line {i}" for i in range(51, 101)]  # 50 by default

    missing = ally("logs", "gateway", home=home)
    assert missing.returncode == 0 and "gateway has written no log yet" in missing.stdout


def test_an_unknown_part_is_refused_with_the_list_of_parts(tmp_path: Path) -> None:
    refused = ally("logs", "runtime", home=tmp_path / "ally")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "ally: no part named 'runtime'; the parts are: "
        "supervisor, temporal, demo-model, runtime-worker, gateway"
    )
    assert "Traceback" not in refused.stderr


def test_the_help_lists_every_part_and_every_part_ally_up_starts_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = ally("logs", "--help", home=tmp_path / "ally").stdout
    assert all(part in shown for part in PARTS)
    monkeypatch.setenv("WORK_ALLY_HOME", str(tmp_path / "ally"))
    monkeypatch.setenv("WORK_ALLY_FEISHU__APP_ID", "cli_x")
    monkeypatch.setenv("WORK_ALLY_FEISHU__APP_SECRET", "s")
    started = plan_parts(load_config(), UpOptions(demo=True), demo_port=1)
    assert {part.name for part in started} | {"supervisor"} == set(PARTS)
    assert all(part.log_file == tmp_path / "ally" / "logs" / f"{part.name}.log" for part in started)


class Following:
    """`ally logs … -f` running, its lines collected as it prints them."""

    def __init__(self, home: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ally", "logs", *args, "-f"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(home),
        )
        self.printed: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.printed.put(line.rstrip("\n"))

    def expect(self, line: str) -> None:
        deadline = time.monotonic() + 20
        while line not in self.seen and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self.seen.append(self.printed.get(timeout=0.5))
        assert line in self.seen, self.seen

    def ctrl_c(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=20)
        self.reader.join(timeout=5)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()


def test_ally_logs_follow_keeps_up_with_a_truncated_and_a_rotated_log_and_ctrl_c_exits_cleanly(
    tmp_path: Path,
) -> None:
    home = tmp_path / "ally"
    log = write_log(home, "runtime-worker", ["old 1", "old 2"])
    following = Following(home, "runtime-worker", "-n", "1")
    following.expect("old 2")
    with log.open("a") as out:
        out.write("appended\n")
    following.expect("appended")
    log.write_text("after truncation\n")  # logrotate's copytruncate
    following.expect("after truncation")
    log.rename(log.with_suffix(".log.1"))  # a move and a fresh file
    log.write_text("in the new file\n")
    following.expect("in the new file")
    assert "old 1" not in following.seen
    assert following.ctrl_c() == (0, "")


def test_following_every_part_labels_each_line_and_picks_up_a_part_that_starts_later(tmp_path: Path) -> None:
    home = tmp_path / "ally"
    write_log(home, "temporal", ["server ready"])
    following = Following(home)
    following.expect("temporal       | server ready")
    write_log(home, "gateway", ["connected to Feishu"])
    following.expect("gateway        | connected to Feishu")
    assert following.ctrl_c() == (0, "")
