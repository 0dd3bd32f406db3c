"""Workspace autosave: what the runtime host saw of a git workspace before a turn, and what it
committed after it (ally/autosave.py does the git side; docs/autosave.md says how it decides).

The snapshot is carried by the turn's history from before the turn to after it, so it lists only
the paths that were already uncommitted (a few, in a workspace under git), each with a short hash
of its content, never the content itself.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ally.contracts.agent import Person

# Why a turn's changes were not committed (the sentence for people is in `detail`).
SkipReason = Literal[
    "not_a_repository",  # the workspace is not inside a git work tree (or git is missing)
    "no_commit_yet",  # a repository without a first commit: nothing to build on
    "operation_in_progress",  # a merge, rebase, cherry-pick, revert or bisect is going on
    "too_many_uncommitted",  # so many uncommitted paths before the turn that the snapshot would not fit
    "head_moved",  # HEAD (or the branch) changed during the turn: someone committed or switched
    "nothing_changed",  # the turn changed no file that was committed-clean before it
    "git_failed",  # git refused a step; `detail` says which and why
    "host_unavailable",  # the workspace's host could not run autosave (no answer, or too old to have it)
]


class DirtyPath(BaseModel):
    """A path that differed from HEAD before the turn: the person's, never the turn's to commit."""

    status: str  # the two letters of `git status --porcelain`, e.g. " M", "A ", "??"
    digest: str | None  # a hash of the working-tree file (content, kind, exec bit); None = missing


class WorkspaceSnapshot(BaseModel):
    cwd: str
    top: str | None = None  # the work tree's root; None = not in a git work tree
    prefix: str = ""  # the workspace inside the work tree ("" = its root): nothing outside is saved
    head: str | None = None  # the commit HEAD named; None = no commit yet
    branch: str | None = None  # the branch HEAD pointed at; None = detached
    dirty: dict[str, DirtyPath] = {}  # by path relative to `top`
    skipped: SkipReason | None = None  # set when no commit can follow this snapshot
    detail: str = ""


class SnapshotRequest(BaseModel):
    cwd: str
    # The assistant's persona, written (if the workspace has none) before the snapshot, so that a
    # new assistant's AGENTS.md is not taken for the first turn's work.
    agents_md: str | None = None


class AutosaveRequest(BaseModel):
    """What the turn knows and the commit message names."""

    before: WorkspaceSnapshot
    turn_workflow_id: str
    person: Person
    prompt: str
    status: str  # how the turn ended: completed | interrupted | failed
    assistant: str


class AutosaveResult(BaseModel):
    commit: str | None = None  # the new commit; None = nothing committed
    committed: list[str] = []  # paths relative to the work tree's root
    # Changed during the turn but already uncommitted before it: the person's edit and the turn's
    # cannot be told apart, so these stay uncommitted, as the person left them plus the turn's edit.
    left_out: list[str] = []
    skipped: SkipReason | None = None
    detail: str = ""  # why nothing was committed; or, with a commit, a step after it that failed
