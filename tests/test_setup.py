"""`ally setup`, run as a person runs it, against the fake Feishu and the real lark-oapi SDK.

Each test runs `.venv/bin/ally setup …` as a process with a data dir of its own; the fake plays the
Open API, the long connection, the app's console and the scan-to-create registration, so what
setup checks and writes is what Feishu would have answered. Two tests then run `ally up --demo` on
the config setup wrote and have it answer a message over the real long connection.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from ally import config_file
from ally.codex.binary import FIX_CODEX, PINNED_INSTALL, CodexBinaryNotFound, codex_on_path, find_codex_binary
from ally.codex.version import CODEX_VERSION
from ally.config import load_config
from ally.inbound import thread_settings
from ally.model_server import Say
from ally.processes import free_local_port
from dev.fake_feishu import FakeFeishu, message_event
from tests.processes import processes_with_env
from tests.stack import eventually, running_stack
from tests.test_up import start_up

ALLY = Path(sys.executable).parent / "ally"
SECRET = "s3cr3t-only-in-the-file-9f2c"


class SetupRun:
    def __init__(self, process: subprocess.Popen[str], home: Path) -> None:
        self.process = process
        self.home = home
        self.lines: list[str] = []

    def read_until(self, wanted: str, timeout: float = 60) -> str:
        """Lines as setup prints them, up to the first that contains `wanted`."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if wanted in line:
                return line.strip()
        raise AssertionError(f"setup never printed {wanted!r}:\n" + "\n".join(self.lines))

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, "\n".join(self.lines) + out + err


def setup_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORK_ALLY_", "TEMPORAL_"))}
    env.update(
        WORK_ALLY_HOME=str(home),
        WORK_ALLY_CODEX__HOME=str(home / "codex-home"),
        # `ally doctor` ends setup: free ports, so another test's dev server is no failure here.
        WORK_ALLY_TEMPORAL__PORT=str(free_local_port()),
        WORK_ALLY_TEMPORAL__UI_PORT=str(free_local_port()),
        PYTHONUNBUFFERED="1",
        # Codex makes no sandbox helper links for a CODEX_HOME inside the temporary directory, and
        # doctor rightly fails that (docs/operations.md, "The sandbox"): the test dir is not "temp".
        TMPDIR=str(home.parent / "tmp"),
    )
    (home.parent / "tmp").mkdir(parents=True, exist_ok=True)
    return env


def start_setup(home: Path, *args: str, secret: str | None = None) -> SetupRun:
    process = subprocess.Popen(
        [str(ALLY), "setup", "--yes", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=setup_env(home),
    )
    assert process.stdin is not None
    if secret is not None:
        process.stdin.write(secret + "\n")
    process.stdin.close()
    process.stdin = None  # closed: setup reads nothing more (and communicate() must not flush it)
    return SetupRun(process, home)


def run_setup(home: Path, *args: str, secret: str | None = None) -> tuple[int, str]:
    return start_setup(home, *args, secret=secret).finish()


def pasted(fake: FakeFeishu, *args: str) -> list[str]:
    return ["--app-id", fake.app_id, "--app-secret-stdin", "--domain", fake.domain, *args]


def fixes(output: str) -> list[str]:
    """The fix lines of the Feishu part of the output."""
    feishu = output.split("== Feishu app ==", 1)[-1].split("== Codex ==", 1)[0]
    return [line.strip() for line in feishu.splitlines() if line.strip().startswith("fix:")]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "ally-home"
    for pid in processes_with_env(f"WORK_ALLY_HOME={tmp_path / 'ally-home'}"):
        os.kill(pid, signal.SIGKILL)


def answer_over_feishu(home: Path, fake: FakeFeishu, sender: str) -> str:
    """`ally up --demo` on the config setup wrote; a message over the long connection; the answer."""
    up = start_up(home, "--demo")
    try:
        assert any("gateway" in line and "Feishu websocket" in line for line in up.output), up.output
        fake.wait_for(lambda: fake.long_connection.connection_count, timeout=30)
        event = message_event("oc_dm_owner", "hello after setup", sender_open_id=sender, app_id=fake.app_id)
        assert fake.push_event(event, timeout=10)["code"] == 200
        question = event["event"]["message"]["message_id"]
        reply = fake.wait_for(
            lambda: next(
                (m for m in fake.messages if m.parent_id == question and m.msg_type == "interactive"), None
            ),
            timeout=60,
        )
        return json.dumps(reply.content, ensure_ascii=False)
    finally:
        up.stop()


@pytest.mark.feishu
@pytest.mark.codex
def test_scan_to_create_makes_an_app_that_ally_up_then_answers_through(home: Path) -> None:
    with FakeFeishu(app_id="cli_setup_scan", app_secret=SECRET) as fake:
        fake.remove_scope("im:resource")  # the app does not exist yet: the scan creates it whole
        run = start_setup(
            home,
            "--scan",
            "--accounts-url",
            fake.domain,
            "--domain",
            fake.domain,
            "--workspace",
            str(home / "work"),
            "--wait-message",
            "30",
        )
        url = run.read_until("/page/launcher?")
        assert any("▀" in line or "█" in line for line in run.lines), "no QR code was drawn"
        # On the phone: the page creates the app with what setup asked it to pre-fill.
        fake.scan(url, open_id="ou_owner")
        run.read_until("Send the bot a direct message now")
        fake.wait_for(lambda: fake.long_connection.connection_count, timeout=30)
        fake.push_event(
            message_event("oc_dm_owner", "are you there?", sender_open_id="ou_owner", app_id=fake.app_id)
        )
        code, output = run.finish()

        assert code == 0, output
        assert "Created app cli_setup_scan" in output
        assert "[ok  ] scopes: every scope work-ally uses is granted" in output  # asked for on the page
        assert "[ok  ] events: subscribed to every event work-ally uses, by websocket" in output
        assert "[ok  ] long connection: connected" in output
        assert "'are you there?' from ou_owner" in output
        # Codex was asked whether it is logged in, and said no: the one command to run.
        assert "Codex is not logged in" in output and f"CODEX_HOME={home / 'codex-home'}" in output
        assert "== ally doctor ==" in output
        assert SECRET not in output

        config_file = home / "config.toml"
        assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
        written = tomllib.loads(config_file.read_text())
        assert written["feishu"] == {"app_id": "cli_setup_scan", "app_secret": SECRET, "domain": fake.domain}
        assert written["access"] == {"approvers": ["ou_owner"], "users": ["ou_owner"]}  # who scanned
        assert (home / "work").is_dir()

        answer = answer_over_feishu(home, fake, sender="ou_owner")
        assert "(demo model) You said: hello after setup" in answer


@pytest.mark.feishu
@pytest.mark.codex
def test_pasted_credentials_are_checked_live_and_ally_up_answers_with_them(home: Path) -> None:
    with FakeFeishu(app_id="cli_setup_pasted", app_secret=SECRET) as fake:
        code, output = run_setup(
            home, *pasted(fake, "--owner", "ou_alice", "--persona", "You are Ally, brief."), secret=SECRET
        )
        assert code == 0, output
        assert "[ok  ] credentials: app cli_setup_pasted, bot 'Ally'" in output
        assert "[ok  ] long connection: connected" in output
        assert "add     [feishu] app_secret = <new secret>" in output
        assert SECRET not in output
        written = tomllib.loads((home / "config.toml").read_text())
        assert written["codex"]["persona"] == "You are Ally, brief."
        assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600

        answer = answer_over_feishu(home, fake, sender="ou_alice")
        assert "(demo model) You said: hello after setup" in answer


@pytest.mark.feishu
def test_a_wrong_secret_says_where_to_copy_it_again_and_writes_nothing(home: Path) -> None:
    with FakeFeishu(app_id="cli_setup_wrong", app_secret=SECRET) as fake:
        code, output = run_setup(home, *pasted(fake), secret="not-the-secret")
    assert code == 1, output
    assert "Feishu refused App ID cli_setup_wrong with this App Secret" in output
    assert fixes(output) == [
        "fix: copy the App ID and App Secret again from https://open.feishu.cn/app/cli_setup_wrong/baseinfo, "
        "then run `ally setup --app-id cli_setup_wrong --app-secret-stdin --force`"
    ]
    assert "long connection" not in output  # nothing more is tried with credentials Feishu refused
    assert not (home / "config.toml").exists()
    assert "not-the-secret" not in output


@pytest.mark.feishu
def test_a_missing_scope_gives_the_link_that_adds_it(home: Path) -> None:
    with FakeFeishu(app_id="cli_setup_scope", app_secret=SECRET) as fake:
        fake.remove_scope("im:message.p2p_msg:readonly")
        code, output = run_setup(home, *pasted(fake), secret=SECRET)
    assert code == 1, output
    assert "[FAIL] scope im:message.p2p_msg:readonly: missing: needed to receive direct messages" in output
    assert fixes(output) == [
        "fix: add it at https://open.feishu.cn/app/cli_setup_scope/auth?q=im:message.p2p_msg:readonly"
        "&op_from=openapi&token_type=tenant and publish a new version"
    ]
    # The credentials work: they are saved, so a second run after the fix needs no flags.
    assert tomllib.loads((home / "config.toml").read_text())["feishu"]["app_id"] == "cli_setup_scope"


@pytest.mark.feishu
def test_a_scope_added_but_not_granted_says_to_publish_a_version(home: Path) -> None:
    with FakeFeishu(app_id="cli_setup_grant", app_secret=SECRET) as fake:
        fake.withhold_scope("im:message:send_as_bot")
        fake.withhold_scope("im:message")
        code, output = run_setup(home, *pasted(fake), secret=SECRET)
    assert code == 1, output
    assert "[FAIL] scope im:message:send_as_bot: added but not granted yet" in output
    assert "fix: publish a new version of the app" in output


@pytest.mark.feishu
def test_a_missing_event_subscription_gives_the_console_link(home: Path) -> None:
    with FakeFeishu(app_id="cli_setup_event", app_secret=SECRET) as fake:
        fake.unsubscribe_event("im.message.receive_v1")
        code, output = run_setup(home, *pasted(fake), secret=SECRET)
    assert code == 1, output
    assert (
        "[FAIL] event im.message.receive_v1: not subscribed: needed so that messages reach the assistant"
        in output
    )
    assert fixes(output) == ["fix: add it at https://open.feishu.cn/app/cli_setup_event/event (Add Events)"]


@pytest.mark.feishu
def test_events_not_sent_over_the_long_connection_say_which_console_choice(home: Path) -> None:
    with FakeFeishu(app_id="cli_setup_mode", app_secret=SECRET) as fake:
        fake.deliver_events_by("")
        code, output = run_setup(home, *pasted(fake), secret=SECRET)
    assert code == 1, output
    assert "[FAIL] event delivery: events go by nothing (not chosen), not by websocket" in output
    assert fixes(output) == [
        'fix: at https://open.feishu.cn/app/cli_setup_mode/event choose "Receive events through persistent '
        'connection" and save (the console saves it only while `ally setup` or `ally up` is connected)'
    ]


@pytest.mark.feishu
def test_a_second_run_changes_nothing_unless_asked(home: Path) -> None:
    home.mkdir(parents=True)
    config_file = home / "config.toml"
    config_file.write_text(
        '# my notes\n[policy]\nmode = "read_only"  # careful\n\n[codex]\nsandbox = "read-only"\n'
    )
    with FakeFeishu(app_id="cli_setup_again", app_secret=SECRET) as fake:
        first_args = pasted(fake, "--workspace", str(home / "work"), "--owner", "ou_alice")
        code, output = run_setup(home, *first_args, secret=SECRET)
        assert code == 0, output
        written = config_file.read_text()
        assert written.startswith('# my notes\n[policy]\nmode = "read_only"  # careful\n')  # the person's own
        assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
        before = (written, config_file.stat().st_mtime_ns)

        code, output = run_setup(home, *first_args, secret=SECRET)
        assert code == 0, output
        assert "Config unchanged." in output
        assert (config_file.read_text(), config_file.stat().st_mtime_ns) == before

        # A different workspace replaces the person's value only when asked to.
        other = str(home / "elsewhere")
        code, output = run_setup(home, "--workspace", other)
        assert code == 0, output
        assert f'kept    [codex] workspace: "{home / "work"}" -> "{other}"  (yours)' in output
        assert "`ally setup --force` with the same options replaces them" in output
        assert (config_file.read_text(), config_file.stat().st_mtime_ns) == before

        code, output = run_setup(home, "--workspace", other, "--force")
        assert code == 0, output
        assert f'change  [codex] workspace: "{home / "work"}" -> "{other}"' in output
        after = tomllib.loads(config_file.read_text())
        assert after["codex"] == {"sandbox": "read-only", "workspace": other}
        assert after["policy"] == {"mode": "read_only"} and after["feishu"]["app_secret"] == SECRET
        assert Path(other).is_dir()
        assert SECRET not in output


@pytest.mark.feishu
def test_bad_input_is_refused_in_one_line_before_anything_runs(home: Path) -> None:
    code, output = run_setup(home, "--owner", "alice")
    assert code == 2
    assert "ally: --owner: expected a Feishu open_id (ou_…), got 'alice'" in output
    assert "Traceback" not in output and "Error" not in output
    code, output = run_setup(home, "--app-id", "cli_x", "--app-secret-stdin", secret="")
    assert code == 2 and "standard input held no App Secret" in output


def test_the_codex_on_path_is_followed_from_npm_shim_to_native_binary(tmp_path: Path) -> None:
    shim = PINNED_INSTALL / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "codex").symlink_to(shim)
    assert codex_on_path(str(tmp_path / "bin")) == find_codex_binary()
    assert codex_on_path(str(tmp_path / "nothing-here")) is None


def test_without_a_clone_codex_comes_from_path_and_its_absence_names_the_npm_command(tmp_path: Path) -> None:
    shim = PINNED_INSTALL / "node_modules" / "@openai" / "codex" / "bin" / "codex.js"
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "codex").symlink_to(shim)
    no_clone = tmp_path / "site-packages" / "dev" / "codex"  # where an installed package would look
    found = find_codex_binary(install_root=no_clone, path=str(tmp_path / "bin"))
    assert found == find_codex_binary()
    with pytest.raises(CodexBinaryNotFound) as missing:
        find_codex_binary(install_root=no_clone, path=str(tmp_path / "nothing-here"))
    assert (
        str(missing.value) == f"Codex is not installed: no pinned install in {no_clone} and no codex on PATH"
    )
    assert f"npm install -g @openai/codex@{CODEX_VERSION}" in FIX_CODEX


@pytest.mark.codex
async def test_the_persona_set_up_reaches_the_model_with_every_new_thread(
    client: Client, tmp_path: Path
) -> None:
    config_file = tmp_path / "config.toml"
    workspace = tmp_path / "workspace"
    config_file.write_text(
        f'[codex]\nworkspace = "{workspace}"\npersona = "You are Ally. Answer in one short sentence."\n'
    )
    settings = thread_settings(load_config(config_file, environ={}))  # what a new chat starts with
    async with running_stack(client, tmp_path) as stack:
        assert stack.workspace == workspace
        stack.model.push(Say(text="Hi."))
        chat = stack.chat()
        await stack.send(chat, "hello", settings=settings)
        await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
    request = json.dumps(stack.model.received()[-1])
    assert "You are Ally. Answer in one short sentence." in request


def test_the_config_is_edited_in_place_and_an_unusual_file_is_refused_not_rewritten() -> None:
    text = '[access]\nusers = [\n  "ou_a",  # Alice\n]\napprovers = []\n\n[policy]\nmode = "ask"\n'
    planned = config_file.plan(
        tomllib.loads(text), [config_file.Change(section="access", key="users", new=["ou_b"])]
    )
    edited = config_file.apply(text, planned.changes)
    assert edited == '[access]\nusers = ["ou_a", "ou_b"]\napprovers = []\n\n[policy]\nmode = "ask"\n'
    dotted = 'access.users = ["ou_a"]\n'
    with pytest.raises(config_file.ConfigEditError, match=r"cannot change \[access\] users in place"):
        config_file.apply(dotted, [config_file.Change(section="access", key="users", new=["ou_b"])])
