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
        try:
            return find_codex_binary(install_root=real.parents[4])
        except CodexBinaryNotFound:
            return None
    return None
