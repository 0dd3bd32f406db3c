"""The Codex protocol models the runtime reads are the pinned release's, pruned to what the code uses.

ally/codex/protocol.py keeps only the generated models the code names and every model they refer to
(dev/prune_protocol.py): the rest cost the runtime worker memory for nothing. Pruning must not cut
a model a kept one refers to (its validator could not be built at the first message that needs it),
and the committed file must be what the pinned Codex's schema gives today.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from ally.codex import protocol

ROOT = Path(__file__).resolve().parent.parent


def test_every_kept_protocol_model_builds_its_validator_and_reads_a_thread_of_codex() -> None:
    models = [
        value
        for value in vars(protocol).values()
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == protocol.__name__
    ]
    assert len(models) > 100
    for model in models:
        # defer_build leaves each validator to its first use; a name pruned away fails here.
        assert model.model_rebuild(force=True) is True
    turn = {"id": "t1", "items": [{"type": "agentMessage", "id": "i1", "text": "hi"}], "status": "completed"}
    read = protocol.Turn.model_validate(turn)
    assert isinstance(read.items[0].root, protocol.AgentMessageThreadItem)
    with pytest.raises(ValueError):
        protocol.Turn.model_validate({**turn, "status": "not-a-status"})


@pytest.mark.codex
def test_the_committed_protocol_models_are_what_the_pinned_codex_and_the_code_give(tmp_path: Path) -> None:
    regenerated = tmp_path / "protocol.py"
    subprocess.run([str(ROOT / "dev" / "regen_protocol"), str(regenerated)], check=True, timeout=120)
    committed = (ROOT / "ally" / "codex" / "protocol.py").read_text()
    assert regenerated.read_text() == committed, "ally/codex/protocol.py is stale: run dev/regen_protocol"
