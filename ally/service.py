"""`ally service`: `ally up` started at login and restarted on failure by the user's own service manager.

Linux: a systemd user unit, `~/.config/systemd/user/work-ally.service` (`$XDG_CONFIG_HOME` moves it).
macOS: a launchd agent, `~/Library/LaunchAgents/com.work-ally.up.plist`. Both run the very `ally`
that installed them (an absolute path, so a venv or pipx install works without PATH), carry
`WORK_ALLY_HOME` when it is set, and send `ally up`'s own output to `<data dir>/logs/supervisor.log`,
beside the parts' logs, so `ally logs` finds it on either system.

What is rendered is pure (a `ServiceSpec` in, text out); what talks to systemctl/launchctl goes
through a `Run` callable, so a test can stand in for a service manager that does not exist there.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from ally.config import HOME_ENV, data_dir

UNIT_NAME = "work-ally.service"
LAUNCHD_LABEL = "com.work-ally.up"
# Between two starts after a failure. systemd 252 (Debian 12) has no growing backoff
# (RestartSteps= came in 254), so one fixed pause, and no start limit: a machine that runs this
# around the clock should keep trying, slowly, rather than give up after a burst.
RESTART_DELAY_S = 20
# `ally up` stops its parts in reverse order with a 10 s grace each before it exits.
STOP_TIMEOUT_S = 60
# A config error (exit 2) stays wrong until a person fixes the file: restarting cannot help.
CONFIG_ERROR_EXIT = 2

Manager = Literal["systemd", "launchd"]


class ServiceError(Exception):
    """Something `ally service` cannot do, explained in one line."""


class ServiceSpec(BaseModel):
    """What the service runs: `command` + `up`, with `environment`, its output appended to `log_file`."""

    command: list[str]
    environment: dict[str, str] = {}
    log_file: Path


class CommandResult(BaseModel):
    returncode: int
    output: str = ""


Run = Callable[[list[str]], CommandResult]


def run_command(argv: list[str]) -> CommandResult:
    """Run a service-manager command; a missing binary is a failed command, not an exception."""
    if shutil.which(argv[0]) is None:
        return CommandResult(returncode=127, output=f"{argv[0]} is not installed on this machine")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return CommandResult(returncode=done.returncode, output=(done.stderr.strip() or done.stdout.strip()))


def current_manager() -> Manager:
    return "launchd" if sys.platform == "darwin" else "systemd"


def ally_command(argv0: str | None = None, executable: str | None = None) -> list[str]:
    """The absolute command of the `ally` being run now, for a service manager with no PATH of ours."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    if Path(argv0).name == "ally":
        found = shutil.which(argv0) or argv0
        script = Path(found).resolve()  # a pipx link resolves into its venv, which is what stays put
        if script.is_file() and os.access(script, os.X_OK):
            return [str(script)]
    # `python -m ally`: the console script beside this interpreter, or the module itself. The
    # interpreter path is not resolved: a venv's python is a link, and resolving it leaves the venv.
    beside = Path(executable).absolute().parent / "ally"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    return [str(Path(executable).absolute()), "-m", "ally"]


def service_spec(environ: Mapping[str, str] | None = None) -> ServiceSpec:
    env = os.environ if environ is None else environ
    # Its output goes to a file, where Python would hold it back in a buffer.
    environment = {"PYTHONUNBUFFERED": "1"}
    if env.get(HOME_ENV):
        environment[HOME_ENV] = str(Path(env[HOME_ENV]).expanduser().absolute())
    return ServiceSpec(
        command=ally_command(), environment=environment, log_file=data_dir() / "logs" / "supervisor.log"
    )


def unit_path(manager: Manager, home: Path, environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if manager == "launchd":
        return home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    return config_home / "systemd" / "user" / UNIT_NAME


# --- rendering -------------------------------------------------------------------------------------


def _systemd_value(text: str) -> str:
    """`text` as one systemd word: quoted, with specifiers (%) and backslashes escaped."""
    if any(ch in text for ch in "\n\r\0"):
        raise ServiceError(f"cannot write {text!r} into a systemd unit (it holds a line break)")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def _systemd_path(path: Path) -> str:
    text = str(path)
    if any(ch in text for ch in "\n\r\0"):
        raise ServiceError(f"cannot write {text!r} into a systemd unit (it holds a line break)")
    return text.replace("%", "%%")


def render_systemd_unit(spec: ServiceSpec) -> str:
    # `$` starts a variable in ExecStart only; `$$` is a literal one.
    exec_start = " ".join(_systemd_value(word).replace("$", "$$") for word in [*spec.command, "up"])
    environment = "".join(
        f"Environment={_systemd_value(f'{key}={value}')}\n" for key, value in sorted(spec.environment.items())
    )
    return (
        "# Written by `ally service install`; `ally service uninstall` removes it.\n"
        "[Unit]\n"
        "Description=work-ally (ally up): Codex driven from Feishu chats\n"
        "StartLimitIntervalSec=0\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        f"{environment}"
        "Restart=on-failure\n"
        f"RestartSec={RESTART_DELAY_S}\n"
        f"RestartPreventExitStatus={CONFIG_ERROR_EXIT}\n"
        # SIGTERM to `ally up` alone: it stops its parts in order; whatever is left at the timeout
        # gets SIGKILL.
        "KillMode=mixed\n"
        f"TimeoutStopSec={STOP_TIMEOUT_S}\n"
        f"StandardOutput=append:{_systemd_path(spec.log_file)}\n"
        "StandardError=inherit\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def render_launchd_plist(spec: ServiceSpec) -> bytes:
    agent: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [*spec.command, "up"],
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restarted when it fails, not when it was stopped
        "ThrottleInterval": RESTART_DELAY_S,
        "ExitTimeOut": STOP_TIMEOUT_S,
        "ProcessType": "Background",
        "StandardOutPath": str(spec.log_file),
        "StandardErrorPath": str(spec.log_file),
    }
    if spec.environment:
        agent["EnvironmentVariables"] = dict(sorted(spec.environment.items()))
    return plistlib.dumps(agent)


def render(manager: Manager, spec: ServiceSpec) -> bytes:
    return render_systemd_unit(spec).encode() if manager == "systemd" else render_launchd_plist(spec)


# --- the service manager's commands ----------------------------------------------------------------


def _gui_domain() -> str:
    return f"gui/{os.getuid()}"


def _launchd_target() -> str:
    return f"{_gui_domain()}/{LAUNCHD_LABEL}"


def load_commands(manager: Manager, path: Path) -> list[list[str]]:
    """What makes the service manager start the file at `path` now and at every login."""
    if manager == "systemd":
        return [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", "work-ally"],
        ]
    # `enable` clears a `launchctl disable` left from before, which would make bootstrap refuse it.
    return [["launchctl", "enable", _launchd_target()], ["launchctl", "bootstrap", _gui_domain(), str(path)]]


def unload_commands(manager: Manager) -> list[list[str]]:
    if manager == "systemd":
        return [["systemctl", "--user", "disable", "--now", "work-ally"]]
    return [["launchctl", "bootout", _launchd_target()]]


def shell_line(commands: list[list[str]]) -> str:
    return " && ".join(shlex.join(command) for command in commands)


def _launchd_loaded(run: Run) -> bool | None:
    result = run(["launchctl", "print", _launchd_target()])
    return None if result.returncode == 127 else result.returncode == 0


def _run_all(commands: list[list[str]], run: Run) -> str | None:
    """Run in order until one fails; its complaint, or None when all succeeded."""
    for command in commands:
        result = run(command)
        if result.returncode != 0:
            said = result.output.splitlines()[0] if result.output else f"exit code {result.returncode}"
            return f"`{shlex.join(command)}` failed: {said}"
    return None


# --- actions ---------------------------------------------------------------------------------------


class Outcome(BaseModel):
    """What an action did. With a `problem`, the file changed but the service manager did not follow:
    `problem` says what it answered, and `by_hand` is the command line that finishes the job."""

    manager: Manager
    path: Path
    changed: bool
    problem: str | None = None
    by_hand: str | None = None


def install(manager: Manager, spec: ServiceSpec, home: Path | None = None, run: Run = run_command) -> Outcome:
    path = unit_path(manager, home or Path.home())
    content = render(manager, spec)
    before = path.read_bytes() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)  # systemd does not create it for append:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
    changed = before != content
    commands = load_commands(manager, path)
    if manager == "systemd" and before is not None and changed:
        commands.append(["systemctl", "--user", "restart", "work-ally"])  # enable --now keeps the old one
    elif manager == "launchd" and _launchd_loaded(run):
        # bootstrap refuses a loaded label: unload a changed agent first; an unchanged one stays.
        commands = [*unload_commands(manager), *commands] if changed else []
    problem = _run_all(commands, run)
    return Outcome(
        manager=manager,
        path=path,
        changed=changed,
        problem=problem,
        by_hand=shell_line(load_commands(manager, path)) if problem else None,
    )


def uninstall(manager: Manager, home: Path | None = None, run: Run = run_command) -> Outcome:
    """Stop and disable the service, then remove its file. Nothing installed: nothing to do."""
    path = unit_path(manager, home or Path.home())
    if not path.exists():
        return Outcome(manager=manager, path=path, changed=False)
    stop = unload_commands(manager)
    if manager == "launchd" and _launchd_loaded(run) is False:
        stop = []  # bootout of an agent that is not loaded fails, and there is nothing to stop
    problem = _run_all(stop, run)
    path.unlink()
    if manager == "systemd":
        # What `disable` would have removed, had systemctl answered: the login hook's link.
        for link in path.parent.glob(f"*.wants/{UNIT_NAME}"):
            link.unlink(missing_ok=True)
        if problem is None:
            problem = _run_all([["systemctl", "--user", "daemon-reload"]], run)
    by_hand = None
    if problem:
        by_hand = (
            shell_line(
                [["systemctl", "--user", "stop", "work-ally"], ["systemctl", "--user", "daemon-reload"]]
            )
            if manager == "systemd"
            else shell_line(stop or unload_commands(manager))
        )
    return Outcome(manager=manager, path=path, changed=True, problem=problem, by_hand=by_hand)


class ServiceStatus(BaseModel):
    manager: Manager
    path: Path
    installed: bool
    loaded: bool | None  # None: the service manager could not be asked
    state: str | None = None  # the manager's words: "active (running)", "failed", "running"…
    pid: int | None = None
    restarts: int | None = None
    runs: list[str] | None = None  # the command line in the installed file
    current: bool | None = None  # whether that is the `ally` asking now
    problem: str | None = None


def status(
    manager: Manager, spec: ServiceSpec, home: Path | None = None, run: Run = run_command
) -> ServiceStatus:
    path = unit_path(manager, home or Path.home())
    installed = path.exists()
    report = ServiceStatus(manager=manager, path=path, installed=installed, loaded=None)
    if installed:
        report.runs = _installed_command(manager, path)
        report.current = report.runs == [*spec.command, "up"]
    if manager == "systemd":
        return _systemd_status(report, run)
    return _launchd_status(report, run)


def _systemd_status(report: ServiceStatus, run: Run) -> ServiceStatus:
    properties = "LoadState,ActiveState,SubState,UnitFileState,MainPID,NRestarts"
    result = run(["systemctl", "--user", "show", UNIT_NAME, f"--property={properties}"])
    if result.returncode != 0:
        report.problem = (
            f"`systemctl --user` failed: {result.output.splitlines()[0] if result.output else ''}"
        )
        return report
    shown = dict(line.split("=", 1) for line in result.output.splitlines() if "=" in line)
    report.loaded = shown.get("LoadState") == "loaded"
    if report.loaded:
        report.state = f"{shown.get('ActiveState', '?')} ({shown.get('SubState', '?')})"
        if shown.get("UnitFileState"):
            report.state += f", {shown['UnitFileState']} at login"
        pid = int(shown.get("MainPID", "0") or 0)
        report.pid = pid or None
        report.restarts = int(shown["NRestarts"]) if shown.get("NRestarts", "").isdigit() else None
    return report


def _launchd_status(report: ServiceStatus, run: Run) -> ServiceStatus:
    result = run(["launchctl", "print", f"{_gui_domain()}/{LAUNCHD_LABEL}"])
    if result.returncode == 127:
        report.problem = result.output
        return report
    report.loaded = result.returncode == 0
    for line in result.output.splitlines() if report.loaded else []:
        key, _, value = line.strip().partition(" = ")
        if key == "state":
            report.state = value
        elif key == "pid" and value.isdigit():
            report.pid = int(value)
        elif key == "runs" and value.isdigit():
            report.restarts = max(0, int(value) - 1)
    return report


def _installed_command(manager: Manager, path: Path) -> list[str] | None:
    try:
        if manager == "launchd":
            arguments = plistlib.loads(path.read_bytes()).get("ProgramArguments")
            return [str(a) for a in arguments] if isinstance(arguments, list) else None
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("ExecStart="):
                words = shlex.split(line.removeprefix("ExecStart="))
                return [word.replace("$$", "$").replace("%%", "%") for word in words]
    except (OSError, ValueError, plistlib.InvalidFileException):
        return None
    return None


# --- what a person reads ---------------------------------------------------------------------------

NOT_LOADED_EXIT = 3  # the file is right, the service manager did not take it (or could not be asked)


def not_carried(environ: Mapping[str, str] | None = None) -> list[str]:
    """WORK_ALLY_* variables set here that the service will not see (only WORK_ALLY_HOME is carried:
    a unit file is no place for a secret)."""
    env = os.environ if environ is None else environ
    return sorted(key for key in env if key.startswith("WORK_ALLY_") and key != HOME_ENV)


def install_report(outcome: Outcome, spec: ServiceSpec) -> list[str]:
    what = "systemd user unit" if outcome.manager == "systemd" else "launchd agent"
    wrote = "Wrote" if outcome.changed else "Unchanged:"
    lines = [f"{wrote} {outcome.path} ({what}: `{shlex.join([*spec.command, 'up'])}`)."]
    if outcome.problem:
        lines += [
            f"Could not load it: {outcome.problem}",
            "No user service manager answered here. Load it from a login session with:",
            f"  {outcome.by_hand}",
        ]
        return lines
    lines.append("Started: `ally up` runs now, at every login, and again 20 s after a failure.")
    lines.append(f"Its output: `ally logs supervisor` ({spec.log_file}); `ally service status` shows it.")
    if outcome.manager == "systemd":
        lines.append("To keep it running while you are logged out: loginctl enable-linger")
    return lines


def uninstall_report(outcome: Outcome) -> list[str]:
    if not outcome.changed:
        return [f"Nothing is installed (no {outcome.path})."]
    lines = [f"Removed {outcome.path}."]
    if outcome.problem:
        lines += [
            f"Could not stop it: {outcome.problem}",
            "If it still runs (in another session), stop it there with:",
            f"  {outcome.by_hand}",
        ]
    else:
        lines.append("Stopped it; it no longer starts at login.")
    return lines


def status_report(report: ServiceStatus) -> list[str]:
    what = "systemd user unit" if report.manager == "systemd" else "launchd agent"
    if not report.installed:
        lines = [f"Not installed (no {what} at {report.path}); `ally service install` installs it."]
    else:
        lines = [f"Installed: {report.path} ({what})."]
        if report.runs:
            lines.append(f"  runs: {shlex.join(report.runs)}")
        if report.current is False:
            lines.append("  that is not the `ally` you ran now: `ally service install` here replaces it")
    if report.loaded is None:
        lines.append(f"Loaded: cannot tell; {report.problem}")
    elif report.loaded:
        restarts = "" if report.restarts is None else f", restarted {report.restarts} times"
        pid = "" if report.pid is None else f", pid {report.pid}"
        lines.append(f"Loaded: yes, {report.state or 'state unknown'}{pid}{restarts}.")
    else:
        lines.append("Loaded: no.")
    return lines


def status_exit(report: ServiceStatus) -> int:
    """0 installed and loaded; 1 not installed; 3 installed but not loaded, or the manager is silent."""
    if not report.installed:
        return 1
    return 0 if report.loaded else NOT_LOADED_EXIT
