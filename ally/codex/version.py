"""The Codex release work-ally is pinned to, and how to tell whether a binary is that release.

`ally/codex/protocol.py` is generated from this release's own schema (dev/regen_protocol), so a
different binary may speak a protocol the models do not describe. Bump it together with
dev/codex/package.json and a regenerated protocol.py.
"""

from __future__ import annotations

CODEX_VERSION = "0.169.0"


def version_mismatch(reported: str) -> str | None:
    """Why `reported` (the output of `codex --version`, e.g. "codex-cli 0.169.0") is not the pin, or None."""
    words = reported.split()
    if CODEX_VERSION in words:
        return None
    found = words[-1] if words else "(no version printed)"
    return (
        f"codex binary is {found}, but work-ally is pinned to {CODEX_VERSION}; "
        f"install the pinned one (npm install -g @openai/codex@{CODEX_VERSION}, or dev/bootstrap in a clone) "
        "and unset codex.binary"
    )
