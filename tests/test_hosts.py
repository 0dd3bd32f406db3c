"""Several runtime hosts on one Temporal: each assistant's turns run on the host it lives on.

Two runtime hosts, each with its own scripted model, Codex home and `codex app-server` child (the
stack's own, and a second one), and two assistants, one pinned to each. The chats are the terminal
channel's, so what the person sees is what the test reads.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from ally import names
from ally.assistants import resolve
from ally.chat_client import ChatClient
from ally.codex.errors import CodexRuntimeError
from ally.codex.runtime import CodexRuntime
from ally.config import AllyConfig, AssistantConfig
from ally.contracts import ChatRef, InboundMessage, TurnResult
from ally.model_server import Say, ScriptedModelServer
from ally.routing import Route, new_conversation
from tests.stack import PERSON, Stack, eventually, running_stack, second_host
from workflows.turn import TurnWorkflow

pytestmark = [pytest.mark.codex, pytest.mark.faults]

LOCATE_TIMEOUT_S = 3.0  # instead of 30 s: how long a conversation waits for its host to answer


class TwoAssistants:
    """alpha lives on the stack's own host, beta on the second one."""

    def __init__(self, stack: Stack, config: AllyConfig) -> None:
        self.stack = stack
        self.config = config
        self.conversations: list[str] = []

    async def send(self, chat: ChatRef, assistant: str, text: str) -> InboundMessage:
        """What the gateway does once a chat is routed to an assistant."""
        state = new_conversation(self.config, chat, Route(assistant=resolve(self.config, assistant)))
        state = state.model_copy(update={"locate_timeout_s": LOCATE_TIMEOUT_S})
        message = InboundMessage(message_id=f"m-{uuid.uuid4().hex[:10]}", chat=chat, sender=PERSON, text=text)
        self.conversations.append(names.conversation_id(chat.chat_id, assistant))
        await ChatClient(self.stack.client).hand_over(message, state)
        return message

    async def turn(self, message: InboundMessage) -> TurnResult:
        return await self.stack.client.get_workflow_handle_for(
            TurnWorkflow.run, names.turn_workflow_id(message.chat.chat_id, message.message_id)
        ).result()

    async def end(self) -> None:
        for conversation in set(self.conversations):
            await self.stack.client.get_workflow_handle(conversation).terminate("test over")


def asked(model: ScriptedModelServer, text: str) -> bool:
    """Whether this host's model was given `text` in any request (each host has a model of its own)."""
    return any(text in json.dumps(request) for request in model.received())


async def holds_thread(runtime: CodexRuntime | None, thread_id: str) -> bool:
    """Whether this host's Codex home has the thread (each host's Codex keeps its own threads)."""
    if runtime is None:
        return False
    try:
        await runtime.read_thread(thread_id)
    except CodexRuntimeError:
        return False
    return True


async def test_each_assistant_runs_on_its_own_host_and_a_host_going_down_leaves_the_other_answering(
    client: Client, tmp_path: Path
) -> None:
    async with (
        running_stack(client, tmp_path / "a") as stack,
        second_host(stack, tmp_path / "b", "host-b") as host_b,
    ):
        (tmp_path / "alpha").mkdir()
        (tmp_path / "beta").mkdir()
        config = AllyConfig(
            assistants={
                "alpha": AssistantConfig(host=stack.host, workspace=tmp_path / "alpha"),
                "beta": AssistantConfig(host=host_b.name, workspace=tmp_path / "beta"),
            }
        )
        ally = TwoAssistants(stack, config)
        try:
            # Each assistant's turn runs on its host: its model is asked, its Codex keeps the thread.
            stack.model.push(Say(text="alpha here"))
            host_b.model.push(Say(text="beta here"))
            chat_a, chat_b = stack.chat(), stack.chat()
            to_alpha = await ally.send(chat_a, "alpha", "a question for alpha")
            to_beta = await ally.send(chat_b, "beta", "a question for beta")
            await eventually(lambda: stack.replies(chat_a, tone="answer"), what="alpha's answer")
            await eventually(lambda: stack.replies(chat_b, tone="answer"), what="beta's answer")
            assert [r.text for r in stack.replies(chat_a)] == ["alpha here"]
            assert [r.text for r in stack.replies(chat_b)] == ["beta here"]
            for text, its_model, other in (
                ("a question for alpha", stack.model, host_b.model),
                ("a question for beta", host_b.model, stack.model),
            ):
                assert asked(its_model, text) and not asked(other, text)
            alpha_turn, beta_turn = await ally.turn(to_alpha), await ally.turn(to_beta)
            assert alpha_turn.thread_id and beta_turn.thread_id
            assert await holds_thread(stack.runtime, alpha_turn.thread_id)
            assert not await holds_thread(host_b.runtime, alpha_turn.thread_id)
            assert await holds_thread(host_b.runtime, beta_turn.thread_id)
            assert not await holds_thread(stack.runtime, beta_turn.thread_id)

            # host-b goes down (its worker and its Codex child): alpha goes on answering.
            await host_b.stop()
            stack.model.push(Say(text="alpha still here"))
            await ally.send(chat_a, "alpha", "are you there, alpha?")
            await eventually(
                lambda: len(stack.replies(chat_a, tone="answer")) == 2, what="alpha's second answer"
            )
            assert stack.replies(chat_a)[-1].text == "alpha still here"

            # beta, asked in a new chat, says honestly where it lives and what to do.
            chat_b2 = stack.chat()
            started = asyncio.get_running_loop().time()
            await ally.send(chat_b2, "beta", "beta, count the files")
            told = await eventually(
                lambda: [r for r in stack.replies(chat_b2) if "lives on the host" in r.text],
                within=LOCATE_TIMEOUT_S + 20,
                what="the host-down message",
            )
            waited = asyncio.get_running_loop().time() - started
            assert [r.text for r in told] == [
                f"beta lives on the host {host_b.name}, whose Codex runtime is not answering. "
                "Start `ally up` there, then /retry."
            ]
            assert LOCATE_TIMEOUT_S <= waited < LOCATE_TIMEOUT_S + 10, waited
            assert not asked(stack.model, "beta, count the files")  # not run on alpha's host instead

            # host-b is back: /retry runs the message there; beta's first chat goes on with its thread.
            await host_b.start()
            host_b.model.push(Say(text="beta counted"), Say(text="beta remembers"))
            await ally.send(chat_b2, "beta", "/retry")
            await eventually(lambda: stack.replies(chat_b2, tone="answer"), what="the retried answer")
            assert [r.text for r in stack.replies(chat_b2, tone="answer")] == ["beta counted"]
            assert asked(host_b.model, "beta, count the files")
            again = await ally.send(chat_b, "beta", "still there, beta?")
            await eventually(
                lambda: len(stack.replies(chat_b, tone="answer")) == 2, what="beta's next answer"
            )
            assert stack.replies(chat_b, tone="answer")[-1].text == "beta remembers"
            assert (await ally.turn(again)).thread_id == beta_turn.thread_id  # the same Codex thread
            assert not asked(stack.model, "still there, beta?")
        finally:
            await ally.end()
