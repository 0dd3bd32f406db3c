"""The `ally` command: run work-ally, and see how it is doing."""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import AsyncIterator
from typing import Annotated, Any

import typer

from ally.cli_assistants import assistants_app
from ally.cli_routines import routines_app
from ally.cli_threads import add_thread_commands
from ally.config import AllyConfig, ConfigError, config_path, data_dir, load_config

app = typer.Typer(
    name="ally",
    help="work-ally: drive a local Codex agent from Feishu chats, with durable turns on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _config() -> AllyConfig:
    """Load the configuration or exit 2 with its one-line explanation (never a traceback)."""
    try:
        return load_config()
    except ConfigError as e:
        typer.echo(f"ally: config error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
def up(
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Answer with a scripted local model instead of a real one (no account needed)."
        ),
    ] = False,
) -> None:
    """Start everything (Temporal dev server, workers, Feishu gateway), supervise it, stop it on Ctrl-C.

    Uses the embedded Temporal dev server (state in <data dir>/temporal.db, Web UI on) unless a
    cluster is configured ([temporal] address, or TEMPORAL_ADDRESS / Temporal CLI profiles).
    Prints where the UI is, what runs, and what is missing with the next step.
    """
    config = _config()
    from ally.up import AlreadyRunning, CannotStart, UpOptions, become_supervisor, plan

    try:
        up_plan = plan(config, UpOptions(demo=demo))
    except (AlreadyRunning, CannotStart) as e:
        typer.echo(f"ally: {e}", err=True)
        raise typer.Exit(1) from None
    become_supervisor(up_plan)  # this process goes on as the supervisor (ally/supervisor.py)


@app.command()
def chat(
    assistant: Annotated[
        str | None,
        typer.Option(
            "--assistant", "-a", help="The assistant to talk to, by name (default: the default one)."
        ),
    ] = None,
) -> None:
    """Talk to Codex from this terminal, through the same durable workflows as a Feishu chat.

    Needs `ally up` running. Approvals are answered inline: y, always, n, cancel, or "1 y 2 n".
    Each assistant keeps its own thread for this terminal.
    """
    config = _config()
    from ally.assistants import all_assistants, find
    from ally.console_chat import ConsoleChat

    if assistant is not None and find(config, assistant) is None:  # before waiting on Temporal
        known = ", ".join(a.name for a in all_assistants(config))
        typer.echo(f"ally: there is no assistant called {assistant!r} (assistants: {known})", err=True)
        raise typer.Exit(2)
    from ally.temporal_client import connect

    async def lines() -> AsyncIterator[str]:
        # Bytes, decoded here: a line that is not UTF-8 keeps its bad bytes as surrogates, and the
        # chat refuses it in words instead of the decoder ending the chat.
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.buffer.readline):
            yield line.decode("utf-8", errors="surrogateescape")

    async def talk() -> None:
        client = await connect(config)
        await ConsoleChat(client, config, typer.echo, assistant).run(lines())

    try:
        asyncio.run(talk())
    except (KeyboardInterrupt, RuntimeError) as e:
        if isinstance(e, RuntimeError):
            typer.echo(f"ally: cannot reach Temporal ({e}); is `ally up` running?", err=True)
            raise typer.Exit(1) from None


@app.command()
def status(as_json: JsonOption = False) -> None:
    """What is running, and the health of each part (supervisor, workers, Codex child, Temporal)."""
    config = _config()
    from ally.status import collect_status

    report = asyncio.run(collect_status(config))
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    for line in report.lines():
        typer.echo(line)
    if not report.running:
        raise typer.Exit(1)


@app.command()
def turns(
    as_json: JsonOption = False,
    assistant: Annotated[
        str | None, typer.Option("--assistant", help="Only this assistant's turns (its name or id).")
    ] = None,
) -> None:
    """Running and stuck turns: chat, assistant, state (running, awaiting_approval…), age, UI link."""
    config = _config()
    from ally.assistants import all_assistants, find
    from ally.temporal_client import connect, ui_url
    from ally.turns_report import running_turns

    wanted = None
    if assistant is not None:
        if (found := find(config, assistant)) is None:
            known = ", ".join(a.name for a in all_assistants(config))
            typer.echo(f"There is no assistant called {assistant!r} (assistants: {known}).", err=True)
            raise typer.Exit(2)
        wanted = found.id

    async def collect() -> list[Any]:
        return await running_turns(await connect(config), ui=ui_url(config), assistant=wanted)

    rows = asyncio.run(collect())
    if as_json:
        typer.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    if not rows:
        typer.echo("No turn is running." if wanted is None else f"No turn of {assistant} is running.")
    shown = {a.id: a.name for a in all_assistants(config)}
    for row in rows:
        who = shown.get(row.assistant, row.assistant)
        typer.echo(f"{row.workflow_id}  {row.state:<18} {row.running_s:>6.0f}s  {who} in chat {row.chat}")
        if row.ui_link:
            typer.echo(f"    {row.ui_link}")


MIN_ID_PREFIX = 4  # shorter prefixes (or a bare position like "1") decide nothing
CONFIRM_S = 10.0


@app.command()
def approvals(
    as_json: JsonOption = False,
    decide: Annotated[
        str | None,
        typer.Option(
            "--decide",
            metavar="ID",
            help=f"Id of the request to decide, as listed (or its first {MIN_ID_PREFIX}+ characters).",
        ),
    ] = None,
    answer: Annotated[
        str, typer.Option("--with", help="y (approve), always (for the session), n (decline), cancel.")
    ] = "y",
    history: Annotated[
        bool, typer.Option("--history", help="Who decided what and when (or which rule) instead.")
    ] = False,
    days: Annotated[float, typer.Option("--days", help="With --history: how far back.")] = 7,
) -> None:
    """Pending approvals and questions of every running turn, each with an id; decide one by its id.

    The id stays the same while the request waits (deciding another one does not shift it). A
    request that was decided, expired or whose turn ended is refused, and the current list shown.
    With --history: the audit trail of decisions (a person, a policy rule, or expiry)."""
    config = _config()
    import getpass

    from ally.chat_client import ChatClient, WaitingRequest, matching
    from ally.contracts import Decision, Person
    from ally.names import LOCAL_OPERATOR
    from ally.shortcuts import WORDS
    from ally.temporal_client import connect
    from ally.turns_report import decision_history

    def emit(document: Any) -> None:
        typer.echo(json.dumps(document, indent=2))

    def listing(rows: list[WaitingRequest]) -> list[str]:
        if not rows:
            return ["Nothing is waiting for a decision."]
        lines = []
        for row in rows:
            request = row.request
            what = request.command or request.reason or request.method
            lines.append(f"{row.id}  [{request.kind}] {what}  (chat {row.chat}, {row.workflow_id})")
        return lines

    def refuse(reason: str, rows: list[WaitingRequest]) -> int:
        if as_json:
            emit(
                {"status": "refused", "detail": reason, "waiting": [r.model_dump(mode="json") for r in rows]}
            )
        else:
            typer.echo(f"ally: {reason}", err=True)
            typer.echo("Waiting now:" if rows else "Nothing is waiting for a decision.", err=True)
            for line in listing(rows) if rows else []:
                typer.echo(f"  {line}", err=True)
        return 2

    async def run() -> int:
        client = await connect(config)
        if history:
            trail = await decision_history(client, days=days)
            if as_json:
                emit([entry.model_dump(mode="json") for entry in trail])
                return 0
            if not trail:
                typer.echo(f"No decisions in the last {days:g} days.")
            for entry in trail:
                r = entry.record
                line = f"{r.decided_at}  {r.decision:<16} {r.kind:<12} {r.what}  by {r.decided_by}"
                typer.echo(f"{line}  (chat {entry.chat})")
            return 0
        chats = ChatClient(client)
        rows = await chats.waiting_everywhere()
        if decide is None:
            if as_json:
                emit([row.model_dump(mode="json") for row in rows])
            else:
                for line in listing(rows):
                    typer.echo(line)
            return 0
        word = answer.strip().lower()
        if word not in WORDS:
            return refuse(f"--with takes one of: {', '.join(WORDS)} (got {answer!r})", rows)
        if len(decide.strip()) < MIN_ID_PREFIX:
            return refuse(f"give at least {MIN_ID_PREFIX} characters of the request's id", rows)
        found = matching(rows, decide)
        if not found:
            return refuse(
                f"no request with id {decide} is waiting (it was decided, expired, or its turn ended)", rows
            )
        if len(found) > 1:
            return refuse(f"{decide} matches {len(found)} waiting requests; give more of the id", rows)
        row = found[0]
        operator = Person(id=LOCAL_OPERATOR, name=getpass.getuser())
        decision = Decision(key=row.request.key, decision=WORDS[word], operator=operator)
        # A terminal can wait a moment to learn whether Codex took the answer, not just the turn.
        receipt = await chats.decide(row.workflow_id, decision, confirm_within=CONFIRM_S)
        if as_json:
            emit({"id": row.id, **receipt.model_dump(mode="json")})
        else:
            typer.echo(f"{row.id} {receipt.status}: {receipt.detail}")
        return 0 if receipt.status in ("decided", "queued") else 1

    raise typer.Exit(asyncio.run(run()))


@app.command()
def doctor(as_json: JsonOption = False) -> None:
    """Check binaries, versions, config, credentials and ports, and say how to fix each problem."""
    config = _config()
    from ally.doctor import run_checks

    checks = run_checks(config)
    if as_json:
        typer.echo(json.dumps([c.model_dump() for c in checks], indent=2))
    else:
        marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
        for check in checks:
            typer.echo(f"[{marks[check.status]}] {check.name}: {check.detail}")
            if check.fix:
                typer.echo(f"       fix: {check.fix}")
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command()
def setup(
    scan: Annotated[
        bool,
        typer.Option("--scan", help="Create a new Feishu app by scanning a QR code with the Feishu app."),
    ] = False,
    app_id: Annotated[
        str | None, typer.Option("--app-id", help="Use this existing app (App ID, cli_…).")
    ] = None,
    app_secret_stdin: Annotated[
        bool,
        typer.Option(
            "--app-secret-stdin",
            help="Read the App Secret from standard input (or set WORK_ALLY_FEISHU__APP_SECRET; then it is "
            "not written to the file).",
        ),
    ] = False,
    lark: Annotated[bool, typer.Option("--lark", help="A Lark (international) tenant.")] = False,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="Open API base URL (default: Feishu's; a proxy or test server)."),
    ] = None,
    accounts_url: Annotated[
        str | None,
        typer.Option(
            "--accounts-url", help="Where --scan registers the app (default: Feishu's; a test server)."
        ),
    ] = None,
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="The folder the assistant works in (created).")
    ] = None,
    persona: Annotated[
        str | None, typer.Option("--persona", help="Who the assistant is and how it speaks (instructions).")
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option("--owner", help="Your open_id (ou_…): approves requests, may always talk to it."),
    ] = None,
    chats: Annotated[
        list[str] | None, typer.Option("--chat", help="A chat (oc_…) it answers in; repeat for more.")
    ] = None,
    wait_message: Annotated[
        float,
        typer.Option(
            "--wait-message",
            metavar="SECONDS",
            help="Wait this long for you to message the bot: shows messages arrive, and learns your open_id.",
        ),
    ] = 0.0,
    connect_timeout: Annotated[
        float,
        typer.Option("--connect-timeout", metavar="SECONDS", help="How long the long connection may take."),
    ] = 20.0,
    codex_login: Annotated[
        bool, typer.Option("--codex-login", help="If Codex is not logged in, run `codex login` now.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace values already in the config with the ones given.")
    ] = False,
    non_interactive: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", "--non-interactive", help="Ask nothing: what is not given stays as it is."
        ),
    ] = False,
) -> None:
    """Set work-ally up: the Feishu app, Codex, the assistant's workspace and persona, the owner.

    Each part is checked live (the app's credentials, bot, scopes, events and long connection;
    Codex's binary and login), and each problem is printed with the one line that fixes it.
    Writes <data dir>/config.toml (mode 0600) only where something changes: values you set are
    kept unless --force. Never prints the App Secret. Ends with `ally doctor`.
    Without a terminal (or with --yes) nothing is asked: everything comes from the options.
    Exit 0: set up. Exit 1: something needs fixing (said above). Exit 2: bad input.
    """
    config = _config()
    from pydantic import SecretStr

    from ally.config_file import ConfigEditError
    from ally.setup import PromptTerminal, SetupError, SetupOptions, run_setup

    secret = None
    if app_secret_stdin:
        secret = sys.stdin.readline().strip()
        if not secret:
            typer.echo("ally: --app-secret-stdin: standard input held no App Secret", err=True)
            raise typer.Exit(2)
    options = SetupOptions(
        scan=scan,
        app_id=app_id,
        app_secret=SecretStr(secret) if secret else None,
        lark=lark,
        domain=domain,
        accounts_url=accounts_url,
        workspace=workspace or None,
        persona=persona,
        owner=owner,
        chats=chats or [],
        wait_message_s=wait_message,
        connect_timeout_s=connect_timeout,
        codex_login=codex_login,
        force=force,
    )
    terminal = PromptTerminal(interactive=sys.stdin.isatty() and not non_interactive and not app_secret_stdin)
    try:
        code = run_setup(options, config, terminal)
    except (SetupError, ConfigEditError) as e:
        typer.echo(f"ally: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("\nally: setup stopped", err=True)
        raise typer.Exit(130) from None
    typer.echo("\n== ally doctor ==")
    try:
        doctor(as_json=False)
    except typer.Exit as e:
        code = max(code, e.exit_code)
    raise typer.Exit(code)


@app.command()
def logs(
    part: Annotated[
        str | None, typer.Argument(metavar="PART", help="Only this part's log (the parts are listed above).")
    ] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="How many of the last lines.")] = 50,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Then print new lines as they come, until Ctrl-C.")
    ] = False,
) -> None:
    """What the parts of `ally up` wrote; without PART, the last lines of each, labelled.

    Parts: supervisor (`ally up` itself, when run as a service),
    temporal (the embedded dev server), demo-model (`ally up --demo`),
    runtime-worker (and its Codex child's stderr), gateway (Feishu).
    Each writes <data dir>/logs/<part>.log.
    """
    import contextlib

    from ally import logs as part_logs

    if part is not None and (why := part_logs.unknown_part(part)):
        typer.echo(f"ally: {why}", err=True)
        raise typer.Exit(2)
    if follow:  # every part, so that one started later is followed too
        with contextlib.suppress(KeyboardInterrupt):
            part_logs.follow(
                [part] if part else list(part_logs.PARTS), typer.echo, last=lines, labelled=not part
            )
        return
    chosen = [part] if part else [name for name in part_logs.PARTS if part_logs.log_file(name).exists()]
    if not chosen:
        typer.echo(f"No part has written a log yet (in {part_logs.log_file('-').parent}); start `ally up`.")
        return
    for name in chosen:
        path = part_logs.log_file(name)
        if part is None:
            typer.echo(f"== {name} ({path}) ==")
        if path.exists():
            for line in part_logs.last_lines(path, lines):
                typer.echo(line)
        else:
            typer.echo(f"{name} has written no log yet ({path}).")
        if part is None:
            typer.echo("")


service_app = typer.Typer(
    help="Run `ally up` at login and restart it when it fails (a systemd user unit on Linux, "
    "a launchd agent on macOS).",
    no_args_is_help=True,
)
app.add_typer(service_app, name="service")
app.add_typer(assistants_app, name="assistants")
app.add_typer(routines_app, name="routines")
add_thread_commands(app)


@service_app.command("install")
def service_install() -> None:
    """Write the service file for this `ally`, then have the service manager start it now and at login.

    Linux: ~/.config/systemd/user/work-ally.service
    macOS: ~/Library/LaunchAgents/com.work-ally.up.plist
    It runs `<this ally> up` by its absolute path, with WORK_ALLY_HOME if set
    (no other variable: put settings in config.toml).
    It restarts it 20 s after a failure (not after a config error).
    Its output goes to <data dir>/logs/supervisor.log (`ally logs supervisor`).
    Exit 0: installed and started.
    Exit 3: the file is written but the service manager did not load it; the command that does is printed.
    """
    _config()  # a broken config would only make the service fail at every start
    from ally import service

    spec = service.service_spec()
    try:
        outcome = service.install(service.current_manager(), spec)
    except service.ServiceError as e:
        typer.echo(f"ally: {e}", err=True)
        raise typer.Exit(2) from None
    except OSError as e:
        typer.echo(f"ally: cannot write the service file: {e.strerror} ({e.filename})", err=True)
        raise typer.Exit(1) from None
    for line in service.install_report(outcome, spec):
        typer.echo(line)
    for key in service.not_carried():
        typer.echo(f"note: {key} is set here but the service will not see it; put it in config.toml")
    if outcome.problem:
        raise typer.Exit(service.NOT_LOADED_EXIT)


@service_app.command("uninstall")
def service_uninstall() -> None:
    """Stop and disable the service, and remove its file. With nothing installed, says so (exit 0).

    Exit 3: the file is removed but the service manager could not be asked to stop it;
    the command that does is printed.
    """
    from ally import service

    outcome = service.uninstall(service.current_manager())
    for line in service.uninstall_report(outcome):
        typer.echo(line)
    if outcome.problem:
        raise typer.Exit(service.NOT_LOADED_EXIT)


@service_app.command("status")
def service_status(as_json: JsonOption = False) -> None:
    """Whether the service is installed (and where its file is), and whether it is loaded and running.

    Exit 0: installed and loaded. Exit 1: not installed.
    Exit 3: installed but not loaded, or the service manager could not be asked.
    """
    from ally import service

    report = service.status(service.current_manager(), service.service_spec())
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        for line in service.status_report(report):
            typer.echo(line)
    raise typer.Exit(service.status_exit(report))


@app.command("config")
def show_config(as_json: JsonOption = False) -> None:
    """The effective configuration (file + WORK_ALLY_* overrides), secrets masked, and each
    assistant's settings as they run (global -> assistant -> chat), each with where it comes from."""
    config = _config()
    shown: dict[str, Any] = _masked(config)
    from ally.assistants import all_assistants

    resolved = {a.id: {k: s.model_dump() for k, s in a.sources.items()} for a in all_assistants(config)}
    if as_json:
        typer.echo(json.dumps({**shown, "assistants": resolved}, indent=2, default=str))
        return
    typer.echo(f"# data dir: {data_dir()}   file: {config_path()}")
    for section, values in shown.items():
        typer.echo(f"\n[{section}]")
        for key, value in values.items():
            typer.echo(f"{key} = {json.dumps(value, default=str)}")
    for assistant_id, settings in resolved.items():
        typer.echo(f"\n# assistant {assistant_id}, as it runs (each value <- where it comes from)")
        for key, setting in settings.items():
            typer.echo(f"#   {key:<18} {setting['value']}    <- {setting['source']}")


def _masked(config: AllyConfig) -> dict[str, dict[str, Any]]:
    """Each section as JSON values (lists stay lists); of a secret, only whether it is set."""
    shown: dict[str, dict[str, Any]] = {}
    for section, model in config:
        if isinstance(model, dict):  # [assistants.<id>]: shown resolved, by `_assistants_shown`
            continue
        values: dict[str, Any] = model.model_dump(mode="json")
        for key, value in model:
            if hasattr(value, "get_secret_value"):
                values[key] = "<set>" if value.get_secret_value() else "<unset>"
        shown[section] = values
    return shown


def main() -> None:
    """Every `ally` command ends through `exit_now`: a command that used the Temporal client must not
    crash in the interpreter's shutdown after doing its work (ally/clean_exit.py)."""
    from ally.clean_exit import exit_code, exit_now

    code = 1
    try:
        app()
        code = 0
    except SystemExit as stop:
        code = exit_code(stop.code)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # as Python itself would: the traceback, exit code 1
        traceback.print_exc()
    exit_now(code)


if __name__ == "__main__":
    main()
