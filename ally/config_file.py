"""Changing config.toml in place, keeping what the person wrote, and writing it privately.

`ally setup` edits only the keys it sets: every other line (keys, comments, order) stays as it
was. A key already in the file with another value is kept unless the change is forced. After an
edit the new text is parsed again and must hold exactly the old values plus the changes; a file
too unusual to edit line by line (a key set as a dotted key or inline table) is refused with a
one-line reason instead of being rewritten. The file is written with mode 0600 (it holds the App
Secret) through a temporary file and a rename, so a crash never leaves half a config.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

Value = str | int | bool | list[str]
SECTION = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(#.*)?$")
TABLE_START = re.compile(r"^\s*\[")


class ConfigEditError(Exception):
    """The file cannot be edited safely; the message says what to do by hand."""


class Change(BaseModel):
    section: str
    key: str
    new: Value
    old: Value | None = None
    secret: bool = False

    @property
    def kind(self) -> Literal["add", "replace"]:
        return "add" if self.old is None else "replace"

    @property
    def name(self) -> str:
        return f"[{self.section}] {self.key}"

    def describe(self) -> str:
        """One line, a secret shown only as set."""
        new = "<new secret>" if self.secret else render(self.new)
        if self.old is None:
            return f"{self.name} = {new}"
        old = "<secret>" if self.secret else render(self.old)
        return f"{self.name}: {old} -> {new}"


class Plan(BaseModel):
    """What setup would write: `changes` go in; `kept` are the person's own values a change would
    replace, held back unless forced."""

    changes: list[Change] = []
    kept: list[Change] = []


def read_file(path: Path) -> tuple[str, dict[str, Any]]:
    """The file's text and its parsed content ("" and {} when there is no file yet)."""
    if not path.exists():
        return "", {}
    text = path.read_text(encoding="utf-8")
    return text, tomllib.loads(text)


def plan(current: dict[str, Any], wanted: list[Change], *, force: bool = False) -> Plan:
    """Compare `wanted` values with the file's. A list grows (the person's entries stay, new ones
    are appended); any other value already set differently is replaced only when `force`."""
    result = Plan()
    for change in wanted:
        section = current.get(change.section)
        old = section.get(change.key) if isinstance(section, dict) else None
        new = change.new
        if isinstance(new, list) and isinstance(old, list):
            new = old + [item for item in new if item not in old]
        if old == new:
            continue
        resolved = change.model_copy(update={"old": old, "new": new})
        if old is not None and not isinstance(new, list) and not force:
            result.kept.append(resolved)
        else:
            result.changes.append(resolved)
    return result


def apply(text: str, changes: list[Change]) -> str:
    """`text` with each change made in place (new keys at the end of their section, new sections at
    the end of the file); raises ConfigEditError unless the result parses to exactly what it should."""
    before = tomllib.loads(text) if text else {}
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for change in changes:
        lines = _set(lines, change)
    result = "".join(lines)
    expected = copy.deepcopy(before)
    for change in changes:
        expected.setdefault(change.section, {})[change.key] = change.new
    try:
        after = tomllib.loads(result)
    except tomllib.TOMLDecodeError:
        after = None
    if after != expected:
        names = ", ".join(change.name for change in changes)
        raise ConfigEditError(f"cannot change {names} in place; set it by hand")
    return result


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only (0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".toml")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def render(value: Value) -> str:
    """A TOML value: JSON's string escapes are valid TOML basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(item, ensure_ascii=False) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _set(lines: list[str], change: Change) -> list[str]:
    start, end = _section_span(lines, change.section)
    line = f"{change.key} = {render(change.new)}\n"
    if start is None:
        gap = ["\n"] if lines and lines[-1].strip() else []
        return [*lines, *gap, f"[{change.section}]\n", line]
    key = re.compile(rf"^\s*{re.escape(change.key)}\s*=")
    for index in range(start + 1, end):
        if key.match(lines[index]):
            stop = _value_end(lines, index, end)
            return [*lines[:index], line, *lines[stop:]]
    insert_at = end
    while insert_at > start + 1 and not lines[insert_at - 1].strip():
        insert_at -= 1
    return [*lines[:insert_at], line, *lines[insert_at:]]


def _section_span(lines: list[str], section: str) -> tuple[int | None, int]:
    start = None
    for index, line in enumerate(lines):
        if start is None:
            match = SECTION.match(line)
            if match and match.group(1) == section:
                start = index
        elif TABLE_START.match(line):
            return start, index
    return start, len(lines)


def _value_end(lines: list[str], index: int, end: int) -> int:
    """The line after the value that starts at `index` (multi-line arrays and strings included)."""
    for stop in range(index + 1, end + 1):
        try:
            tomllib.loads("".join(lines[index:stop]))
        except tomllib.TOMLDecodeError:
            continue
        return stop
    return index + 1
