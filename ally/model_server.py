"""A scripted OpenAI Responses-API server, so tests and `--demo` drive the real Codex binary offline.

Codex talks to a custom model provider with `POST {base_url}/responses` and reads Server-Sent
Events back (docs/codex-app-server.md §9). Each request pops the next queued `Step`, FIFO; a test
queues exactly the model behaviour it needs and asserts on what Codex sent (`received()`).

    with ScriptedModelServer() as model:
        home = write_codex_home(tmp / "codex-home", model.base_url)
        model.push(RunCommand(cmd="touch done"), Say(text="Done."))
        ...  # run `codex app-server` with CODEX_HOME=home

As a separate process: `python -m ally.model_server --port 8765 [--demo]` prints the base URL and
serves until SIGTERM/SIGINT; `POST /_control/steps`, `GET /_control/requests` and
`POST /_control/reset` do what push/received/reset do.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

NO_STEP_QUEUED = "scripted model server: no step queued"
# How Codex opens the prompt of a turn it starts by itself for a goal (docs/codex-app-server.md §15).
GOAL_CONTINUATION = '<codex_internal_context source="goal">'
DEMO_GOAL_TURNS = 3  # the demo model works on a goal this many turns, then says it is done
DEMO_LABEL = "(demo model)"
RECEIVED_KEPT = 1000


class Say(BaseModel):
    """One assistant message, delivered whole."""

    kind: Literal["say"] = "say"
    text: str


class Stream(BaseModel):
    """One assistant message in chunks, `delay_s` apart (the user sees text grow)."""

    kind: Literal["stream"] = "stream"
    chunks: list[str]
    delay_s: float = 0.05


class RunCommand(BaseModel):
    """An `exec_command` call; escalated asks outside the sandbox, so Codex asks for approval."""

    kind: Literal["run_command"] = "run_command"
    cmd: str
    justification: str = "needs to run a command"
    escalated: bool = True


class ApplyPatch(BaseModel):
    """An `apply_patch` call (Codex's patch grammar); Codex only offers it to known slugs like gpt-5.5."""

    kind: Literal["apply_patch"] = "apply_patch"
    patch: str


class AskUser(BaseModel):
    """A `request_user_input` call; it reaches the user only in Plan mode (docs/codex-app-server.md §6)."""

    kind: Literal["ask_user"] = "ask_user"
    questions: list[dict[str, Any]]


class SearchTools(BaseModel):
    """A `tool_search` call, run by Codex itself ("client" execution): how a model finds the deferred
    tools of MCP servers before it may call one (docs/codex-app-server.md §9, §12)."""

    kind: Literal["search_tools"] = "search_tools"
    query: str
    limit: int | None = None


class CallTool(BaseModel):
    """A plain function call; `namespace` names an MCP server's tools (`mcp__<server>`), as the
    `tool_search` output listed them (docs/codex-app-server.md §12). Codex's own tools too: e.g.
    `update_goal` with `{"status": "complete"}` says a goal is met (docs/codex-app-server.md §15)."""

    kind: Literal["call_tool"] = "call_tool"
    name: str
    arguments: dict[str, Any] = {}
    namespace: str | None = None


class Burst(BaseModel):
    """Many small output items in one response, as fast as they can be written: `count` reasoning
    items (each a short summary) before a closing message. Codex reports each item to its client
    (item/started and item/completed), so one step makes about 2 x `count` notifications."""

    kind: Literal["burst"] = "burst"
    count: int
    text: str = "thinking"
    then: str | None = None  # the closing message's text; None: no message
    run: str | None = None  # then a (sandboxed) command, so the turn goes on with the next step


class Fail(BaseModel):
    """A plain HTTP error instead of a stream."""

    kind: Literal["fail"] = "fail"
    status: int = 500
    body: str = "scripted failure"
    headers: dict[str, str] = {}  # e.g. the rate-limit headers a usage limit comes with


class UsageLimit(BaseModel):
    """The account's usage limit, as ChatGPT's backend reports it: HTTP 429 with an error of type
    `usage_limit_reached` and the rate-limit headers, whose primary window is used up and resets
    `resets_in_s` after the request (docs/codex-app-server.md §15)."""

    kind: Literal["usage_limit"] = "usage_limit"
    resets_in_s: float = 90.0

    def as_failure(self, now: float) -> Fail:
        resets_at = int(now + self.resets_in_s + 0.999)  # whole seconds, never before the promise
        headers = {
            "x-codex-primary-used-percent": "100",
            "x-codex-primary-window-minutes": "300",
            "x-codex-primary-reset-at": str(resets_at),
        }
        body = {"error": {"type": "usage_limit_reached", "plan_type": "pro", "resets_at": resets_at}}
        return Fail(status=429, body=json.dumps(body), headers=headers)


class DropStream(BaseModel):
    """Close the stream before `response.completed`, optionally after some streamed text."""

    kind: Literal["drop"] = "drop"
    partial_text: str | None = None


class ResponseFailed(BaseModel):
    """A `response.failed` event carrying an OpenAI error code."""

    kind: Literal["response_failed"] = "response_failed"
    code: str = "rate_limit_exceeded"
    message: str = "scripted"


class Hang(BaseModel):
    """Keep the request open for `seconds` (the turn stays in progress), then answer with `then`.

    The stream opens with `response.created` first, except when `then` is a `Fail`: an HTTP error
    status cannot follow a 200, so that one waits before sending anything. With no `then` the
    response completes empty.
    """

    kind: Literal["hang"] = "hang"
    seconds: float
    then: Step | None = None


Step = Annotated[
    Say
    | Stream
    | RunCommand
    | ApplyPatch
    | AskUser
    | SearchTools
    | CallTool
    | Burst
    | Fail
    | DropStream
    | ResponseFailed
    | UsageLimit
    | Hang,
    Field(discriminator="kind"),
]
Hang.model_rebuild()
STEPS: TypeAdapter[list[Step]] = TypeAdapter(list[Step])

# --- SSE encoding ------------------------------------------------------------------------------


def sse_event(event_type: str, **fields: Any) -> bytes:
    """One SSE frame. Codex dispatches on the JSON `type`, not on the `event:` line
    (codex-api/src/sse/responses.rs), so the type goes in both, as OpenAI sends it."""
    data = json.dumps({"type": event_type, **fields}, separators=(",", ":"))
    return f"event: {event_type}\ndata: {data}\n\n".encode()


def _message(item_id: str, text: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {"type": "message", "role": "assistant", "id": item_id, "status": "completed", "content": content}


def _function_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    # `arguments` must be a JSON *string*: with an object Codex fails to parse the item and
    # silently drops it (observed: no approval request, the turn just ends).
    call = {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name}
    return call | {"arguments": json.dumps(arguments)}


def _done(item: dict[str, Any]) -> bytes:
    return sse_event("response.output_item.done", output_index=0, item=item)


def _added(item: dict[str, Any]) -> bytes:
    return sse_event("response.output_item.added", output_index=0, item=item)


def _delta(item_id: str, text: str) -> bytes:
    return sse_event(
        "response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=text
    )


def _failed(response_id: str, code: str, message: str) -> bytes:
    error = {"code": code, "message": message}
    return sse_event("response.failed", response={"id": response_id, "status": "failed", "error": error})


_USAGE = {  # optional for Codex, but it feeds thread/tokenUsage/updated like a real model would
    "input_tokens": 100,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 10,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 110,
}


def render(step: Step, ids: Iterator[int]) -> Iterator[bytes | float]:
    """The body of a 200 answer to one step: SSE frames, and floats meaning "pause this long"."""
    response_id = f"resp_{next(ids)}"
    yield sse_event("response.created", response={"id": response_id, "status": "in_progress"})
    yield from _output(step, response_id, ids)


def _output(step: Step, response_id: str, ids: Iterator[int]) -> Iterator[bytes | float]:
    n = next(ids)
    match step:
        case Say(text=text):
            # `output_item.done` alone is enough: Codex emits item/started + item/completed for it.
            yield _done(_message(f"msg_{n}", text))
        case Stream(chunks=chunks, delay_s=delay):
            # Deltas without a prior `output_item.added` are dropped by Codex (docs/codex-app-server.md §9).
            yield _added(_message(f"msg_{n}", ""))
            for i, chunk in enumerate(chunks):
                if i:
                    yield delay
                yield _delta(f"msg_{n}", chunk)
            yield _done(_message(f"msg_{n}", "".join(chunks)))
        case RunCommand(cmd=cmd, justification=why, escalated=escalated):
            args: dict[str, Any] = {"cmd": cmd}
            if escalated:  # "require_escalated" is what makes Codex ask (approval_policy on-request)
                args |= {"sandbox_permissions": "require_escalated", "justification": why}
            yield _done(_function_call(f"call_{n}", "exec_command", args))
        case ApplyPatch(patch=patch):
            # gpt-5.5 gets apply_patch as a freeform custom tool: the patch is the raw `input`.
            call = {
                "type": "custom_tool_call",
                "id": f"ctc_{n}",
                "call_id": f"call_{n}",
                "name": "apply_patch",
            }
            yield _done(call | {"input": patch})
        case AskUser(questions=questions):
            yield _done(_function_call(f"call_{n}", "request_user_input", {"questions": questions}))
        case SearchTools(query=query, limit=limit):
            search: dict[str, Any] = {"query": query} | ({"limit": limit} if limit is not None else {})
            # Unlike a function call's, these arguments are an object, not a JSON string.
            yield _done(
                {
                    "type": "tool_search_call",
                    "id": f"tsc_{n}",
                    "call_id": f"call_{n}",
                    "execution": "client",
                    "status": "completed",
                    "arguments": search,
                }
            )
        case CallTool(name=name, arguments=arguments, namespace=namespace):
            call = _function_call(f"call_{n}", name, arguments)
            yield _done(call | ({"namespace": namespace} if namespace else {}))
        case Burst(count=count, text=text, then=then, run=run):
            for i in range(count):
                summary = [{"type": "summary_text", "text": f"{text} {i + 1}"}]
                yield _done({"type": "reasoning", "id": f"rs_{n}_{i}", "summary": summary, "content": None})
            if then is not None:
                yield _done(_message(f"msg_{n}", then))
            if run is not None:
                yield _done(_function_call(f"call_{n}", "exec_command", {"cmd": run}))
        case DropStream(partial_text=partial):
            if partial:
                yield _added(_message(f"msg_{n}", ""))
                yield _delta(f"msg_{n}", partial)
            return  # the handler closes the connection: "stream disconnected before completion"
        case ResponseFailed(code=code, message=message):
            yield _failed(response_id, code, message)
            return
        case Fail(body=body):
            # Reached only when nested in Hangs, after the 200 went out: report it in-stream instead.
            yield _failed(response_id, "server_error", body)
            return
        case Hang(seconds=seconds, then=then):
            yield seconds
            if then is not None:
                yield from _output(then, response_id, ids)
                return
    # Codex 0.169 ends the sampling on this event, without waiting for the connection to close (observed).
    yield sse_event(
        "response.completed", response={"id": response_id, "status": "completed", "usage": _USAGE}
    )


# --- demo responder ----------------------------------------------------------------------------


def demo_reply(request: dict[str, Any]) -> Step:
    """What `--demo` answers with an empty queue: enough behaviour to click through every card."""
    items: list[dict[str, Any]] = request.get("input") or []
    newest = items[-1] if items else {}
    if newest.get("type") in ("function_call_output", "custom_tool_call_output"):
        output = _tool_output_text(newest.get("output"))
        if '"status":"complete"' in output and output.startswith('{"goal"'):
            return Say(text=f"{DEMO_LABEL} The goal is done.")
        if answers := _user_answers(output):
            return Say(text=f"{DEMO_LABEL} You answered: {answers}")
        lines = output.strip().splitlines()[:5]
        shown = "\n".join(lines) if lines else "(no output)"
        return Say(text=f"{DEMO_LABEL} The tool finished. Its output begins:\n{shown}")
    text = _newest_user_text(items).strip()
    if text.startswith(GOAL_CONTINUATION):
        done = sum(1 for item in items if GOAL_CONTINUATION in _user_text(item))
        if done >= DEMO_GOAL_TURNS:
            return CallTool(name="update_goal", arguments={"status": "complete"})
        return Say(text=f"{DEMO_LABEL} Working on the goal: step {done} of {DEMO_GOAL_TURNS} done.")
    word, _, rest = text.partition(" ")
    match word.lower():
        case "run" if rest.strip():
            return RunCommand(cmd=rest.strip(), justification=f"{DEMO_LABEL} you asked me to run it")
        case "write" if rest.strip():
            path, _, content = rest.strip().partition(" ")
            added = "".join(f"+{line}\n" for line in content.splitlines() or [""])
            return ApplyPatch(patch=f"*** Begin Patch\n*** Add File: {path}\n{added}*** End Patch\n")
        case w if w.startswith("ask"):
            options = [
                {"label": "Yes", "description": "Go ahead."},
                {"label": "No", "description": "Stop here."},
            ]
            question = {"id": "go_ahead", "header": "Proceed", "question": f"{DEMO_LABEL} Shall I go ahead?"}
            return AskUser(questions=[question | {"options": options}])
        case w if w.startswith("slow"):
            answer = f"{DEMO_LABEL} This answer arrives slowly, a few words at a time, like a real model."
            return Stream(chunks=[f"{w} " for w in answer.split(" ")], delay_s=0.3)
    return Say(text=f"{DEMO_LABEL} You said: {text}")


def _tool_output_text(output: Any) -> str:
    if isinstance(output, str):
        # exec_command output is "Chunk ID…\nWall time…\nProcess exited…\nOutput:\n<the output>".
        return output.split("Output:\n", 1)[-1]
    if isinstance(output, list):  # content items
        return "\n".join(str(part.get("text", "")) for part in output if isinstance(part, dict))
    return json.dumps(output)


def _user_answers(output: str) -> str:
    """The chosen labels when `output` is a request_user_input result: {"answers":{id:{"answers":[…]}}}."""
    try:
        answers = json.loads(output)["answers"]
        return "; ".join(", ".join(a["answers"]) for a in answers.values())
    except (ValueError, TypeError, KeyError, AttributeError):
        return ""


def _newest_user_text(items: list[dict[str, Any]]) -> str:
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return _user_text(item)
    return ""


def _user_text(item: dict[str, Any]) -> str:
    if item.get("type") != "message" or item.get("role") != "user":
        return ""
    return "".join(str(p.get("text", "")) for p in item.get("content", []) if p.get("type") == "input_text")


# --- HTTP server -------------------------------------------------------------------------------


class ScriptedModelServer:
    """The model Codex talks to; a stdlib HTTP server in a daemon thread, usable from sync and async code."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, demo: bool = False) -> None:
        self.demo = demo
        self._address = (host, port)
        self._lock = threading.Lock()
        self._steps: deque[Step] = deque()
        # The latest requests, for tests to read; bounded, because `ally up --demo` runs for days and
        # every request carries the whole thread.
        self._received: deque[dict[str, Any]] = deque(maxlen=RECEIVED_KEPT)
        self._ids = itertools.count(1)
        self._stopping = threading.Event()  # ends Hang/Stream pauses, so stop() never waits on them
        self._httpd: _HTTPServer | None = None

    def start(self) -> ScriptedModelServer:
        self._stopping.clear()
        self._httpd = _HTTPServer(self._address, self)
        threading.Thread(target=self._httpd.serve_forever, name="scripted-model-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ScriptedModelServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("ScriptedModelServer is not started: call start() or use `with`")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def push(self, *steps: Step) -> None:
        with self._lock:
            self._steps.extend(steps)

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received)

    def reset(self) -> None:
        with self._lock:
            self._steps.clear()
            self._received.clear()

    def _next_step(self, request: dict[str, Any]) -> Step | None:
        with self._lock:
            self._received.append(request)
            if self._steps:
                return self._steps.popleft()
        return demo_reply(request) if self.demo else None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never join a handler still inside a Hang

    def __init__(self, address: tuple[str, int], model: ScriptedModelServer) -> None:
        self.model = model
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: the body ends when we close the connection, so a stream needs no chunked encoding,
    # and DropStream is simply an early close.
    protocol_version = "HTTP/1.0"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read requests through received(), not the access log

    def do_GET(self) -> None:
        if self.path == "/_control/requests":
            self._reply(200, json.dumps(self.server.model.received()), "application/json")
        else:
            self._reply(404, f"no such path: {self.path}")

    def do_POST(self) -> None:
        model = self.server.model
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"null")
        except ValueError as error:
            self._reply(400, f"request body is not JSON: {error}")
            return
        if self.path == "/_control/steps":
            try:
                model.push(*STEPS.validate_python(body))
            except ValidationError as error:
                self._reply(400, str(error))
                return
            self._reply(200, "{}", "application/json")
        elif self.path == "/_control/reset":
            model.reset()
            self._reply(200, "{}", "application/json")
        elif self.path.rstrip("/").endswith("/responses") and isinstance(body, dict):
            self._respond(model._next_step(body))
        else:
            self._reply(404, f"no such path: {self.path}")

    def _respond(self, step: Step | None) -> None:
        stopping = self.server.model._stopping
        if step is None:
            self._reply(500, NO_STEP_QUEUED)
            return
        if isinstance(step, Hang) and isinstance(step.then, Fail):
            if stopping.wait(step.seconds):
                return
            step = step.then
        if isinstance(step, UsageLimit):
            step = step.as_failure(time.time())
        if isinstance(step, Fail):
            self._reply(step.status, step.body, headers=step.headers)
            return
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("cache-control", "no-cache")
            self.end_headers()
            for part in render(step, self.server.model._ids):
                if isinstance(part, float):
                    if stopping.wait(part):
                        return
                else:
                    self.wfile.write(part)
                    self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # Codex dropped the request (steer, interrupt, or it was killed)

    def _reply(
        self,
        status: int,
        body: str,
        content_type: str = "text/plain",
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def write_codex_home(
    path: Path,
    base_url: str,
    *,
    model: str = "gpt-5.5",
    approval_policy: str = "on-request",
    sandbox_mode: str = "read-only",
    extra_toml: str = "",
) -> Path:
    """A CODEX_HOME whose only model is `base_url`. `extra_toml` may hold top-level keys and tables."""
    path.mkdir(parents=True, exist_ok=True)
    q = json.dumps  # a JSON string is a valid TOML basic string
    (path / "config.toml").write_text(
        f"model = {q(model)}  # a known slug decides the tool set: gpt-5.5 gets apply_patch\n"
        f'model_provider = "scripted"\n'
        f"approval_policy = {q(approval_policy)}\n"
        f"sandbox_mode = {q(sandbox_mode)}\n"
        f"{extra_toml}\n\n"
        "[model_providers.scripted]\n"
        'name = "scripted"\n'
        f"base_url = {q(base_url)}\n"
        'wire_api = "responses"\n'
        "request_max_retries = 0  # a scripted failure fails the turn at once, deterministically\n"
        "stream_max_retries = 0\n"
        "supports_websockets = false\n"
        "requires_openai_auth = false\n"
    )
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ally.model_server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--demo", action="store_true", help="answer like a toy model when no step is queued")
    args = parser.parse_args(argv)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with ScriptedModelServer(args.host, args.port, demo=args.demo) as server:
        print(server.base_url, flush=True)
        while not done.wait(0.5):
            pass


if __name__ == "__main__":
    main()
