"""A turn that hits the account's usage limit is not failed: the chat is told when the limit resets,
the turn waits on a durable timer, and at the reset it runs by itself, once; /stop and /retry still
work meanwhile, and a restart of everything during the wait changes nothing.

The real Codex meets the limit as the backend reports it (the scripted model's `UsageLimit`: HTTP 429
`usage_limit_reached` with the rate-limit headers), so the reset time travels the real way: Codex's
`account/rateLimits/updated`, the host's reading of it, the turn's timer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from temporalio.client import Client

from ally.channels.console import ConsoleChannel, ConsoleEvent
from ally.contracts import RuntimeLocation
from ally.model_server import Say, UsageLimit
from tests.processes import temporal_when_up
from tests.stack import eventually, running_stack
from tests.test_turn_faults import own_dev_server, runtime_worker_process, wait_polled

pytestmark = [pytest.mark.codex]

RESET_S = 6.0  # the "reset in 90 s", scaled down


def _prompts(received: list[dict[str, object]], text: str) -> int:
    """How many model requests carried `text` as their newest user message."""
    count = 0
    for request in received:
        items = request.get("input")
        users = (
            [i for i in items if isinstance(i, dict) and i.get("role") == "user"]
            if isinstance(items, list)
            else []
        )
        if users and text in str(users[-1]):
            count += 1
    return count


async def test_a_turn_that_hits_the_usage_limit_waits_for_the_reset_and_then_answers_once(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat()
        stack.model.push(
            UsageLimit(resets_in_s=RESET_S), Say(text="done after the reset"), Say(text="second")
        )
        sent_at = time.time()
        message = await stack.send(chat, "a big job")
        notice = await eventually(
            lambda: [r for r in stack.replies(chat, tone="notice") if "usage limit" in r.text],
            what="the chat told of the limit",
        )
        assert "resets at" in notice[0].text and "/stop" in notice[0].text and "/retry" in notice[0].text
        # Messages sent meanwhile wait behind it.
        await stack.send(chat, "and then this")
        turn = stack.turn_handle(chat, message)
        assert (await turn.describe()).status is not None
        result = await asyncio.wait_for(turn.result(), RESET_S + 60)
        answered_after = time.time() - sent_at
        assert result.status == "completed"
        assert answered_after >= RESET_S, f"ran {answered_after:.1f} s after the message, before the reset"
        answers = await eventually(
            lambda: len(stack.replies(chat, tone="answer")) >= 2 or None, what="both answers"
        )
        assert answers
        assert [a.text for a in stack.replies(chat, tone="answer")] == ["done after the reset", "second"]
        assert stack.replies(chat, tone="problem") == []
        # The prompt went to the model twice: refused at the limit, then run after the reset.
        assert _prompts(stack.model.received(), "a big job") == 2


async def test_retry_runs_a_waiting_turn_now_and_stop_ends_one(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat()
        stack.model.push(UsageLimit(resets_in_s=600), Say(text="ran on /retry"))
        message = await stack.send(chat, "try me")
        await eventually(
            lambda: [r for r in stack.replies(chat, tone="notice") if "usage limit" in r.text],
            what="the limit notice",
        )
        status = await stack.send(chat, "/status")
        shown = await eventually(
            lambda: [r for r in stack.replies(chat) if r.reply_to == status.message_id], what="/status"
        )
        assert "Waiting for the usage limit to reset" in shown[0].text
        await stack.send(chat, "/retry")
        result = await asyncio.wait_for(stack.turn_handle(chat, message).result(), 60)
        assert result.status == "completed"
        assert [a.text for a in stack.replies(chat, tone="answer")] == ["ran on /retry"]

        other = stack.chat()
        stack.model.push(UsageLimit(resets_in_s=600))
        waiting = await stack.send(other, "never mind")
        await eventually(
            lambda: [r for r in stack.replies(other, tone="notice") if "usage limit" in r.text],
            what="the limit notice",
        )
        await stack.send(other, "/stop")
        result = await asyncio.wait_for(stack.turn_handle(other, waiting).result(), 60)
        assert result.status == "interrupted"
        assert any(r.text.startswith("Stopped.") for r in stack.replies(other, tone="notice"))
        assert stack.replies(other, tone="problem") == []
        assert _prompts(stack.model.received(), "never mind") == 1


@pytest.mark.faults
async def test_a_turn_waiting_for_the_usage_limit_survives_a_restart_of_everything(tmp_path: Path) -> None:
    """The dev server, the runtime worker (with its Codex child) and the chat's worker all go down
    during the wait and come back; at the reset the turn runs, and its answer arrives once."""
    async with own_dev_server(tmp_path / "temporal.db") as server:
        client = await temporal_when_up(server.port)
        async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
            home = tmp_path / "ally-home"
            home.mkdir()
            location = RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue)
            seen: list[ConsoleEvent] = []
            queue = f"{stack.worker_queue}-own"
            chat = stack.chat().model_copy(update={"worker_queue": queue})
            stack.model.push(UsageLimit(resets_in_s=12), Say(text="after everything restarted"))
            with runtime_worker_process(client, home, stack.runtime.codex_home, stack.host) as worker:
                async with stack.chat_worker(ConsoleChannel(seen.append), queue):
                    await wait_polled(client, stack.pinned_queue)
                    message = await stack.send(chat, "the long job", runtime=location)
                    await eventually(
                        lambda: [e for e in seen if e.reply and "usage limit" in e.reply.text],
                        what="the limit notice",
                    )
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            server.stop()
            await asyncio.sleep(2.0)
            assert not [e for e in seen if e.reply and e.reply.tone == "answer"]

            server.start()
            client = await temporal_when_up(server.port)
            stack.client = client
            with runtime_worker_process(client, home, stack.runtime.codex_home, stack.host):
                async with stack.chat_worker(ConsoleChannel(seen.append), queue):
                    answers = await eventually(
                        lambda: [e.reply for e in seen if e.reply and e.reply.tone == "answer"],
                        within=90,
                        what="the answer after the reset",
                    )
                    result = await asyncio.wait_for(stack.turn_handle(chat, message).result(), 30)
                    await asyncio.sleep(2.0)  # room for a second answer, if one were coming
            replies = [e.reply for e in seen if e.reply]
            assert [a.text for a in answers] == ["after everything restarted"]
            assert [r.text for r in replies if r.tone == "answer"] == ["after everything restarted"]
            assert [r for r in replies if r.tone == "problem"] == []
            assert result.status == "completed"
            assert _prompts(stack.model.received(), "the long job") == 2
