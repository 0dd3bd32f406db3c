"""Safe upgrades: every recorded workflow history still replays against the current code.

The corpus in tests/histories/ holds real histories (approval, stop, queueing, faults) recorded
with `ALLY_TEST_RECORD_HISTORIES=tests/histories dev/test tests/test_turns.py`. A workflow change
that would break turns in flight fails here with a NondeterminismError; guard it with
`workflow.patched(...)` and record new histories beside the old ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from ally import policy_legacy
from ally.contracts import AgentRequest, Mode, TurnInput
from ally.policy import evaluate
from workers.chat import WORKFLOWS

HISTORIES = Path(__file__).parent / "histories"
CORPUS = sorted(HISTORIES.glob("*.json"))
# A trusted turn recorded with the policy as a local activity: one automatic accept, one question.
RECORDED_VERDICTS = HISTORIES / "TurnWorkflow-policy_verdict_recorded_trusted.json"
# A trusted turn recorded before that, with the policy evaluated inside the workflow: it accepted
# `python3 -c …` on its own, which the policy of today sends to a person.
EVALUATED_INSIDE = HISTORIES / "TurnWorkflow-policy_legacy_trusted_interpreter.json"


def test_the_corpus_covers_every_long_lived_workflow() -> None:
    kinds = {path.name.split("-", 1)[0] for path in CORPUS}
    assert {"ConversationWorkflow", "TurnWorkflow", "AlertsWorkflow", "RoutineRunWorkflow"} <= kinds


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem[:80] for p in CORPUS])
async def test_a_recorded_history_replays_on_the_current_code(path: Path) -> None:
    # The default runner: the sandbox the workers skip for speed guards determinism here.
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    history = WorkflowHistory.from_json(path.stem, text)
    await replayer.replay_workflow(history)


def _events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["events"]
    return events


def _payload(payloads: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(payloads["payloads"][0]["data"]))


def _turn(path: Path) -> TurnInput:
    return TurnInput.model_validate(
        _payload(_events(path)[0]["workflowExecutionStartedEventAttributes"]["input"])
    )


def _requests(path: Path) -> list[AgentRequest]:
    signals = [
        e["workflowExecutionSignaledEventAttributes"]
        for e in _events(path)
        if e["eventType"].endswith("SIGNALED")
    ]
    return [
        AgentRequest.model_validate(_payload(s["input"]))
        for s in signals
        if s["signalName"] == "codex_request"
    ]


def _history(path: Path, *, mode: Mode | None = None) -> WorkflowHistory:
    """The recorded history, or the same with the turn's autonomy changed, as if the policy (its
    rules or its code) now decided otherwise than when the turn ran."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if mode is not None:
        started = data["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
        turn = json.loads(base64.b64decode(started["data"]))
        turn |= {"mode": mode, "policy": {**turn["policy"], "mode": mode, "rules": []}}
        started["data"] = base64.b64encode(json.dumps(turn).encode()).decode()
    return WorkflowHistory.from_json(path.stem, data)


def _verdicts(path: Path, mode: Mode | None = None) -> list[str | None]:
    """What the policy of today decides on each request of the history."""
    turn = _turn(path)
    return [
        evaluate(
            r, policy=turn.policy, mode=mode or turn.mode, workspace=turn.settings.cwd, grants=turn.grants
        ).decision
        for r in _requests(path)
    ]


async def test_a_recorded_verdict_replays_even_when_the_policy_would_now_decide_otherwise() -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    assert _verdicts(RECORDED_VERDICTS) == ["accept", None]  # what the turn was told then …
    assert _verdicts(RECORDED_VERDICTS, mode="ask") == [None, None]  # … and what it would be told now
    await replayer.replay_workflow(_history(RECORDED_VERDICTS, mode="ask"))


async def test_a_turn_started_before_verdicts_were_recorded_replays_with_the_frozen_evaluator() -> None:
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    turn = _turn(EVALUATED_INSIDE)
    (request,) = _requests(EVALUATED_INSIDE)
    args: dict[str, Any] = {"policy": turn.policy, "mode": turn.mode, "workspace": turn.settings.cwd}
    assert (
        policy_legacy.evaluate(request, **args, grants=turn.grants).decision == "accept"
    )  # what it was told
    assert _verdicts(EVALUATED_INSIDE) == [None]  # the policy of today would ask a person
    await replayer.replay_workflow(_history(EVALUATED_INSIDE))
    # Such a turn evaluates again on replay: another verdict breaks it. That is why the evaluator
    # it ran with is kept as it was, and why verdicts are recorded from now on.
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history(EVALUATED_INSIDE, mode="ask"))
