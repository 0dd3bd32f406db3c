"""The persona a new assistant's workspace gets: the shipped template, and how it is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from ally.persona import PERSONA_FILE, persona, prepare_workspace, template


def test_the_shipped_persona_names_the_assistant_and_says_how_it_works_from_a_phone() -> None:
    assert "{name}" in template()
    text = persona("Tess")
    assert "{name}" not in text and text.startswith("# Tess\n")
    assert "You are Tess" in text
    assert "phone" in text and "Short" in text
    assert "Ask first" in text and "destructive" in text


def test_a_persona_needs_a_name_and_keeps_other_braces_as_they_are() -> None:
    with pytest.raises(ValueError, match="name"):
        persona("  ")
    assert persona("{x}").startswith("# {x}\n")  # filled in once, nothing re-read as a placeholder


def test_a_missing_workspace_is_created_with_the_persona(tmp_path: Path) -> None:
    workspace = tmp_path / "a" / "b"
    assert prepare_workspace(workspace, persona("Tess"))
    assert (workspace / PERSONA_FILE).read_text(encoding="utf-8") == persona("Tess")
    assert not prepare_workspace(workspace, "another persona")
    assert (workspace / PERSONA_FILE).read_text(encoding="utf-8") == persona("Tess")


def test_whatever_the_person_has_under_that_name_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / PERSONA_FILE).symlink_to(tmp_path / "nowhere.md")  # dangling: still theirs
    assert not prepare_workspace(tmp_path, persona("Tess"))
    assert not (tmp_path / "nowhere.md").exists()
    bare = tmp_path / "bare"
    assert not prepare_workspace(bare, None)
    assert bare.is_dir() and list(bare.iterdir()) == []


def test_a_workspace_path_that_is_a_file_is_an_error_the_host_reports(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(NotADirectoryError, match="it is a file, not a directory"):
        prepare_workspace(tmp_path / "taken", persona("Tess"))
    assert (tmp_path / "taken").read_text() == "a file"
