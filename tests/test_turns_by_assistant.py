"""`ally turns --assistant NAME`: the running turns of one assistant, found by the AllyAssistant search
attribute, with turns of conversations started before assistants existed counted as the default's."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from ally import names
from ally.assistants import resolve
from ally.chat_client import ChatClient
from ally.config import AllyConfig, AssistantConfig
from ally.contracts import ChatConfig, ChatRef, Inbound, InboundMessage
from ally.model_server import RunCommand
from ally.routing import Route, new_conversation
from ally.turns_report import TurnRow, running_turns
from tests.stack import PERSON, Stack, eventually, running_stack
from tests.test_cli import ally, cli_env, one_json_document
from workflows.conversation import ConversationWorkflow

pytestmark = pytest.mark.codex


async def start_as_before_assistants(stack: Stack, chat: ChatRef, text: str) -> InboundMessage:
    """A conversation started the way the gateway started one before this version: no AllyAssistant."""
    message = InboundMessage(message_id=f"m-{uuid.uuid4().hex[:10]}", chat=chat, sender=PERSON, text=text)
    state = stack.conversation(chat)
    await stack.client.start_workflow(
        ConversationWorkflow.run,
        state,
        id=names.conversation_id(chat.chat_id),
        task_queue=chat.worker_queue,
        start_signal=ConversationWorkflow.inbound.__name__,
        start_signal_args=[Inbound(message=message, config=ChatConfig(settings=state.settings))],
        search_attributes=TypedSearchAttributes([SearchAttributePair(names.CHAT, chat.chat_id)]),
    )
    stack.chats.add(chat.chat_id)
    return message


async def test_ally_turns_for_one_assistant_lists_only_its_running_turns_and_old_turns_count_as_the_default(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        config = AllyConfig(assistants={"work": AssistantConfig(name="Work", workspace=stack.workspace)})
        stack.model.push(*(RunCommand(cmd=f"echo {n}") for n in range(3)))  # each waits for approval
        work_chat, default_chat, old_chat = stack.chat(), stack.chat(), stack.chat()
        work_state = new_conversation(config, work_chat, Route(assistant=resolve(config, "work")))
        work_state = work_state.model_copy(update={"discovery_queue": stack.discovery_queue})  # the test's
        work_message = InboundMessage(message_id="m-work", chat=work_chat, sender=PERSON, text="for work")
        await ChatClient(client).hand_over(work_message, work_state)
        default_message = await stack.send(default_chat, "for the default")
        old_message = await start_as_before_assistants(stack, old_chat, "from before assistants")
        ours = {
            names.turn_workflow_id(m.chat.chat_id, m.message_id): m.chat.chat_id
            for m in (work_message, default_message, old_message)
        }
        await eventually(
            lambda: all(stack.approvals(chat) for chat in (work_chat, default_chat, old_chat)),
            what="an approval in each chat",
        )

        async def listed(assistant: str | None) -> list[TurnRow]:
            rows = await running_turns(client, ui=None, assistant=assistant)
            return [row for row in rows if row.workflow_id in ours]

        deadline = asyncio.get_running_loop().time() + 30
        while len(await listed(None)) < 3:  # visibility is eventually consistent
            assert asyncio.get_running_loop().time() < deadline, await listed(None)
            await asyncio.sleep(0.2)
        assert {(row.chat, row.assistant) for row in await listed(None)} == {
            (work_chat.chat_id, "work"),
            (default_chat.chat_id, "default"),
            (old_chat.chat_id, "default"),  # no attribute: the default assistant's
        }
        assert [row.chat for row in await listed("work")] == [work_chat.chat_id]
        assert {row.chat for row in await listed("default")} == {default_chat.chat_id, old_chat.chat_id}

        # The command takes the assistant's name (or id), and shows it in each row.
        config_file = tmp_path / "cli-home" / "config.toml"
        config_file.parent.mkdir()
        config_file.write_text(f'[assistants.work]\nname = "Work"\nworkspace = "{stack.workspace}"\n')
        env = cli_env(
            tmp_path / "cli-home", WORK_ALLY_TEMPORAL__ADDRESS=client.service_client.config.target_host
        )
        as_json = one_json_document(await ally(env, "turns", "--assistant", "work", "--json"))
        assert [(row["chat"], row["assistant"]) for row in as_json if row["workflow_id"] in ours] == [
            (work_chat.chat_id, "work")
        ]
        shown = await ally(env, "turns", "--assistant", "Work")
        mine = [line for line in shown.stdout.splitlines() if any(turn in line for turn in ours)]
        assert len(mine) == 1 and f"Work in chat {work_chat.chat_id}" in mine[0], shown.stdout
        unknown = await ally(env, "turns", "--assistant", "nobody")
        assert unknown.returncode == 2
        assert unknown.stderr.strip() == "There is no assistant called 'nobody' (assistants: default, Work)."

        await client.get_workflow_handle(names.conversation_id(work_chat.chat_id, "work")).terminate(
            "test over"
        )
