"""Routines: prompts on a Temporal Schedule whose answers arrive in a chat, each run one turn.

Real dev server, real `codex app-server` with the scripted model, the real chat worker (the
terminal channel, which de-duplicates by idempotency key as Feishu does); the schedules are real
Temporal Schedules, and `ally routines` runs in-process against the same server.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import Client, ScheduleOverlapPolicy

from ally import names
from ally.chat_client import ChatClient
from ally.contracts import Decision, Person, RoutineRunResult, TurnInput
from ally.model_server import Hang, RunCommand, Say
from ally.routines import RoutineSpec
from tests.routine_helpers import ally, routine, run_for, started_id, unique
from tests.stack import PERSON, eventually, running_stack
from workflows.turn import TurnWorkflow

pytestmark = pytest.mark.codex


async def test_a_routine_every_few_seconds_posts_each_run_as_one_turn_in_its_chat_and_lists_its_runs(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat()
        stack.model.push(*(Say(text=f"Briefing number {n}.") for n in range(1, 6)))
        spec = RoutineSpec(
            name=unique("briefing"), prompt="Give the briefing.", chat=chat.chat_id, every="3s"
        )
        async with routine(client, spec, run_for(stack, spec, chat)) as applied:
            assert applied == "created"
            answers = await eventually(
                lambda: found if len(found := stack.replies(chat, tone="answer")) >= 2 else None,
                within=30,
                what="two runs' answers",
            )
            handle = client.get_schedule_handle(names.routine_schedule_id(spec.name))
            await handle.pause(note="test: enough runs")
            assert answers[0].text == "Briefing number 1." and answers[1].text == "Briefing number 2."
            # Posted into the chat, not as a reply to anyone's message.
            assert all(answer.reply_to is None for answer in answers)

            described = await handle.describe()
            assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
            runs = [started_id(action.action) for action in described.info.recent_actions]
            assert len(runs) >= 2 and all(run.startswith(names.routine_run_id(spec.name)) for run in runs)
            # Each run was one turn, with the routine as its origin.
            first = await client.get_workflow_handle(runs[0], result_type=RoutineRunResult).result()
            turn = client.get_workflow_handle_for(TurnWorkflow.run, str(first.turn_workflow_id))
            turn_input = await _turn_input(client, str(first.turn_workflow_id))
            assert turn_input.origin.kind == "routine" and turn_input.origin.routine == spec.name
            assert turn_input.mode == "read_only"
            assert (await turn.result()).status == "completed"

            listed = await ally(client, tmp_path / "home", "routines", "list")
            assert listed.exit_code == 0, listed.output
            assert spec.name in listed.output and "[paused]" in listed.output
            assert "last: " in listed.output and "completed" in listed.output
            await handle.unpause()
            listed = await ally(client, tmp_path / "home", "routines", "list", "--json")
            row = next(r for r in json.loads(listed.output) if r["name"] == spec.name)
            assert row["next_runs"] and len(row["last_runs"]) >= 2
            assert row["last_runs"][-1]["outcome"] == "completed"
            await handle.pause()

            # In the chat, /routines lists the routines that post there.
            await stack.send(chat, "/routines")
            notice = await eventually(
                lambda: [r for r in stack.replies(chat, tone="notice") if "Routines posting here" in r.text],
                what="the /routines answer",
            )
            assert spec.name in notice[0].text and "every 3s" in notice[0].text


async def _turn_input(client: Client, turn_id: str) -> TurnInput:
    history = await client.get_workflow_handle(turn_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    decoded = await client.data_converter.decode(started.input.payloads, [TurnInput])
    turn_input = decoded[0]
    assert isinstance(turn_input, TurnInput)
    return turn_input


async def test_a_run_still_going_when_the_next_falls_due_makes_the_schedule_skip_that_one_visibly(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat()
        stack.model.push(Hang(seconds=7, then=Say(text="A slow report.")), Say(text="A quick one."))
        spec = RoutineSpec(name=unique("slow"), prompt="Write the report.", chat=chat.chat_id, every="2s")
        async with routine(client, spec, run_for(stack, spec, chat)):
            handle = client.get_schedule_handle(names.routine_schedule_id(spec.name))
            await eventually(lambda: stack.replies(chat, tone="answer"), within=30, what="the slow answer")
            await handle.pause()
            described = await handle.describe()
            assert described.info.num_actions_skipped_overlap >= 2  # due every 2 s while the 7 s run went on
            assert next(r.text for r in stack.replies(chat, tone="answer")) == "A slow report."
            shown = await ally(client, tmp_path / "home", "routines", "show", spec.name)
            assert shown.exit_code == 0, shown.output
            assert "skipped (the run before was still going)" in shown.output


async def test_pause_resume_run_now_and_remove_show_in_the_schedule_and_the_cli(
    client: Client, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat()
        stack.model.push(Say(text="Ran because you asked."))
        # Due once a year: any run in this test is one somebody asked for.
        spec = RoutineSpec(
            name=unique("yearly"), prompt="Summarise the year.", chat=chat.chat_id, cron="0 9 1 1 *"
        )
        async with routine(client, spec, run_for(stack, spec, chat)):
            handle = client.get_schedule_handle(names.routine_schedule_id(spec.name))
            paused = await ally(client, home, "routines", "pause", spec.name)
            assert paused.exit_code == 0, paused.output
            assert (await handle.describe()).schedule.state.paused
            listed = await ally(client, home, "routines", "list")
            assert "[paused]" in listed.output and "none while paused" in listed.output

            resumed = await ally(client, home, "routines", "resume", spec.name)
            assert resumed.exit_code == 0 and "next: " in resumed.output
            described = await handle.describe()
            assert not described.schedule.state.paused and described.info.next_action_times

            ran = await ally(client, home, "routines", "run", spec.name)
            assert ran.exit_code == 0, ran.output
            answer = await eventually(lambda: stack.replies(chat, tone="answer"), what="the triggered run")
            assert answer[0].text == "Ran because you asked."
            assert (await handle.describe()).info.num_actions == 1
            shown = await ally(client, home, "routines", "show", spec.name)
            assert await _eventually_completed(client, home, spec.name), shown.output

            removed = await ally(client, home, "routines", "remove", spec.name)
            assert removed.exit_code == 0, removed.output
            gone = await ally(client, home, "routines", "show", spec.name)
            assert gone.exit_code == 2 and "there is no routine called" in gone.output


async def _eventually_completed(client: Client, home: Path, name: str) -> bool:
    async def outcome() -> str:
        return (await ally(client, home, "routines", "show", name)).output

    for _ in range(100):
        if ": completed" in await outcome():
            return True
        await asyncio.sleep(0.2)
    return False


async def test_an_unattended_runs_approval_goes_to_the_approvers_only_and_expires_honestly(
    client: Client, tmp_path: Path
) -> None:
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat()
        stack.model.push(
            RunCommand(cmd="curl -s https://example.com", justification="fetch the news"),
            Say(text="I could not fetch the news: the command was declined."),
        )
        spec = RoutineSpec(
            name=unique("news"),
            prompt="Fetch the news.",
            chat=chat.chat_id,
            cron="0 9 1 1 *",
            approval_expiry="4s",
        )
        async with routine(client, spec, run_for(stack, spec, chat)):
            await client.get_schedule_handle(names.routine_schedule_id(spec.name)).trigger()
            prompt = (await eventually(lambda: stack.approvals(chat), what="the approval card"))[0]
            assert prompt.reply_to is None  # in the chat: there is no person's message to answer
            # The person in the chat is not the run's sender; only the assistant's approvers decide.
            refused = await ChatClient(client).decide(
                prompt.turn_workflow_id, Decision(key=prompt.request.key, decision="accept", operator=PERSON)
            )
            assert refused.status == "rejected" and "may not decide" in refused.detail
            expired = await eventually(
                lambda: [r for r in stack.replies(chat, tone="notice") if "nobody decided" in r.text],
                within=30,
                what="the expiry notice",
            )
            assert "curl" in expired[0].text
            answer = await eventually(lambda: stack.replies(chat, tone="answer"), what="the run's end")
            assert "declined" in answer[0].text
            assert not [d for d in stack.events if d.outcome is not None and d.outcome.decision == "accept"]


async def test_an_approver_can_decide_an_unattended_runs_request(client: Client, tmp_path: Path) -> None:
    async with running_stack(client, tmp_path) as stack:
        chat = stack.chat()
        stack.model.push(RunCommand(cmd="curl -s https://example.com"), Say(text="Fetched."))
        spec = RoutineSpec(name=unique("fetch"), prompt="Fetch.", chat=chat.chat_id, cron="0 9 1 1 *")
        async with routine(client, spec, run_for(stack, spec, chat)):
            await client.get_schedule_handle(names.routine_schedule_id(spec.name)).trigger()
            prompt = (await eventually(lambda: stack.approvals(chat), what="the approval card"))[0]
            owner = Person(id="ou_owner", name="Owner")
            decided = await ChatClient(client).decide(
                prompt.turn_workflow_id, Decision(key=prompt.request.key, decision="accept", operator=owner)
            )
            assert decided.status == "decided"
            answer = await eventually(lambda: stack.replies(chat, tone="answer"), what="the answer")
            assert answer[0].text == "Fetched."
