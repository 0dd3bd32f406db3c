"""One conversation turn, start to finish: the whole story of a message in one file.

    run the turn on the pinned host: load the thread, submit the prompt, follow it (heartbeats;
      each approval or question is forwarded here as a signal), read the outcome back from
      `thread/read` (the truth, never the streamed deltas)
    while it runs: show each request in the chat, wait for a decision (update, or signal fallback),
      answer Codex on the same host; steer and /stop arrive as signals
    with autosave on: note the workspace's uncommitted files before, commit what the turn changed
      after (on the same host; docs/autosave.md)
    deliver the outcome to the chat once (idempotency key derived from this workflow's id), settling
      the progress emoji and the progress card in the same delivery (the card's follower runs beside
      `run_turn` on the chat's worker and reads its heartbeats, never this history)

A turn without approvals is one activity on the Codex host and one local activity, the reply:
this workflow runs on the chat's own worker, beside its channel (workers/chat.py), so the reply
is sent inside the workflow task that learns the outcome (plus a concurrent emoji where the chat
shows them). Each hop is a workflow task and a few history writes, the main cost of a turn beyond
Codex itself (bench/turns.py).

Every step that can fail is an activity with its own timeout and retry policy; a dead host shows up
as a schedule-to-start or heartbeat timeout and becomes an honest message, never silence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Literal, TypedDict, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from activities import runtime
    from activities.channel import ChannelActivities
    from activities.policy import evaluate_policy
    from ally import metrics, names
    from ally.contracts import (
        AgentRequest,
        AnswerRequestInput,
        ApprovalOutcome,
        ApprovalPrompt,
        AutosaveRequest,
        AutosaveResult,
        Decision,
        DecisionRecord,
        FinalReply,
        GoalInput,
        GoalProgress,
        LimitWait,
        PendingRequest,
        Person,
        PolicyQuestion,
        ProgressCardRef,
        ProgressEnd,
        ProgressWatch,
        Reaction,
        ReactionRef,
        Reply,
        SentMessage,
        SnapshotRequest,
        StartTurnInput,
        SteerTurnInput,
        TurnInput,
        TurnOutcome,
        TurnResult,
        TurnView,
        Verdict,
        WorkspaceSnapshot,
    )
    from ally.policy import remember as remember_grant
    from ally.policy_legacy import evaluate as evaluate_legacy_policy
    from workflows.alerts import AlertsWorkflow

# Pinned calls: a host that is gone must surface in seconds, not hang (docs/temporal.md §1:
# schedule-to-start is per attempt and not retried, so it reaches this code as "host is gone").
HOST_START = timedelta(seconds=30)
HOST_CALL = timedelta(seconds=60)
HOST_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=["UnknownRequest"])
# Chat delivery: Feishu dedupes by uuid for an hour, so retries inside that window are safe.
DELIVERY_CALL = timedelta(seconds=30)
DELIVERY_WINDOW = timedelta(minutes=55)
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["PermanentDeliveryError"],
)
# A killed runtime worker shows up as missed heartbeats: the retry then reads the turn back on the
# restarted worker and the person is told within seconds. A live worker that merely missed its
# beats (a stalled machine) loses nothing: the retry finds the turn still running on the same
# worker and follows it on (activities/codex.py), so a short timeout costs an attempt, never an
# alarm; the attempts allow for a few such stalls in one long turn (docs/operations.md).
RUN_TURN_HEARTBEAT = timedelta(seconds=3)
RUN_TURN_RETRY = RetryPolicy(maximum_attempts=6, initial_interval=timedelta(milliseconds=200))
# Feishu emoji_type names (case-sensitive): on the person's message while the turn runs, and after.
WORKING_EMOJI = "OnIt"
DONE_EMOJI = "DONE"
REACTION_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200))
RUN_TURN_MAX = timedelta(hours=12)
# The policy is a local activity so that its verdict is recorded (activities/policy.py); turns
# started before that evaluated it in the workflow and replay with the frozen copy of that code.
POLICY_PATCH = "policy-verdict-recorded"
POLICY_CALL = timedelta(seconds=10)
POLICY_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=100))
# Channel calls and the policy are local activities, and a local activity's failure reaches the
# workflow as the activity's own error (an ApplicationError, or a timeout), not wrapped in an
# ActivityError: catch all three around every local activity.
LOCAL_CALL_FAILED = (ActivityError, ApplicationError, TemporalTimeoutError)
# Before this patch a refused reply (bot removed from the chat) failed the whole turn.
UNDELIVERED_PATCH = "undelivered-local-reply"
# Autosave adds two calls to the host around the turn; a turn started with autosave on before
# this code existed replays without them.
AUTOSAVE_PATCH = "workspace-autosave"
# Before it, a turn that hit the account's usage limit failed; now it waits for the reset.
USAGE_LIMIT_PATCH = "usage-limit-wait"
# The progress card: a follower on the chat's worker reads `run_turn`'s heartbeats and edits the
# card (activities/channel.py); this workflow only starts it, whatever Codex emits. It is not
# cancelled: the delivery settles the card, and the follower ends once this workflow has closed.
PROGRESS_PATCH = "live-progress"
PROGRESS_HEARTBEAT = timedelta(seconds=5)
PROGRESS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10))
# A goal's turn (origin "goal"): `run_goal` instead of `run_turn`, a progress line per agent turn.
GOALS_PATCH = "goals"


A = TypeVar("A")
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")
# A channel activity, by reference: `ChannelActivities.send_reply` and its kin.
ChatCall = Callable[[ChannelActivities, A], Awaitable[R]]


class HostCall(TypedDict):
    """The options of every call pinned to the host whose agent process holds the thread."""

    task_queue: str
    schedule_to_start_timeout: timedelta
    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


@workflow.defn
class TurnWorkflow:
    @workflow.init
    def __init__(self, turn: TurnInput) -> None:
        self.turn = turn
        self.state = "starting"
        self.thread_id: str | None = turn.thread_id  # None until a new thread's first request or end
        self.turn_id: str | None = None
        self.requests: dict[str, PendingRequest] = {}
        self.steers: list[str] = []
        self.unsteered: list[str] = []
        self.stop_requested = False
        self.stop_sent = False
        self.working: workflow.ActivityHandle[ReactionRef] | None = None
        self.progress: workflow.ActivityHandle[ProgressCardRef] | None = None
        self.grants = turn.grants
        self.decisions: list[DecisionRecord] = []
        self.autosave: AutosaveResult | None = None
        self.limit_waits = 0  # how often this turn waited for a usage limit to reset
        self.limited_until: float | None = None  # workflow time the current wait ends
        self.retry_asked = False
        self.goal_reports: list[GoalProgress] = []  # one per agent turn of the goal, as each ended
        self.goal_posted = 0  # of those, shown in the chat

    # --- what the outside world can tell a running turn ------------------------------------------

    @workflow.signal(name="codex_request")  # the name recorded histories carry
    def agent_request(self, request: AgentRequest) -> None:
        """From `run_turn` on the host: the agent is waiting for an answer."""
        if request.key not in self.requests:
            self.requests[request.key] = PendingRequest(request=request, shown_at=workflow.time())
        self.thread_id, self.turn_id = request.thread_id, request.turn_id or self.turn_id

    @workflow.update
    def decide(self, decision: Decision) -> str:
        self.requests[decision.key].decision = decision
        return decision.decision or "answered"

    @decide.validator
    def check_decision(self, decision: Decision) -> None:
        """Rejected calls leave no history event (docs/temporal.md §2)."""
        pending = self.requests.get(decision.key)
        if pending is None or pending.decision is not None:
            raise ValueError("this request is no longer waiting for a decision")
        if not self._may_decide(decision.operator.id):
            raise ValueError(f"{decision.operator.name or decision.operator.id} may not decide this request")

    @workflow.signal
    def decide_later(self, decision: Decision) -> None:
        """Fallback when no worker can run the update right now: same checks, mismatches ignored."""
        pending = self.requests.get(decision.key)
        if pending and pending.decision is None and self._may_decide(decision.operator.id):
            pending.decision = decision

    @workflow.signal
    def steer(self, text: str) -> None:
        self.steers.append(text)

    @workflow.signal
    def stop(self) -> None:
        self.stop_requested = True

    @workflow.signal
    def retry_now(self) -> None:
        """/retry while the turn waits for a usage limit: try at once instead of at the reset."""
        self.retry_asked = True

    @workflow.signal
    def goal_progress(self, report: GoalProgress) -> None:
        """From `run_goal` on the host: one of the goal's turns ended."""
        self.goal_reports.append(report)
        self.thread_id, self.turn_id = report.thread_id, report.turn_id or self.turn_id

    @workflow.query
    def view(self) -> TurnView:
        waiting = [p.request for p in self.requests.values() if p.decision is None]
        return TurnView(
            state=self.state,
            thread_id=self.thread_id,
            turn_id=self.turn_id,
            pending=waiting,
            steers=len(self.steers),
            decisions=self.decisions,
        )

    # --- the story -------------------------------------------------------------------------------

    @workflow.run
    async def run(self, turn: TurnInput) -> TurnResult:
        # The parent starts this workflow with TurnState=running, so that costs no event here.
        workflow.set_current_details("**running**")
        metrics.turn_started()
        # Not awaited: the turn does not wait for an emoji. A routine's run has no message to put one on.
        if turn.message.chat.reactions and turn.origin.kind != "routine":
            self.working = self._react(WORKING_EMOJI)
        if workflow.patched(PROGRESS_PATCH):  # not awaited either: the card follows the turn beside it
            self.progress = self._follow_progress()
        before: WorkspaceSnapshot | None = None
        if turn.autosave and workflow.patched(AUTOSAVE_PATCH):
            try:
                before = await self._snapshot_workspace()
            except ActivityError as error:
                if _never_started(error):
                    return await self._host_lost(error)
                workflow.logger.warning(
                    "autosave: the workspace could not be read before the turn: %s", error
                )
                detail = "the workspace could not be read before the turn"
                self.autosave = AutosaveResult(skipped="host_unavailable", detail=detail)
        ended = await self._follow(self._run_on_host(turn.thread_id))
        # The account's usage limit is not a failure: wait for its reset, then run the prompt again.
        while isinstance(ended, TurnOutcome) and self._limited(ended) and workflow.patched(USAGE_LIMIT_PATCH):
            ended = await self._wait_out_the_limit(ended)
        if isinstance(ended, ActivityError):
            return await self._host_lost(ended)
        outcome = ended
        await self._close_unanswered_requests(outcome)
        if before is not None:
            self.autosave = await self._autosave(before, outcome)
        self._set_state("delivering")
        tone = reply_tone(outcome, stopped=self.stop_requested)
        text = "\n\n".join(filter(None, [reply_text(outcome), autosave_note(self.autosave)]))
        if self.turn.goal is not None:
            tone, text = await self._goal_ended(outcome, tone, text)
        if await self._finish(text, tone=tone, done=outcome.status == "completed", outcome=outcome):
            self._set_state("done" if outcome.status == "completed" else "failed")
        metrics.turn_finished(outcome.status)
        return TurnResult(
            thread_id=self.thread_id,
            turn_id=self.turn_id,
            status=outcome.status,
            runtime_restarted=outcome.runtime_restarted,
            grants=self.grants,
            decisions=self.decisions,
            unsteered=self._unsteered(),
            autosave=self.autosave,
            goal=outcome.goal,
        )

    # --- steps -----------------------------------------------------------------------------------

    def _run_on_host(self, thread_id: str | None) -> workflow.ActivityHandle[TurnOutcome]:
        if self.turn.goal is not None and workflow.patched(GOALS_PATCH):
            return self._pursue_goal(self.turn.goal, thread_id)
        return workflow.start_activity(
            runtime.run_turn,
            StartTurnInput(
                thread_id=thread_id,
                settings=self.turn.settings,
                text=self._prompt_text(),
                local_images=self.turn.message.local_images,
            ),
            task_queue=self.turn.runtime.task_queue,
            schedule_to_start_timeout=HOST_START,
            start_to_close_timeout=RUN_TURN_MAX,
            heartbeat_timeout=RUN_TURN_HEARTBEAT,
            retry_policy=RUN_TURN_RETRY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary="run the turn on the Codex host",
        )

    async def _follow(self, running: workflow.ActivityHandle[TurnOutcome]) -> TurnOutcome | ActivityError:
        """While Codex runs the turn: requests, decisions, reminders, steers, /stop. Then how it
        ended, or the error of a host that stopped answering."""
        while not running.done():
            # A timeout here is the next reminder or expiry coming due, not an error.
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: running.done() or self._has_work(),
                    timeout=self._next_expiry(),
                    timeout_summary="approval reminder or expiry",
                )
            await self._show_goal_progress()  # a goal's turn that ended, before the next one's requests
            await self._show_new_requests()
            await self._answer_decided_requests()
            await self._remind_about_waiting_requests()
            await self._expire_overdue_requests()
            await self._forward_steers()
            if self.stop_requested and not self.stop_sent:
                self.stop_sent = True
                running.cancel()  # run_turn interrupts the Codex turn, then reports how it ended
        try:
            outcome = await running
        except ActivityError as error:
            if not self.stop_requested:
                return error
            # Cancelled by /stop before the host could report: the turn was interrupted.
            return TurnOutcome(
                thread_id=self.thread_id or "", turn_id=self.turn_id or "", status="interrupted"
            )
        self.thread_id, self.turn_id = outcome.thread_id, outcome.turn_id
        return outcome

    async def _show_new_requests(self) -> None:
        # A copy: a request signalled while one of these awaits must not change what is iterated.
        for pending in list(self.requests.values()):
            if pending.card_message_id is not None or pending.decision is not None:
                continue
            if await self._decided_by_policy(pending):
                continue
            self._set_state("awaiting_approval")
            try:
                sent = await self._to_chat(
                    ChannelActivities.send_approval,
                    ApprovalPrompt(
                        chat=self.turn.message.chat,
                        reply_to=self._reply_target(),
                        turn_workflow_id=workflow.info().workflow_id,
                        request=pending.request,
                        idempotency_key=names.delivery_key(
                            workflow.info().workflow_id, f"ask:{pending.request.key}"
                        ),
                        expires_in_s=self.turn.approval_timeout_s,
                        asked_because=pending.asked_because,
                    ),
                    summary=f"ask: {pending.request.kind}",
                )
            except LOCAL_CALL_FAILED as error:
                if not workflow.patched(UNDELIVERED_PATCH):
                    raise
                # The chat refused the card for good (the bot was removed): the request still
                # waits, for `ally approvals` or its expiry, but no card will show it.
                workflow.logger.warning("approval card not shown: %s", error)
                pending.card_message_id = ""
                continue
            pending.card_message_id = sent.message_id

    async def _decided_by_policy(self, pending: PendingRequest) -> bool:
        """Rules, the chat's autonomy mode and this thread's session grants, before any person.
        Deny beats everything; an automatic decision is recorded and shown, never silent."""
        verdict = await self._verdict(pending.request)
        if verdict.decision is None:
            pending.asked_because = verdict.rule
            return False
        if verdict.decision == "accept" and pending.request.additional_permissions:
            # The rules judge the command, not the extra permissions it would bring.
            pending.asked_because = "it also asks for more permissions"
            return False
        pending.decision = Decision(key=pending.request.key, decision=verdict.decision, operator=POLICY)
        pending.answered = True
        await self._answer(pending, pending.decision, f"policy: {verdict.rule}", by_policy=True)
        record = self.decisions[-1]
        workflow.set_current_details(f"**{self.state}** · automatic: {record.decision} {record.what}")
        if verdict.decision == "decline":
            declined = f"Declined by policy: {record.what} ({verdict.rule})."
            await self._send(declined, tone="notice", part=f"policy:{len(self.decisions)}")
        return True

    async def _verdict(self, request: AgentRequest) -> Verdict:
        if not workflow.patched(POLICY_PATCH):
            return evaluate_legacy_policy(
                request,
                policy=self.turn.policy,
                mode=self.turn.mode,
                workspace=self.turn.settings.cwd,
                grants=self.grants,
            )
        question = PolicyQuestion(
            request=request,
            policy=self.turn.policy,
            mode=self.turn.mode,
            workspace=self.turn.settings.cwd,
            grants=self.grants,
            group=self.turn.message.chat.chat_type == "group",
        )
        try:
            return await workflow.execute_local_activity(
                evaluate_policy,
                question,
                start_to_close_timeout=POLICY_CALL,
                retry_policy=POLICY_RETRY,
                summary=f"policy: {request.kind}",
            )
        except LOCAL_CALL_FAILED as error:
            workflow.logger.warning("the policy could not be evaluated: %s", error)
            return Verdict(decision=None, rule="the policy could not be evaluated")

    async def _answer_decided_requests(self) -> None:
        for pending in self.requests.values():
            if pending.decision is None or pending.answered:
                continue
            pending.answered = True
            if pending.decision.decision == "acceptForSession":
                self.grants = remember_grant(self.grants, pending.request)
            decided_by = pending.decision.operator.name or pending.decision.operator.id
            await self._answer(pending, pending.decision, decided_by)
        if self.state == "awaiting_approval" and all(p.answered for p in self.requests.values()):
            self._set_state("running")

    async def _remind_about_waiting_requests(self) -> None:
        now = workflow.time()
        for number, pending in enumerate(self.requests.values(), start=1):
            due = pending.shown_at + self.turn.reminder_after_s
            if pending.decision is None and not pending.reminded and now >= due:
                pending.reminded = True
                left = _duration(self.turn.approval_timeout_s - (now - pending.shown_at))
                text = (
                    f"Still waiting for a decision: {_what(pending.request)}. Use the card or reply "
                    f"y / n; it is declined in about {left}."
                )
                await self._send(text, tone="notice", part=f"remind:{number}")

    async def _expire_overdue_requests(self) -> None:
        now = workflow.time()
        for number, pending in enumerate(self.requests.values(), start=1):
            if pending.decision is None and now - pending.shown_at >= self.turn.approval_timeout_s:
                system = Decision(key=pending.request.key, decision="decline", operator=WORK_ALLY)
                pending.decision = system
                pending.answered = True
                await self._answer(pending, system, "expiry (no decision in time)")
                waited = _duration(self.turn.approval_timeout_s)
                text = f"Declined {_what(pending.request)}: nobody decided within {waited}."
                await self._send(text, tone="notice", part=f"expired:{number}")

    async def _answer(
        self, pending: PendingRequest, decision: Decision, decided_by: str, *, by_policy: bool = False
    ) -> None:
        try:
            await workflow.execute_activity(
                runtime.answer_request,
                AnswerRequestInput(key=pending.request.key, request=pending.request, decision=decision),
                **self._on_host(),
                summary=f"answer {pending.request.kind}: {decision.decision or 'input'}",
            )
            shown: str = decision.decision or "answered"
        except ActivityError:
            shown = EXPIRED_RUNTIME_GONE
        self.decisions.append(
            DecisionRecord(
                key=pending.request.key,
                kind=pending.request.kind,
                what=_what(pending.request),
                decision=shown,
                decided_by=decided_by,
                decided_at=workflow.now().isoformat(timespec="seconds"),
                by_policy=by_policy,
            )
        )
        await self._show_decision(pending, shown, decided_by)

    async def _show_decision(self, pending: PendingRequest, shown: str, decided_by: str) -> None:
        if not pending.card_message_id:  # never shown, or its card was refused
            return
        await self._to_chat(
            ChannelActivities.update_approval,
            ApprovalOutcome(
                chat=self.turn.message.chat,
                message_id=pending.card_message_id,
                request=pending.request,
                decision=shown,
                decided_by=decided_by,
                decided_at=workflow.now().isoformat(timespec="seconds"),
            ),
            summary="show the decision on the card",
        )

    async def _forward_steers(self) -> None:
        while self.steers:
            text = self.steers.pop(0)
            try:
                await workflow.execute_activity(
                    runtime.steer_turn,
                    SteerTurnInput(text=text),
                    **self._on_host(),
                    summary="steer the running turn",
                )
            except ActivityError:
                self.unsteered.append(text)  # Codex had finished: the conversation runs it next

    async def _snapshot_workspace(self) -> WorkspaceSnapshot:
        return await workflow.execute_activity(
            runtime.snapshot_workspace,
            SnapshotRequest(cwd=self.turn.settings.cwd, agents_md=self.turn.settings.agents_md),
            **self._on_host(),
            summary="autosave: note the uncommitted files before the turn",
        )

    async def _autosave(self, before: WorkspaceSnapshot, outcome: TurnOutcome) -> AutosaveResult:
        """Whatever the turn did on disk is committed, whether it completed, was stopped or failed:
        left uncommitted, its changes would count as the person's before the next turn. A failure
        here costs the commit, never the reply."""
        request = AutosaveRequest(
            before=before,
            turn_workflow_id=workflow.info().workflow_id,
            person=self.turn.origin.sender,
            prompt=self.turn.message.text,
            status=outcome.status,
            assistant=self.turn.assistant,
        )
        try:
            return await workflow.execute_activity(
                runtime.autosave_workspace,
                request,
                **self._on_host(),
                summary="autosave: commit the turn's changes",
            )
        except ActivityError as error:
            workflow.logger.warning("autosave failed: %s", error)
            return AutosaveResult(skipped="host_unavailable", detail="the workspace's host did not answer")

    async def _close_unanswered_requests(self, outcome: TurnOutcome | None) -> None:
        """A turn that ended (stop, crash) with a card still open: say on the card what happened.
        `None`: the host stopped answering altogether."""
        for pending in self.requests.values():
            if pending.decision is None:
                pending.decision = Decision(key=pending.request.key, decision="cancel", operator=WORK_ALLY)
                await self._show_decision(pending, _why_closed(outcome, self.stop_requested), "work-ally")

    async def _host_lost(self, error: ActivityError) -> TurnResult:
        workflow.logger.warning("runtime host lost: %s", error)
        if workflow.patched("close-cards-on-host-lost"):
            await self._close_unanswered_requests(None)  # else their buttons would stay forever
        self._set_state("failed")
        lost = (
            f"The Codex runtime on the host {self.turn.runtime.host} did not answer, so this turn was "
            "interrupted. "
            "Nothing was lost: send /retry to run it again."
        )
        await self._finish(lost, tone="problem", done=False)
        metrics.turn_finished("host_lost")
        return TurnResult(
            thread_id=self.thread_id, turn_id=self.turn_id, status="host_lost", unsteered=self._unsteered()
        )

    def _react(self, emoji: str) -> workflow.ActivityHandle[ReactionRef]:
        # Not a local activity: it is started beside `run_turn`, and a local one would hold that
        # back until the emoji is on. On this workflow's own queue it is still dispatched eagerly.
        return workflow.start_activity_method(
            ChannelActivities.react,
            Reaction(chat=self.turn.message.chat, message_id=self._reacted_message(), emoji=emoji),
            start_to_close_timeout=timedelta(seconds=10),
            schedule_to_close_timeout=timedelta(minutes=1),
            retry_policy=REACTION_RETRY,
            summary=f"react {emoji}",
        )

    async def _finish(
        self,
        text: str,
        *,
        tone: Literal["answer", "notice", "problem"],
        done: bool,
        outcome: TurnOutcome | None = None,
    ) -> bool:
        """The turn's last message, with the "working" emoji taken off (and a done emoji on a
        completed turn) and the progress card settled in the same delivery. An emoji or a card
        that failed must never cost the answer."""
        working: ReactionRef | None = None
        if self.working is not None:
            try:
                working = await self.working
            except ActivityError as error:
                workflow.logger.info("no working emoji to take off: %s", error)
        final = FinalReply(
            reply=self._reply(text, tone=tone, part="reply"),
            working=working,
            done_emoji=DONE_EMOJI if done and working is not None else None,
            progress=self._progress_end(outcome),
        )
        return await self._deliver(ChannelActivities.deliver_answer, final)

    def _follow_progress(self) -> workflow.ActivityHandle[ProgressCardRef]:
        info = workflow.info()
        watch = ProgressWatch(
            chat=self.turn.message.chat,
            reply_to=self._reply_target(),
            turn_workflow_id=info.workflow_id,
            started_at=info.start_time.timestamp(),
            workspace=self.turn.settings.cwd,
        )
        return workflow.start_activity_method(
            ChannelActivities.follow_progress,
            watch,
            start_to_close_timeout=RUN_TURN_MAX + DELIVERY_WINDOW,
            heartbeat_timeout=PROGRESS_HEARTBEAT,
            retry_policy=PROGRESS_RETRY,
            summary="show progress",
        )

    def _progress_end(self, outcome: TurnOutcome | None) -> ProgressEnd | None:
        """How the turn ended, for the delivery to settle the progress card into a summary."""
        if self.progress is None:
            return None
        return ProgressEnd(
            turn_workflow_id=workflow.info().workflow_id,
            state=outcome.status if outcome is not None else "failed",
            activity=outcome.activity if outcome is not None else None,
            elapsed_s=(workflow.now() - workflow.info().start_time).total_seconds(),
            workspace=self.turn.settings.cwd,
            # Files out: a local activity's input, not recorded, so no patch (docs/operations.md).
            files=outcome.changed_files if outcome is not None else [],
            viewed_images=outcome.viewed_images if outcome is not None else [],
            conversation=parent.workflow_id if (parent := workflow.info().parent) else "",
            host_queue=self.turn.runtime.task_queue,
            host=self.turn.runtime.host,
        )

    async def _send(self, text: str, *, tone: Literal["notice", "problem"], part: str) -> None:
        await self._deliver(ChannelActivities.send_reply, self._reply(text, tone=tone, part=part))

    def _reply(self, text: str, *, tone: Literal["answer", "notice", "problem"], part: str) -> Reply:
        return Reply(
            chat=self.turn.message.chat,
            reply_to=self._reply_target(),
            text=text,
            idempotency_key=names.delivery_key(workflow.info().workflow_id, part),
            tone=tone,
        )

    async def _deliver(self, send: ChatCall[M, SentMessage], message: M) -> bool:
        """Whether it was delivered."""
        try:
            await self._to_chat(send, message, summary="deliver the reply")
            return True
        except LOCAL_CALL_FAILED as error:
            if not isinstance(error, ActivityError) and not workflow.patched(UNDELIVERED_PATCH):
                raise
            # Only a permanent rejection (bot removed from the chat, message gone) or 55 minutes of
            # failures get here: the answer stays readable in the thread; the turn itself succeeded.
            workflow.logger.warning("the reply could not be delivered: %s", error)
            self._set_state("undelivered")
            return False

    def _on_host(self) -> HostCall:
        """A call pinned to the host whose agent process holds this thread."""
        return HostCall(
            task_queue=self.turn.runtime.task_queue,
            schedule_to_start_timeout=HOST_START,
            start_to_close_timeout=HOST_CALL,
            retry_policy=HOST_RETRY,
        )

    async def _to_chat(self, call: ChatCall[A, R], arg: A, *, summary: str) -> R:
        """A call into this chat's channel, retried until it lands. A local activity: the chat's
        worker runs this workflow and speaks the channel, so a reply costs no task-queue hop and
        no workflow task of its own (a retry longer than a minute waits on a durable timer)."""
        return await workflow.execute_local_activity_method(
            call,
            arg,
            start_to_close_timeout=DELIVERY_CALL,
            schedule_to_close_timeout=DELIVERY_WINDOW,
            retry_policy=DELIVERY_RETRY,
            summary=summary,
        )

    # --- the account's usage limit (docs/long-work.md) ---------------------------------------------

    def _limited(self, outcome: TurnOutcome) -> bool:
        return (
            outcome.status == "failed"
            and outcome.error_kind in ("usage_limit", "rate_limit")
            and not self.stop_requested
            and self.limit_waits < self.turn.long_work.max_waits
        )

    async def _wait_out_the_limit(self, limited: TurnOutcome) -> TurnOutcome | ActivityError:
        """Tell the chat when the limit resets and wait for it on a durable timer (a restart of
        everything meanwhile changes nothing), then run the prompt again on the same thread. /stop
        ends the wait; /retry ends it early."""
        self.limit_waits += 1
        work, now = self.turn.long_work, workflow.time()
        known = limited.retry_at is not None
        until = (limited.retry_at or now + work.unknown_reset_s) + (work.after_reset_s if known else 0.0)
        until = max(until, now + 1.0)
        self.limited_until = until
        self._set_state("waiting_for_limit")
        # The conversation first, so a /status sent after the notice already shows the wait.
        await self._tell_waiting(until)
        await self._send(
            _limit_text(limited, until - now, known), tone="notice", part=f"limit:{self.limit_waits}"
        )
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self.stop_requested or self.retry_asked,
                timeout=until - now,
                timeout_summary="the usage limit resets",
            )
        self.limited_until, self.retry_asked = None, False
        await self._tell_waiting(None)
        if self.stop_requested:
            self.stop_sent = True
            return TurnOutcome(thread_id=limited.thread_id, turn_id=limited.turn_id, status="interrupted")
        self._set_state("running")
        return await self._follow(self._run_on_host(limited.thread_id or self.thread_id))

    async def _tell_waiting(self, until: float | None) -> None:
        """The conversation (its /retry and /status) and the owner's alerts learn of the wait and
        of its end. Best effort: neither may hold the turn up."""
        wait = LimitWait(
            turn_workflow_id=workflow.info().workflow_id, chat_id=self.turn.message.chat.chat_id, until=until
        )
        with workflow.unsafe.imports_passed_through():
            from workflows.conversation import ConversationWorkflow  # it imports this module
        parent = workflow.info().parent
        if parent is not None and self.turn.origin.kind != "routine":
            conversation = workflow.get_external_workflow_handle_for(
                ConversationWorkflow.run, parent.workflow_id
            )
            try:
                await conversation.signal(ConversationWorkflow.turn_waiting, wait)
            except Exception as error:
                workflow.logger.info("the conversation was not told of the wait: %s", error)
        if self.turn.alerts_workflow_id is not None:
            alerts = workflow.get_external_workflow_handle_for(
                AlertsWorkflow.run, self.turn.alerts_workflow_id
            )
            try:
                await alerts.signal(AlertsWorkflow.usage_limit, wait)
            except Exception as error:
                workflow.logger.info("the alerts were not told of the wait: %s", error)

    # --- a goal (docs/long-work.md, "Goals") ------------------------------------------------------

    def _pursue_goal(self, objective: str, thread_id: str | None) -> workflow.ActivityHandle[TurnOutcome]:
        """One activity for the whole goal: it reports each of the agent's turns as it ends (the
        `goal_progress` signal) and forwards their requests as run_turn does. After a usage limit
        it is taken up again with what it used so far."""
        work, so_far = self.turn.long_work, self.goal_reports[-1] if self.goal_reports else None
        return workflow.start_activity(
            runtime.run_goal,
            GoalInput(
                thread_id=thread_id,
                settings=self.turn.settings,
                objective=objective,
                max_turns=work.goal_max_turns,
                max_seconds=work.goal_max_s,
                turns_before=so_far.turns if so_far else 0,
                seconds_before=so_far.seconds if so_far else 0.0,
            ),
            task_queue=self.turn.runtime.task_queue,
            schedule_to_start_timeout=HOST_START,
            start_to_close_timeout=RUN_TURN_MAX,
            heartbeat_timeout=RUN_TURN_HEARTBEAT,
            retry_policy=RUN_TURN_RETRY,
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary="pursue the goal on the Codex host",
        )

    async def _show_goal_progress(self) -> None:
        """One line in the chat per turn of the goal. The conversation learns it first, so a /goal
        sent after the line shows it."""
        while self.goal_posted < len(self.goal_reports):
            report = self.goal_reports[self.goal_posted]
            self.goal_posted += 1
            await self._tell_conversation_of_goal(report)
            await self._send(goal_progress_text(report), tone="notice", part=f"goal:{report.turns}")

    async def _tell_conversation_of_goal(self, report: GoalProgress) -> None:
        with workflow.unsafe.imports_passed_through():
            from workflows.conversation import ConversationWorkflow  # it imports this module
        parent = workflow.info().parent
        if parent is None:
            return
        conversation = workflow.get_external_workflow_handle_for(ConversationWorkflow.run, parent.workflow_id)
        try:
            await conversation.signal(ConversationWorkflow.goal_progress, report)
        except Exception as error:
            workflow.logger.info("the conversation was not told of the goal's progress: %s", error)

    async def _goal_ended(
        self, outcome: TurnOutcome, tone: Literal["answer", "notice", "problem"], text: str
    ) -> tuple[Literal["answer", "notice", "problem"], str]:
        """The goal's last word: every turn's line first, then its last turn's answer (read back
        as any turn's), with what became of the goal under it."""
        await self._show_goal_progress()
        goal = outcome.goal or (self.goal_reports[-1] if self.goal_reports else None)
        if goal is None:
            return tone, text
        if not outcome.turn_id and outcome.status != "failed":
            text = ""  # no turn of the goal ran: nothing to answer with
        note = goal_end_text(goal, self.turn.long_work.goal_max_turns, self.turn.long_work.goal_max_s)
        if goal.status == "complete" and tone == "notice":
            tone = "answer"
        return tone, "\n\n".join(filter(None, [text, note]))

    # --- small pure helpers ----------------------------------------------------------------------

    def _has_work(self) -> bool:
        return (
            any(p.card_message_id is None and p.decision is None for p in self.requests.values())
            or any(p.decision is not None and not p.answered for p in self.requests.values())
            or bool(self.steers)
            or (self.stop_requested and not self.stop_sent)
            or len(self.goal_reports) > self.goal_posted
        )

    def _next_expiry(self) -> float | None:
        """Seconds until the next reminder or expiry of a request still waiting, if any."""
        due = [
            p.shown_at + self.turn.approval_timeout_s for p in self.requests.values() if p.decision is None
        ]
        due += [
            p.shown_at + self.turn.reminder_after_s
            for p in self.requests.values()
            if p.decision is None and not p.reminded
        ]
        return max(0.0, min(due) - workflow.time()) if due else None

    def _unsteered(self) -> list[str]:
        """Steers Codex never saw: refused by the host, or arrived once the turn was over."""
        return [*self.unsteered, *self.steers]

    def _may_decide(self, operator_id: str) -> bool:
        return (
            operator_id in (self.turn.message.sender.id, names.LOCAL_OPERATOR)
            or operator_id in self.turn.approvers
        )

    def _reply_target(self) -> str | None:
        """What the turn's messages answer; a routine's run answers no one's message: its messages
        go to its topic, or stand on their own in the chat."""
        if self.turn.origin.kind == "routine":
            return self.turn.message.reply_to
        return self._reacted_message()

    def _reacted_message(self) -> str:
        return self.turn.message.reply_to or self.turn.message.message_id

    def _prompt_text(self) -> str:
        message = self.turn.message
        text = f"{message.quoted}\n\n{message.text}" if message.quoted else message.text
        if message.chat.chat_type == "group" and message.sender.name:
            # In a group several people talk to one thread: Codex must know who speaks.
            return f"[{message.sender.name}] {text}"
        return text

    def _set_state(self, state: str) -> None:
        self.state = state
        updates = [names.TURN_STATE.value_set(state)]
        if self.thread_id:
            updates.append(names.AGENT_THREAD.value_set(self.thread_id))
        workflow.upsert_search_attributes(updates)
        workflow.set_current_details(
            f"**{state}**" + (f" · thread `{self.thread_id}`" if self.thread_id else "")
        )


def _duration(seconds: float) -> str:
    if seconds >= 90 * 60:
        return f"{seconds / 3600:.1f} h"
    return f"{max(seconds, 0):.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


_GOAL_TURN_ENDED = {"completed": "done", "interrupted": "stopped", "failed": "failed"}


def goal_progress_text(report: GoalProgress) -> str:
    """One line per turn of a goal: how it ended, what the goal used so far, and while the goal
    goes on, the start of what Codex said (the last turn's answer follows as the reply)."""
    ended = _GOAL_TURN_ENDED.get(report.turn_status or "", "ended")
    line = (
        f"Goal · turn {report.turns} {ended} ({report.tokens:,} tokens, {_duration(report.seconds)} so far)"
    )
    said = " ".join(report.turn_text.split())
    if report.status == "active" and said:
        return f"{line}: {said[:200]}"
    return line + "."


def goal_end_text(goal: GoalProgress, max_turns: int, max_s: float) -> str:
    used = f"{_turns(goal.turns)}, {goal.tokens:,} tokens, {_duration(goal.seconds)}"
    if goal.over_budget == "turns":
        return (
            f"Goal stopped: it reached its budget of {_turns(max_turns)} without being done ({used}). "
            "/goal shows it; /goal TEXT sets a new one."
        )
    if goal.over_budget == "hours":
        return (
            f"Goal stopped: it reached its budget of {_duration(max_s)} without being done ({used}). "
            "/goal shows it; /goal TEXT sets a new one."
        )
    match goal.status:
        case "complete":
            return f"Goal complete ({used})."
        case "cleared":
            return f"Goal cleared ({used})."
        case "blocked":
            return f"Goal blocked: Codex cannot go on with it ({used}). /goal TEXT sets it again."
        case "paused":
            return f"Goal paused ({used}); nothing runs for it now. /goal TEXT sets it again."
        case "usage_limited":
            return f"Goal stopped at the account's usage limit ({used}). /goal TEXT sets it again."
        case _:
            return (
                f"Codex stopped working on the goal without saying it is done ({used}). "
                "/goal TEXT sets it again."
            )


def _turns(n: int) -> str:
    return "1 turn" if n == 1 else f"{n} turns"


def _limit_text(limited: TurnOutcome, wait_s: float, known: bool) -> str:
    what = "a rate limit" if limited.error_kind == "rate_limit" else "the account's usage limit"
    if known:
        at = datetime.fromtimestamp(limited.retry_at or 0, UTC).strftime("%H:%M UTC")
        when = f"It resets at {at}, in about {_duration(wait_s)}"
    else:
        when = f"Codex did not say when it resets, so this tries again in about {_duration(wait_s)}"
    return (
        f"Codex reached {what}. {when}: this message waits and then runs by itself (messages sent "
        "meanwhile stay queued behind it). /stop cancels it; /retry tries now."
    )


def _what(request: AgentRequest) -> str:
    if request.command:
        return f"`{request.command}`"
    return request.reason or request.kind.replace("_", " ")


def reply_text(outcome: TurnOutcome) -> str:
    if outcome.status == "completed":
        return outcome.final_text or "(Codex finished without a written answer.)"
    if outcome.input_refused:
        return outcome.error or "Codex did not accept this message."  # /retry would fail the same way
    if outcome.runtime_restarted:
        return "The Codex runtime restarted, so this turn was interrupted. Send /retry to run it again."
    if outcome.status == "interrupted":
        said = f"\n\nBefore stopping, Codex said:\n\n{outcome.final_text}" if outcome.final_text else ""
        return "Stopped." + said
    return f"This turn failed: {outcome.error or 'no reason given'}. Send /retry to try again."


def autosave_note(result: AutosaveResult | None) -> str:
    """One line under the reply: what autosave committed, what it left alone and why."""
    if result is None:
        return ""
    if result.commit is not None:
        files = "1 file" if len(result.committed) == 1 else f"{len(result.committed)} files"
        note = f"Autosave: committed {files} as {result.commit[:7]}."
        if result.left_out:
            note += (
                f" Not committed: {_paths(result.left_out)}, which had uncommitted changes before this turn."
            )
        return note + (f" Note: {result.detail}." if result.detail else "")
    if result.skipped == "nothing_changed":
        if not result.left_out:
            return ""
        return (
            f"Autosave: nothing committed; this turn changed only {_paths(result.left_out)}, "
            "which had uncommitted changes before it."
        )
    return f"Autosave: nothing committed; {result.detail or 'no reason given'}."


def _paths(paths: list[str], shown: int = 3) -> str:
    named = ", ".join(paths[:shown])
    return f"{named} and {len(paths) - shown} more" if len(paths) > shown else named


def _never_started(error: ActivityError) -> bool:
    """No worker of the host picked the call up in time: the host is gone."""
    cause = error.cause
    return isinstance(cause, TemporalTimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def reply_tone(outcome: TurnOutcome, *, stopped: bool) -> Literal["answer", "notice", "problem"]:
    """A stop the person asked for is news, not a problem."""
    if outcome.status == "completed":
        return "answer"
    if outcome.status == "interrupted" and stopped and not outcome.runtime_restarted:
        return "notice"
    return "problem"


EXPIRED_RUNTIME_GONE = "expired: the Codex runtime restarted, so Codex no longer waits for it"


def _why_closed(outcome: TurnOutcome | None, stopped: bool) -> str:
    """What an approval card left open says once its turn is over."""
    if outcome is None:
        return "expired: the Codex runtime stopped answering"
    if outcome.runtime_restarted:
        return EXPIRED_RUNTIME_GONE
    if outcome.status == "interrupted":
        return f"not needed any more: the turn was {'stopped' if stopped else 'interrupted'}"
    return f"not needed any more: the turn {'ended' if outcome.status == 'completed' else 'failed'}"


WORK_ALLY = Person(id="work-ally", name="work-ally")
POLICY = Person(id="policy", name="policy")
