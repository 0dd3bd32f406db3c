"""Routine files and `ally routines apply`: files are the versioned truth, apply makes the schedules
match them and says what it did; a second apply changes nothing and says so; a bad file is one clear
line naming the file and the key. Real dev server; no run is due during the test."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client, ScheduleActionStartWorkflow

from ally import names, routines
from ally.contracts import RoutineRun
from tests.routine_helpers import ally, unique
from tests.test_config import write_config

CONFIG = """[access]
approvers = ["ou_owner"]
"""


def routine_file(home: Path, name: str, prompt: str) -> Path:
    path = home / "routines" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'prompt = "{prompt}"\ncron = "0 9 1 1 *"\ntime_zone = "Asia/Shanghai"\n'
        'chat = "oc_team"\nchat_type = "group"\n',
        encoding="utf-8",
    )
    return path


async def test_apply_creates_then_changes_nothing_then_updates_what_a_file_changed(
    client: Client, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    write_config(home, CONFIG)
    name = unique("weekly")
    routine_file(home, name, "Write the weekly report.")
    try:
        first = await ally(client, home, "routines", "apply")
        assert first.exit_code == 0, first.output
        assert f"{name}: created" in first.output
        handle = client.get_schedule_handle(names.routine_schedule_id(name))
        described = await handle.describe()
        assert described.schedule.spec.time_zone_name == "Asia/Shanghai"

        again = await ally(client, home, "routines", "apply")
        assert again.exit_code == 0, again.output
        assert f"{name}: unchanged" in again.output
        assert "Nothing to change" in again.output

        # Paused by hand: apply keeps that, while it brings the prompt up to date.
        assert (await ally(client, home, "routines", "pause", name)).exit_code == 0
        routine_file(home, name, "Write the weekly report, in three lines.")
        changed = await ally(client, home, "routines", "apply")
        assert f"{name}: updated" in changed.output, changed.output
        described = await handle.describe()
        assert described.schedule.state.paused
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        run = RoutineRun.model_validate((await client.data_converter.decode([action.args[0]]))[0])
        assert run.prompt == "Write the weekly report, in three lines." and run.mode == "read_only"
        assert run.approvers == ["ou_owner"] and run.chat.chat_type == "group"
        assert "unchanged" in (await ally(client, home, "routines", "apply")).output

        listed = await ally(client, home, "routines", "list", "--json")
        assert name in listed.output
    finally:
        await routines.remove(client, name)


async def test_a_bad_routine_file_is_refused_with_the_file_and_the_key(
    client: Client, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    write_config(home, CONFIG)
    folder = home / "routines"
    folder.mkdir(parents=True)
    (folder / "late.toml").write_text('prompt = "x"\nchat = "oc_a"\nevery = "soon"\n', encoding="utf-8")
    (folder / "twice.toml").write_text('prompt = "x"\nchat = "oc_a"\nevery = "5m"\ncron = "* * * * *"\n')
    (folder / "typo.toml").write_text('prompt = "x"\nchat = "oc_a"\nevery = "5m"\nprompts = "y"\n')
    (folder / "nobody.toml").write_text('prompt = "x"\nchat = "oc_a"\nevery = "5m"\nassistant = "ghost"\n')
    refused = await ally(client, home, "routines", "apply")
    assert refused.exit_code == 2
    assert "late.toml: every: 'soon' is not a duration like 30s, 5m, 2h or 1d" in refused.output
    assert "twice.toml: give exactly one of cron or every" in refused.output
    assert "typo.toml: prompts: unknown key" in refused.output
    assert "Error" not in refused.output and "Traceback" not in refused.output
    (folder / "late.toml").unlink()
    (folder / "twice.toml").unlink()
    (folder / "typo.toml").unlink()
    unknown = await ally(client, home, "routines", "apply")
    assert unknown.exit_code == 2 and "no assistant called 'ghost'" in unknown.output
