"""Durable turns, told as a person in a chat experiences them.

Real dev server, real `codex app-server` with the scripted model, real workers; the chat is the
terminal channel (`ally chat`'s), whose deliveries are what the person sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.worker import Worker

from ally import names
from ally.channels.console import ConsoleChannel, ConsoleEvent
from ally.chat_client import ChatClient
from ally.contracts import ChatRef, Decision, InboundMessage, Person, Reply, SentMessage
from ally.model_server import Hang, RunCommand, Say, Stream
from ally.names import decision_update_id
from ally.turns_report import running_turns
from tests.stack import PERSON, Stack, eventually, running_stack
from workflows.turn import TurnWorkflow

pytestmark = pytest.mark.codex


async def test_a_message_in_gives_one_reply_whose_text_is_codexs_final_answer(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        stack.model.push(Stream(chunks=["The answer ", "is ", "42."]))
        chat = stack.chat()
        message = await stack.send(chat, "What is the answer?")
        replies = await eventually(lambda: stack.replies(chat, tone="answer"), what="a reply")
        turn = await stack.turn_handle(chat, message).result()
        assert turn.thread_id is not None and turn.status == "completed"
        snapshot = await stack.runtime.read_thread(turn.thread_id)
        assert [r.text for r in replies] == [snapshot.turns[-1].final_text] == ["The answer is 42."]
        assert replies[0].reply_to is not None


async def test_the_same_inbound_event_three_times_runs_one_turn_and_sends_one_reply(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        stack.model.push(Say(text="once"))
        chat = stack.chat()
        for _ in range(3):
            await stack.send(chat, "hello", message_id="om_same")
        await eventually(lambda: stack.replies(chat), what="the reply")
        await asyncio.sleep(1.0)  # room for a duplicate to show up, if one were coming
        assert [r.text for r in stack.replies(chat)] == ["once"]
        assert len(stack.model.received()) == 1


async def test_an_approved_command_runs_and_a_double_click_decides_once(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "approved.txt"
        stack.model.push(RunCommand(cmd=f"echo yes > {target}"), Say(text="Wrote it."))
        chat = stack.chat()
        message = await stack.send(chat, "write the file")
        prompt = (await eventually(lambda: stack.approvals(chat), what="an approval card"))[0]
        assert prompt.request.kind == "command" and "approved.txt" in (prompt.request.command or "")
        assert not target.exists()

        decision = Decision(key=prompt.request.key, decision="accept", operator=PERSON)
        first, second = await asyncio.gather(
            ChatClient(client).decide(prompt.turn_workflow_id, decision),
            ChatClient(client).decide(prompt.turn_workflow_id, decision),
        )
        assert first.status == second.status == "decided"
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the final reply")
        assert target.read_text().strip() == "yes"
        decided = [e.outcome for e in stack.events if e.outcome is not None]
        assert [(d.decision, d.decided_by) for d in decided] == [("accept", "Alice")]
        history = await stack.turn_handle(chat, message).fetch_history()
        accepted = [
            e for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes")
        ]
        assert len(accepted) == 1


async def test_someone_who_may_not_decide_is_refused_without_a_trace(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "never.txt"
        stack.model.push(RunCommand(cmd=f"touch {target}"), Say(text="ok"))
        chat = stack.chat(chat_type="group")
        message = await stack.send(chat, "touch it")
        prompt = (await eventually(lambda: stack.approvals(chat), what="an approval card"))[0]
        handle = stack.turn_handle(chat, message)
        before = await settled_history_length(handle)

        outsider = Person(id="ou_mallory", name="Mallory")
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                TurnWorkflow.decide,
                Decision(key=prompt.request.key, decision="accept", operator=outsider),
                id=decision_update_id(prompt.request.key, outsider.id),
            )
        receipt = await ChatClient(client).decide(
            prompt.turn_workflow_id,
            Decision(key=prompt.request.key, decision="accept", operator=outsider),
        )
        assert receipt.status == "rejected" and "may not decide" in receipt.detail
        assert await settled_history_length(handle) == before
        assert (await handle.query(TurnWorkflow.view)).pending  # Codex still waits
        assert not target.exists()
        await handle.signal(TurnWorkflow.stop)


async def settled_history_length(handle: WorkflowHandle[Any, Any]) -> int:
    """The history's length once nothing has been added to it for a moment (the card's activity
    completion can land just after the person saw the card)."""
    length = -1
    while True:
        current = len((await handle.fetch_history()).events)
        if current == length:
            return current
        length = current
        await asyncio.sleep(0.5)


async def test_stop_during_an_approval_wait_interrupts_calmly_and_the_card_says_so(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "stopped.txt"
        chat, message = await waiting_to_touch(stack, target)
        await stack.send(chat, "/stop")
        await stack.turn_handle(chat, message).result()
        # A stop the person asked for is news, not a problem: no red card, no dangling space.
        assert stack.replies(chat, tone="problem") == []
        stopped = [r.text for r in stack.replies(chat, tone="notice") if r.text.startswith("Stopped")]
        assert stopped == ["Stopped."]
        closed = await eventually(
            lambda: [e.outcome for e in stack.events if e.outcome is not None], what="the card update"
        )
        assert closed[0].decision == "not needed any more: the turn was stopped"
        assert not target.exists()


async def test_a_chat_stopped_from_outside_ends_its_waiting_turn_like_a_typed_stop(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        chats = ChatClient(client)
        chat, message = await waiting_to_touch(stack, stack.workspace / "stopped-from-outside.txt")
        conversation = names.conversation_id(chat.chat_id)
        assert [row.request.kind for row in await chats.waiting(conversation)] == ["command"]
        assert await chats.stop(conversation)
        await stack.turn_handle(chat, message).result()
        stopped = [r.text for r in stack.replies(chat, tone="notice") if r.text.startswith("Stopped")]
        assert stopped == ["Stopped."]
        assert await chats.waiting(conversation) == []
        assert not await chats.stop(conversation)  # nothing runs any more
        assert not (stack.workspace / "stopped-from-outside.txt").exists()


async def waiting_to_touch(stack: Stack, target: Path) -> tuple[ChatRef, InboundMessage]:
    """A chat whose turn waits for approval to `touch target`: the chat and the message."""
    stack.model.push(RunCommand(cmd=f"touch {target}"))
    chat = stack.chat()
    message = await stack.send(chat, "touch it")
    await eventually(lambda: stack.approvals(chat), what="an approval card")
    return chat, message


async def test_twenty_messages_while_a_turn_runs_are_all_answered_in_order(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        stack.model.push(Hang(seconds=2, then=Say(text="first done")))
        stack.model.push(*(Say(text=f"answer {i}") for i in range(20)))
        chat = stack.chat()
        await stack.send(chat, "slow one")
        await eventually(lambda: stack.model.received(), what="the first model request")
        for i in range(20):
            await stack.send(chat, f"question {i}")

        def all_answers() -> list[Reply] | None:
            answers = stack.replies(chat, tone="answer")
            return answers if len(answers) == 21 else None

        answers = await eventually(all_answers, within=120, what="21 answers")
        assert [a.text for a in answers] == ["first done", *(f"answer {i}" for i in range(20))]
        description = await stack.conversation_handle(chat).describe()
        assert description.run_id != description.raw_description.workflow_execution_info.first_run_id, (
            "the conversation should have continued-as-new between turns"
        )
        queued = [n.text for n in stack.replies(chat, tone="notice") if n.text.startswith("Queued")]
        assert 1 <= len(queued) <= 2, queued  # the burst is told once or twice, not 20 times
        assert queued[0].startswith("Queued: ") and "they run in order after the current turn" in queued[0]


async def test_in_steer_mode_a_message_sent_while_a_turn_runs_steers_that_turn(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        stack.model.push(
            Stream(chunks=["Writing ", "a ", "long ", "answer ", "slowly"], delay_s=0.5), Say(text="steered")
        )
        chat = stack.chat()
        await stack.send(chat, "write something long", busy_policy="steer")
        await eventually(lambda: stack.model.received(), what="the first model request")
        await stack.send(chat, "make it short")

        answers = await eventually(lambda: stack.replies(chat, tone="answer"), within=60, what="the answer")
        assert [a.text for a in answers] == ["steered"]
        # Codex sampled the same turn again, with the steer in its input: one turn, not two.
        requests = stack.model.received()
        assert len(requests) == 2 and "make it short" in str(requests[1]["input"])
        assert "Steered into the running turn." in [r.text for r in stack.replies(chat, tone="notice")]


class FlakyChannel(ConsoleChannel):
    """The terminal channel, failing its first `failures` sends the way a flaky network would."""

    def __init__(self, sink: Callable[[ConsoleEvent], None], failures: int) -> None:
        super().__init__(sink)
        self.failures = failures
        self.attempts = 0

    async def send_reply(self, reply: Reply) -> SentMessage:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionError(f"injected failure {self.attempts}")
        return await super().send_reply(reply)


@pytest.mark.faults
async def test_a_channel_failing_three_times_then_working_delivers_one_reply(
    client: Client, tmp_path: Path
) -> None:
    delivered: list[ConsoleEvent] = []
    flaky = FlakyChannel(delivered.append, failures=3)

    def flaky_delivery(stack: Stack) -> list[Worker]:
        return [stack.chat_worker(flaky, f"{stack.worker_queue}-flaky")]

    async with running_stack(client, tmp_path, extra_workers=flaky_delivery) as stack:
        stack.model.push(Say(text="made it"))
        chat = stack.chat().model_copy(update={"worker_queue": f"{stack.worker_queue}-flaky"})
        await stack.send(chat, "hello")
        await eventually(lambda: delivered, within=60, what="the reply")
        await asyncio.sleep(0.5)
        assert [e.reply.text for e in delivered if e.reply] == ["made it"]
        assert flaky.attempts == 4


async def test_ally_turns_and_ally_approvals_show_a_turn_waiting_for_a_decision(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        stack.model.push(RunCommand(cmd="echo listed"), Say(text="ok"))
        chat = stack.chat()
        message = await stack.send(chat, "list me")
        await eventually(lambda: stack.approvals(chat), what="an approval card")
        turn_id = stack.turn_handle(chat, message).id

        deadline = asyncio.get_running_loop().time() + 30
        while True:  # visibility is eventually consistent
            turns = [t for t in await running_turns(client, ui="http://ui") if t.workflow_id == turn_id]
            if turns and turns[0].state == "awaiting_approval":
                break
            assert asyncio.get_running_loop().time() < deadline, f"turn not listed as waiting: {turns}"
            await asyncio.sleep(0.2)
        assert turns[0].chat == chat.chat_id
        assert turns[0].ui_link == f"http://ui/namespaces/default/workflows/{quote(turn_id, safe='')}"

        pending = [p for p in await ChatClient(client).waiting_everywhere() if p.workflow_id == turn_id]
        assert [(p.request.kind, "echo listed" in (p.request.command or "")) for p in pending] == [
            ("command", True)
        ]
        await stack.turn_handle(chat, message).signal(TurnWorkflow.stop)
