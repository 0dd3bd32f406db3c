"""Credentials never reach a log line, whoever wrote the line.

Libraries log what they see: lark-oapi logs its long-connection URL at INFO on every connect, and
that URL carries `access_key=` and `ticket=` (valid credentials for the app's event stream).
Every worker's log handler formats through `RedactingFormatter`, so a credential is masked in any
line, traceback included, without each caller having to know.
"""

from __future__ import annotations

import logging
import re

MASK = "<redacted>"

# Query or form parameters whose value is a credential (exact names, any case).
SECRET_PARAMS = (
    "access_key",
    "ticket",
    "token",
    "access_token",
    "refresh_token",
    "tenant_access_token",
    "app_access_token",
    "user_access_token",
    "app_secret",
    "client_secret",
    "secret",
    "password",
    "api_key",
    "apikey",
    "signature",
    "sign",
    "code",
)
# Keys whose value is a credential when they appear in JSON or key=value text.
SECRET_KEYS = (
    "app_secret",
    "encrypt_key",
    "verification_token",
    "tenant_access_token",
    "app_access_token",
    "access_token",
    "refresh_token",
    "api_key",
    "password",
)

_PARAM = re.compile(
    r"(?P<lead>[?&;](?:" + "|".join(SECRET_PARAMS) + r")=)(?P<value>[^&\s#'\"<>]+)", re.IGNORECASE
)
_KEY = re.compile(
    r"(?P<lead>[\"']?(?:" + "|".join(SECRET_KEYS) + r")[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\"'\s,}&]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<lead>\bBearer\s+)(?P<value>[A-Za-z0-9._~+/=-]+)")


def redact(text: str) -> str:
    """`text` with every credential-looking value replaced by `<redacted>`."""
    for pattern in (_PARAM, _KEY, _BEARER):
        text = pattern.sub(lambda m: m.group("lead") + MASK, text)
    return text


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then masks credentials in the whole result (message and traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def redact_handlers(logger: logging.Logger | None = None) -> None:
    """Give every handler of `logger` (default: the root logger) a redacting formatter that keeps
    its format."""
    for handler in (logger or logging.getLogger()).handlers:
        current = handler.formatter or logging.Formatter()
        handler.setFormatter(RedactingFormatter(current._fmt, current.datefmt))
