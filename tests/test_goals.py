"""`/goal TEXT`: Codex works on a goal turn after turn by itself (its own continuation turns, started
with no person's message), the chat sees a line as each turn ends and then the answer once;
approvals raised meanwhile reach the chat as any other; `/goal` shows it, `/goal clear` ends it,
and a budget of turns or hours stops a goal that would go on, and says so.

The real Codex runs the goal (`thread/goal/set`, its continuation turns, the `update_goal` tool the
scripted model calls to say it is done), so what is asserted is what Codex did.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from ally.chat_client import ChatClient
from ally.contracts import ChatRef, Decision, InboundMessage, LongWork, Reply, TurnResult
from ally.model_server import CallTool, Hang, RunCommand, Say
from tests.stack import PERSON, Stack, eventually, running_stack

pytestmark = [pytest.mark.codex]

DONE = CallTool(name="update_goal", arguments={"status": "complete"})  # the model says the goal is met


def _progress(stack: Stack, chat: ChatRef) -> list[str]:
    return [r.text for r in stack.replies(chat, tone="notice") if r.text.startswith("Goal · turn")]


async def _ask(stack: Stack, chat: ChatRef, text: str) -> Reply:
    """Send a command and wait for the notice that answers it."""
    sent = await stack.send(chat, text)
    return (
        await eventually(lambda: [r for r in stack.replies(chat) if r.reply_to == sent.message_id], what=text)
    )[0]


async def _ended(stack: Stack, chat: ChatRef, goal: InboundMessage, within: float = 60) -> TurnResult:
    """The goal's turn result, once the conversation has started it and it has ended."""
    handle = stack.turn_handle(chat, goal)

    async def started() -> bool:
        try:
            await handle.describe()
            return True
        except RPCError:
            return False

    for _ in range(100):
        if await started():
            break
        await asyncio.sleep(0.1)
    return await asyncio.wait_for(handle.result(), within)


async def _goal_turns(stack: Stack, thread_id: str) -> list[tuple[str, str]]:
    """(the person's words, the final answer) of each turn of the thread, from Codex's own record."""
    snapshot = await stack.runtime.read_thread(thread_id)
    return [(turn.user_text, turn.final_text) for turn in snapshot.turns]


async def test_a_goal_runs_three_turns_by_itself_with_an_approval_and_answers_once(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "goal.txt"
        stack.model.push(
            Say(text="step 1 done"),
            RunCommand(cmd=f"echo two > {target}"),
            Say(text="step 2 done"),
            DONE,
            Say(text="all three steps done"),
        )
        chat = stack.chat()
        goal = await stack.send(chat, "/goal do the three steps")
        # Turn 2 asks for an approval: it reaches the chat like any other and is answered there.
        prompt = (await eventually(lambda: stack.approvals(chat), what="an approval card"))[0]
        assert "goal.txt" in (prompt.request.command or "")
        assert len(_progress(stack, chat)) == 1, "turn 1's line comes before turn 2's card"
        shown = await _ask(stack, chat, "/goal")
        assert "Goal: do the three steps" in shown.text and "running" in shown.text
        assert "1 of at most 20 turns done" in shown.text
        decision = Decision(key=prompt.request.key, decision="accept", operator=PERSON)
        assert (await ChatClient(client).decide(prompt.turn_workflow_id, decision)).status == "decided"

        result = await _ended(stack, chat, goal, 60)
        assert result.status == "completed"
        assert result.goal is not None and result.goal.status == "complete" and result.goal.turns == 3
        assert target.read_text().strip() == "two"
        progress = await eventually(
            lambda: len(_progress(stack, chat)) == 3 or None, what="three progress lines"
        )
        assert progress
        lines = _progress(stack, chat)
        assert lines[0].startswith("Goal · turn 1 done") and lines[0].endswith("step 1 done")
        assert lines[1].startswith("Goal · turn 2 done") and lines[1].endswith("step 2 done")
        assert lines[2].startswith("Goal · turn 3 done") and "all three" not in lines[2]
        answers = await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        await asyncio.sleep(1.0)  # room for a duplicate, were one coming
        assert len(stack.replies(chat, tone="answer")) == 1
        assert answers[0].text.startswith("all three steps done\n\nGoal complete (3 turns, ")
        assert answers[0].reply_to == goal.message_id
        assert stack.replies(chat, tone="problem") == []
        # Codex's own record: no person's message in any of the three turns.
        assert result.thread_id is not None
        assert await _goal_turns(stack, result.thread_id) == [
            ("", "step 1 done"),
            ("", "step 2 done"),
            ("", "all three steps done"),
        ]
        shown = await _ask(stack, chat, "/goal")
        assert "Status: complete; 3 of at most 20 turns done" in shown.text


async def test_goal_clear_stops_a_goal_midway_and_codex_starts_no_more_turns(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        stack.model.push(Say(text="step 1 done"), Hang(seconds=8, then=Say(text="never shown")))
        chat = stack.chat()
        goal = await stack.send(chat, "/goal keep going")
        await eventually(lambda: _progress(stack, chat), what="the first turn's line")
        await eventually(lambda: len(stack.model.received()) >= 2 or None, what="the second turn under way")
        cleared = await _ask(stack, chat, "/goal clear")
        assert cleared.text.startswith("Clearing the goal")
        result = await _ended(stack, chat, goal, 30)
        assert result.status == "interrupted"
        assert result.goal is not None and result.goal.status == "cleared" and result.goal.turns == 2
        ended = await eventually(
            lambda: [r for r in stack.replies(chat) if "Goal cleared" in r.text], what="the goal's end"
        )
        assert ended[0].tone == "notice" and ended[0].text.startswith("Stopped.")
        assert result.thread_id is not None
        assert await stack.runtime.get_goal(result.thread_id) is None
        requests = len(stack.model.received())
        await asyncio.sleep(2.0)
        assert len(stack.model.received()) == requests, "Codex went on with a cleared goal"
        turns = (await stack.runtime.read_thread(result.thread_id)).turns
        assert [turn.status for turn in turns] == ["completed", "interrupted"]
        shown = await _ask(stack, chat, "/goal")
        assert "Status: cleared" in shown.text
        assert (await _ask(stack, chat, "/goal clear")).text == "No goal is running."


async def test_a_budget_of_turns_or_hours_stops_a_goal_that_would_go_on_and_says_so(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        # Turns: two at most; Codex would go on, but starts no third. The second turn takes a
        # second, as any real one does: the budget reaches Codex as that turn starts, and a turn
        # answered within milliseconds could end before it (docs/long-work.md, "The budget").
        stack.model.push(
            Say(text="first go"),
            Hang(seconds=1.0, then=Say(text="second go")),
            Say(text="a third, never"),
        )
        chat = stack.chat()
        goal = await stack.send(chat, "/goal never done", long_work=LongWork(goal_max_turns=2))
        result = await _ended(stack, chat, goal, 60)
        assert result.status == "completed"
        assert result.goal is not None and result.goal.over_budget == "turns" and result.goal.turns == 2
        answers = await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        assert answers[0].text.startswith("second go\n\nGoal stopped: it reached its budget of 2 turns")
        assert len(_progress(stack, chat)) == 2
        assert result.thread_id is not None
        assert [answer for _, answer in await _goal_turns(stack, result.thread_id)] == [
            "first go",
            "second go",
        ]
        still = await stack.runtime.get_goal(result.thread_id)
        assert still is not None and still.status.value == "budgetLimited"
        stack.model.reset()

        # Hours: a goal whose turn would outlast its budget is stopped when the budget runs out.
        stack.model.push(Say(text="quick start"), Hang(seconds=20, then=Say(text="too late")))
        other = stack.chat()
        slow: InboundMessage = await stack.send(other, "/goal take forever", long_work=LongWork(goal_max_s=4))
        result = await _ended(stack, other, slow, 30)
        assert result.goal is not None and result.goal.over_budget == "hours"
        assert result.goal.seconds < 10
        ended = await eventually(
            lambda: [r for r in stack.replies(other) if "Goal stopped" in r.text], what="the goal's end"
        )
        assert "it reached its budget of 4 s" in ended[0].text


@pytest.mark.faults
async def test_a_goal_whose_codex_child_dies_is_paused_and_the_chat_told(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        stack.model.push(Say(text="step 1 done"), Hang(seconds=8, then=Say(text="never shown")))
        chat = stack.chat()
        goal = await stack.send(chat, "/goal keep going")
        await eventually(lambda: _progress(stack, chat), what="the first turn's line")
        await eventually(lambda: len(stack.model.received()) >= 2 or None, what="the second turn under way")
        assert stack.runtime.pid is not None
        os.kill(stack.runtime.pid, signal.SIGKILL)
        result = await _ended(stack, chat, goal, 60)
        assert result.status == "interrupted"
        assert result.goal is not None and result.goal.status == "paused"
        ended = await eventually(
            lambda: [r for r in stack.replies(chat) if "Goal paused" in r.text], what="the end"
        )
        assert "The Codex runtime restarted" in ended[0].text
        assert result.thread_id is not None
        paused = await stack.runtime.get_goal(result.thread_id)
        assert paused is not None and paused.status.value == "paused"
        requests = len(stack.model.received())
        await asyncio.sleep(2.0)
        assert len(stack.model.received()) == requests, "Codex went on with the goal unattended"
