"""lark-oapi loaded lean (ally/channels/feishu/sdk.py): the gateway runs on the real SDK without loading
the Open API services it never calls, code that wants the whole SDK still gets it, and a lark-oapi
upgrade that breaks what the lean loading relies on fails here."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lark_oapi
import pytest

from ally.channels.feishu import sdk
from ally.channels.feishu.client import bot_info_request
from dev.fake_feishu import FakeFeishu, forget_sdk_token

REPO = Path(__file__).resolve().parent.parent
SDK_DIR = Path(lark_oapi.__file__).parent
# The lean gateway loads ~720 of the SDK's ~10,700 modules; the whole SDK is ~8,800 or more.
LEAN_MODULES_AT_MOST = 1500


def run_fresh(code: str) -> Any:
    """`code` in a fresh interpreter (this one may have loaded the whole SDK); its last line printed
    is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_gateway_runs_on_the_sdk_modules_it_uses_and_no_others() -> None:
    loaded = run_fresh(
        """
import json, sys
import workers.gateway
from ally.channels.feishu import sdk
from ally.channels.feishu.app_check import check_app
from ally.channels.feishu.client import FeishuApi
from ally.channels.feishu.connection_check import ConnectionProbe
from ally.channels.feishu.long_connection import PromptAcks
from ally.config import FeishuConfig
from lark_oapi.core.enum import LogLevel
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler

config = FeishuConfig(app_id="cli_lean", app_secret="secret", domain="http://127.0.0.1:9")
api = FeishuApi.from_config(config)
handler = (
    EventDispatcherHandler.builder("", "")
    .register_p2_im_message_receive_v1(print)
    .register_p2_im_message_reaction_created_v1(print)
    .register_p2_im_message_reaction_deleted_v1(print)
    .register_p2_im_message_recalled_v1(print)
    .register_p2_im_chat_member_bot_added_v1(print)
    .register_p2_im_chat_member_bot_deleted_v1(print)
    .register_p2_im_chat_access_event_bot_p2p_chat_entered_v1(print)
    .register_p2_im_message_message_read_v1(print)
    .register_p2_card_action_trigger(print)
    .register_p2_customized_event("any.other_v1", print)
    .build()
)
PromptAcks("cli_lean", "secret", event_handler=handler, domain=config.domain, log_level=LogLevel.INFO)
print(json.dumps({
    "completed": sdk.completed_shells(),
    "modules": sorted(m for m in sys.modules if m.startswith("lark_oapi")),
    "message": type(api.messages).__module__,
    "httpx_cli": "rich" in sys.modules or "click" in sys.modules,
}))
"""
    )

    assert loaded["completed"] == [], "these SDK packages ran their whole __init__: " + str(
        loaded["completed"]
    )
    assert len(loaded["modules"]) <= LEAN_MODULES_AT_MOST
    assert "lark_oapi.client" not in loaded["modules"]  # lark.Client: every service
    assert not any(m.startswith("lark_oapi.api.corehr.v1.resource") for m in loaded["modules"])
    assert loaded["message"] == "lark_oapi.api.im.v1.resource.message"  # the SDK's own class
    assert not loaded["httpx_cli"]  # httpx's command-line client (rich, click) stays unloaded


def test_asking_the_sdk_package_for_a_name_still_gives_the_whole_sdk() -> None:
    found = run_fresh(
        """
import json
import ally.channels.feishu.client
import lark_oapi
import lark_oapi.api.im.v1.model.create_message_request as leaf
from lark_oapi.api.im.v1 import CreateMessageRequest
from lark_oapi.api.im.v1.model import *  # noqa

client = lark_oapi.Client.builder().app_id("a").app_secret("s").build()
print(json.dumps({
    "same_class": CreateMessageRequest is leaf.CreateMessageRequest,
    "client_has_im": type(client.im.v1.message).__name__,
    "star": "ReplyMessageRequestBody" in globals(),
    "ws_client": lark_oapi.ws.Client.__module__,
}))
"""
    )

    assert found == {
        "same_class": True,
        "client_has_im": "Message",
        "star": True,
        "ws_client": "lark_oapi.ws.client",
    }


def shell_inits() -> list[Path]:
    inits = [SDK_DIR / "__init__.py", SDK_DIR / "ws" / "pb" / "google" / "__init__.py"]
    return inits + sorted((SDK_DIR / "api").rglob("__init__.py"))


def test_the_sdk_packages_loaded_as_shells_only_gather_what_is_below_them() -> None:
    """What makes deferring their `__init__` safe: nothing in it but imports (so nothing is skipped
    that the modules below rely on), except the protobuf namespace declaration."""
    doing_more = []
    for init in shell_inits():
        name = ".".join(init.parent.relative_to(SDK_DIR.parent).parts)
        assert sdk.is_shell_package(name), name
        tree = ast.parse(init.read_text())
        if name == sdk.SHELL_NAMESPACE:
            assert "declare_namespace" in init.read_text() and "extend_path" in init.read_text()
            continue
        body = [node for node in tree.body if not isinstance(node, ast.Expr)]  # docstrings
        if not all(isinstance(node, ast.Import | ast.ImportFrom) for node in body):
            doing_more.append(name)
    assert len(shell_inits()) > 250
    assert doing_more == []


def test_lark_oapi_is_the_version_the_lean_loading_was_checked_against() -> None:
    """An upgrade must re-check sdk.py: the shells, `sdk_config` (ClientBuilder.build) and `send`
    (Client.request) against the new lark-oapi, then move both pins together."""
    installed = importlib.metadata.version("lark-oapi")
    lock = (REPO / "dev" / "requirements.lock").read_text()
    pinned = re.search(r"^lark-oapi==(\S+)$", lock, re.MULTILINE)
    assert pinned is not None and pinned.group(1) == installed == sdk.CHECKED_WITH


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[FakeFeishu]:
    app_id = "cli_sdk_" + re.sub(r"\W", "_", request.node.name)[:40]
    forget_sdk_token(app_id)
    with FakeFeishu(app_id=app_id) as fake:
        yield fake


@pytest.mark.feishu
def test_the_lean_client_config_is_the_one_lark_client_builds(fake: FakeFeishu) -> None:
    built = (
        lark_oapi.Client.builder()
        .app_id(fake.app_id)
        .app_secret(fake.app_secret)
        .domain(fake.domain)
        .timeout(4.0)
        .log_level(lark_oapi.LogLevel.WARNING)
        .build()
    )
    ours = sdk.sdk_config(fake.app_id, fake.app_secret, domain=fake.domain, timeout_s=4.0)

    assert vars(ours) == vars(built.config)


@pytest.mark.feishu
@pytest.mark.parametrize(
    "domain",
    [
        "http://open.feishu.cn",
        "ftp://open.feishu.cn",
        "https://open.feishu.cn/open-apis",
        "https://user@open.feishu.cn",
        "https://open.feishu.cn?x=1",
        "https://",
    ],
)
def test_a_domain_lark_client_refuses_is_refused(domain: str) -> None:
    with pytest.raises(ValueError):
        lark_oapi.Client.builder().domain(domain)
    with pytest.raises(ValueError, match="Feishu domain"):
        sdk.sdk_config("cli_x", "secret", domain=domain, timeout_s=1.0)


@pytest.mark.feishu
def test_a_raw_call_answers_as_lark_client_request_does(fake: FakeFeishu) -> None:
    client = (
        lark_oapi.Client.builder().app_id(fake.app_id).app_secret(fake.app_secret).domain(fake.domain).build()
    )
    ours = sdk.sdk_config(fake.app_id, fake.app_secret, domain=fake.domain, timeout_s=5.0)

    def both() -> list[tuple[Any, ...]]:
        answers = [client.request(bot_info_request()), sdk.send(ours, bot_info_request())]
        return [(a.code, a.msg, a.raw.status_code, json.loads(a.raw.content).get("bot")) for a in answers]

    sdk_answer, our_answer = both()
    assert our_answer == sdk_answer and our_answer[0] == 0 and our_answer[3]["open_id"]

    fake.fail_next(
        "/bot/v3/info", status=400, code=230002, reset_seconds=None, times=2, msg="Bot not in chat"
    )
    sdk_answer, our_answer = both()
    assert our_answer == sdk_answer == (230002, "Bot not in chat", 400, None)

    fake.fail_next("/bot/v3/info", status=502, body="<html>bad gateway</html>", times=2)
    answers = [client.request(bot_info_request()), sdk.send(ours, bot_info_request())]
    assert [(a.code, a.raw.status_code) for a in answers] == [(None, 502), (None, 502)]
