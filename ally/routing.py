"""Which assistant, and which of its conversations, a chat's message goes to; `/assistant` and `/bind`.

- A private chat talks to the person's default assistant until `/assistant NAME` switches it; each
  assistant keeps its own conversation (and Codex thread) in that chat, so switching back resumes.
- A group talks to the assistant it is bound to: in config.toml (`[assistants.<id>] chats`) or with
  `/bind NAME` by an approver. An unbound group is told how to bind it, not given a guess, with two
  exceptions that keep what exists working: when there is only one assistant, it is that one; and a
  group that was already talking to the default assistant (its conversation exists) stays with it.
- In a topic group each topic is a conversation of its own (`Route.topic`, given by the channel),
  so several lines of work run side by side in one group.

Channel-neutral: the channel says which chat and topic a message is in, and sends the answer.
config.toml is read again when it changes, so `ally assistants add | rename` and edits reach the
running gateway without a restart.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import BaseModel

from ally import names
from ally.alerts import owner_of
from ally.assistants import Assistant, all_assistants, bound_groups, chat_policy, find, resolve
from ally.bindings import BindingsFile
from ally.config import AllyConfig, ConfigError, config_path, load_config
from ally.contracts import ChatConfig, ChatRef, ConversationState, InboundMessage, LongWork

log = logging.getLogger(__name__)

ROUTING_COMMANDS = ("/assistant", "/bind")


class Route(BaseModel):
    assistant: Assistant
    topic: str = ""  # the topic's first message id in a topic group; "" = the whole chat


class NotRouted(BaseModel):
    """The message cannot go to an assistant; `text` tells the person why and what to do."""

    text: str


class LiveConfig:
    """config.toml as it is now: read again whenever the file changes. A change that does not load
    (a typo while editing) keeps the last good configuration, and says so in the log once.

    A change is told by the file's bytes, not its mtime and size: two writes within one tick of the
    file system's coarse clock get the same mtime, and a rename to a name as long as the old one
    keeps the size (`ally assistants rename` right after another edit went unseen). The file is a
    few kilobytes, read a few times per message."""

    def __init__(self, config: AllyConfig, path: Path | None = None) -> None:
        self.path = path or config_path()
        self._config = config
        self._stamp = self._digest()

    def _digest(self) -> bytes | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return None

    def current(self) -> AllyConfig:
        stamp = self._digest()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._config = load_config(self.path)
                log.info("config.toml changed: reloaded")
            except ConfigError as error:
                log.warning("config.toml changed but does not load; keeping the previous one: %s", error)
        return self._config


class Router:
    def __init__(
        self,
        config: LiveConfig,
        bindings: BindingsFile,
        *,
        has_default_conversation: Callable[[str], Awaitable[bool]],
    ) -> None:
        self.config = config
        self.bindings = bindings
        self._has_default_conversation = has_default_conversation
        self._talking_before: set[str] = set()  # groups known to have a default conversation

    async def route(self, chat: ChatRef, topic: str = "") -> Route | NotRouted:
        return await self._route(self.config.current(), chat, topic)

    async def _route(self, config: AllyConfig, chat: ChatRef, topic: str) -> Route | NotRouted:
        assistants = all_assistants(config)
        bindings = self.bindings.read()
        if chat.chat_type != "group":
            chosen = bindings.private.get(chat.chat_id)
            if chosen is not None and (assistant := _by_id(assistants, chosen)) is not None:
                return Route(assistant=assistant)
            return Route(assistant=resolve(config, config.chats.default_assistant))
        bound = bound_groups(config).get(chat.chat_id) or bindings.groups.get(chat.chat_id)
        if bound is not None and (assistant := _by_id(assistants, bound)) is not None:
            return Route(assistant=assistant, topic=topic)
        if len(assistants) == 1:
            return Route(assistant=assistants[0], topic=topic)
        if await self._talked_before(chat.chat_id):
            return Route(assistant=resolve(config, names.DEFAULT_ASSISTANT), topic=topic)
        return NotRouted(text=self._how_to_bind(assistants, bound))

    async def start_state(self, message: InboundMessage, topic: str) -> ConversationState | NotRouted:
        """The state the message's conversation starts from (if it is new), or why it goes nowhere."""
        config = self.config.current()  # once: the route and the state agree on one configuration
        route = await self._route(config, message.chat, topic)
        if isinstance(route, NotRouted):
            return route
        if not may_use(route.assistant, message):
            return NotRouted(text=f"Sorry, {route.assistant.name} does not take requests from you.")
        return new_conversation(config, message.chat, route)

    async def command(self, message: InboundMessage) -> str | None:
        """The answer to `/assistant` or `/bind` (which change where messages go, so the gateway
        answers them, not a conversation); None for any other message."""
        word, _, rest = message.text.strip().partition(" ")
        word, rest = word.lower(), rest.strip()
        if word not in ROUTING_COMMANDS:
            return None
        config = self.config.current()
        chat = message.chat
        if word == "/bind":
            if chat.chat_type != "group":
                return "/bind is for groups. Here, /assistant NAME switches the assistant you talk to."
            return await self._bind(config, message, rest)
        if chat.chat_type == "group":
            current = await self.route(chat)
            here = f"This group talks to {current.assistant.name}." if isinstance(current, Route) else ""
            if rest:
                return f"{here} In a group, an approver binds the assistant: /bind NAME.".strip()
            lines = [here, self._listing(config), "An approver binds this group: /bind NAME"]
            return "\n".join(line for line in lines if line)
        if not rest:
            current = await self.route(chat)
            now = f"You are talking to {current.assistant.name}." if isinstance(current, Route) else ""
            return "\n".join([now, self._listing(config), "Switch with /assistant NAME."])
        wanted = find(config, rest)
        if wanted is None:
            return f"There is no assistant called {rest!r}.\n{self._listing(config)}"
        self.bindings.bind("private", chat.chat_id, wanted.id)
        return (
            f"You are now talking to {wanted.name}. Each assistant keeps its own thread in this chat; "
            "/assistant switches back."
        )

    async def _bind(self, config: AllyConfig, message: InboundMessage, rest: str) -> str:
        if message.sender.id not in config.access.approvers and message.sender.id != names.LOCAL_OPERATOR:
            return (
                "Only an approver may bind this group to an assistant ([access] approvers in config.toml); "
                "the owner can also run `ally assistants bind NAME CHAT_ID`."
            )
        if not rest:
            return f"Which assistant? /bind NAME\n{self._listing(config)}"
        wanted = find(config, rest)
        if wanted is None:
            return f"There is no assistant called {rest!r}.\n{self._listing(config)}"
        in_config = bound_groups(config).get(message.chat.chat_id)
        if in_config is not None and in_config != wanted.id:
            return (
                f"config.toml binds this group to {resolve(config, in_config).name} "
                f"([assistants.{in_config}] chats); change it there."
            )
        self.bindings.bind("groups", message.chat.chat_id, wanted.id)
        return f"This group now talks to {wanted.name} (workspace {wanted.workspace})."

    async def _talked_before(self, chat_id: str) -> bool:
        if chat_id in self._talking_before:
            return True
        if await self._has_default_conversation(names.conversation_id(chat_id)):
            self._talking_before.add(chat_id)
            return True
        return False

    def _how_to_bind(self, assistants: list[Assistant], stale: str | None) -> str:
        gone = f"The assistant this group was bound to ({stale}) no longer exists. " if stale else ""
        names_ = ", ".join(a.name for a in assistants)
        return (
            f"{gone}This group is not bound to an assistant yet, so I don't know which one should "
            f"answer here. An approver binds it: /bind NAME (assistants: {names_})."
        )

    @staticmethod
    def _listing(config: AllyConfig) -> str:
        lines = ["Assistants:"]
        for assistant in all_assistants(config):
            where = f" on {assistant.host}" if assistant.host else ""
            lines.append(f"  {assistant.name}{where}: {assistant.workspace}")
        return "\n".join(lines)


def conversation_for(chat: ChatRef, route: Route) -> str:
    return names.conversation_id(chat.chat_id, route.assistant.id, route.topic)


def chat_config(config: AllyConfig, chat: ChatRef, route: Route) -> ChatConfig:
    """What the configuration says about this chat's conversation now (travels with every message)."""
    assistant = route.assistant
    host = assistant.host
    return ChatConfig(
        settings=assistant.settings,
        policy=chat_policy(assistant, config.chats.overrides.get(chat.chat_id)),
        approvers=assistant.approvers,
        alerts_workflow_id=names.ALERTS_WORKFLOW_ID if owner_of(config) else None,
        assistant_name=assistant.name,
        discovery_queue=names.runtime_queue(host) if host else names.RUNTIME_DISCOVERY_QUEUE,
        autosave=assistant.autosave,
        long_work=config.long_work.contract(),
    )


def new_conversation(config: AllyConfig, chat: ChatRef, route: Route) -> ConversationState:
    """How a conversation starts out: its assistant's settings, no thread yet."""
    now = chat_config(config, chat, route)
    assert now.discovery_queue is not None
    return ConversationState(
        chat=chat,
        assistant=route.assistant.id,
        assistant_name=now.assistant_name,
        topic=route.topic,
        settings=now.settings,
        policy=now.policy,
        approvers=now.approvers,
        alerts_workflow_id=now.alerts_workflow_id,
        discovery_queue=now.discovery_queue,
        autosave=now.autosave,
        long_work=now.long_work or LongWork(),
    )


def may_use(assistant: Assistant, message: InboundMessage) -> bool:
    """An assistant's own `[access] users`, within what the global [access] already allowed."""
    person = message.sender.id
    return not assistant.users or person in assistant.users or person in assistant.approvers


def _by_id(assistants: list[Assistant], assistant_id: str) -> Assistant | None:
    return next((a for a in assistants if a.id == assistant_id), None)
