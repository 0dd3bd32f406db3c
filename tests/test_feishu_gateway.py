"""Feishu end to end, as a person in a chat lives it: real dispatcher, real lark-oapi SDK against the
fake Feishu, real dev server, real Codex with the scripted model."""

from __future__ import annotations

import asyncio
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
from temporalio.client import Client

from ally import names
from ally.access import AccessConfig
from ally.channels.feishu.channel import ApprovalCards
from ally.channels.feishu.webhook import WebhookServer
from ally.model_server import Hang, RunCommand, Say
from dev.fake_feishu import Reaction as FakeReaction
from dev.fake_feishu import (
    card_action_event,
    envelope,
    mention,
    message_event,
    reaction_event,
    recalled_event,
)
from tests.feishu_stack import FeishuStack, card_markdown, feishu_stack

pytestmark = [pytest.mark.feishu, pytest.mark.codex]


def callback_answer(result: Any) -> dict[str, Any]:
    """The card callback's answer as Feishu receives it (the SDK marshals the handler's result)."""
    answer: dict[str, Any] = json.loads(lark.JSON.marshal(result))
    return answer


def received_text(fs: FeishuStack) -> str:
    return json.dumps(fs.stack.model.received(), ensure_ascii=False)


async def test_a_private_message_gets_one_card_reply_in_its_chat_answering_that_message(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_p2p") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.stack.model.push(Say(text="Hello **Alice**, all good."))

        event = await fs.say("oc_dm_alice", "how is the build?", sender_open_id="ou_alice")
        question = event["event"]["message"]["message_id"]
        (reply,) = await fs.wait_for_replies(question)
        await asyncio.sleep(1.0)  # room for a duplicate, if one were coming

        assert fs.fake.messages == [reply]
        assert (reply.chat_id, reply.parent_id, reply.msg_type) == ("oc_dm_alice", question, "interactive")
        assert card_markdown(reply) == "Hello **Alice**, all good."
        assert reply.uuid and len(reply.uuid) <= 50
        assert "how is the build?" in received_text(fs) and "[Alice]" not in received_text(fs)

        # The person saw work start on their message, then end: "working" taken off, "done" put on.
        def on_question() -> list[FakeReaction]:
            return [r for r in fs.fake.reactions if r.message_id == question]

        await fs.fake.async_wait_for(lambda: len(on_question()) == 2, timeout=10)
        reactions = on_question()
        assert {(r.emoji_type, r.deleted) for r in reactions} == {("OnIt", True), ("DONE", False)}


async def test_in_a_group_only_an_at_mention_is_answered_and_codex_learns_who_spoke(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_group") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.stack.model.push(Say(text="Tests pass."))

        chatter = await fs.say("oc_team", "lunch anyone?", chat_type="group", sender_open_id="ou_alice")
        asked = await fs.say(
            "oc_team",
            "@_user_1 run the tests",
            chat_type="group",
            sender_open_id="ou_alice",
            mentions=[mention(fs.fake.bot_open_id, fs.fake.bot_name)],
        )
        (reply,) = await fs.wait_for_replies(asked["event"]["message"]["message_id"])

        assert fs.replies_to(chatter["event"]["message"]["message_id"]) == []
        assert card_markdown(reply) == "Tests pass."
        assert len(fs.stack.model.received()) == 1
        assert "[Alice] run the tests" in received_text(fs)  # the mention is gone, the name is there
        assert "lunch" not in received_text(fs)


async def test_a_clicked_approval_runs_the_command_and_the_card_shows_who_approved_once(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_approve") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        target = fs.stack.workspace / "approved.txt"
        fs.stack.model.push(RunCommand(cmd=f"echo yes > {target}"), Say(text="Wrote it."))

        event = await fs.say("oc_dm_alice", "write the file", sender_open_id="ou_alice")
        question = event["event"]["message"]["message_id"]
        (card,) = await fs.wait_for_replies(question)
        assert card.content["header"]["title"]["content"] == "Run this command?"
        assert "approved.txt" in json.dumps(card.content) and not target.exists()
        approve = next(
            v
            for v in _button_values(card.content)
            if v.get("decision") == "accept"  # the "Approve" button
        )
        click = card_action_event("ou_alice", approve, card.message_id, "oc_dm_alice", app_id=fs.fake.app_id)

        first = callback_answer(await fs.deliver(click))
        replayed = callback_answer(await fs.deliver(click))  # Feishu re-pushes; people double-click

        assert first["toast"] == {"type": "success", "content": "Approved"}
        assert "Alice" in json.dumps(first["card"]["data"], ensure_ascii=False)  # shown at once
        assert replayed["toast"]["type"] in ("success", "info")
        answers = await fs.wait_for_replies(question, count=2)
        assert card_markdown(answers[-1]) == "Wrote it."
        assert target.read_text().strip() == "yes"
        patched = await fs.fake.async_wait_for(lambda: fs.fake.message(card.message_id).patches, timeout=10)
        shown = json.dumps(patched[-1], ensure_ascii=False)
        assert "Approved" in shown and "Alice" in shown and "UTC" in shown
        assert _button_values(patched[-1]) == []  # no buttons left to click
        turn = client.get_workflow_handle(names.turn_workflow_id("oc_dm_alice", question))
        await turn.result()
        history = await turn.fetch_history()
        accepted = [
            e for e in history.events if e.HasField("workflow_execution_update_accepted_event_attributes")
        ]
        assert len(accepted) == 1


async def test_a_text_y_and_a_thumbs_up_answer_pending_approvals_even_after_a_restart(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_shortcut") as fs:
        fs.fake.add_user("ou_alice", "Alice")
        first, second = fs.stack.workspace / "first.txt", fs.stack.workspace / "second.txt"
        fs.stack.model.push(
            RunCommand(cmd=f"touch {first}"), RunCommand(cmd=f"touch {second}"), Say(text="Both.")
        )

        event = await fs.say("oc_dm_alice", "touch two files", sender_open_id="ou_alice")
        question = event["event"]["message"]["message_id"]
        await fs.wait_for_replies(question)  # the first approval card
        fs.channel.approvals = ApprovalCards()  # as after a gateway restart: nothing remembered
        yes = await fs.say("oc_dm_alice", "y", sender_open_id="ou_alice")
        cards = await fs.wait_for_replies(question, count=2)
        fs.channel.approvals = ApprovalCards()  # the thumbs-up must find the card's request by reading it
        await fs.deliver(
            reaction_event(
                cards[1].message_id, "THUMBSUP", operator_open_id="ou_alice", app_id=fs.fake.app_id
            )
        )
        answers = await fs.wait_for_replies(question, count=3)

        assert card_markdown(answers[-1]) == "Both."
        assert first.exists() and second.exists()
        assert fs.replies_to(yes["event"]["message"]["message_id"]) == []  # a decision, not a prompt
        assert "Both." in card_markdown(answers[-1]) and len(fs.stack.model.received()) == 3


async def test_an_80_kb_answer_arrives_whole_across_several_cards(client: Client, tmp_path: Path) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_long") as fs:
        verdicts = ["needs a **fix**", "fine", "fine"]
        long_answer = "".join(
            f'{i}. Checked `module_{i}.py`: {verdicts[i % 3]} - see "notes" \\ above.\n' for i in range(1300)
        )
        assert len(long_answer.encode()) > 80_000
        fs.stack.model.push(Say(text=long_answer))

        event = await fs.say("oc_dm_bob", "review everything")
        question = event["event"]["message"]["message_id"]
        await fs.wait_for_replies(question)
        await asyncio.sleep(2.0)  # let the remaining cards land
        parts = fs.replies_to(question)

        assert len(parts) >= 3
        assert "".join(card_markdown(part) for part in parts) == long_answer  # nothing truncated
        assert all(len(call.raw_body) <= 30 * 1024 for call in fs.fake.calls_to("/reply"))
        assert len({part.uuid for part in parts}) == len(parts)


async def test_rate_limit_storms_and_server_errors_still_deliver_the_reply_exactly_once(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_faults", sdk_timeout_s=1.5) as fs:
        fs.stack.model.push(Say(text="Made it through."))
        fs.fake.fail_next("/reply", status=429, code=99991400, times=3, reset_seconds=1)
        fs.fake.fail_next("/reply", status=503, code=1, msg="service unavailable")
        fs.fake.fail_next("/reply", status=502, body="<html>bad gateway</html>")
        fs.fake.delay_next("/reply", 2.5)  # lands after the SDK gave up: the retry must not duplicate it

        started = time.monotonic()
        event = await fs.say("oc_dm_carol", "hello?")
        question = event["event"]["message"]["message_id"]
        (reply,) = await fs.wait_for_replies(question, within=90)
        await asyncio.sleep(3.0)  # the slow attempt and any retry have landed by now

        assert fs.replies_to(question) == [reply] and card_markdown(reply) == "Made it through."
        statuses = [call.status for call in fs.fake.calls_to("/reply")]
        assert statuses[:5] == [429, 429, 429, 503, 502]
        assert time.monotonic() - started >= 3.0  # each 429 waited for x-ogw-ratelimit-reset
        assert {call.body["uuid"] for call in fs.fake.calls_to("/reply")} == {reply.uuid}


async def test_bad_events_are_refused_or_acknowledged_with_a_log_line_and_the_next_one_is_served(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ally.channels.feishu")
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_bad") as fs:
        fs.stack.model.push(Say(text="Still here."), Say(text="And over the webhook."))
        app = fs.fake.app_id

        # Long-connection path: not JSON at all -> the SDK raises, lark.ws.Client acks 500 and logs.
        with pytest.raises(Exception, match="Expecting value"):
            await fs.deliver_bytes(b"\x00 not json")
        # A message event without its message: acknowledged (a re-push cannot fix it), logged.
        broken = envelope("im.message.receive_v1", {"sender": {"sender_id": {"open_id": "ou_x"}}}, app_id=app)
        assert await fs.deliver_bytes(json.dumps(broken).encode()) is None
        # An event type nobody subscribed: the catch-all acknowledges it instead of a 500 retry loop.
        assert await fs.deliver(envelope("contact.user.created_v3", {"object": {}}, app_id=app)) is None
        assert "malformed message event" in caplog.text
        assert "acknowledged contact.user.created_v3 event" in caplog.text
        ok = await fs.say("oc_dm_dave", "are you alive?")
        (reply,) = await fs.wait_for_replies(ok["event"]["message"]["message_id"])
        assert card_markdown(reply) == "Still here."

        # Webhook path, real encryption and signatures, over HTTP with mangled header case.
        webhook_handler = fs.gateway.event_handler(fs.fake.encrypt_key, fs.fake.verification_token)
        server = WebhookServer(
            webhook_handler,
            port=0,
            host="127.0.0.1",
            encrypt_key=fs.fake.encrypt_key,
            verification_token=fs.fake.verification_token,
        )
        server.start()
        try:
            good = message_event("oc_dm_erin", "over the webhook", app_id=app)
            fs.stack.chats.add("oc_dm_erin")
            tampered = await _post(server, *fs.fake.webhook_request(good, tamper_signature=True))
            stale = await _post(
                server, *fs.fake.webhook_request(good, timestamp=str(int(time.time()) - 3600))
            )
            unknown = await _post(
                server, *fs.fake.webhook_request(envelope("drive.file.edit_v1", {}, app_id=app))
            )
            accepted = await _post(server, *fs.fake.webhook_request(good))
        finally:
            server.stop()
        assert tampered[0] == 401 and stale[0] == 400 and unknown[0] == 200
        assert accepted == (200, {"msg": "success"})
        assert re.search(r"webhook request refused: timestamp is 36\d\d s old", caplog.text)
        (answer,) = await fs.wait_for_replies(good["event"]["message"]["message_id"])
        assert card_markdown(answer) == "And over the webhook."
        assert len(fs.stack.model.received()) == 2


async def _post(server: WebhookServer, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    def send() -> tuple[int, Any]:
        # urllib rewrites header names ("X-lark-signature"): the server must restore the exact case.
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.port}/webhook/event", data=body, method="POST"
        )
        for name, value in headers.items():
            request.add_header(name.lower(), value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    return await asyncio.to_thread(send)


def _button_values(card: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(card, dict):
        found += [b["value"] for b in card.get("behaviors", []) if isinstance(b, dict) and "value" in b]
        for value in card.values():
            found += _button_values(value)
    elif isinstance(card, list):
        for item in card:
            found += _button_values(item)
    return found


async def test_a_recalled_queued_message_never_runs(client: Client, tmp_path: Path) -> None:
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_recall") as fs:
        fs.stack.model.push(Hang(seconds=3, then=Say(text="first")), Say(text="third"))
        first = await fs.say("oc_dm_bob", "a slow one", sender_open_id="ou_bob")
        second = await fs.say("oc_dm_bob", "never mind this one", sender_open_id="ou_bob")
        third = await fs.say("oc_dm_bob", "but this one", sender_open_id="ou_bob")
        recalled = second["event"]["message"]["message_id"]
        await fs.deliver(recalled_event(recalled, "oc_dm_bob", app_id=fs.fake.app_id))

        # (a "Queued (position …)" notice may come first, when the turn was already running)
        await fs.fake.async_wait_for(
            lambda: any(card_markdown(m) == "third" for m in fs.fake.messages), timeout=60
        )
        answer = next(m for m in fs.fake.messages if card_markdown(m) == "third")
        assert answer.parent_id == third["event"]["message"]["message_id"]
        to_first = await fs.wait_for_replies(first["event"]["message"]["message_id"])
        assert card_markdown(to_first[-1]) == "first"
        asked = [str(body["input"]) for body in fs.stack.model.received()]
        assert len(asked) == 2 and not any("never mind this one" in text for text in asked)


async def test_the_group_role_matrix_prompter_approver_outsider(client: Client, tmp_path: Path) -> None:
    access = AccessConfig(
        chats=["oc_team"], users=["ou_alice", "ou_carol"], prompters=["ou_alice"], approvers=["ou_bob"]
    )
    async with feishu_stack(client, tmp_path, "cli_feishu_e2e_roles", access=access) as fs:
        for open_id, name in (
            ("ou_alice", "Alice"),
            ("ou_bob", "Bob"),
            ("ou_carol", "Carol"),
            ("ou_eve", "Eve"),
        ):
            fs.fake.add_user(open_id, name)
        target = fs.stack.workspace / "deployed.txt"
        fs.stack.model.push(RunCommand(cmd=f"touch {target}"), Say(text="Deployed."))
        bot = [mention(fs.fake.bot_open_id, fs.fake.bot_name)]

        # An outsider and an allowed user who is not a prompter: refused, nothing reaches Codex.
        for who in ("ou_eve", "ou_carol"):
            refused = await fs.say(
                "oc_team", "@_user_1 deploy", chat_type="group", sender_open_id=who, mentions=bot
            )
            (no,) = await fs.wait_for_replies(refused["event"]["message"]["message_id"])
            assert "may not ask" in card_markdown(no)
        assert fs.stack.model.received() == []

        # An unknown chat: one "not enabled here", not one per message.
        for _ in range(2):
            await fs.say("oc_elsewhere", "hello", sender_open_id="ou_alice")
        await asyncio.sleep(0.5)
        elsewhere = [m for m in fs.fake.messages if m.chat_id == "oc_elsewhere"]
        assert len(elsewhere) == 1 and "not enabled" in card_markdown(elsewhere[0])

        # The prompter asks; the outsider's click is refused and changes nothing; the approver's runs it.
        asked = await fs.say(
            "oc_team", "@_user_1 deploy", chat_type="group", sender_open_id="ou_alice", mentions=bot
        )
        question = asked["event"]["message"]["message_id"]
        (card,) = await fs.wait_for_replies(question)
        approve = next(v for v in _button_values(card.content) if v.get("decision") == "accept")
        outsider_click = card_action_event(
            "ou_eve", approve, card.message_id, "oc_team", app_id=fs.fake.app_id
        )
        refused_answer = callback_answer(await fs.deliver(outsider_click))
        assert refused_answer["toast"]["type"] in ("warning", "error")
        assert fs.fake.message(card.message_id).patches == []  # the card is unchanged
        assert not target.exists()  # Codex still waits

        approver_click = card_action_event(
            "ou_bob", approve, card.message_id, "oc_team", app_id=fs.fake.app_id
        )
        assert callback_answer(await fs.deliver(approver_click))["toast"]["type"] == "success"
        answers = await fs.wait_for_replies(question, count=2)
        assert card_markdown(answers[-1]) == "Deployed." and target.exists()
        decided = json.dumps(fs.fake.message(card.message_id).patches[-1], ensure_ascii=False)
        assert "Bob" in decided


async def test_the_receipt_emoji_shows_at_once_even_with_no_worker_to_run_the_turn(
    client: Client, tmp_path: Path
) -> None:
    """The person sees their message was taken the moment it is handed over: the receipt emoji
    needs only Feishu, not the chat's worker (here: no runtime host at all), and stays beside the
    turn's own OnIt / DONE."""
    async with feishu_stack(
        client, tmp_path, "cli_feishu_receipt", receipt_emoji="Get", with_runtime_worker=False
    ) as fs:
        event = await fs.say("oc_dm_receipt", "anyone there?")
        question = event["event"]["message"]["message_id"]
        got = await fs.fake.async_wait_for(
            lambda: [r for r in fs.fake.reactions if r.message_id == question and r.emoji_type == "Get"],
            timeout=5,
        )
        assert len(got) == 1 and not got[0].deleted
        # Commands and decisions are answered in words; a message refused before hand-over gets none.
        assert all(r.emoji_type != "Get" for r in fs.fake.reactions if r.message_id != question)
