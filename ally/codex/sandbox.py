"""Does Codex's sandbox confine the commands it runs here? Found out by running one in it.

On Linux Codex confines a command with bubblewrap: the system's `bwrap` on PATH if there is one,
else the copy it ships next to its native binary (`codex-resources/bwrap`; Codex then logs an
error at every start asking for the system package). With neither, Codex refuses to run any
command at all rather than run it unconfined. With the system `bwrap`, Codex starts its sandbox
helper from links it makes under CODEX_HOME, and it makes none when CODEX_HOME is inside the
temporary directory: then every sandboxed command fails (docs/operations.md, "The sandbox").
Whatever the cause, the probe below reports what a command in the sandbox can actually do, via
`codex sandbox`, which confines a command exactly as the app server does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pydantic import BaseModel

PROBE_TIMEOUT_S = 30.0
NO_BUBBLEWRAP = "bubblewrap is unavailable"  # Codex's own words when it has none to use
NO_HELPER = "execvp codex-linux-sandbox"  # bwrap's, when Codex made no helper links


class SandboxProbe(BaseModel):
    confined: bool  # the command ran, wrote in its workspace (when the mode allows) and nowhere else
    wrote_outside: bool
    no_bubblewrap: bool
    no_helper: bool  # the system bwrap found no Codex sandbox helper (CODEX_HOME in the temp dir)
    bubblewrap: str | None  # the system bwrap Codex uses; None: its bundled copy (or none)
    bundled: bool  # a bwrap ships next to this Codex binary
    output: str = ""


def bundled_bubblewrap(binary: Path) -> Path:
    """Where the npm package puts its bwrap: <vendor>/<triple>/codex-resources/bwrap, beside bin/."""
    return binary.resolve().parent.parent / "codex-resources" / "bwrap"


def probe_sandbox(
    binary: Path, mode: str, codex_home: Path, *, env: dict[str, str] | None = None
) -> SandboxProbe:
    """Run one command in the `mode` sandbox, with the CODEX_HOME the runtime uses: write a file
    in its workspace, then one beside it. /tmp is taken out of the writable places so that a probe
    under /tmp still tells the truth."""
    environment = dict(os.environ if env is None else env)
    codex_home.mkdir(parents=True, exist_ok=True)  # as the runtime worker does
    with tempfile.TemporaryDirectory(prefix="ally-sandbox-probe-") as scratch:
        root = Path(scratch)
        workspace, home = root / "workspace", codex_home
        workspace.mkdir()
        inside, outside = workspace / "inside", root / "outside"
        script = f"echo in > '{inside}'; echo out > '{outside}'; exit 0"
        command = [
            str(binary),
            "sandbox",
            "-c",
            f'sandbox_mode="{mode}"',
            "-c",
            "sandbox_workspace_write.exclude_slash_tmp=true",
            "-c",
            "sandbox_workspace_write.exclude_tmpdir_env_var=true",
            "--",
            "/bin/sh",
            "-c",
            script,
        ]
        try:
            done = subprocess.run(
                command,
                cwd=workspace,
                env={**environment, "CODEX_HOME": str(home)},
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_S,
            )
            output = (done.stdout + done.stderr).strip()
            ran = done.returncode == 0
        except (OSError, subprocess.TimeoutExpired) as error:
            output, ran = str(error), False
        wrote_inside, wrote_outside = inside.exists(), outside.exists()
    system = shutil.which("bwrap", path=environment.get("PATH"))
    lines = [line for line in output.splitlines() if line.strip() and "helper binaries" not in line]
    return SandboxProbe(
        confined=ran and not wrote_outside and (wrote_inside or mode == "read-only"),
        wrote_outside=wrote_outside,
        no_bubblewrap=NO_BUBBLEWRAP in output,
        no_helper=NO_HELPER in output,
        bubblewrap=system,
        bundled=bundled_bubblewrap(binary).is_file(),
        output=lines[-1][:300] if lines else "",
    )
