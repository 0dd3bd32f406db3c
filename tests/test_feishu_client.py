"""The Feishu call layer, the channel and the message reader against the fake Feishu with the real SDK:
every failure becomes the right kind of retry (or none), and inbound messages read as people meant."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.channel import ChannelActivities
from ally.channels import PermanentDeliveryError, RetryLaterError
from ally.channels.feishu import cards
from ally.channels.feishu.channel import FeishuChannel
from ally.channels.feishu.client import FeishuApi, FeishuRateLimited, FeishuRejected, FeishuUnavailable
from ally.channels.feishu.events import MessageReceived
from ally.channels.feishu.inbound import Ignored, MessageReader, Normalised
from ally.config import FeishuConfig
from ally.contracts import ChatRef, Reply
from dev.fake_feishu import FakeFeishu, forget_sdk_token, mention, message_event, post_message_event

pytestmark = pytest.mark.feishu


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeFeishu]:
    app_id = "cli_fc_" + re.sub(r"\W", "_", request.node.name)[:40]
    forget_sdk_token(app_id)
    with FakeFeishu(app_id=app_id) as fake:
        yield fake


def api_for(fake: FakeFeishu, *, timeout_s: float = 3.0) -> FeishuApi:
    config = FeishuConfig.model_validate(
        {"app_id": fake.app_id, "app_secret": fake.app_secret, "domain": fake.domain}
    )
    return FeishuApi.from_config(config, timeout_s=timeout_s)


def chat(chat_id: str = "oc_1") -> ChatRef:
    return ChatRef(channel="feishu", chat_id=chat_id, worker_queue="feishu-test")


def question(fake: FakeFeishu, chat_id: str = "oc_1", **fields: Any) -> str:
    message_id: str = fake.record_inbound(message_event(chat_id, "hi", app_id=fake.app_id, **fields))[
        "event"
    ]["message"]["message_id"]
    return message_id


def reply(to: str | None, text: str = "hello", key: str = "wa-test-key") -> Reply:
    return Reply(chat=chat(), reply_to=to, text=text, idempotency_key=key)


# --- the call layer ------------------------------------------------------------------------------


async def test_a_rate_limit_is_retryable_after_the_reset_feishu_names(fake: FakeFeishu) -> None:
    fake.fail_next("/reply", reset_seconds=2)

    with pytest.raises(FeishuRateLimited) as caught:
        await api_for(fake).reply(question(fake), msg_type="text", content='{"text":"a"}', uuid="u-1")

    assert isinstance(caught.value, RetryLaterError) and caught.value.retry_after_s == 2.0
    assert caught.value.code == 99991400 and caught.value.status == 429


async def test_an_invalid_token_is_fetched_again_and_the_call_retried_once(fake: FakeFeishu) -> None:
    api = api_for(fake)
    first = question(fake)
    await api.reply(first, msg_type="text", content='{"text":"a"}', uuid="u-1")
    fake.revoke_tokens()  # the SDK keeps its cached token: 99991663 until it is cleared

    sent = await api.reply(first, msg_type="text", content='{"text":"b"}', uuid="u-2")

    assert sent.message_id == fake.messages[-1].message_id
    assert len(fake.calls_to("/tenant_access_token/")) == 2
    assert [c.code for c in fake.calls_to("/reply")] == [0, 99991663, 0]


@pytest.mark.parametrize("code", [230002, 230099, 11310])
async def test_permanent_errors_are_not_retried(fake: FakeFeishu, code: int) -> None:
    fake.fail_next("/reply", status=400, code=code)

    with pytest.raises(FeishuRejected) as caught:
        await api_for(fake).reply(question(fake), msg_type="text", content='{"text":"a"}', uuid="u-1")

    assert isinstance(caught.value, PermanentDeliveryError) and caught.value.code == code


async def test_server_errors_html_pages_and_timeouts_are_retryable(fake: FakeFeishu) -> None:
    api = api_for(fake, timeout_s=0.5)
    first = question(fake)
    fake.fail_next("/reply", status=503, code=1, msg="unavailable")
    fake.fail_next("/reply", status=502, body="<html>bad gateway</html>")
    fake.delay_next("/reply", 1.0)

    for _ in range(3):
        with pytest.raises(FeishuUnavailable):
            await api.reply(first, msg_type="text", content='{"text":"a"}', uuid="u-1")


# --- the channel and the activity layer ----------------------------------------------------------


async def test_a_rate_limited_delivery_retries_after_exactly_the_reset(fake: FakeFeishu) -> None:
    activities = ChannelActivities(FeishuChannel(api_for(fake)))
    fake.fail_next("/reply", reset_seconds=3)

    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities.send_reply, reply(question(fake)))

    assert caught.value.type == "RetryLater" and not caught.value.non_retryable
    assert caught.value.next_retry_delay == timedelta(seconds=3)


async def test_a_chat_that_removed_the_bot_fails_the_delivery_for_good(fake: FakeFeishu) -> None:
    activities = ChannelActivities(FeishuChannel(api_for(fake)))
    fake.fail_next("/reply", status=400, code=230002, msg="Bot is not in the chat")

    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(activities.send_reply, reply(question(fake)))

    assert caught.value.type == "PermanentDeliveryError" and caught.value.non_retryable


async def test_a_reply_to_a_recalled_message_goes_into_the_chat_instead(fake: FakeFeishu) -> None:
    channel = FeishuChannel(api_for(fake))
    fake.fail_next("/reply", status=400, code=230011, msg="The message was recalled.")

    sent = await channel.send_reply(reply(question(fake)))

    (message,) = fake.messages
    assert message.message_id == sent.message_id and message.chat_id == "oc_1" and message.parent_id == ""


async def test_replies_stay_in_the_topic_of_the_message_they_answer(fake: FakeFeishu) -> None:
    channel = FeishuChannel(api_for(fake))
    in_topic = question(fake, thread_id="omt_topic", root_id="om_root")
    top_level = question(fake)

    await channel.send_reply(reply(in_topic, key="wa-a"))
    await channel.send_reply(reply(top_level, key="wa-b"))

    bodies = [c.body for c in fake.calls_to("/reply")]
    assert [b["reply_in_thread"] for b in bodies] == [True, False]
    assert [m.parent_id for m in fake.messages] == [in_topic, top_level]


async def test_a_very_long_answer_is_a_card_and_a_file_holding_all_of_it(fake: FakeFeishu) -> None:
    channel = FeishuChannel(api_for(fake), pace_s=0.0)
    text = "".join(f'line {i}: "quoted" text that goes on and on\n' for i in range(12_000))

    asked = question(fake)
    await channel.send_reply(reply(asked, text=text))
    await channel.send_reply(reply(asked, text=text))  # a retry of the same delivery

    card, attachment = fake.messages  # the second send re-uploaded, but sent nothing twice
    uploaded = fake.files[attachment.content["file_key"]]
    assert card.msg_type == "interactive" and "answer.md" in json.dumps(card.content)
    assert attachment.msg_type == "file" and attachment.parent_id == card.parent_id
    assert uploaded.data.decode() == text and uploaded.file_name == cards.ANSWER_FILE_NAME


# --- reading messages ----------------------------------------------------------------------------


def contents(path: str) -> bytes:
    return Path(path).read_bytes()


def received(envelope: dict[str, Any]) -> MessageReceived:
    return MessageReceived.model_validate(envelope["event"])


async def read(fake: FakeFeishu, tmp_path: Path, envelope: dict[str, Any]) -> Normalised | Ignored:
    fake.record_inbound(envelope)
    return await MessageReader(api_for(fake), inbox=tmp_path / "inbox").read(received(envelope))


async def test_a_rich_text_post_reads_as_markdown_and_its_image_is_downloaded(
    fake: FakeFeishu, tmp_path: Path
) -> None:
    fake.add_user("ou_alice", "Alice")
    envelope = post_message_event(
        "oc_team",
        [
            [
                {"tag": "at", "user_id": "@_user_1", "user_name": "Ally"},
                {"tag": "text", "text": " please check "},
                {"tag": "a", "href": "https://ci/42", "text": "build 42"},
                {"tag": "at", "user_id": "@_user_2", "user_name": "Bob"},
            ],
            [{"tag": "code_block", "language": "PYTHON", "text": "print('hi')\n"}],
            [{"tag": "img", "image_key": "img_v3_1"}],
        ],
        title="Build",
        chat_type="group",
        sender_open_id="ou_alice",
        mentions=[mention("ou_bot", "Ally", index=1), mention("ou_bob", "Bob", index=2)],
    )
    message_id = envelope["event"]["message"]["message_id"]
    fake.add_resource(message_id, "img_v3_1", b"\x89PNG fake", file_name="shot.png", content_type="image/png")

    result = await read(fake, tmp_path, envelope)

    assert isinstance(result, Normalised)
    message = result.message
    assert message.text == "Build\nplease check [build 42](https://ci/42)@Bob\n```python\nprint('hi')\n```"
    assert message.sender.name == "Alice" and message.chat.chat_type == "group"
    assert [contents(p) for p in message.local_images] == [b"\x89PNG fake"]
    assert message.local_images[0].startswith(str(tmp_path / "inbox"))


async def test_a_file_is_saved_and_named_by_path_for_codex(fake: FakeFeishu, tmp_path: Path) -> None:
    envelope = message_event(
        "oc_dm", message_type="file", content={"file_key": "file_1", "file_name": "../../etc/passwd"}
    )
    fake.add_resource(envelope["event"]["message"]["message_id"], "file_1", b"data")

    result = await read(fake, tmp_path, envelope)

    assert isinstance(result, Normalised)
    (path,) = re.findall(r"attached file: (\S+)\)", result.message.text)
    assert contents(path) == b"data" and Path(path).parent.parent == tmp_path / "inbox"


async def test_what_is_not_for_codex_is_ignored_and_unsupported_kinds_get_a_word(
    fake: FakeFeishu, tmp_path: Path
) -> None:
    no_mention = await read(fake, tmp_path, message_event("oc_team", "hello all", chat_type="group"))
    only_mention = await read(
        fake,
        tmp_path,
        message_event("oc_team", "@_user_1", chat_type="group", mentions=[mention("ou_bot", "Ally")]),
    )
    sticker = await read(
        fake, tmp_path, message_event("oc_dm", message_type="sticker", content={"file_key": "s"})
    )

    assert isinstance(no_mention, Ignored) and no_mention.tell is None
    assert isinstance(only_mention, Ignored)
    assert isinstance(sticker, Ignored) and sticker.tell and "sticker" in sticker.tell


async def test_a_person_whose_name_cannot_be_looked_up_still_gets_answered(
    fake: FakeFeishu, tmp_path: Path
) -> None:
    result = await read(fake, tmp_path, message_event("oc_dm", "hi", sender_open_id="ou_stranger"))

    assert isinstance(result, Normalised)
    assert (result.message.sender.id, result.message.sender.name) == ("ou_stranger", "")


async def test_a_person_whose_name_feishu_will_not_give_is_not_asked_for_at_every_message(
    fake: FakeFeishu, tmp_path: Path
) -> None:
    reader = MessageReader(api_for(fake), inbox=tmp_path / "inbox")
    for text in ("one", "two", "three"):
        envelope = fake.record_inbound(message_event("oc_dm", text, sender_open_id="ou_stranger"))
        result = await reader.read(received(envelope))
        assert isinstance(result, Normalised) and result.message.sender.name == ""

    assert len(fake.calls_to("/contact/v3/users/ou_stranger")) == 1


async def test_a_reply_quoting_the_bots_answer_card_brings_its_words_along(
    fake: FakeFeishu, tmp_path: Path
) -> None:
    channel = FeishuChannel(api_for(fake), pace_s=0.0)
    asked = question(fake, "oc_1")
    sent = await channel.send_reply(reply(asked, text="Use `make test`.\nThen **ship** it."))
    envelope = message_event(
        "oc_1", "and then?", app_id=fake.app_id, parent_id=sent.message_id, root_id=asked
    )

    result = await read(fake, tmp_path, envelope)

    assert isinstance(result, Normalised)
    assert result.message.text == "and then?"  # commands and "y" still read the text alone
    assert result.message.quoted == "Quoting your earlier reply:\n> Use `make test`.\n> Then **ship** it."
