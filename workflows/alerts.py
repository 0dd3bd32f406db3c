"""The owner's alerts: one workflow per deployment (`names.ALERTS_WORKFLOW_ID`), on the Feishu chats'
worker so its messages go out through the channel's own `send_reply`.

It watches for trouble and keeps incidents in its state: "no runtime host answering" (it asks the
discovery queue, as a new conversation does, every `probe_every_s`) and "turns failing" (the
conversations tell it of each failed turn). An incident opens once, when its condition has held long
enough, and resolves once, when it is over: one message each, keyed by the incident's number, so a
retry or a restart of any part never sends either twice and a flapping host cannot storm the chat.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.channel import ChannelActivities
    from activities.runtime import account_status, locate_runtime
    from ally import names
    from ally.contracts import (
        AlertsConfig,
        AlertsState,
        AlertsView,
        Incident,
        IncidentKind,
        LimitWait,
        PartCrashed,
        Reply,
        RuntimeLocation,
        TurnFailed,
    )

RESOLVED_KEPT = 20
# Before these, Codex's login was not asked and turns did not report usage limits.
LOGIN_PATCH = "codex-login-probe"
USAGE_LIMIT_PATCH = "usage-limit-alert"


@workflow.defn
class AlertsWorkflow:
    @workflow.init
    def __init__(self, state: AlertsState) -> None:
        # Set here, not in run: a `configure` signal sent with the start is handled before run begins.
        self.state = state
        self.failed: list[TurnFailed] = []
        self.crashed: list[PartCrashed] = []
        self.limits: list[LimitWait] = []
        self.outbox: list[tuple[Incident, str]] = []  # messages owed to the owner, sent in order

    @workflow.run
    async def run(self, state: AlertsState) -> None:
        while True:
            await self._probe_runtime()
            # Only with pinned hosts configured, so histories from before issue the same commands.
            if self.state.config.hosts and workflow.patched("probe-each-host"):
                await self._probe_hosts()
            self._count_failures()
            self._note_crashes()
            if self.limits or self.state.limited_until is not None:
                self._note_limits()
            await self._send_pending()
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(self.state)
            with contextlib.suppress(asyncio.TimeoutError):  # the next probe (or a limit's reset) is due
                await workflow.wait_condition(
                    lambda: bool(self.failed or self.crashed or self.limits),
                    timeout=timedelta(seconds=self._next_wake()),
                )

    @workflow.signal
    def configure(self, config: AlertsConfig) -> None:
        """A gateway started with this configuration (the owner or the thresholds may have changed)."""
        self.state.config = config

    @workflow.signal
    def turn_failed(self, failure: TurnFailed) -> None:
        self.failed.append(failure)

    @workflow.signal
    def part_crashed(self, crash: PartCrashed) -> None:
        self.crashed.append(crash)

    @workflow.signal
    def usage_limit(self, wait: LimitWait) -> None:
        """A turn waits for the account's usage limit to reset (or has stopped waiting)."""
        self.limits.append(wait)

    @workflow.query
    def view(self) -> AlertsView:
        incidents = self.state.incidents
        return AlertsView(
            open=[i for i in incidents if i.resolved_at is None],
            resolved=[i for i in incidents if i.resolved_at is not None],
        )

    # --- observations ----------------------------------------------------------------------------

    async def _probe_runtime(self) -> None:
        config = self.state.config
        try:
            location = await workflow.execute_activity(
                locate_runtime,
                task_queue=config.discovery_queue,
                schedule_to_start_timeout=timedelta(seconds=config.probe_timeout_s),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary="is a Codex runtime host answering?",
            )
        except ActivityError:
            now = workflow.time()
            if self.state.runtime_down_since is None:
                self.state.runtime_down_since = now
            down_for = now - self.state.runtime_down_since
            if down_for >= config.runtime_down_after_s and self._open("runtime_down") is None:
                self._open_incident(
                    "runtime_down",
                    f"No Codex runtime host has answered for {_words(down_for)}: new messages wait "
                    "until one is back. Check `ally status` and `ally logs runtime-worker`.",
                )
            return
        self.state.runtime_down_since = None
        if (incident := self._open("runtime_down")) is not None:
            self._resolve(incident)
        if workflow.patched(LOGIN_PATCH):
            await self._probe_login(location)

    async def _probe_login(self, location: RuntimeLocation) -> None:
        """Codex on the host that answered: logged in (or needing no login)? A logged-out Codex
        fails every turn; the owner hears it once, and once more when it is logged in again."""
        config = self.state.config
        try:
            account = await workflow.execute_activity(
                account_status,
                task_queue=location.task_queue,
                schedule_to_start_timeout=timedelta(seconds=config.probe_timeout_s),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary=f"is Codex logged in on {location.host}?",
            )
        except ActivityError:
            return  # a host that does not answer is the runtime probes' business
        incident = self._open("logged_out", location.host)
        if not account.logged_in and incident is None:
            self._open_incident(
                "logged_out",
                f"Codex on the host {location.host} is logged out ({account.detail}): its turns cannot "
                f"reach the model. Log it in again there (`codex login`, with the runtime's CODEX_HOME); "
                "`ally doctor` checks it.",
                subject=location.host,
            )
        elif account.logged_in and incident is not None:
            self._resolve(incident)

    async def _probe_hosts(self) -> None:
        """Each host assistants are pinned to, on its own queue: the discovery queue only says that
        some host answers, and a pinned assistant's chats wait for theirs."""
        config = self.state.config
        for host in list(self.state.hosts_down_since):
            if host not in config.hosts:  # no assistant lives there any more
                del self.state.hosts_down_since[host]
                if (incident := self._open("host_down", host)) is not None:
                    self._resolve(incident)
        for host, assistants in config.hosts.items():
            try:
                await workflow.execute_activity(
                    locate_runtime,
                    task_queue=names.runtime_queue(host),
                    schedule_to_start_timeout=timedelta(seconds=config.probe_timeout_s),
                    start_to_close_timeout=timedelta(seconds=10),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    summary=f"is the runtime host {host} answering?",
                )
            except ActivityError:
                now = workflow.time()
                since = self.state.hosts_down_since.setdefault(host, now)
                down_for = now - since
                if down_for >= config.runtime_down_after_s and self._open("host_down", host) is None:
                    self._open_incident(
                        "host_down",
                        f"The runtime host {host} has not answered for {_words(down_for)}: "
                        f"{', '.join(assistants)} cannot answer until it is back. Start `ally up` on "
                        f"{host}; `ally status` lists the hosts.",
                        subject=host,
                    )
                continue
            self.state.hosts_down_since.pop(host, None)
            if (incident := self._open("host_down", host)) is not None:
                self._resolve(incident)

    def _count_failures(self) -> None:
        config = self.state.config
        now = workflow.time()
        fresh, self.failed = self.failed, []
        self.state.failures = [t for t in self.state.failures if now - t < config.failures_window_s]
        self.state.failures += [now] * len(fresh)
        incident = self._open("turns_failing")
        if incident is None and len(self.state.failures) >= config.failures:
            self._open_incident(
                "turns_failing",
                f"{len(self.state.failures)} turns failed within {_words(config.failures_window_s)}. "
                "Check `ally status` and `ally logs runtime-worker`.",
            )
        elif incident is not None and not fresh:
            last = max(self.state.failures, default=incident.opened_at)
            if now - last >= config.quiet_after_s:
                self._resolve(incident)
                self.state.failures = []  # the next incident counts its own failures

    def _note_crashes(self) -> None:
        """A part `ally up` had to restart: one incident per part while it keeps crashing; over
        once it has run `quiet_after_s` without another crash."""
        now = workflow.time()
        fresh, self.crashed = self.crashed, []
        for crash in fresh:
            incident = self._open("part_crashed", crash.part)
            if incident is None:
                code = "" if crash.exit_code is None else f" (exit code {crash.exit_code})"
                self._open_incident(
                    "part_crashed",
                    f"The {crash.part} died{code} and `ally up` restarted it: {crash.reason}. "
                    f"See `ally logs {crash.part}`.",
                    subject=crash.part,
                )
            else:
                incident.last_seen = now
        quiet_after = self.state.config.quiet_after_s
        for incident in list(self.state.incidents):
            crashing = incident.kind == "part_crashed" and incident.resolved_at is None
            if crashing and now - (incident.last_seen or incident.opened_at) >= quiet_after:
                self._resolve(incident)

    def _note_limits(self) -> None:
        """Turns wait for the account's usage limit: one incident until the latest reset any of them
        waits for has passed."""
        fresh, self.limits = self.limits, []
        resets = [w.until for w in fresh if w.until is not None]
        if resets and workflow.patched(USAGE_LIMIT_PATCH):
            latest = max([*resets, self.state.limited_until or 0.0])
            self.state.limited_until = latest
            at = datetime.fromtimestamp(latest, UTC).strftime("%H:%M UTC")
            if self._open("usage_limit") is None:
                self._open_incident(
                    "usage_limit",
                    f"Codex reached the account's usage limit; it resets at {at}. Turns that hit it "
                    "wait and run by themselves then; messages sent meanwhile queue behind them.",
                )
        incident = self._open("usage_limit")
        until = self.state.limited_until
        if until is not None and workflow.time() >= until:
            self.state.limited_until = None
            if incident is not None:
                self._resolve(incident)

    def _next_wake(self) -> float:
        """Seconds to the next probe, or to the usage limit's reset when that comes first."""
        every = self.state.config.probe_every_s
        if self.state.limited_until is None:
            return every
        return max(min(every, self.state.limited_until - workflow.time()), 0.1)

    # --- incidents -------------------------------------------------------------------------------

    def _open(self, kind: IncidentKind, subject: str = "") -> Incident | None:
        return next(
            (
                i
                for i in self.state.incidents
                if i.kind == kind and i.subject == subject and i.resolved_at is None
            ),
            None,
        )

    def _open_incident(self, kind: IncidentKind, text: str, subject: str = "") -> None:
        self.state.opened += 1
        incident = Incident(
            number=self.state.opened, kind=kind, opened_at=workflow.time(), text=text, subject=subject
        )
        self.state.incidents.append(incident)
        self.outbox.append((incident, "open"))

    def _resolve(self, incident: Incident) -> None:
        incident.resolved_at = workflow.time()
        self.outbox.append((incident, "resolved"))
        resolved = [i for i in self.state.incidents if i.resolved_at is not None]
        for old in resolved[:-RESOLVED_KEPT]:
            self.state.incidents.remove(old)

    async def _send_pending(self) -> None:
        while self.outbox:
            incident, what = self.outbox[0]
            if what == "open":
                text = f"⚠️ Alert: {incident.text}"
            else:
                lasted = _words((incident.resolved_at or incident.opened_at) - incident.opened_at)
                title = _TITLES[incident.kind].format(subject=incident.subject)
                text = f"✅ Resolved (after {lasted}): {title} is over."
            key = names.delivery_key(workflow.info().workflow_id, f"alert:{incident.number}:{what}")
            try:
                await workflow.execute_activity_method(
                    ChannelActivities.send_reply,
                    Reply(
                        chat=self.state.config.owner,
                        reply_to=None,
                        text=text,
                        idempotency_key=key,
                        tone="problem" if what == "open" else "notice",
                    ),
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=20),
                    summary=f"tell the owner: incident {incident.number} {what}",
                )
            except ActivityError:
                workflow.logger.warning("could not tell the owner about incident %s", incident.number)
            self.outbox.pop(0)


_TITLES: dict[IncidentKind, str] = {
    "runtime_down": "no Codex runtime host answering",
    "turns_failing": "turns failing repeatedly",
    "part_crashed": "the {subject} crashing",
    "host_down": "the runtime host {subject} not answering",
    "usage_limit": "the account's usage limit",
    "logged_out": "Codex logged out on {subject}",
}


def _words(seconds: float) -> str:
    if seconds < 120:
        return f"{round(seconds)} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"
