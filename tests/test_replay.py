"""Safe upgrades: every recorded workflow history still replays against the current code.

The corpus in tests/histories/ holds real histories (approval, stop, queueing, faults) recorded
with `WORK_ALLY_RECORD_HISTORIES=tests/histories dev/test tests/test_turns.py`. A workflow change
that would break turns in flight fails here with a NondeterminismError; guard it with
`workflow.patched(...)` and record new histories beside the old ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.chat import WORKFLOWS

CORPUS = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_the_corpus_covers_both_workflows() -> None:
    kinds = {path.name.split("-", 1)[0] for path in CORPUS}
    assert {"ConversationWorkflow", "TurnWorkflow"} <= kinds


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem[:80] for p in CORPUS])
async def test_a_recorded_history_replays_on_the_current_code(path: Path) -> None:
    # The default runner: the sandbox the workers skip for speed guards determinism here.
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    history = WorkflowHistory.from_json(path.stem, text)
    await replayer.replay_workflow(history)
