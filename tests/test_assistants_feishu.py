"""Assistants as people meet them in Feishu: groups bound to assistants, topics as conversations of
their own, a private chat switching assistants, renames, ceilings. Real dev server, real Codex with
the scripted model, the fake Feishu with the real lark-oapi dispatcher, and the real `Router` over a
config.toml the test writes (and, for the rename, edits while the gateway runs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lark_oapi as lark
import pytest
import tomlkit
from temporalio.client import Client

from ally import assistant_admin, names
from ally.access import AccessConfig
from ally.bindings import BindingsFile
from ally.chat_client import conversation_exists
from ally.config import load_config
from ally.contracts import ConversationView
from ally.model_server import Hang, RunCommand, Say, ScriptedModelServer
from ally.routing import LiveConfig, Router
from dev.fake_feishu import Message, card_action_event, mention
from tests.feishu_stack import FeishuStack, feishu_stack
from tests.stack import Stack, eventually
from workflows.conversation import ConversationWorkflow

pytestmark = [pytest.mark.feishu, pytest.mark.codex]
T = TypeVar("T")

BOSS = "ou_boss"  # an approver ([access] approvers)
ALICE = "ou_alice"  # allowed to talk, not an approver


def write_config(path: Path, stack: Stack, assistants: dict[str, dict[str, Any]]) -> dict[str, Path]:
    """config.toml with these assistants besides the default one (which every install has), each
    with a workspace of its own under the test's folder; returns every assistant's workspace. All
    live on the stack's host, so their turns reach the stack's runtime."""
    workspaces = {names.DEFAULT_ASSISTANT: stack.workspace}
    document: dict[str, Any] = {
        "codex": {"workspace": str(stack.workspace)},
        "access": {"approvers": [BOSS]},
        "assistants": {names.DEFAULT_ASSISTANT: {"host": stack.host}},
    }
    for key, table in assistants.items():
        workspace = workspaces[key] = path.parent / f"workspace-{key}"
        workspace.mkdir(parents=True, exist_ok=True)
        document["assistants"][key] = {"workspace": str(workspace), "host": stack.host, **table}
    path.write_text(tomlkit.dumps(document), encoding="utf-8")
    return workspaces


@dataclass
class Assistants:
    """A Feishu stack whose gateway routes with a real Router over `config_path`."""

    fs: FeishuStack
    config_path: Path
    bindings: BindingsFile
    workspaces: dict[str, Path]  # assistant id -> its workspace

    @property
    def stack(self) -> Stack:
        return self.fs.stack

    @property
    def model(self) -> ScriptedModelServer:
        return self.fs.stack.model

    def reconfigure(self, assistants: dict[str, dict[str, Any]]) -> None:
        """Edit config.toml while the gateway runs (it reads it again when it changes)."""
        self.workspaces = write_config(self.config_path, self.stack, assistants)

    async def ask(
        self, chat_id: str, text: str, *, sender: str = ALICE, group: bool = True, **fields: Any
    ) -> str:
        """A person's message (in a group, addressed to the bot); returns its message id."""
        if group:
            bot = mention(self.fs.fake.bot_open_id, self.fs.fake.bot_name)
            fields |= {"chat_type": "group", "mentions": [bot]}
            text = f"@_user_1 {text}"
        envelope = await self.fs.say(chat_id, text, sender_open_id=sender, **fields)
        message_id: str = envelope["event"]["message"]["message_id"]
        return message_id

    async def answer(self, message_id: str, count: int = 1) -> str:
        """What the person reads in the `count`-th reply to their message."""
        replies = await self.fs.wait_for_replies(message_id, count=count)
        return shown(replies[count - 1])

    async def approve(self, card: Message, chat_id: str, *, by: str = BOSS) -> None:
        approve = next(v for v in button_values(card.content) if v.get("decision") == "accept")
        click = card_action_event(by, approve, card.message_id, chat_id, app_id=self.fs.fake.app_id)
        answer = json.loads(lark.JSON.marshal(await self.fs.deliver(click)))
        assert answer["toast"]["type"] == "success", answer

    async def view(
        self, chat_id: str, assistant: str = names.DEFAULT_ASSISTANT, topic: str = ""
    ) -> ConversationView:
        handle = self.stack.client.get_workflow_handle_for(
            ConversationWorkflow.run, names.conversation_id(chat_id, assistant, topic)
        )
        return await handle.query(ConversationWorkflow.view)

    async def thread_of(self, chat_id: str, assistant: str = names.DEFAULT_ASSISTANT, topic: str = "") -> str:
        """The conversation's Codex thread, once its turn is over."""

        async def settled() -> ConversationView | None:
            view = await self.view(chat_id, assistant, topic)
            return view if view.thread_id is not None and view.running is None else None

        view = await eventually_async(settled, what=f"the turn in {chat_id} ({assistant}) to end")
        assert view.thread_id is not None
        return view.thread_id


@contextlib.asynccontextmanager
async def assistants_stack(
    client: Client, tmp_path: Path, app_id: str, assistants: dict[str, dict[str, Any]]
) -> AsyncIterator[Assistants]:
    config_path = tmp_path / "config.toml"
    bindings = BindingsFile(tmp_path / "bindings.json")
    workspaces: dict[str, Path] = {}

    def router(stack: Stack) -> Router:
        # The stack's host and workspace exist only now, so the configuration is written here.
        workspaces.update(write_config(config_path, stack, assistants))
        live = LiveConfig(load_config(config_path, environ={}), path=config_path)
        return Router(live, bindings, has_default_conversation=conversation_exists(client))

    access = AccessConfig(approvers=[BOSS])
    async with feishu_stack(client, tmp_path, app_id, access=access, conversations=router) as fs:
        for open_id, name in ((BOSS, "Boss"), (ALICE, "Alice")):
            fs.fake.add_user(open_id, name)
        yield Assistants(fs=fs, config_path=config_path, bindings=bindings, workspaces=workspaces)


async def eventually_async(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 60.0, what: str = "condition"
) -> T:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


def shown(message: Message) -> str:
    """Every text a card shows, in order."""
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("content"), str):
                texts.append(node["content"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.content)
    return "\n".join(texts)


def button_values(card: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(card, dict):
        if card.get("tag") == "button":
            found += [b["value"] for b in card.get("behaviors", []) if b.get("type") == "callback"]
        for value in card.values():
            found += button_values(value)
    elif isinstance(card, list):
        for item in card:
            found += button_values(item)
    return found


def sent_to_model(requests: list[dict[str, Any]]) -> str:
    return json.dumps(requests, ensure_ascii=False)


def command_outputs(requests: list[dict[str, Any]]) -> list[str]:
    """What Codex gave the model back as the output of the commands it ran."""
    return [
        str(item.get("output"))
        for request in requests
        for item in request.get("input") or []
        if item.get("type") == "function_call_output"
    ]


async def test_two_groups_bound_to_two_assistants_run_in_their_own_workspaces_with_their_own_personas(
    client: Client, tmp_path: Path
) -> None:
    assistants: dict[str, dict[str, Any]] = {
        "docs": {"name": "Docs", "chats": ["oc_docs"]},
        "ops": {"name": "Ops"},
    }
    async with assistants_stack(client, tmp_path, "cli_assistants_two_groups", assistants) as a:
        personas = {
            "docs": "You are Docs: persona-7c1 writes manuals.",
            "ops": "You are Ops: persona-4d9 keeps servers up.",
        }
        for key, persona in personas.items():
            (a.workspaces[key] / "AGENTS.md").write_text(persona + "\n", encoding="utf-8")

        # oc_ops is bound by /bind, which only an approver may do.
        refused = await a.ask("oc_ops", "/bind Ops", sender=ALICE)
        assert "Only an approver may bind" in await a.answer(refused)
        assert a.bindings.read().groups == {}
        bound = await a.ask("oc_ops", "/bind Ops", sender=BOSS)
        assert "This group now talks to Ops" in await a.answer(bound)
        assert a.bindings.read().groups == {"oc_ops": "ops"}

        for chat, key in (("oc_docs", "docs"), ("oc_ops", "ops")):
            before = len(a.model.received())
            a.model.push(RunCommand(cmd="pwd", justification="see where I am"), Say(text=f"{key} is done."))
            asked = await a.ask(chat, "where do you work?")
            card = (await a.fs.wait_for_replies(asked))[0]
            assert "pwd" in shown(card)
            await a.approve(card, chat)
            assert f"{key} is done." in await a.answer(asked, count=2)
            requests = a.model.received()[before:]
            (output,) = command_outputs(requests)
            assert str(a.workspaces[key]) in output  # the command ran in the assistant's workspace
            other = next(k for k in personas if k != key)
            assert personas[key] in sent_to_model(requests[:1])
            assert personas[other] not in sent_to_model(requests)
            assert str(a.workspaces[other]) not in sent_to_model(requests)
            await a.thread_of(chat, key)  # its own conversation: `chat:<chat>@<assistant>`
        assert not (a.workspaces["default"] / "AGENTS.md").exists()


async def test_in_a_topic_group_each_topic_has_its_own_thread_its_replies_and_its_own_stop(
    client: Client, tmp_path: Path
) -> None:
    assistants: dict[str, dict[str, Any]] = {"research": {"name": "Research", "chats": ["oc_topics"]}}
    async with assistants_stack(client, tmp_path, "cli_assistants_topics", assistants) as a:
        a.fs.fake.add_chat("oc_topics", "Research topics", mode="topic")

        # Two top-level messages: two topics, each answered inside itself.
        topics: dict[str, str] = {}  # name -> the topic's first message
        for name in ("alpha", "beta"):
            a.model.push(Say(text=f"Started {name}."))
            first = await a.ask("oc_topics", f"start {name}")
            assert f"Started {name}." in await a.answer(first)
            topics[name] = first
        threads = {name: await a.thread_of("oc_topics", "research", first) for name, first in topics.items()}
        assert threads["alpha"] != threads["beta"]

        def in_topic(name: str) -> dict[str, Any]:
            first = a.fs.fake.message(topics[name])
            assert first.thread_id  # the bot's reply in the topic gave it one
            return {"root_id": first.message_id, "parent_id": first.message_id, "thread_id": first.thread_id}

        # A long turn in alpha; a turn in beta that waits for an approval.
        a.model.push(Hang(seconds=120, then=Say(text="alpha never gets here")))
        slow = await a.ask("oc_topics", "think hard about alpha", **in_topic("alpha"))
        await eventually(
            lambda: "think hard about alpha" in sent_to_model(a.model.received()), what="alpha's turn"
        )
        a.model.push(RunCommand(cmd="echo beta-ran"), Say(text="beta is done."))
        waits = await a.ask("oc_topics", "run the beta check", **in_topic("beta"))
        (card,) = await a.fs.wait_for_replies(waits)
        assert "beta-ran" in shown(card)

        # /stop inside alpha stops alpha only.
        stop = await a.ask("oc_topics", "/stop", **in_topic("alpha"))
        assert "Stopping" in await a.answer(stop)
        assert "Stopped" in await a.answer(slow)
        await a.thread_of("oc_topics", "research", topics["alpha"])  # alpha's turn is over
        beta = await a.view("oc_topics", "research", topics["beta"])
        assert beta.running == "run the beta check"  # beta still waits for its approval

        await a.approve(card, "oc_topics")
        assert "beta is done." in await a.answer(waits, count=2)
        assert any("beta-ran" in output for output in command_outputs(a.model.received()))
        assert not any("alpha never gets here" in shown(m) for m in a.fs.fake.messages)
        assert await a.thread_of("oc_topics", "research", topics["beta"]) == threads["beta"]
        assert await a.thread_of("oc_topics", "research", topics["alpha"]) == threads["alpha"]

        # Every reply sits in the topic of the message it answers.
        thread_of_topic = {name: a.fs.fake.message(first).thread_id for name, first in topics.items()}
        asked_in = {
            topics["alpha"]: "alpha",
            slow: "alpha",
            stop: "alpha",
            topics["beta"]: "beta",
            waits: "beta",
        }
        replies = [m for m in a.fs.fake.messages if m.chat_id == "oc_topics"]
        assert replies and {m.parent_id for m in replies} == set(asked_in)
        for reply in replies:
            assert reply.reply_in_thread and reply.thread_id == thread_of_topic[asked_in[reply.parent_id]], (
                reply
            )


async def test_an_unbound_group_gets_a_how_to_and_a_group_talking_before_the_upgrade_keeps_its_thread(
    client: Client, tmp_path: Path
) -> None:
    async with assistants_stack(client, tmp_path, "cli_assistants_upgrade", {}) as a:
        # Before: one assistant, so every group talks to it.
        a.model.push(Say(text="Noted: the release is on Friday."))
        before = await a.ask("oc_old", "remember: the release is on Friday")
        assert "Noted" in await a.answer(before)
        thread = await a.thread_of("oc_old")

        # The owner adds a second assistant while the gateway runs.
        a.reconfigure({"ops": {"name": "Ops"}})
        requests_before = len(a.model.received())
        new = await a.ask("oc_new", "hello, who answers here?")
        how_to = await a.answer(new)
        assert "not bound to an assistant yet" in how_to and "/bind NAME" in how_to
        assert "default" in how_to and "Ops" in how_to
        assert len(a.model.received()) == requests_before  # no guess: nothing went to Codex
        assert not await conversation_exists(client)(names.conversation_id("oc_new"))

        a.model.push(Say(text="Friday, as you said."))
        after = await a.ask("oc_old", "when is the release?")
        assert "Friday, as you said." in await a.answer(after)
        assert await a.thread_of("oc_old") == thread  # the same conversation, the same Codex thread
        assert "remember: the release is on Friday" in sent_to_model(a.model.received()[-1:])
        assert not await conversation_exists(client)(names.conversation_id("oc_old", "ops"))


async def test_a_private_chat_switches_assistants_and_each_keeps_its_own_thread(
    client: Client, tmp_path: Path
) -> None:
    async with assistants_stack(client, tmp_path, "cli_assistants_private", {"ops": {"name": "Ops"}}) as a:
        dm = "oc_dm_alice"
        listing = await a.answer(await a.ask(dm, "/assistant", group=False))
        assert "You are talking to default" in listing
        assert "Ops" in listing and str(a.workspaces["ops"]) in listing

        a.model.push(Say(text="default here."))
        assert "default here." in await a.answer(await a.ask(dm, "note one: apples", group=False))
        default_thread = await a.thread_of(dm)

        assert "now talking to Ops" in await a.answer(await a.ask(dm, "/assistant ops", group=False))
        a.model.push(Say(text="Ops here."))
        assert "Ops here." in await a.answer(await a.ask(dm, "note two: pears", group=False))
        ops_thread = await a.thread_of(dm, "ops")
        assert ops_thread != default_thread
        assert "apples" not in sent_to_model(a.model.received()[-1:])  # a thread of its own

        nosuch = await a.answer(await a.ask(dm, "/assistant nosuch", group=False))
        assert "There is no assistant called 'nosuch'" in nosuch and "Ops" in nosuch

        assert "now talking to default" in await a.answer(await a.ask(dm, "/assistant default", group=False))
        a.model.push(Say(text="Back to default."))
        assert "Back to default." in await a.answer(await a.ask(dm, "what was note one?", group=False))
        assert await a.thread_of(dm) == default_thread  # switching back resumes the first thread
        resumed = sent_to_model(a.model.received()[-1:])
        assert "apples" in resumed and "pears" not in resumed
        assert await a.thread_of(dm, "ops") == ops_thread


async def test_a_renamed_assistant_keeps_its_chats_and_threads_and_is_not_removed_while_chats_are_bound(
    client: Client, tmp_path: Path
) -> None:
    assistants: dict[str, dict[str, Any]] = {"ops": {"name": "Ops", "chats": ["oc_infra"]}}
    async with assistants_stack(client, tmp_path, "cli_assistants_rename", assistants) as a:
        assert "now talks to Ops" in await a.answer(await a.ask("oc_oncall", "/bind Ops", sender=BOSS))
        assert "now talking to Ops" in await a.answer(
            await a.ask("oc_dm_alice", "/assistant Ops", group=False)
        )
        chats = {"oc_infra": True, "oc_oncall": True, "oc_dm_alice": False}  # chat -> is a group
        threads: dict[str, str] = {}
        for chat, group in chats.items():
            a.model.push(Say(text=f"first in {chat}"))
            assert f"first in {chat}" in await a.answer(await a.ask(chat, f"hello from {chat}", group=group))
            threads[chat] = await a.thread_of(chat, "ops")

        renamed = assistant_admin.rename(a.config_path, "Ops", "Platform")
        assert (renamed.id, renamed.name) == ("ops", "Platform")

        for chat, group in chats.items():
            a.model.push(Say(text=f"again in {chat}"))
            assert f"again in {chat}" in await a.answer(
                await a.ask(chat, f"still there? ({chat})", group=group)
            )
            assert await a.thread_of(chat, "ops") == threads[chat]
            assert f"hello from {chat}" in sent_to_model(a.model.received()[-1:])  # the thread went on
        status = await a.answer(await a.ask("oc_oncall", "/status"))
        assert "Assistant: Platform" in status and threads["oc_oncall"] in status
        assert "This group talks to Platform" in await a.answer(await a.ask("oc_infra", "/assistant"))
        assert "You are talking to Platform" in await a.answer(
            await a.ask("oc_dm_alice", "/assistant", group=False)
        )

        with pytest.raises(assistant_admin.AdminError) as refused:
            assistant_admin.remove(a.config_path, a.bindings, "Platform")
        for chat in chats:
            assert chat in str(refused.value)
        assert "--force" in str(refused.value)
        assert load_config(a.config_path, environ={}).assistants["ops"].name == "Platform"  # still there
        assert a.bindings.read().chats_of("ops") == ["oc_dm_alice", "oc_oncall"]


async def test_a_chat_cannot_raise_its_autonomy_above_its_assistants_ceiling(
    client: Client, tmp_path: Path
) -> None:
    assistants: dict[str, dict[str, Any]] = {
        "careful": {"name": "Careful", "chats": ["oc_careful"], "policy": {"ceiling": "ask"}}
    }
    async with assistants_stack(client, tmp_path, "cli_assistants_ceiling", assistants) as a:
        for wanted in ("trusted", "read_only"):
            refused = await a.answer(await a.ask("oc_careful", f"/auto {wanted}", sender=BOSS))
            assert "Careful allows at most /auto ask here" in refused and "unchanged" in refused
        assert "Autonomy: ask." in await a.answer(await a.ask("oc_careful", "/auto ask", sender=BOSS))
        assert "Autonomy: ask (at most ask)." in await a.answer(await a.ask("oc_careful", "/status"))

        # The same words in a group of an assistant without that ceiling are accepted.
        assert "now talks to default" in await a.answer(await a.ask("oc_free", "/bind default", sender=BOSS))
        assert "Autonomy: trusted." in await a.answer(await a.ask("oc_free", "/auto trusted", sender=BOSS))
        assert "Autonomy: trusted (at most trusted)." in await a.answer(await a.ask("oc_free", "/status"))
