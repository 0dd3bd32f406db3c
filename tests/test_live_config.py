"""The gateway's configuration follows config.toml as it is edited (ally/routing.py `LiveConfig`)."""

from __future__ import annotations

import os
from pathlib import Path

from ally.assistant_admin import rename
from ally.assistants import find
from ally.config import load_config
from ally.routing import LiveConfig


def test_a_rename_right_after_another_edit_of_the_same_size_still_reaches_the_gateway(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[assistants.ops]\nname = "Ops"\n', encoding="utf-8")
    live = LiveConfig(load_config(path, environ={}), path=path)
    # Two renames within one tick of the file system's clock, each leaving the file the same size:
    # the gateway reads the first before the second lands, as it would between two messages.
    rename(path, "Ops", "Dev")
    assert find(live.current(), "Dev") is not None
    first = os.stat(path)
    rename(path, "Dev", "Web")
    # A file written through a temporary file and a rename gets the file system's coarse clock:
    # measured here, a second write within the same tick keeps the first one's mtime (and, with a
    # name as long as the old one, its size). Set, so that the test does not depend on the tick.
    os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
    assert os.stat(path).st_size == first.st_size
    assert find(live.current(), "Web") is not None
    assert find(live.current(), "Dev") is None


def test_a_config_toml_that_stops_loading_keeps_the_last_good_one_until_it_is_fixed(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[assistants.ops]\nname = "Ops"\n', encoding="utf-8")
    live = LiveConfig(load_config(path, environ={}), path=path)
    path.write_text('[assistants.ops]\nname = "Ops\n', encoding="utf-8")  # a typo while editing
    assert find(live.current(), "Ops") is not None
    path.write_text('[assistants.ops]\nname = "Opz"\n', encoding="utf-8")
    assert find(live.current(), "Opz") is not None
