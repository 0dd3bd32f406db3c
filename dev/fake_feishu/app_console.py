"""What the developer console holds for the fake's one app, and the scan-to-create flow that makes it.

- Scopes, event subscriptions and callbacks, as the Open API reports them
  (`GET /open-apis/application/v6/scopes`, `GET /open-apis/application/v6/applications/{app_id}`).
  By default the app is set up the way docs/feishu-setup.md says; tests take a piece away.
- Scan-to-create (`POST /oauth/v1/app/registration`, form-encoded, on the accounts host), as
  lark-oapi 1.7.5's `lark_oapi.scene.registration` drives it: `action=init` must list `client_secret`
  among `supported_auth_methods`; `action=begin` answers a `device_code`, the page to open
  (`verification_uri_complete`), a poll `interval` and `expires_in`; `action=poll` answers
  `{"error": "authorization_pending"}` until the person scans, then `client_id`, `client_secret` and
  `user_info` (their `open_id`, and `tenant_brand`). Errors are OAuth device-flow words
  (`access_denied`, `expired_token`, `slow_down`). The real server's HTTP statuses are not known
  here; the SDK reads the JSON whatever the status, so the fake answers 200.
- What the person does on their phone is `FakeFeishu.scan(url)`: the app is created with what the
  page was asked to pre-fill (the `addons` query parameter: gzip + url-safe base64 JSON of
  `{scopes: {tenant, user}, events: {items: {tenant, user}}, callbacks: {items}}`), so a setup that
  forgets to ask for a scope gets an app without it, as it would for real.
"""

from __future__ import annotations

import base64
import gzip
import json
import secrets
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, Field

# The app of docs/feishu-setup.md: its scopes (all granted), events and callback.
DEFAULT_SCOPES = (
    "im:message",
    "im:message.p2p_msg:readonly",
    "im:message.group_at_msg:readonly",
    "im:message:send_as_bot",
    "im:resource",
    "im:chat:readonly",
    "contact:user.base:readonly",
    "im:message.reactions:write_only",
    "application:application:self_manage",
)
DEFAULT_EVENTS = (
    "im.message.receive_v1",
    "im.message.reaction.created_v1",
    "im.message.reaction.deleted_v1",
    "im.message.recalled_v1",
    "im.chat.member.bot.added_v1",
    "im.chat.member.bot.deleted_v1",
    "im.chat.access_event.bot_p2p_chat_entered_v1",
)
DEFAULT_CALLBACKS = ("card.action.trigger",)
# Reading the app's own configuration needs one of these (Feishu's "get app info" API).
APP_INFO_SCOPES = ("application:application:self_manage", "admin:app.info:readonly")
GRANTED, NOT_GRANTED = 1, 2
REGISTRATION_PATH = "/oauth/v1/app/registration"


class AppConsole(BaseModel):
    """The console settings of the fake's app. `scopes` maps a scope name to its grant status
    (1 granted, 2 added but not granted yet, e.g. before a version is published)."""

    scopes: dict[str, int] = Field(default_factory=lambda: dict.fromkeys(DEFAULT_SCOPES, GRANTED))
    event_subscription: Literal["websocket", "webhook", ""] = "websocket"
    events: list[str] = Field(default_factory=lambda: list(DEFAULT_EVENTS))
    callback_subscription: Literal["websocket", "webhook", ""] = "websocket"
    callbacks: list[str] = Field(default_factory=lambda: list(DEFAULT_CALLBACKS))

    def may_read_app_info(self) -> bool:
        return any(self.scopes.get(scope) == GRANTED for scope in APP_INFO_SCOPES)

    def app_info(self, app_id: str, app_name: str) -> dict[str, Any]:
        """`data.app` of GET /open-apis/application/v6/applications/{app_id}, the parts setup reads."""
        return {
            "app_id": app_id,
            "app_name": app_name,
            "scopes": [{"scope": name, "level": 1, "token_types": ["tenant"]} for name in self.scopes],
            "event": {
                "subscription_type": self.event_subscription,
                "request_url": "",
                "subscribed_events": list(self.events),
            },
            "callback_info": {
                "callback_type": self.callback_subscription,
                "request_url": "",
                "subscribed_callbacks": list(self.callbacks),
            },
        }

    def scope_list(self) -> list[dict[str, Any]]:
        """`data.scopes` of GET /open-apis/application/v6/scopes."""
        return [
            {"scope_name": name, "grant_status": status, "scope_type": "tenant"}
            for name, status in self.scopes.items()
        ]

    def created_from(self, addons: dict[str, Any]) -> AppConsole:
        """The app the creation page makes when asked to pre-fill `addons` (tenant items only:
        work-ally acts as the app, never as a person)."""
        return AppConsole(
            scopes=dict.fromkeys(addons.get("scopes", {}).get("tenant", []), GRANTED),
            event_subscription="websocket",
            events=list(addons.get("events", {}).get("items", {}).get("tenant", [])),
            callback_subscription="websocket",
            callbacks=list(addons.get("callbacks", {}).get("items", [])),
        )


class AppRegistration(BaseModel):
    """One scan-to-create attempt, from `action=begin` on."""

    device_code: str
    user_code: str
    status: Literal["pending", "authorized", "denied", "expired"] = "pending"
    scanned_by: str = ""
    tenant_brand: Literal["feishu", "lark"] = "feishu"
    polls: int = 0


def decode_addons(encoded: str) -> dict[str, Any]:
    """The `addons` query parameter of a registration page URL, as lark-oapi encodes it."""
    padded = encoded + "=" * (-len(encoded) % 4)
    decoded: dict[str, Any] = json.loads(gzip.decompress(base64.urlsafe_b64decode(padded)))
    return decoded


def page_parameters(url: str) -> tuple[str, dict[str, Any]]:
    """The user code and the decoded addons (empty when none) of a registration page URL."""
    query = parse_qs(urlsplit(url).query)
    user_code = (query.get("user_code") or [""])[0]
    addons = query.get("addons")
    return user_code, decode_addons(addons[0]) if addons else {}


def new_registration() -> AppRegistration:
    return AppRegistration(
        device_code="dc_" + secrets.token_hex(12),
        user_code=f"{secrets.token_hex(2).upper()}-{secrets.token_hex(2).upper()}",
    )
