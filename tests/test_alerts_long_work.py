"""The owner hears, once per incident and once more when it is over, that Codex reached the account's
usage limit, or that Codex is logged out. Through the fake Feishu and the real lark-oapi SDK, with
the real Codex behind the scripted model.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from ally.alerts import open_incidents, start_alerts
from ally.codex.binary import find_codex_binary
from ally.contracts import AlertsConfig, ChatRef
from ally.model_server import Say, ScriptedModelServer, UsageLimit, write_codex_home
from tests.feishu_stack import FeishuStack, card_markdown, feishu_stack
from tests.stack import RuntimeHost
from tests.test_alerts import OWNER, has_owner_messages, owner_messages
from workflows.alerts import AlertsWorkflow

pytestmark = [pytest.mark.feishu, pytest.mark.codex]


def answered(fs: FeishuStack, question: str) -> bool:
    return any(text in card_markdown(r) for r in fs.replies_to(question) for text in ("one done", "two done"))


async def test_a_usage_limit_alerts_the_owner_once_for_all_waiting_chats_and_resolves_at_the_reset(
    client: Client, tmp_path: Path
) -> None:
    workflow_id = f"alerts-{uuid.uuid4().hex[:8]}"
    async with feishu_stack(client, tmp_path, "cli_alerts_limit", alerts_workflow_id=workflow_id) as fs:
        config = AlertsConfig(
            owner=ChatRef(channel="feishu", chat_id=OWNER, worker_queue=fs.worker_queue),
            discovery_queue=fs.stack.discovery_queue,
            probe_every_s=1.0,
        )
        for person in ("ou_alice", "ou_bob"):
            fs.fake.add_user(person, person)
        try:
            await start_alerts(client, config, workflow_id=workflow_id)
            fs.stack.model.push(UsageLimit(resets_in_s=8), UsageLimit(resets_in_s=8))
            first = await fs.say("oc_dm_alice", "job one", sender_open_id="ou_alice")
            await fs.wait_for_replies(first["event"]["message"]["message_id"])  # told of the limit
            second = await fs.say("oc_dm_bob", "job two", sender_open_id="ou_bob")
            await fs.wait_for_replies(second["event"]["message"]["message_id"])
            fs.stack.model.push(Say(text="one done"), Say(text="two done"))

            (alert,) = await has_owner_messages(fs, 1)  # two chats wait: one incident
            assert "usage limit" in card_markdown(alert) and "resets at" in card_markdown(alert)
            view = await open_incidents(client, workflow_id=workflow_id)
            assert view is not None and [i.kind for i in view.open] == ["usage_limit"]

            messages = await has_owner_messages(fs, 2, within=40)
            assert "Resolved" in card_markdown(messages[1])
            # Beside the limit notice and the answer, a progress card may settle into "Done in …".
            questions = [event["event"]["message"]["message_id"] for event in (first, second)]
            await fs.fake.async_wait_for(lambda: all(answered(fs, q) for q in questions), timeout=40)
            view = await open_incidents(client, workflow_id=workflow_id)
            assert view is not None and view.open == [] and len(view.resolved) == 1
        finally:
            with contextlib.suppress(Exception):
                await client.get_workflow_handle_for(AlertsWorkflow.run, workflow_id).terminate("test over")


async def test_a_logged_out_codex_alerts_the_owner_once_and_logging_in_resolves_it(
    client: Client, tmp_path: Path
) -> None:
    """A host whose model provider needs an OpenAI login and has none: Codex says so itself
    (`account/read`). The owner logs in from a terminal (`codex login --with-api-key`), which the
    running Codex sees at once."""
    async with feishu_stack(client, tmp_path, "cli_alerts_login", with_runtime_worker=False) as fs:
        workflow_id = f"alerts-{uuid.uuid4().hex[:8]}"
        with ScriptedModelServer() as model:
            codex_home = write_codex_home(tmp_path / "needs-login", model.base_url)
            toml = codex_home / "config.toml"
            toml.write_text(
                toml.read_text().replace("requires_openai_auth = false", "requires_openai_auth = true")
            )
            home = tmp_path / "login-home"
            home.mkdir()
            host = RuntimeHost(
                client=client,
                name=f"laptop-{uuid.uuid4().hex[:6]}",
                discovery_queue=f"discovery-{uuid.uuid4().hex[:8]}",
                model=model,
                codex_home=codex_home,
                home=home,
            )
            await host.start()
            config = AlertsConfig(
                owner=ChatRef(channel="feishu", chat_id=OWNER, worker_queue=fs.worker_queue),
                discovery_queue=host.discovery_queue,
                probe_every_s=0.5,
                probe_timeout_s=2.0,
            )
            try:
                await start_alerts(client, config, workflow_id=workflow_id)
                (alert,) = await has_owner_messages(fs, 1)
                text = card_markdown(alert)
                assert "logged out" in text and host.name in text and "codex login" in text
                await asyncio.sleep(2.0)  # probes go on: still one alert
                assert len(owner_messages(fs)) == 1

                login = await asyncio.to_thread(
                    subprocess.run,
                    [str(find_codex_binary()), "login", "--with-api-key"],
                    input=b"sk-test-not-a-real-key\n",
                    env={"CODEX_HOME": str(codex_home), "HOME": str(home), "PATH": "/usr/bin:/bin"},
                    capture_output=True,
                    timeout=60,
                )
                assert login.returncode == 0, login.stderr
                messages = await has_owner_messages(fs, 2)
                assert "Resolved" in card_markdown(messages[1]) and host.name in card_markdown(messages[1])
                view = await open_incidents(client, workflow_id=workflow_id)
                assert (
                    view is not None and view.open == [] and [i.kind for i in view.resolved] == ["logged_out"]
                )
            finally:
                with contextlib.suppress(Exception):
                    await client.get_workflow_handle_for(AlertsWorkflow.run, workflow_id).terminate(
                        "test over"
                    )
                await host.stop()
