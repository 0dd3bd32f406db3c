"""The fake Feishu, driven by the REAL lark-oapi SDK: what the bot sends lands in the fake as Feishu would
record it, Feishu's failures reach the SDK as they would, and events reach the SDK's handlers over the
long connection and the webhook."""

from __future__ import annotations

import asyncio
import io
import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import lark_oapi as lark
import lark_oapi.ws.client as lark_ws_client
import pytest
from lark_oapi.api.contact.v3 import GetUserRequest
from lark_oapi.api.im.v1 import (
    CreateFileRequest,
    CreateFileRequestBody,
    CreateMessageReactionRequest,
    CreateMessageReactionRequestBody,
    CreateMessageRequest,
    CreateMessageRequestBody,
    DeleteMessageReactionRequest,
    Emoji,
    GetChatRequest,
    GetMessageRequest,
    GetMessageResourceRequest,
    P2ImMessageReceiveV1,
    PatchMessageRequest,
    PatchMessageRequestBody,
    ReplyMessageRequest,
    ReplyMessageRequestBody,
)
from lark_oapi.core.exception import ObtainAccessTokenException
from lark_oapi.event.callback.model.p2_card_action_trigger import (
    P2CardActionTrigger,
    P2CardActionTriggerResponse,
)

from dev.fake_feishu import (
    FakeFeishu,
    card_action_event,
    forget_sdk_token,
    mention,
    message_event,
    reaction_event,
    url_verification,
)

pytestmark = pytest.mark.feishu


# --- helpers -----------------------------------------------------------------------------------


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeFeishu]:
    # One app id per test: lark-oapi caches tenant tokens process-wide by app_id (docs/feishu-platform.md §5).
    app_id = "cli_" + re.sub(r"\W", "_", request.node.name)[:40]
    forget_sdk_token(app_id)
    with FakeFeishu(app_id=app_id) as fake:
        yield fake


def sdk_client(fake: FakeFeishu, *, timeout: float = 5.0) -> Any:
    return (
        lark.Client.builder()
        .app_id(fake.app_id)
        .app_secret(fake.app_secret)
        .domain(fake.domain)
        .timeout(timeout)
        .build()
    )


def card(title: str, body: str) -> str:
    return json.dumps(
        {
            "schema": "2.0",
            "config": {"update_multi": True},
            "header": {"title": {"tag": "plain_text", "content": title}, "template": "blue"},
            "body": {"elements": [{"tag": "markdown", "content": body}]},
        }
    )


def create_request(chat_id: str, msg_type: str, content: str, uuid: str | None = None) -> Any:
    body = CreateMessageRequestBody.builder().receive_id(chat_id).msg_type(msg_type).content(content)
    if uuid is not None:
        body = body.uuid(uuid)
    return CreateMessageRequest.builder().receive_id_type("chat_id").request_body(body.build()).build()


def reply_request(message_id: str, content: str, *, in_thread: bool = False, uuid: str | None = None) -> Any:
    body = ReplyMessageRequestBody.builder().msg_type("text").content(content).reply_in_thread(in_thread)
    if uuid is not None:
        body = body.uuid(uuid)
    return ReplyMessageRequest.builder().message_id(message_id).request_body(body.build()).build()


def patch_request(message_id: str, content: str) -> Any:
    body = PatchMessageRequestBody.builder().content(content).build()
    return PatchMessageRequest.builder().message_id(message_id).request_body(body).build()


def text(value: str) -> str:
    return json.dumps({"text": value})


def issued_token(fake: FakeFeishu) -> str:
    (token_call,) = fake.calls_to("/tenant_access_token/")
    token: str = token_call.answer["tenant_access_token"]
    return token


# --- sending -----------------------------------------------------------------------------------


def test_bot_sends_text_and_card_replies_in_thread_and_updates_the_card(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    question = fake.record_inbound(message_event("oc_team", "run tests", chat_type="group"))
    question_id = question["event"]["message"]["message_id"]

    sent = client.im.v1.message.create(create_request("oc_team", "text", text("On it.")))
    posted = client.im.v1.message.create(create_request("oc_team", "interactive", card("Turn", "working…")))
    reply = client.im.v1.message.reply(reply_request(question_id, text("Done."), in_thread=True))
    patched = client.im.v1.message.patch(patch_request(posted.data.message_id, card("Turn", "finished")))

    assert [r.code for r in (sent, posted, reply, patched)] == [0, 0, 0, 0]
    assert sent.data.chat_id == "oc_team" and sent.data.sender.sender_type == "app"
    first, second, third = fake.messages
    assert (first.msg_type, first.text) == ("text", "On it.")
    assert second.msg_type == "interactive" and second.message_id == posted.data.message_id
    assert second.content["body"]["elements"][0]["content"] == "finished"
    assert [p["body"]["elements"][0]["content"] for p in second.patches] == ["finished"]
    assert (third.reply_to, third.root_id, third.chat_id) == (question_id, question_id, "oc_team")
    assert third.reply_in_thread and third.thread_id.startswith("omt_")
    assert reply.data.thread_id == third.thread_id

    token_call, *api_calls = fake.calls
    assert token_call.path == "/open-apis/auth/v3/tenant_access_token/internal"
    assert token_call.header("Content-Type") is None  # the SDK sends none; the fake parses anyway
    assert token_call.body == {"app_id": fake.app_id, "app_secret": fake.app_secret}
    assert [(c.method, c.path) for c in api_calls] == [
        ("POST", "/open-apis/im/v1/messages"),
        ("POST", "/open-apis/im/v1/messages"),
        ("POST", f"/open-apis/im/v1/messages/{question_id}/reply"),
        ("PATCH", f"/open-apis/im/v1/messages/{posted.data.message_id}"),
    ]
    assert {c.header("Authorization") for c in api_calls} == {f"Bearer {issued_token(fake)}"}
    assert api_calls[0].query == {"receive_id_type": "chat_id"}
    assert api_calls[0].body == {"receive_id": "oc_team", "msg_type": "text", "content": text("On it.")}
    assert api_calls[2].body["reply_in_thread"] is True


def test_a_direct_message_to_a_user_lands_in_their_dm_chat(fake: FakeFeishu) -> None:
    fake.record_inbound(message_event("oc_dm_alice", "hi", sender_open_id="ou_alice"))
    body = CreateMessageRequestBody.builder().receive_id("ou_alice").msg_type("text").content(text("hello"))
    request = CreateMessageRequest.builder().receive_id_type("open_id").request_body(body.build()).build()

    response = sdk_client(fake).im.v1.message.create(request)

    assert response.data.chat_id == "oc_dm_alice"
    assert fake.messages[0].receive_id_type == "open_id"


def test_the_same_uuid_twice_sends_one_message(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    question_id = fake.record_inbound(message_event("oc_1", "q"))["event"]["message"]["message_id"]

    first = client.im.v1.message.create(create_request("oc_1", "text", text("answer"), uuid="turn-1:reply:0"))
    retry = client.im.v1.message.create(create_request("oc_1", "text", text("answer"), uuid="turn-1:reply:0"))
    reply = client.im.v1.message.reply(reply_request(question_id, text("r"), uuid="turn-1:reply:1"))
    reply_retry = client.im.v1.message.reply(reply_request(question_id, text("r"), uuid="turn-1:reply:1"))

    assert first.data.message_id == retry.data.message_id
    assert reply.data.message_id == reply_retry.data.message_id
    assert [m.uuid for m in fake.messages] == ["turn-1:reply:0", "turn-1:reply:1"]
    assert len(fake.calls_to("/im/v1/messages")) == 4  # every attempt reached Feishu


def test_reactions_mark_progress_and_are_removed_by_id(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    message_id = fake.record_inbound(message_event("oc_1", "go"))["event"]["message"]["message_id"]
    add_body = CreateMessageReactionRequestBody.builder().reaction_type(
        Emoji.builder().emoji_type("OnIt").build()
    )
    added = client.im.v1.message_reaction.create(
        CreateMessageReactionRequest.builder().message_id(message_id).request_body(add_body.build()).build()
    )
    removed = client.im.v1.message_reaction.delete(
        DeleteMessageReactionRequest.builder()
        .message_id(message_id)
        .reaction_id(added.data.reaction_id)
        .build()
    )
    removed_twice = client.im.v1.message_reaction.delete(
        DeleteMessageReactionRequest.builder()
        .message_id(message_id)
        .reaction_id(added.data.reaction_id)
        .build()
    )

    assert added.code == 0 and added.data.reaction_type.emoji_type == "OnIt"
    assert added.data.operator.operator_type == "app" and added.data.operator.operator_id == fake.app_id
    assert removed.code == 0 and removed.data.reaction_id == added.data.reaction_id
    assert removed_twice.code == 230001
    (reaction,) = fake.reactions
    assert (reaction.message_id, reaction.emoji_type, reaction.deleted) == (message_id, "OnIt", True)
    assert fake.calls[1].body == {"reaction_type": {"emoji_type": "OnIt"}}


def test_the_bot_looks_up_users_chats_messages_and_itself(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    fake.add_user("ou_alice", "Alice")
    fake.add_chat("oc_team", "Team", mode="topic")
    sent = client.im.v1.message.create(create_request("oc_team", "text", text("hi")))

    user = client.contact.v3.user.get(
        GetUserRequest.builder().user_id("ou_alice").user_id_type("open_id").build()
    )
    stranger = client.contact.v3.user.get(GetUserRequest.builder().user_id("ou_nobody").build())
    chat = client.im.v1.chat.get(GetChatRequest.builder().chat_id("oc_team").build())
    got = client.im.v1.message.get(GetMessageRequest.builder().message_id(sent.data.message_id).build())
    bot = client.request(
        lark.BaseRequest.builder()
        .http_method(lark.HttpMethod.GET)
        .uri("/open-apis/bot/v3/info")
        .token_types({lark.AccessTokenType.TENANT})
        .build()
    )

    assert user.data.user.name == "Alice"
    assert fake.calls_to("/contact/v3/users/ou_alice")[0].query == {"user_id_type": "open_id"}
    assert stranger.code == 41050  # outside the app's contact range
    assert (chat.data.name, chat.data.chat_mode) == ("Team", "topic")
    assert got.data.items[0].body.content == text("hi")
    # bot info has no typed SDK call and answers `bot` at top level (docs/feishu-platform.md §1):
    # read the raw body.
    assert json.loads(bot.raw.content)["bot"] == {
        "activate_status": 2,
        "app_name": "Ally",
        "avatar_url": "",
        "ip_white_list": [],
        "open_id": "ou_bot",
    }


def test_the_bot_downloads_an_attachment(fake: FakeFeishu) -> None:
    image = bytes(range(256)) * 4
    message_id = fake.record_inbound(
        message_event("oc_1", message_type="image", content={"image_key": "img_v3_1"})
    )["event"]["message"]["message_id"]
    fake.add_resource(message_id, "img_v3_1", image, file_name="shot.png", content_type="image/png")

    def download(key: str) -> Any:
        request = (
            GetMessageResourceRequest.builder().message_id(message_id).file_key(key).type("image").build()
        )
        return sdk_client(fake).im.v1.message_resource.get(request)

    found, missing = download("img_v3_1"), download("img_v3_missing")

    assert found.code == 0 and found.file.read() == image and found.file_name == "shot.png"
    assert missing.code == 230001
    assert fake.calls_to("/resources/img_v3_1")[0].query == {"type": "image"}


def test_a_long_answer_goes_out_as_an_uploaded_file(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    log = ("line\r\n" * 20_000).encode()
    body = CreateFileRequestBody.builder().file_type("stream").file_name("answer.md").file(io.BytesIO(log))

    uploaded = client.im.v1.file.create(CreateFileRequest.builder().request_body(body.build()).build())
    file_key = uploaded.data.file_key
    sent = client.im.v1.message.create(create_request("oc_1", "file", json.dumps({"file_key": file_key})))

    assert uploaded.code == 0 and sent.code == 0
    assert fake.files[file_key].data == log and fake.files[file_key].file_name == "answer.md"
    assert fake.messages[0].content == {"file_key": file_key}


def test_oversized_cards_and_unknown_messages_are_refused(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    too_big = card("Turn", "x" * 31 * 1024)  # card bodies are capped at 30 KB (docs/feishu-platform.md §4)

    refused = client.im.v1.message.create(create_request("oc_1", "interactive", too_big))
    orphan = client.im.v1.message.reply(reply_request("om_never_seen", text("hello?")))

    assert (refused.code, refused.raw.status_code) == (230025, 400)
    assert orphan.code == 230001 and "record_inbound" in orphan.msg
    assert fake.messages == []


async def test_async_sdk_calls_reach_the_fake(fake: FakeFeishu) -> None:
    client = sdk_client(fake)

    posted = await client.im.v1.message.acreate(create_request("oc_1", "interactive", card("T", "a")))
    patched = await client.im.v1.message.apatch(patch_request(posted.data.message_id, card("T", "b")))
    reply = await client.im.v1.message.areply(reply_request(posted.data.message_id, text("done")))

    assert (posted.code, patched.code, reply.code) == (0, 0, 0)
    assert fake.messages[0].patches[0]["body"]["elements"][0]["content"] == "b"
    # httpx sends JSON with a Content-Type, requests' token call does not: both are recorded as sent.
    assert fake.calls_to("/im/v1/messages")[0].header("content-type") == "application/json"


async def test_async_raw_requests_are_not_decoded_by_the_sdk(fake: FakeFeishu) -> None:
    # SDK quirk (client.py arequest): httpx lowercases header names, the SDK looks up "Content-Type"
    # exact-case, so an async raw request never parses the JSON body: code 0 on any 2xx, None otherwise.
    client = sdk_client(fake)
    request = (
        lark.BaseRequest.builder()
        .http_method(lark.HttpMethod.GET)
        .uri("/open-apis/bot/v3/info")
        .token_types({lark.AccessTokenType.TENANT})
        .build()
    )
    fake.fail_next("/bot/v3/info", status=200, code=99991400)

    limited = await client.arequest(request)
    fine = await client.arequest(request)

    assert limited.code == 0 and json.loads(limited.raw.content)["code"] == 99991400  # read the body
    assert fine.code == 0 and fine.get_log_id() is None  # X-Tt-Logid is there, as x-tt-logid
    assert json.loads(fine.raw.content)["bot"]["open_id"] == "ou_bot"


# --- failures ----------------------------------------------------------------------------------


def test_a_rate_limit_reaches_the_sdk_as_feishu_sends_it(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    fake.fail_next("/im/v1/messages", reset_seconds=2)

    limited = client.im.v1.message.create(create_request("oc_1", "text", text("a"), uuid="u-1"))
    retried = client.im.v1.message.create(create_request("oc_1", "text", text("a"), uuid="u-1"))

    assert (limited.code, limited.raw.status_code) == (99991400, 429)
    assert limited.raw.headers["x-ogw-ratelimit-reset"] == "2"
    assert retried.code == 0 and len(fake.messages) == 1


def test_gateway_errors_and_slow_answers(fake: FakeFeishu) -> None:
    client = sdk_client(fake, timeout=0.5)
    fake.fail_next("/im/v1/messages", status=503, code=1, msg="service unavailable")
    fake.fail_next("/im/v1/messages", status=502, body="<html>bad gateway</html>")
    fake.delay_next("/im/v1/messages", 1.0)

    unavailable = client.im.v1.message.create(create_request("oc_1", "text", text("a")))
    # A non-JSON error page is not turned into a response: the SDK raises while decoding it.
    with pytest.raises(json.JSONDecodeError):
        client.im.v1.message.create(create_request("oc_1", "text", text("a")))
    started = time.monotonic()
    with pytest.raises(Exception, match=r"Read timed out"):  # requests' ReadTimeout, unwrapped
        client.im.v1.message.create(create_request("oc_1", "text", text("a")))

    assert (unavailable.code, unavailable.raw.status_code) == (1, 503)
    assert time.monotonic() - started < 1.0  # the SDK gave up at its own timeout
    assert fake.wait_for(lambda: len(fake.messages) == 1, timeout=3)  # the slow one still landed


def test_an_invalid_token_sticks_until_the_sdk_cache_is_cleared(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    assert client.im.v1.message.create(create_request("oc_1", "text", text("a"))).code == 0
    fake.revoke_tokens()

    rejected = client.im.v1.message.create(create_request("oc_1", "text", text("b")))
    still_rejected = client.im.v1.message.create(create_request("oc_1", "text", text("b")))
    forget_sdk_token(fake.app_id)
    accepted = client.im.v1.message.create(create_request("oc_1", "text", text("b")))

    # The SDK never refreshes on 99991663: it keeps its cached token until told to forget it
    # (docs/feishu-platform.md §5).
    assert (rejected.code, still_rejected.code, accepted.code) == (99991663, 99991663, 0)
    assert len(fake.calls_to("/tenant_access_token/")) == 2


def test_feishu_comes_back_on_the_same_address_after_an_outage(fake: FakeFeishu) -> None:
    client = sdk_client(fake)
    assert client.im.v1.message.create(create_request("oc_1", "text", text("before"))).code == 0
    domain = fake.domain

    fake.stop()
    with pytest.raises(Exception, match="Connection refused"):
        client.im.v1.message.create(create_request("oc_1", "text", text("during")))
    fake.start()
    after = client.im.v1.message.create(create_request("oc_1", "text", text("after")))

    assert fake.domain == domain and after.code == 0
    assert [m.text for m in fake.messages] == ["before", "after"]


def test_a_wrong_app_secret_gets_no_token(fake: FakeFeishu) -> None:
    client = lark.Client.builder().app_id(fake.app_id).app_secret("wrong").domain(fake.domain).build()

    with pytest.raises(ObtainAccessTokenException):
        client.im.v1.message.create(create_request("oc_1", "text", text("a")))
    assert fake.messages == []


# --- webhook -----------------------------------------------------------------------------------


def raw_request(headers: dict[str, str], body: bytes) -> Any:
    request = lark.RawRequest()
    request.uri = "/webhook/event"
    request.headers = headers
    request.body = body
    return request


def test_signed_encrypted_webhook_events_reach_the_handler(fake: FakeFeishu) -> None:
    received: list[P2ImMessageReceiveV1] = []
    handler = (
        lark.EventDispatcherHandler.builder(fake.encrypt_key, fake.verification_token)
        .register_p2_im_message_receive_v1(received.append)
        .register_p2_card_action_trigger(
            lambda _: P2CardActionTriggerResponse({"toast": {"type": "info", "content": "noted"}})
        )
        .build()
    )
    event = message_event("oc_1", "@_user_1 hi", chat_type="group", mentions=[mention("ou_bot", "Ally")])
    click = card_action_event("ou_alice", {"approval": "a-1"}, "om_card", "oc_1")

    accepted = handler.do(raw_request(*fake.webhook_request(event)))
    answered = handler.do(raw_request(*fake.webhook_request(click)))
    tampered = handler.do(raw_request(*fake.webhook_request(event, tamper_signature=True)))
    unknown = handler.do(raw_request(*fake.webhook_request(reaction_event("om_1", "OK"))))
    challenge = handler.do(raw_request(*fake.webhook_request(url_verification("c-123"))))

    assert accepted.status_code == 200 and json.loads(accepted.content) == {"msg": "success"}
    assert answered.status_code == 200 and json.loads(answered.content) == {
        "toast": {"type": "info", "content": "noted"}
    }
    assert tampered.status_code == 500
    # "processor not found": Feishu would re-push (docs/feishu-platform.md §1)
    assert unknown.status_code == 500
    assert json.loads(challenge.content) == {"challenge": "c-123"}
    (message,) = received  # only the untampered delivery
    assert message.event.message.mentions[0].id.open_id == "ou_bot"
    assert json.loads(message.event.message.content) == {"text": "@_user_1 hi"}


# --- long connection ---------------------------------------------------------------------------
# lark.ws.Client binds a module-level event loop at import and never returns from start()
# (docs/feishu-platform.md §1), and a second client started in the same process would take over that
# loop: so the module starts ONE client on a daemon thread with its own loop, and the tests share
# it.


class WsHandlers:
    def __init__(self) -> None:
        self.messages: queue.Queue[P2ImMessageReceiveV1] = queue.Queue()

    def on_message(self, data: P2ImMessageReceiveV1) -> None:
        self.messages.put(data)

    def on_card(self, data: P2CardActionTrigger) -> P2CardActionTriggerResponse:
        approval = data.event.action.value["approval"]
        return P2CardActionTriggerResponse({"toast": {"type": "success", "content": f"approved {approval}"}})


@pytest.fixture(scope="module")
def ws_fake() -> Iterator[tuple[FakeFeishu, WsHandlers]]:
    handlers = WsHandlers()
    handler = (
        lark.EventDispatcherHandler.builder("", "")  # the WS path skips token and signature checks
        .register_p2_im_message_receive_v1(handlers.on_message)
        .register_p2_card_action_trigger(handlers.on_card)
        .build()
    )
    with FakeFeishu(app_id="cli_fake_feishu_ws") as fake:

        def run_client() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)  # ws.Client() creates tasks on the current loop in __init__
            lark_ws_client.loop = loop
            client = lark.ws.Client(
                fake.app_id,
                fake.app_secret,
                event_handler=handler,
                domain=fake.domain,
                log_level=lark.LogLevel.WARNING,
            )
            client.start()  # never returns

        threading.Thread(target=run_client, name="lark-ws-client", daemon=True).start()
        fake.wait_for(lambda: fake.long_connection.connection_count, timeout=10)
        yield fake, handlers
        # The client cannot be stopped (no stop() in 1.7.5): make its reconnect fail for good, so the
        # daemon thread goes quiet instead of dialling whatever reuses this port later.
        fake.fail_next("/callback/ws/endpoint", status=200, code=403, msg="retired", times=100)
        fake.drop_long_connections()
        fake.wait_for(lambda: any(c.code == 403 for c in fake.calls_to("/callback/ws/endpoint")), timeout=10)


def test_a_message_event_reaches_the_sdk_handler_and_is_acked(
    ws_fake: tuple[FakeFeishu, WsHandlers],
) -> None:
    fake, handlers = ws_fake
    event = message_event("oc_1", "hello", sender_open_id="ou_alice")

    ack = fake.push_event(event)

    assert ack == {"code": 200}
    received = handlers.messages.get(timeout=5)
    assert received.header.event_id == event["header"]["event_id"]
    assert received.event.sender.sender_id.open_id == "ou_alice"
    assert fake.inbound_messages[-1].message_id == event["event"]["message"]["message_id"]
    endpoint_call = fake.calls_to("/callback/ws/endpoint")[0]
    assert endpoint_call.body == {"AppID": fake.app_id, "AppSecret": fake.app_secret}
    assert any(frame.type == "ping" for frame in fake.received_frames)


def test_a_card_click_returns_the_handlers_toast_in_the_ack(ws_fake: tuple[FakeFeishu, WsHandlers]) -> None:
    fake, _ = ws_fake

    ack = fake.push_event(card_action_event("ou_alice", {"approval": "a-7"}, "om_card", "oc_1"))

    assert ack == {"code": 200, "data": {"toast": {"type": "success", "content": "approved a-7"}}}


def test_an_unregistered_event_type_is_acked_500(ws_fake: tuple[FakeFeishu, WsHandlers]) -> None:
    fake, _ = ws_fake

    assert fake.push_event(reaction_event("om_1", "OK")) == {"code": 500}


def test_a_split_event_is_reassembled(ws_fake: tuple[FakeFeishu, WsHandlers]) -> None:
    fake, handlers = ws_fake
    long_text = "x" * 5000

    assert fake.push_event(message_event("oc_1", long_text), parts=3) == {"code": 200}
    assert json.loads(handlers.messages.get(timeout=5).event.message.content) == {"text": long_text}


async def test_the_client_reconnects_after_a_drop(ws_fake: tuple[FakeFeishu, WsHandlers]) -> None:
    fake, handlers = ws_fake
    endpoints_before = len(fake.calls_to("/callback/ws/endpoint"))

    fake.drop_long_connections()
    ack = await fake.apush_event(message_event("oc_1", "after the drop"), timeout=10)

    assert ack == {"code": 200}
    assert len(fake.calls_to("/callback/ws/endpoint")) == endpoints_before + 1
    assert json.loads(handlers.messages.get(timeout=5).event.message.content) == {"text": "after the drop"}
