"""The scripted model server, on its own and driving the real `codex app-server` (0.169.0).

The Codex tests talk raw newline-delimited JSON-RPC to the native binary (docs/codex-app-server.md
§1-§2) so they depend on nothing but the model server under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ally.model_server import (
    DEMO_LABEL,
    GOAL_CONTINUATION,
    NO_STEP_QUEUED,
    RECEIVED_KEPT,
    STEPS,
    ApplyPatch,
    AskUser,
    Burst,
    CallTool,
    DropStream,
    Fail,
    Hang,
    ResponseFailed,
    RunCommand,
    Say,
    ScriptedModelServer,
    Step,
    Stream,
    demo_reply,
    render,
    sse_event,
    write_codex_home,
)

ROOT = Path(__file__).resolve().parents[1]
CODEX_BIN = ROOT / "dev/codex/node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
TIMEOUT_S = 20.0

Message = dict[str, Any]
Answer = Callable[[Message], Message]


# --- a tiny raw JSON-RPC driver for `codex app-server` -----------------------------------------


@dataclass
class TurnResult:
    turn: Message  # the turn from `turn/completed`
    notifications: list[Message] = field(default_factory=list)
    server_requests: list[Message] = field(default_factory=list)

    def methods(self) -> list[str]:
        return [n["method"] for n in self.notifications]


class AppServer:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Message]] = {}
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()  # notifications and server requests
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg: Message = json.loads(line)
            if "id" in msg and "method" not in msg:
                self._pending.pop(msg["id"]).set_result(msg)
            else:
                self.incoming.put_nowait(msg)

    async def send(self, msg: Message) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, method: str, params: Message) -> Message:
        self._next_id += 1
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self.send({"id": self._next_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, TIMEOUT_S)
        assert "error" not in reply, f"{method} failed: {reply['error']}"
        result: Message = reply["result"]
        return result

    async def start_thread(self, cwd: Path) -> str:
        result = await self.request("thread/start", {"cwd": str(cwd)})
        thread_id: str = result["thread"]["id"]
        return thread_id

    async def run_turn(
        self, thread_id: str, text: str, answer: Answer | None = None, **overrides: Any
    ) -> TurnResult:
        """Start a turn and read until `turn/completed`, answering server requests with `answer`."""
        input_ = [{"type": "text", "text": text, "text_elements": []}]
        await self.request("turn/start", {"threadId": thread_id, "input": input_, **overrides})
        return await asyncio.wait_for(self._until_turn_completed(answer), TIMEOUT_S)

    async def _until_turn_completed(self, answer: Answer | None) -> TurnResult:
        seen: list[Message] = []
        asked: list[Message] = []
        while True:
            msg = await self.incoming.get()
            if "id" in msg:  # a server -> client request
                asked.append(msg)
                assert answer is not None, f"unexpected server request {msg['method']}"
                await self.send({"id": msg["id"], "result": answer(msg)})
                continue
            seen.append(msg)
            if msg["method"] == "turn/completed":
                return TurnResult(msg["params"]["turn"], seen, asked)

    async def agent_texts(self, thread_id: str) -> list[str]:
        """Agent messages of the newest turn as Codex stored them (thread/read is the truth)."""
        thread = (await self.request("thread/read", {"threadId": thread_id, "includeTurns": True}))["thread"]
        return [item["text"] for item in thread["turns"][-1]["items"] if item["type"] == "agentMessage"]


@contextlib.asynccontextmanager
async def app_server(
    model: ScriptedModelServer, tmp_path: Path, *, experimental: bool = False
) -> AsyncIterator[AppServer]:
    home = write_codex_home(tmp_path / "codex-home", model.base_url)
    with open(tmp_path / "codex.stderr", "wb") as stderr:  # noqa: ASYNC230 (a local log, opened once)
        proc = await asyncio.create_subprocess_exec(
            str(CODEX_BIN),
            "app-server",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env={**os.environ, "CODEX_HOME": str(home)},
            start_new_session=True,  # so the whole group can be killed (docs/codex-app-server.md §1)
            limit=16 * 1024 * 1024,  # thread/read lines can be large
        )
    server = AppServer(proc)
    try:
        capabilities = {"experimentalApi": experimental}
        client_info = {"name": "model_server_test", "title": "test", "version": "0"}
        await server.request("initialize", {"clientInfo": client_info, "capabilities": capabilities})
        await server.send({"method": "initialized"})
        yield server
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # a closed stdin is a clean shutdown in ~30 ms (docs/codex-app-server.md §1)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        server._reader.cancel()


@pytest.fixture
def model() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer() as server:
        yield server


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


async def wait_for_requests(model: ScriptedModelServer, count: int) -> None:
    """Until the model has received `count` requests (it runs in its own thread: poll)."""
    async with asyncio.timeout(TIMEOUT_S):
        while len(model.received()) < count:  # noqa: ASYNC110 (no asyncio.Event across the server's thread)
            await asyncio.sleep(0.02)


def accept(msg: Message) -> Message:
    return {"decision": "accept"}


# --- the server on its own ---------------------------------------------------------------------


def test_an_sse_frame_names_its_type_in_the_event_line_and_in_the_json() -> None:
    frame = sse_event("response.output_text.delta", item_id="msg_1", delta="hé")
    head, data, end = frame.decode().split("\n", 2)
    assert head == "event: response.output_text.delta"
    assert json.loads(data.removeprefix("data: ")) == {
        "type": "response.output_text.delta",
        "item_id": "msg_1",
        "delta": "hé",
    }
    assert end == "\n"


def test_steps_parse_from_control_json_including_a_nested_hang() -> None:
    steps = STEPS.validate_python(
        [
            {"kind": "say", "text": "hi"},
            {"kind": "hang", "seconds": 1, "then": {"kind": "stream", "chunks": ["a", "b"]}},
            {"kind": "fail", "status": 429},
        ]
    )
    assert steps == [Say(text="hi"), Hang(seconds=1, then=Stream(chunks=["a", "b"])), Fail(status=429)]
    with pytest.raises(ValidationError):
        STEPS.validate_python([{"kind": "sing", "text": "la"}])


def _events(step: Step) -> list[Message]:
    counter = iter(range(1, 1000))
    return [
        json.loads(p.decode().split("data: ", 1)[1]) for p in render(step, counter) if isinstance(p, bytes)
    ]


def test_a_stream_announces_the_message_before_its_deltas_and_completes_with_usage() -> None:
    events = _events(Stream(chunks=["Hel", "lo"]))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.output_item.added",  # Codex drops deltas without it (docs/codex-app-server.md §9)
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-2]["item"]["content"][0]["text"] == "Hello"
    assert events[-1]["response"]["usage"]["total_tokens"] > 0


def test_an_escalated_command_is_a_function_call_with_json_string_arguments() -> None:
    item = _events(RunCommand(cmd="touch x", justification="why"))[1]["item"]
    assert (item["type"], item["name"]) == ("function_call", "exec_command")
    assert json.loads(item["arguments"]) == {
        "cmd": "touch x",
        "sandbox_permissions": "require_escalated",
        "justification": "why",
    }
    plain = _events(RunCommand(cmd="ls", escalated=False))[1]["item"]
    assert json.loads(plain["arguments"]) == {"cmd": "ls"}


def test_a_burst_is_many_reasoning_items_then_a_message_or_a_command() -> None:
    items = [e["item"] for e in _events(Burst(count=300, then="done", run="ls")) if "item" in e]
    assert [i["type"] for i in items] == ["reasoning"] * 300 + ["message", "function_call"]
    assert items[299]["summary"] == [{"type": "summary_text", "text": "thinking 300"}]
    assert json.loads(items[-1]["arguments"]) == {"cmd": "ls"}


def test_a_dropped_stream_never_completes() -> None:
    assert [e["type"] for e in _events(DropStream(partial_text="par"))] == [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
    ]


def _post(url: str, body: Any) -> tuple[int, str]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_control_endpoints_queue_steps_record_requests_and_reset(model: ScriptedModelServer) -> None:
    root = model.base_url.removesuffix("/v1")
    assert _post(f"{root}/_control/steps", [{"kind": "say", "text": "queued over HTTP"}]) == (200, "{}")
    status, body = _post(f"{model.base_url}/responses", {"input": [], "stream": True})
    assert status == 200
    assert "queued over HTTP" in body
    assert body.rstrip().splitlines()[-2] == "event: response.completed"
    # The queue is empty now: a test that forgot a step fails loudly.
    assert _post(f"{model.base_url}/responses", {"input": ["second"]}) == (500, NO_STEP_QUEUED)
    with urllib.request.urlopen(f"{root}/_control/requests", timeout=TIMEOUT_S) as resp:
        assert json.load(resp) == [{"input": [], "stream": True}, {"input": ["second"]}]
    assert _post(f"{root}/_control/steps", [{"kind": "nope"}])[0] == 400
    assert _post(f"{root}/_control/reset", {}) == (200, "{}")
    assert model.received() == []


def test_a_long_running_demo_keeps_only_the_latest_requests() -> None:
    with ScriptedModelServer(demo=True) as server:
        for number in range(RECEIVED_KEPT + 3):
            status, _ = _post(f"{server.base_url}/responses", {"input": [_user(f"message {number}")]})
            assert status == 200
        kept = server.received()
    assert len(kept) == RECEIVED_KEPT
    assert kept[0]["input"] == [_user("message 3")]  # the oldest three went


def test_a_hang_blocks_neither_other_requests_nor_stop() -> None:
    server = ScriptedModelServer().start()
    server.push(Hang(seconds=60), Say(text="meanwhile"))
    hung = threading.Thread(target=_post, args=(f"{server.base_url}/responses", {}), daemon=True)
    hung.start()
    deadline = time.monotonic() + TIMEOUT_S
    while len(server.received()) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "meanwhile" in _post(f"{server.base_url}/responses", {})[1]
    started = time.monotonic()
    server.stop()
    hung.join(TIMEOUT_S)
    assert time.monotonic() - started < 2
    assert not hung.is_alive()


def _user(text: str) -> Message:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def test_the_demo_responder_picks_a_behaviour_from_the_newest_input() -> None:
    def reply(*items: Message) -> Step:
        return demo_reply({"input": [_user("<environment_context>…</environment_context>"), *items]})

    assert reply(_user("run ls -la")) == RunCommand(
        cmd="ls -la", justification=f"{DEMO_LABEL} you asked me to run it"
    )
    patch = reply(_user("write notes.txt hello world"))
    assert isinstance(patch, ApplyPatch)
    assert patch.patch == "*** Begin Patch\n*** Add File: notes.txt\n+hello world\n*** End Patch\n"
    question = reply(_user("ask me something"))
    assert isinstance(question, AskUser)
    assert len(question.questions[0]["options"]) == 2
    slow = reply(_user("slow please"))
    assert isinstance(slow, Stream)
    assert len(slow.chunks) > 3
    assert slow.delay_s > 0
    assert reply(_user("hello")) == Say(text=f"{DEMO_LABEL} You said: hello")
    output = {"type": "function_call_output", "call_id": "c", "output": "Wall time: 0 s\nOutput:\nhi\n"}
    summary = reply(_user("run echo hi"), output)
    assert isinstance(summary, Say)
    assert summary.text.startswith(DEMO_LABEL)
    assert summary.text.endswith("\nhi")


def test_the_demo_model_works_on_a_goal_three_turns_then_says_it_is_done() -> None:
    def reply(*items: Message) -> Step:
        return demo_reply({"input": [_user("<environment_context>…</environment_context>"), *items]})

    turn = _user(f"{GOAL_CONTINUATION}\nContinue working toward the active thread goal.")
    assert reply(turn) == Say(text=f"{DEMO_LABEL} Working on the goal: step 1 of 3 done.")
    assert reply(turn, turn) == Say(text=f"{DEMO_LABEL} Working on the goal: step 2 of 3 done.")
    assert reply(turn, turn, turn) == CallTool(name="update_goal", arguments={"status": "complete"})
    completed = '{"goal":{"objective":"x","status":"complete","tokensUsed":330},"remainingTokens":null}'
    output = {"type": "function_call_output", "call_id": "c", "output": completed}
    assert reply(turn, turn, turn, output) == Say(text=f"{DEMO_LABEL} The goal is done.")


def test_codex_home_points_at_the_server_and_keeps_extra_keys_top_level(tmp_path: Path) -> None:
    home = write_codex_home(tmp_path / "h", "http://127.0.0.1:1/v1", extra_toml='model_verbosity = "low"')
    config = tomllib.loads((home / "config.toml").read_text())
    assert config["model"] == "gpt-5.5"
    assert config["model_verbosity"] == "low"
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == "http://127.0.0.1:1/v1"
    assert provider["wire_api"] == "responses"
    assert provider["request_max_retries"] == provider["stream_max_retries"] == 0
    assert provider["supports_websockets"] is provider["requires_openai_auth"] is False


def test_the_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ally.model_server", "--port", "0", "--demo"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/v1")
        status, body = _post(f"{base_url}/responses", {"input": [_user("hello")]})
        assert status == 200
        assert f"{DEMO_LABEL} You said: hello" in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT_S) == 0
    finally:
        proc.kill()
        proc.wait()


# --- driving the real Codex binary -------------------------------------------------------------


@pytest.mark.codex
async def test_a_said_message_is_the_turns_agent_text(
    model: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    model.push(Say(text="Hello from the script"))
    async with app_server(model, tmp_path) as codex:
        thread = await codex.start_thread(workspace)
        result = await codex.run_turn(thread, "hi")
        assert result.turn["status"] == "completed"
        assert await codex.agent_texts(thread) == ["Hello from the script"]
    [request] = model.received()
    assert request["stream"] is True
    assert request["input"][-1] == _user("hi") | {"id": request["input"][-1]["id"]}


@pytest.mark.codex
async def test_streamed_chunks_arrive_as_deltas_and_join_into_one_message(
    model: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    model.push(Stream(chunks=["Hel", "lo ", "world"], delay_s=0.05))
    async with app_server(model, tmp_path) as codex:
        thread = await codex.start_thread(workspace)
        result = await codex.run_turn(thread, "hi")
        deltas = [
            n["params"]["delta"] for n in result.notifications if n["method"] == "item/agentMessage/delta"
        ]
        assert deltas == ["Hel", "lo ", "world"]
        assert await codex.agent_texts(thread) == ["Hello world"]


@pytest.mark.codex
async def test_an_escalated_command_waits_for_approval_then_runs(
    model: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    model.push(
        RunCommand(cmd="echo hi > made-by-codex.txt", justification="to prove it ran"), Say(text="Done.")
    )
    async with app_server(model, tmp_path) as codex:
        thread = await codex.start_thread(workspace)
        result = await codex.run_turn(thread, "make a file", answer=accept)
        [approval] = result.server_requests
        assert approval["method"] == "item/commandExecution/requestApproval"
        assert approval["params"]["reason"] == "to prove it ran"
        assert result.turn["status"] == "completed"
        assert await codex.agent_texts(thread) == ["Done."]
    assert (workspace / "made-by-codex.txt").read_text() == "hi\n"
    _first, second = model.received()
    [call] = [i for i in second["input"] if i["type"] == "function_call"]
    [output] = [i for i in second["input"] if i["type"] == "function_call_output"]
    assert output["call_id"] == call["call_id"] == approval["params"]["itemId"]


@pytest.mark.codex
async def test_a_patch_asks_for_file_change_approval_then_writes_the_file(
    model: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    model.push(
        ApplyPatch(patch="*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n"), Say(text="ok")
    )
    async with app_server(model, tmp_path) as codex:
        thread = await codex.start_thread(workspace)
        result = await codex.run_turn(thread, "write it", answer=accept)
        assert [r["method"] for r in result.server_requests] == ["item/fileChange/requestApproval"]
        assert result.turn["status"] == "completed"
    assert (workspace / "hello.txt").read_text() == "hello\n"
    assert model.received()[-1]["input"][-1]["type"] == "custom_tool_call_output"


@pytest.mark.codex
async def test_a_question_reaches_the_user_in_plan_mode_and_the_answer_reaches_the_model(
    model: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    options = [{"label": "Blue", "description": "calm"}, {"label": "Red", "description": "bold"}]
    model.push(
        AskUser(questions=[{"id": "color", "header": "Color", "question": "Which?", "options": options}])
    )
    model.push(Say(text="Blue it is."))
    # request_user_input is only offered in Plan mode, which needs experimentalApi
    # (docs/codex-app-server.md §6).
    plan = {
        "mode": "plan",
        "settings": {"model": "gpt-5.5", "reasoning_effort": None, "developer_instructions": None},
    }
    async with app_server(model, tmp_path, experimental=True) as codex:
        thread = await codex.start_thread(workspace)
        result = await codex.run_turn(
            thread,
            "pick",
            answer=lambda m: {"answers": {"color": {"answers": ["Blue"]}}},
            collaborationMode=plan,
        )
        [asked] = result.server_requests
        assert asked["method"] == "item/tool/requestUserInput"
        assert asked["params"]["questions"][0]["options"] == options
        assert result.turn["status"] == "completed"
    answer = model.received()[-1]["input"][-1]
    assert json.loads(answer["output"]) == {"answers": {"color": {"answers": ["Blue"]}}}


@pytest.mark.codex
@pytest.mark.parametrize(
    ("step", "error_info", "message_part"),
    [
        (Fail(status=500), "internalServerError", ""),  # Codex shows a generic text, not our body
        (Fail(status=400, body="bad request body"), "other", "bad request body"),
        (DropStream(partial_text="half"), "other", "stream disconnected before completion"),
        (ResponseFailed(code="context_length_exceeded"), "contextWindowExceeded", ""),
        (ResponseFailed(code="rate_limit_exceeded", message="slow down"), "rateLimitExceeded", "slow down"),
    ],
    ids=["http500", "http400", "drop", "context_window", "rate_limit"],
)
async def test_a_model_failure_fails_the_turn_with_an_error(
    model: ScriptedModelServer,
    tmp_path: Path,
    workspace: Path,
    step: Step,
    error_info: str,
    message_part: str,
) -> None:
    model.push(step)
    async with app_server(model, tmp_path) as codex:
        thread = await codex.start_thread(workspace)
        result = await codex.run_turn(thread, "hi")
    assert result.turn["status"] == "failed"
    assert result.turn["error"]["codexErrorInfo"] == error_info
    assert result.turn["error"]["message"]
    assert message_part in result.turn["error"]["message"]
    assert len(model.received()) == 1  # retries are off: one request, one failure


@pytest.mark.codex
async def test_a_forgotten_step_fails_the_turn(
    model: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    async with app_server(model, tmp_path) as codex:
        thread = await codex.start_thread(workspace)
        result = await codex.run_turn(thread, "hi")
    assert result.turn["status"] == "failed"
    assert len(model.received()) == 1


@pytest.mark.codex
async def test_a_hanging_model_keeps_the_turn_running_until_interrupted(
    model: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    model.push(Hang(seconds=60, then=Say(text="too late")))
    async with app_server(model, tmp_path) as codex:
        thread = await codex.start_thread(workspace)
        input_ = [{"type": "text", "text": "take your time", "text_elements": []}]
        turn = (await codex.request("turn/start", {"threadId": thread, "input": input_}))["turn"]
        await wait_for_requests(model, 1)
        assert (await codex.request("thread/read", {"threadId": thread}))["thread"]["status"][
            "type"
        ] == "active"
        await codex.request("turn/interrupt", {"threadId": thread, "turnId": turn["id"]})
        result = await asyncio.wait_for(codex._until_turn_completed(None), TIMEOUT_S)
        assert result.turn["status"] == "interrupted"
    started = time.monotonic()
    model.stop()
    assert time.monotonic() - started < 2


@pytest.mark.codex
async def test_a_steer_during_a_hang_resamples_the_same_turn_with_the_new_input(
    model: ScriptedModelServer, tmp_path: Path, workspace: Path
) -> None:
    model.push(Hang(seconds=60, then=Say(text="never sent")), Say(text="Steered."))
    async with app_server(model, tmp_path) as codex:
        thread = await codex.start_thread(workspace)
        input_ = [{"type": "text", "text": "start", "text_elements": []}]
        turn = (await codex.request("turn/start", {"threadId": thread, "input": input_}))["turn"]
        await wait_for_requests(model, 1)
        steer = [{"type": "text", "text": "actually, stop", "text_elements": []}]
        await codex.request("turn/steer", {"threadId": thread, "expectedTurnId": turn["id"], "input": steer})
        result = await asyncio.wait_for(codex._until_turn_completed(None), TIMEOUT_S)
        assert result.turn["id"] == turn["id"]
        assert result.turn["status"] == "completed"
        assert await codex.agent_texts(thread) == ["Steered."]
    assert model.received()[-1]["input"][-1]["content"] == [{"type": "input_text", "text": "actually, stop"}]


@pytest.mark.codex
async def test_demo_mode_runs_a_command_after_approval_and_summarises_it(
    tmp_path: Path, workspace: Path
) -> None:
    with ScriptedModelServer(demo=True) as model:
        async with app_server(model, tmp_path) as codex:
            thread = await codex.start_thread(workspace)
            result = await codex.run_turn(thread, "run echo hi", answer=accept)
            [approval] = result.server_requests
            assert approval["method"] == "item/commandExecution/requestApproval"
            assert "echo hi" in approval["params"]["command"]
            [text] = await codex.agent_texts(thread)
            assert text.startswith(DEMO_LABEL)
            assert text.endswith("\nhi")
