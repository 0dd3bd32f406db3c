"""`ally assistants …`: the person's assistants, from the terminal (docs/assistants.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from ally import assistant_admin
from ally.assistant_admin import AdminError, NewAssistant
from ally.assistants import Assistant, all_assistants, find
from ally.bindings import BindingsError, BindingsFile
from ally.config import AllyConfig, ConfigError, config_path, load_config

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Mode = Literal["ask", "read_only", "trusted"]

assistants_app = typer.Typer(
    help="Assistants: each a workspace, persona (its AGENTS.md), Codex settings, MCP servers, rules "
    "and the host it lives on. Chats are bound to them (docs/assistants.md).",
    no_args_is_help=True,
)


def _fail(error: Exception, code: int = 1) -> typer.Exit:
    typer.echo(f"ally: {error}", err=True)
    return typer.Exit(code)


def _config() -> AllyConfig:
    try:
        return load_config()
    except ConfigError as error:
        raise _fail(Exception(f"config error: {error}"), 2) from None


def _bindings() -> BindingsFile:
    return BindingsFile()


def describe(config: AllyConfig, assistant: Assistant, bindings: BindingsFile) -> dict[str, Any]:
    """An assistant as `show` and `list --json` print it: each setting with where it came from."""
    return {
        "id": assistant.id,
        "name": assistant.name,
        "default": assistant.id == config.chats.default_assistant,
        "settings": {key: setting.model_dump() for key, setting in assistant.sources.items()},
        "mcp_servers": {name: server.model_dump() for name, server in assistant.settings.mcp_servers.items()},
        "autosave": assistant.autosave,
        "chats": assistant_admin.bound_chats(config, bindings, assistant),
    }


@assistants_app.command("list")
def list_assistants(as_json: JsonOption = False) -> None:
    """Every assistant: name, host, workspace, how many chats talk to it."""
    config = _config()
    bindings = _bindings()
    try:
        rows = [describe(config, a, bindings) for a in all_assistants(config)]
    except BindingsError as error:
        raise _fail(error, 2) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = "*" if row["default"] else " "
        settings = row["settings"]
        typer.echo(
            f"{mark} {row['name']:<16} host {settings['host']['value']:<20} "
            f"{len(row['chats'])} chat(s)  {settings['workspace']['value']}"
        )
    typer.echo("(* talks in private chats until /assistant switches)")


@assistants_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Its name (or id).")], as_json: JsonOption = False) -> None:
    """One assistant's effective settings, each with where it comes from, and its chats."""
    config = _config()
    assistant = find(config, name)
    if assistant is None:
        known = ", ".join(a.name for a in all_assistants(config))
        raise _fail(Exception(f"there is no assistant called {name!r} (assistants: {known})"))
    try:
        shown = describe(config, assistant, _bindings())
    except BindingsError as error:
        raise _fail(error, 2) from None
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    typer.echo(f"{shown['name']} (id {shown['id']}){'  [default]' if shown['default'] else ''}")
    for key, setting in shown["settings"].items():
        typer.echo(f"  {key:<18} {setting['value']}    <- {setting['source']}")
    for server, spec in shown["mcp_servers"].items():
        typer.echo(f"  mcp {server:<14} {spec['command']} {' '.join(spec['args'])}")
    typer.echo(f"  autosave           {'on' if shown['autosave'] else 'off'}")
    typer.echo(f"  chats              {', '.join(shown['chats']) or '(none bound)'}")


@assistants_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Its name: one word, unique (e.g. backend, admin).")],
    workspace: Annotated[
        Path | None,
        typer.Option(help="Its working directory (default: <data dir>/workspaces/<id>)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="The runtime host it lives on ([runtime] host there); default: any.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Codex model (default: [codex] model).")] = None,
    ceiling: Annotated[
        Mode | None, typer.Option(help="The most autonomy its chats may choose with /auto.")
    ] = None,
    autosave: Annotated[
        bool, typer.Option("--autosave", help="Commit what each turn changed (git workspaces; never pushes).")
    ] = False,
    create: Annotated[
        bool, typer.Option("--create/--no-create", help="Create a workspace that does not exist yet.")
    ] = True,
) -> None:
    """Add an assistant to config.toml; a running gateway picks it up at once."""
    config = _config()
    wanted = NewAssistant(
        name=name, workspace=workspace, host=host, model=model, ceiling=ceiling, autosave=autosave
    )
    try:
        added = assistant_admin.add(
            config_path(), wanted, this_host=config.runtime.host, create_workspace=create
        )
    except (AdminError, ConfigError) as error:
        raise _fail(error) from None
    where = f" on host {added.host}" if added.host else ""
    typer.echo(f"Added {added.name} (id {added.id}){where}: workspace {added.workspace}.")
    typer.echo(
        f"Bind a group to it with /bind {added.name} there; in a private chat, /assistant {added.name}."
    )


@assistants_app.command("rename")
def rename(
    old: Annotated[str, typer.Argument(help="Its current name (or id).")],
    new: Annotated[str, typer.Argument(help="The new name.")],
) -> None:
    """Rename an assistant. Its chats stay bound and keep their threads (they name its id)."""
    _config()
    try:
        renamed = assistant_admin.rename(config_path(), old, new)
    except (AdminError, ConfigError) as error:
        raise _fail(error) from None
    typer.echo(f"Renamed to {renamed.name} (id {renamed.id}); its chats and threads stay.")


@assistants_app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="Its name (or id).")],
    force: Annotated[
        bool, typer.Option("--force", help="Remove it even though chats are bound to it.")
    ] = False,
) -> None:
    """Remove an assistant from config.toml. Refused while chats are bound to it, unless --force
    (which unbinds them). Its workspace and Codex threads stay on disk."""
    _config()
    try:
        removed, chats = assistant_admin.remove(config_path(), _bindings(), name, force=force)
    except (AdminError, ConfigError, BindingsError) as error:
        raise _fail(error) from None
    unbound = f"; unbound from {', '.join(chats)}" if chats else ""
    typer.echo(f"Removed {removed.name}{unbound}. Its workspace {removed.workspace} is left as it was.")


@assistants_app.command("bind")
def bind(
    name: Annotated[str, typer.Argument(help="The assistant's name (or id).")],
    chat: Annotated[str, typer.Argument(help="The chat id (oc_…).")],
    private: Annotated[
        bool, typer.Option("--private", help="A private chat: as /assistant NAME there.")
    ] = False,
) -> None:
    """Bind a group to an assistant, as /bind NAME does in the group."""
    _config()
    try:
        assistant = assistant_admin.bind(config_path(), _bindings(), name, chat, private=private)
    except (AdminError, ConfigError, BindingsError) as error:
        raise _fail(error) from None
    typer.echo(f"{chat} now talks to {assistant.name}.")
