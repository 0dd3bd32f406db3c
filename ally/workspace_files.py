"""Which workspace file a person may have sent to their chat, and its bytes, read on the host.

Inside the workspace means inside it once every symlink is resolved: a link that points out is
out, and so is `..` that climbs out. Directories, missing paths and files over the chat's size
limit are refused, each with a sentence for the person (docs/operations.md, "Files out").
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ally.contracts import IMAGE_SUFFIXES, FileChunkQuery, FileQuery, WorkspaceFile


def inspect(query: FileQuery) -> WorkspaceFile:
    typed = query.path.strip()
    root = Path(os.path.realpath(Path(query.workspace).expanduser()))
    wanted = Path(typed).expanduser()
    candidate = wanted if wanted.is_absolute() else root / wanted
    resolved = Path(os.path.realpath(candidate))
    shown = typed or "."

    def refused(why: str, relative: str = shown) -> WorkspaceFile:
        return WorkspaceFile(path=str(resolved), relative=relative, refused=why)

    if not typed:
        return refused("Say which file: /file PATH (relative to the workspace).")
    if resolved != root and root not in resolved.parents:
        return refused(
            f"{shown} is outside the assistant's workspace ({root}); only files inside it are sent."
        )
    relative = str(resolved.relative_to(root))
    if not resolved.exists():
        return refused(f"There is no file {shown} in the workspace.", relative)
    if resolved.is_dir():
        return refused(f"{shown} is a directory; /file sends one file.", relative)
    if not resolved.is_file():
        return refused(f"{shown} is not a regular file.", relative)
    size = resolved.stat().st_size
    if size == 0:
        return refused(f"{shown} is empty; the chat takes no empty files.", relative)
    image = resolved.suffix.lower() in IMAGE_SUFFIXES and size <= query.max_image_bytes
    if size > query.max_file_bytes:
        return refused(
            f"{shown} is {_mb(size)}, over the chat's limit of {_mb(query.max_file_bytes)} for a file.",
            relative,
        )
    return WorkspaceFile(
        path=str(resolved),
        relative=relative,
        size=size,
        kind="image" if image else "file",
        sha256=_digest(resolved),
    )


def read_chunk(query: FileChunkQuery) -> bytes:
    """`length` bytes from `offset`; the path is checked again (it may have become a link since)."""
    checked = inspect(FileQuery(workspace=query.workspace, path=query.path, max_file_bytes=2**62))
    if checked.refused is not None:
        raise ValueError(checked.refused)
    with open(checked.path, "rb") as file:
        file.seek(query.offset)
        return file.read(query.length)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
