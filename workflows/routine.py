"""One run of a routine, started by its Temporal Schedule (`routine:<name>`): the whole story here.

    which thread: a fresh one, or the routine's own (the thread its last completed run ended in)
    which host: locate a runtime host for the assistant, as a conversation does
    the turn: a child TurnWorkflow with the routine as its origin, not a person: the same approvals,
      policy and exactly-once delivery as a chat message's turn; its answer is posted to the
      routine's chat (or topic); only the assistant's approvers may decide its requests, which
      expire after the routine's approval expiry; it runs with the routine's own mode (read-only
      by default), capped by the assistant's ceiling
    this workflow lives until the turn ends, so the schedule's overlap policy ("skip" by default)
      sees a run that is still going, and the run's outcome is this workflow's result

The memory digest (kind "memory_digest") first asks the runtime host for the day's conversations in
the assistant's workspace (`day_threads`: Codex's own record), posts nothing on a day without any,
and otherwise runs one turn per (assistant, day) that writes `memory/<day>.md` and answers with the
short digest the owner sees. A rerun of the day reuses that turn's id, so its answer carries the
same idempotency key (one post) and Codex replaces the file (one version).

Why a workflow of its own rather than a message into the chat's conversation: a routine keeps a
thread of its own (or a fresh one each run), not the chat's; and its schedule must see the run end
to skip an overlapping one (docs/routines.md, "How a run reaches the chat").
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities import runtime
    from activities.channel import ChannelActivities
    from activities.routines import routine_thread
    from ally import names
    from ally.contracts import (
        ContinuingThreadQuery,
        DayQuery,
        DayRecord,
        InboundMessage,
        Person,
        Reply,
        RoutineRun,
        RoutineRunResult,
        RuntimeLocation,
        TurnInput,
        TurnOrigin,
        TurnResult,
        capped,
    )
    from workflows.turn import TurnWorkflow

# Set by Temporal on every workflow a schedule starts (also by "run now").
SCHEDULED_AT = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
# Every digest prompt starts with this, so the next digest leaves the digests' own threads out.
DIGEST_MARKER = "[work-ally memory digest"
DIGEST_INSTRUCTIONS = (
    "Write the memory digest of {day} into the file {file} in this workspace: replace the file if it "
    "exists (never a second file for the same day). Keep what is worth remembering later: decisions, "
    "facts learned, open items, people's preferences. Then answer with a short digest of the day (at "
    "most five lines) for the owner."
)
LOCAL = timedelta(seconds=30)


@workflow.defn
class RoutineRunWorkflow:
    @workflow.run
    async def run(self, run: RoutineRun) -> RoutineRunResult:
        at = self._scheduled_at()
        if run.kind == "memory_digest":
            return await self._digest(run, at)
        thread_id = None
        if not run.fresh_thread:
            thread_id = await workflow.execute_activity(
                routine_thread,
                ContinuingThreadQuery(routine=run.name),
                start_to_close_timeout=LOCAL,
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="the routine's own thread",
            )
        message_id = names.routine_message_id(run.name, at.isoformat(timespec="seconds"))
        return await self._turn(run, run.prompt, message_id, thread_id)

    async def _digest(self, run: RoutineRun, at: datetime) -> RoutineRunResult:
        runtime_here = await self._locate(run)
        if runtime_here is None:
            return await self._no_runtime(run)
        record: DayRecord = await workflow.execute_activity(
            runtime.day_threads,
            DayQuery(
                cwd=run.settings.cwd,
                at=at.isoformat(),
                time_zone=run.time_zone,
                which=run.digest_day,
                skip_marker=DIGEST_MARKER,
            ),
            task_queue=runtime_here.task_queue,
            schedule_to_start_timeout=timedelta(seconds=30),
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary="the day's conversations, from Codex's record",
        )
        if not record.conversations:
            workflow.logger.info("no conversations on %s: no digest", record.day)
            return RoutineRunResult(status="nothing_to_digest", day=record.day)
        prompt = digest_prompt(run, record)
        message_id = names.digest_message_id(run.assistant, record.day)
        result = await self._turn(run, prompt, message_id, None, located=runtime_here, rerun=True)
        return result.model_copy(update={"day": record.day, "conversations": len(record.conversations)})

    async def _turn(
        self,
        run: RoutineRun,
        prompt: str,
        message_id: str,
        thread_id: str | None,
        *,
        located: RuntimeLocation | None = None,
        rerun: bool = False,
    ) -> RoutineRunResult:
        runtime_here = located or await self._locate(run)
        if runtime_here is None:
            return await self._no_runtime(run)
        routine = Person(id=f"routine:{run.name}", name=f"routine {run.name}")
        message = InboundMessage(
            message_id=message_id,
            chat=run.chat,
            sender=routine,
            text=prompt,
            reply_to=run.topic or None,  # in its topic, or a message of its own in the chat
        )
        turn_id = names.turn_workflow_id(run.chat.chat_id, message_id)
        try:
            child = await workflow.start_child_workflow(
                TurnWorkflow.run,
                TurnInput(
                    message=message,
                    origin=TurnOrigin(
                        kind="routine", message_id=message_id, sender=routine, routine=run.name
                    ),
                    runtime=runtime_here,
                    thread_id=thread_id,
                    settings=run.settings,
                    approvers=run.approvers,
                    approval_timeout_s=run.approval_timeout_s,
                    reminder_after_s=run.reminder_after_s,
                    policy=run.policy,
                    mode=capped(run.mode, run.policy.ceiling),
                    assistant=run.assistant,
                ),
                id=turn_id,
                # A digest's rerun of its day runs its turn again under the same id (and so the
                # same delivery key); a plain routine's run is one turn per scheduled time.
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE
                if rerun
                else WorkflowIDReusePolicy.REJECT_DUPLICATE,
                static_summary=f"routine {run.name} ({run.assistant_name or run.assistant}): {prompt[:60]}",
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(names.CHAT, run.chat.chat_id),
                        SearchAttributePair(names.ASSISTANT, run.assistant),
                        SearchAttributePair(names.TURN_STATE, "running"),
                    ]
                ),
            )
        except WorkflowAlreadyStartedError:
            return RoutineRunResult(status="already_running", turn_workflow_id=turn_id)
        try:
            result: TurnResult = await child
        except ChildWorkflowError as error:
            workflow.logger.warning("the routine's turn failed: %s", error)
            return RoutineRunResult(status="failed", turn_workflow_id=turn_id)
        return RoutineRunResult(status=result.status, thread_id=result.thread_id, turn_workflow_id=turn_id)

    async def _locate(self, run: RoutineRun) -> RuntimeLocation | None:
        try:
            return await workflow.execute_activity(
                runtime.locate_runtime,
                task_queue=run.discovery_queue,
                schedule_to_start_timeout=timedelta(seconds=run.locate_timeout_s),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary="find a Codex runtime host",
            )
        except ActivityError:
            return None

    async def _no_runtime(self, run: RoutineRun) -> RoutineRunResult:
        """Said in the chat, once per run: a routine that silently did nothing would not be trusted."""
        where = run.discovery_queue.removeprefix(names.runtime_queue(""))
        host = f"the host {where}" if run.discovery_queue.startswith(names.runtime_queue("")) else "any host"
        text = (
            f"Routine {run.name} could not run: no Codex runtime answered on {host}. Start `ally up` there."
        )
        key = names.delivery_key(workflow.info().workflow_id, "no-runtime")
        try:
            await workflow.execute_activity_method(
                ChannelActivities.send_reply,
                Reply(
                    chat=run.chat, reply_to=run.topic or None, text=text, idempotency_key=key, tone="problem"
                ),
                task_queue=run.chat.worker_queue,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=timedelta(minutes=55),
                summary="tell the chat",
            )
        except ActivityError as error:
            workflow.logger.warning("the chat could not be told: %s", error)
        return RoutineRunResult(status="no_runtime")

    @staticmethod
    def _scheduled_at() -> datetime:
        """The time the schedule meant this run for (a late catch-up run keeps it); now, if started
        some other way."""
        return workflow.info().typed_search_attributes.get(SCHEDULED_AT) or workflow.now()


def digest_prompt(run: RoutineRun, record: DayRecord) -> str:
    file = f"memory/{record.day}.md"
    instructions = (run.prompt or DIGEST_INSTRUCTIONS).replace("{day}", record.day).replace("{file}", file)
    lines = [f"{DIGEST_MARKER} {record.day}]", instructions, ""]
    lines.append(f"The conversations of {record.day} ({len(record.conversations)}), oldest first:")
    for number, conversation in enumerate(record.conversations, start=1):
        lines.append(f"\n## Conversation {number}")
        for exchange in conversation.exchanges:
            lines += [f"Asked: {exchange.asked}", f"Answered: {exchange.answered}"]
    if record.truncated:
        lines.append("\n(More was said that day; this is the part that fits.)")
    return "\n".join(lines)
