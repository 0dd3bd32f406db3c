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
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from ally import names
from ally.contracts import ThreadSettings, TurnResult
from ally.model_server import ApplyPatch, CallTool, Hang, RunCommand, Say
from dev.fake_feishu import Message
from tests.feishu_stack import FeishuStack, OneAssistant, card_markdown, feishu_stack
from tests.stack import Stack
from workflows.turn import TurnWorkflow

pytestmark = [pytest.mark.codex, pytest.mark.feishu]

CHAT = "oc_progress"


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
