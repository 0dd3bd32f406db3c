"""Files out: a file of an assistant's workspace sent to its chat (`/file PATH`, a button on a
turn's final card), and the images a turn wrote shown on that card.

The workspace is on the assistant's host; the chat's channel is on its worker. The bytes travel in
chunks of at most `CHUNK_BYTES` from the host to the chat's worker through a short workflow of
their own (workflows/files.py), never through a conversation's or a turn's history
(docs/operations.md, "Files out").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from ally.contracts.chat import ChatRef

# One chunk is one activity result: Temporal refuses a payload over 2 MB and warns (server and SDK
# logs) over 512 KiB; a chunk and its payload's metadata stay just under that.
CHUNK_BYTES = 500 * 1024
# Feishu's own limits (docs/feishu-platform.md §4): a file message's file, an image message's image.
FILE_MAX_BYTES = 30 * 1024 * 1024
IMAGE_MAX_BYTES = 10 * 1024 * 1024
# Sent as an image (inline) rather than as a file: the types Feishu's image upload takes.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ico"})

FileKind = Literal["file", "image"]


class FileQuery(BaseModel):
    """One path a person asked for, as typed: relative to the workspace, or absolute inside it."""

    workspace: str
    path: str
    max_file_bytes: int = FILE_MAX_BYTES
    max_image_bytes: int = IMAGE_MAX_BYTES


class WorkspaceFile(BaseModel):
    """What the host found at a path: a file that may be sent, or why not (`refused`, in words)."""

    path: str  # absolute, symlinks resolved: what is read
    relative: str  # as the person knows it: relative to the workspace
    size: int = 0
    kind: FileKind = "file"
    sha256: str = ""
    refused: str | None = None


class FileChunkQuery(BaseModel):
    """One chunk of a file `inspect_file` accepted; the host checks the path again."""

    workspace: str
    path: str
    offset: int
    length: int


class FileRequest(BaseModel):
    """The input of a file's transfer (workflows/files.py), run on the chat's worker."""

    chat: ChatRef
    reply_to: str | None
    query: FileQuery
    host_queue: str  # the assistant's host: its pinned queue
    host: str  # its name, for the person (a terminal is told where the file is)
    idempotency_key: str
    purpose: Literal["send", "image_key"] = "send"  # image_key: upload only, for a card's image
    chunk_bytes: int = CHUNK_BYTES


class FileChunk(BaseModel):
    """One chunk on its way to the channel's spool, in this worker's process (a local activity)."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    transfer: str
    offset: int
    data: bytes


class FileDelivery(BaseModel):
    """A file the host accepted, for the channel: sent from the spool of `transfer` (None: no bytes
    were fetched, the channel only says where it is)."""

    chat: ChatRef
    reply_to: str | None
    file: WorkspaceFile
    host: str
    idempotency_key: str
    transfer: str | None = None
    purpose: Literal["send", "image_key"] = "send"


class FileSent(BaseModel):
    """How a transfer ended: sent (the message, or an image's key for a card), or refused."""

    message_id: str | None = None
    image_key: str | None = None
    refused: str | None = None
