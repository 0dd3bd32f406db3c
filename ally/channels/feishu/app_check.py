"""Is this Feishu app ready for work-ally? Checked live, each problem with the one line that fixes it.

What the app needs is written down once, here (docs/feishu-setup.md explains each item to a person):
the scopes, the events and the card callback. `ally setup` asks the scan-to-create page to pre-fill
them (`registration_addons`) and checks any app against them (`check_app`):

1. a tenant token: Feishu accepts the App ID and App Secret;
2. the bot's info (`GET /open-apis/bot/v3/info`): the app has the Bot feature;
3. the scopes (`GET /open-apis/application/v6/scopes`, which needs no scope): each one added and
   granted (a scope is granted once a version with it is published, and approved where the tenant
   asks for that);
4. the events and the callback, read from the app's own configuration
   (`GET /open-apis/application/v6/applications/{app_id}`, which needs
   `application:application:self_manage`): subscribed, and delivered over the long connection.

Links go to the app's page in the developer console (docs/feishu-platform.md, "Console links").
All calls are the real lark-oapi SDK's (its resources and request machinery, sdk.py), synchronous:
this runs in a command, not in a worker.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from lark_oapi.api.application.v6.model.get_application_request import GetApplicationRequest
from lark_oapi.api.application.v6.model.list_scope_request import ListScopeRequest
from lark_oapi.api.application.v6.resource.application import Application
from lark_oapi.api.application.v6.resource.scope import Scope
from lark_oapi.core.exception import ObtainAccessTokenException
from pydantic import BaseModel

from ally.channels.feishu.client import bot_info_request, build_sdk_config, forget_tenant_token
from ally.channels.feishu.sdk import send
from ally.config import FeishuConfig

Status = Literal["ok", "warn", "fail"]
GRANTED = 1
SCOPE_MISSING = 99991672  # Feishu: "Access denied. One of the following scopes is required: […]"
APP_INFO_SCOPE = "application:application:self_manage"


class Need(BaseModel):
    """One thing the app should have: any of `names` will do. Without a required one work-ally
    cannot do its job (fail); without the others a feature is missing (warn)."""

    names: tuple[str, ...]
    why: str
    required: bool = False


SCOPES = (
    Need(
        names=("im:message.p2p_msg:readonly", "im:message.p2p_msg"),
        why="receive direct messages",
        required=True,
    ),
    Need(names=("im:message:send_as_bot", "im:message"), why="send replies and cards", required=True),
    Need(names=("im:message",), why="read and send messages (docs/feishu-setup.md, step 3)"),
    Need(
        names=("im:message.group_at_msg:readonly", "im:message.group_at_msg"),
        why="receive group messages that @-mention the bot",
    ),
    Need(names=("im:resource",), why="download images and files people send"),
    Need(names=("im:chat:readonly", "im:chat"), why="tell topic groups apart: one conversation per topic"),
    Need(names=("contact:user.base:readonly",), why="show people's names"),
    Need(names=("im:message.reactions:write_only",), why="the OnIt / DONE reactions on your message"),
    Need(names=(APP_INFO_SCOPE,), why="let `ally setup` check the app's events"),
)
EVENTS = (
    Need(names=("im.message.receive_v1",), why="messages reach the assistant", required=True),
    Need(names=("im.message.reaction.created_v1",), why="a thumbs-up on an approval card approves it"),
    Need(names=("im.message.reaction.deleted_v1",), why="a removed reaction is noticed"),
    Need(names=("im.message.recalled_v1",), why="a recalled message is logged"),
    Need(names=("im.chat.member.bot.added_v1",), why="the bot joining a group is logged"),
    Need(names=("im.chat.member.bot.deleted_v1",), why="the bot leaving a group is logged"),
    Need(names=("im.chat.access_event.bot_p2p_chat_entered_v1",), why="opening the bot's chat is logged"),
)
CALLBACKS = (Need(names=("card.action.trigger",), why="the Approve / Decline buttons on cards"),)


class Finding(BaseModel):
    status: Status
    what: str
    detail: str
    fix: str = ""


class AppCheck(BaseModel):
    findings: list[Finding]
    credentials_ok: bool = False
    bot_name: str = ""
    bot_open_id: str = ""

    @property
    def failed(self) -> bool:
        return any(f.status == "fail" for f in self.findings)


def console_url(domain: str) -> str:
    """The developer console that belongs to an Open API domain (Lark's for Lark, else Feishu's)."""
    return "https://open.larksuite.com" if "larksuite" in domain else "https://open.feishu.cn"


def app_page(config: FeishuConfig, page: str = "") -> str:
    return f"{console_url(config.domain)}/app/{config.app_id}" + (f"/{page}" if page else "")


def scope_link(config: FeishuConfig, names: tuple[str, ...]) -> str:
    """The console page that adds these scopes in one click (the link Feishu's own 99991672 error gives)."""
    return f"{app_page(config, 'auth')}?q={','.join(names)}&op_from=openapi&token_type=tenant"


def registration_addons() -> dict[str, Any]:
    """What the scan-to-create page is asked to pre-fill: every scope, event and callback above
    (the first name of each), as the app acts (tenant), never as a person (user)."""
    return {
        "scopes": {"tenant": _unique(need.names[0] for need in SCOPES)},
        "events": {"items": {"tenant": [need.names[0] for need in EVENTS]}},
        "callbacks": {"items": [need.names[0] for need in CALLBACKS]},
    }


def check_app(config: FeishuConfig, *, timeout_s: float = 10.0) -> AppCheck:
    """Steps 1-4 above; later steps are skipped once the credentials are refused."""
    forget_tenant_token(config.app_id)  # a token cached for another secret would hide a wrong one
    sdk = build_sdk_config(config, timeout_s=timeout_s)
    check = AppCheck(findings=[])
    bot = _bot_info(sdk, config, check)
    if bot is None:
        return check
    check.credentials_ok = True
    check.bot_name, check.bot_open_id = str(bot.get("app_name") or ""), str(bot.get("open_id") or "")
    check.findings.append(
        Finding(status="ok", what="credentials", detail=f"app {config.app_id}, bot {check.bot_name!r}")
    )
    granted = _scopes(sdk, config, check)
    if granted is not None:
        check.findings.extend(_scope_findings(config, granted))
    check.findings.extend(_subscription_findings(sdk, config))
    return check


def _bot_info(sdk: Any, config: FeishuConfig, check: AppCheck) -> dict[str, Any] | None:
    try:
        response = send(sdk, bot_info_request())
    except ObtainAccessTokenException as error:
        check.findings.append(
            Finding(
                status="fail",
                what="credentials",
                detail=f"Feishu refused App ID {config.app_id} with this App Secret "
                f"(code {error.code}: {error.msg})",
                fix=f"copy the App ID and App Secret again from {app_page(config, 'baseinfo')}, then run "
                f"`ally setup --app-id {config.app_id} --app-secret-stdin --force`",
            )
        )
        return None
    except Exception as error:  # requests: refused, DNS, timeout, TLS
        check.findings.append(
            Finding(
                status="fail",
                what="credentials",
                detail=f"cannot reach {config.domain}: {_first_line(error)}",
                fix="check the network, or [feishu] domain (Lark tenants: https://open.larksuite.com)",
            )
        )
        return None
    body = _json(response)
    if not response.success() or not isinstance(body.get("bot"), dict):
        check.findings.append(
            Finding(
                status="fail",
                what="bot",
                detail=f"the app has no bot (code {response.code}: {response.msg})",
                fix=f"add the Bot feature (Add Features -> Bot) at {app_page(config)}, "
                "then publish a version",
            )
        )
        return None
    bot: dict[str, Any] = body["bot"]
    return bot


def _scopes(sdk: Any, config: FeishuConfig, check: AppCheck) -> dict[str, int] | None:
    response = Scope(sdk).list(ListScopeRequest.builder().build())
    if not response.success():
        check.findings.append(
            Finding(
                status="warn",
                what="scopes",
                detail=f"could not list the app's scopes (code {response.code}: {response.msg})",
                fix=f"compare the app's scopes with docs/feishu-setup.md at {app_page(config, 'auth')}",
            )
        )
        return None
    scopes = response.data.scopes or []
    return {str(s.scope_name): int(s.grant_status or 0) for s in scopes}


def _scope_findings(config: FeishuConfig, granted: dict[str, int]) -> list[Finding]:
    findings = []
    missing: list[str] = []
    for need in SCOPES:
        if any(granted.get(name) == GRANTED for name in need.names):
            continue
        status: Status = "fail" if need.required else "warn"
        added = [name for name in need.names if name in granted]
        if added:
            findings.append(
                Finding(
                    status=status,
                    what=f"scope {added[0]}",
                    detail=f"added but not granted yet ({need.why})",
                    fix="publish a new version of the app (and have an admin approve it) at "
                    + app_page(config),
                )
            )
        else:
            missing.append(need.names[0])
            findings.append(
                Finding(
                    status=status,
                    what=f"scope {need.names[0]}",
                    detail=f"missing: needed to {need.why}",
                    fix=f"add it at {scope_link(config, (need.names[0],))} and publish a new version",
                )
            )
    if not findings:
        findings.append(Finding(status="ok", what="scopes", detail="every scope work-ally uses is granted"))
    elif len(missing) > 1:
        findings.append(
            Finding(
                status="warn",
                what="scopes",
                detail=f"{len(missing)} scopes missing",
                fix=f"add them all at once at {scope_link(config, tuple(missing))}",
            )
        )
    return findings


def _subscription_findings(sdk: Any, config: FeishuConfig) -> list[Finding]:
    request = GetApplicationRequest.builder().app_id(config.app_id).lang("en_us").build()
    response = Application(sdk).get(request)
    events_page = app_page(config, "event")
    if response.code == SCOPE_MISSING:
        return [
            Finding(
                status="warn",
                what="events",
                detail=f"cannot check the app's events without the scope {APP_INFO_SCOPE}",
                fix=f"add it at {scope_link(config, (APP_INFO_SCOPE,))}, or compare {events_page} "
                "with docs/feishu-setup.md",
            )
        ]
    if not response.success() or response.data is None or response.data.app is None:
        return [
            Finding(
                status="warn",
                what="events",
                detail=f"could not read the app's configuration (code {response.code}: {response.msg})",
                fix=f"compare {events_page} with docs/feishu-setup.md",
            )
        ]
    app = response.data.app
    findings: list[Finding] = []
    wanted = "websocket" if config.transport == "websocket" else "webhook"
    how = (
        "Receive events through persistent connection"
        if wanted == "websocket"
        else "Send to developer server"
    )
    event = app.event
    subscription = str(getattr(event, "subscription_type", "") or "")
    if subscription != wanted:
        findings.append(
            Finding(
                status="fail",
                what="event delivery",
                detail=f"events go by {subscription or 'nothing (not chosen)'}, not by {wanted}",
                fix=f'at {events_page} choose "{how}" and save'
                + (
                    " (the console saves it only while `ally setup` or `ally up` is connected)"
                    if wanted == "websocket"
                    else ""
                ),
            )
        )
    subscribed = set(getattr(event, "subscribed_events", None) or [])
    findings.extend(_subscribed(EVENTS, subscribed, "event", f"add it at {events_page} (Add Events)"))
    callback = app.callback_info or app.callback
    callbacks = set(getattr(callback, "subscribed_callbacks", None) or [])
    findings.extend(
        _subscribed(CALLBACKS, callbacks, "callback", f"add it at {events_page} (Callback Configuration)")
    )
    if not findings:
        findings.append(
            Finding(
                status="ok", what="events", detail=f"subscribed to every event work-ally uses, by {wanted}"
            )
        )
    return findings


def _subscribed(needs: tuple[Need, ...], subscribed: set[str], kind: str, fix: str) -> list[Finding]:
    return [
        Finding(
            status="fail" if need.required else "warn",
            what=f"{kind} {need.names[0]}",
            detail=f"not subscribed: needed so that {need.why}",
            fix=fix,
        )
        for need in needs
        if not subscribed.intersection(need.names)
    ]


def _json(response: Any) -> dict[str, Any]:
    try:
        body = json.loads(response.raw.content)
    except (ValueError, AttributeError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or ["no answer"])[0][:200]


def _unique(names: Any) -> list[str]:
    return list(dict.fromkeys(names))
