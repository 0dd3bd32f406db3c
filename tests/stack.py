"""The whole product in one test process: real dev server, real Codex, scripted model, real workers.

`running_stack` starts what `ally up` and `ally chat` start, on queues unique to the test: the
runtime worker's two queues around a real `CodexRuntime` (the real `codex app-server` child,
talking to a `ScriptedModelServer`), and a chat worker (the conversation and turn workflows beside
the same `ConsoleChannel` `ally chat` uses), whose deliveries the test reads. Channel-specific tests
(Feishu) add a chat worker of their own with `extra_workers` and `Stack.chat_worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.codex import HEARTBEAT_FLUSH, CodexActivities
from activities.workspace import WorkspaceActivities
from ally import names
from ally.channels import Channel
from ally.channels.console import ConsoleChannel, ConsoleEvent
from ally.chat_client import ChatClient
from ally.codex.binary import find_codex_binary
from ally.codex.runtime import CodexRuntime
from ally.contracts import (
    ApprovalPrompt,
    ChatRef,
    ConversationState,
    InboundMessage,
    Person,
    Reply,
    RuntimeLocation,
    ThreadSettings,
    TurnResult,
)
from ally.model_server import ScriptedModelServer, write_codex_home
from workers.chat import chat_worker
from workflows.conversation import ConversationWorkflow
from workflows.turn import TurnWorkflow

T = TypeVar("T")
# `ALLY_TEST_RECORD_HISTORIES=tests/histories dev/test -k …` saves every workflow history a test
# produced: the corpus tests/test_replay.py replays against the current workflow code. (Not a
# WORK_ALLY_ name: those are configuration overrides, and the CLI refuses one it does not know.)
RECORD_HISTORIES = os.environ.get("ALLY_TEST_RECORD_HISTORIES")
PERSON = Person(id="ou_alice", name="Alice")


@dataclass
class Stack:
    client: Client
    model: ScriptedModelServer
    runtime: CodexRuntime
    workspace: Path
    host: str
    discovery_queue: str
    worker_queue: str
    events: list[ConsoleEvent] = field(default_factory=list)
    listeners: list[Callable[[ConsoleEvent], None]] = field(default_factory=list)
    chats: set[str] = field(default_factory=set)
    queues: list[str] = field(default_factory=list)  # every chat worker's queue: whose histories are recorded

    def chat_worker(self, channel: Channel, queue: str) -> Worker:
        """Another chat worker (a Feishu chat's, a failing channel's) beside the terminal one."""
        self.queues.append(queue)
        return chat_worker(self.client, channel, queue)

    def deliver(self, event: ConsoleEvent) -> None:
        """The terminal channel's sink: what the person would see, recorded for the test."""
        self.events.append(event)
        for listener in self.listeners:
            listener(event)

    @property
    def pinned_queue(self) -> str:
        return names.runtime_queue(self.host)

    def chat(self, chat_id: str | None = None, *, chat_type: str = "p2p") -> ChatRef:
        return ChatRef(
            channel="console",
            chat_id=chat_id or f"chat-{uuid.uuid4().hex[:8]}",
            chat_type="group" if chat_type == "group" else "p2p",
            worker_queue=self.worker_queue,
            reactions=False,
        )

    def conversation(self, chat: ChatRef, **overrides: object) -> ConversationState:
        state = ConversationState(
            chat=chat,
            settings=ThreadSettings(cwd=str(self.workspace)),
            discovery_queue=self.discovery_queue,
        )
        return state.model_copy(update=overrides)

    async def send(
        self,
        chat: ChatRef,
        text: str,
        *,
        message_id: str | None = None,
        sender: Person = PERSON,
        **conversation: object,
    ) -> InboundMessage:
        """What the gateway does with a chat message: hand it over by signal-with-start."""
        message = InboundMessage(
            message_id=message_id or f"m-{uuid.uuid4().hex[:10]}", chat=chat, sender=sender, text=text
        )
        self.chats.add(chat.chat_id)
        await ChatClient(self.client).hand_over(message, self.conversation(chat, **conversation))
        return message

    def replies(self, chat: ChatRef, *, tone: str | None = None) -> list[Reply]:
        found = [e.reply for e in self.events if e.reply is not None and e.reply.chat.chat_id == chat.chat_id]
        return [r for r in found if tone is None or r.tone == tone]

    def approvals(self, chat: ChatRef) -> list[ApprovalPrompt]:
        return [
            e.prompt for e in self.events if e.prompt is not None and e.prompt.chat.chat_id == chat.chat_id
        ]

    def conversation_handle(self, chat: ChatRef) -> WorkflowHandle[ConversationWorkflow, None]:
        return self.client.get_workflow_handle_for(
            ConversationWorkflow.run, names.conversation_id(chat.chat_id)
        )

    def turn_handle(self, chat: ChatRef, message: InboundMessage) -> WorkflowHandle[TurnWorkflow, TurnResult]:
        return self.client.get_workflow_handle_for(
            TurnWorkflow.run, names.turn_workflow_id(chat.chat_id, message.message_id)
        )


async def eventually(probe: Callable[[], T | None], *, within: float = 30.0, what: str = "condition") -> T:
    """Poll until `probe` returns something truthy; fail with `what` after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


def codex_workers(client: Client, runtime: CodexRuntime, host: str, discovery_queue: str) -> list[Worker]:
    codex = CodexActivities(runtime, RuntimeLocation(host=host, task_queue=names.runtime_queue(host)))
    identity = names.runtime_worker_identity(host, f"{os.getpid()}@test")  # as workers/runtime.py
    return [
        Worker(
            client,
            task_queue=names.runtime_queue(host),
            activities=[*codex.pinned(), *WorkspaceActivities().pinned()],
            max_heartbeat_throttle_interval=HEARTBEAT_FLUSH,  # as workers/runtime.py
            identity=identity,
        ),
        Worker(client, task_queue=discovery_queue, activities=[codex.locate_runtime], identity=identity),
    ]


@dataclass
class RuntimeHost:
    """Another runtime host on the same Temporal: a machine of its own, as far as work-ally can tell.

    Its own scripted model, Codex home and `codex app-server` child, served by what its runtime
    worker serves: its pinned queue (`codex-runtime@<name>`) and the shared discovery queue.
    """

    client: Client
    name: str
    discovery_queue: str
    model: ScriptedModelServer
    codex_home: Path
    home: Path
    runtime: CodexRuntime | None = None
    _workers: contextlib.AsyncExitStack | None = None

    @property
    def pinned_queue(self) -> str:
        return names.runtime_queue(self.name)

    async def start(self) -> None:
        """Bring the host up (again): a fresh Codex child with the same home, and its workers."""
        runtime = CodexRuntime(find_codex_binary(), self.codex_home, env={"HOME": str(self.home)})
        await runtime.start()
        self.runtime = runtime
        workers = contextlib.AsyncExitStack()
        for worker in codex_workers(self.client, runtime, self.name, self.discovery_queue):
            await workers.enter_async_context(worker)
        self._workers = workers

    async def stop(self) -> None:
        """The host goes down: no worker polls its queues any more, and its Codex child is gone."""
        if self._workers is not None:
            await self._workers.aclose()
            self._workers = None
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None


@contextlib.asynccontextmanager
async def second_host(stack: Stack, folder: Path, name: str) -> AsyncIterator[RuntimeHost]:
    """A second runtime host beside the stack's own (which stays as it is), up until the block ends."""
    home = folder / "home"
    home.mkdir(parents=True, exist_ok=True)
    # A connection of its own, as another machine has: the SDK refuses two workers of one client
    # on the same queue (both hosts poll the discovery queue).
    client = await Client.connect(
        stack.client.service_client.config.target_host,
        namespace=stack.client.namespace,
        data_converter=stack.client.data_converter,
    )
    with ScriptedModelServer() as model:
        host = RuntimeHost(
            client=client,
            name=f"{name}-{uuid.uuid4().hex[:8]}",
            discovery_queue=stack.discovery_queue,
            model=model,
            codex_home=write_codex_home(folder / "codex-home", model.base_url),
            home=home,
        )
        await host.start()
        try:
            yield host
        finally:
            await host.stop()


@contextlib.asynccontextmanager
async def running_stack(
    client: Client,
    tmp_path: Path,
    *,
    extra_workers: Callable[[Stack], Sequence[Worker]] = lambda stack: (),
    with_runtime_worker: bool = True,
    demo: bool = False,
) -> AsyncIterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    workspace = tmp_path / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    with ScriptedModelServer(demo=demo) as model:
        codex_home = write_codex_home(tmp_path / "codex-home", model.base_url)
        # A HOME of the test's own: Codex runs commands in a login shell, which reads ~/.bashrc.
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        runtime = CodexRuntime(find_codex_binary(), codex_home, env={"HOME": str(home)})
        await runtime.start()
        stack = Stack(
            client=client,
            model=model,
            runtime=runtime,
            workspace=workspace,
            host=f"test-{tag}",
            discovery_queue=f"discovery-{tag}",
            worker_queue=f"chat-{tag}",
        )
        workers = [
            stack.chat_worker(ConsoleChannel(stack.deliver), stack.worker_queue),
            *(
                codex_workers(client, runtime, stack.host, stack.discovery_queue)
                if with_runtime_worker
                else []
            ),
            *extra_workers(stack),
        ]
        try:
            async with contextlib.AsyncExitStack() as running:
                for worker in workers:
                    await running.enter_async_context(worker)
                yield stack
                await _end_conversations(stack)
                if RECORD_HISTORIES:
                    await _record_histories(stack, Path(RECORD_HISTORIES))
        finally:
            await runtime.stop()


async def _end_conversations(stack: Stack) -> None:
    """Conversations live forever by design; a finished test ends its own so nothing lingers."""
    for chat_id in stack.chats:
        with contextlib.suppress(Exception):
            await stack.client.get_workflow_handle(names.conversation_id(chat_id)).terminate("test over")
    # Conversations of other assistants and of topics have other ids: found by their queue.
    for queue in stack.queues:
        running = f"TaskQueue='{queue}' AND ExecutionStatus='Running' AND WorkflowType='ConversationWorkflow'"
        async for execution in stack.client.list_workflows(running):
            with contextlib.suppress(Exception):
                await stack.client.get_workflow_handle(execution.id).terminate("test over")


async def _record_histories(stack: Stack, folder: Path) -> None:
    for queue in stack.queues:
        async for execution in stack.client.list_workflows(f'TaskQueue="{queue}"'):
            handle = stack.client.get_workflow_handle(execution.id, run_id=execution.run_id)
            history = await handle.fetch_history()
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{execution.workflow_type}-{execution.id}")
            await asyncio.to_thread(_write, folder / f"{name}.json", history.to_json())


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
