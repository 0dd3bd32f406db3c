"""Continuity from the terminal: `ally threads` lists an assistant's Codex threads on its host (a plain
Codex client's too) with the chats each is bound to, and `ally handoff` hands one to a chat, which
is told what it picked up and continues it. The real `ally` command against the real dev server,
real Codex with the scripted model, the real lark-oapi SDK against the fake Feishu
(docs/continuity.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle

from ally import names
from ally.model_server import Say
from dev.fake_feishu import Message
from tests.feishu_stack import FeishuStack, card_markdown, feishu_stack
from tests.test_cli import ally, cli_env, one_json_document
from tests.test_continuity import CHAT, _ask, _prompts, _terminal_codex

pytestmark = [pytest.mark.feishu, pytest.mark.codex]

OTHER_CHAT = "oc_dm_alice_at_her_desk"


def _cli(fs: FeishuStack, client: Client, folder: Path) -> dict[str, str]:
    """An `ally` whose default assistant is the stack's: its workspace, on the stack's host."""
    home = folder / "cli-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[assistants.default]\nworkspace = "{fs.stack.workspace}"\nhost = "{fs.stack.host}"\n\n'
        f'[assistants.far]\nname = "Far"\nworkspace = "{fs.stack.workspace}"\n'
        f'host = "nowhere-{fs.stack.host}"\n',
        encoding="utf-8",
    )
    return cli_env(home, WORK_ALLY_TEMPORAL__ADDRESS=client.service_client.config.target_host)


async def eventually_bound(handle: WorkflowHandle[Any, Any], thread_id: str) -> None:
    """The conversation holds the thread once its turn has ended (a moment after the answer)."""
    for _ in range(100):
        if (await handle.query("view"))["thread_id"] == thread_id:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the conversation never held {thread_id}")


def _new_in_chat(fs: FeishuStack, before: set[str]) -> list[Message]:
    return [m for m in fs.fake.messages if m.chat_id == CHAT and m.message_id not in before]


async def test_ally_threads_shows_where_threads_are_bound_and_ally_handoff_gives_a_terminal_thread_to_a_chat(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_continuity_terminal") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        env = _cli(fs, client, tmp_path)
        fs.stack.model.push(Say(text="chat answer"))
        await _ask(fs, "start something in the chat")
        (chat_thread,) = [t.id for t in await fs.stack.runtime.list_threads(str(fs.stack.workspace))]

        fs.stack.model.push(Say(text="terminal says hi"))
        started = await asyncio.to_thread(_terminal_codex, fs, "plan the migration from the terminal")
        assert started.returncode == 0, started.stderr[-2000:]
        (terminal_thread,) = [
            t.id for t in await fs.stack.runtime.list_threads(str(fs.stack.workspace)) if t.id != chat_thread
        ]
        handle = client.get_workflow_handle(names.conversation_id(CHAT))
        await eventually_bound(handle, chat_thread)

        listed = one_json_document(await ally(env, "threads", "--json"))
        rows = {row["thread"]["thread_id"]: row for row in listed["threads"]}
        assert set(rows) == {chat_thread, terminal_thread}
        assert listed["host"] == fs.stack.host and listed["workspace"] == str(fs.stack.workspace)
        assert [b["chat"] for b in rows[chat_thread]["bound"]] == [CHAT]
        assert rows[terminal_thread]["bound"] == []
        assert "plan the migration" in rows[terminal_thread]["thread"]["title"]
        shown = await ally(env, "threads")
        assert shown.returncode == 0, shown.stderr
        (chat_line,) = [line for line in shown.stdout.splitlines() if "start something" in line]
        assert f"bound to chat {CHAT}" in chat_line
        assert terminal_thread in shown.stdout

        before = {m.message_id for m in fs.fake.messages}
        handed = await ally(env, "handoff", terminal_thread, "--to", CHAT)
        assert handed.returncode == 0, handed.stderr
        assert f"Chat {CHAT} now continues thread {terminal_thread}" in handed.stdout
        told = await fs.fake.async_wait_for(lambda: _new_in_chat(fs, before) or None, timeout=15)
        text = card_markdown(told[0])
        assert "from the terminal" in text and terminal_thread in text and "terminal says hi" in text
        assert told[0].parent_id == ""  # a message of its own: nothing in the chat to reply to

        fs.stack.model.push(Say(text="continuing the plan"))
        (answer,) = await _ask(fs, "what did we plan?")
        assert card_markdown(answer) == "continuing the plan"
        assert "plan the migration from the terminal" in json.dumps(fs.stack.model.received()[-1])

        await _ask(fs, "/handoff")
        listed = one_json_document(await ally(env, "threads", "--json"))
        rows = {row["thread"]["thread_id"]: row for row in listed["threads"]}
        assert [(b["chat"], b["handed_off"]) for b in rows[terminal_thread]["bound"]] == [(CHAT, True)]
        assert rows[chat_thread]["bound"] == []
        shown = await ally(env, "threads")
        assert "(handed off to a terminal)" in shown.stdout

        # /threads in another chat says where each thread is bound, beyond that chat too.
        other = await fs.say(OTHER_CHAT, "/threads", sender_open_id="ou_alice")
        (listing,) = await fs.wait_for_replies(other["event"]["message"]["message_id"])
        (line,) = [line for line in card_markdown(listing).splitlines() if "plan the migration" in line]
        assert f"bound to chat {CHAT}, handed off to a terminal" in line

        # Bad input is refused in words, with exit 2; a host that does not answer, exit 1.
        missing = await ally(env, "handoff", "019a0000-0000-7000-8000-000000000000", "--to", CHAT)
        assert missing.returncode == 2 and "no Codex thread" in missing.stderr, missing.stderr
        nobody = await ally(env, "handoff", terminal_thread, "--to", "oc_nobody")
        assert nobody.returncode == 2 and "no conversation with default" in nobody.stderr, nobody.stderr
        unknown = await ally(env, "threads", "--assistant", "nobody")
        assert unknown.returncode == 2 and "no assistant called 'nobody'" in unknown.stderr
        far = await ally(env, "threads", "--assistant", "Far")
        assert far.returncode == 1 and "no Codex runtime host answered for Far" in far.stderr, far.stderr
        for result in (missing, nobody, unknown, far):
            assert "Error" not in result.stderr and "Traceback" not in result.stderr
        assert len(_prompts(fs)) == 3  # chat, terminal, the chat continuing the terminal's thread
