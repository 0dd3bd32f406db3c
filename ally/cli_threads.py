"""`ally threads` and `ally handoff`: an assistant's Codex threads from the terminal, and handing one
to a chat (docs/continuity.md)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer

from ally.assistants import Assistant, all_assistants, default_assistant, find
from ally.config import AllyConfig, ConfigError, load_config

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
AssistantOption = Annotated[
    str | None,
    typer.Option("--assistant", "-a", help="The assistant, by name or id (default: the default one)."),
]


def _config() -> AllyConfig:
    try:
        return load_config()
    except ConfigError as error:
        typer.echo(f"ally: config error: {error}", err=True)
        raise typer.Exit(2) from None


def _assistant(config: AllyConfig, wanted: str | None) -> Assistant:
    if wanted is None:
        return default_assistant(config)
    found = find(config, wanted)
    if found is None:
        known = ", ".join(a.name for a in all_assistants(config))
        typer.echo(f"ally: there is no assistant called {wanted!r} (assistants: {known})", err=True)
        raise typer.Exit(2)
    return found


def _unreachable(error: RuntimeError) -> typer.Exit:
    typer.echo(f"ally: cannot reach Temporal ({error}); is `ally up` running?", err=True)
    return typer.Exit(1)


def add_thread_commands(app: typer.Typer) -> None:
    app.command()(threads)
    app.command()(handoff)


def threads(
    assistant: AssistantOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100, help="How many threads.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The recent Codex threads of an assistant's workspace on its host, newest first.

    From Codex's own store on the assistant's runtime host, so threads started by `codex` in a
    terminal (in the workspace, with the runtime's CODEX_HOME) appear too. Each with its first
    words (or name), last activity, id, and the chats whose conversation holds it (handed off
    to a terminal, if so). Needs the assistant's host running (`ally up` there).
    Exit 1: no host answered, or Temporal is unreachable. Exit 2: bad input.
    """
    config = _config()
    chosen = _assistant(config, assistant)
    from ally.temporal_client import connect
    from ally.threads import NoHost, ThreadsReport, ago, threads_report, where

    async def collect() -> ThreadsReport:
        return await threads_report(await connect(config), chosen, limit=limit)

    try:
        report = asyncio.run(collect())
    except NoHost as problem:
        typer.echo(
            f"ally: {problem} for {chosen.name} ({where(chosen)}); is `ally up` running there?", err=True
        )
        raise typer.Exit(1) from None
    except RuntimeError as error:
        raise _unreachable(error) from None
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    if not report.threads:
        typer.echo(f"No Codex threads in {report.workspace} on host {report.host} yet.")
    else:
        typer.echo(
            f"Codex threads of {report.assistant} in {report.workspace} on host {report.host} (newest first):"
        )
    now = time.time()
    for number, row in enumerate(report.threads, start=1):
        thread = row.thread
        line = f"{number:>2}. {thread.title or '(no words yet)'} · {ago(now - thread.updated_at)}"
        for binding in row.bound:
            place = f"chat {binding.chat}" + (f" topic {binding.topic}" if binding.topic else "")
            line += f" · bound to {place}" + (" (handed off to a terminal)" if binding.handed_off else "")
        if thread.forked_from:
            line += f" · forked from {thread.forked_from}"
        typer.echo(line)
        typer.echo(f"    {thread.thread_id}")
    if report.unanswered:
        typer.echo(
            f"Not answering (where they are bound is unknown): {', '.join(report.unanswered)}", err=True
        )
    if report.threads:
        typer.echo("`ally handoff THREAD --to CHAT` continues one in a chat.")


def handoff(
    thread: Annotated[str, typer.Argument(metavar="THREAD", help="The Codex thread id (`ally threads`).")],
    to: Annotated[str, typer.Option("--to", metavar="CHAT", help="The chat (oc_…) that continues it.")],
    assistant: AssistantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Hand a Codex thread to a chat: the chat's conversation with the assistant continues it.

    As `/resume THREAD` typed in the chat: the chat is told what it picked up (title, last answer)
    and its next message continues the thread with its whole history. The chat must have talked to
    the assistant before. While a turn runs there, the chat picks the thread up when it ends.
    Exit 1: the chat's worker or the host did not answer, or Temporal is unreachable.
    Exit 2: no such assistant, thread or conversation.
    """
    config = _config()
    chosen = _assistant(config, assistant)
    from ally.temporal_client import connect
    from ally.threads import Handoff, HandoffRefused, hand_off

    async def run() -> Handoff:
        return await hand_off(await connect(config), chosen, thread.strip(), to.strip())

    try:
        done = asyncio.run(run())
    except HandoffRefused as refused:
        typer.echo(f"ally: {refused}", err=True)
        raise typer.Exit(refused.exit_code) from None
    except RuntimeError as error:
        raise _unreachable(error) from None
    if as_json:
        typer.echo(done.model_dump_json(indent=2))
        return
    title = done.thread.title or "(untitled)"
    if done.done:
        typer.echo(f"Chat {to} now continues thread {done.thread.thread_id} ({title}) with {chosen.name}.")
    else:
        typer.echo(
            f"Chat {to} picks up thread {done.thread.thread_id} ({title}) "
            "as soon as its running turn has ended."
        )
