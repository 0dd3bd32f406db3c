"""`ally routines …`: prompts on a schedule, kept as Temporal Schedules (docs/routines.md).

`ally.routines` (and the Temporal client it brings) is imported by each command, not here: every
other `ally` command, `ally up` first, starts without it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from ally.config import AllyConfig, ConfigError, load_config

if TYPE_CHECKING:
    from temporalio.client import Client

    from ally.routines import RoutineSpec

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
NameArgument = Annotated[str, typer.Argument(help="The routine's name.")]

routines_app = typer.Typer(
    help="Routines: prompts on a schedule whose answers arrive in a chat, kept as Temporal Schedules "
    "(`routine:<name>`, visible in the Temporal UI). Definitions live in <data dir>/routines/*.toml; "
    "`apply` makes the schedules match them (docs/routines.md).",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"ally: {message}", err=True)
    return typer.Exit(code)


def _config() -> AllyConfig:
    try:
        return load_config()
    except ConfigError as error:
        raise _fail(f"config error: {error}", 2) from None


def _with_client(config: AllyConfig, work: Callable[[Client], Awaitable[T]]) -> T:
    from ally.routines import RoutineError
    from ally.temporal_client import connect

    async def go() -> T:
        try:
            client = await connect(config)
        except RuntimeError as error:
            raise _fail(f"cannot reach Temporal ({error}); is `ally up` running?") from None
        return await work(client)

    try:
        return asyncio.run(go())
    except RoutineError as error:
        raise _fail(str(error), 2) from None


@routines_app.command("list")
def list_routines(as_json: JsonOption = False) -> None:
    """Every routine: its schedule, where it posts, the next runs, the last runs and their outcomes."""
    from ally import routines

    config = _config()
    rows = _with_client(config, routines.statuses)
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    if not rows:
        typer.echo(
            f"No routine yet. Add one with `ally routines add`, or write {routines.routines_dir()}/NAME.toml"
        )
        typer.echo("and run `ally routines apply`.")
    for row in rows:
        for line in routines.lines(row):
            typer.echo(line)


@routines_app.command("show")
def show(name: NameArgument, as_json: JsonOption = False) -> None:
    """One routine: everything `list` says, plus its thread, overlap and catch-up settings."""
    from ally import routines

    config = _config()
    row = _with_client(config, lambda client: routines.status(client, name))
    if as_json:
        typer.echo(row.model_dump_json(indent=2))
        return
    for line in routines.lines(row):
        typer.echo(line)
    typer.echo(f"    schedule: {row.schedule_id} (Temporal UI: Schedules)")
    typer.echo(f"    thread: {row.thread}; overlap: {row.overlap}; catch-up window: {row.catchup_window}")
    typer.echo(f"    runs started so far: {row.actions}")
    for run in row.last_runs:
        typer.echo(f"    {run.scheduled_at} started {run.started_at}: {run.outcome}  {run.workflow_id}")


@routines_app.command("add")
def add(
    name: NameArgument,
    prompt: Annotated[str | None, typer.Option("--prompt", help="What to ask each run.")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help='When: "30 7 * * mon-fri", "@daily"…')] = None,
    every: Annotated[str | None, typer.Option("--every", help="Or an interval: 30s, 5m, 2h, 1d.")] = None,
    time_zone: Annotated[str, typer.Option("--tz", help="The time zone of --cron.")] = "UTC",
    assistant: Annotated[str, typer.Option("--assistant", help="Its assistant's name or id.")] = "default",
    chat: Annotated[str | None, typer.Option("--chat", help="The chat id it posts to.")] = None,
    group: Annotated[bool, typer.Option("--group", help="The chat is a group.")] = False,
    topic: Annotated[str, typer.Option("--topic", help="Post in this topic (its first message's id).")] = "",
    continue_thread: Annotated[
        bool,
        typer.Option("--continue", help="Every run continues the routine's own thread (default: fresh)."),
    ] = False,
    overlap: Annotated[
        str, typer.Option("--overlap", help="skip | buffer_one | buffer_all | allow_all …")
    ] = "skip",
    catchup: Annotated[str, typer.Option("--catchup", help="Catch-up window after downtime.")] = "1h",
    mode: Annotated[
        str, typer.Option("--mode", help="ask | read_only | trusted (capped by the ceiling).")
    ] = "read_only",
    approval_expiry: Annotated[
        str, typer.Option("--approval-expiry", help="Decline unanswered approvals after.")
    ] = "30m",
    from_template: Annotated[
        str | None, typer.Option("--template", help="Start from a shipped template, e.g. memory-digest.")
    ] = None,
) -> None:
    """Write <data dir>/routines/NAME.toml and create its schedule (as `apply` would)."""
    from ally import routines

    config = _config()
    path = routines.routines_dir() / f"{name}.toml"
    if path.exists():
        raise _fail(f"{path} exists already; edit it and run `ally routines apply`", 2)
    given: dict[str, Any] = {"name": name}
    if from_template is not None:
        try:
            import tomllib

            given = {**tomllib.loads(routines.template(from_template)), "name": name}
        except routines.RoutineError as error:
            raise _fail(str(error), 2) from None
    options = {
        "prompt": prompt,
        "cron": cron,
        "every": every,
        "chat": chat,
        "topic": topic or None,
    }
    given.update({key: value for key, value in options.items() if value is not None})
    if cron is not None or every is not None:
        given.pop("every" if cron is not None else "cron", None)
    defaults = {
        "time_zone": (time_zone, "UTC"),
        "assistant": (assistant, "default"),
        "overlap": (overlap, "skip"),
        "catchup_window": (catchup, "1h"),
        "mode": (mode, "read_only"),
        "approval_expiry": (approval_expiry, "30m"),
    }
    for key, (value, default) in defaults.items():
        if value != default or key not in given:
            given[key] = value
    if group:
        given["chat_type"] = "group"
    if continue_thread:
        given["thread"] = "continue"
    try:
        spec = routines.RoutineSpec.model_validate(given)
    except Exception as error:
        from pydantic import ValidationError

        if isinstance(error, ValidationError):
            raise _fail(f"routine {name}: {routines._plain(error)}", 2) from None
        raise
    try:
        run = routines.run_from_config(spec, config)
    except routines.RoutineError as error:
        raise _fail(str(error), 2) from None
    done = _with_client(config, lambda client: routines.put(client, spec, run))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_toml(spec), encoding="utf-8")
    typer.echo(f"Routine {name}: {done} (schedule routine:{name}, {spec.when()}); its file: {path}")


@routines_app.command("apply")
def apply(
    folder: Annotated[
        Path | None, typer.Option("--dir", help="Where the routine files are (default: <data dir>/routines).")
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Remove routines that no file defines any more.")
    ] = False,
) -> None:
    """Make the schedules match the routine files: create, update, or leave each as it is, and say which.
    A second apply with the same files changes nothing and says so."""
    from ally import routines

    config = _config()
    where = folder or routines.routines_dir()
    try:
        specs = routines.load_dir(where)
        runs = [(spec, routines.run_from_config(spec, config)) for spec in specs]
    except routines.RoutineError as error:
        raise _fail(str(error), 2) from None

    async def sync(client: Client) -> list[str]:
        said = []
        for spec, run in runs:
            said.append(f"{spec.name}: {await routines.put(client, spec, run)}")
        wanted = {spec.name for spec in specs}
        for row in await routines.statuses(client):
            if row.name in wanted:
                continue
            if prune:
                await routines.remove(client, row.name)
                said.append(f"{row.name}: removed (no file defines it)")
            else:
                said.append(f"{row.name}: no file defines it (kept; --prune removes it)")
        return said

    said = _with_client(config, sync)
    if not specs:
        typer.echo(f"No routine files in {where}.")
    for line in said:
        typer.echo(line)
    if said and all(line.endswith(": unchanged") for line in said):
        typer.echo("Nothing to change: the schedules already match the files.")


@routines_app.command("pause")
def pause(name: NameArgument) -> None:
    """Stop starting runs (a run already going finishes). `apply` leaves the pause as it is."""
    from ally import routines

    config = _config()

    async def go(client: Client) -> None:
        await routines.status(client, name)
        await routines.handle_of(client, name).pause(note="paused with `ally routines pause`")

    _with_client(config, go)
    typer.echo(f"Routine {name} is paused; `ally routines resume {name}` starts it again.")


@routines_app.command("resume")
def resume(name: NameArgument) -> None:
    """Start runs again, from the next scheduled time (what was missed while paused is not run)."""
    from ally import routines

    config = _config()

    async def go(client: Client) -> str:
        await routines.handle_of(client, name).unpause(note="resumed with `ally routines resume`")
        row = await routines.status(client, name)
        return row.next_runs[0] if row.next_runs else "none"

    upcoming = _with_client(config, go)
    typer.echo(f"Routine {name} runs again; next: {upcoming}.")


@routines_app.command("run")
def run_now(name: NameArgument) -> None:
    """Run it now, once, as its schedule would (with its overlap policy: skipped if one still runs)."""
    from ally import routines

    config = _config()

    async def go(client: Client) -> list[str]:
        row = await routines.status(client, name)
        await routines.handle_of(client, name).trigger()
        return row.running

    running = _with_client(config, go)
    if running:
        typer.echo(f"Routine {name}: asked to run now, but a run is still going ({running[0]}); with overlap")
        typer.echo("skip this one is skipped (`ally routines show` counts it).")
    else:
        typer.echo(f"Routine {name}: running now; `ally routines show {name}` shows how it ends.")


@routines_app.command("remove")
def remove(name: NameArgument) -> None:
    """Delete its schedule (a run already going finishes) and its file, if it has one."""
    from ally import routines

    config = _config()
    _with_client(config, lambda client: routines.remove(client, name))
    path = routines.routines_dir() / f"{name}.toml"
    gone = ""
    if path.exists():
        path.unlink()
        gone = f" and its file {path}"
    typer.echo(f"Routine {name} removed: its schedule{gone}.")


def to_toml(spec: RoutineSpec) -> str:
    """The routine as a file of its own (flat keys: strings, booleans)."""
    from ally.routines import RoutineSpec

    lines = ["# work-ally routine (docs/routines.md); `ally routines apply` after editing"]
    for key, value in spec.model_dump(mode="json", exclude_none=True).items():
        if value == RoutineSpec.model_fields[key].default and key not in ("name",):
            continue
        lines.append(f"{key} = {json.dumps(value, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"
