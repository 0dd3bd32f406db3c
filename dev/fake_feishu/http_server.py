"""The HTTP side of the fake: a stdlib ThreadingHTTPServer that turns requests into `ApiRequest`s."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dev.fake_feishu.open_api import ApiAnswer, ApiRequest, OpenApi


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, tuple[str | None, bytes]]]:
    """Text fields and files of a multipart/form-data body (the SDK's `im/v1/files`, `im/v1/images`)."""
    boundary = next(
        (p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary=")),
        "",
    )
    fields: dict[str, str] = {}
    files: dict[str, tuple[str | None, bytes]] = {}
    if not boundary:
        return fields, files
    for part in body.split(b"--" + boundary.encode()):
        if part in (b"", b"--", b"--\r\n") or b"\r\n\r\n" not in part:
            continue
        head, _, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        disposition = next(
            (
                line
                for line in head.decode("utf-8", "replace").split("\r\n")
                if line.lower().startswith("content-disp")
            ),
            "",
        )
        params = dict(
            (key.strip(), value.strip().strip('"'))
            for key, _, value in (item.partition("=") for item in disposition.split(";")[1:])
        )
        name = params.get("name", "")
        if "filename" in params or name in ("file", "image"):  # the SDK may name neither part's file
            files[name] = (params.get("filename"), data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def to_api_request(method: str, target: str, headers: dict[str, str], raw_body: bytes) -> ApiRequest:
    url = urlsplit(target)
    request = ApiRequest(method, url.path, dict(parse_qsl(url.query)), headers, raw_body)
    content_type = request.header("Content-Type") or ""
    if content_type.startswith("multipart/form-data"):
        request.body, request.files = parse_multipart(content_type, raw_body)
    elif content_type.startswith("application/x-www-form-urlencoded"):  # the app registration flow
        request.body = dict(parse_qsl(raw_body.decode("utf-8", "replace")))
    elif raw_body:
        # The token request carries JSON with no Content-Type at all (docs/feishu-platform.md §6):
        # parse whatever came.
        try:
            request.body = json.loads(raw_body)
        except ValueError:
            request.body = None
    return request


class FeishuHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never join a handler sleeping in an injected delay
    # socketserver listens with a backlog of 5: a burst of calls (the SDK opens a connection per
    # call) overflowed it, and each dropped connection was retried by the caller's kernel 1 s later,
    # a delay no Feishu server adds (seen as 1 s and 3 s tails in bench/progress.py).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], api: OpenApi) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def serve_in_thread(self) -> threading.Thread:
        # A short poll interval: shutdown() waits up to one interval, and tests stop a fake each.
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-feishu-http", daemon=True
        )
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FeishuHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read FakeFeishu.calls, not an access log

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        raw_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = dict(self.headers.items())
        answer = self.server.api.handle(to_api_request(self.command, self.path, headers, raw_body))
        self._write(answer)

    def _write(self, answer: ApiAnswer) -> None:
        try:
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (an SDK timeout while we were slow on purpose)
