"""What an assistant's settings give its threads on the runtime host: its own MCP servers, its persona
(AGENTS.md in its workspace), its reasoning effort — each visible in what the model received.

Real dev server, real `codex app-server` with the scripted model, real workers; a chat's
conversation is started with the thread settings the assistant resolves to.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from ally.chat_client import ChatClient
from ally.codex.binary import find_codex_binary
from ally.codex.runtime import CodexRuntime
from ally.contracts import ChatRef, Decision, McpServer, ThreadSettings
from ally.model_server import CallTool, Say, SearchTools
from ally.persona import persona
from tests import mcp_server
from tests.stack import PERSON, Stack, codex_workers, eventually, running_stack

pytestmark = pytest.mark.codex

MCP_NAMESPACE = "mcp__tickets"


def tickets_server(calls: Path) -> McpServer:
    """The tests' own stdio MCP server; every call it serves is a line in `calls`."""
    return McpServer(
        command=sys.executable,
        args=[str(Path(mcp_server.__file__).resolve())],
        env={mcp_server.CALLS_ENV: str(calls)},
    )


def calls_made(calls: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def searched_tools(request: dict[str, Any]) -> list[dict[str, Any]]:
    """What Codex answered the model's `tool_search` with, in the request that followed it."""
    outputs = [item for item in request["input"] if item.get("type") == "tool_search_output"]
    assert outputs, "the model's tool_search got no answer"
    tools: list[dict[str, Any]] = outputs[-1]["tools"]
    return tools


def input_texts(request: dict[str, Any]) -> str:
    """Every text of the model's input (system, persona, environment, user), one string."""
    return "\n".join(
        str(part.get("text", ""))
        for item in request["input"]
        if item.get("type") == "message"
        for part in item.get("content", [])
    )


async def approve_waiting_requests(stack: Stack, chat: ChatRef, seen: int = 0) -> int:
    """Accept the approval card(s) the person got in `chat` after the first `seen`, as they would."""
    prompts = await eventually(lambda: stack.approvals(chat)[seen:], what="an approval card")
    for prompt in prompts:
        decision = Decision(key=prompt.request.key, decision="accept", operator=PERSON)
        await ChatClient(stack.client).decide(prompt.turn_workflow_id, decision)
    return seen + len(prompts)


async def test_an_assistants_mcp_tool_is_found_and_called_in_its_threads_and_not_offered_in_anothers(
    client: Client, tmp_path: Path
) -> None:
    calls = tmp_path / "mcp-calls.jsonl"
    async with running_stack(client, tmp_path) as stack:
        helpdesk = ThreadSettings(cwd=str(stack.workspace), mcp_servers={"tickets": tickets_server(calls)})
        stack.model.push(
            SearchTools(query="support ticket"),
            CallTool(namespace=MCP_NAMESPACE, name=mcp_server.TOOL, arguments={"id": "T-42"}),
            Say(text="T-42 is open: the printer on floor 3 is jammed."),
        )
        chat = stack.chat()
        await stack.send(chat, "what is the state of ticket T-42?", settings=helpdesk)
        # Codex asks before it runs an MCP tool (an elicitation): the person approves on the card.
        prompt = (await eventually(lambda: stack.approvals(chat), what="the MCP tool's approval card"))[0]
        assert prompt.request.kind == "elicitation" and mcp_server.TOOL in (prompt.request.reason or "")
        await approve_waiting_requests(stack, chat)
        answers = await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        assert [a.text for a in answers] == ["T-42 is open: the printer on floor 3 is jammed."]

        requests = stack.model.received()
        assert MCP_NAMESPACE in input_texts(requests[0])  # listed among the deferred tools
        found = searched_tools(requests[1])
        assert [(ns["name"], [t["name"] for t in ns["tools"]]) for ns in found] == [
            (MCP_NAMESPACE, [mcp_server.TOOL])
        ]
        assert calls_made(calls) == [{"tool": mcp_server.TOOL, "arguments": {"id": "T-42"}}]
        outputs = [i for i in requests[2]["input"] if i.get("type") == "function_call_output"]
        assert mcp_server.ticket_text("T-42") in json.dumps(outputs[-1]["output"])

        # Another assistant on the same host, the same Codex child: its thread has no such tool.
        stack.model.reset()
        stack.model.push(SearchTools(query="support ticket"), Say(text="I have no ticket tool."))
        other = stack.chat()
        plain = ThreadSettings(cwd=str(stack.workspace))
        await stack.send(other, "what is the state of ticket T-42?", settings=plain)
        await eventually(lambda: stack.replies(other, tone="answer"), what="the other assistant's answer")
        first, after_search = stack.model.received()
        assert MCP_NAMESPACE not in json.dumps(first) and mcp_server.TOOL not in json.dumps(first)
        assert searched_tools(after_search) == []
        assert stack.approvals(other) == []
        assert len(calls_made(calls)) == 1


@contextlib.asynccontextmanager
async def runtime_host(stack: Stack, home: Path) -> AsyncIterator[CodexRuntime]:
    """A runtime worker for the stack's host, with a Codex runtime of its own: what a restarted
    `ally up` brings up (a new process that knows nothing of the threads it served before)."""
    runtime = CodexRuntime(find_codex_binary(), stack.runtime.codex_home, env={"HOME": str(home)})
    await runtime.start()
    try:
        async with contextlib.AsyncExitStack() as running:
            for worker in codex_workers(stack.client, runtime, stack.host, stack.discovery_queue):
                await running.enter_async_context(worker)
            yield runtime
    finally:
        await runtime.stop()


@pytest.mark.faults
async def test_after_the_runtime_restarts_a_resumed_thread_still_has_its_assistants_mcp_tool(
    client: Client, tmp_path: Path
) -> None:
    calls = tmp_path / "mcp-calls.jsonl"
    home = tmp_path / "home"
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        helpdesk = ThreadSettings(cwd=str(stack.workspace), mcp_servers={"tickets": tickets_server(calls)})
        chat = stack.chat()
        async with runtime_host(stack, home):
            stack.model.push(Say(text="Hello, I am the helpdesk."))
            await stack.send(chat, "hello", settings=helpdesk)
            await eventually(lambda: stack.replies(chat, tone="answer"), what="the first answer")
        # The host is back as a new process: the chat's thread is resumed, not started again.
        async with runtime_host(stack, home) as runtime:
            stack.model.reset()
            stack.model.push(
                SearchTools(query="support ticket"),
                CallTool(namespace=MCP_NAMESPACE, name=mcp_server.TOOL, arguments={"id": "T-7"}),
                Say(text="T-7 is open."),
            )
            await stack.send(chat, "and ticket T-7?", settings=helpdesk)
            await approve_waiting_requests(stack, chat)
            answers = await eventually(
                lambda: stack.replies(chat, tone="answer")[1:], what="the answer after the restart"
            )
            assert [a.text for a in answers] == ["T-7 is open."]
            assert runtime.health().loaded_threads == 1
        requests = stack.model.received()
        assert "hello" in json.dumps(requests[0]["input"])  # the same thread, its history intact
        assert [ns["name"] for ns in searched_tools(requests[1])] == [MCP_NAMESPACE]
        assert calls_made(calls) == [{"tool": mcp_server.TOOL, "arguments": {"id": "T-7"}}]


async def test_a_new_assistants_workspace_gets_its_persona_and_codex_gives_it_to_the_model(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        workspace = tmp_path / "assistants" / "tess"  # does not exist yet
        settings = ThreadSettings(cwd=str(workspace), agents_md=persona("Tess"))
        stack.model.push(Say(text="Hi, I am Tess."))
        chat = stack.chat()
        await stack.send(chat, "who are you?", settings=settings)
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")

        assert (workspace / "AGENTS.md").read_text(encoding="utf-8") == persona("Tess")
        (request,) = stack.model.received()
        assert f"# AGENTS.md instructions for {workspace}" in input_texts(request)
        assert persona("Tess") in input_texts(request)


async def test_a_persona_the_person_edited_is_kept_byte_for_byte_and_is_what_the_model_sees(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        workspace = tmp_path / "tess"
        workspace.mkdir()
        edited = "# Tess, my way\n\nAnswer in haiku. Sign every answer with — T.\n"
        (workspace / "AGENTS.md").write_bytes(edited.encode())
        settings = ThreadSettings(cwd=str(workspace), agents_md=persona("Tess"))
        stack.model.push(Say(text="Old pond / a frog jumps / — T."))
        chat = stack.chat()
        await stack.send(chat, "who are you?", settings=settings)
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")

        assert (workspace / "AGENTS.md").read_bytes() == edited.encode()
        (request,) = stack.model.received()
        seen = input_texts(request)
        assert edited in seen
        assert persona("Tess") not in seen and "You are Tess" not in seen


async def test_a_workspace_that_cannot_be_made_is_told_in_the_chat_and_nothing_reaches_codex(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        taken = tmp_path / "notes.txt"
        taken.write_text("a file where the workspace should be")
        chat = stack.chat()
        await stack.send(chat, "hello", settings=ThreadSettings(cwd=str(taken), agents_md=persona("Tess")))
        (problem,) = await eventually(lambda: stack.replies(chat, tone="problem"), what="the problem")
        assert f"the workspace {taken} cannot be prepared: it is a file, not a directory" in problem.text
        assert stack.model.received() == []
        assert taken.read_text() == "a file where the workspace should be"


async def test_an_assistants_reasoning_effort_is_what_the_model_is_asked_for_on_every_turn(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        thorough = ThreadSettings(cwd=str(stack.workspace), reasoning_effort="high")
        stack.model.push(Say(text="one"), Say(text="two"))
        chat = stack.chat()
        await stack.send(chat, "think hard", settings=thorough)
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the first answer")
        await stack.send(chat, "and again", settings=thorough)
        await eventually(lambda: stack.replies(chat, tone="answer")[1:], what="the second answer")
        assert [r["reasoning"]["effort"] for r in stack.model.received()] == ["high", "high"]

        # An assistant that names no effort gets the model's own default, not another's "high".
        stack.model.reset()
        stack.model.push(Say(text="three"))
        other = stack.chat()
        await stack.send(other, "quick one", settings=ThreadSettings(cwd=str(stack.workspace)))
        await eventually(lambda: stack.replies(other, tone="answer"), what="the other answer")
        (request,) = stack.model.received()
        assert request["reasoning"]["effort"] == "medium"  # gpt-5.5's default (docs/codex-app-server.md §14)
