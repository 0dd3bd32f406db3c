"""Workspace activities: the git side of autosave, and files sent out of the workspace (`/file`),
on the host that holds the workspace.

They run on the host's pinned queue beside the Codex activities, because the workspace is a
directory on that machine. Thin: ally/autosave.py does the work, in a thread (it runs `git`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio import activity

from ally import autosave, workspace_files
from ally.contracts import (
    AutosaveRequest,
    AutosaveResult,
    FileChunkQuery,
    FileQuery,
    SnapshotRequest,
    WorkspaceFile,
    WorkspaceSnapshot,
)
from ally.persona import prepare_workspace


class WorkspaceActivities:
    def __init__(self) -> None:
        # One at a time per workspace: a snapshot taken while another turn's autosave is between
        # its commit and its index refresh would see that turn's files as the person's.
        self.locks: dict[str, asyncio.Lock] = {}

    def pinned(self) -> list[Callable[..., Any]]:
        """The activities that must run where the workspace is."""
        return [self.snapshot_workspace, self.autosave_workspace, self.inspect_file, self.read_file_chunk]

    @activity.defn(name="snapshot_workspace")
    async def snapshot_workspace(self, request: SnapshotRequest) -> WorkspaceSnapshot:
        """Before an autosaved turn: which paths the person already has uncommitted."""
        async with self._lock(request.cwd):
            if request.agents_md is not None:
                await asyncio.to_thread(prepare_workspace, Path(request.cwd), request.agents_md)
            return await asyncio.to_thread(autosave.snapshot, request.cwd)

    @activity.defn(name="autosave_workspace")
    async def autosave_workspace(self, request: AutosaveRequest) -> AutosaveResult:
        """After the turn: commit what it changed, locally, and nothing the person had uncommitted."""
        async with self._lock(request.before.cwd):
            result = await asyncio.to_thread(
                autosave.commit_turn_changes, request.before, autosave.commit_message(request)
            )
        if result.skipped not in (None, "nothing_changed"):
            activity.logger.info("autosave committed nothing: %s", result.detail)
        return result

    @activity.defn(name="inspect_file")
    async def inspect_file(self, query: FileQuery) -> WorkspaceFile:
        """Files out: whether a path is a file of the workspace the chat may have, and its size."""
        return await asyncio.to_thread(workspace_files.inspect, query)

    @activity.defn(name="read_file_chunk")
    async def read_file_chunk(self, query: FileChunkQuery) -> bytes:
        """One chunk of a file `inspect_file` accepted: raw bytes, one binary payload (no JSON)."""
        return await asyncio.to_thread(workspace_files.read_chunk, query)

    def _lock(self, where: str) -> asyncio.Lock:
        return self.locks.setdefault(where, asyncio.Lock())
