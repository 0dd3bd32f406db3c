"""Live progress: while Codex works the person sees one card, edited in place (what Codex does now,
its plan, the steps so far, a Stop button), settled into a short summary when the turn ends; the
answer is still read back from `thread/read` and sent once, and the turn's history stays the same
size whatever Codex emits.

Real Codex against the scripted model, the Feishu chats' worker with the real lark-oapi SDK against
the fake Feishu; what the person saw is the fake's record of each card version (create + PATCHes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import lark_oapi as lark
import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from ally import names
from ally.contracts import ChatRef, ThreadSettings, TurnResult
from ally.model_server import ApplyPatch, Burst, CallTool, Hang, RunCommand, Say
from ally.processes import die_with_parent_hook
from dev.fake_feishu import FakeFeishu, Message, card_action_event, forget_sdk_token, message_event
from tests.feishu_stack import FeishuStack, OneAssistant, card_markdown, feishu_stack
from tests.stack import Stack, running_stack
from tests.test_turn_faults import wait_polled
from workflows.turn import TurnWorkflow

pytestmark = [pytest.mark.codex, pytest.mark.feishu]

CHAT = "oc_progress"
TURN_EVENTS_BOUND = 23


def working_settings(stack: Stack) -> ThreadSettings:
    """Commands and edits run without approvals (the test's Codex home sits in a temporary
    directory, where Codex's own sandbox helper cannot be set up), and Codex offers the model its
    plan tool (docs/codex-app-server.md §5)."""
    return ThreadSettings(
        cwd=str(stack.workspace),
        sandbox="danger-full-access",
        approval_policy="never",
        config={"tools.update_plan.enabled": True},
    )


@asynccontextmanager
async def progress_stack(client: Client, tmp_path: Path, app_id: str) -> AsyncIterator[FeishuStack]:
    def one(stack: Stack) -> OneAssistant:
        return OneAssistant(lambda chat: stack.conversation(chat, settings=working_settings(stack)))

    async with feishu_stack(client, tmp_path, app_id, conversations=one) as fstack:
        yield fstack


def versions(fstack: FeishuStack, card: Message) -> list[dict[str, Any]]:
    """Every version of a card the person saw, oldest first: as sent, then each PATCH."""
    sent = next(
        json.loads(call.body["content"])
        for call in fstack.fake.calls
        if call.method == "POST"
        and isinstance(call.answer, dict)
        and (call.answer.get("data") or {}).get("message_id") == card.message_id
    )
    return [sent, *card.patches]


def text_of(card: dict[str, Any]) -> str:
    """What a card version shows: its title and every markdown in it, panels included."""
    parts = [str(((card.get("header") or {}).get("title") or {}).get("content", ""))]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("tag") == "markdown":
                parts.append(str(node.get("content", "")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card.get("body"))
    return "\n".join(parts)


def progress_cards(fstack: FeishuStack, message_id: str) -> list[Message]:
    return [m for m in fstack.replies_to(message_id) if any(_has_stop(v) for v in versions(fstack, m))]


def _has_stop(card: dict[str, Any]) -> bool:
    return '"ally": "stop"' in json.dumps(card)


def answers(fstack: FeishuStack, message_id: str) -> list[Message]:
    cards = {m.message_id for m in progress_cards(fstack, message_id)}
    return [m for m in fstack.replies_to(message_id) if m.message_id not in cards]


async def turn_result(client: Client, chat_id: str, message_id: str, within: float = 120.0) -> TurnResult:
    """The turn of this message, once the conversation started it and it ended."""
    turn = client.get_workflow_handle_for(TurnWorkflow.run, names.turn_workflow_id(chat_id, message_id))
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncio.wait_for(turn.result(), timeout=max(deadline - time.monotonic(), 0.1))
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def history_events(client: Client, workflow_id: str) -> int:
    return len([event async for event in client.get_workflow_handle(workflow_id).fetch_history_events()])


async def test_a_turn_with_a_plan_three_commands_and_an_edit_shows_each_step_on_one_card_then_a_summary(
    client: Client, tmp_path: Path
) -> None:
    async with progress_stack(client, tmp_path, "cli_progress_steps") as fstack:
        fstack.channel.progress_interval_s = 0.5  # each step its own version; the pace has a test below
        stack = fstack.stack
        plan = [
            {"step": "look around", "status": "in_progress"},
            {"step": "write the notes", "status": "pending"},
        ]
        done = [{"step": p["step"], "status": "completed"} for p in plan]
        gap = 2.5  # longer than a poll plus a heartbeat: every step is seen on its own
        stack.model.push(
            CallTool(name="update_plan", arguments={"plan": plan}),
            Hang(seconds=gap, then=RunCommand(cmd="echo first-step", escalated=False)),
            Hang(seconds=gap, then=RunCommand(cmd="echo second-step", escalated=False)),
            Hang(seconds=gap, then=RunCommand(cmd="echo third-step", escalated=False)),
            Hang(
                seconds=gap,
                then=ApplyPatch(patch="*** Begin Patch\n*** Add File: notes.txt\n+noted\n*** End Patch\n"),
            ),
            Hang(seconds=gap, then=CallTool(name="update_plan", arguments={"plan": done})),
            Hang(seconds=gap, then=Say(text="All done: three commands and notes.txt.")),
        )
        envelope = await fstack.say(CHAT, "take notes")
        message_id = envelope["event"]["message"]["message_id"]
        result = await turn_result(client, CHAT, message_id)
        await asyncio.sleep(1.5)  # room for a late edit or a second answer, if one were coming

        [card] = progress_cards(fstack, message_id)
        shown = [text_of(v) for v in versions(fstack, card)]
        first_seen = {
            word: next(i for i, text in enumerate(shown) if word in text)
            for word in ("look around", "echo first-step", "echo second-step", "echo third-step", "notes.txt")
        }
        assert list(first_seen.values()) == sorted(first_seen.values()), first_seen
        assert len(set(first_seen.values())) == len(first_seen), "each step in a version of its own"
        assert any("▶️ look around" in text for text in shown)
        assert any("✅ look around" in text and "✅ write the notes" in text for text in shown)
        settled = versions(fstack, card)[-1]
        assert not _has_stop(settled)
        assert settled["header"]["title"]["content"] == "Done"
        assert "3 commands" in text_of(settled) and "1 file changed" in text_of(settled)
        assert "notes.txt" in text_of(settled)

        snapshot = await stack.runtime.read_thread(result.thread_id or "")
        final = snapshot.turns[-1].final_text
        assert final == "All done: three commands and notes.txt."
        [answer] = answers(fstack, message_id)
        assert card_markdown(answer) == final
        assert card.create_time <= answer.create_time
        assert (stack.workspace / "notes.txt").read_text() == "noted\n"


async def test_a_turn_of_5000_events_edits_its_card_within_the_pace_and_its_history_does_not_grow(
    client: Client, tmp_path: Path
) -> None:
    async with progress_stack(client, tmp_path, "cli_progress_flood") as fstack:
        stack = fstack.stack
        stack.model.push(Say(text="a short one"))
        short = (await fstack.say(CHAT, "say something short"))["event"]["message"]["message_id"]
        await turn_result(client, CHAT, short)

        stack.model.push(Hang(seconds=3.0, then=Burst(count=2500, then="done after 5,000 events")))
        envelope = await fstack.say(CHAT, "think out loud")
        message_id = envelope["event"]["message"]["message_id"]
        await turn_result(client, CHAT, message_id)
        await asyncio.sleep(1.5)

        turn_id = names.turn_workflow_id(CHAT, message_id)
        described = await client.get_workflow_handle(turn_id).describe()
        assert described.close_time is not None
        ran_s = (described.close_time - described.start_time).total_seconds()
        [card] = progress_cards(fstack, message_id)
        shown = versions(fstack, card)
        assert 2 <= len(shown) <= ran_s / fstack.channel.progress_interval_s + 2
        assert "done after 5,000 events" not in json.dumps(shown)  # the answer is not on the card
        # docs/operations.md, "Live progress": 20 events for a Feishu turn without approvals, 3 more
        # for its progress, however many items Codex reports and however long it works.
        flood, quick = (
            await history_events(client, turn_id),
            await history_events(client, names.turn_workflow_id(CHAT, short)),
        )
        assert flood == quick == TURN_EVENTS_BOUND, (flood, quick)
        [answer] = answers(fstack, message_id)
        assert card_markdown(answer) == "done after 5,000 events"


def stop_value(card: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            value = node.get("value")
            if isinstance(value, dict) and value.get("ally") == "stop":
                found.append(value)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(card)
    return found[0]


@pytest.mark.faults
async def test_a_card_that_can_no_longer_be_edited_is_replaced_by_a_new_one_and_the_turn_goes_on(
    client: Client, tmp_path: Path
) -> None:
    async with progress_stack(client, tmp_path, "cli_progress_gone") as fstack:
        stack = fstack.stack
        stack.model.push(
            RunCommand(cmd="echo before", escalated=False),
            Hang(seconds=3.0, then=RunCommand(cmd="echo after", escalated=False)),
            Hang(seconds=3.0, then=Say(text="finished anyway")),
        )
        message_id = (await fstack.say(CHAT, "go on"))["event"]["message"]["message_id"]
        first = await fstack.fake.async_wait_for(lambda: progress_cards(fstack, message_id), timeout=30)
        # Feishu refuses every further edit of that card ("the message was recalled").
        fstack.fake.fail_next(
            f"/messages/{first[0].message_id}", method="PATCH", status=400, code=230011, times=99
        )
        result = await turn_result(client, CHAT, message_id)
        await asyncio.sleep(1.5)

        assert result.status == "completed"
        old, new = progress_cards(fstack, message_id)
        assert old.message_id == first[0].message_id
        assert "echo after" not in json.dumps(versions(fstack, old))
        assert "echo after" in json.dumps(versions(fstack, new))
        assert versions(fstack, new)[-1]["header"]["title"]["content"] == "Done"
        [answer] = answers(fstack, message_id)
        assert card_markdown(answer) == "finished anyway"


async def test_the_stop_button_on_the_progress_card_stops_the_turn_like_slash_stop(
    client: Client, tmp_path: Path
) -> None:
    async with progress_stack(client, tmp_path, "cli_progress_stop") as fstack:
        stack = fstack.stack
        stack.model.push(
            RunCommand(cmd="echo started", escalated=False), Hang(seconds=60, then=Say(text="too late"))
        )
        message_id = (await fstack.say(CHAT, "a long job"))["event"]["message"]["message_id"]
        [card] = await fstack.fake.async_wait_for(lambda: progress_cards(fstack, message_id), timeout=30)
        click = card_action_event(
            "ou_user", stop_value(card.content), card.message_id, CHAT, app_id=fstack.fake.app_id
        )
        answer = json.loads(lark.JSON.marshal(await fstack.deliver(click)))
        assert answer["toast"]["type"] == "success", answer
        result = await turn_result(client, CHAT, message_id, within=30)
        await asyncio.sleep(1.0)

        assert result.status == "interrupted"
        assert versions(fstack, card)[-1]["header"]["title"]["content"] == "Stopped"
        [reply] = answers(fstack, message_id)
        assert card_markdown(reply).startswith("Stopped.")


@contextmanager
def feishu_chat_worker(
    client: Client, fake: FakeFeishu, queue: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = os.environ | {
        "ALLY_TEST_TEMPORAL": client.service_client.config.target_host,
        "ALLY_TEST_QUEUE": queue,
        "ALLY_TEST_FEISHU_APP_ID": fake.app_id,
        "ALLY_TEST_FEISHU_SECRET": fake.app_secret,
        "ALLY_TEST_FEISHU_DOMAIN": fake.domain,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.feishu_chat_worker"],
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent_hook(),
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),  # noqa: SIM115
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.faults
async def test_progress_goes_on_after_a_kill_9_of_the_chats_worker_and_the_answer_comes_once(
    client: Client, tmp_path: Path
) -> None:
    app_id = "cli_progress_kill"
    forget_sdk_token(app_id)
    async with running_stack(client, tmp_path) as stack:
        with FakeFeishu(app_id=app_id) as fake:
            queue = f"feishu-kill-{uuid.uuid4().hex[:8]}"
            stack.queues.append(queue)
            chat = ChatRef(channel="feishu", chat_id=CHAT, worker_queue=queue)
            envelope = fake.record_inbound(message_event(CHAT, "a long job", app_id=app_id))
            message_id = envelope["event"]["message"]["message_id"]
            stack.model.push(
                RunCommand(cmd="echo before-the-kill", escalated=False),
                Hang(seconds=12.0, then=RunCommand(cmd="echo after-the-kill", escalated=False)),
                Hang(seconds=4.0, then=Say(text="survived the kill")),
            )
            log = tmp_path / "chat-worker.log"
            with feishu_chat_worker(client, fake, queue, log) as worker:
                await wait_polled(client, queue)
                await stack.send(chat, "a long job", message_id=message_id, settings=working_settings(stack))
                await fake.async_wait_for(
                    lambda: [m for m in fake.messages if "before-the-kill" in m.raw_content], timeout=30
                )
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
            await asyncio.sleep(1.0)  # `ally up` restarts a dead part after 1 s
            with feishu_chat_worker(client, fake, queue, log):
                result = await turn_result(client, CHAT, message_id, within=90)
                await asyncio.sleep(2.0)  # room for a second answer, if one were coming
            assert result.status == "completed"
            replies = [m for m in fake.messages if m.parent_id == message_id]
            after = [m for m in replies if "after-the-kill" in json.dumps(m.patches)]
            assert after, "no card showed progress once the worker was back"
            assert after[0].patches[-1]["header"]["title"]["content"] == "Done"
            assert len([m for m in replies if "survived the kill" in m.raw_content]) == 1
            # The same card: the follower's retry sent it again with the same uuid, which Feishu dedupes.
            assert len(replies) == 2, [m.raw_content[:80] for m in replies]
