"""What a person may send, and what happens when it is too much: Codex's own input limit, Temporal's
payload limit, and text that is not valid UTF-8, through the terminal channel and through Feishu."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from ally.chat_client import MAX_MESSAGE_BYTES
from ally.contracts import Reply, TurnResult
from tests.feishu_stack import card_markdown, feishu_stack
from tests.stack import eventually, running_stack

pytestmark = pytest.mark.codex

CODEX_LIMIT = 1_048_576  # characters Codex takes in one turn's input (it says so when refusing)
TOO_LONG_FOR_CODEX = "x" * (CODEX_LIMIT + 1)


async def run_turn_attempts(turn: WorkflowHandle[Any, TurnResult]) -> list[int]:
    attempts = []
    async for event in turn.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attempts.append(event.activity_task_started_event_attributes.attempt)
    return attempts


def assert_said_plainly(text: str) -> None:
    assert "too long for Codex" in text
    assert f"{CODEX_LIMIT + 1:,} characters" in text and f"at most {CODEX_LIMIT:,}" in text
    assert "did not answer" not in text and "/retry" not in text


async def test_a_message_over_codexs_input_limit_is_answered_plainly_once_and_retry_says_the_same(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat()
        message = await stack.send(chat, TOO_LONG_FOR_CODEX)
        (refused,) = await eventually(lambda: stack.replies(chat, tone="problem"), what="the answer")
        result = await stack.turn_handle(chat, message).result()
        assert_said_plainly(refused.text)
        assert result.status == "failed"
        assert await run_turn_attempts(stack.turn_handle(chat, message)) == [1]  # refused, not retried

        await stack.send(chat, "/retry")

        def two_refusals() -> list[Reply] | None:
            found = stack.replies(chat, tone="problem")
            return found if len(found) == 2 else None

        again = await eventually(two_refusals, within=60, what="the retry's answer")
        assert again[1].text == refused.text
        assert stack.model.received() == []  # nothing of it ever reached the model
    assert not [r for r in caplog.records if "runtime host lost" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info and r.name.startswith("temporalio")]


@pytest.mark.feishu
async def test_feishu_a_message_over_codexs_limit_gets_the_same_plain_answer(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_input_codex_limit") as fs:
        event = await fs.say("oc_dm_long", TOO_LONG_FOR_CODEX)
        (reply,) = await fs.wait_for_replies(event["event"]["message"]["message_id"])
        assert_said_plainly(card_markdown(reply))
        assert reply.content["header"]["template"] == "red"
        assert fs.stack.model.received() == []


@pytest.mark.feishu
async def test_feishu_oversized_or_invalid_text_is_refused_in_words_and_nothing_reaches_codex(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_input_refused") as fs:
        huge = await fs.say("oc_dm_huge", "y" * (MAX_MESSAGE_BYTES + 1))
        (too_large,) = await fs.wait_for_replies(huge["event"]["message"]["message_id"])
        assert "too large" in card_markdown(too_large) and "at most 1,536 KB" in card_markdown(too_large)

        # Feishu's JSON may carry a lone surrogate escape: not text that can travel anywhere.
        broken = await fs.say(
            "oc_dm_huge", "", content=json.dumps({"text": "@@"}).replace("@@", "caf\\udce9")
        )
        (invalid,) = await fs.wait_for_replies(broken["event"]["message"]["message_id"])
        assert "not valid text" in card_markdown(invalid)

        assert fs.stack.model.received() == []
        assert fs.gateway.handed_over == 0
