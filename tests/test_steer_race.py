"""A steer that reaches the Codex host just after Codex finished the turn is not lost.

The real binary cannot be made to finish a turn at an exact moment, so the Codex host here is a
stand-in with the same activity names (docs/temporal.md §6): its first turn ends only once the
steer has been refused as too late. Everything else is real: dev server, workflows, channel.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from ally.contracts import RuntimeLocation, StartTurnInput, SteerTurnInput, TurnOutcome
from tests.stack import eventually, running_stack

pytestmark = pytest.mark.faults


class LateHost:
    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.steer_refused = asyncio.Event()

    @activity.defn(name="run_turn")
    async def run_turn(self, request: StartTurnInput) -> TurnOutcome:
        self.prompts.append(request.text)
        if len(self.prompts) == 1:
            await self.steer_refused.wait()
        return TurnOutcome(
            thread_id="thread-1",
            turn_id=f"turn-{len(self.prompts)}",
            status="completed",
            final_text=f"answer to: {request.text}",
        )

    @activity.defn(name="steer_turn")
    async def steer_turn(self, request: SteerTurnInput) -> str:
        self.steer_refused.set()
        raise ApplicationError("the turn is not running on this host", type="TurnNotLive", non_retryable=True)


async def test_a_steer_that_comes_too_late_runs_as_the_next_turn(client: Client, tmp_path: Path) -> None:
    host = LateHost()
    async with running_stack(
        client,
        tmp_path,
        with_runtime_worker=False,
        extra_workers=lambda stack: [
            Worker(client, task_queue=stack.pinned_queue, activities=[host.run_turn, host.steer_turn])
        ],
    ) as stack:
        location = RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue)
        chat = stack.chat()
        await stack.send(chat, "long job", runtime=location, busy_policy="steer")
        await eventually(lambda: host.prompts, what="the first turn on the host")
        await stack.send(chat, "and this too")

        def both_answers() -> list[str] | None:
            answers = [r.text for r in stack.replies(chat, tone="answer")]
            return answers if len(answers) == 2 else None

        assert await eventually(both_answers, within=60, what="two answers") == [
            "answer to: long job",
            "answer to: and this too",
        ]
        assert host.prompts == ["long job", "and this too"]
        notices = [r.text for r in stack.replies(chat, tone="notice")]
        assert any("runs next" in text for text in notices)
