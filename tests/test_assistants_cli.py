"""`ally assistants …` from a person's terminal: what it writes, what it refuses, and that the file
keeps what the person wrote in it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from ally.bindings import BindingsFile
from ally.config import load_config
from tests.test_config import run_ally, write_config

PERSONS_FILE = """# my settings: keep this comment
[codex]
model = "gpt-5.5"  # the one I pay for

[access]
approvers = ["ou_owner"]
"""


def test_add_list_show_rename_and_remove_an_assistant(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, PERSONS_FILE)
    workspace = tmp_path / "projects" / "api"

    added = run_ally(
        home, "assistants", "add", "backend", "--workspace", str(workspace), "--ceiling", "read_only"
    )
    assert added.returncode == 0, added.stderr
    assert workspace.is_dir()  # created, since it is on this host
    text = (home / "config.toml").read_text(encoding="utf-8")
    assert "# my settings: keep this comment" in text and "# the one I pay for" in text

    listed = run_ally(home, "assistants", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"default", "backend"}
    assert rows["default"]["default"] and not rows["backend"]["default"]
    assert rows["backend"]["settings"]["workspace"]["value"] == str(workspace)
    assert rows["backend"]["settings"]["model"] == {"value": "gpt-5.5", "source": "[codex]"}
    assert rows["backend"]["settings"]["ceiling"] == {"value": "read_only", "source": "[assistants.backend]"}

    renamed = run_ally(home, "assistants", "rename", "backend", "api")
    assert renamed.returncode == 0, renamed.stderr
    shown = run_ally(home, "assistants", "show", "API", "--json")
    assert json.loads(shown.stdout)["id"] == "backend"  # the id stays: chats and threads name it
    assert json.loads(shown.stdout)["name"] == "api"

    removed = run_ally(home, "assistants", "remove", "api")
    assert removed.returncode == 0, removed.stderr
    assert "backend" not in load_config(home / "config.toml", environ={}).assistants
    assert workspace.is_dir()  # the person's files are theirs


def test_remove_refuses_while_chats_are_bound_and_says_which(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, '[assistants.ops]\nname = "ops"\nchats = ["oc_config_group"]\n')
    assert run_ally(home, "assistants", "bind", "ops", "oc_bound_by_hand").returncode == 0
    refused = run_ally(home, "assistants", "remove", "ops")
    assert refused.returncode == 1
    assert "oc_config_group" in refused.stderr and "oc_bound_by_hand" in refused.stderr
    assert "--force" in refused.stderr
    assert "ops" in load_config(home / "config.toml", environ={}).assistants  # nothing changed

    forced = run_ally(home, "assistants", "remove", "ops", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "oc_bound_by_hand" in forced.stdout
    assert BindingsFile(home / "bindings.json").read().groups == {}


def test_mistakes_are_refused_with_a_clear_message_and_nothing_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, PERSONS_FILE)
    before = (home / "config.toml").read_text(encoding="utf-8")
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x", encoding="utf-8")
    cases = [
        (["assistants", "add", "default"], "already an assistant called 'default'"),
        (["assistants", "add", "two words"], "one word"),
        (["assistants", "add", "x", "--workspace", str(a_file)], "is not a directory"),
        (["assistants", "add", "y", "--workspace", str(tmp_path / "nope"), "--no-create"], "does not exist"),
        (["assistants", "rename", "ghost", "z"], "no assistant called 'ghost'"),
        (["assistants", "remove", "default"], "cannot be removed"),
        (["assistants", "bind", "default", "not-a-chat"], "not a chat id"),
        (["assistants", "show", "ghost"], "no assistant called 'ghost'"),
    ]
    for args, says in cases:
        result = run_ally(home, *args)
        assert result.returncode != 0, args
        assert says in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert (home / "config.toml").read_text(encoding="utf-8") == before
    assert not (tmp_path / "nope").exists()


def test_a_name_clash_with_another_assistant_is_refused_on_rename(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, '[assistants.a]\nname = "alpha"\n[assistants.b]\nname = "beta"\n')
    result = run_ally(home, "assistants", "rename", "alpha", "BETA")
    assert result.returncode == 1
    assert "already an assistant called 'BETA'" in result.stderr


def test_renaming_the_built_in_default_gives_it_a_table_of_its_own(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, PERSONS_FILE)
    assert run_ally(home, "assistants", "rename", "default", "me").returncode == 0
    raw = tomllib.loads((home / "config.toml").read_text(encoding="utf-8"))
    assert raw["assistants"]["default"] == {"name": "me"}
    assert raw["codex"]["model"] == "gpt-5.5"


def test_config_shows_each_assistants_settings_and_where_they_come_from(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, '[codex]\nsandbox = "read-only"\n[assistants.ops]\nmodel = "gpt-ops"\n')
    shown = run_ally(home, "config", "--json")
    assert shown.returncode == 0, shown.stderr
    ops = json.loads(shown.stdout)["assistants"]["ops"]
    assert ops["model"] == {"value": "gpt-ops", "source": "[assistants.ops]"}
    assert ops["sandbox"] == {"value": "read-only", "source": "[codex]"}
    text = run_ally(home, "config")
    assert "# assistant ops" in text.stdout and "<- [assistants.ops]" in text.stdout


def test_chat_with_an_assistant_that_does_not_exist_says_which_exist(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_config(home, '[assistants.ops]\nname = "ops"\n')
    result = run_ally(home, "chat", "--assistant", "ghost")
    assert result.returncode == 2
    assert "no assistant called 'ghost'" in result.stderr and "ops" in result.stderr


def test_every_assistants_command_has_help(tmp_path: Path) -> None:
    for command in ("add", "list", "show", "rename", "remove", "bind"):
        result = run_ally(tmp_path, "assistants", command, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout
