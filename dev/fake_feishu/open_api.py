"""The Feishu Open API subset the bridge uses, as plain request → answer logic (no sockets here).

Shapes follow docs/feishu-platform.md §4/§6: every API but the token and bot-info calls answers
`{"code":0,"msg":"success","data":{…}}`; errors answer a non-zero `code` (Feishu puts its own codes in
the body, and the SDK never retries, so the bridge must read them).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dev.fake_feishu.app_console import (
    APP_INFO_SCOPES,
    REGISTRATION_PATH,
    AppConsole,
    AppRegistration,
    new_registration,
)
from dev.fake_feishu.records import (
    Chat,
    Fault,
    Message,
    Reaction,
    RecordedCall,
    Resource,
    UploadedFile,
    UploadedImage,
    User,
)

TENANT_KEY = "tenant_test"
TOKEN_EXPIRE_S = 7200
UUID_WINDOW_S = 3600  # Feishu: one message per `uuid` within 1 h (docs/feishu-platform.md §4)
UUID_MAX_CHARS = 50

# Feishu codes the fake answers with (docs/feishu-platform.md §4/§5 unless marked).
RATE_LIMITED = 99991400
MISSING_TOKEN = 99991661  # not in docs/feishu-platform.md: Feishu's "missing access token" code
INVALID_TOKEN = 99991663
FIELD_VALIDATION = 99992402  # not in docs/feishu-platform.md: Feishu's generic "field validation failed"
INVALID_PARAM = 230001  # "Your request contains an invalid request parameter, ext=…"
MESSAGE_RECALLED = 230011  # not in docs/feishu-platform.md
CONTENT_TOO_LONG = 230025  # not in docs/feishu-platform.md, which only says "230021/230022 length"
BOT_NOT_IN_CHAT = 230002  # the bot was removed from the chat (or never added)
NO_USER_AUTHORITY = 41050  # not in docs/feishu-platform.md: user outside the app's contact range
APP_SECRET_INVALID = 10014  # not in docs/feishu-platform.md
SCOPE_MISSING = 99991672  # "Access denied. One of the following scopes is required: […]"

DEFAULT_MESSAGES = {
    RATE_LIMITED: "request trigger frequency limit",
    MISSING_TOKEN: "Missing access token for authorization. Please make a request with token attached.",
    INVALID_TOKEN: "Invalid access token for authorization. Please make a request with token attached.",
}

MSG_TYPES = frozenset(
    {"text", "post", "image", "file", "audio", "media", "sticker", "interactive", "share_chat", "share_user"}
)
RECEIVE_ID_TYPES = frozenset({"open_id", "union_id", "user_id", "email", "chat_id"})
FILE_TYPES = frozenset({"opus", "mp4", "pdf", "doc", "xls", "ppt", "stream"})
# Request-body limits (docs/feishu-platform.md §4): text ≤ 150 KB; card and post ≤ 30 KB, escapes included.
MAX_TEXT_BYTES = 150 * 1024
MAX_CARD_BYTES = 30 * 1024
# Uploads (docs/feishu-platform.md §4): a file at most 30 MB, an image at most 10 MB, neither empty.
MAX_FILE_BYTES = 30 * 1024 * 1024
MAX_IMAGE_BYTES = 10 * 1024 * 1024
IMAGE_TYPES = frozenset({"message", "avatar"})


@dataclass
class ApiRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw_body: bytes = b""
    body: Any = None
    files: dict[str, tuple[str | None, bytes]] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


@dataclass
class ApiAnswer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    code: int | None = None
    payload: Any = None


def now_ms() -> str:
    return str(int(time.time() * 1000))


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid_module.uuid4().hex}"


def json_answer(
    payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> ApiAnswer:
    # Canonical "Content-Type": the SDK looks headers up in a plain dict, exact case (client.py request()).
    all_headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    code = payload.get("code")
    body = json.dumps(payload, ensure_ascii=False).encode()
    return ApiAnswer(status, body, all_headers, code if isinstance(code, int) else None, payload)


def ok(data: dict[str, Any]) -> ApiAnswer:
    return json_answer({"code": 0, "msg": "success", "data": data})


def error(status: int, code: int, msg: str | None = None, headers: dict[str, str] | None = None) -> ApiAnswer:
    text = msg or DEFAULT_MESSAGES.get(code, "fake Feishu error")
    return json_answer({"code": code, "msg": text, "error": {"log_id": new_id("fake")}}, status, headers)


def invalid_param(ext: str) -> ApiAnswer:
    # The documented shape of 230001: HTTP 400, msg ends with "ext=<what was wrong>".
    return error(400, INVALID_PARAM, f"Your request contains an invalid request parameter, ext={ext}")


def scope_missing(app_id: str, scopes: tuple[str, ...]) -> ApiAnswer:
    """Feishu's answer to a call the app has no scope for: the scopes that would do, and where to add them."""
    listed = ", ".join(scopes)
    link = f"https://open.feishu.cn/app/{app_id}/auth?q={','.join(scopes)}&op_from=openapi&token_type=tenant"
    return error(
        400,
        SCOPE_MISSING,
        f"Access denied. One of the following scopes is required: [{listed}]. Add one of them: {link}",
    )


def validation_failed(detail: str) -> ApiAnswer:
    return error(400, FIELD_VALIDATION, f"field validation failed: {detail}")


def fault_answer(fault: Fault, status: int) -> ApiAnswer:
    headers: dict[str, str] = {}
    # Rate limits carry the seconds to wait in `x-ogw-ratelimit-reset` (docs/feishu-platform.md §5).
    if (status == 429 or fault.code == RATE_LIMITED) and fault.reset_seconds is not None:
        headers["x-ogw-ratelimit-reset"] = f"{fault.reset_seconds:g}"
    if fault.body is not None:
        return ApiAnswer(status, fault.body, {"Content-Type": fault.content_type, **headers})
    return error(status, fault.code, fault.msg, headers)


Route = Callable[[ApiRequest, dict[str, str]], ApiAnswer]


class OpenApi:
    """The fake's state and its Open API routes. All state is guarded by `changed` (a Condition),
    which is notified after every request so waiters can re-check."""

    def __init__(
        self,
        *,
        app_id: str,
        app_secret: str,
        bot_open_id: str,
        bot_name: str,
        long_connection_url: Callable[[], str],
        client_config: dict[str, int],
    ) -> None:
        self.app_id = app_id
        self.app_secret = app_secret
        self.bot_open_id = bot_open_id
        self.bot_name = bot_name
        self.long_connection_url = long_connection_url
        self.client_config = client_config
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.calls: list[RecordedCall] = []
        self.messages: dict[str, Message] = {}
        self.reactions: dict[str, Reaction] = {}
        self.users: dict[str, User] = {}
        self.chats: dict[str, Chat] = {}
        self.resources: dict[tuple[str, str], Resource] = {}
        self.files: dict[str, UploadedFile] = {}
        self.images: dict[str, UploadedImage] = {}
        self.faults: list[Fault] = []
        self.tokens: set[str] = set()
        self.p2p_chats: dict[str, str] = {}  # open_id → the DM chat_id, learned from inbound events
        self.bot_left: set[str] = set()  # chats the bot was removed from: sends there fail (230002)
        self._uuids: dict[str, tuple[str, float]] = {}
        self.console = AppConsole()
        self.registrations: list[AppRegistration] = []
        self.registration_interval_s = 1  # what `begin` tells the SDK to wait between polls
        self.registration_expires_s = 600
        self.max_text_bytes = MAX_TEXT_BYTES
        self.max_card_bytes = MAX_CARD_BYTES
        self._routes: list[tuple[str, re.Pattern[str], Route, bool]] = []
        self._add("POST", "/open-apis/auth/v3/tenant_access_token/internal", self._tenant_token, auth=False)
        self._add("POST", "/callback/ws/endpoint", self._ws_endpoint, auth=False)
        self._add("GET", "/open-apis/bot/v3/info", self._bot_info)
        self._add("GET", "/open-apis/application/v6/scopes", self._scopes)
        self._add("GET", "/open-apis/application/v6/applications/{app_id}", self._application)
        self._add("POST", REGISTRATION_PATH, self._registration, auth=False)
        self._add("POST", "/open-apis/im/v1/messages", self._create_message)
        self._add("POST", "/open-apis/im/v1/messages/{message_id}/reply", self._reply)
        self._add("PATCH", "/open-apis/im/v1/messages/{message_id}", self._patch)
        self._add("GET", "/open-apis/im/v1/messages/{message_id}", self._get_message)
        self._add("DELETE", "/open-apis/im/v1/messages/{message_id}", self._recall)
        self._add("POST", "/open-apis/im/v1/messages/{message_id}/reactions", self._add_reaction)
        self._add(
            "DELETE", "/open-apis/im/v1/messages/{message_id}/reactions/{reaction_id}", self._delete_reaction
        )
        self._add("GET", "/open-apis/im/v1/messages/{message_id}/resources/{key}", self._resource)
        self._add("GET", "/open-apis/contact/v3/users/{user_id}", self._user)
        self._add("GET", "/open-apis/im/v1/chats/{chat_id}", self._chat)
        self._add("POST", "/open-apis/im/v1/files", self._upload_file)
        self._add("POST", "/open-apis/im/v1/images", self._upload_image)

    def _add(self, method: str, template: str, route: Route, *, auth: bool = True) -> None:
        pattern = re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template))
        self._routes.append((method, pattern, route, auth))

    # --- dispatch ------------------------------------------------------------------------------

    def handle(self, request: ApiRequest) -> ApiAnswer:
        fault = self._take_fault(request)
        if fault is not None and fault.delay_s and self.stopping.wait(fault.delay_s):
            return error(503, 1, "fake Feishu is stopping")
        if fault is not None and fault.status is not None:
            answer = fault_answer(fault, fault.status)
        else:
            answer = self._route(request)
        with self.changed:
            self.calls.append(
                RecordedCall(
                    method=request.method,
                    path=request.path,
                    query=request.query,
                    headers=request.headers,
                    body=request.body,
                    raw_body=request.raw_body,
                    status=answer.status,
                    code=answer.code,
                    answer=answer.payload,
                )
            )
            self.changed.notify_all()
        answer.headers.setdefault("X-Tt-Logid", new_id("fake"))  # read by resp.get_log_id()
        return answer

    def _take_fault(self, request: ApiRequest) -> Fault | None:
        with self.changed:
            for fault in self.faults:
                if fault.matches(request.method, request.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault.model_copy()
        return None

    def _route(self, request: ApiRequest) -> ApiAnswer:
        for method, pattern, route, auth in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None or method != request.method:
                continue
            with self.changed:
                if auth and (denied := self._check_token(request)) is not None:
                    return denied
                return route(request, match.groupdict())
        return json_answer(
            {"code": 404, "msg": f"fake Feishu has no route {request.method} {request.path}"}, 404
        )

    def _check_token(self, request: ApiRequest) -> ApiAnswer | None:
        # HTTP 400 for token errors is what the fake chooses; Feishu's status for them is not in
        # docs/feishu-platform.md.
        authorization = request.header("Authorization") or ""
        if not authorization.startswith("Bearer ") or not authorization.removeprefix("Bearer "):
            return error(400, MISSING_TOKEN)
        if authorization.removeprefix("Bearer ") not in self.tokens:
            return error(400, INVALID_TOKEN)
        return None

    # --- auth and discovery --------------------------------------------------------------------

    def _credentials_ok(self, app_id: Any, app_secret: Any) -> bool:
        return bool(app_id == self.app_id and app_secret == self.app_secret)

    def _tenant_token(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        body = request.body if isinstance(request.body, dict) else {}
        if not self._credentials_ok(body.get("app_id"), body.get("app_secret")):
            return error(400, APP_SECRET_INVALID, "app secret invalid")
        token = new_id("t-")
        self.tokens.add(token)
        # Top-level token, no `data` wrapper (docs/feishu-platform.md §4).
        return json_answer({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": TOKEN_EXPIRE_S})

    def _ws_endpoint(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        body = request.body if isinstance(request.body, dict) else {}
        if not self._credentials_ok(body.get("AppID"), body.get("AppSecret")):
            # Any code but 0, 1 and 1000040343 is fatal for lark.ws.Client (ws/client.py _get_conn_url).
            return json_answer({"code": APP_SECRET_INVALID, "msg": "app secret invalid"})
        data = {"URL": self.long_connection_url(), "ClientConfig": dict(self.client_config)}
        return json_answer({"code": 0, "msg": "ok", "data": data})

    def _bot_info(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        # `bot` at top level, no `data` (docs/feishu-platform.md §1).
        bot = {
            "activate_status": 2,
            "app_name": self.bot_name,
            "avatar_url": "",
            "ip_white_list": [],
            "open_id": self.bot_open_id,
        }
        return json_answer({"code": 0, "msg": "ok", "bot": bot})

    # --- the app's own configuration, and creating it by scan ------------------------------------

    def _scopes(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        # Needs no scope of its own (Feishu's "query the tenant's grants" API).
        return ok({"scopes": self.console.scope_list()})

    def _application(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        if params["app_id"] not in (self.app_id, "me"):
            return invalid_param(f"invalid app_id {params['app_id']} (fake: only its own app)")
        if not self.console.may_read_app_info():
            return scope_missing(self.app_id, APP_INFO_SCOPES)
        return ok({"app": self.console.app_info(self.app_id, self.bot_name)})

    def _registration(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        form = request.body if isinstance(request.body, dict) else {}
        action = form.get("action")
        if action == "init":
            return json_answer({"supported_auth_methods": ["client_secret"]})
        if action == "begin":
            registration = new_registration()
            self.registrations.append(registration)
            host = request.header("Host") or "127.0.0.1"
            return json_answer(
                {
                    "device_code": registration.device_code,
                    "user_code": registration.user_code,
                    "verification_uri_complete": f"http://{host}/page/launcher?user_code={registration.user_code}",
                    "interval": self.registration_interval_s,
                    "expires_in": self.registration_expires_s,
                }
            )
        if action == "poll":
            polled = next((r for r in self.registrations if r.device_code == form.get("device_code")), None)
            if polled is None:
                return json_answer({"error": "invalid_grant", "error_description": "unknown device_code"})
            polled.polls += 1
            match polled.status:
                case "pending":
                    return json_answer({"error": "authorization_pending"})
                case "denied":
                    return json_answer({"error": "access_denied", "error_description": "the person declined"})
                case "expired":
                    return json_answer({"error": "expired_token", "error_description": "the code expired"})
            user = {"open_id": polled.scanned_by, "tenant_brand": polled.tenant_brand}
            created = {"client_id": self.app_id, "client_secret": self.app_secret, "user_info": user}
            return json_answer(created)
        return json_answer({"error": "invalid_request", "error_description": f"unknown action {action!r}"})

    # --- messages ------------------------------------------------------------------------------

    def _create_message(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        receive_id_type = request.query.get("receive_id_type", "")
        if receive_id_type not in RECEIVE_ID_TYPES:
            return validation_failed(f"receive_id_type must be one of {sorted(RECEIVE_ID_TYPES)}")
        body = request.body if isinstance(request.body, dict) else {}
        receive_id = body.get("receive_id")
        if not isinstance(receive_id, str) or not receive_id:
            return validation_failed("receive_id is required")
        if (problem := self._check_new_message(request, body)) is not None:
            return problem
        if (earlier := self._by_uuid(body.get("uuid"))) is not None:
            return ok(self.render(earlier))
        chat_id = receive_id if receive_id_type == "chat_id" else self.p2p_chat_id(receive_id)
        if (absent := self._bot_absent(chat_id)) is not None:
            return absent
        message = self._new_bot_message(chat_id, body, receive_id_type=receive_id_type, receive_id=receive_id)
        return ok(self.render(message))

    def _reply(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        parent = self.messages.get(params["message_id"])
        if parent is None:
            return invalid_param(f"invalid message_id {params['message_id']}{UNKNOWN_MESSAGE_HINT}")
        if parent.recalled:
            return error(400, MESSAGE_RECALLED, "The message was recalled.")
        if (absent := self._bot_absent(parent.chat_id)) is not None:
            return absent
        body = request.body if isinstance(request.body, dict) else {}
        if (problem := self._check_new_message(request, body)) is not None:
            return problem
        if (earlier := self._by_uuid(body.get("uuid"))) is not None:
            return ok(self.render(earlier))
        in_thread = bool(body.get("reply_in_thread"))
        thread_id = parent.thread_id
        if in_thread and not thread_id:
            # Replying in a thread turns the parent into the root of a new topic (`omt_…`).
            thread_id = parent.thread_id = new_id("omt_")
        message = self._new_bot_message(
            parent.chat_id,
            body,
            parent_id=parent.message_id,
            root_id=parent.root_id or parent.message_id,
            thread_id=thread_id,
            reply_in_thread=in_thread,
        )
        return ok(self.render(message))

    def _bot_absent(self, chat_id: str) -> ApiAnswer | None:
        if chat_id in self.bot_left:
            return error(400, BOT_NOT_IN_CHAT, "Bot is not in the chat.")
        return None

    def _check_new_message(self, request: ApiRequest, body: dict[str, Any]) -> ApiAnswer | None:
        msg_type, content, uuid = body.get("msg_type"), body.get("content"), body.get("uuid")
        if msg_type not in MSG_TYPES:
            return validation_failed(f"msg_type must be one of {sorted(MSG_TYPES)}")
        if not isinstance(content, str):
            return validation_failed("content must be a JSON string")
        if uuid is not None and (not isinstance(uuid, str) or len(uuid) > UUID_MAX_CHARS):
            return validation_failed(f"uuid must be a string of at most {UUID_MAX_CHARS} characters")
        return self._check_content(request, str(msg_type), content)

    def _check_content(self, request: ApiRequest, msg_type: str, content: str) -> ApiAnswer | None:
        try:
            json.loads(content)
        except ValueError:
            return invalid_param("invalid message content: content is not a JSON string")
        parsed = json.loads(content)
        if msg_type == "image" and (
            not isinstance(parsed, dict) or parsed.get("image_key") not in self.images
        ):
            return invalid_param("invalid image_key (fake: not uploaded by this app)")
        if msg_type == "file" and (not isinstance(parsed, dict) or parsed.get("file_key") not in self.files):
            return invalid_param("invalid file_key (fake: not uploaded by this app)")
        limit = self.max_text_bytes if msg_type == "text" else self.max_card_bytes
        if msg_type in ("text", "post", "interactive") and len(request.raw_body) > limit:
            return error(
                400,
                CONTENT_TOO_LONG,
                f"message content is too long: request body {len(request.raw_body)} bytes > {limit}",
            )
        return None

    def _by_uuid(self, uuid: Any) -> Message | None:
        if not isinstance(uuid, str) or not uuid:
            return None
        seen = self._uuids.get(uuid)
        if seen is None or time.monotonic() - seen[1] > UUID_WINDOW_S:
            return None
        return self.messages[seen[0]]

    def _new_bot_message(self, chat_id: str, body: dict[str, Any], **fields: Any) -> Message:
        created = now_ms()
        message = Message(
            message_id=new_id("om_"),
            chat_id=chat_id,
            msg_type=str(body["msg_type"]),
            raw_content=str(body["content"]),
            sender_type="app",
            sender_id=self.app_id,
            uuid=body.get("uuid") or None,
            create_time=created,
            update_time=created,
            **fields,
        )
        self.messages[message.message_id] = message
        if message.uuid:
            self._uuids[message.uuid] = (message.message_id, time.monotonic())
        return message

    def _patch(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        message = self.messages.get(params["message_id"])
        if message is None:
            return invalid_param(f"invalid message_id {params['message_id']}{UNKNOWN_MESSAGE_HINT}")
        if message.recalled:
            return error(400, MESSAGE_RECALLED, "The message was recalled.")
        if message.sender_type != "app" or message.msg_type != "interactive":
            return invalid_param("only card messages sent by this bot can be patched")
        body = request.body if isinstance(request.body, dict) else {}
        content = body.get("content")
        if not isinstance(content, str):
            return validation_failed("content must be a JSON string")
        if (problem := self._check_content(request, "interactive", content)) is not None:
            return problem
        message.raw_content = content
        message.patches.append(json.loads(content))
        message.update_time = now_ms()
        return ok({})

    def _get_message(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        message = self.messages.get(params["message_id"])
        if message is None:
            return invalid_param(f"invalid message_id {params['message_id']}{UNKNOWN_MESSAGE_HINT}")
        return ok({"items": [self.render(message)]})

    def _recall(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        message = self.messages.get(params["message_id"])
        if message is None or message.sender_type != "app":
            return invalid_param(
                f"invalid message_id {params['message_id']}: the bot can recall only its own"
            )
        message.recalled = True
        return ok({})

    def render(self, message: Message) -> dict[str, Any]:
        """A message as Feishu's API returns it (the `data` of create/reply, an item of get)."""
        is_app = message.sender_type == "app"
        sender = {
            "id": message.sender_id,
            "id_type": "app_id" if is_app else "open_id",
            "sender_type": message.sender_type,
            "tenant_key": TENANT_KEY,
        }
        return {
            "message_id": message.message_id,
            "root_id": message.root_id,
            "parent_id": message.parent_id,
            "thread_id": message.thread_id,
            "msg_type": message.msg_type,
            "create_time": message.create_time,
            "update_time": message.update_time,
            "deleted": message.recalled,
            "updated": bool(message.patches),
            "chat_id": message.chat_id,
            "sender": sender,
            "body": {"content": message.raw_content},
            "mentions": [],
            "upper_message_id": message.parent_id,
        }

    def p2p_chat_id(self, user_id: str) -> str:
        return self.p2p_chats.setdefault(user_id, f"oc_p2p_{user_id}")

    # --- reactions -----------------------------------------------------------------------------

    def _add_reaction(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        if params["message_id"] not in self.messages:
            return invalid_param(f"invalid message_id {params['message_id']}{UNKNOWN_MESSAGE_HINT}")
        body = request.body if isinstance(request.body, dict) else {}
        reaction_type = body.get("reaction_type")
        emoji = reaction_type.get("emoji_type") if isinstance(reaction_type, dict) else None
        if not isinstance(emoji, str) or not emoji:
            return validation_failed("reaction_type.emoji_type is required")
        reaction = Reaction(
            reaction_id=new_id("rc_"),
            message_id=params["message_id"],
            emoji_type=emoji,
            operator_id=self.app_id,
            action_time=now_ms(),
        )
        self.reactions[reaction.reaction_id] = reaction
        return ok(self._render_reaction(reaction))

    def _delete_reaction(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        reaction = self.reactions.get(params["reaction_id"])
        if reaction is None or reaction.deleted or reaction.message_id != params["message_id"]:
            return invalid_param(f"invalid reaction_id {params['reaction_id']}")
        reaction.deleted = True
        return ok(self._render_reaction(reaction))

    @staticmethod
    def _render_reaction(reaction: Reaction) -> dict[str, Any]:
        return {
            "reaction_id": reaction.reaction_id,
            "operator": {"operator_id": reaction.operator_id, "operator_type": reaction.operator_type},
            "action_time": reaction.action_time,
            "reaction_type": {"emoji_type": reaction.emoji_type},
        }

    # --- lookups, downloads, uploads -----------------------------------------------------------

    def _resource(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        if request.query.get("type") not in ("image", "file"):
            return validation_failed("type must be image or file")
        resource = self.resources.get((params["message_id"], params["key"]))
        if resource is None:
            return invalid_param(
                f"invalid file_key {params['key']} for message {params['message_id']}"
                " (fake: register it with FakeFeishu.add_resource)"
            )
        headers = {"Content-Type": resource.content_type}
        if resource.file_name:  # the SDK reads the name from Content-Disposition (core/utils/files.py)
            headers["Content-Disposition"] = f'attachment; filename="{resource.file_name}"'
        return ApiAnswer(200, resource.data, headers)

    def _user(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        id_type = request.query.get("user_id_type", "open_id")
        wanted = params["user_id"]
        user = next((u for u in self.users.values() if getattr(u, id_type, None) == wanted), None)
        if user is None:
            return error(400, NO_USER_AUTHORITY, "no user authority error (fake: register it with add_user)")
        data = {
            "open_id": user.open_id,
            "union_id": user.union_id,
            "user_id": user.user_id,
            "name": user.name,
            "en_name": user.en_name,
            "avatar": {"avatar_72": "", "avatar_240": "", "avatar_640": "", "avatar_origin": ""},
        }
        return ok({"user": data})

    def _chat(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        chat = self.chats.get(params["chat_id"])
        if chat is None:
            return invalid_param(f"invalid chat_id {params['chat_id']} (fake: register it with add_chat)")
        data = {
            "name": chat.name,
            "description": chat.description,
            "avatar": "",
            "owner_id": chat.owner_id,
            "owner_id_type": "open_id",
            "chat_mode": chat.chat_mode,
            "chat_type": chat.chat_type,
            "external": False,
            "tenant_key": TENANT_KEY,
            "user_count": "1",
            "bot_count": "1",
            "chat_status": "normal",
        }
        return ok(data)

    def _upload_file(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        form = request.body if isinstance(request.body, dict) else {}
        file_type, file_name = form.get("file_type"), form.get("file_name")
        if file_type not in FILE_TYPES:
            return validation_failed(f"file_type must be one of {sorted(FILE_TYPES)}")
        if not file_name or "file" not in request.files:
            return validation_failed("file_name and file are required")
        size = len(request.files["file"][1])
        if not 0 < size <= MAX_FILE_BYTES:
            return validation_failed(f"file size must be 1 byte to {MAX_FILE_BYTES} bytes, got {size}")
        duration = form.get("duration")
        uploaded = UploadedFile(
            file_key=new_id("file_v3_"),
            file_type=str(file_type),
            file_name=str(file_name),
            data=request.files["file"][1],
            duration=int(duration) if duration else None,
        )
        self.files[uploaded.file_key] = uploaded
        return ok({"file_key": uploaded.file_key})

    def _upload_image(self, request: ApiRequest, params: dict[str, str]) -> ApiAnswer:
        form = request.body if isinstance(request.body, dict) else {}
        image_type = form.get("image_type")
        if image_type not in IMAGE_TYPES:
            return validation_failed(f"image_type must be one of {sorted(IMAGE_TYPES)}")
        if "image" not in request.files:
            return validation_failed("image is required")
        data = request.files["image"][1]
        if not 0 < len(data) <= MAX_IMAGE_BYTES:
            return validation_failed(f"image size must be 1 byte to {MAX_IMAGE_BYTES} bytes, got {len(data)}")
        uploaded = UploadedImage(image_key=new_id("img_v3_"), image_type=str(image_type), data=data)
        self.images[uploaded.image_key] = uploaded
        return ok({"image_key": uploaded.image_key})


UNKNOWN_MESSAGE_HINT = (
    " (fake: not sent by the bot and no inbound event recorded it; deliver the event with"
    " FakeFeishu.push_event / webhook_request, or call FakeFeishu.record_inbound)"
)
