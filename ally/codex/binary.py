"""Where the Codex native binary is, and which release it is.

We spawn the *native* binary, never `node_modules/.bin/codex`: on Node older than 22.15 that shim
spawns the native server as a child and forwards only SIGINT/SIGTERM/SIGHUP, so a SIGKILL of the
shim orphans a server that keeps the thread's writer lock (docs/codex-app-server.md §1).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from ally.codex.version import CODEX_VERSION

# <repo>/dev/codex holds the pinned npm install (dev/bootstrap). An installed package has no dev/:
# there the `codex` on PATH is used, installed with INSTALL_CODEX.
PINNED_INSTALL = Path(__file__).resolve().parents[2] / "dev" / "codex"
INSTALL_CODEX = f"npm install -g @openai/codex@{CODEX_VERSION}"
FIX_CODEX = f"install the pinned Codex: {INSTALL_CODEX} (in a clone: dev/bootstrap), or set [codex] binary"

# npm platform package and Rust target triple, as @openai/codex/bin/codex.js maps them.
_TARGETS: dict[tuple[str, str], tuple[str, str]] = {
    ("linux", "x64"): ("codex-linux-x64", "x86_64-unknown-linux-musl"),
    ("linux", "arm64"): ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
    ("darwin", "x64"): ("codex-darwin-x64", "x86_64-apple-darwin"),
    ("darwin", "arm64"): ("codex-darwin-arm64", "aarch64-apple-darwin"),
}
_ARCH_NAMES = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


class CodexBinaryNotFound(Exception):
    """No usable Codex native binary; the message says what to do next."""


def find_codex_binary(
    configured: Path | None = None, *, install_root: Path = PINNED_INSTALL, path: str | None = None
) -> Path:
    """The configured binary if given, else the pinned one inside `install_root` (a clone's
    dev/codex), else the native binary behind the `codex` on `path` (default: PATH)."""
    if configured is not None:
        configured = configured.expanduser()
        if not configured.is_file():
            raise CodexBinaryNotFound(
                f"codex.binary {configured} does not exist; fix codex.binary or unset it"
            )
        if not os.access(configured, os.X_OK):
            raise CodexBinaryNotFound(
                f"codex.binary {configured} is not executable; chmod +x it or unset codex.binary"
            )
        return configured
    found = pinned_binary(install_root) or codex_on_path(path)
    if found is None:
        raise CodexBinaryNotFound(
            f"Codex is not installed: no pinned install in {install_root} and no codex on PATH"
        )
    return found


def codex_command(configured: Path | None = None) -> str:
    """How to name Codex in a command the user is told to run."""
    try:
        return str(find_codex_binary(configured))
    except CodexBinaryNotFound:
        return "codex"


def pinned_binary(install_root: Path) -> Path | None:
    """The native binary of the npm install rooted at `install_root`, or None."""
    system, arch = sys.platform, _ARCH_NAMES.get(platform.machine().lower(), platform.machine())
    target = _TARGETS.get((system, arch))
    if target is None:
        return None
    package, triple = target
    modules = install_root / "node_modules" / "@openai"
    # The platform package is an optional npm dependency; the shim falls back to a vendor/ dir
    # inside @openai/codex itself, so do we.
    for vendor in (modules / package / "vendor", modules / "codex" / "vendor"):
        candidate = vendor / triple / "bin" / "codex"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def binary_version(path: Path, *, timeout: float = 10.0) -> str:
    """What `codex --version` prints, e.g. "codex-cli 0.169.0"."""
    done = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout.strip()


_NATIVE_MAGIC = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")  # ELF, Mach-O 64, universal


def codex_on_path(path: str | None = None) -> Path | None:
    """The native binary behind the `codex` on PATH, or None.

    That `codex` is usually npm's shim (a symlink to `…/node_modules/@openai/codex/bin/codex.js`),
    which we never spawn (see the module docstring): the native binary is looked up in the same
    install, as for the pinned one. A native `codex` (installed another way) is used as it is.
    """
    found = shutil.which("codex", path=path)
    if found is None:
        return None
    real = Path(found).resolve()
    try:
        with real.open("rb") as head:
            if head.read(4) in _NATIVE_MAGIC:
                return real
    except OSError:
        return None
    if real.parts[-5:] == ("node_modules", "@openai", "codex", "bin", "codex.js"):
        return pinned_binary(real.parents[4])
    return None
