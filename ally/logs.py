"""`ally logs`: what the parts of `ally up` wrote, read from wherever they write it.

Every part's output goes to `<data dir>/logs/<part>.log` (the supervisor opens the file for each part
it starts, appending; the Codex child's stderr lands in the runtime worker's log). `ally up` itself
writes there too when a service manager runs it (`ally service install`). Following a file survives
its being truncated or replaced (logrotate's copytruncate, or a move and a new file).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from ally.config import data_dir

# The log of each part, in the order `ally up` starts them.
PARTS: dict[str, str] = {
    "supervisor": "`ally up` itself, when the service manager runs it (`ally service install`)",
    "temporal": "the embedded Temporal dev server",
    "demo-model": "the scripted model of `ally up --demo`",
    "runtime-worker": "the runtime worker, and the stderr of its Codex child",
    "gateway": "the Feishu gateway and the Feishu chats' workflows",
}
POLL_SECONDS = 0.25
_CHUNK = 64 * 1024


def log_file(part: str) -> Path:
    return data_dir() / "logs" / f"{part}.log"  # where the supervisor points each part's output


def unknown_part(part: str) -> str | None:
    """Why `part` is not a part, naming the parts; None when it is one."""
    if part in PARTS:
        return None
    return f"no part named {part!r}; the parts are: {', '.join(PARTS)}"


def _tail_offset(file: BinaryIO, count: int) -> int:
    """Where the last `count` lines of `file` start (read backwards from the end: logs grow large).
    A last line without its newline yet counts as a line."""
    end = file.seek(0, os.SEEK_END)
    if count <= 0:
        return end
    position, data = end, b""
    wanted = count + 1 if end and _last_byte(file, end) == b"\n" else count
    while position > 0 and data.count(b"\n") < wanted:
        step = min(_CHUNK, position)
        position -= step
        file.seek(position)
        data = file.read(step) + data
    newlines = [i for i, byte in enumerate(data) if byte == 0x0A]
    if len(newlines) < wanted:
        return 0
    return position + newlines[-wanted] + 1


def _last_byte(file: BinaryIO, end: int) -> bytes:
    file.seek(end - 1)
    return file.read(1)


def last_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of `path`."""
    with open(path, "rb") as file:
        file.seek(_tail_offset(file, count))
        return file.read().decode(errors="replace").splitlines()


class FollowedFile:
    """The last `last` lines of a file, then its new complete lines, each time `read_new` is called.

    Truncation (size below what was read) starts again at the top; a new file at the path (a
    different inode) is read from its start after the rest of the old one. A file that does not
    exist yet is read from its start once it does.
    """

    def __init__(self, path: Path, *, last: int) -> None:
        self.path = path
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._partial = b""
        self._open(last=last)

    def _open(self, *, last: int | None) -> None:
        try:
            file = open(self.path, "rb")  # noqa: SIM115 (held open across polls, closed in close())
        except FileNotFoundError:
            return
        self._file = file
        self._inode = os.fstat(file.fileno()).st_ino
        file.seek(0 if last is None else _tail_offset(file, last))

    def read_new(self) -> list[str]:
        if self._file is None:
            self._open(last=None)  # appeared since: all of it is new
            if self._file is None:
                return []
        data = self._file.read()
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        if current is not None and current.st_ino != self._inode:
            data += self._file.read()  # what was written to the old file before it moved
            self._file.close()
            self._open(last=None)
            if self._file is not None:
                data += self._file.read()
        elif current is not None and current.st_size < self._file.tell():
            self._file.seek(0)
            self._partial = b""
            data = self._file.read()
        return self._split(data)

    def _split(self, data: bytes) -> list[str]:
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [line.decode(errors="replace") for line in complete]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def follow(
    parts: Iterable[str],
    say: Callable[[str], None],
    *,
    last: int,
    labelled: bool,
    poll_seconds: float = POLL_SECONDS,
) -> None:
    """Print each part's last `last` lines, then lines as the parts write them, until interrupted
    (KeyboardInterrupt propagates)."""
    followed = {part: FollowedFile(log_file(part), last=last) for part in parts}
    width = max(len(part) for part in followed)
    try:
        while True:
            for part, file in followed.items():
                for line in file.read_new():
                    say(f"{part:<{width}} | {line}" if labelled else line)
            time.sleep(poll_seconds)
    finally:
        for file in followed.values():
            file.close()
