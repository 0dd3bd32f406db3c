"""`ally chat`: a terminal conversation through the same workflows a Feishu chat uses.

Lines typed here are handed over exactly like Feishu messages. This process is the chat's worker:
the conversation and turn workflows run here, on this terminal's own task queue, and replies and
approval prompts come back through the terminal channel. Approvals are answered inline with
the same text shortcuts as in Feishu ("y", "n", "always", "1 y 2 n"); questions by option number.
"""

from __future__ import annotations

import getpass
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable

from temporalio.client import Client
from temporalio.service import RPCError

from ally import names
from ally.assistants import all_assistants, default_assistant, find
from ally.channels.console import ConsoleChannel, ConsoleEvent
from ally.chat_client import ChatClient, WaitingRequest, refusal
from ally.config import AllyConfig
from ally.contracts import ApprovalPrompt, Decision, InboundMessage, Person
from ally.inbound import console_chat, new_conversation
from ally.shortcuts import parse_decisions
from workers.chat import chat_worker


class UnknownAssistant(Exception):
    """`ally chat --assistant` named no assistant; the message lists those there are."""


class ConsoleChat:
    def __init__(
        self, client: Client, config: AllyConfig, out: Callable[[str], None], assistant: str | None = None
    ) -> None:
        """`assistant`: the name or id of the assistant to talk to (default: the default one).
        Raises `UnknownAssistant` for one that does not exist."""
        self.client = client
        self.chats = ChatClient(client)
        self.config = config
        self.out = out
        self.chat = console_chat(config.runtime.host)
        chosen = find(config, assistant) if assistant else default_assistant(config)
        if chosen is None:
            known = ", ".join(a.name for a in all_assistants(config))
            raise UnknownAssistant(f"there is no assistant called {assistant!r} (assistants: {known})")
        self.assistant = chosen
        self.conversation_id = names.conversation_id(self.chat.chat_id, chosen.id)
        user = getpass.getuser()
        self.person = Person(id=f"console:{user}", name=user)
        self.prompts_open = 0  # only to number what is printed; decisions go by what the turn says
        # This terminal serves its chat: the conversation and its turns run here, beside the
        # channel that prints them. Closed mid-turn, the chat waits for the next `ally chat`.
        self.worker = chat_worker(client, ConsoleChannel(self._show), self.chat.worker_queue)

    async def run(self, lines: AsyncIterator[str]) -> None:
        self.out(
            f"Talking to {self.assistant.name} ({self.assistant.workspace}) through work-ally. "
            "/help lists commands; Ctrl-D leaves."
        )
        async with self.worker:
            async for line in lines:
                if line.strip():
                    await self.say(line.strip())

    async def say(self, line: str) -> None:
        """One line the person typed: refused in words if it cannot travel, and the chat stays open
        whatever happens to it."""
        if (reason := refusal(line)) is not None:
            self.out(f"ally> {reason}")
            return
        try:
            await self._handle(line)
        except RPCError as error:
            self.out(f"ally> Could not pass that on ({error.message}). Is `ally up` running?")

    async def _handle(self, line: str) -> None:
        waiting = await self.chats.waiting(self.conversation_id)
        if waiting and waiting[0].request.kind == "user_input":
            await self._answer_question(waiting[0], line)
            return
        decisions = parse_decisions(line, len(waiting))
        if decisions:
            for index, word in decisions.items():
                row = waiting[index - 1]
                decision = Decision(key=row.request.key, decision=word, operator=self.person)
                receipt = await self.chats.decide(row.workflow_id, decision)
                if receipt.status != "decided":
                    self.out(f"  ({receipt.status}: {receipt.detail})")
            return
        message = InboundMessage(
            message_id=f"console-{uuid.uuid4()}", chat=self.chat, sender=self.person, text=line
        )
        await self.chats.hand_over(message, new_conversation(self.config, self.chat, self.assistant.id))

    async def _answer_question(self, row: WaitingRequest, line: str) -> None:
        answers: dict[str, list[str]] = {}
        for question in row.request.questions:
            labels = [str(option.get("label", "")) for option in question.get("options") or []]
            picked = labels[int(line) - 1] if line.isdigit() and 0 < int(line) <= len(labels) else line
            answers[str(question.get("id", ""))] = [picked]
        decision = Decision(key=row.request.key, answers=answers, operator=self.person)
        receipt = await self.chats.decide(row.workflow_id, decision)
        if receipt.status != "decided":
            self.out(f"  ({receipt.status}: {receipt.detail})")

    def _show(self, event: ConsoleEvent) -> None:
        if event.reply is not None:
            speaker = "codex> " if event.reply.tone == "answer" else "ally> "
            first, *rest = event.reply.text.splitlines() or [""]
            self.out("\n".join([speaker + first, *(" " * len(speaker) + line for line in rest)]))
        elif event.prompt is not None:
            self.prompts_open += 1
            self.out(describe_request(event.prompt, self.prompts_open))
        elif event.kind == "progress":
            self.out("\n".join(event.lines))
        elif event.outcome is not None:
            self.prompts_open = max(self.prompts_open - 1, 0)
            self.out(f"ally> {event.outcome.decision} (by {event.outcome.decided_by})")


def describe_request(prompt: ApprovalPrompt, number: int) -> str:
    request = prompt.request
    if request.kind == "user_input":
        lines = [f"ally> [{number}] Codex asks:"]
        for question in request.questions:
            lines.append(f"  {question.get('question', '')}")
            for i, option in enumerate(question.get("options") or [], start=1):
                lines.append(f"    {i}. {option.get('label', '')}")
        lines.append("  answer with a number or your own words")
        return "\n".join(lines)
    what = {
        "command": f"run `{request.command}`" + (f" in {request.cwd}" if request.cwd else ""),
        "file_change": "change files",
        "permissions": "get more permissions",
    }.get(request.kind, request.method)
    lines = [f"ally> [{number}] Codex wants to {what}" + (f": {request.reason}" if request.reason else "")]
    if request.diff:
        lines.append(textwrap.indent(request.diff.rstrip(), "  | "))
    if prompt.asked_because:
        lines.append(f"  asked you because: {prompt.asked_because}")
    lines.append("  reply y (approve), always (for this session), n (decline), cancel (stop the turn)")
    return "\n".join(lines)
