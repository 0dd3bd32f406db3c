"""One chat: its agent thread, its host, its queue, its commands. Runs one turn at a time.

Started (or signalled) by signal-with-start from the gateway for every inbound message. Temporal
does not de-duplicate signals, so recent message ids are remembered here; each turn is a child
workflow with a deterministic id, so even a message that slips past that set cannot run twice.
While a turn runs, a new message is queued (the default; the person is told its position) or
steered into the running turn. Commands act at once: /stop /new /status /retry /mode /help.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic_core import to_json
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.channel import ChannelActivities
    from activities.conversations import ConversationActivities
    from activities.routines import routines_posting_in
    from activities.runtime import describe_thread, fork_thread, list_threads, locate_runtime, release_thread
    from ally import names
    from ally.contracts import (
        MODES_BY_AUTONOMY,
        AgentThread,
        BoundThreadsQuery,
        Choice,
        ConversationState,
        ConversationView,
        FileQuery,
        FileRequest,
        ForkInput,
        GoalProgress,
        GoalView,
        HeldAttachment,
        Inbound,
        InboundMessage,
        LimitWait,
        Mode,
        Reply,
        ReplyUpdate,
        SentMessage,
        SessionGrants,
        ThreadBinding,
        ThreadRef,
        ThreadsQuery,
        TurnFailed,
        TurnInput,
        TurnOrigin,
        TurnResult,
        capped,
    )
    from workflows.alerts import AlertsWorkflow
    from workflows.files import SendFileWorkflow
    from workflows.turn import TurnWorkflow

AUTOMATIC_SHOWN = 10
RAISE_AUTONOMY_REFUSED = (
    "Only an approver may let the assistant decide more on its own in this group "
    "(`[access] approvers` in config.toml). /auto ask is open to everyone."
)
SEEN_LIMIT = 500  # Feishu redelivers within minutes; 500 ids cover far more than that window
# A group image (which cannot @-mention anyone) waits this long for its sender's next request.
HELD_FOR_S = 5 * 60
HELD_LIMIT = 20
# A queued message is announced only if it still waits this long after it came (a turn about to
# end needs no notice), and the messages queued meanwhile share that one notice; the next notice
# comes no sooner than QUEUE_NOTICE_AGAIN_S after it, so a burst gets one or two, not one each.
QUEUE_NOTICE_AFTER_S = 3.0
QUEUE_NOTICE_AGAIN_S = 30.0
QUEUE_NOTICES_PATCH = "coalesced-queue-notices"  # before it, each queued message had its notice
# Late messages that arrive together (the bridge was down) gather this long for one card.
STALE_GATHER_S = 2.0
STALE_PATCH = "stale-messages"  # before it, a late message ran like any other
HANDOFF_PATCH = "handed-off"  # before it, no conversation was ever handed off
# Before it, a card for late (or handed-off) messages that was still on its way when they were
# decided kept its buttons; and /resume /fork /handoff sent during a turn waited without a word.
SETTLE_IN_FLIGHT_PATCH = "settle-cards-in-flight"
WAIT_TOLD_PATCH = "continuity-wait-told"
THREADS_BOUND_PATCH = "threads-bound-elsewhere"  # before it, /threads named only this chat's binding
THREADS_SHOWN = 10
CLI_MESSAGE_PREFIX = "cli:"  # a message from the terminal (`ally handoff`): nothing in the chat to reply to
ROUTINES_PATCH = "routines-command"  # before it, /routines got the help text
GOALS_PATCH = "goals"  # before it, /goal got the help text
FILE_PATCH = "file-out"  # before it, /file got the help text
# Temporal refuses a payload over 2 MB: what continue-as-new carries, and a turn's result that
# returns the steers the agent never took, stay well inside that (docs/operations.md "Limits").
CARRY_MAX_BYTES = 1536 * 1024
STEER_MAX_BYTES = 32 * 1024
HELP = """Commands:
/stop: interrupt the running turn (queued messages stay)
/new: start a fresh Codex thread with the next message
/status: what runs, what waits, what is queued
/retry: run the last message again (a message waiting for the usage limit to reset: run it now)
/mode queue|steer: while a turn runs, queue new messages (default) or steer them into it
/auto ask|read_only|trusted: which approvals are decided without asking (deny rules always apply;
  in a group, only an approver may raise it):
  ask: every request goes to a person
  read_only: commands that only read, and only inside the workspace, run on their own
  trusted: also what keeps every effect inside the workspace (edits, local git, tests, builds);
    network, processes, packages, schedulers, git remotes, shell/interpreter code and unknown commands ask
/assistant: which assistant this chat talks to; /assistant NAME switches (private chats)
/bind NAME: bind this group to an assistant (approvers)
/threads: the recent Codex threads of this assistant's workspace (a terminal's too)
/resume N: continue thread N of /threads (or a thread id) in this chat
/fork: a new thread from the current one; the original stays as it was
/handoff: the command to continue this thread in a terminal; until /takeback, messages here ask first
/takeback: continue here after a handoff, with whatever the terminal added
/stale run|drop: run or drop the messages that arrived late
/routines: the routines that post in this chat, their next and last runs
/goal TEXT: Codex works on TEXT turn after turn by itself until it is done, within a budget of
  turns and hours; a line here as each turn ends, then the answer. /goal shows it; /goal clear
  (or /stop) ends it. Messages sent meanwhile wait for it (or steer it, with /mode steer)
/file PATH: send a file of the assistant's workspace here (relative to it, or absolute inside it)
/help: this list"""


@dataclass
class Notice:
    to: InboundMessage
    text: str
    while_queued: bool = False  # a queue position: worth sending only while the message still waits
    choices: list[Choice] = field(default_factory=list)
    keep_as: str | None = None  # "stale" | "handoff": the card's id is kept, to update it once chosen
    offers: list[str] = field(default_factory=list)  # the ids of the held messages the card offers


@workflow.defn
class ConversationWorkflow:
    @workflow.init
    def __init__(self, state: ConversationState) -> None:
        self.state = state
        self.current: InboundMessage | None = None
        self.child: workflow.ChildWorkflowHandle[TurnWorkflow, TurnResult] | None = None
        self.commands: list[InboundMessage] = []
        self.steers: list[InboundMessage] = []
        self.steered: list[InboundMessage] = []  # steered into the running turn
        self.outbox: list[Notice] = []  # sent in order by `_send_notices`, never holding up a turn
        self.between_turns: list[InboundMessage] = []  # commands that wait for the running turn to end
        self.limited_until: float | None = None  # the running turn waits for a usage limit until then
        # What the last choice on held messages said, by kind ("stale" | "handoff"), for a card of
        # theirs that was still on its way when it was taken.
        self.settled: dict[str, str] = {}
        self.telling: set[asyncio.Task[None]] = set()  # commands that wait for a turn, told so after a moment

    @workflow.signal
    def inbound(self, inbound: Inbound) -> None:
        if inbound.config is not None:  # the latest configuration wins, for the turns still to come
            config = inbound.config
            self.state.settings = config.settings
            self.state.policy = config.policy
            self.state.approvers = config.approvers
            self.state.alerts_workflow_id = config.alerts_workflow_id
            self.state.assistant_name = config.assistant_name
            self.state.autosave = config.autosave
            if config.long_work is not None:
                self.state.long_work = config.long_work
            if config.discovery_queue is not None and config.discovery_queue != self.state.discovery_queue:
                # The assistant moved to another host: its thread stays behind on the old one.
                self.state.discovery_queue = config.discovery_queue
                self.state.runtime = None
                self.state.thread_id = None
                self.state.grants = SessionGrants()
        message = inbound.message
        if message.message_id in self.state.seen:
            return  # a redelivery: Feishu pushes again when an ack is slow
        self.state.seen = [*self.state.seen, message.message_id][-SEEN_LIMIT:]
        if message.attachment_only:
            held = HeldAttachment(message=message, held_at=workflow.time())
            self.state.held = [*self._fresh_held(), held][-HELD_LIMIT:]
            return
        if message.stale and workflow.patched(STALE_PATCH):
            self.state.stale = [*self.state.stale, message]
            if self.state.stale_due is None:
                self.state.stale_due = workflow.time() + STALE_GATHER_S
            return
        self._take(message)

    def _take(self, message: InboundMessage) -> None:
        if message.text.strip().startswith("/"):
            self.commands.append(message)
        elif self.state.handed_off:
            first = not self.state.handoff_held
            self.state.handoff_held = [*self.state.handoff_held, message]
            if first:
                text = (
                    "This thread is handed off to a terminal, so this message was not sent into it. "
                    "Take it back (the chat continues with whatever the terminal added), or send it anyway."
                )
                choices = [
                    Choice(label="Take it back", command="/takeback", style="primary"),
                    Choice(label="Send anyway", command="/send"),
                ]
                self.outbox.append(
                    Notice(
                        to=message, text=text, choices=choices, keep_as="handoff", offers=[message.message_id]
                    )
                )
        elif self.current is not None and self.state.busy_policy == "steer":
            self.steers.append(message)
        else:
            self.state.queue.append(self._with_held(message))
            if self.current is not None:
                if workflow.patched(QUEUE_NOTICES_PATCH):
                    self.state.unannounced = [*self.state.unannounced, message.message_id]
                    if self.state.announce_at is None:
                        due = workflow.time() + QUEUE_NOTICE_AFTER_S
                        if self.state.last_announced is not None:
                            due = max(due, self.state.last_announced + QUEUE_NOTICE_AGAIN_S)
                        self.state.announce_at = due
                else:
                    position = len(self.state.queue)
                    text = f"Queued (position {position}); runs after the current turn."
                    self.outbox.append(Notice(to=message, text=text, while_queued=True))

    @workflow.signal
    def turn_waiting(self, wait: LimitWait) -> None:
        """The running turn waits for the account's usage limit to reset (or no longer does)."""
        if wait.turn_workflow_id == self._running_turn():
            self.limited_until = wait.until

    @workflow.signal
    def goal_progress(self, report: GoalProgress) -> None:
        """The running goal's turn reports one of its agent turns (for /goal)."""
        if self.state.goal is not None and self.state.goal.turn_workflow_id == self._running_turn():
            self.state.goal.progress = report

    @workflow.signal
    def recall(self, message_id: str) -> None:
        """The person recalled a message: if it still waits in the queue, it never runs."""
        self.state.queue = [m for m in self.state.queue if m.message_id != message_id]
        if message_id not in self.state.seen:
            self.state.seen = [*self.state.seen, message_id][-SEEN_LIMIT:]

    @workflow.query
    def view(self) -> ConversationView:
        return ConversationView(
            thread_id=self.state.thread_id,
            running=self.current.text[:80] if self.current else None,
            running_turn_workflow_id=self._running_turn(),
            queued=[m.text[:80] for m in self.state.queue],
            busy_policy=self.state.busy_policy,
            turns=self.state.turns,
            handed_off=self.state.handed_off,
        )

    @workflow.run
    async def run(self, state: ConversationState) -> None:
        workflow.upsert_search_attributes([names.CHAT.value_set(self.state.chat.chat_id)])
        sending = asyncio.create_task(self._send_notices())
        announcing = asyncio.create_task(self._announce_queue())
        offering = asyncio.create_task(self._offer_stale())
        while True:
            await workflow.wait_condition(self._has_work)
            if self.child is not None and self.child.done():
                await self._finish_turn()  # first, so that /status reports the finished turn
            if self.child is None and self.between_turns:
                self.commands[:0], self.between_turns = self.between_turns, []
            await self._run_commands()
            await self._forward_steers()
            if (
                self._between_turns()
                and workflow.info().is_continue_as_new_suggested()
                and self._state_fits_one_payload()
            ):
                # Only between turns: a parent continuing-as-new would terminate its running child.
                # The queue travels in the state; nothing else is pending in memory once the
                # notices are out and the handlers done.
                await workflow.wait_condition(lambda: not self.outbox and workflow.all_handlers_finished())
                sending.cancel()
                announcing.cancel()  # the next run announces what is left (it is in the state)
                offering.cancel()
                workflow.continue_as_new(self.state)
            if self.child is None and self.state.queue:
                await self._start_turn(self.state.queue.pop(0))

    # --- turns -----------------------------------------------------------------------------------

    async def _start_turn(self, message: InboundMessage) -> None:
        self.state.last_message = message  # /retry runs it again, even if no runtime takes it now
        if not await self._locate(message):
            return
        assert self.state.runtime is not None
        self.current = message
        goal = _goal_objective(message)
        if goal is not None:
            self._goal_starts(message, goal)
        self.child = await workflow.start_child_workflow(
            TurnWorkflow.run,
            TurnInput(
                message=message,
                origin=TurnOrigin(
                    kind="goal" if goal is not None else "message",
                    message_id=message.message_id,
                    sender=message.sender,
                ),
                goal=goal,
                runtime=self.state.runtime,
                thread_id=self.state.thread_id,
                settings=self.state.settings,
                approvers=self.state.approvers,
                approval_timeout_s=self.state.policy.decline_after_minutes * 60,
                reminder_after_s=self.state.policy.reminder_after_minutes * 60,
                policy=self.state.policy,
                # A ceiling lowered since /auto was chosen applies from the next turn on.
                mode=capped(self.state.mode or self.state.policy.mode, self.state.policy.ceiling),
                grants=self.state.grants,
                assistant=self.state.assistant,
                autosave=self.state.autosave,
                long_work=self.state.long_work,
                alerts_workflow_id=self.state.alerts_workflow_id,
            ),
            id=names.turn_workflow_id(self.state.chat.chat_id, message.message_id),
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"{self._assistant_name()} in {self.state.chat.chat_id}: {message.text[:60]}",
            # Born "running": the turn need not spend a history event saying so.
            search_attributes=workflow.info().typed_search_attributes.updated(
                SearchAttributePair(names.TURN_STATE, "running")
            ),
        )

    async def _locate(self, message: InboundMessage) -> bool:
        """Find the runtime host, if not known yet; False (the chat told why) when none answers."""
        if self.state.runtime is None:
            try:
                self.state.runtime = await workflow.execute_activity(
                    locate_runtime,
                    task_queue=self.state.discovery_queue,
                    # Activity options are not part of replay: a changed timeout needs no patch.
                    schedule_to_start_timeout=timedelta(seconds=self.state.locate_timeout_s),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(maximum_attempts=3),
                    summary="find a Codex runtime host",
                )
            except ActivityError:
                self._tell(message, self._no_runtime_text())
                return False
        return True

    async def _finish_turn(self) -> None:
        assert self.child is not None
        try:
            result = self.child.result()
            if result.thread_id:
                self.state.thread_id = result.thread_id
            self.state.grants = result.grants
            automatic = [f"{d.decision} {d.what}: {d.decided_by}" for d in result.decisions if d.by_policy]
            self.state.automatic = [*self.state.automatic, *automatic][-AUTOMATIC_SHOWN:]
            if result.status == "host_lost":
                self.state.runtime = None  # locate again: the host may be back, or another one is
            self._requeue_unsteered(result.unsteered)
            self._goal_ends(result.goal)
            status = result.status
        except ChildWorkflowError as error:
            workflow.logger.warning("turn workflow failed: %s", error)
            status = "failed"
        if status in ("failed", "host_lost"):
            await self._report_failure(status)
        self.state.turns += 1
        self.child = None
        self.current = None
        self.limited_until = None
        self.steered = []

    async def _report_failure(self, status: str) -> None:
        """Tell the owner's alerts of a failed turn: several soon after each other open an incident.
        Best effort: no alerts running (no owner) must not stop the chat."""
        turn = self._running_turn()
        if self.state.alerts_workflow_id is None or turn is None:
            return
        alerts = workflow.get_external_workflow_handle_for(AlertsWorkflow.run, self.state.alerts_workflow_id)
        failure = TurnFailed(workflow_id=turn, chat_id=self.state.chat.chat_id, status=status)
        try:
            await alerts.signal(AlertsWorkflow.turn_failed, failure)
        except Exception as error:
            workflow.logger.info("alerts not told of a failed turn: %s", error)

    def _requeue_unsteered(self, texts: list[str]) -> None:
        """A steer that reached the turn too late is not lost: it runs as the next turn."""
        missed = list(texts)
        late = []
        for message in self.steered:
            if message.text in missed:
                missed.remove(message.text)
                late.append(message)
        self.state.queue[:0] = late
        for message in late:
            self._tell(message, "The turn had finished before this could steer it; it runs next.")

    # --- while a turn runs ----------------------------------------------------------------------

    async def _forward_steers(self) -> None:
        while self.steers:
            message = self.steers.pop(0)
            if self.child is None:
                self.state.queue.append(message)
                continue
            if len(to_json(message.text)) > STEER_MAX_BYTES:
                # A steer the agent never took comes back in the turn's result, and several large ones
                # would not fit that one payload: a long text runs as a turn of its own.
                self.state.queue.append(message)
                self._tell(message, "Too long to steer the running turn; it runs next, as a turn of its own.")
                continue
            await self.child.signal(TurnWorkflow.steer, message.text)
            self.steered.append(message)
            self._tell(message, "Steered into the running turn.")

    async def _run_commands(self) -> None:
        while self.commands:
            message = self.commands.pop(0)
            command, _, rest = message.text.strip().partition(" ")
            await self._run_command(message, command.lower(), rest.strip())

    async def _run_command(self, message: InboundMessage, command: str, rest: str) -> None:
        if command == "/stop":
            if self.child is None:
                self._tell(message, "Nothing is running." + self._queue_note())
                return
            await self.child.signal(TurnWorkflow.stop)
            self._tell(message, "Stopping the running turn." + self._queue_note())
        elif command == "/new":
            self.state.thread_id = None
            self.state.grants = SessionGrants()  # grants belong to the thread they were given in
            when = "after the current turn" if self.child else "with your next message"
            self._tell(message, f"A fresh Codex thread starts {when}.")
        elif command == "/status":
            self._tell(message, self._status_text())
        elif command == "/retry" and self.child is not None and self.limited_until is not None:
            # The running turn waits for a usage limit: /retry means "try now", not "again later".
            await self.child.signal(TurnWorkflow.retry_now)
            self._tell(message, "Trying the waiting message again now.")
        elif command == "/retry":
            if self.state.last_message is None:
                self._tell(message, "There is nothing to retry yet.")
                return
            # A new id for a new turn; the reply answers the /retry message itself.
            again = self.state.last_message.model_copy(
                update={"message_id": f"{message.message_id}:retry", "reply_to": message.message_id}
            )
            self.state.queue.append(again)
            self._tell(message, f"Retrying: {again.text[:80]}")
        elif command == "/auto" and rest in MODES_BY_AUTONOMY:
            wanted: Mode = rest
            if wanted != "ask" and not self._may_raise_autonomy(message.sender.id):
                self._tell(message, RAISE_AUTONOMY_REFUSED)
                return
            ceiling = self.state.policy.ceiling
            if capped(wanted, ceiling) != wanted:
                self._tell(
                    message,
                    f"{self._assistant_name()} allows at most /auto {ceiling} here "
                    "(its ceiling in config.toml); autonomy is unchanged.",
                )
                return
            self.state.mode = wanted
            self._tell(message, f"Autonomy: {wanted}. Deny rules still apply.")
        elif command == "/goal" and workflow.patched(GOALS_PATCH):
            await self._goal_command(message, rest)
        elif command == "/file" and workflow.patched(FILE_PATCH):
            await self._send_file(message, rest)
        elif command == "/routines" and workflow.patched(ROUTINES_PATCH):
            self._tell(message, await self._routines_here())
        elif command == "/mode" and rest in ("queue", "steer"):
            self.state.busy_policy = rest  # type: ignore[assignment]
            self._tell(message, f"While a turn runs, new messages will {rest}.")
        elif command == "/stale" and rest in ("run", "drop"):
            await self._decide_stale(message, rest)
        elif command in ("/threads", "/resume", "/fork", "/handoff", "/takeback", "/send"):
            await self._continuity(message, command, rest)
        else:
            self._tell(message, HELP)

    # --- goals (docs/long-work.md, "Goals") ------------------------------------------------------

    async def _goal_command(self, message: InboundMessage, rest: str) -> None:
        """/goal shows the goal, /goal clear ends it, /goal TEXT sets one: it runs as a turn of its
        own (workflows/turn.py), queued like a message, so approvals, /stop and /status work as
        for any turn."""
        running = self._running_goal()
        queued = next((m for m in self.state.queue if _goal_objective(m) is not None), None)
        if not rest:
            self._tell(message, self._goal_text(queued))
        elif rest.lower() == "clear":
            if running and self.child is not None:
                await self.child.signal(TurnWorkflow.stop)
                self._tell(
                    message, "Clearing the goal: Codex stops working on it, and its running turn is stopped."
                )
            elif queued is not None:
                self.state.queue.remove(queued)
                self._tell(
                    message, f"The goal that waited was dropped: {(_goal_objective(queued) or '')[:80]}"
                )
            else:
                self._tell(message, "No goal is running.")
        elif running or queued is not None:
            self._tell(message, "A goal is already set here: /goal shows it, /goal clear ends it first.")
        elif self.state.handed_off:
            self._tell(message, "This thread is handed off to a terminal: /takeback first, then /goal.")
        else:
            self.state.queue.append(message)
            if self.child is not None:
                self._tell(message, "The goal is set: Codex starts on it after the current turn.")

    def _goal_starts(self, message: InboundMessage, objective: str) -> None:
        work = self.state.long_work
        self.state.goal = GoalView(
            objective=objective,
            turn_workflow_id=names.turn_workflow_id(self.state.chat.chat_id, message.message_id),
            max_turns=work.goal_max_turns,
            max_s=work.goal_max_s,
        )
        budget = f"at most {work.goal_max_turns} turns and {_hours(work.goal_max_s)}"
        self._tell(
            message,
            f"Goal set. Codex works on it turn after turn by itself ({budget}); a line here as each "
            "turn ends, then the answer. /goal shows it, /goal clear ends it.",
        )

    def _goal_ends(self, report: GoalProgress | None) -> None:
        goal = self.state.goal
        if goal is not None and goal.turn_workflow_id == self._running_turn() and not goal.ended:
            goal.ended = True
            if report is not None:
                goal.progress = report

    def _running_goal(self) -> bool:
        goal = self.state.goal
        return goal is not None and not goal.ended and goal.turn_workflow_id == self._running_turn()

    def _goal_text(self, queued: InboundMessage | None) -> str:
        goal = self.state.goal
        if goal is None and queued is None:
            return "No goal is set here. /goal TEXT sets one."
        if goal is None or (queued is not None and not self._running_goal()):
            assert queued is not None
            return f"Goal (waits for the current turn): {_goal_objective(queued)}"
        lines = [f"Goal: {goal.objective}"]
        report = goal.progress
        turns = report.turns if report else 0
        state = (
            "running" if self._running_goal() else (report.status if report else "ended").replace("_", " ")
        )
        if report is not None and report.over_budget:
            state = "stopped at its budget"
        lines.append(f"Status: {state}; {turns} of at most {goal.max_turns} turns done")
        if report is not None:
            lines.append(
                f"Used: {report.tokens:,} tokens, {_hours(report.seconds)} (at most {_hours(goal.max_s)})"
            )
        if self._running_goal():
            lines.append("/goal clear ends it.")
        return "\n".join(lines)

    # --- files out (docs/operations.md "Files out") -----------------------------------------------

    async def _send_file(self, message: InboundMessage, path: str) -> None:
        """The file goes in a workflow of its own (workflows/files.py), started and not awaited: its
        bytes never enter this history (three events here), and the chat is not held up meanwhile."""
        if not path:
            self._tell(
                message, "Say which file: /file PATH (relative to the workspace, or absolute inside it)."
            )
            return
        if not await self._locate(message):
            return
        assert self.state.runtime is not None
        request = FileRequest(
            chat=self.state.chat,
            reply_to=None
            if message.message_id.startswith(CLI_MESSAGE_PREFIX)
            else (message.reply_to or message.message_id),
            query=FileQuery(workspace=self.state.settings.cwd, path=path),
            host_queue=self.state.runtime.task_queue,
            host=self.state.runtime.host,
            idempotency_key=names.delivery_key(workflow.info().workflow_id, f"file:{message.message_id}"),
        )
        await workflow.start_child_workflow(
            SendFileWorkflow.run,
            request,
            id=f"file:{workflow.info().workflow_id}:{message.message_id}",
            task_queue=self.state.chat.worker_queue,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            static_summary=f"send {path[:80]}",
        )

    # --- continuity (docs/continuity.md) ---------------------------------------------------------

    async def _decide_stale(self, message: InboundMessage, choice: str) -> None:
        held, self.state.stale = self.state.stale, []
        self.state.stale_due = None
        if not held:
            self._tell(message, "No late messages wait.")
            return
        who = message.sender.name or message.sender.id
        if choice == "run":
            for late in held:
                self._take(late.model_copy(update={"stale": False}))
            text = f"Running {_count(held)} that arrived late, in order (chosen by {who})."
        else:
            text = f"Dropped {_count(held)} that arrived late (chosen by {who})."
        cards, self.state.stale_cards = self.state.stale_cards, []
        self.settled["stale"] = text
        await self._settle_cards(cards, text)
        if not cards:
            self._tell(message, text)

    async def _continuity(self, message: InboundMessage, command: str, rest: str) -> None:
        if command in ("/takeback", "/send"):
            await self._end_hold(message, take_back=command == "/takeback")
            return
        if self.child is not None and command != "/threads":
            # It changes the thread under the turn: it runs once the turn has ended (the answer a
            # person reacts to arrives a moment before its turn does). A turn waiting on an approval
            # may not end soon: the person is told, unless it ends within a moment.
            self.between_turns.append(message)
            if workflow.patched(WAIT_TOLD_PATCH):
                told = asyncio.create_task(self._tell_if_still_waiting(message, command))
                self.telling.add(told)
                told.add_done_callback(self.telling.discard)
            return
        if not await self._locate(message):
            return
        try:
            await self._thread_command(message, command, rest)
        except ActivityError as error:
            # The host went away, or has not been upgraded to know the activity: the chat hears
            # it, the conversation lives on (an activity's failure would otherwise end it).
            workflow.logger.warning("%s failed on the host: %s", command, error)
            self._tell(
                message,
                f"The Codex runtime on {self._host()} did not answer, so {command} did nothing. "
                "Try again in a moment (`ally status` shows whether the host is up).",
            )

    async def _thread_command(self, message: InboundMessage, command: str, rest: str) -> None:
        if command == "/threads":
            await self._list_threads(message)
        elif command == "/resume":
            await self._resume(message, rest)
        elif self.state.thread_id is None:
            self._tell(message, f"There is no thread yet to {command.lstrip('/')}: send a message first.")
        elif command == "/fork":
            forked = await self._on_host(
                fork_thread, ForkInput(thread_id=self.state.thread_id, settings=self.state.settings)
            )
            old, self.state.thread_id = self.state.thread_id, forked.thread_id
            self.state.grants = SessionGrants()
            self._tell(
                message,
                f"Forked: this chat now continues on the new thread {forked.thread_id}; the original "
                f"{old} stays as it was (/threads shows both, /resume goes back).",
            )
        else:
            await self._hand_off(message, self.state.thread_id)

    async def _list_threads(self, message: InboundMessage) -> None:
        query = ThreadsQuery(cwd=self.state.settings.cwd, limit=THREADS_SHOWN)
        threads: list[AgentThread] = await self._on_host(list_threads, query)
        self.state.listed_threads = [t.thread_id for t in threads]
        if not threads:
            self._tell(message, f"No Codex threads in {self.state.settings.cwd} yet.")
            return
        elsewhere = await self._bound_elsewhere()
        now = workflow.time()
        lines = [f"Codex threads in {self.state.settings.cwd} (newest first):"]
        for number, thread in enumerate(threads, start=1):
            where = " · bound to this chat" if thread.thread_id == self.state.thread_id else ""
            if thread.thread_id == self.state.thread_id and self.state.handed_off:
                where = " · handed off to a terminal"
            for other in elsewhere.get(thread.thread_id, []):
                where += f" · bound to {other}"
            fork = f" · forked from {thread.forked_from}" if thread.forked_from else ""
            title = thread.title or "(no words yet)"
            lines.append(
                f"{number}. {title} · {_ago(now - thread.updated_at)}{where}{fork}\n   {thread.thread_id}"
            )
        lines.append("/resume N continues one here.")
        self._tell(message, "\n".join(lines))

    async def _tell_if_still_waiting(self, message: InboundMessage, command: str) -> None:
        await workflow.sleep(QUEUE_NOTICE_AFTER_S, summary=f"tell {command} it waits, if it still does")
        if any(m.message_id == message.message_id for m in self.between_turns):
            self._tell(
                message,
                f"{command} runs as soon as the running turn has ended "
                "(it changes the thread under the turn). /stop ends the turn now.",
            )

    async def _bound_elsewhere(self) -> dict[str, list[str]]:
        """Which other chats' conversations of this assistant hold which thread; best effort."""
        if not workflow.patched(THREADS_BOUND_PATCH):
            return {}
        try:
            bound: list[ThreadBinding] = await workflow.execute_activity_method(
                ConversationActivities.bound_threads,
                BoundThreadsQuery(assistant=self.state.assistant),
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary="which chats hold which thread",
            )
        except ActivityError as error:
            workflow.logger.info("threads bound elsewhere not known: %s", error)
            return {}
        places: dict[str, list[str]] = {}
        for binding in bound:
            if binding.conversation_id == workflow.info().workflow_id:
                continue
            place = f"chat {binding.chat}" + (f" (topic {binding.topic})" if binding.topic else "")
            if binding.handed_off:
                place += ", handed off to a terminal"
            places.setdefault(binding.thread_id, []).append(place)
        return places

    async def _resume(self, message: InboundMessage, wanted: str) -> None:
        listed = self.state.listed_threads
        if wanted.isdigit() and 1 <= int(wanted) <= len(listed):
            thread_id = listed[int(wanted) - 1]
        elif len(wanted) > 8 and not wanted.isdigit():
            thread_id = wanted
        else:
            self._tell(message, "Say which thread: /resume N after /threads, or /resume THREAD_ID.")
            return
        try:
            thread = await self._on_host(describe_thread, ThreadRef(thread_id=thread_id))
        except ActivityError:
            self._tell(message, f"There is no Codex thread {thread_id} on {self._host()}.")
            return
        self.state.thread_id = thread.thread_id
        self.state.grants = SessionGrants()
        self._stop_handoff()
        last = " ".join(thread.last_answer.split())
        text = f"Picked up thread {thread.thread_id}: {thread.title or '(untitled)'}."
        if message.message_id.startswith(CLI_MESSAGE_PREFIX):
            text = f"Handed over from the terminal by {message.sender.name or message.sender.id}. {text}"
        text += f"\nLast answer: {last[:200]}" if last else "\nIt has no answer yet."
        self._tell(message, text + "\nYour next message continues it.")

    async def _hand_off(self, message: InboundMessage, thread_id: str) -> None:
        workflow.patched(HANDOFF_PATCH)
        release = await self._on_host(release_thread, ThreadRef(thread_id=thread_id))
        self.state.handed_off = True
        home = f"CODEX_HOME={release.codex_home} " if release.codex_home else ""
        text = (
            f"To continue thread {thread_id} in a terminal on {self._host()}:\n"
            f"cd {self.state.settings.cwd} && {home}codex resume {thread_id}\n"
            "Until you /takeback, a message here asks before it goes into the thread."
        )
        if not release.released:
            text += (
                "\nThe runtime could not let go of the thread yet (it was loaded before this "
                "release existed): the terminal can write it once the runtime restarts."
            )
        self._tell(message, text)

    async def _end_hold(self, message: InboundMessage, *, take_back: bool) -> None:
        held, self.state.handoff_held = self.state.handoff_held, []
        cards, self.state.handoff_cards = self.state.handoff_cards, []
        who = message.sender.name or message.sender.id
        if take_back:
            if not self.state.handed_off:
                self._tell(message, "This chat was not handed off.")
            else:
                self._stop_handoff()
                text = "Taken back: this chat continues the thread"
                if self.state.thread_id is not None and await self._locate(message):
                    try:
                        thread = await self._on_host(
                            describe_thread, ThreadRef(thread_id=self.state.thread_id)
                        )
                        last = " ".join(thread.last_answer.split())
                        text += f", whose last answer is: {last[:200]}" if last else "."
                    except ActivityError:
                        text += "."
                else:
                    text += "."
                self._tell(message, text)
        for waiting in held:
            self.state.queue.append(self._with_held(waiting))
        done = "Taken back" if take_back else "Sent anyway"
        if held:
            self.settled["handoff"] = f"{done} by {who}: {_count(held)} sent into the thread."
        if cards:
            await self._settle_cards(cards, f"{done} by {who}: {_count(held)} sent into the thread.")
        elif not take_back and not held:
            self._tell(message, "No message waits.")

    def _stop_handoff(self) -> None:
        self.state.handed_off = False

    async def _on_host(self, fn: Any, arg: Any) -> Any:
        assert self.state.runtime is not None
        return await workflow.execute_activity(
            fn,
            arg,
            task_queue=self.state.runtime.task_queue,
            schedule_to_start_timeout=timedelta(seconds=30),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
            summary=f"{fn.__name__.replace('_', ' ')} on the host",
        )

    async def _settle_cards(self, cards: list[str], text: str) -> None:
        """The cards that offered a choice now say what was chosen, with no buttons left."""
        for card in cards:
            try:
                await workflow.execute_activity_method(
                    ChannelActivities.update_reply,
                    ReplyUpdate(chat=self.state.chat, message_id=card, text=text),
                    start_to_close_timeout=timedelta(seconds=30),
                    schedule_to_close_timeout=timedelta(minutes=5),
                    retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
                    summary="show the choice on the card",
                )
            except ActivityError as error:
                workflow.logger.warning("a card could not be updated: %s", error)

    async def _offer_stale(self) -> None:
        """Runs beside the main loop: one card for the late messages that arrived together."""
        while True:
            await workflow.wait_condition(lambda: self.state.stale_due is not None)
            assert self.state.stale_due is not None
            delay = self.state.stale_due - workflow.time()
            if delay > 0:
                await workflow.sleep(delay, summary="let late messages gather for one card")
            self.state.stale_due = None
            held = self.state.stale
            if not held:
                continue
            now = workflow.time()
            oldest = min((m.sent_at for m in held if m.sent_at is not None), default=now)
            lines = [
                f"{_count(held).capitalize()} reached me late (sent up to {_ago(now - oldest)}; "
                "I was probably offline). Run them now, in order, or drop them?"
            ]
            lines += [f"{i}. {' '.join(m.text.split())[:80]}" for i, m in enumerate(held, start=1)]
            choices = [
                Choice(label="Run them now", command="/stale run", style="primary"),
                Choice(label="Drop them", command="/stale drop", style="danger"),
            ]
            offers = [m.message_id for m in held]
            self.outbox.append(
                Notice(to=held[-1], text="\n".join(lines), choices=choices, keep_as="stale", offers=offers)
            )

    async def _routines_here(self) -> str:
        """Schedules are the Temporal client's to list, not a workflow's: an activity on this
        chat's worker asks (docs/routines.md)."""
        try:
            return await workflow.execute_activity(
                routines_posting_in,
                self.state.chat.chat_id,
                start_to_close_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary="list the routines posting here",
            )
        except ActivityError as error:
            workflow.logger.warning("routines not listed: %s", error)
            return "The routines could not be listed just now; `ally routines list` shows them."

    async def _send_notices(self) -> None:
        """Runs beside the main loop for the conversation's life: notices go out in order, and a
        turn never waits for one. A queue position that is stale by the time it would be sent (the
        message already runs) is not sent at all."""
        while True:
            await workflow.wait_condition(lambda: bool(self.outbox))
            notice = self.outbox[0]
            if not notice.while_queued or any(m.message_id == notice.to.message_id for m in self.state.queue):
                try:
                    sent = await self._say(notice.to, notice.text, notice.choices)
                    if notice.keep_as is not None:
                        await self._keep_card(notice, sent.message_id)
                except ActivityError as error:  # rejected for good, or 55 minutes of failures
                    workflow.logger.warning("a notice could not be delivered: %s", error)
            self.outbox.pop(0)

    async def _keep_card(self, notice: Notice, card: str) -> None:
        """A card offering held messages is kept, so the choice rewrites it. If they were decided
        while it was on its way (another card's button, a typed command), it shows that at once."""
        if notice.keep_as == "stale":
            held = {m.message_id for m in self.state.stale}
        else:
            held = {m.message_id for m in self.state.handoff_held}
        decided = self.settled.get(notice.keep_as or "")
        if (
            not held.intersection(notice.offers)
            and decided is not None
            and workflow.patched(SETTLE_IN_FLIGHT_PATCH)
        ):
            await self._settle_cards([card], decided)
        elif notice.keep_as == "stale":
            self.state.stale_cards = [*self.state.stale_cards, card]
        else:
            self.state.handoff_cards = [*self.state.handoff_cards, card]

    async def _announce_queue(self) -> None:
        """Runs beside the main loop: tells the chat which messages wait, once they have waited
        `QUEUE_NOTICE_AFTER_S`, in one notice for all queued meanwhile (see the constants)."""
        while True:
            await workflow.wait_condition(lambda: self.state.announce_at is not None)
            assert self.state.announce_at is not None
            delay = self.state.announce_at - workflow.time()
            if delay > 0:
                await workflow.sleep(delay, summary="let queued messages gather for one notice")
            waiting = [m for m in self.state.queue if m.message_id in self.state.unannounced]
            self.state.unannounced, self.state.announce_at = [], None
            if not waiting:
                continue  # they all started meanwhile
            self.state.last_announced = workflow.time()
            queued = [m.message_id for m in self.state.queue]
            positions = sorted(queued.index(m.message_id) + 1 for m in waiting)
            if len(waiting) == 1:
                text = f"Queued (position {positions[0]}); runs after the current turn."
            else:
                text = (
                    f"Queued: {len(waiting)} messages (positions {positions[0]} to {positions[-1]}); "
                    "they run in order after the current turn."
                )
            self.outbox.append(Notice(to=waiting[-1], text=text, while_queued=True))

    # --- helpers ---------------------------------------------------------------------------------

    def _fresh_held(self) -> list[HeldAttachment]:
        now = workflow.time()
        return [h for h in self.state.held if now - h.held_at <= HELD_FOR_S]

    def _with_held(self, message: InboundMessage) -> InboundMessage:
        """The message with the attachments its sender sent just before it, which could not
        mention the assistant themselves (images and files in a group)."""
        if not self.state.held:
            return message
        fresh = self._fresh_held()
        mine = [h.message for h in fresh if h.message.sender.id == message.sender.id]
        self.state.held = [h for h in fresh if h.message.sender.id != message.sender.id]
        if not mine:
            return message
        notes = [m.text for m in mine if m.text]
        return message.model_copy(
            update={
                "text": "\n\n".join([message.text, *notes]),
                "local_images": [*(image for m in mine for image in m.local_images), *message.local_images],
            }
        )

    def _has_work(self) -> bool:
        return (
            bool(self.commands or self.steers)
            or (self.child is None and bool(self.between_turns))
            or (self.child is not None and self.child.done())
            or (self.child is None and bool(self.state.queue))
        )

    def _may_raise_autonomy(self, person_id: str) -> bool:
        """More autonomy means fewer questions for everyone in the chat: in a group that is for an
        approver to decide. In a private chat the person decides for themselves; anyone may go
        back to "ask"."""
        if self.state.chat.chat_type != "group":
            return True
        return person_id in self.state.approvers or person_id == names.LOCAL_OPERATOR

    def _running_turn(self) -> str | None:
        """The workflow id of the turn that runs now, if one does."""
        if self.current is None:
            return None
        return names.turn_workflow_id(self.state.chat.chat_id, self.current.message_id)

    def _state_fits_one_payload(self) -> bool:
        """Continue-as-new carries the state in one payload (at most 2 MB): with large messages
        queued, wait until the queue has drained instead of failing the workflow task forever."""
        return len(self.state.model_dump_json()) <= CARRY_MAX_BYTES

    def _between_turns(self) -> bool:
        return self.child is None and not (self.commands or self.steers or self.between_turns)

    def _queue_note(self) -> str:
        return f" {len(self.state.queue)} queued message(s) stay queued." if self.state.queue else ""

    def _host(self) -> str:
        return self.state.runtime.host if self.state.runtime else "its host"

    def _assistant_name(self) -> str:
        return self.state.assistant_name or self.state.assistant

    def _no_runtime_text(self) -> str:
        if self.state.discovery_queue.startswith(names.runtime_queue("")):
            host = self.state.discovery_queue.removeprefix(names.runtime_queue(""))
            return (
                f"{self._assistant_name()} lives on the host {host}, whose Codex runtime is not answering. "
                f"Start `ally up` there, then /retry."
            )
        return "No Codex runtime is running on this machine. Start `ally up`, then /retry."

    def _status_text(self) -> str:
        lines = [
            f"Assistant: {self._assistant_name()}"
            + (f" (topic {self.state.topic})" if self.state.topic else "")
        ]
        lines.append(f"Thread: {self.state.thread_id or '(new with the next message)'}")
        if self.current is not None:
            lines.append(f"Running: {self.current.text[:80]}")
            if self.limited_until is not None:
                left = max(self.limited_until - workflow.time(), 0)
                lines.append(
                    f"Waiting for the usage limit to reset (about {left / 60:.0f} min); /retry tries now."
                )
            turn = self._running_turn()
            if self._running_goal() and self.state.goal is not None:
                lines.append(f"Working on a goal ({self.state.goal.objective[:60]}): /goal shows it.")
            lines.append(f"Turn: {turn} (Temporal UI)")
        else:
            lines.append("Running: nothing")
        lines.append(f"Queued: {len(self.state.queue)}")
        lines += [f"  {i + 1}. {m.text[:60]}" for i, m in enumerate(self.state.queue)]
        lines.append(f"While busy: {self.state.busy_policy}. Turns so far: {self.state.turns}.")
        mode = capped(self.state.mode or self.state.policy.mode, self.state.policy.ceiling)
        lines.append(f"Autonomy: {mode} (at most {self.state.policy.ceiling}).")
        if self.state.automatic:
            lines.append("Decided automatically:")
            lines += [f"  - {decision}" for decision in self.state.automatic]
        if self.state.runtime:
            lines.append(f"Runtime host: {self.state.runtime.host}")
        return "\n".join(lines)

    def _tell(self, to: InboundMessage, text: str) -> None:
        self.outbox.append(Notice(to=to, text=text))

    async def _say(self, to: InboundMessage, text: str, choices: list[Choice] | None = None) -> SentMessage:
        """Not a local activity: a notice goes out beside the main loop, and a local one would hold
        back a turn started meanwhile until it landed. On this workflow's own queue (the chat's
        worker) it is dispatched eagerly all the same."""
        self.state.notices += 1
        key = names.delivery_key(workflow.info().workflow_id, f"notice:{self.state.notices}")
        return await workflow.execute_activity_method(
            ChannelActivities.send_reply,
            Reply(
                chat=self.state.chat,
                # A button's click answers on the card it was on (`reply_to`), not on its own id.
                reply_to=None
                if to.message_id.startswith(CLI_MESSAGE_PREFIX)
                else (to.reply_to or to.message_id),
                text=text,
                idempotency_key=key,
                tone="notice",
                choices=choices or [],
                conversation=workflow.info().workflow_id if choices else "",
            ),
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(minutes=55),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            summary="tell the chat",
        )


def _goal_objective(message: InboundMessage) -> str | None:
    """The objective of a `/goal TEXT` message; None for any other message."""
    command, _, rest = message.text.strip().partition(" ")
    rest = rest.strip()
    if command.lower() != "/goal" or not rest or rest.lower() == "clear":
        return None
    return rest


def _hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _count(messages: list[InboundMessage]) -> str:
    return "1 message" if len(messages) == 1 else f"{len(messages)} messages"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return "just now" if seconds < 30 else "a minute ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min ago"
    if seconds < 36 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"
