"""`ally chat`: the terminal is its chat's worker. A typed line becomes a turn whose workflows run
in this process; the approval prompt and the answer print here, and a typed "y" decides."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.channel import PROGRESS_POLL_S
from ally import names
from ally.chat_client import MAX_MESSAGE_BYTES
from ally.config import AllyConfig
from ally.console_chat import ConsoleChat
from ally.model_server import ApplyPatch, Hang, RunCommand, Say
from tests.stack import codex_workers, eventually, running_stack
from tests.test_up import start_up

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


async def test_ally_chat_shows_what_codex_does_as_lines_then_a_summary_and_the_answer(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        # Commands run without approvals here (the test's Codex home is in a temporary directory,
        # where Codex cannot set its own sandbox up).
        config = AllyConfig.model_validate(
            {
                "runtime": {"host": stack.host},
                "codex": {
                    "workspace": str(stack.workspace),
                    "sandbox": "danger-full-access",
                    "approval_policy": "never",
                },
            }
        )
        patch = "*** Begin Patch\n*** Add File: notes.txt\n+noted\n*** End Patch\n"
        stack.model.push(
            RunCommand(cmd="echo first-step", escalated=False),
            Hang(seconds=2.5, then=RunCommand(cmd="echo second-step", escalated=False)),
            Hang(seconds=2.5, then=ApplyPatch(patch=patch)),
            Hang(seconds=2.5, then=Say(text="Noted.")),
        )
        printed: list[str] = []
        typed: asyncio.Queue[str | None] = asyncio.Queue()

        async def lines() -> AsyncIterator[str]:
            while (line := await typed.get()) is not None:
                yield line

        console = ConsoleChat(client, config, printed.append)
        runtime_workers = codex_workers(client, stack.runtime, stack.host, names.RUNTIME_DISCOVERY_QUEUE)
        async with contextlib.AsyncExitStack() as running:
            for worker in runtime_workers:
                await running.enter_async_context(worker)
            chatting = asyncio.create_task(console.run(lines()))
            await typed.put("take notes")
            await eventually(
                lambda: [p for p in printed if p.startswith("codex> ")], within=60, what="the answer"
            )
            await asyncio.sleep(1.0)
            await typed.put(None)
            await chatting
        # A step caught while it ran says so ("running"); each is printed once either way.
        shown = (
            "\n".join(printed[1:])
            .replace("… running ", "… ran ")
            .replace("… editing ", "… edited ")
            .splitlines()
        )
        assert shown == [
            "  … ran echo first-step",
            "  … ran echo second-step",
            "  … edited add notes.txt",
            shown[3],
            "codex> Noted.",
        ], shown
        assert shown[3].startswith("  … done in ") and shown[3].endswith("· 2 commands · 1 file changed")
        await client.get_workflow_handle(names.conversation_id(console.chat.chat_id)).terminate("test over")


@pytest.mark.faults
def test_ally_chat_refuses_an_oversized_or_invalid_line_in_words_stays_open_and_prints_no_sdk_warning(
    tmp_path: Path,
) -> None:
    up = start_up(tmp_path / "ally-home", "--demo")
    chat = subprocess.Popen(
        [sys.executable, "-m", "ally", "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=up.env,
    )
    try:
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write(b"z" * (MAX_MESSAGE_BYTES + 10) + b"\n")  # more than a message may be
        chat.stdin.write(b"caf\xe9 au lait\n")  # Latin-1, not UTF-8
        chat.stdin.write(b"still there?\n")
        chat.stdin.flush()
        printed: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("You said: still there?" in line for line in printed):
            printed.append(chat.stdout.readline().decode(errors="replace").rstrip())
        # The turn's progress follower ends within a poll of the turn's close, after the answer: the
        # SDK's core used to warn of its late completion on this terminal, once per turn.
        time.sleep(PROGRESS_POLL_S * 3)
        chat.stdin.close()
        assert chat.wait(timeout=30) == 0
        printed += chat.stdout.read().decode(errors="replace").splitlines()
        shown = "\n".join(printed)
        assert "Traceback" not in shown
        assert "sdk_core" not in shown, shown
        assert "ally> This message is too large to send on" in shown
        assert "ally> This message is not valid text" in shown
        assert "codex> (demo model) You said: still there?" in shown  # the chat stayed open
    finally:
        if chat.poll() is None:
            chat.kill()
        up.process.terminate()
        up.process.wait(timeout=60)


async def test_slash_file_in_ally_chat_says_where_the_file_is_and_on_which_host(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        config = AllyConfig.model_validate(
            {"runtime": {"host": stack.host}, "codex": {"workspace": str(stack.workspace)}}
        )
        (stack.workspace / "notes.md").write_text("hello")
        printed: list[str] = []
        typed: asyncio.Queue[str | None] = asyncio.Queue()

        async def lines() -> AsyncIterator[str]:
            while (line := await typed.get()) is not None:
                yield line

        console = ConsoleChat(client, config, printed.append)
        runtime_workers = codex_workers(client, stack.runtime, stack.host, names.RUNTIME_DISCOVERY_QUEUE)
        async with contextlib.AsyncExitStack() as running:
            for worker in runtime_workers:
                await running.enter_async_context(worker)
            chatting = asyncio.create_task(console.run(lines()))
            await typed.put("/file notes.md")
            where = await eventually(
                lambda: [p for p in printed if "notes.md (5 bytes)" in p], within=60, what="where"
            )
            await typed.put("/file ../elsewhere.txt")
            refused = await eventually(
                lambda: [p for p in printed if "outside" in p], within=60, what="refusal"
            )
            await typed.put(None)
            await chatting
        assert f"is on the host {stack.host}: {(stack.workspace / 'notes.md').resolve()}" in where[0]
        assert "elsewhere.txt" in refused[0]
        await client.get_workflow_handle(names.conversation_id(console.chat.chat_id)).terminate("test over")
