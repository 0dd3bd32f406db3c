"""Workspace autosave on real git repositories: after a turn, what the turn changed is committed
locally, and nothing the person had left uncommitted, staged or ignored is swept into it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ally.autosave import FALLBACK_EMAIL, FALLBACK_NAME, commit_message, commit_turn_changes, snapshot
from ally.contracts import AutosaveRequest, Person

MESSAGE = "work-ally: a test turn\n\nSaved after turn turn:chat:m1.\n"
Change = Callable[[Path], None]


@pytest.fixture(autouse=True)
def _no_machine_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each repository here says who commits; the machine's own git config must not decide it."""
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(name, raising=False)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True)
    return done.stdout


def status(repo: Path) -> dict[str, str]:
    lines = git(repo, "status", "--porcelain=v1", "-uall").splitlines()
    return {line[3:]: line[:2] for line in lines}


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def commits(repo: Path) -> int:
    return int(git(repo, "rev-list", "--count", "HEAD"))


def in_commit(repo: Path, path: str, commit: str = "HEAD") -> str:
    return git(repo, "show", f"{commit}:{path}")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A project with two tracked files, a .gitignore, one commit, and an owner's identity."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Alice Owner")
    git(repo, "config", "user.email", "alice@example.com")
    (repo / "notes.md").write_text("notes v1\n")
    (repo / "app.py").write_text("print('v1')\n")
    (repo / ".gitignore").write_text("*.log\nbuild/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    return repo


def write(path: str, text: str) -> Change:
    def change(repo: Path) -> None:
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)

    return change


def delete(path: str) -> Change:
    return lambda repo: (repo / path).unlink()


def stage(path: str, text: str) -> Change:
    def change(repo: Path) -> None:
        write(path, text)(repo)
        git(repo, "add", "--", path)

    return change


@dataclass
class Case:
    person: list[Change]  # what the person left in the tree before the turn
    turn: list[Change]  # what the turn did
    committed: set[str]  # paths in the autosave commit
    left_out: set[str] = field(default_factory=set)
    after: dict[str, str] = field(default_factory=dict)  # `git status` afterwards: only the person's


CASES = {
    "a clean tree: the turn's new, edited and deleted files are one commit": Case(
        person=[],
        turn=[write("src/new.py", "new\n"), write("app.py", "print('v2')\n"), delete("notes.md")],
        committed={"src/new.py", "app.py", "notes.md"},
    ),
    "the person's unsaved edit is left out and stays uncommitted": Case(
        person=[write("notes.md", "notes: half-written\n")],
        turn=[write("app.py", "print('v2')\n")],
        committed={"app.py"},
        after={"notes.md": " M"},
    ),
    "a file both the person and the turn changed is left out, and said so": Case(
        person=[write("notes.md", "notes: half-written\n")],
        turn=[write("notes.md", "notes: half-written\nand the turn's line\n"), write("app.py", "v2\n")],
        committed={"app.py"},
        left_out={"notes.md"},
        after={"notes.md": " M"},
    ),
    "what the person staged stays staged and out of the commit": Case(
        person=[stage("notes.md", "notes v2, staged\n")],
        turn=[write("app.py", "print('v2')\n")],
        committed={"app.py"},
        after={"notes.md": "M "},
    ),
    "ignored files are never committed": Case(
        person=[],
        turn=[write("debug.log", "noise\n"), write("build/out.bin", "binary\n"), write("README.md", "hi\n")],
        committed={"README.md"},
    ),
    "a new file beside the person's untracked one in the same folder": Case(
        person=[write("drafts/mine.md", "mine\n")],
        turn=[write("drafts/turns.md", "the turn's\n")],
        committed={"drafts/turns.md"},
        after={"drafts/mine.md": "??"},
    ),
    "a file whose name looks like a pattern is committed alone": Case(
        person=[write("a1.txt", "the person's\n")],
        turn=[write("a?.txt", "the turn's\n")],
        committed={"a?.txt"},
        after={"a1.txt": "??"},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_autosave_commits_exactly_what_the_turn_changed(repo: Path, name: str) -> None:
    case = CASES[name]
    for change in case.person:
        change(repo)
    person_files = {path: (repo / path).read_bytes() for path in status(repo)}
    staged_before = git(repo, "diff", "--cached")
    start = head(repo)

    before = snapshot(repo)
    for change in case.turn:
        change(repo)
    result = commit_turn_changes(before, MESSAGE)

    assert result.commit is not None and result.commit == head(repo), result
    assert (set(result.committed), set(result.left_out)) == (case.committed, case.left_out)
    assert git(repo, "rev-parse", "HEAD^").strip() == start and commits(repo) == 2
    named = git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "HEAD").splitlines()
    assert set(named) == case.committed
    for path in case.committed:
        if (repo / path).exists():
            assert in_commit(repo, path) == (repo / path).read_text()
    assert status(repo) == case.after
    assert git(repo, "diff", "--cached") == staged_before
    for path, content in person_files.items():
        if path not in case.left_out:
            assert (repo / path).read_bytes() == content
    assert git(repo, "log", "-1", "--format=%B").strip() == MESSAGE.strip()


def test_a_turn_that_changed_nothing_makes_no_commit(repo: Path) -> None:
    write("notes.md", "the person's edit\n")(repo)
    before = snapshot(repo)
    result = commit_turn_changes(before, MESSAGE)
    assert (result.commit, result.skipped) == (None, "nothing_changed")
    assert commits(repo) == 1 and status(repo) == {"notes.md": " M"}


def test_a_turn_that_only_touched_the_persons_files_commits_nothing_and_names_them(repo: Path) -> None:
    write("notes.md", "the person's edit\n")(repo)
    before = snapshot(repo)
    write("notes.md", "the person's edit\nthe turn's line\n")(repo)
    result = commit_turn_changes(before, MESSAGE)
    assert (result.commit, result.skipped, result.left_out) == (None, "nothing_changed", ["notes.md"])
    assert commits(repo) == 1


def test_a_workspace_that_is_not_a_git_repository_gets_no_commit_and_a_reason(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    before = snapshot(plain)
    (plain / "new.txt").write_text("x\n")
    result = commit_turn_changes(before, MESSAGE)
    assert (result.commit, result.skipped) == (None, "not_a_repository")
    assert "not inside a git work tree" in result.detail
    assert not (plain / ".git").exists()


def test_a_repository_without_a_first_commit_is_left_alone(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    before = snapshot(fresh)
    (fresh / "new.txt").write_text("x\n")
    result = commit_turn_changes(before, MESSAGE)
    assert (result.commit, result.skipped) == (None, "no_commit_yet")
    assert subprocess.run(["git", "-C", str(fresh), "rev-parse", "-q", "--verify", "HEAD"]).returncode != 0


def test_a_commit_made_during_the_turn_stops_the_autosave(repo: Path) -> None:
    before = snapshot(repo)
    write("app.py", "v2\n")(repo)
    git(repo, "commit", "-q", "-am", "the person committed meanwhile")
    write("new.txt", "the turn's\n")(repo)
    result = commit_turn_changes(before, MESSAGE)
    assert (result.commit, result.skipped) == (None, "head_moved")
    assert "main at" in result.detail
    assert commits(repo) == 2 and status(repo) == {"new.txt": "??"}


def test_a_merge_in_progress_is_never_committed_into(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "side")
    write("app.py", "side\n")(repo)
    git(repo, "commit", "-q", "-am", "side")
    git(repo, "checkout", "-q", "main")
    write("app.py", "main\n")(repo)
    git(repo, "commit", "-q", "-am", "main")
    merge = subprocess.run(["git", "-C", str(repo), "merge", "-q", "side"], capture_output=True)
    assert merge.returncode != 0  # a conflict: the person is in the middle of a merge
    start = head(repo)
    before = snapshot(repo)
    write("new.txt", "the turn's\n")(repo)
    result = commit_turn_changes(before, MESSAGE)
    assert (result.commit, result.skipped) == (None, "operation_in_progress")
    assert "merge" in result.detail and head(repo) == start


def test_a_workspace_inside_a_repository_commits_only_its_own_folder(repo: Path) -> None:
    workspace = repo / "service"
    workspace.mkdir()
    before = snapshot(workspace)
    write("service/main.py", "inside\n")(repo)
    write("outside.txt", "outside\n")(repo)
    result = commit_turn_changes(before, MESSAGE)
    assert result.committed == ["service/main.py"]
    assert status(repo) == {"outside.txt": "??"}


def test_a_retried_autosave_finds_its_own_commit_and_makes_no_second(repo: Path) -> None:
    before = snapshot(repo)
    write("new.txt", "the turn's\n")(repo)
    first = commit_turn_changes(before, MESSAGE)
    again = commit_turn_changes(before, MESSAGE)
    assert first.commit is not None and again.commit == first.commit
    assert again.committed == ["new.txt"] and commits(repo) == 2


def test_the_repositorys_identity_signs_the_commit(repo: Path) -> None:
    before = snapshot(repo)
    write("new.txt", "x\n")(repo)
    commit_turn_changes(before, MESSAGE)
    assert git(repo, "log", "-1", "--format=%an <%ae> / %cn <%ce>").strip() == (
        "Alice Owner <alice@example.com> / Alice Owner <alice@example.com>"
    )


def test_without_an_identity_work_ally_signs_and_no_config_is_written(repo: Path) -> None:
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")
    config = (repo / ".git" / "config").read_text()
    before = snapshot(repo)
    write("new.txt", "x\n")(repo)
    result = commit_turn_changes(before, MESSAGE)
    assert result.commit is not None
    assert git(repo, "log", "-1", "--format=%an <%ae>").strip() == f"{FALLBACK_NAME} <{FALLBACK_EMAIL}>"
    assert (repo / ".git" / "config").read_text() == config


def test_a_failing_pre_commit_hook_does_not_run(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\ntouch hook-ran\nexit 1\n")
    hook.chmod(0o755)
    before = snapshot(repo)
    write("new.txt", "x\n")(repo)
    assert commit_turn_changes(before, MESSAGE).commit is not None
    assert not (repo / "hook-ran").exists()


def test_the_message_names_the_request_the_person_and_the_turn() -> None:
    request = AutosaveRequest(
        before=snapshot("/nonexistent"),
        turn_workflow_id="turn:oc_1:om_2",
        person=Person(id="ou_alice", name="Alice"),
        prompt="\n  Please   rename the config loader and update every caller of it in the package\nthanks",
        status="interrupted",
        assistant="default",
    )
    subject, blank, *body = commit_message(request).splitlines()
    assert subject == "work-ally: Please rename the config loader and update every caller of…"
    assert len(subject) <= len("work-ally: ") + 60 and blank == ""
    text = "\n".join(body)
    assert "Alice (ou_alice)" in text and "turn:oc_1:om_2" in text and "was stopped" in text
    assert "Work-Ally-Turn: turn:oc_1:om_2" in body


def test_a_repository_that_signs_its_commits_gets_a_signed_autosave_or_none(repo: Path) -> None:
    git(repo, "config", "commit.gpgSign", "true")
    git(repo, "config", "gpg.program", "false")  # a signer that refuses: no unsigned commit instead
    start = head(repo)
    before = snapshot(repo)
    write("new.txt", "x\n")(repo)
    result = commit_turn_changes(before, MESSAGE)
    assert (result.commit, result.skipped) == (None, "git_failed")
    assert "commit-tree" in result.detail
    assert head(repo) == start and status(repo) == {"new.txt": "??"}
