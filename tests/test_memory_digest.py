"""The nightly memory digest: the day's conversations, read from Codex's own record, become the
assistant's memory file (written by Codex) and one short digest posted to the owner; a rerun of the
day replaces both; a day without conversations posts nothing.

Real dev server, real `codex app-server` with the scripted model, the real chat worker (whose
terminal channel de-duplicates by idempotency key, as Feishu does within its hour).
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from temporalio.client import Client

from ally import names
from ally.contracts import RoutineRunResult
from ally.model_server import ApplyPatch, Say
from ally.routines import RoutineSpec, template
from tests.routine_helpers import routine, run_for, started_id, unique
from tests.stack import Stack, eventually, running_stack

pytestmark = pytest.mark.codex


def write_memory(day: str, *lines: str) -> ApplyPatch:
    body = "".join(f"+{line}\n" for line in lines)
    return ApplyPatch(patch=f"*** Begin Patch\n*** Add File: memory/{day}.md\n{body}*** End Patch\n")


def digest_spec(name: str, chat_id: str) -> RoutineSpec:
    """The shipped template, aimed at a chat, due only when triggered."""
    shipped = tomllib.loads(template("memory-digest"))
    return RoutineSpec.model_validate({**shipped, "name": name, "chat": chat_id, "cron": "0 9 1 1 *"})


async def run_once(client: Client, name: str, runs_before: int) -> RoutineRunResult:
    handle = client.get_schedule_handle(names.routine_schedule_id(name))
    await handle.trigger()

    async def finished() -> RoutineRunResult | None:
        described = await handle.describe()
        actions = list(described.info.recent_actions)
        if len(actions) <= runs_before or described.info.running_actions:
            return None
        run = client.get_workflow_handle(started_id(actions[-1].action), result_type=RoutineRunResult)
        result: RoutineRunResult = await run.result()
        return result

    for _ in range(300):
        if (result := await finished()) is not None:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("the digest run did not finish")


async def three_conversations(stack: Stack) -> None:
    stack.model.push(
        Say(text="We chose PostgreSQL for the ledger."),
        Say(text="The release is on Friday."),
        Say(text="Alice prefers short answers."),
    )
    for question in ("Which database for the ledger?", "When is the release?", "How should you answer me?"):
        chat = stack.chat()
        await stack.send(chat, question)
        await eventually(partial(stack.replies, chat, tone="answer"), what=f"the answer to {question!r}")


async def test_a_days_digest_of_three_conversations_writes_the_memory_file_and_posts_once_even_when_rerun(
    client: Client, tmp_path: Path
) -> None:
    day = datetime.now(UTC).date().isoformat()
    async with running_stack(client, tmp_path) as stack:
        await three_conversations(stack)
        owner = stack.chat("ou_owner-" + unique("p2p"))
        spec = digest_spec(unique("digest"), owner.chat_id)
        async with routine(client, spec, run_for(stack, spec, owner)):
            stack.model.reset()
            stack.model.push(
                write_memory(day, f"# {day}", "- Ledger: PostgreSQL", "- Release: Friday"),
                Say(
                    text="Digest: the ledger uses PostgreSQL; the release is on Friday; Alice likes it short."
                ),
            )
            first = await run_once(client, spec.name, 0)
            assert first.status == "completed" and first.day == day and first.conversations == 3
            prompt = json.dumps(stack.model.received()[0])
            for said in (
                "Which database for the ledger?",
                "The release is on Friday.",
                "Alice prefers short",
            ):
                assert said in prompt
            memory = stack.workspace / "memory" / f"{day}.md"
            assert memory.read_text().startswith(f"# {day}\n- Ledger: PostgreSQL")
            posts = stack.replies(owner, tone="answer")
            assert [p.text for p in posts] == [
                "Digest: the ledger uses PostgreSQL; the release is on Friday; Alice likes it short."
            ]

            # The same day again: the file is replaced, and the post is not repeated.
            stack.model.reset()
            stack.model.push(
                write_memory(day, f"# {day}", "- Ledger: PostgreSQL", "- Release: Friday", "- Alice: short"),
                Say(
                    text="Digest: the ledger uses PostgreSQL; the release is on Friday; Alice likes it short."
                ),
            )
            second = await run_once(client, spec.name, 1)
            assert second.status == "completed" and second.conversations == 3  # its own thread left out
            assert second.turn_workflow_id == first.turn_workflow_id
            assert [p.name for p in (stack.workspace / "memory").iterdir()] == [f"{day}.md"]
            assert memory.read_text().endswith("- Alice: short\n")
            assert len(stack.replies(owner, tone="answer")) == 1


async def test_a_day_without_conversations_writes_and_posts_nothing(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        quiet = tmp_path / "quiet-workspace"
        quiet.mkdir()
        owner = stack.chat()
        spec = digest_spec(unique("digest"), owner.chat_id)
        async with routine(client, spec, run_for(stack, spec, owner, cwd=quiet)):
            result = await run_once(client, spec.name, 0)
            assert result.status == "nothing_to_digest"
            assert stack.replies(owner) == [] and not (quiet / "memory").exists()
            assert stack.model.received() == []
