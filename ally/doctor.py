"""`ally doctor`: check binaries, versions, config, credentials and ports, and say how to fix each."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from ally.codex.binary import (
    FIX_CODEX,
    CodexBinaryNotFound,
    binary_version,
    codex_command,
    find_codex_binary,
)
from ally.codex.sandbox import SandboxProbe, probe_sandbox
from ally.codex.version import version_mismatch
from ally.config import AllyConfig, config_path
from ally.readiness import codex_login_source
from ally.run_state import read_part_states
from ally.temporal_client import target, uses_embedded_server
from ally.temporal_server import TemporalBinaryNotFound, temporal_binary


class Check(BaseModel):
    name: str
    status: Literal["ok", "warn", "fail"]
    detail: str
    fix: str = ""


def run_checks(config: AllyConfig) -> list[Check]:
    return [
        _python(),
        _config_file(),
        _temporal_binary(),
        *_temporal_ports(config),
        _codex_binary(config),
        _sandbox(config),
        _codex_home(config),
        _codex_login(config),
        _feishu(config),
        _access(config),
    ]


def _python() -> Check:
    # pyproject requires 3.11+, so an older interpreter never gets this far.
    return Check(name="python", status="ok", detail=".".join(map(str, sys.version_info[:3])))


def _config_file() -> Check:
    path = config_path()
    if path.exists():
        return Check(name="config", status="ok", detail=f"{path} (valid)")
    return Check(
        name="config", status="ok", detail=f"{path} absent: defaults in use (`ally config` shows them)"
    )


def _temporal_binary() -> Check:
    try:
        binary = temporal_binary()
    except TemporalBinaryNotFound as e:
        return Check(
            name="temporal cli",
            status="fail",
            detail=str(e),
            fix="reinstall work-ally (in a clone: dev/bootstrap)",
        )
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20)
    return Check(name="temporal cli", status="ok", detail=f"{binary}: {out.stdout.strip()}")


def _temporal_ports(config: AllyConfig) -> list[Check]:
    address, namespace = target(config)
    if not uses_embedded_server(config):
        return [Check(name="temporal", status="ok", detail=f"cluster {address}, namespace {namespace}")]
    ours = any(s.name == "supervisor" and s.alive for s in read_part_states())
    checks = []
    for label, key, port in (
        ("grpc", "port", config.temporal.port),
        ("ui", "ui_port", config.temporal.ui_port),
    ):
        with socket.socket() as sock:
            busy = sock.connect_ex(("127.0.0.1", port)) == 0
        if busy and not ours:
            checks.append(
                Check(
                    name=f"port {port} ({label})",
                    status="fail",
                    detail="in use by another program",
                    fix=f"stop it, or set [temporal] {key} in the config",
                )
            )
        else:
            detail = "in use by work-ally" if busy else "free"
            checks.append(Check(name=f"port {port} ({label})", status="ok", detail=detail))
    return checks


def _codex_binary(config: AllyConfig) -> Check:
    try:
        binary = find_codex_binary(config.codex.binary)
        version = binary_version(binary)
    except (CodexBinaryNotFound, OSError, subprocess.SubprocessError) as e:
        return Check(name="codex", status="fail", detail=str(e), fix=FIX_CODEX)
    mismatch = version_mismatch(version)
    if mismatch:
        return Check(name="codex", status="warn", detail=f"{binary}: {mismatch}")
    return Check(name="codex", status="ok", detail=f"{binary}: {version}")


INSTALL_BUBBLEWRAP = (
    "install your distribution's bubblewrap package (Debian/Ubuntu: sudo apt-get install bubblewrap; "
    "Fedora: sudo dnf install bubblewrap); dev/bootstrap does it when run as root"
)


def _sandbox(config: AllyConfig) -> Check:
    """Whether the sandbox Codex puts commands in really confines them: a command is run in it,
    the way Codex runs one, and must write in the workspace but not beside it."""
    mode = config.codex.sandbox
    if mode == "danger-full-access":
        return Check(
            name="sandbox",
            status="warn",
            detail="off ([codex] sandbox = danger-full-access): commands run with all your rights",
            fix='set [codex] sandbox = "workspace-write"',
        )
    if not sys.platform.startswith("linux"):
        return Check(
            name="sandbox", status="ok", detail=f"{mode}: the system's own sandbox (not probed here)"
        )
    try:
        binary = find_codex_binary(config.codex.binary)
    except CodexBinaryNotFound as e:
        return Check(name="sandbox", status="fail", detail=f"cannot check without Codex: {e}")
    home = config.codex.resolved_home()
    return _sandbox_verdict(mode, home, probe_sandbox(binary, mode, home))


def _sandbox_verdict(mode: str, codex_home: Path, probe: SandboxProbe) -> Check:
    if probe.wrote_outside:
        return Check(
            name="sandbox",
            status="fail",
            detail=f"NOT enforced: a command in the {mode} sandbox wrote outside the workspace",
            fix=INSTALL_BUBBLEWRAP,
        )
    if probe.no_bubblewrap:
        return Check(
            name="sandbox",
            status="fail",
            detail="Codex refuses to run any command: no bubblewrap (bwrap) on PATH, none bundled with Codex",
            fix=INSTALL_BUBBLEWRAP,
        )
    if probe.no_helper:
        return Check(
            name="sandbox",
            status="fail",
            detail=f"Codex cannot start its sandbox helper, so every command fails: CODEX_HOME "
            f"({codex_home}) is inside the temporary directory, where Codex makes no helper links",
            fix="set [codex] home (or CODEX_HOME) to a directory outside the temporary directory",
        )
    if not probe.confined:
        return Check(
            name="sandbox",
            status="fail",
            detail=f"a command could not run in the {mode} sandbox: {probe.output or 'no output'}",
            fix='see docs/operations.md, "The sandbox"',
        )
    where = f"bubblewrap {probe.bubblewrap}" if probe.bubblewrap else "Codex's bundled bubblewrap"
    detail = f"{mode} enforced ({where})"
    if probe.bubblewrap is None:
        # Enforced, but Codex logs an error at every start and asks for the system package.
        return Check(name="sandbox", status="warn", detail=detail, fix=INSTALL_BUBBLEWRAP)
    return Check(name="sandbox", status="ok", detail=detail)


def _codex_home(config: AllyConfig) -> Check:
    home = config.codex.resolved_home()
    if home.is_dir():
        return Check(name="codex home", status="ok", detail=str(home))
    return Check(
        name="codex home", status="warn", detail=f"{home} does not exist yet", fix="ally up creates it"
    )


def _codex_login(config: AllyConfig) -> Check:
    home = config.codex.resolved_home()
    source = codex_login_source(home)
    if source:
        return Check(name="codex login", status="ok", detail=source)
    return Check(
        name="codex login",
        status="warn",
        detail="no auth.json, API key or custom model provider",
        fix=f"CODEX_HOME={home} {codex_command(config.codex.binary)} login  "
        "(or try it offline: `ally up --demo`)",
    )


def _access(config: AllyConfig) -> Check:
    if not config.access.open_to_everyone:
        return Check(name="access", status="ok", detail="limited by [access] chats/users")
    return Check(
        name="access",
        status="warn",
        detail="anyone who can message the bot can ask it to run commands on this machine",
        fix=f"list your chats and people in [access] chats / users in {config_path()}",
    )


def _feishu(config: AllyConfig) -> Check:
    if config.feishu.configured:
        return Check(
            name="feishu", status="ok", detail=f"app {config.feishu.app_id} ({config.feishu.transport})"
        )
    return Check(
        name="feishu",
        status="warn",
        detail="no app_id/app_secret",
        fix=f"run `ally setup`, or set [feishu] app_id and app_secret in {config_path()}",
    )
