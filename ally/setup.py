"""`ally setup`: from nothing to a checked configuration, by questions or entirely by flags.

Four steps, each checked live where it can be, each problem printed with the one line that fixes it:
1. the Feishu app: created by scanning a QR code (ally/channels/feishu/app_registration.py), or an existing
   one's App ID and Secret; then its credentials, bot, scopes and events (ally/channels/feishu/app_check.py),
   and the long connection, which must connect and can be shown to receive a message
   (ally/channels/feishu/connection_check.py);
2. Codex: the binary (configured, pinned, or the one on PATH) and its login, asked of Codex itself
   (ally/codex/account.py);
3. the assistant: its workspace (created) and persona;
4. the owner (who approves and may always talk to it) and the chats it answers in.
Then the config file is changed in place, only where it must be (ally/config_file.py): values the
person set are kept unless `--force` (or a yes at the prompt), and the App Secret is never shown.

I/O stays at the edges: the steps talk through a `Terminal`; the CLI gives the real one.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import segno
from pydantic import BaseModel, SecretStr, ValidationError

from ally import config_file
from ally.config import AllyConfig, FeishuConfig, config_path, data_dir
from ally.config_file import Change

if TYPE_CHECKING:
    from ally.channels.feishu.app_registration import RegisteredApp

OWNER_ID = re.compile(r"ou_[A-Za-z0-9_-]+")
CHAT_ID = re.compile(r"oc_[A-Za-z0-9_-]+")
SECRET_ENV = "WORK_ALLY_FEISHU__APP_SECRET"
DEFAULT_DOMAIN = FeishuConfig.model_fields["domain"].default
MARKS = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


class SetupError(Exception):
    """Bad input (exit 2); the message is one line."""


class Terminal(Protocol):
    interactive: bool

    def say(self, line: str = "") -> None: ...

    def ask(self, question: str, default: str = "") -> str: ...

    def ask_secret(self, question: str) -> str: ...

    def confirm(self, question: str, default: bool = False) -> bool: ...


class SetupOptions(BaseModel):
    """Every answer `ally setup` can take from flags; what is not given is asked (interactive) or kept."""

    scan: bool = False
    app_id: str | None = None
    app_secret: SecretStr | None = None
    domain: str | None = None
    accounts_url: str | None = None
    lark: bool = False
    workspace: Path | None = None
    persona: str | None = None
    owner: str | None = None
    chats: list[str] = []
    wait_message_s: float = 0.0
    connect_timeout_s: float = 20.0
    codex_login: bool = False
    force: bool = False


class Outcome(BaseModel):
    wanted: list[Change] = []
    failed: bool = False
    owner_hint: str = ""


def run_setup(options: SetupOptions, config: AllyConfig, terminal: Terminal) -> int:
    """0: set up (warnings allowed); 1: something needs fixing (said above). Raises SetupError."""
    _validate(options)
    path = config_path()
    text, current = config_file.read_file(path)
    outcome = Outcome()
    terminal.say(f"Setting up work-ally (data dir {data_dir()})")
    _feishu(options, config, current, terminal, outcome)
    _codex(options, config, terminal, outcome)
    _assistant(options, config, current, terminal, outcome)
    _owner_and_access(options, config, terminal, outcome)
    _write(options, path, text, current, terminal, outcome)
    return 1 if outcome.failed else 0


def _validate(options: SetupOptions) -> None:
    if options.scan and options.app_id:
        raise SetupError("--scan creates a new app; --app-id uses an existing one: give one of them")
    if options.app_id is not None and not options.app_id.startswith("cli_"):
        raise SetupError(
            f"--app-id: expected the App ID from the developer console (cli_…), got {options.app_id!r}"
        )
    if options.owner is not None and not OWNER_ID.fullmatch(options.owner):
        raise SetupError(f"--owner: expected a Feishu open_id (ou_…), got {options.owner!r}")
    for chat in options.chats:
        if not CHAT_ID.fullmatch(chat):
            raise SetupError(f"--chat: expected a Feishu chat id (oc_…), got {chat!r}")


# --- 1. the Feishu app ------------------------------------------------------------------------------


def _feishu(
    options: SetupOptions, config: AllyConfig, current: dict[str, Any], terminal: Terminal, outcome: Outcome
) -> None:
    terminal.say("")
    terminal.say("== Feishu app ==")
    domain = options.domain or (_lark_api() if options.lark else config.feishu.domain)
    secret_from_env = False
    if options.scan:
        source = "scan"
    elif options.app_id or config.feishu.configured:
        source = "app_id"
    else:
        source = _choose_source(terminal) if terminal.interactive else "skip"
    if source == "scan":
        registered = _scan(options, terminal)
        if registered is None:
            outcome.failed = True
            return
        app_id, secret = registered.app_id, registered.app_secret
        domain = options.domain or registered.open_api_domain
        outcome.owner_hint = registered.owner_open_id
    elif source == "app_id":
        app_id = options.app_id or config.feishu.app_id or terminal.ask("App ID (cli_…)")
        if not app_id.startswith("cli_"):
            raise SetupError(f"App ID: expected cli_…, got {app_id!r}")
        secret, secret_from_env = _secret(options, config, app_id, terminal)
    else:
        terminal.say("Skipped: no Feishu app yet. `ally setup --scan` creates one; `--app-id` uses yours.")
        terminal.say("(Without one, `ally up --demo` and `ally chat` still work.)")
        return
    feishu = FeishuConfig(app_id=app_id, app_secret=secret, domain=domain, transport=config.feishu.transport)
    if not _check_feishu(feishu, options, terminal, outcome):
        outcome.failed = True
        return
    outcome.wanted.append(Change(section="feishu", key="app_id", new=app_id))
    if not secret_from_env:
        outcome.wanted.append(
            Change(section="feishu", key="app_secret", new=secret.get_secret_value(), secret=True)
        )
    domain = domain.rstrip("/")
    if domain != DEFAULT_DOMAIN or "domain" in (current.get("feishu") or {}):
        outcome.wanted.append(Change(section="feishu", key="domain", new=domain))


def _lark_api() -> str:
    from ally.channels.feishu.app_registration import LARK_OPEN_API

    return LARK_OPEN_API


def _choose_source(terminal: Terminal) -> Literal["scan", "app_id", "skip"]:
    terminal.say("No Feishu app is configured.")
    terminal.say("  1. create one now by scanning a QR code with the Feishu app on your phone")
    terminal.say("  2. use an app you created in the developer console (App ID and App Secret)")
    terminal.say("  3. skip (`ally up --demo` and `ally chat` work without one)")
    choice = terminal.ask("Choose 1, 2 or 3", default="1").strip()
    return "skip" if choice == "3" else "app_id" if choice == "2" else "scan"


def _secret(
    options: SetupOptions, config: AllyConfig, app_id: str, terminal: Terminal
) -> tuple[SecretStr, bool]:
    """The App Secret, and whether it comes from the environment (then it is not written)."""
    if options.app_secret is not None:
        return options.app_secret, False
    if os.environ.get(SECRET_ENV):
        return SecretStr(os.environ[SECRET_ENV]), True
    if config.feishu.app_id == app_id and config.feishu.app_secret.get_secret_value():
        return config.feishu.app_secret, False
    if terminal.interactive:
        return SecretStr(terminal.ask_secret("App Secret (not shown)").strip()), False
    raise SetupError(f"no App Secret for {app_id}: pipe it to --app-secret-stdin, or set {SECRET_ENV}")


def _scan(options: SetupOptions, terminal: Terminal) -> RegisteredApp | None:
    from ally.channels.feishu.app_registration import (
        FEISHU_ACCOUNTS,
        LARK_ACCOUNTS,
        RegistrationFailed,
        register_by_scan,
    )

    def show(url: str, expires_in_s: int) -> None:
        terminal.say("Scan this QR code with the Feishu (or Lark) app on your phone and confirm:")
        for line in _qr_lines(url):
            terminal.say(line)
        terminal.say("No camera at hand? Open this on your phone:")
        terminal.say(url)
        terminal.say(
            f"Waiting for the scan (the code expires in {max(expires_in_s // 60, 1)} min; Ctrl-C stops)..."
        )

    def status(state: str) -> None:
        if state == "domain_switched":
            terminal.say("A Lark tenant: going on with Lark.")

    accounts = options.accounts_url or (LARK_ACCOUNTS if options.lark else FEISHU_ACCOUNTS)
    try:
        registered = register_by_scan(show, accounts_url=accounts, on_status=status)
    except RegistrationFailed as error:
        _finding(terminal, "fail", "app", str(error))
        return None
    terminal.say(f"Created app {registered.app_id}.")
    return registered


def _qr_lines(url: str) -> list[str]:
    out = io.StringIO()
    segno.make(url, error="l").terminal(out=out, compact=True, border=2)
    return out.getvalue().rstrip("\n").splitlines()


def _check_feishu(feishu: FeishuConfig, options: SetupOptions, terminal: Terminal, outcome: Outcome) -> bool:
    """The live checks; False when the credentials themselves do not work (nothing is written then)."""
    from ally.channels.feishu.app_check import check_app

    check = check_app(feishu)
    for finding in check.findings:
        _finding(terminal, finding.status, finding.what, finding.detail, finding.fix)
    if not check.credentials_ok:
        return False
    if check.failed:
        outcome.failed = True
    if feishu.transport != "websocket":
        terminal.say("Transport is webhook: the long connection is not used (docs/feishu-setup.md, Webhook).")
        return True
    _long_connection(feishu, options, terminal, outcome)
    return True


def _long_connection(
    feishu: FeishuConfig, options: SetupOptions, terminal: Terminal, outcome: Outcome
) -> None:
    from ally.channels.feishu.app_check import app_page, check_app
    from ally.channels.feishu.connection_check import ConnectionProbe

    probe = ConnectionProbe(feishu)
    try:
        if not probe.connect(options.connect_timeout_s):
            outcome.failed = True
            _finding(
                terminal,
                "fail",
                "long connection",
                probe.error,
                "only a self-built app with the Bot feature may connect (at most 50 connections): "
                + app_page(feishu),
            )
            return
        _finding(terminal, "ok", "long connection", "connected")
        while (
            outcome.failed
            and terminal.interactive
            and terminal.confirm(
                "The long connection is open, so the console can save its settings now. "
                "Fixed the above? Check again",
                default=True,
            )
        ):
            again = check_app(feishu)
            for finding in again.findings:
                _finding(terminal, finding.status, finding.what, finding.detail, finding.fix)
            outcome.failed = again.failed
        wait_s = options.wait_message_s
        if (
            not wait_s
            and terminal.interactive
            and terminal.confirm("Check that messages arrive (you send the bot a message)?", default=True)
        ):
            wait_s = 120.0
        if not wait_s:
            terminal.say("Receiving: not checked (`--wait-message SECONDS`, then send the bot a message).")
            return
        terminal.say(f"Send the bot a direct message now (waiting up to {wait_s:g} s)...")
        message = probe.wait_for_message(wait_s)
        if message is None:
            outcome.failed = True
            _finding(
                terminal,
                "fail",
                "receiving",
                f"no message arrived within {wait_s:g} s",
                f"subscribe to im.message.receive_v1 by long connection at {app_page(feishu, 'event')}, "
                "publish a version that you may use, then message the bot again",
            )
            return
        _finding(
            terminal,
            "ok",
            "receiving",
            f"{message.text!r} from {message.sender_open_id} (chat {message.chat_id})",
        )
        outcome.owner_hint = outcome.owner_hint or message.sender_open_id
    finally:
        probe.close()


# --- 2. Codex -------------------------------------------------------------------------------------


def _codex(options: SetupOptions, config: AllyConfig, terminal: Terminal, outcome: Outcome) -> None:
    from ally.codex.account import read_login
    from ally.codex.binary import FIX_CODEX, CodexBinaryNotFound, binary_version, find_codex_binary
    from ally.codex.process import CodexStartFailed
    from ally.codex.version import version_mismatch

    terminal.say("")
    terminal.say("== Codex ==")
    try:
        binary = find_codex_binary(config.codex.binary)
    except CodexBinaryNotFound as error:
        outcome.failed = True
        _finding(terminal, "fail", "codex", str(error), FIX_CODEX)
        return
    try:
        version = binary_version(binary)
    except (OSError, subprocess.SubprocessError) as error:
        outcome.failed = True
        _finding(terminal, "fail", "codex", f"{binary} does not run: {error}", FIX_CODEX)
        return
    mismatch = version_mismatch(version)
    _finding(terminal, "warn" if mismatch else "ok", "codex", mismatch or f"{binary}: {version}")
    home = config.codex.resolved_home()
    login_command = f"CODEX_HOME={home} {binary} login"
    for attempt in (1, 2):
        try:
            login = asyncio.run(read_login(binary, home))
        except (CodexStartFailed, OSError, RuntimeError) as error:
            _finding(terminal, "warn", "codex login", f"could not ask Codex: {error}", login_command)
            return
        if login.logged_in:
            _finding(terminal, "ok", "codex login", f"{login.detail} (CODEX_HOME={home})")
            return
        if attempt == 2 or not (
            options.codex_login
            or (terminal.interactive and terminal.confirm("Log in to Codex now?", default=True))
        ):
            break
        subprocess.run([str(binary), "login"], env={**os.environ, "CODEX_HOME": str(home)}, check=False)
    _finding(
        terminal,
        "warn",
        "codex login",
        f"Codex is not logged in (CODEX_HOME={home}); until then only `ally up --demo` answers",
        login_command,
    )


# --- 3. the assistant -------------------------------------------------------------------------------


def _assistant(
    options: SetupOptions, config: AllyConfig, current: dict[str, Any], terminal: Terminal, outcome: Outcome
) -> None:
    terminal.say("")
    terminal.say("== The assistant ==")
    in_file = current.get("codex") if isinstance(current.get("codex"), dict) else {}
    workspace = options.workspace
    default = config.codex.workspace or data_dir() / "workspace"
    if workspace is None and terminal.interactive:
        workspace = Path(terminal.ask("Workspace: the folder it works in", default=str(default)))
    if workspace is not None:
        workspace = workspace.expanduser().resolve()
        if workspace != default or "workspace" in (in_file or {}):
            outcome.wanted.append(Change(section="codex", key="workspace", new=str(workspace)))
    persona = options.persona
    if persona is None and terminal.interactive:
        persona = terminal.ask(
            "Persona: who it is and how it speaks (optional)", default=config.codex.persona
        )
    if persona:
        outcome.wanted.append(Change(section="codex", key="persona", new=persona.strip()))
    terminal.say(f"Workspace: {workspace or default} (created when the config is written)")


# --- 4. owner and access ----------------------------------------------------------------------------


def _owner_and_access(
    options: SetupOptions, config: AllyConfig, terminal: Terminal, outcome: Outcome
) -> None:
    terminal.say("")
    terminal.say("== Owner and access ==")
    owner = options.owner or outcome.owner_hint
    if not options.owner and terminal.interactive:
        # The hint is whoever scanned the QR code or messaged the bot: most likely, not surely, you.
        known = owner or (config.access.approvers[0] if config.access.approvers else "")
        owner = terminal.ask("Your Feishu open_id (ou_…), who approves; empty to skip", default=known).strip()
        if owner and not OWNER_ID.fullmatch(owner):
            raise SetupError(f"owner: expected a Feishu open_id (ou_…), got {owner!r}")
    if owner:
        outcome.wanted.append(Change(section="access", key="approvers", new=[owner]))
        outcome.wanted.append(Change(section="access", key="users", new=[owner]))
        terminal.say(f"Owner {owner}: approves requests, and may always talk to it.")
        if not config.access.users:
            terminal.say("Only the owner may talk to it now; add others to [access] users.")
    else:
        terminal.say("No owner given (`--owner ou_…`): anyone who can message the bot may use it.")
    if options.chats:
        outcome.wanted.append(Change(section="access", key="chats", new=list(options.chats)))


# --- the config file --------------------------------------------------------------------------------


def _write(
    options: SetupOptions,
    path: Path,
    text: str,
    current: dict[str, Any],
    terminal: Terminal,
    outcome: Outcome,
) -> None:
    terminal.say("")
    terminal.say(f"== Config ({path}) ==")
    plan = config_file.plan(dict(current), outcome.wanted, force=options.force)
    if plan.kept:
        for change in plan.kept:
            terminal.say(f"  kept    {change.describe()}  (yours)")
        if terminal.interactive and not options.force and terminal.confirm("Replace these values of yours?"):
            plan = config_file.plan(dict(current), outcome.wanted, force=True)
        elif not options.force:
            terminal.say("  (`ally setup --force` with the same options replaces them)")
    for change in plan.changes:
        terminal.say(f"  {'add' if change.kind == 'add' else 'change':<7} {change.describe()}")
    if not plan.changes:
        terminal.say("Config unchanged.")
        _make_private(path, terminal)
        _create_workspace(path, terminal)
        return
    new_text = config_file.apply(text, plan.changes)
    try:
        import tomllib

        AllyConfig.model_validate(tomllib.loads(new_text))
    except ValidationError as error:  # a value from a flag the config would refuse
        first = error.errors()[0]
        raise SetupError(f"{'.'.join(map(str, first['loc']))}: {first['msg'].lower()}") from None
    config_file.write_private(path, new_text)
    terminal.say(f"Wrote {path} (mode 0600).")
    _create_workspace(path, terminal)


def _make_private(path: Path, terminal: Terminal) -> None:
    if path.exists() and path.stat().st_mode & 0o077:
        path.chmod(0o600)
        terminal.say(f"Made {path} readable by you only (0600): it holds the App Secret.")


def _create_workspace(path: Path, terminal: Terminal) -> None:
    from ally.config import load_config

    workspace = load_config(path).codex.workspace or data_dir() / "workspace"
    workspace = workspace.expanduser()
    if not workspace.is_dir():
        workspace.mkdir(parents=True, exist_ok=True)
        terminal.say(f"Created the workspace {workspace}.")


def _finding(terminal: Terminal, status: str, what: str, detail: str, fix: str = "") -> None:
    terminal.say(f"[{MARKS.get(status, status)}] {what}: {detail}")
    if fix:
        terminal.say(f"       fix: {fix}")


class PromptTerminal:
    """The real terminal: typer's prompts (the secret one hidden), and echo."""

    def __init__(self, *, interactive: bool) -> None:
        self.interactive = interactive

    def say(self, line: str = "") -> None:
        import typer

        typer.echo(line)

    def ask(self, question: str, default: str = "") -> str:
        import typer

        return str(typer.prompt(question, default=default, show_default=bool(default)))

    def ask_secret(self, question: str) -> str:
        import typer

        return str(typer.prompt(question, hide_input=True))

    def confirm(self, question: str, default: bool = False) -> bool:
        import typer

        return bool(typer.confirm(question, default=default))
