"""`ally service`: `ally up` as a login service, restarted on failure, without a running systemd.

The real `ally` CLI writes and removes the unit in a home of the test's own; systemd's own verifier
(`systemd-analyze verify`) checks the unit where it is installed, a strict reading of the unit file
everywhere. No user service manager runs in a test: with an empty XDG_RUNTIME_DIR the real
systemctl finds no bus, which is the "could not load it" path a person meets over SSH. Where the
service manager answers, the commands it gets are recorded through `service.install`'s `run`
parameter (the seam for a systemctl or launchctl that cannot run here).
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ally import service
from ally.service import CommandResult, ServiceSpec

ALLY = Path(sys.executable).parent / "ally"  # the venv's console script, as a person runs it


def ally(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ALLY), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A person's environment with a home of its own and no reachable user service manager."""
    home = tmp_path / "home"
    runtime_dir = tmp_path / "run-user"
    home.mkdir()
    runtime_dir.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORK_ALLY_", "XDG_", "DBUS_"))}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime_dir))
    # A data dir whose path needs quoting and escaping in a unit file.
    env["WORK_ALLY_HOME"] = str(tmp_path / "data 100% mine")
    return env


# The unit's grammar as systemd 252 reads it, for the keys we write: what the strict check allows.
UNIT_KEYS = {
    "Unit": {"Description", "StartLimitIntervalSec"},
    "Service": {
        "Type",
        "ExecStart",
        "Environment",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "KillMode",
        "TimeoutStopSec",
        "StandardOutput",
        "StandardError",
    },
    "Install": {"WantedBy"},
}


def read_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values, refusing anything systemd would ignore or reject."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in text.splitlines():
        if not line or line.startswith(("#", ";")):
            continue
        if header := re.fullmatch(r"\[(\w+)\]", line):
            assert header[1] in UNIT_KEYS, f"unknown section {line}"
            current = sections.setdefault(header[1], {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"not a key=value line in a section: {line!r}"
        section = next(name for name, keys in sections.items() if keys is current)
        assert key in UNIT_KEYS[section], f"unknown key {key} in [{section}]"
        current.setdefault(key, []).append(value)
    return sections


def check_unit(path: Path, tmp_path: Path) -> dict[str, dict[str, list[str]]]:
    """The unit read strictly, and, where systemd is installed, verified by systemd itself."""
    unit = read_unit(path.read_text(encoding="utf-8"))
    if shutil.which("systemd-analyze"):
        runtime_dir = tmp_path / "verify-runtime"
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        verified = subprocess.run(
            ["systemd-analyze", "verify", "--user", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)},
            timeout=60,
            check=False,
        )
        # verify exits 0 even for keys it ignores: any word from it is a finding.
        assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    return unit


def test_service_install_writes_a_unit_systemd_accepts_and_says_how_to_load_it_where_it_cannot(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    installed = ally("service", "install", env=user_env)
    unit_file = Path(user_env["HOME"]) / ".config/systemd/user/work-ally.service"
    assert installed.returncode == service.NOT_LOADED_EXIT, installed.stdout + installed.stderr
    assert f"Wrote {unit_file}" in installed.stdout
    assert "Could not load it" in installed.stdout
    assert "  systemctl --user daemon-reload && systemctl --user enable --now work-ally" in installed.stdout

    unit = check_unit(unit_file, tmp_path)
    service_section = unit["Service"]
    # It runs this very `ally`, by its absolute path, with the data dir it was installed from.
    assert service_section["ExecStart"] == [f'"{ALLY}" "up"']
    assert service_section["Environment"] == [
        '"PYTHONUNBUFFERED=1"',  # its output reaches the log as it is printed
        f'"WORK_ALLY_HOME={tmp_path}/data 100%% mine"',
    ]
    assert service_section["Restart"] == ["on-failure"]
    assert int(service_section["RestartSec"][0]) >= 5
    assert service_section["RestartPreventExitStatus"] == ["2"]  # a config error waits for a person
    log = Path(user_env["WORK_ALLY_HOME"]) / "logs" / "supervisor.log"
    assert service_section["StandardOutput"] == [f"append:{str(log).replace('%', '%%')}"]
    assert log.parent.is_dir()
    assert unit["Install"]["WantedBy"] == ["default.target"]

    status = ally("service", "status", env=user_env)
    assert status.returncode == service.NOT_LOADED_EXIT
    assert f"Installed: {unit_file}" in status.stdout and f"runs: {ALLY} up" in status.stdout
    assert "Loaded: cannot tell" in status.stdout

    again = ally("service", "install", env=user_env)
    assert f"Unchanged: {unit_file}" in again.stdout

    removed = ally("service", "uninstall", env=user_env)
    assert f"Removed {unit_file}" in removed.stdout
    assert not unit_file.exists()
    assert removed.returncode == service.NOT_LOADED_EXIT  # nothing could be asked to stop it
    assert "systemctl --user stop work-ally" in removed.stdout

    second = ally("service", "uninstall", env=user_env)
    assert second.returncode == 0 and "Nothing is installed" in second.stdout
    gone = ally("service", "status", env=user_env)
    assert gone.returncode == 1 and "Not installed" in gone.stdout
    assert "Traceback" not in installed.stderr + removed.stderr + second.stderr + gone.stderr


def test_installed_from_python_dash_m_the_unit_still_runs_the_venvs_ally(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    subprocess.run(
        [sys.executable, "-m", "ally", "service", "install"], env=user_env, capture_output=True, timeout=60
    )
    unit = check_unit(Path(user_env["HOME"]) / ".config/systemd/user/work-ally.service", tmp_path)
    assert unit["Service"]["ExecStart"] == [f'"{ALLY}" "up"']


def test_a_broken_config_installs_nothing(user_env: dict[str, str]) -> None:
    data = Path(user_env["WORK_ALLY_HOME"])
    data.mkdir(parents=True)
    (data / "config.toml").write_text("[feishu]\nap_id = 'cli_x'\n")
    refused = ally("service", "install", env=user_env)
    assert refused.returncode == 2 and "ap_id" in refused.stderr
    assert not (Path(user_env["HOME"]) / ".config/systemd/user/work-ally.service").exists()


class ServiceManager:
    """Stands in for a systemctl/launchctl that answers: records each command, answers `replies`."""

    def __init__(self, replies: dict[str, CommandResult] | None = None) -> None:
        self.commands: list[list[str]] = []
        self.replies = replies or {}

    def __call__(self, argv: list[str]) -> CommandResult:
        self.commands.append(argv)
        return self.replies.get(argv[1] if argv[0] == "launchctl" else argv[2], CommandResult(returncode=0))


def spec(tmp_path: Path, home: str = "data") -> ServiceSpec:
    return ServiceSpec(
        command=[str(ALLY)],
        environment={"WORK_ALLY_HOME": str(tmp_path / home)},
        log_file=tmp_path / home / "logs" / "supervisor.log",
    )


def test_where_the_user_systemd_answers_install_enables_and_starts_it_and_a_change_restarts_it(
    tmp_path: Path,
) -> None:
    systemd = ServiceManager()
    first = service.install("systemd", spec(tmp_path), tmp_path / "home", run=systemd)
    assert first.problem is None and first.changed
    assert systemd.commands == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "work-ally"],
    ]
    assert any("Started" in line for line in service.install_report(first, spec(tmp_path)))

    systemd.commands.clear()
    service.install("systemd", spec(tmp_path), tmp_path / "home", run=systemd)
    assert ["systemctl", "--user", "restart", "work-ally"] not in systemd.commands  # unchanged: left running

    systemd.commands.clear()
    moved = service.install("systemd", spec(tmp_path, "elsewhere"), tmp_path / "home", run=systemd)
    assert moved.changed and systemd.commands[-1] == ["systemctl", "--user", "restart", "work-ally"]

    systemd.replies["show"] = CommandResult(
        returncode=0,
        output="LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\n"
        "MainPID=4242\nNRestarts=2\n",
    )
    report = service.status("systemd", spec(tmp_path, "elsewhere"), tmp_path / "home", run=systemd)
    assert report.installed and report.loaded and service.status_exit(report) == 0
    assert (
        "Loaded: yes, active (running), enabled at login, pid 4242, restarted 2 times."
        in service.status_report(report)
    )

    systemd.commands.clear()
    removed = service.uninstall("systemd", tmp_path / "home", run=systemd)
    assert removed.problem is None and not removed.path.exists()
    assert systemd.commands == [
        ["systemctl", "--user", "disable", "--now", "work-ally"],
        ["systemctl", "--user", "daemon-reload"],
    ]


def test_the_launchd_agent_round_trips_through_plistlib_and_loads_into_the_gui_domain(tmp_path: Path) -> None:
    rendered = plistlib.loads(service.render_launchd_plist(spec(tmp_path)))
    assert rendered == {
        "Label": "com.work-ally.up",
        "ProgramArguments": [str(ALLY), "up"],
        "EnvironmentVariables": {"WORK_ALLY_HOME": str(tmp_path / "data")},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": service.RESTART_DELAY_S,
        "ExitTimeOut": service.STOP_TIMEOUT_S,
        "ProcessType": "Background",
        "StandardOutPath": str(tmp_path / "data" / "logs" / "supervisor.log"),
        "StandardErrorPath": str(tmp_path / "data" / "logs" / "supervisor.log"),
    }

    home = tmp_path / "home"
    not_loaded = CommandResult(returncode=113, output='Could not find service "com.work-ally.up"')
    launchd = ServiceManager({"print": not_loaded})
    installed = service.install("launchd", spec(tmp_path), home, run=launchd)
    plist = home / "Library" / "LaunchAgents" / "com.work-ally.up.plist"
    assert installed.path == plist and installed.problem is None
    assert plistlib.loads(plist.read_bytes())["ProgramArguments"] == [str(ALLY), "up"]
    domain = f"gui/{os.getuid()}"
    assert launchd.commands[1:] == [
        ["launchctl", "enable", f"{domain}/com.work-ally.up"],
        ["launchctl", "bootstrap", domain, str(plist)],
    ]

    launchd.replies["print"] = CommandResult(
        returncode=0, output="\tstate = running\n\tpid = 77\n\truns = 3\n"
    )
    report = service.status("launchd", spec(tmp_path), home, run=launchd)
    assert report.loaded and report.pid == 77 and report.restarts == 2 and report.current

    launchd.commands.clear()
    removed = service.uninstall("launchd", home, run=launchd)
    assert removed.problem is None and not plist.exists()
    assert launchd.commands[-1] == ["launchctl", "bootout", f"{domain}/com.work-ally.up"]
    assert service.uninstall("launchd", home, run=launchd).changed is False
