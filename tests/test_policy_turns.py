"""The approval policy in real turns: rules and autonomy decide before a person is asked.

Real dev server, real Codex, scripted model: the policy sees what Codex really sends (commands come
wrapped as `/bin/bash -lc '…'`), and its decisions reach Codex like a person's would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client

from ally.chat_client import ChatClient
from ally.console_chat import describe_request
from ally.contracts import Decision, Person, PolicyConfig, Rule
from ally.model_server import RunCommand, Say
from ally.turns_report import decision_history
from tests.stack import PERSON, eventually, running_stack
from workflows.conversation import ConversationWorkflow

pytestmark = pytest.mark.codex


async def test_an_allow_rule_runs_the_command_without_asking_and_status_shows_why(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "allowed.txt"
        stack.model.push(RunCommand(cmd=f"touch {target}"), Say(text="Made it."))
        chat = stack.chat()
        policy = PolicyConfig(rules=[Rule(action="allow", command_prefix="touch")])
        message = await stack.send(chat, "write it", policy=policy)
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        await stack.turn_handle(chat, message).result()
        assert target.exists()
        conversation = stack.conversation_handle(chat)
        for _ in range(200):  # the conversation records the finished turn a moment after it ends
            if (await conversation.query(ConversationWorkflow.view)).turns == 1:
                break
            await asyncio.sleep(0.05)
        assert stack.approvals(chat) == []  # nobody was asked

        await stack.send(chat, "/status")
        status = await eventually(lambda: stack.replies(chat, tone="notice"), what="the status")
        assert "Decided automatically:" in status[-1].text
        assert "accept" in status[-1].text and 'allow rule #1 (command_prefix "touch")' in status[-1].text


async def test_a_denied_command_is_never_accepted_even_when_trusted_and_the_chat_is_told(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        victim = stack.workspace / "keep.txt"
        victim.write_text("precious")
        stack.model.push(RunCommand(cmd=f"rm -f {victim}"), Say(text="Could not delete it."))
        chat = stack.chat()
        policy = PolicyConfig(
            mode="trusted",
            rules=[Rule(action="allow", command_prefix="rm"), Rule(action="deny", command_prefix="rm")],
        )
        await stack.send(chat, "delete it", policy=policy)
        answer = await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        assert answer[0].text == "Could not delete it."
        assert victim.read_text() == "precious"
        notices = stack.replies(chat, tone="notice")
        assert any(n.text.startswith("Declined by policy:") and "deny rule #2" in n.text for n in notices)
        # Codex was told "declined", as if a person had said no (the model saw the rejection).
        outputs = [
            i
            for body in stack.model.received()
            for i in body["input"]
            if i.get("type") == "function_call_output"
        ]
        assert outputs and "rejected" in str(outputs[-1]).lower()


async def test_read_only_mode_runs_a_listing_but_asks_before_writing(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "written.txt"
        stack.model.push(
            RunCommand(cmd=f"ls {stack.workspace}"),
            RunCommand(cmd=f"touch {target}"),
            Say(text="done"),
        )
        chat = stack.chat()
        await stack.send(chat, "look, then write", policy=PolicyConfig(mode="read_only"))
        asked = await eventually(lambda: stack.approvals(chat), what="a question about the write")
        assert [a.request.kind for a in asked] == ["command"] and "touch" in (asked[0].request.command or "")
        await asyncio.sleep(0.5)
        assert len(stack.approvals(chat)) == 1  # the listing never reached a person
        assert not target.exists()


async def test_an_unanswered_approval_is_reminded_then_declined_and_the_audit_trail_says_so(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "late.txt"
        stack.model.push(RunCommand(cmd=f"touch {target}"), Say(text="Went on without it."))
        chat = stack.chat()
        quick = PolicyConfig(reminder_after_minutes=0.02, decline_after_minutes=0.05)  # 1.2 s, 3 s
        message = await stack.send(chat, "touch it", policy=quick)
        await eventually(lambda: stack.approvals(chat), what="the approval card")

        answer = await eventually(lambda: stack.replies(chat, tone="answer"), within=60, what="the answer")
        assert answer[0].text == "Went on without it."
        assert not target.exists()
        notices = [n.text for n in stack.replies(chat, tone="notice")]
        assert notices[0].startswith("Still waiting for a decision:") and "touch" in notices[0]
        assert notices[1].startswith("Declined") and "nobody decided within 3 s" in notices[1]
        card = [e.outcome for e in stack.events if e.outcome is not None]
        assert [(c.decision, c.decided_by) for c in card] == [("decline", "expiry (no decision in time)")]

        await stack.turn_handle(chat, message).result()
        trail = [row for row in await decision_history(client, days=1) if row.chat == chat.chat_id]
        assert [(row.record.decision, row.record.decided_by) for row in trail] == [
            ("decline", "expiry (no decision in time)")
        ]


async def test_a_changed_policy_reaches_a_chat_that_already_runs(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        target = stack.workspace / "later.txt"
        stack.model.push(Say(text="hello"), RunCommand(cmd=f"touch {target}"), Say(text="Made it."))
        chat = stack.chat()
        await stack.send(chat, "hi")  # the conversation starts with the default policy: ask
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the first answer")

        edited = PolicyConfig(rules=[Rule(action="allow", command_prefix="touch")])  # config.toml edited
        await stack.send(chat, "make the file", policy=edited)
        await eventually(lambda: len(stack.replies(chat, tone="answer")) == 2, what="the second answer")
        assert target.exists() and stack.approvals(chat) == []


async def test_in_a_group_only_an_approver_may_raise_autonomy_and_anyone_may_lower_it(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat(chat_type="group")
        carol, bob = Person(id="ou_carol", name="Carol"), Person(id="ou_bob", name="Bob")

        async def said_after(text: str, sender: Person) -> str:
            before = len(stack.replies(chat, tone="notice"))
            await stack.send(chat, text, sender=sender, approvers=[bob.id])
            notices = await eventually(
                lambda: stack.replies(chat, tone="notice")[before:], what=f"the answer to {text}"
            )
            return notices[0].text

        assert "Only an approver" in await said_after("/auto trusted", carol)
        assert "Autonomy: ask (at most trusted)." in await said_after("/status", carol)
        assert await said_after("/auto trusted", bob) == "Autonomy: trusted. Deny rules still apply."
        assert await said_after("/auto ask", carol) == "Autonomy: ask. Deny rules still apply."
        assert "Autonomy: ask (at most trusted)." in await said_after("/status", bob)


async def test_in_trusted_mode_work_inside_runs_and_a_network_command_reaches_a_person_with_the_reason(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        made = stack.workspace / "made.txt"
        stack.model.push(
            RunCommand(cmd=f"touch {made}"),
            RunCommand(cmd="curl -s http://127.0.0.1:9/"),
            Say(text="Made it; did not fetch."),
        )
        chat = stack.chat()
        message = await stack.send(chat, "make the file, then fetch", policy=PolicyConfig(mode="trusted"))
        asked = await eventually(lambda: stack.approvals(chat), what="the question about curl")
        assert made.exists()  # the write inside the workspace ran without asking
        assert len(asked) == 1 and "curl" in (asked[0].request.command or "")
        assert asked[0].asked_because == "network access (curl)"
        assert "asked you because: network access (curl)" in describe_request(asked[0], 1)

        no = Decision(key=asked[0].request.key, decision="decline", operator=PERSON)
        assert (await ChatClient(client).decide(asked[0].turn_workflow_id, no)).status == "decided"
        answer = await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
        assert answer[0].text == "Made it; did not fetch."
        result = await stack.turn_handle(chat, message).result()
        assert [(d.decision, d.by_policy) for d in result.decisions] == [("accept", True), ("decline", False)]
        assert result.decisions[0].decided_by == "policy: mode trusted: every effect inside the workspace"

        conversation = stack.conversation_handle(chat)
        for _ in range(200):  # the conversation records the finished turn a moment after it ends
            if (await conversation.query(ConversationWorkflow.view)).turns == 1:
                break
            await asyncio.sleep(0.05)
        await stack.send(chat, "/status")
        status = await eventually(lambda: stack.replies(chat, tone="notice"), what="the status")
        assert "Decided automatically:" in status[-1].text
        assert "policy: mode trusted: every effect inside the workspace" in status[-1].text
