"""Where the Codex native binary is, and which release it is.

We spawn the *native* binary, never `node_modules/.bin/codex`: on Node older than 22.15 that shim
spawns the native server as a child and forwards only SIGINT/SIGTERM/SIGHUP, so a SIGKILL of the
shim orphans a server that keeps the thread's writer lock (notes/codex-app-server.md §1).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

# <repo>/dev/codex holds the pinned npm install (dev/bootstrap).
PINNED_INSTALL = Path(__file__).resolve().parents[2] / "dev" / "codex"

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


def find_codex_binary(configured: Path | None = None, *, install_root: Path = PINNED_INSTALL) -> Path:
    """The configured binary if given, else the pinned native binary inside `install_root`."""
    if configured is not None:
        path = configured.expanduser()
        if not path.is_file():
            raise CodexBinaryNotFound(f"codex.binary {path} does not exist; fix codex.binary or unset it")
        if not os.access(path, os.X_OK):
            raise CodexBinaryNotFound(
                f"codex.binary {path} is not executable; chmod +x it or unset codex.binary"
            )
        return path
    system, arch = sys.platform, _ARCH_NAMES.get(platform.machine().lower(), platform.machine())
    target = _TARGETS.get((system, arch))
    if target is None:
        raise CodexBinaryNotFound(
            f"no pinned Codex binary for {system}/{arch}; install codex yourself and set codex.binary"
        )
    package, triple = target
    modules = install_root / "node_modules" / "@openai"
    # The platform package is an optional npm dependency; the shim falls back to a vendor/ dir
    # inside @openai/codex itself, so do we.
    for vendor in (modules / package / "vendor", modules / "codex" / "vendor"):
        candidate = vendor / triple / "bin" / "codex"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise CodexBinaryNotFound(
        f"the pinned Codex binary is not installed (looked in {modules / package / 'vendor' / triple}); "
        "run dev/bootstrap, or set codex.binary"
    )


def binary_version(path: Path, *, timeout: float = 10.0) -> str:
    """What `codex --version` prints, e.g. "codex-cli 0.169.0"."""
    done = subprocess.run(
        [str(path), "--version"], capture_output=True, text=True, timeout=timeout, check=True
    )
    return done.stdout.strip()
