"""Which assistant each chat talks to, as chosen in the chats: `/bind NAME` in a group, `/assistant
NAME` in a private chat. Kept in `bindings.json` in the data dir, beside config.toml (which holds the
bindings written by hand, `[assistants.<id>] chats`).

Bindings name an assistant by its id, which a rename does not change, so a renamed assistant keeps
its chats and their threads. The gateway writes the file; `ally assistants` reads it and, on
`remove --force`, rewrites it. Every write goes through a temporary file and a rename, so a crash
never leaves half a file, and a file that cannot be read is an error, never silently empty (that
would move every chat back to the default assistant).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from ally.config import data_dir


class BindingsError(Exception):
    """bindings.json cannot be read; the message says where and why."""


class Bindings(BaseModel):
    groups: dict[str, str] = {}  # group chat id -> assistant id, from /bind
    private: dict[str, str] = {}  # private chat id -> assistant id, from /assistant NAME

    def chats_of(self, assistant_id: str) -> list[str]:
        return sorted(
            chat for table in (self.groups, self.private) for chat, a in table.items() if a == assistant_id
        )


def bindings_path() -> Path:
    return data_dir() / "bindings.json"


class BindingsFile:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or bindings_path()

    def read(self) -> Bindings:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Bindings()
        try:
            return Bindings.model_validate_json(text)
        except ValidationError as error:
            raise BindingsError(
                f"{self.path}: not a bindings file ({error.errors()[0]['msg']}); fix or remove it"
            ) from None

    def bind(self, table: Literal["groups", "private"], chat_id: str, assistant_id: str) -> None:
        bindings = self.read()
        getattr(bindings, table)[chat_id] = assistant_id
        self._write(bindings)

    def forget(self, assistant_id: str) -> list[str]:
        """Drop every binding to `assistant_id`; returns the chats that had one."""
        bindings = self.read()
        chats = bindings.chats_of(assistant_id)
        bindings.groups = {c: a for c, a in bindings.groups.items() if a != assistant_id}
        bindings.private = {c: a for c, a in bindings.private.items() if a != assistant_id}
        self._write(bindings)
        return chats

    def _write(self, bindings: Bindings) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".bindings-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(bindings.model_dump(), file, indent=2, sort_keys=True)
                file.write("\n")
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
