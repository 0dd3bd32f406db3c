"""A local fake of Feishu (Lark) for tests: the Open API subset the bridge uses, the long-connection
(WS) peer `lark.ws.Client` connects to, event builders, and signed webhook requests.

Point the REAL lark-oapi SDK at it (docs/feishu-platform.md §6):

    from dev.fake_feishu import FakeFeishu, message_event

    with FakeFeishu(app_id="cli_my_test") as fake:      # a distinct app_id per test: the SDK caches
        client = (lark.Client.builder()                  # tenant tokens process-wide (forget_sdk_token)
                  .app_id(fake.app_id).app_secret(fake.app_secret).domain(fake.domain).build())
        fake.add_user("ou_alice", "Alice")
        ack = fake.push_event(message_event("oc_1", "hello"))   # to a connected lark.ws.Client
        fake.wait_for(lambda: fake.messages)                     # what the bot sent
        fake.fail_next("/im/v1/messages", status=429)            # Feishu's rate limit, once
        fake.remove_scope("im:resource")                         # the app as the console has it
        fake.scan(qr_url, open_id="ou_alice")                    # scan-to-create: the person confirms
"""

from dev.fake_feishu.app_console import AppConsole, AppRegistration
from dev.fake_feishu.events import (
    bot_added_event,
    card_action_event,
    envelope,
    mention,
    message_event,
    post_message_event,
    reaction_event,
    recalled_event,
    url_verification,
    webhook_request,
)
from dev.fake_feishu.fake import FakeFeishu, forget_sdk_token
from dev.fake_feishu.long_connection import ReceivedFrame
from dev.fake_feishu.records import (
    Chat,
    Message,
    Reaction,
    RecordedCall,
    Resource,
    UploadedFile,
    UploadedImage,
    User,
)

__all__ = [
    "AppConsole",
    "AppRegistration",
    "Chat",
    "FakeFeishu",
    "Message",
    "Reaction",
    "ReceivedFrame",
    "RecordedCall",
    "Resource",
    "UploadedFile",
    "UploadedImage",
    "User",
    "bot_added_event",
    "card_action_event",
    "envelope",
    "forget_sdk_token",
    "mention",
    "message_event",
    "post_message_event",
    "reaction_event",
    "recalled_event",
    "url_verification",
    "webhook_request",
]
