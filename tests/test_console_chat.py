"""`ally chat`: the terminal is its chat's worker. A typed line becomes a turn whose workflows run
in this process; the approval prompt and the answer print here, and a typed "y" decides."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from ally import names
from ally.config import AllyConfig
from ally.console_chat import ConsoleChat
from dev.model_server import RunCommand, Say
from tests.stack import codex_workers, eventually, running_stack

pytestmark = pytest.mark.codex


async def test_ally_chat_runs_its_chats_workflows_and_takes_an_approval_inline(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        config = AllyConfig.model_validate(
            {"runtime": {"host": stack.host}, "codex": {"workspace": str(stack.workspace)}}
        )
        target = stack.workspace / "from-the-terminal.txt"
        stack.model.push(RunCommand(cmd=f"echo yes > {target}"), Say(text="Wrote it."))
        printed: list[str] = []
        typed: asyncio.Queue[str | None] = asyncio.Queue()

        async def lines() -> AsyncIterator[str]:
            while (line := await typed.get()) is not None:
                yield line

        console = ConsoleChat(client, config, printed.append)
        # `ally up`'s runtime worker, on the discovery queue `ally chat`'s conversations use.
        runtime_workers = codex_workers(client, stack.runtime, stack.host, names.RUNTIME_DISCOVERY_QUEUE)
        async with contextlib.AsyncExitStack() as running:
            for worker in runtime_workers:
                await running.enter_async_context(worker)
            chatting = asyncio.create_task(console.run(lines()))
            await typed.put("write the file")
            await eventually(lambda: [p for p in printed if "Codex wants to run" in p], what="the prompt")
            assert not target.exists()
            await typed.put("y")
            answers = await eventually(
                lambda: [p for p in printed if p.startswith("codex> ")], within=60, what="the answer"
            )
            await typed.put(None)  # Ctrl-D
            await chatting
        assert answers == ["codex> Wrote it."]
        assert target.read_text().strip() == "yes"
        await client.get_workflow_handle(names.conversation_id(console.chat.chat_id)).terminate("test over")
