"""The owner hears about trouble once per incident, in their private chat, and hears when it is over.

Through the fake Feishu and the real lark-oapi SDK: the alerts workflow runs on the Feishu chats'
worker and sends with the channel's own `send_reply`, to the owner's open_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client

from ally.alerts import alerts_config, open_incidents, start_alerts
from ally.codex.binary import find_codex_binary
from ally.config import AllyConfig, AssistantConfig
from ally.contracts import AlertsConfig, ChatRef
from ally.model_server import Fail, Say
from ally.status import alert_lines
from dev.fake_feishu import FakeFeishu, Message
from tests.feishu_stack import FeishuStack, card_markdown, feishu_stack
from tests.stack import codex_workers, eventually
from tests.test_up import _runtime_worker_pid, start_up, wait_gone
from workflows.alerts import AlertsWorkflow

pytestmark = [pytest.mark.feishu, pytest.mark.faults, pytest.mark.codex]

OWNER = "ou_owner"
DOWN_AFTER_S = 3.0
QUIET_S = 10.0


def owner_messages(fs: FeishuStack) -> list[Message]:
    return [m for m in fs.fake.messages if m.receive_id == OWNER]


async def has_owner_messages(fs: FeishuStack, count: int, within: float = 30.0) -> list[Message]:
    def enough() -> list[Message] | None:
        found = owner_messages(fs)
        return found if len(found) >= count else None

    found = await eventually(enough, within=within, what=f"{count} messages to the owner")
    await asyncio.sleep(2.0)  # room for a duplicate, if one were coming
    assert len(owner_messages(fs)) == count, [card_markdown(m) for m in owner_messages(fs)]
    return found


@contextlib.asynccontextmanager
async def runtime_host(fs: FeishuStack, client: Client) -> AsyncIterator[None]:
    """The runtime worker's queues served while inside; leaving is the worker going away."""
    stack = fs.stack
    async with contextlib.AsyncExitStack() as running:
        for worker in codex_workers(client, stack.runtime, stack.host, stack.discovery_queue):
            await running.enter_async_context(worker)
        yield


async def test_a_runtime_host_down_past_the_threshold_alerts_the_owner_once_and_its_return_resolves_it(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_alerts_runtime", with_runtime_worker=False) as fs:
        workflow_id = f"alerts-{uuid.uuid4().hex[:8]}"
        config = AlertsConfig(
            owner=ChatRef(channel="feishu", chat_id=OWNER, worker_queue=fs.worker_queue),
            discovery_queue=fs.stack.discovery_queue,
            probe_every_s=0.5,
            probe_timeout_s=1.0,
            runtime_down_after_s=DOWN_AFTER_S,
        )
        try:
            async with runtime_host(fs, client):
                await start_alerts(client, config, workflow_id=workflow_id)
                await asyncio.sleep(DOWN_AFTER_S + 1.0)
                assert owner_messages(fs) == []  # a host that answers is no incident

            # Killed, and kept down well past the threshold: one alert, not one per probe.
            (alert,) = await has_owner_messages(fs, 1, within=DOWN_AFTER_S + 20)
            assert "No Codex runtime host has answered" in card_markdown(alert)
            assert alert.chat_id == fs.fake.api.p2p_chat_id(OWNER)
            await asyncio.sleep(DOWN_AFTER_S)
            assert len(owner_messages(fs)) == 1
            view = await open_incidents(client, workflow_id=workflow_id)
            assert view is not None and [i.kind for i in view.open] == ["runtime_down"]
            (status_line,) = alert_lines(view, time.time())
            assert status_line.startswith("Alert #1, open for ")
            assert "No Codex runtime host has answered" in status_line

            # Back: one follow-up.
            async with runtime_host(fs, client):
                messages = await has_owner_messages(fs, 2)
                assert "Resolved" in card_markdown(messages[1])
                view = await open_incidents(client, workflow_id=workflow_id)
                assert view is not None and view.open == [] and len(view.resolved) == 1
                assert alert_lines(view, time.time()) == ["Alerts: none open."]

            # Down again: a new incident, a new alert.
            messages = await has_owner_messages(fs, 3, within=DOWN_AFTER_S + 20)
            assert "No Codex runtime host has answered" in card_markdown(messages[2])
            view = await open_incidents(client, workflow_id=workflow_id)
            assert view is not None and [i.number for i in view.open] == [2]
        finally:
            handle = client.get_workflow_handle_for(AlertsWorkflow.run, workflow_id)
            with contextlib.suppress(Exception):
                await handle.terminate("test over")


async def test_turns_failing_one_after_another_alert_the_owner_once_not_once_per_turn(
    client: Client, tmp_path: Path
) -> None:
    workflow_id = f"alerts-{uuid.uuid4().hex[:8]}"
    async with feishu_stack(client, tmp_path, "cli_alerts_turns", alerts_workflow_id=workflow_id) as fs:
        config = AlertsConfig(
            owner=ChatRef(channel="feishu", chat_id=OWNER, worker_queue=fs.worker_queue),
            discovery_queue=fs.stack.discovery_queue,
            probe_every_s=1.0,
            failures=3,
            failures_window_s=120.0,
            quiet_after_s=QUIET_S,
        )
        fs.fake.add_user("ou_alice", "Alice")
        try:
            await start_alerts(client, config, workflow_id=workflow_id)
            for n in range(4):  # one more than the threshold: still one alert
                fs.stack.model.push(Fail(status=400, body="scripted outage"))
                event = await fs.say("oc_dm_alice", f"try {n}", sender_open_id="ou_alice")
                await fs.wait_for_replies(event["event"]["message"]["message_id"])
                if n == 1:
                    assert owner_messages(fs) == []  # two failures are no incident yet

            (alert,) = await has_owner_messages(fs, 1)
            assert "turns failed within" in card_markdown(alert)
            view = await open_incidents(client, workflow_id=workflow_id)
            assert view is not None and [i.kind for i in view.open] == ["turns_failing"]

            # Quiet for a while: one follow-up, and the chat was never told about the owner's alert.
            messages = await has_owner_messages(fs, 2, within=QUIET_S + 20)
            assert "Resolved" in card_markdown(messages[1]) and "turns failing" in card_markdown(messages[1])
            assert all(m.receive_id != OWNER for m in fs.replies_to(event["event"]["message"]["message_id"]))
        finally:
            handle = client.get_workflow_handle_for(AlertsWorkflow.run, workflow_id)
            with contextlib.suppress(Exception):
                await handle.terminate("test over")


@pytest.mark.codex
def test_with_ally_up_a_codex_that_stops_starting_alerts_once_per_incident_and_resolves_when_it_starts(
    tmp_path: Path,
) -> None:
    home = tmp_path / "ally-home"
    broken = tmp_path / "codex-broken"  # while this file exists, Codex dies at start
    codex = tmp_path / "codex"
    codex.write_text(
        f"#!/bin/sh\nif [ -e {broken} ]; then echo 'codex: broken install' >&2; exit 3; fi\n"
        f'exec {find_codex_binary()} "$@"\n'
    )
    codex.chmod(0o755)
    app_id = "cli_alerts_ally_up"
    with FakeFeishu(app_id=app_id) as fake:
        up = start_up(
            home,
            "--demo",
            env={
                "WORK_ALLY_FEISHU__APP_ID": app_id,
                "WORK_ALLY_FEISHU__APP_SECRET": fake.app_secret,
                "WORK_ALLY_FEISHU__DOMAIN": fake.domain,
                "WORK_ALLY_CODEX__BINARY": str(codex),
                "WORK_ALLY_ALERTS__OWNER": OWNER,
                "WORK_ALLY_ALERTS__RUNTIME_DOWN_AFTER_SECONDS": str(DOWN_AFTER_S),
                "WORK_ALLY_ALERTS__PROBE_EVERY_SECONDS": "0.5",
                "WORK_ALLY_ALERTS__PROBE_TIMEOUT_SECONDS": "1",
                "WORK_ALLY_SUPERVISOR__RESTART_BACKOFF_SECONDS": "1",
                "WORK_ALLY_ALERTS__QUIET_SECONDS": str(QUIET_S),
            },
        )
        try:

            def to_owner(*words: str) -> list[Message]:
                return [
                    m
                    for m in fake.messages
                    if m.receive_id == OWNER and all(w in card_markdown(m) for w in words)
                ]

            time.sleep(DOWN_AFTER_S + 1)
            assert to_owner() == []
            broken.touch()
            pid = _runtime_worker_pid(home)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)  # restarted by `ally up`, and now Codex will not start

            fake.wait_for(lambda: to_owner("No Codex runtime host has answered"), timeout=DOWN_AFTER_S + 40)
            time.sleep(DOWN_AFTER_S + 2)  # still down, restarts still failing: no second alert of either
            assert len(to_owner("No Codex runtime host has answered")) == 1
            (crashed,) = to_owner("The runtime-worker died")
            assert "`ally logs runtime-worker`" in card_markdown(crashed)

            broken.unlink()
            fake.wait_for(lambda: len(to_owner("Resolved")) >= 2, timeout=60 + QUIET_S)
            time.sleep(2)
            assert len(to_owner()) == 4  # two incidents, each opened once and resolved once
            assert to_owner("Resolved", "no Codex runtime host answering")
            assert to_owner("Resolved", "the runtime-worker crashing")
        finally:
            up.stop()
        assert wait_gone(up.marker) == {}


async def test_a_failed_turn_with_no_alerts_running_leaves_the_chat_answering(
    client: Client, tmp_path: Path
) -> None:
    # A conversation configured to tell alerts that are not running (no gateway started them yet).
    absent = f"alerts-absent-{uuid.uuid4().hex[:8]}"
    async with feishu_stack(client, tmp_path, "cli_alerts_absent", alerts_workflow_id=absent) as fs:
        fs.fake.add_user("ou_alice", "Alice")
        fs.stack.model.push(Fail(status=400, body="scripted outage"), Say(text="back to normal"))
        first = await fs.say("oc_dm_alice", "try once", sender_open_id="ou_alice")
        (failed,) = await fs.wait_for_replies(first["event"]["message"]["message_id"])
        assert "scripted outage" in card_markdown(failed)
        second = await fs.say("oc_dm_alice", "try again", sender_open_id="ou_alice")
        (answer,) = await fs.wait_for_replies(second["event"]["message"]["message_id"])
        assert "back to normal" in card_markdown(answer)


async def test_a_pinned_host_down_alerts_the_owner_naming_the_host_and_its_assistants_while_others_answer(
    client: Client, tmp_path: Path
) -> None:
    async with feishu_stack(client, tmp_path, "cli_alerts_hosts") as fs:
        workflow_id = f"alerts-{uuid.uuid4().hex[:8]}"
        desk = f"desk-{uuid.uuid4().hex[:8]}"  # beta's host; its runtime worker is not running
        config = AlertsConfig(
            owner=ChatRef(channel="feishu", chat_id=OWNER, worker_queue=fs.worker_queue),
            discovery_queue=fs.stack.discovery_queue,
            hosts={fs.stack.host: ["alpha"], desk: ["beta"]},
            probe_every_s=0.5,
            probe_timeout_s=1.0,
            runtime_down_after_s=DOWN_AFTER_S,
        )
        try:
            await start_alerts(client, config, workflow_id=workflow_id)
            (alert,) = await has_owner_messages(fs, 1, within=DOWN_AFTER_S + 20)
            text = card_markdown(alert)
            assert f"The runtime host {desk} has not answered for" in text and "beta cannot answer" in text
            view = await open_incidents(client, workflow_id=workflow_id)
            assert view is not None and [(i.kind, i.subject) for i in view.open] == [("host_down", desk)]

            # desk's runtime worker starts (a connection of its own, as on another machine): resolved.
            elsewhere = await Client.connect(
                client.service_client.config.target_host,
                namespace=client.namespace,
                data_converter=client.data_converter,
            )
            async with contextlib.AsyncExitStack() as running:
                for worker in codex_workers(elsewhere, fs.stack.runtime, desk, fs.stack.discovery_queue):
                    await running.enter_async_context(worker)
                messages = await has_owner_messages(fs, 2)
                assert "Resolved (after " in card_markdown(messages[1])
                assert f"the runtime host {desk} not answering is over" in card_markdown(messages[1])
        finally:
            handle = client.get_workflow_handle_for(AlertsWorkflow.run, workflow_id)
            with contextlib.suppress(Exception):
                await handle.terminate("test over")


def test_the_alerts_learn_each_pinned_host_and_its_assistants_from_config_toml() -> None:
    config = AllyConfig(
        assistants={
            "alpha": AssistantConfig(name="Alpha", host="desk", workspace=Path("/w/a")),
            "beta": AssistantConfig(host="desk", workspace=Path("/w/b")),
            "gamma": AssistantConfig(host="laptop", workspace=Path("/w/c")),
            "delta": AssistantConfig(workspace=Path("/w/d")),
        }
    )
    assert alerts_config(config, OWNER, "q").hosts == {"desk": ["Alpha", "beta"], "laptop": ["gamma"]}
