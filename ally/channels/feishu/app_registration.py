"""Create a Feishu app by scanning a QR code: lark-oapi's scan-to-create registration.

What `lark_oapi.register_app` (lark-oapi 1.7.5, `lark_oapi/scene/registration/`) does, read in its
source (docs/feishu-platform.md, "Scan-to-create an app", says the same for people):
- it runs an OAuth-style device flow against the *accounts* host (`https://accounts.feishu.cn`,
  or `accounts.larksuite.com` for Lark), all by `POST /oauth/v1/app/registration` with a
  form-encoded `action`: `init` (the server must offer the `client_secret` auth method), `begin`
  (archetype `PersonalAgent`, asking for the scanner's `open_id`) which answers a device code, the
  page URL to show as a QR code, the poll interval and the expiry, then `poll` every `interval`
  seconds until the person has confirmed on their phone;
- the page URL carries what the creation page pre-fills: the app's name (`app_preset`) and the
  scopes, events and callbacks it should have (`addons`, gzip + url-safe base64 JSON);
- success is the new app's `client_id` / `client_secret` (its App ID and App Secret) and
  `user_info` (the scanner's `open_id`, and `tenant_brand`: a `lark` tenant makes the SDK poll the
  Lark host instead, once); `access_denied` and `expired_token` end it, `slow_down` adds 5 s.
- its base URLs are parameters (`domain`, `lark_domain`) and plain `requests` calls, so a local
  fake can play the accounts host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from lark_oapi.scene.registration import AppAccessDeniedError, AppExpiredError, RegisterAppError, register_app
from pydantic import BaseModel, SecretStr

from ally.channels.feishu.app_check import registration_addons

FEISHU_ACCOUNTS = "https://accounts.feishu.cn"
LARK_ACCOUNTS = "https://accounts.larksuite.com"
FEISHU_OPEN_API = "https://open.feishu.cn"
LARK_OPEN_API = "https://open.larksuite.com"
APP_NAME = "work-ally"
APP_DESCRIPTION = "Drives a Codex agent on my computer from Feishu chats."


class RegisteredApp(BaseModel):
    app_id: str
    app_secret: SecretStr
    owner_open_id: str = ""
    brand: Literal["feishu", "lark"] = "feishu"

    @property
    def open_api_domain(self) -> str:
        return LARK_OPEN_API if self.brand == "lark" else FEISHU_OPEN_API


class RegistrationFailed(Exception):
    """The scan did not give an app; the message says why and what to do."""


def register_by_scan(
    on_page: Callable[[str, int], None],
    *,
    accounts_url: str = FEISHU_ACCOUNTS,
    lark_accounts_url: str = LARK_ACCOUNTS,
    on_status: Callable[[str], None] = lambda status: None,
) -> RegisteredApp:
    """Run the device flow; `on_page(url, expires_in_s)` shows the page to scan. Blocks until the
    person confirms, declines, or the code expires (Ctrl-C stops it too)."""

    def on_qr_code(info: dict[str, Any]) -> None:
        on_page(str(info.get("url", "")), int(info.get("expire_in") or 0))

    def on_status_change(info: dict[str, Any]) -> None:
        on_status(str(info.get("status", "")))

    try:
        result = register_app(
            on_qr_code,
            on_status_change=on_status_change,
            source="work-ally",
            domain=accounts_url.rstrip("/"),
            lark_domain=lark_accounts_url.rstrip("/"),
            app_preset={"name": APP_NAME, "desc": APP_DESCRIPTION},
            addons=registration_addons(),
        )
    except AppAccessDeniedError:
        raise RegistrationFailed("the app was not created: it was declined on the phone") from None
    except AppExpiredError:
        raise RegistrationFailed(
            "the QR code expired before it was confirmed: run `ally setup --scan` again"
        ) from None
    except RegisterAppError as error:
        raise RegistrationFailed(
            f"Feishu refused to create the app ({error.code}: {error.description}); "
            "create it by hand (docs/feishu-setup.md) and run `ally setup --app-id …`"
        ) from None
    except (OSError, ValueError, KeyError) as error:  # requests' connection errors are OSErrors
        reason = (str(error).strip().splitlines() or ["no answer"])[0][:200]
        raise RegistrationFailed(
            f"cannot reach the app registration service at {accounts_url}: {reason}; "
            "or create the app by hand (docs/feishu-setup.md) and run `ally setup --app-id …`"
        ) from None
    user = result.get("user_info") or {}
    return RegisteredApp(
        app_id=str(result["client_id"]),
        app_secret=SecretStr(str(result["client_secret"])),
        owner_open_id=str(user.get("open_id") or ""),
        brand="lark" if user.get("tenant_brand") == "lark" else "feishu",
    )
