"""Assistants as this machine's configuration makes them: settings resolved global -> assistant -> chat.

An assistant is a workspace on a host, a persona (the workspace's AGENTS.md), Codex settings, MCP
servers, approval rules and access. config.toml has the global sections ([codex], [policy],
[access]), one `[assistants.<id>]` table per assistant, and `[chats.overrides.<chat id>]`. Each level
inherits what it does not set. Two things only ever tighten on the way down: a deny rule at any
level beats every allow (rules add up; the policy gives deny precedence whatever the order), and a
chat's autonomy is capped by the lowest ceiling above it. `resolve` says for each value where it came
from, which `ally config` shows.

Every install has the assistant `default` (names.DEFAULT_ASSISTANT): built from the global sections
when config.toml has no `[assistants.default]`, and the one chats talked to before there were several.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from ally.config import AllyConfig, AssistantConfig, ChatOverride, data_dir
from ally.contracts import MODES_BY_AUTONOMY, Mode, PolicyConfig, ThreadSettings, capped
from ally.names import DEFAULT_ASSISTANT
from ally.persona import persona

T = TypeVar("T")


class Setting(BaseModel):
    value: str
    source: str  # "[codex]", "[assistants.work]", "built-in", …


class Assistant(BaseModel):
    """One assistant, every setting resolved."""

    id: str
    name: str
    workspace: Path
    host: str | None  # None: whichever runtime host answers
    settings: ThreadSettings
    policy: PolicyConfig  # rules of every level, the mode its chats start with, its ceiling
    approvers: list[str]
    users: list[str]  # within [access] users; empty = everyone [access] lets in
    chats: list[str]  # groups bound to it in config.toml
    autosave: bool
    sources: dict[str, Setting]  # each resolved value and where it came from, for `ally config`

    @property
    def is_default(self) -> bool:
        return self.id == DEFAULT_ASSISTANT


def assistant_ids(config: AllyConfig) -> list[str]:
    """Every assistant's id, the default first."""
    return [DEFAULT_ASSISTANT, *sorted(key for key in config.assistants if key != DEFAULT_ASSISTANT)]


def all_assistants(config: AllyConfig) -> list[Assistant]:
    return [resolve(config, key) for key in assistant_ids(config)]


def find(config: AllyConfig, wanted: str) -> Assistant | None:
    """The assistant called `wanted` (its name, or its id), ignoring case."""
    wanted = wanted.strip().casefold()
    by_name = [a for a in all_assistants(config) if a.name.casefold() == wanted]
    if by_name:
        return by_name[0]
    return next((a for a in all_assistants(config) if a.id == wanted), None)


def default_assistant(config: AllyConfig) -> Assistant:
    return resolve(config, config.chats.default_assistant)


def default_workspace(config: AllyConfig, assistant_id: str) -> Path:
    if assistant_id == DEFAULT_ASSISTANT:
        return (config.codex.workspace or data_dir() / "workspace").expanduser()
    return data_dir() / "workspaces" / assistant_id


def resolve(config: AllyConfig, assistant_id: str) -> Assistant:
    """The assistant `assistant_id` with every setting resolved. Raises KeyError for an unknown id."""
    if assistant_id != DEFAULT_ASSISTANT and assistant_id not in config.assistants:
        raise KeyError(assistant_id)
    own = config.assistants.get(assistant_id, AssistantConfig())
    here = f"[assistants.{assistant_id}]"
    sources: dict[str, Setting] = {}

    def pick(key: str, mine: T | None, inherited: T, inherited_from: str) -> T:
        if mine is not None:
            sources[key] = Setting(value=str(mine), source=here)
            return mine
        shown = "(Codex's own)" if inherited is None else str(inherited)
        sources[key] = Setting(value=shown, source=inherited_from)
        return inherited

    name = own.name or assistant_id
    sources["name"] = Setting(value=name, source=here if own.name else "its id")
    workspace = own.workspace.expanduser() if own.workspace else default_workspace(config, assistant_id)
    sources["workspace"] = Setting(
        value=str(workspace),
        source=here
        if own.workspace
        else "[codex]"
        if assistant_id == DEFAULT_ASSISTANT and config.codex.workspace
        else "built-in",
    )
    sources["host"] = Setting(value=own.host or "any runtime host", source=here if own.host else "built-in")
    model = pick("model", own.model, config.codex.model, "[codex]")
    effort = pick("reasoning_effort", own.reasoning_effort, config.codex.reasoning_effort, "[codex]")
    sandbox = pick("sandbox", own.sandbox, config.codex.sandbox, "[codex]")
    approval_policy = pick("approval_policy", own.approval_policy, config.codex.approval_policy, "[codex]")
    if own.mcp_servers:
        sources["mcp_servers"] = Setting(value=", ".join(sorted(own.mcp_servers)), source=here)
    settings = ThreadSettings(
        cwd=str(workspace),
        model=model,
        reasoning_effort=effort,
        sandbox=sandbox,
        approval_policy=approval_policy,
        developer_instructions=config.codex.persona or None,
        mcp_servers=own.mcp_servers,
        agents_md=persona(name) if _writes_persona(config, assistant_id, own) else None,
    )
    ceiling = _lowest(config.policy.ceiling, own.policy.ceiling)
    sources["ceiling"] = Setting(value=ceiling, source=here if own.policy.ceiling else "[policy]")
    mode = capped(own.policy.mode or config.policy.mode, ceiling)
    sources["mode"] = Setting(value=mode, source=here if own.policy.mode else "[policy]")
    rules = [*config.policy.rules, *own.policy.rules]
    for number, rule in enumerate(rules, start=1):
        origin = "[policy]" if number <= len(config.policy.rules) else here
        sources[f"rule {number}"] = Setting(value=f"{rule.action} {rule.describe()}", source=origin)
    policy = config.policy.model_copy(update={"mode": mode, "ceiling": ceiling, "rules": rules})
    approvers = list(dict.fromkeys([*config.access.approvers, *own.access.approvers]))
    return Assistant(
        id=assistant_id,
        name=name,
        workspace=workspace,
        host=own.host,
        settings=settings,
        policy=policy,
        approvers=approvers,
        users=own.access.users,
        chats=own.chats,
        autosave=own.autosave,
        sources=sources,
    )


def chat_policy(assistant: Assistant, override: ChatOverride | None) -> PolicyConfig:
    """The policy one chat of `assistant` runs with: the chat may lower its autonomy and its ceiling,
    and add deny rules; nothing it says can loosen what the assistant allows."""
    if override is None:
        return assistant.policy
    ceiling = _lowest(assistant.policy.ceiling, override.ceiling)
    mode = capped(override.mode or assistant.policy.mode, ceiling)
    return assistant.policy.model_copy(
        update={"mode": mode, "ceiling": ceiling, "rules": [*assistant.policy.rules, *override.rules]}
    )


def bound_groups(config: AllyConfig) -> dict[str, str]:
    """Groups bound to an assistant in config.toml: chat id -> assistant id."""
    return {chat: key for key, assistant in sorted(config.assistants.items()) for chat in assistant.chats}


def _writes_persona(config: AllyConfig, assistant_id: str, own: AssistantConfig) -> bool:
    """Whether the host may write the persona template into a workspace without an AGENTS.md. Not
    into a directory of the person's own given as `[codex] workspace` before assistants existed
    (often a project checkout), unless they ask for it."""
    if own.write_persona is not None:
        return own.write_persona
    return not (assistant_id == DEFAULT_ASSISTANT and own.workspace is None and config.codex.workspace)


def _lowest(ceiling: Mode, tighter: Mode | None) -> Mode:
    return ceiling if tighter is None else min(ceiling, tighter, key=MODES_BY_AUTONOMY.index)
