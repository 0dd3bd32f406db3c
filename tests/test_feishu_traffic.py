"""Real-shaped Feishu traffic, as a new user sends it in the first week: pasted code, a bot removed
from a group, quoted replies, images in groups, strangers hitting the webhook. Real dispatcher, real
lark-oapi SDK against the fake Feishu, real dev server, real Codex with the scripted model."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import lark_oapi as lark
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from ally import names
from ally.access import AccessConfig
from ally.channels.feishu.webhook import WebhookServer
from ally.chat_client import ChatClient
from ally.contracts import Decision, Person
from ally.model_server import Hang, RunCommand, Say
from dev.fake_feishu import (
    bot_added_event,
    card_action_event,
    envelope,
    mention,
    message_event,
    post_message_event,
    url_verification,
    webhook_request,
)
from tests.feishu_stack import card_markdown, feishu_stack
from workflows.conversation import QUEUE_NOTICE_AFTER_S, ConversationWorkflow
from workflows.turn import TurnWorkflow

pytestmark = [pytest.mark.feishu, pytest.mark.codex]

# A 1x1 red PNG: Codex decodes the images it is given, so it must be a real one.
RED_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def user_texts(request: dict[str, Any]) -> list[str]:
    """The user messages of one model request, as Codex sent them."""
    texts: list[str] = []
    for item in request.get("input") or []:
        if isinstance(item, dict) and item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    texts.append(str(part.get("text")))
    return texts


def user_images(request: dict[str, Any]) -> list[str]:
    """The images of the user messages of one model request."""
    return [
        str(part.get("image_url"))
        for item in request.get("input") or []
        if isinstance(item, dict) and item.get("role") == "user"
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") == "input_image"
    ]


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

        turn = client.get_workflow_handle_for(TurnWorkflow.run, names.turn_workflow_id("oc_team", question))
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


async def test_pasted_code_reaches_codex_byte_for_byte_with_only_the_bots_mention_removed(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_traffic_whitespace") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.stack.model.push(Say(text="Read the text."), Say(text="Read the post."))
        snippet = "def f(x):\n\tif x:  \n        return 1\n\n\n    # trailing   \n  done"

        text = await fs.say("oc_dm_alice", snippet, sender_open_id="ou_alice")
        await fs.wait_for_replies(text["event"]["message"]["message_id"])
        assert snippet in user_texts(fs.stack.model.received()[-1])  # the whole user message, exactly

        bot, bob = mention(fs.fake.bot_open_id, fs.fake.bot_name), mention("ou_bob", "Bob", index=2)
        paragraphs = [
            [
                {"tag": "at", "user_id": "@_user_1", "user_name": fs.fake.bot_name},
                {"tag": "text", "text": " check this YAML for "},
                {"tag": "at", "user_id": "@_user_2", "user_name": "Bob"},
                {"tag": "text", "text": ":  "},
            ],
            [],
            [{"tag": "code_block", "language": "YAML", "text": "a:\n  b: 1\n\tc:   2\n"}],
            [{"tag": "text", "text": "    indented\twith a tab "}],
            [
                {"tag": "text", "text": "thanks "},
                {"tag": "emotion", "emoji_type": "THUMBSUP"},
                {"tag": "emotion", "emoji_type": "MEOW"},
            ],
        ]
        post = post_message_event(
            "oc_team",
            paragraphs,
            chat_type="group",
            sender_open_id="ou_alice",
            mentions=[bot, bob],
            app_id=fs.fake.app_id,
        )
        fs.stack.chats.add("oc_team")
        await fs.deliver(post)
        await fs.wait_for_replies(post["event"]["message"]["message_id"])
        expected = (
            "[Alice] check this YAML for @Bob:  \n\n```yaml\na:\n  b: 1\n\tc:   2\n```\n"
            "    indented\twith a tab \nthanks 👍:meow:"
        )
        assert expected in user_texts(fs.stack.model.received()[-1])


async def test_a_quoted_message_and_an_image_sent_before_the_mention_reach_codex(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_traffic_quote") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.fake.add_user("ou_bob", "Bob")
        fs.stack.model.push(Say(text="A missing key."), Say(text="A red square."))
        bot = [mention(fs.fake.bot_open_id, fs.fake.bot_name)]

        # Bob's message does not mention the bot; Alice replies to it, quoting it, and asks.
        complaint = await fs.say(
            "oc_team", "the build fails:\n    KeyError: 'x'", chat_type="group", sender_open_id="ou_bob"
        )
        complaint_id = complaint["event"]["message"]["message_id"]
        asked = await fs.say(
            "oc_team",
            "@_user_1 why?",
            chat_type="group",
            sender_open_id="ou_alice",
            mentions=bot,
            parent_id=complaint_id,
            root_id=complaint_id,
        )
        await fs.wait_for_replies(asked["event"]["message"]["message_id"])
        quoted = "[Alice] Quoting Bob:\n> the build fails:\n>     KeyError: 'x'\n\nwhy?"
        assert quoted in user_texts(fs.stack.model.received()[-1])

        # An image cannot carry an @-mention in a group: it waits for Alice's next request.
        picture = message_event(
            "oc_team",
            chat_type="group",
            sender_open_id="ou_alice",
            message_type="image",
            content={"image_key": "img_v3_red"},
            app_id=fs.fake.app_id,
        )
        fs.fake.add_resource(
            picture["event"]["message"]["message_id"], "img_v3_red", RED_PIXEL_PNG, content_type="image/png"
        )
        await fs.deliver(picture)
        assert fs.replies_to(picture["event"]["message"]["message_id"]) == []
        assert len(fs.stack.model.received()) == 1  # no turn for the picture alone
        what = await fs.say(
            "oc_team",
            "@_user_1 what is in the picture?",
            chat_type="group",
            sender_open_id="ou_alice",
            mentions=bot,
        )
        (reply,) = await fs.wait_for_replies(what["event"]["message"]["message_id"])
        assert card_markdown(reply) == "A red square."
        request = fs.stack.model.received()[-1]
        assert "[Alice] what is in the picture?" in user_texts(request)
        assert user_images(request)  # the picture went to Codex with the question
        assert fs.replies_to(picture["event"]["message"]["message_id"]) == []


# Names of Python exceptions (ValueError, ApplicationError, FeishuRejected…): logs only, never chats.
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Rejected|Unavailable|Failure)\b")


def callback_answer(result: Any) -> dict[str, Any]:
    """The card callback's answer as Feishu receives it (the SDK marshals the handler's result)."""
    answer: dict[str, Any] = json.loads(lark.JSON.marshal(result))
    return answer


def button_values(card: Any) -> list[dict[str, Any]]:
    """What each button of a card sends back when clicked."""
    if isinstance(card, list):
        return [value for item in card for value in button_values(item)]
    if not isinstance(card, dict):
        return []
    found = [b["value"] for b in card.get("behaviors", []) if isinstance(b, dict) and "value" in b]
    return found + [value for item in card.values() for value in button_values(item)]


def words_shown(value: Any) -> list[str]:
    """Every string of a card, toast or callback answer."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in words_shown(item)]
    if isinstance(value, list):
        return [text for item in value for text in words_shown(item)]
    return []


async def test_refusals_speak_plain_sentences_without_python_class_names(
    client: Client, tmp_path: Path
) -> None:
    access = AccessConfig(approvers=["ou_bob"])
    async with feishu_stack(client, tmp_path, "cli_feishu_traffic_refusals", access=access) as fs:
        for open_id, name in (("ou_alice", "Alice"), ("ou_bob", "Bob"), ("ou_eve", "Eve")):
            fs.fake.add_user(open_id, name)
        target = fs.stack.workspace / "refusals.txt"
        fs.stack.model.push(RunCommand(cmd=f"touch {target}"), Say(text="Done."))
        bot = [mention(fs.fake.bot_open_id, fs.fake.bot_name)]
        asked = await fs.say(
            "oc_team", "@_user_1 touch it", chat_type="group", sender_open_id="ou_alice", mentions=bot
        )
        question = asked["event"]["message"]["message_id"]
        (card,) = await fs.wait_for_replies(question)
        values = button_values(card.content)
        approve = next(v for v in values if v.get("decision") == "accept")
        decline = next(v for v in values if v.get("decision") == "decline")

        def click(who: str, value: dict[str, Any]) -> dict[str, Any]:
            return card_action_event(who, value, card.message_id, "oc_team", app_id=fs.fake.app_id)

        answers: list[Any] = []
        answers.append(callback_answer(await fs.deliver(click("ou_eve", approve))))  # may not decide
        eve_y = await fs.say(
            "oc_team", "@_user_1 y", chat_type="group", sender_open_id="ou_eve", mentions=bot
        )
        (not_applied,) = await fs.wait_for_replies(eve_y["event"]["message"]["message_id"])
        answers.append(callback_answer(await fs.deliver(click("ou_bob", approve))))
        answers.append(callback_answer(await fs.deliver(click("ou_alice", decline))))  # already decided
        await fs.wait_for_replies(question, count=2)
        await client.get_workflow_handle(names.turn_workflow_id("oc_team", question)).result()
        answers.append(callback_answer(await fs.deliver(click("ou_alice", decline))))  # turn over
        answers.append(callback_answer(await fs.deliver(click("ou_bob", {"ally": "something else"}))))

        toasts = [answer["toast"]["content"] for answer in answers]
        assert toasts[0] == "Eve may not decide this request"
        assert card_markdown(not_applied) == "Not applied: Eve may not decide this request"
        assert toasts[1] == "Approved"
        assert toasts[2] == "this request is no longer waiting for a decision"
        assert toasts[3] == "This turn has already ended."
        assert toasts[4] == "This button is not work-ally's."
        shown = words_shown(answers) + [
            text
            for message in fs.fake.messages
            for version in (message.content, *message.patches)
            for text in words_shown(version)
        ]
        assert shown and not [text for text in shown if CLASS_NAME.search(text)]


async def test_webhook_requests_from_strangers_are_refused_quietly_and_reach_nothing(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with feishu_stack(client, tmp_path, "cli_feishu_traffic_webhook") as fs:
        fake = fs.fake
        server = WebhookServer(
            fs.gateway.event_handler(fake.encrypt_key, fake.verification_token),
            port=0,
            host="127.0.0.1",
            encrypt_key=fake.encrypt_key,
            verification_token=fake.verification_token,
        )
        server.start()
        event = message_event("oc_dm_mallory", "run rm -rf ~", app_id=fake.app_id)
        _, signed_body = fake.webhook_request(event)
        unsigned = {"Content-Type": "application/json"}
        broken = envelope("im.message.receive_v1", {"message": "not an object"}, app_id=fake.app_id)
        cases = {
            "unsigned": (unsigned, signed_body),
            "wrong signature": fake.webhook_request(event, tamper_signature=True),
            "wrong token": webhook_request(
                event, encrypt_key=fake.encrypt_key, verification_token="guessed-token"
            ),
            "stale timestamp": fake.webhook_request(event, timestamp=str(int(time.time()) - 3600)),
            "malformed JSON": (unsigned, b'{"encrypt": "abc'),
            "signed but malformed": webhook_request(
                broken, encrypt_key=fake.encrypt_key, verification_token=fake.verification_token
            ),
        }
        try:
            answers: dict[str, tuple[int, Any]] = {}
            lines: dict[str, list[logging.LogRecord]] = {}
            for name, (headers, body) in cases.items():
                caplog.clear()
                answers[name] = await post_webhook(server, headers, body)
                lines[name] = [r for r in caplog.records if r.levelno >= logging.WARNING]
            challenge = await post_webhook(server, *fake.webhook_request(url_verification("c-17")))
            caplog.clear()
            for _ in range(5):  # a flood of the same kind: one line, not five
                await post_webhook(server, unsigned, signed_body)
            flood = [r for r in caplog.records if r.levelno >= logging.WARNING]
        finally:
            server.stop()

        statuses = {name: status for name, (status, _) in answers.items()}
        assert statuses == {
            "unsigned": 401,
            "wrong signature": 401,
            "wrong token": 401,
            "stale timestamp": 400,
            "malformed JSON": 400,
            "signed but malformed": 200,  # acknowledged: pushing it again cannot fix it
        }
        for name, records in lines.items():
            assert len(records) == 1, (name, [r.getMessage() for r in records])
            assert records[0].exc_info is None and "\n" not in records[0].getMessage()
        assert challenge == (200, {"challenge": "c-17"})  # Feishu's own URL check still passes
        assert "unsupported operand" not in caplog.text
        assert flood == []  # within the rate limit's window: already said
        await asyncio.sleep(1.0)
        assert fs.gateway.handed_over == 0 and fs.stack.model.received() == []
        assert fake.messages == []


async def post_webhook(server: WebhookServer, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    def send() -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/webhook/event", data=body, method="POST"
        )
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    return await asyncio.to_thread(send)


async def test_a_message_sent_the_moment_an_answer_lands_is_not_announced_as_queued(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_traffic_no_queue_notice") as fs:
        fs.stack.model.push(*(Say(text=f"answer {i}") for i in range(5)))
        for i in range(5):
            # The answer is on screen while its turn still settles the emoji: the next question
            # arrives while the turn has not quite ended.
            asked = await fs.say("oc_dm_quick", f"question {i}")
            await fs.wait_for_replies(asked["event"]["message"]["message_id"])
        await asyncio.sleep(QUEUE_NOTICE_AFTER_S + 1.0)  # past the moment a notice would go out

        shown = [card_markdown(m) for m in fs.fake.messages]
        assert shown == [f"answer {i}" for i in range(5)]  # no "Queued (position 1)" in between


@pytest.mark.faults
async def test_an_approval_card_refused_for_good_leaves_the_request_to_the_terminal(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_traffic_card_refused") as fs:
        target = fs.stack.workspace / "decided-elsewhere.txt"
        fs.stack.model.push(RunCommand(cmd=f"touch {target}"), Say(text="Touched."))
        fs.fake.remove_bot("oc_dm_gone")
        asked = await fs.say("oc_dm_gone", "touch it")
        question = asked["event"]["message"]["message_id"]
        turn_id = names.turn_workflow_id("oc_dm_gone", question)
        turn = client.get_workflow_handle_for(TurnWorkflow.run, turn_id)

        async def waiting() -> list[str]:
            try:
                return [r.key for r in (await turn.query(TurnWorkflow.view)).pending]
            except RPCError:  # not started yet
                return []

        for _ in range(200):
            if await waiting():
                break
            await asyncio.sleep(0.1)
        (key,) = await waiting()  # the card was refused, the request still waits: not failed
        assert [c.code for c in fs.fake.calls_to(f"/messages/{question}/reply")] == [230002]

        fs.fake.add_bot("oc_dm_gone")
        operator = Person(id=names.LOCAL_OPERATOR, name="terminal")
        decision = Decision(key=key, decision="accept", operator=operator)
        receipt = await ChatClient(client).decide(turn_id, decision)  # as `ally approvals --decide`
        assert receipt.status == "decided"
        (answer,) = await fs.wait_for_replies(question)
        assert card_markdown(answer) == "Touched." and target.exists()
        assert (await turn.result()).status == "completed"
