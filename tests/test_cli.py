"""The `ally` commands an operator (or a script) runs against a live stack: decisions by a stable id,
`--json` that is one JSON document, and a process that ends with the code its work earned."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from ally.chat_client import ChatClient
from ally.contracts import ChatRef, Decision, InboundMessage, Person
from ally.model_server import RunCommand, Say
from tests.processes import temporal_when_up
from tests.stack import Stack, eventually, running_stack
from tests.test_up import RunningUp, start_up, wait_gone
from workflows.turn import TurnWorkflow

pytestmark = pytest.mark.codex
CLI_TIMEOUT_S = 90.0


def cli_env(home: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORK_ALLY_", "TEMPORAL_"))}
    env.update(WORK_ALLY_HOME=str(home), **overrides)
    return env


async def ally(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """One `ally` command as a separate process, without blocking this loop (its workers answer it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ally",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


def one_json_document(result: subprocess.CompletedProcess[str]) -> Any:
    """stdout is exactly one JSON document: json.loads fails on anything printed before or after."""
    return json.loads(result.stdout)


async def waiting_in(stack: Stack, chat: ChatRef, message: InboundMessage) -> list[str]:
    view = await stack.turn_handle(chat, message).query(TurnWorkflow.view)
    return [request.command or "" for request in view.pending]


async def test_decide_names_a_stable_id_so_three_waiting_chats_get_the_decisions_meant_for_them(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        env = cli_env(
            tmp_path / "cli-home", WORK_ALLY_TEMPORAL__ADDRESS=client.service_client.config.target_host
        )
        chats = {name: stack.chat(f"chat-{name}-{tmp_path.name[-6:]}") for name in "ABC"}
        messages: dict[str, InboundMessage] = {}
        for name, chat in chats.items():  # one at a time: the scripted model answers in order
            stack.model.push(RunCommand(cmd=f"echo {name}"))
            messages[name] = await stack.send(chat, f"run echo {name}")
            await eventually(partial(stack.approvals, chat), what=f"chat {name}'s approval")

        listed = one_json_document(await ally(env, "approvals", "--json"))
        ours = {row["chat"]: row for row in listed if row["chat"] in {c.chat_id for c in chats.values()}}
        ids = {name: ours[chat.chat_id]["id"] for name, chat in chats.items()}
        assert len(set(ids.values())) == 3
        text = (await ally(env, "approvals")).stdout
        assert all(ids[name] in text for name in "ABC")

        # A first, then B: the second decision must reach B although A is gone from the list.
        stack.model.push(Say(text="A ran"), Say(text="B declined"))
        approved = await ally(env, "approvals", "--decide", ids["A"], "--with", "y")
        assert approved.returncode == 0, approved.stderr
        assert "decided" in approved.stdout
        declined = await ally(env, "approvals", "--decide", ids["B"][:5], "--with", "n", "--json")
        assert declined.returncode == 0, declined.stderr
        assert one_json_document(declined)["status"] == "decided"

        await eventually(lambda: stack.replies(chats["A"], tone="answer"), what="A's answer")
        await eventually(lambda: stack.replies(chats["B"], tone="answer"), what="B's answer")
        a = await stack.turn_handle(chats["A"], messages["A"]).result()
        b = await stack.turn_handle(chats["B"], messages["B"]).result()
        assert [(d.what, d.decision) for d in a.decisions] == [("`/bin/bash -lc 'echo A'`", "accept")]
        assert [(d.what, d.decision) for d in b.decisions] == [("`/bin/bash -lc 'echo B'`", "decline")]
        assert await waiting_in(stack, chats["C"], messages["C"]) == ["/bin/bash -lc 'echo C'"]

        # A decided id is stale: refused, and the list shows what does wait (C).
        stale = await ally(env, "approvals", "--decide", ids["A"], "--with", "y")
        assert stale.returncode == 2
        assert "no request with id" in stale.stderr and ids["C"] in stale.stderr
        assert await waiting_in(stack, chats["C"], messages["C"]) == ["/bin/bash -lc 'echo C'"]
        # A position (the old form) or a prefix too short to be safe decides nothing.
        for too_short in ("1", ids["C"][:3]):
            refused = await ally(env, "approvals", "--decide", too_short, "--with", "y", "--json")
            assert refused.returncode == 2
            assert one_json_document(refused)["status"] == "refused"
        assert await waiting_in(stack, chats["C"], messages["C"]) == ["/bin/bash -lc 'echo C'"]

        history = one_json_document(await ally(env, "approvals", "--history", "--json"))
        assert {"accept", "decline"} <= {entry["record"]["decision"] for entry in history}


async def test_every_json_option_prints_exactly_one_document(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        env = cli_env(
            tmp_path / "cli-home", WORK_ALLY_TEMPORAL__ADDRESS=client.service_client.config.target_host
        )
        # Something in every listing: a decided request (history) and one still waiting.
        decided, waiting = stack.chat(), stack.chat()
        stack.model.push(RunCommand(cmd="echo decided"), Say(text="done"), RunCommand(cmd="echo waiting"))
        await stack.send(decided, "run it")
        prompt = (await eventually(lambda: stack.approvals(decided), what="the first approval"))[0]
        operator = Person(id="ou_alice", name="Alice")
        decision = Decision(key=prompt.request.key, decision="accept", operator=operator)
        assert (await ChatClient(client).decide(prompt.turn_workflow_id, decision)).status == "decided"
        await eventually(lambda: stack.replies(decided, tone="answer"), what="the first answer")
        await stack.send(waiting, "run it too")
        await eventually(lambda: stack.approvals(waiting), what="the second approval")

        commands = [
            ["status", "--json"],
            ["turns", "--json"],
            ["approvals", "--json"],
            ["approvals", "--history", "--json"],
            ["approvals", "--history", "--days", "0.000001", "--json"],  # none: still one document
            ["config", "--json"],
            ["doctor", "--json"],
        ]
        results = await asyncio.gather(*(ally(env, *command) for command in commands))
        documents = {}
        for command, result in zip(commands, results, strict=True):
            assert result.returncode in (0, 1), (command, result.stderr)
            documents[" ".join(command)] = one_json_document(result)
        assert documents["approvals --json"] and documents["approvals --history --json"]


@pytest.mark.faults
async def test_each_command_run_50_times_against_a_stack_with_waiting_approvals_exits_0(
    tmp_path: Path,
) -> None:
    """A crash while the interpreter shuts down (after correct output) used to fail about one run
    in ten: a script saw a failed command that had in fact decided."""
    runs = 50
    up: RunningUp = await asyncio.to_thread(start_up, tmp_path / "ally-home", "--demo")
    chat = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ally",
        "chat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=up.env,
    )
    try:
        assert chat.stdin is not None
        # Each line is a turn that waits for approval; one runs at a time, the rest queue.
        chat.stdin.write("".join(f"run echo {n}\n" for n in range(runs + 1)).encode())
        await chat.stdin.drain()
        failures: list[str] = []

        async def run(*args: str) -> subprocess.CompletedProcess[str]:
            result = await ally(up.env, *args)
            if result.returncode != 0:
                failures.append(f"{args}: exit {result.returncode}\n{result.stderr[-600:]}")
            return result

        temporal = await temporal_when_up(int(up.env["WORK_ALLY_TEMPORAL__PORT"]))

        async def waiting_id(seen: set[str]) -> str:
            # Found in-process: the listing's own 50 runs are `read_only` below.
            for _ in range(600):
                waiting = await ChatClient(temporal).waiting_everywhere()
                fresh = [row.id for row in waiting if row.id not in seen]
                if fresh:
                    return fresh[0]
                await asyncio.sleep(0.1)
            raise AssertionError("no new approval came up")

        async def decide_each() -> None:
            decided: set[str] = set()
            for _ in range(runs):
                request = await waiting_id(decided)
                result = await run("approvals", "--decide", request, "--with", "y")
                assert "decided" in result.stdout, result
                decided.add(request)

        async def read_only(args: list[str], json_too: list[str]) -> None:
            for n in range(runs):
                result = await run(*args, *(json_too if n % 2 else []))
                if n % 2 and json_too:
                    one_json_document(result)

        await asyncio.gather(
            decide_each(),
            read_only(["status"], ["--json"]),
            read_only(["turns"], ["--json"]),
            read_only(["approvals", "--history"], ["--json"]),
            read_only(["approvals"], ["--json"]),
        )
        assert failures == []
    finally:
        if chat.stdin is not None:
            chat.stdin.close()
        chat_code = await asyncio.wait_for(chat.wait(), 60)
        up.process.terminate()
        up_code = await asyncio.to_thread(up.process.wait, 60)
        assert await asyncio.to_thread(wait_gone, up.marker) == {}
    assert chat_code == 0
    assert up_code == 0
