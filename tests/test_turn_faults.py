"""Durable turns under faults: a killed runtime worker, a restarted Temporal server, a chat's
worker gone mid-turn.

Each test kills or restarts a real process and checks what the person in the chat sees: an honest
message within a minute, never silence, never a reply sent twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from ally import names
from ally.channels.console import ConsoleChannel, ConsoleEvent
from ally.chat_client import ChatClient
from ally.contracts import Decision, RuntimeLocation
from ally.model_server import Hang, RunCommand, Say
from ally.processes import die_with_parent_hook, free_local_port
from ally.temporal_server import dev_server_command
from tests.processes import temporal_when_up
from tests.stack import PERSON, Stack, codex_workers, eventually, running_stack
from workflows.turn import EXPIRED_RUNTIME_GONE, RUN_TURN_HEARTBEAT

pytestmark = [pytest.mark.codex, pytest.mark.faults]


@contextmanager
def runtime_worker_process(
    client: Client, home: Path, codex_home: Path, host: str
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m workers.runtime` exactly as `ally up` starts it, pointed at the test's server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORK_ALLY_", "TEMPORAL_"))}
    env.update(
        WORK_ALLY_HOME=str(home),
        WORK_ALLY_TEMPORAL__ADDRESS=client.service_client.config.target_host,
        WORK_ALLY_CODEX__HOME=str(codex_home),
        WORK_ALLY_RUNTIME__HOST=host,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.runtime"],
        env=env,
        start_new_session=True,
        preexec_fn=die_with_parent_hook(),
        stdout=subprocess.DEVNULL,
        stderr=open(home / "runtime-worker.log", "ab"),  # noqa: SIM115
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def wait_polled(client: Client, queue: str) -> None:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    async def pollers() -> int:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
            )
        )
        return len(described.pollers)

    deadline = asyncio.get_running_loop().time() + 60
    while await pollers() == 0:
        assert asyncio.get_running_loop().time() < deadline, f"nothing polls {queue}"
        await asyncio.sleep(0.2)


async def test_kill_9_of_the_runtime_worker_mid_turn_ends_honestly_and_the_next_message_works(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        home = tmp_path / "ally-home"
        home.mkdir()
        codex_home = stack.runtime.codex_home
        location = RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue)
        chat = stack.chat()
        stack.model.push(Hang(seconds=120))
        with runtime_worker_process(client, home, codex_home, stack.host) as worker:
            await wait_polled(client, stack.pinned_queue)
            message = await stack.send(chat, "a long job", runtime=location)
            await eventually(lambda: stack.model.received(), what="the turn to reach the model")
            # Mid-turn = Codex is working and `run_turn` has heartbeated the submitted turn, which
            # is what the Temporal UI shows as the pending activity's details.
            turn = stack.turn_handle(chat, message)
            for _ in range(600):
                pending = (await turn.describe()).raw_description.pending_activities
                if any(a.heartbeat_details.payloads for a in pending):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("run_turn never reported the submitted turn")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        started = asyncio.get_running_loop().time()
        # The supervisor restarts a dead worker; do what it does.
        with runtime_worker_process(client, home, codex_home, stack.host):
            problem = await eventually(
                lambda: stack.replies(chat, tone="problem"), within=60, what="an honest message"
            )
            assert asyncio.get_running_loop().time() - started < 60
            assert "/retry" in problem[0].text
            assert "restarted" in problem[0].text or "did not answer" in problem[0].text
            # The retry read the killed turn back; it did not submit the prompt a second time.
            prompts = [r for r in stack.model.received() if "a long job" in str(r)]
            assert len(prompts) == 1

            stack.model.push(Say(text="back in business"))
            await stack.send(chat, "are you there?", runtime=location)
            answers = await eventually(
                lambda: stack.replies(chat, tone="answer"), within=60, what="the next answer"
            )
            assert [a.text for a in answers] == ["back in business"]


async def _mid_turn(stack: Stack, turn: WorkflowHandle[Any, Any]) -> None:
    """Until Codex works on the turn and `run_turn` has heartbeated it (what the UI shows)."""
    await eventually(lambda: stack.model.received(), what="the turn to reach the model")
    for _ in range(600):
        pending = (await turn.describe()).raw_description.pending_activities
        if any(a.heartbeat_details.payloads for a in pending):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("run_turn never reported the submitted turn")


async def test_a_killed_runtime_worker_is_told_to_the_chat_within_5_seconds(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        home = tmp_path / "ally-home"
        home.mkdir()
        location = RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue)
        chat = stack.chat()
        stack.model.push(Hang(seconds=120))
        with runtime_worker_process(client, home, stack.runtime.codex_home, stack.host) as worker:
            await wait_polled(client, stack.pinned_queue)
            message = await stack.send(chat, "a long job", runtime=location)
            await _mid_turn(stack, stack.turn_handle(chat, message))
            os.killpg(worker.pid, signal.SIGKILL)
            killed = asyncio.get_running_loop().time()
            worker.wait()
        await asyncio.sleep(1.0)  # `ally up` restarts a dead part after 1 s
        with runtime_worker_process(client, home, stack.runtime.codex_home, stack.host):
            problem = await eventually(
                lambda: stack.replies(chat, tone="problem"), within=30, what="an honest message"
            )
            told_after = asyncio.get_running_loop().time() - killed
        assert "restarted" in problem[0].text and "/retry" in problem[0].text
        assert told_after < 5.0, f"told {told_after:.1f} s after the kill"


async def test_a_stalled_runtime_worker_that_misses_its_heartbeats_raises_no_false_alarm(
    client: Client, tmp_path: Path
) -> None:
    """A slow machine: the worker freezes longer than the heartbeat timeout mid-turn. The retry
    finds the turn still running on the same worker and follows it on; the person gets the answer
    and nothing else."""
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        home = tmp_path / "ally-home"
        home.mkdir()
        location = RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue)
        chat = stack.chat()
        stack.model.push(Hang(seconds=8, then=Say(text="slow but fine")))
        with runtime_worker_process(client, home, stack.runtime.codex_home, stack.host) as worker:
            await wait_polled(client, stack.pinned_queue)
            message = await stack.send(chat, "a long job", runtime=location)
            turn = stack.turn_handle(chat, message)
            await _mid_turn(stack, turn)
            os.kill(worker.pid, signal.SIGSTOP)  # the worker only; Codex goes on working
            await asyncio.sleep(RUN_TURN_HEARTBEAT.total_seconds() + 2)
            os.kill(worker.pid, signal.SIGCONT)
            result = await turn.result()
            await asyncio.sleep(1.0)  # room for a late second message, if one were coming
        assert result.status == "completed"
        assert [(r.tone, r.text) for r in stack.replies(chat)] == [("answer", "slow but fine")]
        attempts = [
            event.activity_task_started_event_attributes.attempt
            async for event in turn.fetch_history_events()
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        assert attempts[0] > 1  # the stall did cost run_turn's first attempt: a retry followed on
        assert len([r for r in stack.model.received() if "a long job" in str(r)]) == 1


async def test_approving_right_after_the_runtime_died_says_at_once_that_nothing_waits_any_more(
    client: Client, tmp_path: Path
) -> None:
    """Two chats wait for approval when the runtime worker is killed. One is approved from the
    terminal half a second later, the other once the kill is noticed: neither is reported as
    approved, both cards say the request expired because the runtime restarted, nothing ran."""
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        home = tmp_path / "ally-home"
        home.mkdir()
        location = RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WORK_ALLY_", "TEMPORAL_"))}
        env.update(
            WORK_ALLY_HOME=str(home / "cli"),
            WORK_ALLY_TEMPORAL__ADDRESS=client.service_client.config.target_host,
        )
        early, late = stack.chat(), stack.chat()
        targets = {chat.chat_id: stack.workspace / f"{chat.chat_id}.txt" for chat in (early, late)}
        with runtime_worker_process(client, home, stack.runtime.codex_home, stack.host) as worker:
            await wait_polled(client, stack.pinned_queue)
            for chat in (early, late):
                stack.model.push(RunCommand(cmd=f"touch {targets[chat.chat_id]}"))
                await stack.send(chat, "touch it", runtime=location)
                await eventually(partial(stack.approvals, chat), what="the approval card")
            listed = {row.workflow_id: row.id for row in await ChatClient(client).waiting_everywhere()}
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        early_id = listed[stack.approvals(early)[0].turn_workflow_id]
        await asyncio.sleep(0.5)
        terminal = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ally",
            "approvals",
            "--decide",
            early_id,
            "--with",
            "y",
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        await asyncio.sleep(RUN_TURN_HEARTBEAT.total_seconds() + 0.5)  # the kill shows by now
        prompt = stack.approvals(late)[0]
        decision = Decision(key=prompt.request.key, decision="accept", operator=PERSON)
        started = asyncio.get_running_loop().time()
        receipt = await ChatClient(client).decide(prompt.turn_workflow_id, decision)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert receipt.status == "expired" and "not answering" in receipt.detail

        with runtime_worker_process(client, home, stack.runtime.codex_home, stack.host):
            out, _ = await asyncio.wait_for(terminal.communicate(), 60)
            for chat in (early, late):
                await eventually(partial(stack.replies, chat, tone="problem"), what="the turn's end")
        printed = out.decode()
        assert terminal.returncode == 1, printed
        assert "expired" in printed and "not answering" in printed and "decided" not in printed
        cards = [e.outcome for e in stack.events if e.outcome is not None]
        assert {outcome.chat.chat_id: outcome.decision for outcome in cards} == {
            early.chat_id: EXPIRED_RUNTIME_GONE,
            late.chat_id: EXPIRED_RUNTIME_GONE,
        }
        assert not any(target.exists() for target in targets.values())


async def test_a_runtime_that_never_comes_back_closes_the_open_approval_card(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        home = tmp_path / "ally-home"
        home.mkdir()
        location = RuntimeLocation(host=stack.host, task_queue=stack.pinned_queue)
        chat = stack.chat()
        stack.model.push(RunCommand(cmd="touch never"))
        with runtime_worker_process(client, home, stack.runtime.codex_home, stack.host) as worker:
            await wait_polled(client, stack.pinned_queue)
            await stack.send(chat, "touch it", runtime=location)
            await eventually(partial(stack.approvals, chat), what="the approval card")
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        # No worker polls the host's queue again: after its schedule-to-start timeout the turn ends.
        problem = await eventually(
            partial(stack.replies, chat, tone="problem"), within=90, what="the honest message"
        )
        assert "did not answer" in problem[0].text
        cards = [e.outcome for e in stack.events if e.outcome is not None]
        assert [outcome.decision for outcome in cards] == ["expired: the Codex runtime stopped answering"]


async def test_a_message_sent_while_no_runtime_runs_is_answered_after_retry_once_one_is_up(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path, with_runtime_worker=False) as stack:
        chat = stack.chat()
        await stack.send(chat, "hello, anyone?")
        # Nothing polls the discovery queue: after its 30 s schedule-to-start the chat is told.
        await eventually(
            lambda: [r for r in stack.replies(chat, tone="notice") if "No Codex runtime" in r.text],
            within=60,
            what="the no-runtime notice",
        )
        async with AsyncExitStack() as up:
            for worker in codex_workers(client, stack.runtime, stack.host, stack.discovery_queue):
                await up.enter_async_context(worker)
            stack.model.push(Say(text="here now"))
            await stack.send(chat, "/retry")
            answers = await eventually(
                lambda: stack.replies(chat, tone="answer"), within=60, what="the answer"
            )
        assert [a.text for a in answers] == ["here now"]
        assert "hello, anyone?" in str(stack.model.received()[0]["input"])


class OwnDevServer:
    """A dev server of this test's own, on a SQLite file, that the test can stop and start again."""

    def __init__(self, db_file: Path) -> None:
        self.db_file = db_file
        self.port = free_local_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = dev_server_command(
            db_file=self.db_file, port=self.port, ui_port=free_local_port(), namespace="default"
        )
        self.process = subprocess.Popen(
            [*command, "--headless"],
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@asynccontextmanager
async def own_dev_server(db_file: Path) -> AsyncIterator[OwnDevServer]:
    server = OwnDevServer(db_file)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


async def test_a_dev_server_restart_mid_turn_still_delivers_exactly_once(tmp_path: Path) -> None:
    db_file = tmp_path / "temporal.db"
    async with own_dev_server(db_file) as server:
        client = await temporal_when_up(server.port)
        async with running_stack(client, tmp_path) as stack:
            stack.model.push(Hang(seconds=4, then=Say(text="survived the restart")))
            chat = stack.chat()
            await stack.send(chat, "take your time")
            await eventually(lambda: stack.model.received(), what="the turn to reach the model")

            server.stop()
            await asyncio.sleep(1.0)
            server.start()
            await temporal_when_up(server.port)

            answers = await eventually(
                lambda: stack.replies(chat, tone="answer"), within=90, what="the reply"
            )
            await asyncio.sleep(2.0)
            assert [a.text for a in stack.replies(chat)] == ["survived the restart"]
            assert answers[0].idempotency_key == names.delivery_key(
                names.turn_workflow_id(chat.chat_id, answers[0].reply_to or ""), "reply"
            )


async def test_a_chat_whose_worker_stops_mid_turn_gets_its_reply_once_the_worker_is_back(
    client: Client, tmp_path: Path
) -> None:
    """`ally chat` closed while Codex works (or the gateway restarting): the chat's workflows wait,
    durably; the next worker on the chat's queue delivers the reply, once."""
    async with running_stack(client, tmp_path) as stack:
        seen: list[ConsoleEvent] = []
        queue = f"{stack.worker_queue}-own"
        chat = stack.chat().model_copy(update={"worker_queue": queue})
        stack.model.push(Hang(seconds=2, then=Say(text="waited for you")))
        async with stack.chat_worker(ConsoleChannel(seen.append), queue):
            message = await stack.send(chat, "take your time")
            await eventually(lambda: stack.model.received(), what="the turn to reach the model")

        # The chat's worker is gone; the Codex side of the turn finishes on the host regardless.
        turn = stack.turn_handle(chat, message)
        await _ran_on_host(turn, within=30)
        await asyncio.sleep(1.0)
        assert seen == []  # nobody to deliver it yet, and nothing lost

        async with stack.chat_worker(ConsoleChannel(seen.append), queue):
            await eventually(lambda: [e for e in seen if e.reply], within=60, what="the reply")
            await turn.result()
        assert [e.reply.text for e in seen if e.reply] == ["waited for you"]


async def _ran_on_host(turn: WorkflowHandle[Any, Any], *, within: float) -> None:
    """Until the turn's history shows `run_turn` completed (its only activity without approvals)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        async for event in turn.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"run_turn did not complete within {within:.0f}s")
