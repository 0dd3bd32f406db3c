"""Workspace autosave: after a turn, commit what the turn changed in a git workspace, and none of
what the person had left uncommitted before it (docs/autosave.md tells the rules and why).

`snapshot` runs before the turn and notes every path that already differs from HEAD, with a hash
of its content; `commit_turn_changes` runs after it and commits only the paths that were clean
before and differ now. The commit is built in a temporary index, so what the person staged stays
staged and out of the commit; then only the committed paths are refreshed in the real index. Only
plumbing is used (`commit-tree`, `update-ref` with the old HEAD as the expected value), so no hook
runs and a concurrent commit is never overwritten. Nothing here pushes, and git's config is never
written. Plain `git` subprocesses, no Temporal: activities/workspace.py runs these on the host.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ally.contracts import AutosaveRequest, AutosaveResult, DirtyPath, WorkspaceSnapshot

GIT_TIMEOUT_S = 30.0
# The snapshot travels in the turn's history; past this many uncommitted paths it would weigh
# hundreds of kilobytes there, and such a tree (a build output not in .gitignore) is no place to
# guess from anyway.
MAX_DIRTY_PATHS = 2000
SUBJECT_CHARS = 60
# The identity of an autosave commit when the repository has none configured: for this commit
# only, through the environment; git's config is never written.
FALLBACK_NAME = "work-ally"
FALLBACK_EMAIL = "work-ally@localhost"
TURN_TRAILER = "Work-Ally-Turn"
PERSON_TRAILER = "Work-Ally-Person"
REFLOG_MESSAGE = "work-ally: autosave after a turn"
# What `git status` names each of these states by, and the file that says it is going on.
IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or `git am`",
    "BISECT_LOG": "a bisect",
}
_ENDED = {"completed": "completed", "interrupted": "was stopped", "failed": "failed"}


class GitFailed(Exception):
    """A git command that had to succeed did not."""

    def __init__(self, step: str, output: bytes) -> None:
        said = output.decode("utf-8", "replace").strip().splitlines()
        super().__init__(f"`git {step}` failed: {said[-1] if said else 'no message'}")


# --- before the turn -------------------------------------------------------------------------------


def snapshot(cwd: str | Path) -> WorkspaceSnapshot:
    """The workspace as the person left it: which paths already differ from HEAD, and how."""
    try:
        return _snapshot(Path(cwd))
    except GitFailed as failed:
        return WorkspaceSnapshot(cwd=str(cwd), skipped="git_failed", detail=str(failed))


def _snapshot(cwd: Path) -> WorkspaceSnapshot:
    where = WorkspaceSnapshot(cwd=str(cwd))
    if not cwd.is_dir():
        return where.model_copy(update={"skipped": "not_a_repository", "detail": f"{cwd} does not exist"})
    try:
        found = _git(
            cwd, "rev-parse", "--is-inside-work-tree", "--show-toplevel", "--show-prefix", check=False
        )
    except FileNotFoundError:
        return where.model_copy(
            update={"skipped": "not_a_repository", "detail": "git is not installed on this host"}
        )
    lines = found.stdout.decode().split("\n")
    if found.returncode != 0 or lines[0] != "true" or len(lines) < 3:
        detail = f"{cwd} is not inside a git work tree"
        return where.model_copy(update={"skipped": "not_a_repository", "detail": detail})
    top, prefix = Path(lines[1]), lines[2]
    where = where.model_copy(update={"top": str(top), "prefix": prefix})
    head, branch = _head(top)
    where = where.model_copy(update={"head": head, "branch": branch})
    if head is None:
        detail = "the repository has no commit yet; make a first commit and autosave builds on it"
        return where.model_copy(update={"skipped": "no_commit_yet", "detail": detail})
    if (going_on := _in_progress(top)) is not None:
        detail = f"{going_on} is in progress in the repository"
        return where.model_copy(update={"skipped": "operation_in_progress", "detail": detail})
    statuses = _status(top, prefix)
    if len(statuses) > MAX_DIRTY_PATHS:
        detail = (
            f"{len(statuses)} files were uncommitted before the turn (more than {MAX_DIRTY_PATHS}); "
            "commit them or list them in .gitignore"
        )
        return where.model_copy(update={"skipped": "too_many_uncommitted", "detail": detail})
    dirty = {
        _shown(path): DirtyPath(status=status, digest=_digest(top / path))
        for path, status in statuses.items()
    }
    return where.model_copy(update={"dirty": dirty})


# --- after the turn --------------------------------------------------------------------------------


def commit_turn_changes(before: WorkspaceSnapshot, message: str) -> AutosaveResult:
    """Commit the paths that were clean before the turn and differ now; leave everything else
    (the person's uncommitted and staged work, ignored files) as it is."""
    if before.skipped is not None or before.top is None or before.head is None:
        return AutosaveResult(skipped=before.skipped or "not_a_repository", detail=before.detail)
    try:
        return _commit(before, message)
    except GitFailed as failed:
        return AutosaveResult(skipped="git_failed", detail=str(failed))
    except FileNotFoundError:
        return AutosaveResult(skipped="not_a_repository", detail="git is not installed on this host")


def _commit(before: WorkspaceSnapshot, message: str) -> AutosaveResult:
    assert before.top is not None and before.head is not None
    top = Path(before.top)
    if not top.is_dir():
        return AutosaveResult(skipped="not_a_repository", detail=f"{top} is gone")
    head, branch = _head(top)
    if (head, branch) != (before.head, before.branch):
        if (saved := _saved_already(top, before, message)) is not None:
            return saved  # a retry of this very autosave, whose first attempt had committed
        return AutosaveResult(skipped="head_moved", detail=_how_head_moved(before, head, branch))
    if (going_on := _in_progress(top)) is not None:
        return AutosaveResult(skipped="operation_in_progress", detail=f"{going_on} began during the turn")
    changed: list[str] = []
    left_out: list[str] = []
    for path, status in _status(top, before.prefix).items():
        was = before.dirty.get(_shown(path))
        if was is None:
            changed.append(path)
        elif (was.status, was.digest) != (status, _digest(top / path)):
            left_out.append(_shown(path))
    if not changed:
        detail = (
            "the turn changed only files that had uncommitted changes before it"
            if left_out
            else "the turn changed no file"
        )
        return AutosaveResult(skipped="nothing_changed", left_out=left_out, detail=detail)
    tree = _tree_with(top, before.head, changed)
    if tree == _out(top, "rev-parse", f"{before.head}^{{tree}}"):
        return AutosaveResult(
            skipped="nothing_changed", left_out=left_out, detail="the turn changed no content"
        )
    sign = ["-S"] if _signs_commits(top) else []  # commit-tree itself ignores commit.gpgSign
    commit = _out(
        top,
        "commit-tree",
        tree,
        "-p",
        before.head,
        *sign,
        "-F",
        "-",
        input=message.encode(),
        env=_identity(top),
    )
    _out(top, "update-ref", "-m", REFLOG_MESSAGE, "HEAD", commit, before.head)
    return AutosaveResult(
        commit=commit,
        committed=[_shown(p) for p in changed],
        left_out=left_out,
        detail=_refresh_index(top, changed),
    )


def _saved_already(top: Path, before: WorkspaceSnapshot, message: str) -> AutosaveResult | None:
    """HEAD is this autosave's own commit: an attempt that committed and then lost its answer."""
    parent = _git(top, "rev-parse", "-q", "--verify", "HEAD^1", check=False)
    if parent.returncode != 0 or parent.stdout.decode().strip() != before.head:
        return None
    if _out(top, "log", "-1", "--format=%B", "HEAD").strip() != message.strip():
        return None
    commit = _out(top, "rev-parse", "HEAD")
    named = _git(top, "diff-tree", "--no-commit-id", "--name-only", "--no-renames", "-r", "-z", "HEAD").stdout
    paths = [p for p in named.decode("utf-8", "surrogateescape").split("\0") if p]
    return AutosaveResult(
        commit=commit, committed=[_shown(p) for p in paths], detail=_refresh_index(top, paths)
    )


def _how_head_moved(before: WorkspaceSnapshot, head: str | None, branch: str | None) -> str:
    def name(commit: str | None, ref: str | None) -> str:
        short = commit[:7] if commit else "no commit"
        return f"{ref.removeprefix('refs/heads/')} at {short}" if ref else f"detached at {short}"

    return (
        f"HEAD moved during the turn ({name(before.head, before.branch)} -> {name(head, branch)}): "
        "someone committed or switched branches, so the turn's changes were left uncommitted"
    )


def _tree_with(top: Path, head: str, paths: list[str]) -> str:
    """HEAD's tree plus `paths` as they are in the working tree, built in a temporary index so
    the person's own index (what they staged) is never read into the commit or changed."""
    with tempfile.TemporaryDirectory(prefix="work-ally-autosave-") as scratch:
        index = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        _out(top, "read-tree", head, env=index)
        # --remove: a path the turn deleted leaves the tree. The paths come from `git status`,
        # which never lists an ignored file that is not tracked.
        _out(top, "update-index", "--add", "--remove", "-z", "--stdin", input=_nul(paths), env=index)
        return _out(top, "write-tree", env=index)


def _refresh_index(top: Path, paths: list[str]) -> str:
    """Make the real index agree with the new commit for the committed paths only: they were
    clean before the turn, so this loses nothing of the person's. Returns what went wrong, if any."""
    done = _git(
        top,
        "--literal-pathspecs",
        "reset",
        "-q",
        "HEAD",
        "--pathspec-from-file=-",
        "--pathspec-file-nul",
        input=_nul(paths),
        check=False,
    )
    if done.returncode == 0:
        return ""
    said = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return (
        "committed, but git's index could not be updated for those files "
        f"({said[-1] if said else 'no message'}); `git reset -q -- <file>` makes them show as unchanged"
    )


# --- the commit message ----------------------------------------------------------------------------


def commit_message(request: AutosaveRequest) -> str:
    """First line: what was asked; body: who asked, in which turn, how it ended; trailers for
    `git log --grep` and tools."""
    person = request.person
    who = f"{person.name} ({person.id})" if person.name else person.id
    ended = _ENDED.get(request.status, request.status)
    return (
        f"work-ally: {_subject(request.prompt)}\n"
        "\n"
        f"Saved after turn {request.turn_workflow_id} of assistant {request.assistant}, "
        f"asked by {who}; the turn {ended}.\n"
        "\n"
        f"{TURN_TRAILER}: {request.turn_workflow_id}\n"
        f"{PERSON_TRAILER}: {who}\n"
    )


def _subject(prompt: str) -> str:
    line = next((" ".join(line.split()) for line in prompt.splitlines() if line.strip()), "")
    if not line:
        return "a turn without text"
    if len(line) <= SUBJECT_CHARS:
        return line
    cut = line[: SUBJECT_CHARS - 1]
    words = cut.rsplit(" ", 1)[0]  # at a word's end, unless that leaves little
    return (words if len(words) > SUBJECT_CHARS // 2 else cut).rstrip() + "…"


# --- git -------------------------------------------------------------------------------------------


def _git(
    where: Path,
    *args: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    # No optional locks: `git status` would otherwise write the person's index as it refreshes it.
    # No prompts: nobody is at this process's terminal.
    environment = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=environment,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GitFailed(args[0], f"no answer within {GIT_TIMEOUT_S:.0f} s".encode()) from None
    if check and done.returncode != 0:
        raise GitFailed(next((a for a in args if not a.startswith("-")), "?"), done.stderr)
    return done


def _out(where: Path, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> str:
    return _git(where, *args, input=input, env=env).stdout.decode().strip()


def _head(top: Path) -> tuple[str | None, str | None]:
    commit = _git(top, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
    branch = _git(top, "symbolic-ref", "-q", "HEAD", check=False)
    named_commit = commit.stdout.decode().strip() if commit.returncode == 0 else ""
    named_branch = branch.stdout.decode().strip() if branch.returncode == 0 else ""
    return named_commit or None, named_branch or None


def _in_progress(top: Path) -> str | None:
    args = [arg for name in IN_PROGRESS for arg in ("--git-path", name)]
    paths = _out(top, "rev-parse", *args).splitlines()
    for name, path in zip(IN_PROGRESS, paths, strict=True):
        if (top / path).exists():
            return IN_PROGRESS[name]
    return None


def _status(top: Path, prefix: str) -> dict[str, str]:
    """Every path under `prefix` that differs from HEAD (in the index or the working tree), by its
    path from the top, with the two letters of `git status --porcelain`. Untracked files are
    listed one by one, so a new file in a directory the person had left untracked is told apart
    from theirs; ignored files are not listed at all. A nested repository (listed as `dir/`) is
    never anyone's to commit here."""
    listed = _git(
        top,
        "--literal-pathspecs",
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=all",
        "--no-renames",
        "--",
        prefix or ".",
    ).stdout
    statuses: dict[str, str] = {}
    for entry in listed.decode("utf-8", "surrogateescape").split("\0"):
        if len(entry) > 3 and not entry.endswith("/"):
            statuses[entry[3:]] = entry[:2]
    return statuses


def _digest(path: Path) -> str | None:
    """What the working-tree file is: its content, and whether it is a link or executable."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    hashed = hashlib.sha256()
    if stat.S_ISLNK(info.st_mode):
        hashed.update(b"link\0" + os.fsencode(os.readlink(path)))
    elif stat.S_ISREG(info.st_mode):
        hashed.update(b"exec\0" if info.st_mode & stat.S_IXUSR else b"file\0")
        with path.open("rb") as content:
            while chunk := content.read(1 << 20):
                hashed.update(chunk)
    else:
        hashed.update(b"other\0")
    return hashed.hexdigest()[:16]


def _identity(top: Path) -> dict[str, str]:
    """The repository's own identity when it has one (config or the environment), else work-ally's,
    for this one commit."""
    for ident in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        if _git(top, "-c", "user.useConfigOnly=true", "var", ident, check=False).returncode != 0:
            return {
                "GIT_AUTHOR_NAME": FALLBACK_NAME,
                "GIT_AUTHOR_EMAIL": FALLBACK_EMAIL,
                "GIT_COMMITTER_NAME": FALLBACK_NAME,
                "GIT_COMMITTER_EMAIL": FALLBACK_EMAIL,
            }
    return {}


def _shown(path: str) -> str:
    """A path as text that can cross Temporal (JSON): a name that is not UTF-8 gets escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _signs_commits(top: Path) -> bool:
    asked = _git(top, "config", "--type=bool", "commit.gpgSign", check=False)
    return asked.returncode == 0 and asked.stdout.decode().strip() == "true"


def _nul(paths: list[str]) -> bytes:
    return b"".join(os.fsencode(p) + b"\0" for p in paths)
