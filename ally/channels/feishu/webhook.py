"""The webhook transport: Feishu's HTTP event and callback delivery, checked, then dispatched."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lark_oapi.core.const import (
    CONTENT_TYPE,
    LARK_REQUEST_NONCE,
    LARK_REQUEST_SIGNATURE,
    LARK_REQUEST_TIMESTAMP,
    X_REQUEST_ID,
)
from lark_oapi.core.json import JSON
from lark_oapi.core.utils.decryptor import AESCipher

from ally.channels.feishu.acks import HandOverFailed, ThreadEnd

log = logging.getLogger(__name__)

# Webhook replay window: the SDK checks the signature but not the timestamp's age
# (docs/feishu-platform.md §3).
WEBHOOK_MAX_AGE_S = 300.0
WEBHOOK_MAX_BODY = 1024 * 1024
WEBHOOK_LOG_EVERY_S = 10.0  # a refused kind of request is logged at most this often


class WebhookServer:
    """Feishu's HTTP event and callback delivery, checked here, then into the SDK's dispatcher.

    The check is ours, done before the SDK sees anything, so a request from anyone else is
    answered with a 4xx and one short log line (rate-limited: anyone on the network can send
    them), never with the SDK's 500 and traceback (Feishu would push a 500 again):
    - malformed (not a JSON object, not decryptable): 400;
    - unsigned or wrongly signed (with an encrypt key, every event is signed over timestamp,
      nonce, key and body), or the wrong verification token: 401;
    - a signed timestamp more than `max_age_s` old (or ahead): 400. The SDK checks the signature
      but not its age, so a captured request could otherwise be replayed forever.
    An authentic event then goes through the same dispatch as the long connection. One whose
    shape is broken is acknowledged (200) and logged once: pushing it again cannot fix it. One
    whose hand-over failed (Temporal unreachable) gets a 500, so Feishu pushes it again.
    """

    def __init__(
        self,
        handler: Any,
        *,
        port: int,
        host: str = "0.0.0.0",
        encrypt_key: str = "",
        verification_token: str = "",
        max_age_s: float = WEBHOOK_MAX_AGE_S,
    ) -> None:
        self.handler = handler
        self.encrypt_key = encrypt_key
        self.verification_token = verification_token
        self.max_age_s = max_age_s
        self.server = ThreadingHTTPServer((host, port), _webhook_request_handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self._serve, name="feishu-webhook", daemon=True)
        self._stopped = ThreadEnd()
        self._refusals = QuietLog(WEBHOOK_LOG_EVERY_S)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        """Call from the gateway loop; `watch()` then reports the server's end on that loop."""
        self._stopped.arm()
        self._thread.start()
        log.info("Feishu webhook listening on port %d", self.port)

    def _serve(self) -> None:
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self._stopped.signal()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    async def watch(self) -> None:
        await self._stopped.wait()
        raise RuntimeError("the Feishu webhook server stopped")

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One webhook request: (status, headers, body). Never raises."""
        try:
            plaintext, envelope = self._authentic(headers, body)
        except WebhookRefused as refused:
            self._refusals.warning(refused.kind, "webhook request refused: %s", refused.reason)
            return _json_answer(refused.status, {"msg": f"refused: {refused.kind}"})
        if envelope.get("type") == "url_verification":
            return _json_answer(200, {"challenge": str(envelope.get("challenge") or "")})
        try:
            result = self.handler._do_without_validation(plaintext)
        except HandOverFailed as error:
            log.warning("webhook event answered 500 so that Feishu pushes it again: %s", error)
            return _json_answer(500, {"msg": "not accepted yet; push again"})
        except Exception as error:  # the SDK could not read its shape
            kind = _event_type(envelope)
            self._refusals.warning(
                "broken event", "signed %s event of a broken shape acknowledged, dropped: %s", kind, error
            )
            return _json_answer(200, {"msg": "success"})
        if result is None:
            return _json_answer(200, {"msg": "success"})
        return 200, {CONTENT_TYPE: "application/json; charset=utf-8"}, JSON.marshal(result).encode()

    def _authentic(self, headers: dict[str, str], body: bytes) -> tuple[bytes, dict[str, Any]]:
        """The plaintext and the envelope of a request Feishu sent; `WebhookRefused` otherwise."""
        outer = _json_object(body, "the body")
        plaintext = body
        if "encrypt" in outer:
            if not self.encrypt_key:
                raise WebhookRefused(400, "encrypted", "encrypted, but no encrypt key is configured")
            try:
                plaintext = AESCipher(self.encrypt_key).decrypt_str(str(outer["encrypt"])).encode()
            except (ValueError, TypeError, UnicodeDecodeError):
                raise WebhookRefused(400, "malformed", "cannot be decrypted with the encrypt key") from None
        envelope = _json_object(plaintext, "the decrypted body") if plaintext is not body else outer
        challenge = envelope.get("type") == "url_verification"
        if self.encrypt_key and not challenge:  # Feishu signs every event once a key is set
            self._check_signature(headers, body)
        if self.verification_token:
            header = envelope.get("header")
            token = header.get("token") if isinstance(header, dict) else envelope.get("token")
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), self.verification_token.encode()
            ):
                raise WebhookRefused(401, "token", "wrong or missing verification token")
        return plaintext, envelope

    def _check_signature(self, headers: dict[str, str], body: bytes) -> None:
        timestamp = headers.get(LARK_REQUEST_TIMESTAMP)
        nonce = headers.get(LARK_REQUEST_NONCE)
        signature = headers.get(LARK_REQUEST_SIGNATURE)
        if not (timestamp and nonce and signature):
            raise WebhookRefused(401, "unsigned", "unsigned")
        if (stale := self._stale(timestamp)) is not None:
            raise WebhookRefused(400, "timestamp", stale)
        expected = hashlib.sha256((timestamp + nonce + self.encrypt_key).encode() + body).hexdigest()
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise WebhookRefused(401, "signature", "wrong signature")

    def _stale(self, timestamp: str) -> str | None:
        try:
            age = time.time() - float(timestamp)
        except ValueError:
            return f"timestamp {timestamp[:20]!r} is not a number"
        return f"timestamp is {age:.0f} s old" if abs(age) > self.max_age_s else None


class WebhookRefused(Exception):
    """A webhook request that did not come from Feishu (or not in one piece)."""

    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind  # what the caller is told, and what the log is rate-limited by
        self.reason = reason  # for the log


class QuietLog:
    """Log lines anyone on the network can trigger: one per kind every `every_s` seconds, with
    the count of those left out since, so a flood cannot fill the log."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -self.every_s) < self.every_s:
                self._left_out[kind] = self._left_out.get(kind, 0) + 1
                return
            self._last[kind] = now
            left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += f" (and {left_out} more like it in the last {self.every_s:.0f} s)"
        log.warning(message, *args)


def canonical_headers(lookup: Callable[[str], str | None]) -> dict[str, str]:
    """The request headers the SDK reads, under the names it looks up exactly."""
    wanted = (LARK_REQUEST_TIMESTAMP, LARK_REQUEST_NONCE, LARK_REQUEST_SIGNATURE, CONTENT_TYPE, X_REQUEST_ID)
    return {name: value for name in wanted if (value := lookup(name)) is not None}


def _webhook_request_handler(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhook: " + format, *args)

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= WEBHOOK_MAX_BODY:
                self.close_connection = True  # the body was not read: the connection cannot be reused
                self._write(*_json_answer(413 if length > 0 else 400, {"msg": "bad length"}))
                return
            body = self.rfile.read(length)
            try:
                status, headers, content = server.answer(self.path, canonical_headers(self.headers.get), body)
            except Exception as error:  # `answer` never raises; this is the last resort
                log.error("webhook request failed: %s", error)
                status, headers, content = _json_answer(500, {"msg": "error"})
            self._write(status, headers, content)

        def _write(self, status: int, headers: dict[str, str], content: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    return Handler


def _json_answer(status: int, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {CONTENT_TYPE: "application/json; charset=utf-8"}, json.dumps(body).encode()


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRefused(400, "malformed", f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise WebhookRefused(400, "malformed", f"{what} is not a JSON object")
    return value


def _event_type(envelope: dict[str, Any]) -> str:
    header = envelope.get("header")
    kind = header.get("event_type") if isinstance(header, dict) else None
    return kind if isinstance(kind, str) and kind else "(untyped)"
