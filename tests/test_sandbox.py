"""The sandbox Codex runs commands in: `ally doctor` reports what it really does on this machine,
checked against a command run by the real `codex app-server` in a real turn."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from ally.codex.binary import find_codex_binary
from ally.codex.models import InputPart
from ally.codex.runtime import CodexRuntime, TurnEnded
from ally.codex.sandbox import bundled_bubblewrap
from ally.contracts import ThreadSettings
from ally.model_server import RunCommand, Say, ScriptedModelServer, write_codex_home

pytestmark = pytest.mark.codex


def doctor_sandbox(home: Path, **env: str) -> tuple[int, dict[str, Any]]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("WORK_ALLY_", "TEMPORAL_"))}
    full.update(WORK_ALLY_HOME=str(home), **env)
    done = subprocess.run(
        [sys.executable, "-m", "ally", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
    )
    (check,) = [c for c in json.loads(done.stdout) if c["name"] == "sandbox"]
    return done.returncode, check


async def what_a_sandboxed_command_does(
    tmp_path: Path, binary: Path, codex_home: Path, env: dict[str, str]
) -> tuple[bool, bool, str]:
    """A turn of the real app server in workspace-write runs one command (no approval asked) that
    writes in its workspace and beside it. /tmp is not writable for it here, so that the test's
    own directory can stand for "outside". (wrote inside, wrote outside, what the command printed)"""
    workspace, outside = tmp_path / "workspace", tmp_path / f"outside-{uuid.uuid4().hex[:6]}"
    workspace.mkdir(parents=True, exist_ok=True)
    with ScriptedModelServer() as model:
        write_codex_home(codex_home, model.base_url, sandbox_mode="workspace-write")
        runtime = CodexRuntime(binary, codex_home, env={"HOME": str(tmp_path), **env})
        await runtime.start()
        try:
            script = f"echo in > {workspace / 'inside'}; echo out > {outside}"
            model.push(RunCommand(cmd=script, escalated=False), Say(text="done"))
            settings = ThreadSettings(
                cwd=str(workspace),
                sandbox="workspace-write",
                config={
                    "sandbox_workspace_write.exclude_slash_tmp": True,
                    "sandbox_workspace_write.exclude_tmpdir_env_var": True,
                },
            )
            thread_id = await runtime.ensure_thread(None, settings)
            turn_id = await runtime.start_turn(thread_id, [InputPart(text="write both")])
            async for event in runtime.watch_turn(thread_id, turn_id):
                if isinstance(event, TurnEnded):
                    break
        finally:
            await runtime.stop()
        outputs = [
            str(item.get("output"))
            for item in model.received()[-1]["input"]
            if item.get("type") == "function_call_output"
        ]
    return (workspace / "inside").exists(), outside.exists(), "".join(outputs)


def prepare(tmp_path: Path, setup: str) -> tuple[Path, dict[str, str]]:
    """The Codex binary and the environment of one setup."""
    binary = find_codex_binary()
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path / "tmp")}  # the test dir is not "temp"
    if setup == "codex home in the temp dir":
        env["TMPDIR"] = str(tmp_path)
    if setup == "no bubblewrap at all":
        # The same binary, hard-linked where no codex-resources/bwrap sits beside it, and a PATH
        # without bwrap: a Codex installed some other way, on a machine without the package.
        binary = tmp_path / "vendor" / "bin" / "codex"
        binary.parent.mkdir(parents=True)
        os.link(find_codex_binary(), binary)
        assert not bundled_bubblewrap(binary).exists()
        env["PATH"] = str(tmp_path / "vendor" / "no-bwrap-here")
    Path(env["TMPDIR"]).mkdir(exist_ok=True)
    return binary, env


@pytest.mark.parametrize("setup", ["as installed", "codex home in the temp dir", "no bubblewrap at all"])
async def test_doctor_reports_the_sandbox_as_codex_really_applies_it(tmp_path: Path, setup: str) -> None:
    """Whatever this machine has, `ally doctor` and a real turn agree on what a command can do."""
    binary, env = prepare(tmp_path, setup)
    codex_home = tmp_path / "codex-home"
    code, check = doctor_sandbox(
        tmp_path / "ally-home",
        WORK_ALLY_CODEX__BINARY=str(binary),
        WORK_ALLY_CODEX__HOME=str(codex_home),
        **env,
    )
    inside, outside, printed = await what_a_sandboxed_command_does(tmp_path, binary, codex_home, env)

    assert not outside  # never unconfined, in any of these setups
    confined = inside
    assert (check["status"] != "fail") == confined, (check, printed)
    assert (code == 1) == (not confined)
    system = shutil.which("bwrap", path=env["PATH"])
    if setup == "no bubblewrap at all":
        assert "refuses to run any command" in check["detail"] and "bubblewrap is unavailable" in printed
        assert "apt-get install bubblewrap" in check["fix"]
    elif setup == "codex home in the temp dir" and system:
        assert "sandbox helper" in check["detail"] and "outside the temporary directory" in check["fix"]
    elif system:
        assert (
            check["status"] == "ok" and f"workspace-write enforced (bubblewrap {system})" == check["detail"]
        )
    else:  # Codex's own copy: enforced, but Codex asks for the system package at every start
        assert check["status"] == "warn" and "bundled" in check["detail"] and "bubblewrap" in check["fix"]
