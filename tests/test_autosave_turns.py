"""Workspace autosave through a real turn: real dev server, real `codex app-server` with the
scripted model editing a file (apply_patch) in a git workspace, real workers."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.codex import CodexActivities
from ally import names
from ally.assistants import resolve
from ally.chat_client import ChatClient
from ally.config import AllyConfig
from ally.contracts import (
    ChatRef,
    Decision,
    InboundMessage,
    RuntimeLocation,
    ThreadSettings,
    TurnInput,
    TurnOrigin,
    TurnResult,
)
from ally.model_server import ApplyPatch, Hang, Say
from ally.routing import Route, new_conversation
from tests.stack import PERSON, Stack, eventually, running_stack
from workflows.turn import TurnWorkflow

pytestmark = pytest.mark.codex

PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from the turn\n*** End Patch\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def project(workspace: Path) -> None:
    """The person's repository: one commit, and an edit of theirs they have not committed."""
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "config", "user.name", "Alice Owner")
    git(workspace, "config", "user.email", "alice@example.com")
    (workspace / "notes.md").write_text("notes v1\n")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "start")
    (workspace / "notes.md").write_text("notes v1\nhalf-written thought\n")


async def run_turn(
    stack: Stack, text: str, *, autosave: bool, stop_once_written: bool = False
) -> tuple[ChatRef, str, TurnResult]:
    """A turn as the conversation starts it, with the assistant's autosave setting; the person
    approves the file change if Codex asks for it (it does when its sandbox cannot write), and
    with `stop_once_written` sends /stop once the file is there."""
    chat = stack.chat()
    message = InboundMessage(message_id=f"m-{uuid.uuid4().hex[:10]}", chat=chat, sender=PERSON, text=text)
    turn_id = names.turn_workflow_id(chat.chat_id, message.message_id)
    handle = await stack.client.start_workflow(
        TurnWorkflow.run,
        TurnInput(
            message=message,
            origin=TurnOrigin(message_id=message.message_id, sender=PERSON),
            runtime=RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue),
            thread_id=None,
            settings=ThreadSettings(cwd=str(stack.workspace)),
            autosave=autosave,
        ),
        id=turn_id,
        task_queue=stack.worker_queue,
    )
    decided: set[str] = set()

    def over() -> bool:
        return bool(stack.replies(chat)) or (stop_once_written and (stack.workspace / "hello.txt").exists())

    while not over():
        for prompt in stack.approvals(chat):
            if prompt.request.key not in decided:
                decided.add(prompt.request.key)
                decision = Decision(key=prompt.request.key, decision="accept", operator=PERSON)
                await ChatClient(stack.client).decide(turn_id, decision)
        await eventually(lambda: over() or len(stack.approvals(chat)) > len(decided), what="the reply")
    if stop_once_written:
        await handle.signal(TurnWorkflow.stop)
    return chat, turn_id, await handle.result()


async def test_a_turn_that_edits_files_is_committed_locally_naming_the_turn_and_the_person(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        project(stack.workspace)
        start = git(stack.workspace, "rev-parse", "HEAD").strip()
        stack.model.push(ApplyPatch(patch=PATCH), Say(text="I wrote hello.txt."))

        chat, turn_id, result = await run_turn(stack, "Please write hello.txt", autosave=True)

        assert result.status == "completed" and result.autosave is not None
        assert (stack.workspace / "hello.txt").read_text() == "hello from the turn\n"
        assert git(stack.workspace, "rev-parse", "HEAD^").strip() == start
        assert git(stack.workspace, "rev-parse", "HEAD").strip() == result.autosave.commit
        assert git(stack.workspace, "show", "--name-only", "--format=", "HEAD").split() == ["hello.txt"]
        message = git(stack.workspace, "log", "-1", "--format=%B")
        assert message.startswith("work-ally: Please write hello.txt\n")
        assert "Alice (ou_alice)" in message and turn_id in message
        # The person's half-written edit is theirs: still uncommitted, as they left it.
        assert git(stack.workspace, "status", "--porcelain").splitlines() == [" M notes.md"]
        assert (stack.workspace / "notes.md").read_text() == "notes v1\nhalf-written thought\n"
        assert [r.text for r in stack.replies(chat)] == [
            f"I wrote hello.txt.\n\nAutosave: committed 1 file as {result.autosave.commit[:7]}."
        ]
        # No remote was ever involved: there is none, and nothing was pushed anywhere.
        assert git(stack.workspace, "remote").strip() == ""


async def test_with_autosave_off_a_turn_that_edits_files_commits_nothing(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        project(stack.workspace)
        start = git(stack.workspace, "rev-parse", "HEAD").strip()
        stack.model.push(ApplyPatch(patch=PATCH), Say(text="I wrote hello.txt."))

        chat, _, result = await run_turn(stack, "Please write hello.txt", autosave=False)

        assert result.status == "completed" and result.autosave is None
        assert (stack.workspace / "hello.txt").exists()
        assert git(stack.workspace, "rev-parse", "HEAD").strip() == start
        assert sorted(git(stack.workspace, "status", "--porcelain").splitlines()) == [
            " M notes.md",
            "?? hello.txt",
        ]
        assert [r.text for r in stack.replies(chat)] == ["I wrote hello.txt."]


async def test_a_stopped_turn_still_commits_what_it_had_changed(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        project(stack.workspace)
        stack.model.push(ApplyPatch(patch=PATCH), Hang(seconds=60))

        chat, _, result = await run_turn(
            stack, "write hello.txt, then think", autosave=True, stop_once_written=True
        )

        assert result.status == "interrupted" and result.autosave is not None
        assert result.autosave.committed == ["hello.txt"]
        assert "the turn was stopped" in git(stack.workspace, "log", "-1", "--format=%B")
        assert git(stack.workspace, "status", "--porcelain").splitlines() == [" M notes.md"]
        [stopped] = stack.replies(chat)
        assert stopped.text.startswith("Stopped.") and "Autosave: committed 1 file" in stopped.text


@pytest.mark.faults
async def test_a_host_that_cannot_autosave_still_runs_the_turn_and_answers(
    client: Client, tmp_path: Path
) -> None:
    """A runtime host from before autosave (no workspace activities): the turn runs, the reply
    comes, and one line says nothing was committed."""

    def host_without_workspace_activities(stack: Stack) -> list[Worker]:
        codex = CodexActivities(
            stack.runtime, RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue)
        )
        return [
            Worker(client, task_queue=stack.pinned_queue, activities=codex.pinned()),
            Worker(client, task_queue=stack.discovery_queue, activities=[codex.locate_runtime]),
        ]

    async with running_stack(
        client, tmp_path, with_runtime_worker=False, extra_workers=host_without_workspace_activities
    ) as stack:
        project(stack.workspace)
        start = git(stack.workspace, "rev-parse", "HEAD").strip()
        stack.model.push(ApplyPatch(patch=PATCH), Say(text="I wrote hello.txt."))

        chat, _, result = await run_turn(stack, "Please write hello.txt", autosave=True)

        assert result.status == "completed" and (stack.workspace / "hello.txt").exists()
        assert git(stack.workspace, "rev-parse", "HEAD").strip() == start
        assert [r.text for r in stack.replies(chat)] == [
            "I wrote hello.txt.\n\n"
            "Autosave: nothing committed; the workspace could not be read before the turn."
        ]


async def test_an_assistant_with_autosave_commits_each_turn_of_its_chats(
    client: Client, tmp_path: Path
) -> None:
    """The assistant's `autosave = true` reaches its conversations' turns: configuration to commit."""
    async with running_stack(client, tmp_path) as stack:
        project(stack.workspace)
        config = AllyConfig.model_validate(
            {
                "codex": {"sandbox": "danger-full-access", "approval_policy": "never"},
                "assistants": {
                    "repo": {"workspace": str(stack.workspace), "host": stack.host, "autosave": True}
                },
            }
        )
        chat = stack.chat()
        state = new_conversation(config, chat, Route(assistant=resolve(config, "repo")))
        assert state.autosave
        stack.model.push(ApplyPatch(patch=PATCH), Say(text="I wrote hello.txt."))
        await stack.send(chat, "Please write hello.txt", **state.model_dump(exclude={"chat"}))
        reply = await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        assert "Autosave: committed 1 file" in reply[0].text
        committed = git(stack.workspace, "show", "--name-only", "--format=", "HEAD").split()
        assert "hello.txt" in committed and "notes.md" not in committed
