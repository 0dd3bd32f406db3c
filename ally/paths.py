"""Where work-ally keeps its files. Apart from `ally.config` so that `ally up`'s long-running
supervisor, which imports nothing heavy (ally/supervisor.py), can find them too."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "WORK_ALLY_HOME"


def data_dir() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".work-ally").expanduser()


def config_path() -> Path:
    return data_dir() / "config.toml"
