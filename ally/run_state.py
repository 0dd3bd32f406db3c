"""What is running, as files under `<data dir>/run/`: read by `ally status`, written by each part.

Each long-running part (the `ally up` supervisor, each worker) keeps one small JSON file there,
rewritten whenever its health changes. A file whose pid is dead is stale, and is shown as such.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ally.paths import data_dir
from ally.processes import pid_alive


class PartState(BaseModel):
    name: str
    pid: int
    started_at: datetime
    updated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    detail: dict[str, Any] = {}

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def run_dir() -> Path:
    path = data_dir() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def logs_dir() -> Path:
    path = data_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_part_state(state: PartState) -> None:
    path = run_dir() / f"{state.name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2), encoding="utf-8")
    os.replace(tmp, path)  # atomic, so a reader never sees half a file


def remove_part_state(name: str) -> None:
    (run_dir() / f"{name}.json").unlink(missing_ok=True)


def read_part_states() -> list[PartState]:
    states = []
    for path in sorted(run_dir().glob("*.json")):
        try:
            states.append(PartState.model_validate(json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, OSError):
            continue  # being rewritten or foreign; status shows what it can read
    return states
