"""An assistant's persona: the `AGENTS.md` the project ships as a template, rendered for one assistant.

Codex reads `AGENTS.md` in a thread's cwd when the thread starts or is resumed, and gives it to the
model ahead of the conversation (docs/codex-app-server.md §13). The runtime host writes the persona
into a workspace that has none (`prepare_workspace`); a person's own file is never overwritten.
"""

from __future__ import annotations

import errno
import functools
from importlib import resources
from pathlib import Path

PERSONA_FILE = "AGENTS.md"
_PLACEHOLDER = "{name}"


@functools.cache
def template() -> str:
    """The persona template as shipped in the package, `{name}` not yet filled in (read once: every
    message resolves its chat's assistant, persona included)."""
    return resources.files("ally").joinpath("templates", PERSONA_FILE).read_text(encoding="utf-8")


def persona(name: str) -> str:
    """The persona of the assistant called `name`: the template with its name filled in."""
    if not name.strip():
        raise ValueError("an assistant's persona needs the assistant's name")
    # Not str.format: a person's template may hold braces of its own (code, JSON).
    return template().replace(_PLACEHOLDER, name.strip())


def prepare_workspace(cwd: Path, agents_md: str | None) -> bool:
    """Create the workspace `cwd` if missing and, given a persona, write it as `cwd/AGENTS.md`
    unless something of that name is there already. True when the persona was written.

    Raises OSError when the workspace cannot be created or written.
    """
    if cwd.exists() and not cwd.is_dir():
        # mkdir would say only "File exists", which tells the person nothing.
        raise NotADirectoryError(errno.ENOTDIR, "it is a file, not a directory", str(cwd))
    cwd.mkdir(parents=True, exist_ok=True)
    if agents_md is None:
        return False
    try:
        # "x": create only. Whatever exists under that name (the person's edited file, a symlink,
        # even a dangling one) is theirs and stays as it is, also against a concurrent writer.
        with (cwd / PERSONA_FILE).open("x", encoding="utf-8") as file:
            file.write(agents_md)
    except FileExistsError:
        return False
    return True
