"""`ally assistants add | rename | remove | bind`: changes to config.toml and bindings.json.

config.toml is edited as a document (tomlkit), so the person's comments, order and other keys stay
as they were; the new text must load as a valid configuration before it replaces the file (through
a temporary file and a rename, mode 0600: it holds the App Secret). An assistant's id is its table's
key and never changes; a rename changes only `name`, so bound chats and their threads stay.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import BaseModel, ValidationError
from tomlkit.items import Table

from ally.assistants import Assistant, all_assistants, bound_groups, find, resolve
from ally.bindings import BindingsFile
from ally.config import ASSISTANT_ID, AllyConfig, ConfigError
from ally.config_file import write_private
from ally.names import DEFAULT_ASSISTANT


class AdminError(Exception):
    """The change was not made; the message says why and what to do instead."""


class NewAssistant(BaseModel):
    name: str
    workspace: Path | None = None
    host: str | None = None
    model: str | None = None
    sandbox: str | None = None
    approval_policy: str | None = None
    ceiling: str | None = None
    autosave: bool = False


def add(path: Path, wanted: NewAssistant, *, this_host: str, create_workspace: bool = True) -> Assistant:
    """Add an assistant; returns it resolved. A workspace on this host that does not exist is
    created (or, without `create_workspace`, refused); one on another host is that host's to make."""
    document, config = _read(path)
    name = wanted.name.strip()
    clash = find(config, name)
    if clash is not None:
        raise AdminError(f"there is already an assistant called {name!r} (id {clash.id}); pick another name")
    assistant_id = _new_id(name, config)
    table = tomlkit.table()
    table["name"] = name
    if wanted.workspace is not None:
        table["workspace"] = str(wanted.workspace.expanduser().absolute())
    for key in ("host", "model", "sandbox", "approval_policy"):
        value = getattr(wanted, key)
        if value:
            table[key] = value
    if wanted.autosave:
        table["autosave"] = True
    if wanted.ceiling:
        policy = tomlkit.table()
        policy["ceiling"] = wanted.ceiling
        table["policy"] = policy
    _assistants_table(document)[assistant_id] = table
    config = _validated(document, path)
    added = resolve(config, assistant_id)
    if added.host in (None, this_host):
        _ensure_workspace(added.workspace, create_workspace)
    write_private(path, tomlkit.dumps(document))
    return added


def rename(path: Path, old: str, new: str) -> Assistant:
    document, config = _read(path)
    assistant = _existing(config, old)
    new = new.strip()
    clash = find(config, new)
    if clash is not None and clash.id != assistant.id:
        raise AdminError(f"there is already an assistant called {new!r} (id {clash.id})")
    assistants = _assistants_table(document)
    if assistant.id not in assistants:  # the built-in default gets a table of its own
        assistants[assistant.id] = tomlkit.table()
    table = assistants[assistant.id]
    assert isinstance(table, Table)
    table["name"] = new
    config = _validated(document, path)
    write_private(path, tomlkit.dumps(document))
    return resolve(config, assistant.id)


def bound_chats(config: AllyConfig, bindings: BindingsFile, assistant: Assistant) -> list[str]:
    """Every chat bound to the assistant: in config.toml, by /bind, or chosen with /assistant."""
    in_config = [chat for chat, key in bound_groups(config).items() if key == assistant.id]
    return sorted({*in_config, *bindings.read().chats_of(assistant.id)})


def remove(
    path: Path, bindings: BindingsFile, name: str, *, force: bool = False
) -> tuple[Assistant, list[str]]:
    """Remove an assistant; returns it and the chats that were bound to it (unbound with `force`;
    without it, any bound chat refuses the removal). Its workspace and threads are left on disk."""
    document, config = _read(path)
    assistant = _existing(config, name)
    if assistant.id == DEFAULT_ASSISTANT:
        raise AdminError("the default assistant cannot be removed (rename it instead)")
    if assistant.id == config.chats.default_assistant:
        raise AdminError(
            f"{assistant.name} is the default assistant of private chats ([chats] default_assistant); "
            "make another one the default first"
        )
    chats = bound_chats(config, bindings, assistant)
    if chats and not force:
        raise AdminError(
            f"{assistant.name} is bound to {len(chats)} chat(s): {', '.join(chats)}. Their conversations "
            "would have no assistant. Bind them elsewhere, or remove it anyway with --force."
        )
    del _assistants_table(document)[assistant.id]
    _validated(document, path)
    write_private(path, tomlkit.dumps(document))
    bindings.forget(assistant.id)
    return assistant, chats


def bind(path: Path, bindings: BindingsFile, name: str, chat_id: str, *, private: bool = False) -> Assistant:
    """What `/bind NAME` does in a group (or `/assistant NAME` in a private chat), from the terminal."""
    _, config = _read(path)
    assistant = _existing(config, name)
    if not re.fullmatch(r"oc_[A-Za-z0-9_-]+|console@.+", chat_id):
        raise AdminError(f"{chat_id!r} is not a chat id (Feishu chat ids look like oc_…)")
    in_config = bound_groups(config).get(chat_id)
    if in_config is not None and in_config != assistant.id and not private:
        raise AdminError(f"config.toml binds {chat_id} to {resolve(config, in_config).name}; change it there")
    bindings.bind("private" if private else "groups", chat_id, assistant.id)
    return assistant


def _existing(config: AllyConfig, name: str) -> Assistant:
    assistant = find(config, name)
    if assistant is None:
        known = ", ".join(a.name for a in all_assistants(config))
        raise AdminError(f"there is no assistant called {name!r} (assistants: {known})")
    return assistant


def _new_id(name: str, config: AllyConfig) -> str:
    base = re.sub(r"[^a-z0-9_-]+", "-", name.casefold()).strip("-")[:28] or "assistant"
    if not base[0].isalnum():
        base = f"a{base}"
    taken = {a.id for a in all_assistants(config)}
    candidate, number = base, 2
    while candidate in taken:
        candidate, number = f"{base}-{number}", number + 1
    assert ASSISTANT_ID.fullmatch(candidate), candidate
    return candidate


def _ensure_workspace(workspace: Path, create: bool) -> None:
    if workspace.is_dir():
        return
    if workspace.exists():
        raise AdminError(f"{workspace} exists and is not a directory; give another --workspace")
    if not create:
        raise AdminError(f"{workspace} does not exist; create it, or leave out --no-create")
    try:
        workspace.mkdir(parents=True)
    except OSError as error:
        raise AdminError(f"cannot create the workspace {workspace}: {error.strerror}") from None


def _read(path: Path) -> tuple[tomlkit.TOMLDocument, AllyConfig]:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return document, _validated(document, path)


def _validated(document: tomlkit.TOMLDocument, path: Path) -> AllyConfig:
    """The configuration the document stands for (environment overrides aside: they are not in the
    file, and the file must be valid on its own)."""
    raw: dict[str, Any] = tomllib.loads(tomlkit.dumps(document))
    try:
        return AllyConfig.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise AdminError(f"{path} would not be valid: {where}: {first['msg']}") from None


def _assistants_table(document: tomlkit.TOMLDocument) -> Table:
    if "assistants" not in document:
        document["assistants"] = tomlkit.table(is_super_table=True)
    table = document["assistants"]
    assert isinstance(table, Table)
    return table
