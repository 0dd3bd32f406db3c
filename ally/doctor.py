"""`ally doctor`: check binaries, versions, config, credentials and ports, and say how to fix each."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Literal

from pydantic import BaseModel

from ally.codex.binary import CodexBinaryNotFound, binary_version, find_codex_binary
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
        return Check(name="temporal cli", status="fail", detail=str(e), fix="run dev/bootstrap")
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
        return Check(
            name="codex", status="fail", detail=str(e), fix="run dev/bootstrap, or set [codex] binary"
        )
    mismatch = version_mismatch(version)
    if mismatch:
        return Check(name="codex", status="warn", detail=f"{binary}: {mismatch}")
    return Check(name="codex", status="ok", detail=f"{binary}: {version}")


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
        fix=f"CODEX_HOME={home} dev/codex/node_modules/.bin/codex login  (or `dev/ally up --demo`)",
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
        fix=f"set [feishu] app_id and app_secret in {config_path()} (docs/feishu-setup.md)",
    )
