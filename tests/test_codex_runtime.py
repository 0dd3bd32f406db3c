"""The Codex runtime host driving the real `codex app-server` against the scripted model server.

No fake Codex: every test spawns the pinned native binary through `CodexRuntime`, with its own
CODEX_HOME and workspace, and scripts only the model's side (ally/model_server.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ally.codex.binary import find_codex_binary
from ally.codex.runtime import (
    CodexRuntime,
    InputPart,
    ItemCompleted,
    RequestPending,
    RequestResolved,
    RuntimeRestarted,
    ThreadSettings,
    TurnEnded,
    TurnEvent,
    TurnNotActive,
    UnknownRequest,
)
from ally.model_server import (
    ApplyPatch,
    AskUser,
    Fail,
    Hang,
    RunCommand,
    Say,
    ScriptedModelServer,
    Stream,
    sse_event,
    write_codex_home,
)

pytestmark = [pytest.mark.codex, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[1]
TURN_TIMEOUT_S = 30.0


@dataclass
class Host:
    runtime: CodexRuntime
    model: ScriptedModelServer
    home: Path
    workspace: Path

    def settings(self) -> ThreadSettings:
        # read-only: an escalated command and any file change need approval (docs/codex-app-server.md §9).
        return ThreadSettings(cwd=str(self.workspace), sandbox="read-only", approval_policy="on-request")

    async def new_thread(self) -> str:
        return await self.runtime.ensure_thread(None, self.settings())


@pytest.fixture
def model() -> Iterator[ScriptedModelServer]:
    server = ScriptedModelServer().start()
    yield server
    server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def host(tmp_path: Path, model: ScriptedModelServer) -> AsyncIterator[Host]:
    home = write_codex_home(tmp_path / "codex-home", model.base_url)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    runtime = codex_runtime(home, tmp_path, restart_backoff=(0.1,))
    await runtime.start()
    try:
        yield Host(runtime, model, home, workspace)
    finally:
        await runtime.stop()


def codex_runtime(home: Path, tmp_path: Path, **options: Any) -> CodexRuntime:
    # Codex runs commands with `bash -lc`: a HOME of our own keeps the developer's dotfiles out
    # (a login shell that starts `pyenv rehash` and is killed mid-way leaves a stale pyenv lock).
    return CodexRuntime(find_codex_binary(), home, env={"HOME": str(tmp_path)}, **options)


def text(value: str) -> list[InputPart]:
    return [InputPart(type="text", text=value)]


async def follow(
    host: Host,
    thread_id: str,
    turn_id: str,
    answer: Callable[[RequestPending], dict[str, Any]] | None = None,
) -> list[TurnEvent]:
    """Every event of the turn up to TurnEnded, answering each pending request with `answer`."""
    events: list[TurnEvent] = []
    async with asyncio.timeout(TURN_TIMEOUT_S):
        async for event in host.runtime.watch_turn(thread_id, turn_id):
            events.append(event)
            if isinstance(event, RequestPending) and answer is not None:
                await host.runtime.answer_request(event.key, answer(event))
    return events


async def first_request(host: Host, thread_id: str, turn_id: str) -> RequestPending:
    async with asyncio.timeout(TURN_TIMEOUT_S):
        async for event in host.runtime.watch_turn(thread_id, turn_id):
            if isinstance(event, RequestPending):
                return event
    raise AssertionError("the turn ended without asking anything")


async def eventually(condition: Callable[[], bool], timeout_s: float = TURN_TIMEOUT_S) -> None:
    """Poll state that no event of ours announces (the model server's thread, /proc)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def model_requests(model: ScriptedModelServer, count: int) -> list[dict[str, Any]]:
    """Wait until Codex has sent the model `count` requests."""
    await eventually(lambda: len(model.received()) >= count)
    return model.received()


def tool_outputs(request: dict[str, Any]) -> list[str]:
    """The tool results Codex sent back to the model in one request."""
    outputs = []
    for item in request.get("input", []):
        if item.get("type") in ("function_call_output", "custom_tool_call_output"):
            output = item.get("output")
            outputs.append(output if isinstance(output, str) else json.dumps(output))
    return outputs


def user_texts(request: dict[str, Any]) -> list[str]:
    return [
        part.get("text", "")
        for item in request.get("input", [])
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item.get("content", [])
    ]


def final_event(events: list[TurnEvent]) -> TurnEnded:
    assert events and isinstance(events[-1], TurnEnded), events
    return events[-1]


# --- turns -------------------------------------------------------------------------------------


async def test_a_plain_turn_reads_back_its_final_text(host: Host) -> None:
    host.model.push(Say(text="Hello from the model."))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("say hello"))

    events = await follow(host, thread_id, turn_id)

    assert final_event(events) == TurnEnded(status="completed")
    assert any(isinstance(e, ItemCompleted) and e.item_type == "agentMessage" for e in events)
    [turn] = (await host.runtime.read_thread(thread_id)).turns
    assert (turn.id, turn.status, turn.user_text, turn.final_text) == (
        turn_id,
        "completed",
        "say hello",
        "Hello from the model.",
    )


async def test_a_turn_that_ended_before_anyone_watched_is_replayed_in_full(host: Host) -> None:
    host.model.push(Say(text="quick"))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("be quick"))
    async with asyncio.timeout(TURN_TIMEOUT_S):
        while True:
            if (await host.runtime.read_thread(thread_id)).turns[-1].status != "inProgress":
                break
            await asyncio.sleep(0.02)

    events = await follow(host, thread_id, turn_id)

    assert [type(e).__name__ for e in events] == ["ItemCompleted", "ItemCompleted", "TurnEnded"]
    assert final_event(events).status == "completed"
    assert host.runtime.is_turn_live(thread_id, turn_id)


async def test_a_busy_thread_gets_no_second_turn(host: Host) -> None:
    host.model.push(Hang(seconds=1.0, then=Say(text="never used")), Say(text="answer to both"))
    thread_id = await host.new_thread()
    first = await host.runtime.start_turn(thread_id, text("first"))
    await model_requests(host.model, 1)

    # docs/codex-app-server.md §4: turn/start on a busy thread appends the input to the active turn.
    second = await host.runtime.start_turn(thread_id, text("second"))

    assert second == first
    assert final_event(await follow(host, thread_id, first)).status == "completed"
    assert [t.final_text for t in (await host.runtime.read_thread(thread_id)).turns] == ["answer to both"]


# --- approvals -----------------------------------------------------------------------------------


async def test_an_accepted_command_runs(host: Host) -> None:
    host.model.push(
        RunCommand(cmd="echo approved > approved.txt", justification="write a file"), Say(text="done")
    )
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("make the file"))

    events = await follow(host, thread_id, turn_id, answer=lambda _: {"decision": "accept"})

    [request] = [e for e in events if isinstance(e, RequestPending)]
    assert request.kind == "command"
    assert request.method == "item/commandExecution/requestApproval"
    assert "echo approved > approved.txt" in (request.command or "")
    assert request.cwd == str(host.workspace)
    assert request.reason == "write a file"
    assert RequestResolved(key=request.key) in events
    assert final_event(events).status == "completed"
    assert (host.workspace / "approved.txt").read_text() == "approved\n"
    assert host.runtime.health().pending_requests == 0


async def test_a_declined_command_does_not_run_and_the_turn_goes_on(host: Host) -> None:
    host.model.push(RunCommand(cmd="touch declined.txt"), Say(text="I will not run it then."))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("make the file"))

    events = await follow(host, thread_id, turn_id, answer=lambda _: {"decision": "decline"})

    assert final_event(events).status == "completed"
    assert not (host.workspace / "declined.txt").exists()
    assert (await host.runtime.read_thread(thread_id)).turns[-1].final_text == "I will not run it then."
    [*_, last] = host.model.received()
    assert tool_outputs(last), "the model is told the command was rejected"


async def test_a_cancelled_command_interrupts_the_turn(host: Host) -> None:
    host.model.push(RunCommand(cmd="touch cancelled.txt"))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("make the file"))

    events = await follow(host, thread_id, turn_id, answer=lambda _: {"decision": "cancel"})

    assert final_event(events).status == "interrupted"
    assert not (host.workspace / "cancelled.txt").exists()
    assert (await host.runtime.read_thread(thread_id)).turns[-1].status == "interrupted"


async def test_a_file_change_approval_shows_the_diff(host: Host) -> None:
    patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n+world\n*** End Patch\n"
    host.model.push(ApplyPatch(patch=patch), Say(text="written"))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("write hello.txt"))

    request = await first_request(host, thread_id, turn_id)
    assert request.kind == "file_change"
    assert request.diff is not None
    assert "hello.txt" in request.diff
    assert "hello\nworld" in request.diff
    await host.runtime.answer_request(request.key, {"decision": "accept"})

    assert final_event(await follow(host, thread_id, turn_id)).status == "completed"
    assert (host.workspace / "hello.txt").read_text() == "hello\nworld\n"


async def test_a_late_or_repeated_answer_is_refused(host: Host) -> None:
    host.model.push(RunCommand(cmd="true"), Say(text="ok"))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("run true"))
    request = await first_request(host, thread_id, turn_id)
    await host.runtime.answer_request(request.key, {"decision": "accept"})

    with pytest.raises(UnknownRequest) as refused:
        await host.runtime.answer_request(request.key, {"decision": "accept"})
    assert refused.value.reason in ("answered", "resolved")
    with pytest.raises(UnknownRequest):
        await host.runtime.answer_request("1:999", {"decision": "accept"})
    assert final_event(await follow(host, thread_id, turn_id)).status == "completed"


# --- questions (Plan mode) ---------------------------------------------------------------------------

COLOR = {
    "id": "color",
    "header": "Color",
    "question": "Which color?",
    "options": [{"label": "Blue", "description": "calm"}, {"label": "Red", "description": "bold"}],
}


async def test_a_question_in_plan_mode_reaches_the_user_and_the_answer_reaches_the_model(host: Host) -> None:
    host.model.push(AskUser(questions=[COLOR]), Say(text="Blue it is."))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("pick a color"), plan_mode=True)

    request = await first_request(host, thread_id, turn_id)
    assert request.kind == "user_input"
    assert [q["id"] for q in request.questions] == ["color"]
    assert [o["label"] for o in request.questions[0]["options"]] == ["Blue", "Red"]
    await host.runtime.answer_request(request.key, {"answers": {"color": {"answers": ["Blue"]}}})

    assert final_event(await follow(host, thread_id, turn_id)).status == "completed"
    [*_, last] = host.model.received()
    assert any("Blue" in output for output in tool_outputs(last))
    assert (await host.runtime.read_thread(thread_id)).turns[-1].final_text == "Blue it is."


async def test_plan_mode_does_not_carry_over_to_the_next_turn(host: Host) -> None:
    host.model.push(Say(text="planned"), AskUser(questions=[COLOR]), Say(text="no questions then"))
    thread_id = await host.new_thread()
    planned = await host.runtime.start_turn(thread_id, text("plan"), plan_mode=True)
    await follow(host, thread_id, planned)

    turn_id = await host.runtime.start_turn(thread_id, text("just do it"))
    events = await follow(host, thread_id, turn_id)

    assert not [e for e in events if isinstance(e, RequestPending)]
    [*_, last] = host.model.received()
    assert any("unavailable in Default mode" in output for output in tool_outputs(last))


# --- steer and interrupt ------------------------------------------------------------------------------


async def test_steering_a_running_turn_changes_its_answer(host: Host) -> None:
    host.model.push(
        Stream(chunks=["Writing ", "a ", "long ", "answer ", "slowly"], delay_s=0.5), Say(text="steered")
    )
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("write something long"))
    await model_requests(host.model, 1)

    assert await host.runtime.steer(thread_id, turn_id, "make it short") == turn_id

    assert final_event(await follow(host, thread_id, turn_id)).status == "completed"
    requests = await model_requests(host.model, 2)
    assert "make it short" in user_texts(requests[1])
    assert (await host.runtime.read_thread(thread_id)).turns[-1].final_text == "steered"


async def test_interrupting_a_running_turn(host: Host) -> None:
    host.model.push(Hang(seconds=60))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("take your time"))
    await model_requests(host.model, 1)

    await host.runtime.interrupt(thread_id, turn_id)

    assert final_event(await follow(host, thread_id, turn_id)).status == "interrupted"
    assert (await host.runtime.read_thread(thread_id)).turns[-1].status == "interrupted"
    with pytest.raises(TurnNotActive):
        await host.runtime.steer(thread_id, turn_id, "too late")


# --- refusals -----------------------------------------------------------------------------------------


class _DynamicToolModel:
    """A model that calls a client-side dynamic tool once, then answers with the tool's output.

    The scripted model server has no step for calling an arbitrary tool, and a dynamic tool call
    (`item/tool/call`) is the one server request a real 0.169 binary sends that the runtime does
    not surface. This serves just that exchange.
    """

    def __init__(self, tool: str) -> None:
        self.outputs: list[str] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                outputs = tool_outputs(body)
                model.outputs += outputs
                item: dict[str, Any]
                if outputs:
                    item = {"type": "message", "role": "assistant", "id": "msg_2", "status": "completed"}
                    item["content"] = [{"type": "output_text", "text": f"tool said: {outputs[-1]}"}]
                else:
                    arguments = json.dumps({"order": 42})
                    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": tool}
                    item["arguments"] = arguments
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                self.wfile.write(sse_event("response.output_item.done", output_index=0, item=item))
                self.wfile.write(sse_event("response.completed", response={"id": "resp_1"}))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_a_server_request_the_runtime_cannot_show_is_refused_at_once(tmp_path: Path) -> None:
    model = _DynamicToolModel("lookup_order")
    runtime = codex_runtime(write_codex_home(tmp_path / "home", model.base_url), tmp_path)
    await runtime.start()
    try:
        tool = {
            "type": "function",
            "name": "lookup_order",
            "description": "Look up an order.",
            "inputSchema": {},
        }
        started = await runtime.call("thread/start", {"cwd": str(tmp_path), "dynamicTools": [tool]})
        thread_id = started["thread"]["id"]
        turn_id = await runtime.start_turn(thread_id, text("where is order 42?"))

        events: list[TurnEvent] = []
        async with asyncio.timeout(TURN_TIMEOUT_S):
            events = [event async for event in runtime.watch_turn(thread_id, turn_id)]

        assert not [e for e in events if isinstance(e, RequestPending)]
        assert final_event(events).status == "completed"
        assert model.outputs, "Codex told the model the tool call failed, and the turn went on"
        assert runtime.health().pending_requests == 0
    finally:
        await runtime.stop()
        model.stop()


# --- faults -------------------------------------------------------------------------------------------


@pytest.mark.faults
async def test_a_killed_child_is_restarted_and_its_thread_resumes(host: Host) -> None:
    runtime = host.runtime
    host.model.push(Say(text="first answer"), RunCommand(cmd="touch never.txt"))
    thread_id = await host.new_thread()
    first = await runtime.start_turn(thread_id, text("first question"))
    await follow(host, thread_id, first)
    second = await runtime.start_turn(thread_id, text("second question"))
    request = await first_request(host, thread_id, second)
    old_pid = runtime.pid
    assert old_pid is not None
    family = _descendants(old_pid)

    watching = asyncio.create_task(follow(host, thread_id, second))
    await asyncio.sleep(0.1)
    os.killpg(old_pid, signal.SIGKILL)

    with pytest.raises(RuntimeRestarted):
        await watching
    await eventually(lambda: runtime.health().state == "running")
    health = runtime.health()
    assert (health.generation, health.restarts, health.loaded_threads) == (2, 1, 0)
    assert health.pid != old_pid
    assert not _alive(family)
    assert not runtime.is_turn_live(thread_id, second)
    with pytest.raises(UnknownRequest) as gone:
        await runtime.answer_request(request.key, {"decision": "accept"})
    assert gone.value.reason == "restarted"

    assert await runtime.ensure_thread(thread_id, host.settings()) == thread_id
    turns = (await runtime.read_thread(thread_id)).turns
    assert [(t.status, t.user_text, t.final_text) for t in turns] == [
        ("completed", "first question", "first answer"),
        ("interrupted", "second question", ""),
    ]
    host.model.push(Say(text="back again"))
    third = await runtime.start_turn(thread_id, text("third question"))
    assert final_event(await follow(host, thread_id, third)).status == "completed"
    assert (await runtime.read_thread(thread_id)).turns[-1].final_text == "back again"
    assert not (host.workspace / "never.txt").exists()


@pytest.mark.faults
async def test_an_answer_meant_for_a_dead_runtime_never_answers_a_new_runtimes_request(
    tmp_path: Path, model: ScriptedModelServer
) -> None:
    """A restarted runtime worker counts its children from 1 again and Codex numbers requests from
    0 again: an approval given for the old process's request must not approve the new one's."""
    home = write_codex_home(tmp_path / "codex-home", model.base_url)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    keys = []
    for life in ("before", "after"):
        runtime = codex_runtime(home, tmp_path)
        await runtime.start()
        host = Host(runtime, model, home, workspace)
        try:
            model.push(RunCommand(cmd=f"touch {life}.txt"))
            thread_id = await host.new_thread()
            turn_id = await runtime.start_turn(thread_id, text(f"touch {life}"))
            keys.append((await first_request(host, thread_id, turn_id)).key)
            if life == "after":
                with pytest.raises(UnknownRequest) as stale:
                    await runtime.answer_request(keys[0], {"decision": "accept"})
                assert stale.value.reason == "restarted"
                assert runtime.health().pending_requests == 1  # the new request still waits
        finally:
            await runtime.stop()
    assert keys[0] != keys[1]
    assert not (workspace / "after.txt").exists()


@pytest.mark.faults
async def test_a_call_in_flight_when_the_child_dies_fails_with_runtime_restarted(host: Host) -> None:
    host.model.push(Say(text="persisted"))
    thread_id = await host.new_thread()
    await follow(host, thread_id, await host.runtime.start_turn(thread_id, text("hi")))
    pid = host.runtime.pid
    assert pid is not None
    os.killpg(pid, signal.SIGSTOP)  # it cannot answer now
    call = asyncio.create_task(host.runtime.call("thread/read", {"threadId": thread_id}))
    await asyncio.sleep(0.2)
    assert not call.done()

    os.killpg(pid, signal.SIGKILL)

    with pytest.raises(RuntimeRestarted):
        await asyncio.wait_for(call, TURN_TIMEOUT_S)
    # The very next call waits for the next child rather than reaching the dead one.
    assert (await host.runtime.read_thread(thread_id)).turns[0].final_text == "persisted"
    assert host.runtime.health().generation == 2


@pytest.mark.faults
async def test_a_model_error_fails_the_turn_with_its_message(host: Host) -> None:
    host.model.push(Fail(status=500, body="scripted outage"), Say(text="recovered"))
    thread_id = await host.new_thread()
    turn_id = await host.runtime.start_turn(thread_id, text("hello?"))

    ended = final_event(await follow(host, thread_id, turn_id))

    assert ended.status == "failed"
    assert ended.error_message
    [turn] = (await host.runtime.read_thread(thread_id)).turns
    assert (turn.status, turn.error) == ("failed", ended.error_message)
    again = await host.runtime.start_turn(thread_id, text("and now?"))
    assert final_event(await follow(host, thread_id, again)).status == "completed"


@pytest.mark.faults
async def test_stop_leaves_no_codex_process_behind(tmp_path: Path, model: ScriptedModelServer) -> None:
    home = write_codex_home(tmp_path / "codex-home", model.base_url)
    runtime = codex_runtime(home, tmp_path)
    await runtime.start()
    host = Host(runtime, model, home, tmp_path)
    # A command still running when we stop: the child's whole family must go, not just the child.
    model.push(RunCommand(cmd="sleep 300"))
    thread_id = await host.new_thread()
    turn_id = await runtime.start_turn(thread_id, text("sleep"))
    request = await first_request(host, thread_id, turn_id)
    await runtime.answer_request(request.key, {"decision": "accept"})
    pid = runtime.pid
    assert pid is not None
    await eventually(lambda: any("sleep 300" in _cmdline(p) for p in _descendants(pid)))
    family = _descendants(pid) | {pid}

    await runtime.stop()

    assert runtime.health().state == "stopped"
    await eventually(lambda: not _alive(family), timeout_s=5)
    left = _codex_processes_using(home)
    assert not left, [f"{_stat(p)} {_cmdline(p)}" for p in left]
    # `sleep 300` ran in a session of its own (Codex gives commands a PTY), outside the child's
    # process group; it still went with the child (observed).


_HOST_SCRIPT = """
import asyncio, subprocess, sys
from pathlib import Path
from ally.codex.binary import find_codex_binary
from ally.codex.runtime import CodexRuntime

async def main() -> None:
    runtime = CodexRuntime(find_codex_binary(), Path(sys.argv[1]))
    await runtime.start()
    # Keep the child's stdin open past our death, so only PR_SET_PDEATHSIG can end it: a closed
    # stdin alone would make it exit too (docs/codex-app-server.md §1).
    stdin = runtime._child._process.stdin.get_extra_info("pipe").fileno()
    quiet = subprocess.DEVNULL
    holder = subprocess.Popen(["sleep", "600"], pass_fds=[stdin], stdout=quiet, start_new_session=True)
    print(runtime.pid, holder.pid, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.faults
async def test_a_killed_runtime_host_leaves_no_orphan(tmp_path: Path, model: ScriptedModelServer) -> None:
    home = write_codex_home(tmp_path / "codex-home", model.base_url)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOST_SCRIPT, str(home), stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert worker.stdout is not None
    holder_pid = 0
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            child_pid, holder_pid = map(int, (await worker.stdout.readline()).split())
        assert _alive({child_pid})

        worker.kill()  # SIGKILL: no finally, no stop(); only PR_SET_PDEATHSIG is left to act
        await worker.wait()

        await eventually(lambda: not _alive({child_pid}), timeout_s=5)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        if holder_pid:
            os.kill(holder_pid, signal.SIGKILL)


# --- /proc --------------------------------------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    """The pids that still run (zombies count as gone)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _stat(pid: int) -> str:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return f"{pid} gone"
    return f"{pid} state={fields[0]} ppid={fields[1]} pgid={fields[2]} sid={fields[3]}"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _codex_processes_using(home: Path) -> list[int]:
    """Live codex binaries with this CODEX_HOME (commands inherit it too, but are not codex)."""
    marker, binary = f"CODEX_HOME={home}".encode(), str(find_codex_binary())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        pid = int(entry.name)
        if marker in environ and _cmdline(pid).startswith(binary) and _alive({pid}):
            found.append(pid)
    return found
