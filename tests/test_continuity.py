"""Continuity, as a person lives it in Feishu: late messages are not run behind their back, a thread
started in a terminal is picked up in the chat and handed back, a thread forks, and a decision taken
in the terminal leaves no live button on the card. Real dev server, real Codex with the scripted
model, the real lark-oapi SDK against the fake Feishu (docs/continuity.md)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lark_oapi as lark
import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle

from ally import names
from ally.chat_client import ChatClient
from ally.codex.binary import find_codex_binary
from ally.contracts import ConversationView, Decision, Person
from ally.model_server import RunCommand, Say
from dev.fake_feishu import Message, card_action_event, message_event
from tests.feishu_stack import FeishuStack, card_markdown, feishu_stack
from tests.stack import eventually, running_stack, second_host

pytestmark = [pytest.mark.feishu, pytest.mark.codex]

CHAT = "oc_dm_alice"
TWO_HOURS_MS = 2 * 3600 * 1000


def _buttons(card: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(card, dict):
        for behavior in card.get("behaviors") or []:
            if isinstance(behavior, dict) and isinstance(behavior.get("value"), dict):
                found.append(behavior["value"])
        for value in card.values():
            found += _buttons(value)
    elif isinstance(card, list):
        for item in card:
            found += _buttons(item)
    return found


def _text(message: Message) -> str:
    return json.dumps(message.content, ensure_ascii=False)


def _prompts(fs: FeishuStack) -> list[str]:
    """The newest user message of each request the model received, in order."""
    prompts = []
    for request in fs.stack.model.received():
        users = [
            part.get("text", "")
            for item in request.get("input", [])
            if item.get("role") == "user"
            for part in item.get("content", [])
            if isinstance(part, dict)
        ]
        prompts.append(users[-1] if users else "")
    return prompts


async def _click(fs: FeishuStack, card: Message, command: str) -> dict[str, Any]:
    value = next(v for v in _buttons(card.content) if v.get("command") == command)
    click = card_action_event("ou_alice", value, card.message_id, CHAT, app_id=fs.fake.app_id)
    answer: dict[str, Any] = json.loads(lark.JSON.marshal(await fs.deliver(click)))
    return answer


async def _late(fs: FeishuStack, texts: list[str]) -> list[str]:
    """Messages sent two hours ago, arriving together now (the bridge was down)."""
    fs.stack.chats.add(CHAT)
    ids = []
    sent = int(time.time() * 1000) - TWO_HOURS_MS
    for offset, text in enumerate(texts):
        envelope = message_event(
            CHAT, text, sender_open_id="ou_alice", app_id=fs.fake.app_id, create_time_ms=sent + offset
        )
        await fs.deliver(envelope)
        ids.append(envelope["event"]["message"]["message_id"])
    return ids


async def _ask(fs: FeishuStack, text: str, count: int = 1) -> list[Message]:
    event = await fs.say(CHAT, text, sender_open_id="ou_alice")
    return await fs.wait_for_replies(event["event"]["message"]["message_id"], count=count)


async def test_three_messages_sent_two_hours_ago_get_one_card_and_run_runs_them_in_order_once(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_stale_run") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.stack.model.push(Say(text="one done"), Say(text="two done"), Say(text="three done"))
        ids = await _late(fs, ["late one", "late two", "late three"])

        (card,) = await fs.wait_for_replies(ids[-1])
        await asyncio.sleep(1.5)  # room for a second card, or a turn, if one were coming
        assert [r for i in ids for r in fs.replies_to(i)] == [card]  # one card for the batch
        shown = _text(card)
        assert "3 messages" in shown and "late one" in shown and "late three" in shown
        assert fs.stack.model.received() == []  # nothing ran behind the person's back

        toast = await _click(fs, card, "/stale run")
        await _click(fs, card, "/stale run")  # a double click runs nothing twice
        assert toast["toast"]["type"] == "success"
        for message_id, answer in zip(ids, ["one done", "two done", "three done"], strict=True):
            replies = await fs.wait_for_replies(message_id, count=2 if message_id == ids[-1] else 1)
            assert card_markdown(replies[-1]) == answer  # (the card answers the last one too)
        prompts = _prompts(fs)
        assert len(prompts) == 3
        assert all(t in p for t, p in zip(["late one", "late two", "late three"], prompts, strict=True))
        patched = await fs.fake.async_wait_for(lambda: fs.fake.message(card.message_id).patches, timeout=10)
        assert "Running 3 messages" in json.dumps(patched[-1]) and _buttons(patched[-1]) == []

        fs.stack.model.push(Say(text="fresh answer"))
        (fresh,) = await _ask(fs, "and now?")
        assert card_markdown(fresh) == "fresh answer"
        await asyncio.sleep(1.0)
        assert len(fs.stack.model.received()) == 4  # each late message ran once


async def test_dropping_late_messages_runs_none_and_a_fresh_message_is_answered(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_stale_drop") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        ids = await _late(fs, ["old a", "old b", "old c"])
        (card,) = await fs.wait_for_replies(ids[-1])
        await _click(fs, card, "/stale drop")
        patched = await fs.fake.async_wait_for(lambda: fs.fake.message(card.message_id).patches, timeout=10)
        assert "Dropped 3 messages" in json.dumps(patched[-1]) and "Alice" in json.dumps(patched[-1])

        fs.stack.model.push(Say(text="fresh answer"))
        (fresh,) = await _ask(fs, "hello again")
        assert card_markdown(fresh) == "fresh answer"
        (prompt,) = _prompts(fs)
        assert "hello again" in prompt
        assert all(fs.replies_to(i) == [] for i in ids[:2])


async def test_a_decision_taken_in_ally_approvals_updates_the_feishu_card(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_decided_elsewhere") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        target = fs.stack.workspace / "from-terminal.txt"
        fs.stack.model.push(RunCommand(cmd=f"echo yes > {target}"), Say(text="Wrote it."))
        event = await fs.say(CHAT, "write the file", sender_open_id="ou_alice")
        question = event["event"]["message"]["message_id"]
        (card,) = await fs.wait_for_replies(question)
        assert _buttons(card.content)

        chats = ChatClient(client)
        rows = await chats.waiting_everywhere()
        (row,) = [r for r in rows if r.chat == CHAT]
        operator = Person(id=names.LOCAL_OPERATOR, name="alice-at-her-desk")
        receipt = await chats.decide(
            row.workflow_id, Decision(key=row.request.key, decision="accept", operator=operator)
        )
        assert receipt.status == "decided"

        patched = await fs.fake.async_wait_for(lambda: fs.fake.message(card.message_id).patches, timeout=15)
        shown = json.dumps(patched[-1], ensure_ascii=False)
        assert "Approved" in shown and "alice-at-her-desk" in shown
        assert _buttons(patched[-1]) == []  # no live button left on the card
        answers = await fs.wait_for_replies(question, count=2)
        assert card_markdown(answers[-1]) == "Wrote it." and target.exists()


def _terminal_codex(fs: FeishuStack, *args: str) -> subprocess.CompletedProcess[str]:
    """A plain Codex client in the assistant's workspace, as a person runs it in a terminal."""
    home = fs.stack.workspace.parent / "home"
    env = {**os.environ, "CODEX_HOME": str(fs.stack.runtime.codex_home), "HOME": str(home)}
    return subprocess.run(
        [str(find_codex_binary()), "exec", "--skip-git-repo-check", *args],
        cwd=fs.stack.workspace,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_a_thread_started_in_a_terminal_shows_in_threads_and_resume_continues_it(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_resume") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.stack.model.push(Say(text="terminal says hi"))
        started = await asyncio.to_thread(_terminal_codex, fs, "plan the migration from the terminal")
        assert started.returncode == 0, started.stderr[-2000:]
        thread_id = re.search(r"session id: (\S+)", started.stdout + started.stderr)
        assert thread_id is not None
        terminal_thread = thread_id.group(1)

        (listing,) = await _ask(fs, "/threads")
        shown = card_markdown(listing)
        assert terminal_thread in shown and "plan the migration" in shown

        (picked,) = await _ask(fs, "/resume 1")
        assert terminal_thread in card_markdown(picked) and "terminal says hi" in card_markdown(picked)

        fs.stack.model.push(Say(text="continuing"))
        before = len(fs.stack.model.received())
        (answer,) = await _ask(fs, "what did we plan?")
        assert card_markdown(answer) == "continuing"
        context = json.dumps(fs.stack.model.received()[before:], ensure_ascii=False)
        assert "plan the migration from the terminal" in context and "terminal says hi" in context
        view = await client.get_workflow_handle(names.conversation_id(CHAT)).query("view")
        assert view["thread_id"] == terminal_thread

        (listing,) = await _ask(fs, "/threads")
        assert "bound to this chat" in card_markdown(listing)


async def test_handoff_names_the_command_holds_chat_messages_and_take_back_runs_them_once(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_handoff") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.stack.model.push(Say(text="first answer"))
        await _ask(fs, "start something")

        (told,) = await _ask(fs, "/handoff")  # runs after the turn has ended: the thread is known
        view = await client.get_workflow_handle(names.conversation_id(CHAT)).query("view")
        thread_id = view["thread_id"]
        text = card_markdown(told)
        assert f"codex resume {thread_id}" in text and str(fs.stack.workspace) in text
        assert str(fs.stack.runtime.codex_home) in text

        # The terminal really can write the thread now (the runtime let go of its writer lock).
        fs.stack.model.push(Say(text="done in the terminal"))
        terminal = await asyncio.to_thread(
            _terminal_codex, fs, "resume", thread_id, "finish it in the terminal"
        )
        assert terminal.returncode == 0, terminal.stderr[-2000:]

        event = await fs.say(CHAT, "are you there?", sender_open_id="ou_alice")
        held = event["event"]["message"]["message_id"]
        (card,) = await fs.wait_for_replies(held)
        assert "handed off" in _text(card) and {b["command"] for b in _buttons(card.content)} == {
            "/takeback",
            "/send",
        }
        await asyncio.sleep(1.0)
        prompts_before = len(fs.stack.model.received())
        assert "finish it in the terminal" in _prompts(fs)[-1]  # no turn for the held message

        fs.stack.model.push(Say(text="back in the chat"))
        await _click(fs, card, "/takeback")
        await _click(fs, card, "/takeback")
        took = await fs.fake.async_wait_for(
            lambda: [m for m in fs.replies_to(card.message_id) if "Taken back" in _text(m)] or None,
            timeout=30,
        )
        assert "done in the terminal" in _text(took[0])  # what the terminal added, read from Codex
        answers = await fs.wait_for_replies(held, count=2)
        assert card_markdown(answers[-1]) == "back in the chat"
        await asyncio.sleep(1.0)
        assert len(fs.stack.model.received()) == prompts_before + 1  # it ran once
        context = json.dumps(fs.stack.model.received()[-1], ensure_ascii=False)
        assert "finish it in the terminal" in context  # the chat's turn continued the terminal's work


async def _threads_of(fs: FeishuStack) -> list[Any]:
    return list(await fs.stack.runtime.list_threads(str(fs.stack.workspace)))


async def test_fork_starts_a_new_thread_and_leaves_the_old_one_intact(client: Client, tmp_path: Path) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_fork") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.stack.model.push(Say(text="way one"))
        await _ask(fs, "try it one way")
        handle = client.get_workflow_handle(names.conversation_id(CHAT))
        (old_thread,) = [t.id for t in await _threads_of(fs)]

        (forked,) = await _ask(fs, "/fork")  # runs once the turn has ended
        old = old_thread
        new = (await handle.query("view"))["thread_id"]
        assert new != old and new in card_markdown(forked) and old in card_markdown(forked)

        fs.stack.model.push(Say(text="way two"))
        await _ask(fs, "try another way")
        before = await fs.stack.runtime.read_thread(old)
        assert [t.final_text for t in before.turns] == ["way one"]  # the original is intact
        after = await fs.stack.runtime.read_thread(new)
        assert [t.final_text for t in after.turns][-1] == "way two"

        (listing,) = await _ask(fs, "/threads")
        shown = card_markdown(listing)
        assert old in shown and new in shown and "bound to this chat" in shown
        assert {t.id for t in await _threads_of(fs)} == {old, new}


async def eventually_async(
    handle: WorkflowHandle[Any, Any], ready: Callable[[ConversationView], bool]
) -> None:
    for _ in range(100):
        if ready(await handle.query("view", result_type=ConversationView)):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the conversation never got there")


async def _patches(fs: FeishuStack, card: Message) -> list[Any]:
    """The card's updates, once it has one."""

    def patches() -> list[Any] | None:
        return fs.fake.message(card.message_id).patches or None

    return await fs.fake.async_wait_for(patches, timeout=15)


async def test_every_card_that_offered_late_messages_shows_the_choice_even_one_still_on_its_way(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_stale_cards") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        # Two batches, two cards on screen (the second lists everything still held): one choice
        # settles both.
        first = await _late(fs, ["old a"])
        (card_a,) = await fs.wait_for_replies(first[-1])
        second = await _late(fs, ["old b"])
        (card_b,) = await fs.wait_for_replies(second[-1])
        assert "old a" in _text(card_b) and "old b" in _text(card_b)
        await _click(fs, card_b, "/stale drop")
        for card in (card_a, card_b):
            patched = await _patches(fs, card)
            assert "Dropped 2 messages" in json.dumps(patched[-1]) and _buttons(patched[-1]) == []

        # A third batch's card is still on its way (Feishu is slow) when the card before it is
        # clicked: once it lands, it shows the choice too, with no button left.
        third = await _late(fs, ["old c"])
        (card_c,) = await fs.wait_for_replies(third[-1])
        fs.fake.delay_next("/reply", 5.0, method="POST")
        fourth = await _late(fs, ["old d"])
        await asyncio.sleep(2.8)  # the card for "old d" has gathered and is being sent
        assert fs.replies_to(fourth[-1]) == []
        fs.stack.model.push(Say(text="c done"), Say(text="d done"))
        await _click(fs, card_c, "/stale run")
        (card_d,) = await fs.fake.async_wait_for(
            lambda: [m for m in fs.replies_to(fourth[-1]) if card_markdown(m) != "d done"] or None, timeout=20
        )
        for card in (card_c, card_d):
            patched = await _patches(fs, card)
            assert "Running 2 messages" in json.dumps(patched[-1]) and _buttons(patched[-1]) == []
        await fs.fake.async_wait_for(
            lambda: [m for m in fs.replies_to(fourth[-1]) if card_markdown(m) == "d done"] or None, timeout=30
        )
        assert [p.split()[-1] for p in _prompts(fs)] == ["c", "d"]  # each ran once, in order


async def test_fork_sent_while_a_turn_waits_for_an_approval_is_told_it_waits_and_runs_after_it(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_wait_told") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        target = fs.stack.workspace / "waited.txt"
        fs.stack.model.push(RunCommand(cmd=f"echo yes > {target}"), Say(text="Wrote it."))
        event = await fs.say(CHAT, "write the file", sender_open_id="ou_alice")
        question = event["event"]["message"]["message_id"]
        await fs.wait_for_replies(question)  # the approval card: the turn waits

        fork = await fs.say(CHAT, "/fork", sender_open_id="ou_alice")
        fork_id = fork["event"]["message"]["message_id"]
        (told,) = await fs.wait_for_replies(fork_id, within=10)
        assert "/fork runs as soon as the running turn has ended" in card_markdown(told)
        handle = client.get_workflow_handle(names.conversation_id(CHAT))
        assert (await handle.query("view"))["running"] == "write the file"  # nothing forked yet

        chats = ChatClient(client)
        (row,) = [r for r in await chats.waiting_everywhere() if r.chat == CHAT]
        operator = Person(id=names.LOCAL_OPERATOR, name="alice-at-her-desk")
        await chats.decide(
            row.workflow_id, Decision(key=row.request.key, decision="accept", operator=operator)
        )
        replies = await fs.wait_for_replies(fork_id, count=2, within=30)
        assert card_markdown(replies[-1]).startswith("Forked:")
        (old,) = [t.id for t in await _threads_of(fs) if t.id != (await handle.query("view"))["thread_id"]]
        assert old in card_markdown(replies[-1])


@pytest.mark.faults
async def test_fork_when_the_host_has_gone_away_says_so_and_the_conversation_lives_on(
    client: Client, tmp_path: Path
) -> None:
    async with (
        running_stack(client, tmp_path / "a") as stack,
        second_host(stack, tmp_path / "b", "gone") as host,
    ):
        chat = stack.chat()
        host.model.push(Say(text="first answer"))
        await stack.send(chat, "start something", discovery_queue=host.pinned_queue)
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the first answer")
        handle = stack.conversation_handle(chat)
        await eventually_async(handle, lambda view: view.thread_id is not None)

        await host.stop()
        await stack.send(chat, "/fork", discovery_queue=host.pinned_queue)
        told = await eventually(
            lambda: [r for r in stack.replies(chat) if "did not answer" in r.text],
            within=60,
            what="the host-gone notice",
        )
        assert host.name in told[0].text and "/fork did nothing" in told[0].text
        await stack.send(chat, "/status", discovery_queue=host.pinned_queue)
        await eventually(lambda: [r for r in stack.replies(chat) if "Thread:" in r.text], what="/status")
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
