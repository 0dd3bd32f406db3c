"""The approval policy in real turns: rules and autonomy decide before a person is asked.

Real dev server, real Codex, scripted model: the policy sees what Codex really sends (commands come
wrapped as `/bin/bash -lc '…'`), and its decisions reach Codex like a person's would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client

from ally.policy import PolicyConfig, Rule
from dev.model_server import RunCommand, Say
from tests.stack import eventually, running_stack

pytestmark = pytest.mark.codex


async def test_an_allow_rule_runs_the_command_without_asking_and_status_shows_why(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "allowed.txt"
        stack.model.push(RunCommand(cmd=f"touch {target}"), Say(text="Made it."))
        chat = stack.chat()
        policy = PolicyConfig(rules=[Rule(action="allow", command_prefix="touch")])
        message = await stack.send(chat, "write it", policy=policy)
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        await stack.turn_handle(chat, message).result()
        assert target.exists()
        assert stack.approvals(chat) == []  # nobody was asked

        await stack.send(chat, "/status")
        status = await eventually(lambda: stack.replies(chat, tone="notice"), what="the status")
        assert "Decided automatically:" in status[-1].text
        assert "accept" in status[-1].text and 'allow rule #1 (command_prefix "touch")' in status[-1].text


async def test_a_denied_command_is_never_accepted_even_when_trusted_and_the_chat_is_told(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        victim = stack.workspace / "keep.txt"
        victim.write_text("precious")
        stack.model.push(RunCommand(cmd=f"rm -f {victim}"), Say(text="Could not delete it."))
        chat = stack.chat()
        policy = PolicyConfig(
            mode="trusted",
            rules=[Rule(action="allow", command_prefix="rm"), Rule(action="deny", command_prefix="rm")],
        )
        await stack.send(chat, "delete it", policy=policy)
        answer = await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        assert answer[0].text == "Could not delete it."
        assert victim.read_text() == "precious"
        notices = stack.replies(chat, tone="notice")
        assert any(n.text.startswith("Declined by policy:") and "deny rule #2" in n.text for n in notices)
        # Codex was told "declined", as if a person had said no (the model saw the rejection).
        outputs = [
            i
            for body in stack.model.received()
            for i in body["input"]
            if i.get("type") == "function_call_output"
        ]
        assert outputs and "rejected" in str(outputs[-1]).lower()


async def test_read_only_mode_runs_a_listing_but_asks_before_writing(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "written.txt"
        stack.model.push(
            RunCommand(cmd=f"ls {stack.workspace}"),
            RunCommand(cmd=f"touch {target}"),
            Say(text="done"),
        )
        chat = stack.chat()
        await stack.send(chat, "look, then write", policy=PolicyConfig(mode="read_only"))
        asked = await eventually(lambda: stack.approvals(chat), what="a question about the write")
        assert [a.request.kind for a in asked] == ["command"] and "touch" in (asked[0].request.command or "")
        await asyncio.sleep(0.5)
        assert len(stack.approvals(chat)) == 1  # the listing never reached a person
        assert not target.exists()
