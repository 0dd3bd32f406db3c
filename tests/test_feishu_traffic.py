"""Real-shaped Feishu traffic, as a new user sends it in the first week: pasted code, a bot removed
from a group, quoted replies, images in groups, strangers hitting the webhook. Real dispatcher, real
lark-oapi SDK against the fake Feishu, real dev server, real Codex with the scripted model."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from ally import names
from dev.fake_feishu import bot_added_event, mention
from dev.model_server import Hang, Say
from tests.feishu_stack import card_markdown, feishu_stack
from workflows.conversation import ConversationWorkflow
from workflows.turn import TurnWorkflow

pytestmark = [pytest.mark.feishu, pytest.mark.codex]


def user_texts(request: dict[str, Any]) -> list[str]:
    """The user messages of one model request, as Codex sent them."""
    texts: list[str] = []
    for item in request.get("input") or []:
        if isinstance(item, dict) and item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    texts.append(str(part.get("text")))
    return texts


@pytest.mark.faults
async def test_a_bot_removed_mid_turn_leaves_the_turn_undelivered_and_the_thread_is_kept(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with feishu_stack(client, tmp_path, "cli_feishu_traffic_removed") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        bot = [mention(fs.fake.bot_open_id, fs.fake.bot_name)]
        fs.stack.model.push(Hang(seconds=2, then=Say(text="Nobody will read this.")), Say(text="Back again."))

        asked = await fs.say(
            "oc_team", "@_user_1 remember 4711", chat_type="group", sender_open_id="ou_alice", mentions=bot
        )
        question = asked["event"]["message"]["message_id"]
        await fs.fake.async_wait_for(lambda: fs.stack.model.received(), timeout=30)
        fs.fake.remove_bot("oc_team")  # while Codex works on it
        await fs.deliver(bot_added_event("oc_team", removed=True, app_id=fs.fake.app_id))

        turn = client.get_workflow_handle_for(TurnWorkflow.run, names.turn_id("oc_team", question))
        result = await turn.result()
        description = await turn.describe()
        assert description.status == WorkflowExecutionStatus.COMPLETED  # not FAILED
        assert result.status == "completed" and result.thread_id
        assert description.typed_search_attributes.get(names.TURN_STATE) == "undelivered"
        refused = [c for c in fs.fake.calls_to(f"/messages/{question}/reply") if c.code == 230002]
        assert len(refused) == 1 and len(fs.fake.calls_to(f"/messages/{question}/reply")) == 1
        logged = [r for r in caplog.records if r.levelno >= logging.WARNING and "230002" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is None  # once, without a traceback
        conversation = client.get_workflow_handle_for(
            ConversationWorkflow.run, names.conversation_id("oc_team")
        )

        async def thread_kept() -> str | None:
            view = await conversation.query(ConversationWorkflow.view)
            return view.thread_id if view.running is None else None

        for _ in range(100):
            if await thread_kept():
                break
            await asyncio.sleep(0.1)
        assert await thread_kept() == result.thread_id

        fs.fake.add_bot("oc_team")
        await fs.deliver(bot_added_event("oc_team", app_id=fs.fake.app_id))
        again = await fs.say(
            "oc_team", "@_user_1 what number?", chat_type="group", sender_open_id="ou_alice", mentions=bot
        )
        (reply,) = await fs.wait_for_replies(again["event"]["message"]["message_id"])
        assert card_markdown(reply) == "Back again."
        second = fs.stack.model.received()[-1]
        assert any("remember 4711" in text for text in user_texts(second))  # the same Codex thread
        assert (await conversation.query(ConversationWorkflow.view)).thread_id == result.thread_id
