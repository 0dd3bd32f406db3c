"""Routines: prompts on a schedule whose answers arrive in a chat, stored as Temporal Schedules.

A routine is written in a TOML file (`<data dir>/routines/<name>.toml`, `RoutineSpec`), so it can be
versioned; `ally routines apply` makes the schedules match the files. Each schedule (`routine:<name>`)
starts a `RoutineRunWorkflow` (workflows/routine.py) on the chat's worker, carrying the routine and
its assistant's settings as they resolved when it was applied (`RoutineRun`). docs/routines.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from ally import names
from ally.contracts import ChatRef, Mode, RoutineKind, RoutineRun, RoutineRunResult, capped

Overlap = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]
OVERLAP: dict[str, ScheduleOverlapPolicy] = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MEMO_KEY = "work_ally_routine"  # the schedule's memo: the routine as written, and its fingerprint
TEMPLATES = Path(__file__).parent / "templates" / "routines"
LAST_RUNS_SHOWN = 5


class RoutineError(Exception):
    """Something about a routine that the person can fix; the text says what."""


def seconds(text: str) -> float:
    """ "90s", "5m", "2h", "1d" as seconds."""
    match = DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 2h or 1d")
    return float(match.group(1)) * UNITS[match.group(2)]


class RoutineSpec(BaseModel):
    """One routine, as written in its file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="One word: letters, digits, - and _.")
    kind: RoutineKind = "prompt"
    prompt: str = ""
    cron: str | None = Field(None, description='Five cron fields, e.g. "30 7 * * mon-fri", or "@daily".')
    every: str | None = Field(None, description="An interval instead of cron: 30s, 5m, 2h, 1d.")
    time_zone: str = "UTC"
    assistant: str = names.DEFAULT_ASSISTANT
    chat: str | None = None  # the chat id it posts to; the memory digest: the owner by default
    chat_type: Literal["p2p", "group"] = "p2p"
    topic: str = ""
    thread: Literal["fresh", "continue"] = "fresh"
    overlap: Overlap = "skip"
    catchup_window: str = "1h"
    mode: Mode = "read_only"
    approval_expiry: str = "30m"
    paused: bool = False  # when first applied; afterwards `pause` and `resume` decide
    digest_day: Literal["today", "yesterday"] = "today"

    @field_validator("name")
    @classmethod
    def _one_word(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError("must be one word of letters, digits, - and _ (at most 64)")
        return value

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name like Asia/Shanghai or UTC") from None
        return value

    @field_validator("every", "catchup_window", "approval_expiry")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and seconds(value) <= 0:
            raise ValueError("must be longer than zero")
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("@"):
            return value
        if len(value.split()) != 5 or "CRON_TZ" in value:
            raise ValueError('must be five fields (minute hour day month weekday), e.g. "30 7 * * *"')
        return value

    @model_validator(mode="after")
    def _complete(self) -> RoutineSpec:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of cron or every")
        if self.kind == "prompt" and not self.prompt.strip():
            raise ValueError("a routine of kind prompt needs a prompt")
        if self.kind == "prompt" and not self.chat:
            raise ValueError("a routine of kind prompt needs a chat to post to")
        return self

    def when(self) -> str:
        rule = f"cron {self.cron}" if self.cron else f"every {self.every}"
        return f"{rule} ({self.time_zone})"


def routines_dir() -> Path:
    from ally.config import data_dir

    return data_dir() / "routines"


def load_file(path: Path) -> RoutineSpec:
    """One routine file; `RoutineError` with the file, the key and what is wrong."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RoutineError(f"{path}: cannot be read ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise RoutineError(f"{path}: not valid TOML ({error})") from None
    raw.setdefault("name", path.stem)
    try:
        return RoutineSpec.model_validate(raw)
    except ValidationError as error:
        raise RoutineError(f"{path}: {_plain(error)}") from None


def load_dir(folder: Path) -> list[RoutineSpec]:
    """Every `*.toml` in the folder; all problems at once, so one pass fixes them."""
    specs, problems = [], []
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
        try:
            specs.append(load_file(path))
        except RoutineError as error:
            problems.append(str(error))
    seen: dict[str, int] = {}
    for spec in specs:
        seen[spec.name] = seen.get(spec.name, 0) + 1
    problems += [f"two files define the routine {name!r}" for name, count in seen.items() if count > 1]
    if problems:
        raise RoutineError("\n".join(problems))
    return specs


def _plain(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def template(name: str) -> str:
    """A template routine shipped in the package (`ally/templates/routines/<name>.toml`)."""
    path = TEMPLATES / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in TEMPLATES.glob("*.toml")))
        raise RoutineError(f"there is no template called {name!r} (templates: {known})")
    return path.read_text(encoding="utf-8")


# --- from the configuration to a run -----------------------------------------------------------


def run_from_config(spec: RoutineSpec, config: Any) -> RoutineRun:
    """The run a routine's schedule starts, with its assistant resolved from config.toml now."""
    from ally.alerts import owner_of
    from ally.assistants import all_assistants, find
    from ally.channels.feishu import FEISHU_CHATS_QUEUE
    from ally.routing import Route, chat_config

    assistant = find(config, spec.assistant)
    if assistant is None:
        known = ", ".join(a.name for a in all_assistants(config))
        raise RoutineError(f"routine {spec.name}: there is no assistant called {spec.assistant!r} ({known})")
    chat_id = spec.chat or owner_of(config)
    if chat_id is None:
        raise RoutineError(
            f"routine {spec.name}: no chat to post to; set chat, "
            "or an owner ([alerts] owner or [access] approvers)"
        )
    chat = ChatRef(
        channel="feishu", chat_id=chat_id, chat_type=spec.chat_type, worker_queue=FEISHU_CHATS_QUEUE
    )
    now = chat_config(config, chat, Route(assistant=assistant, topic=spec.topic))
    return run_of(
        spec,
        chat=chat,
        assistant=assistant.id,
        assistant_name=assistant.name,
        settings=now.settings,
        policy=now.policy,
        approvers=now.approvers,
        discovery_queue=now.discovery_queue or names.RUNTIME_DISCOVERY_QUEUE,
    )


def run_of(spec: RoutineSpec, **resolved: Any) -> RoutineRun:
    """The run, given the chat and the assistant's resolved settings (`run_from_config`, or a test's)."""
    policy = resolved["policy"]
    expiry = seconds(spec.approval_expiry)
    return RoutineRun(
        name=spec.name,
        kind=spec.kind,
        prompt=spec.prompt,
        topic=spec.topic,
        fresh_thread=spec.kind == "memory_digest" or spec.thread == "fresh",
        mode=capped(spec.mode, policy.ceiling),
        approval_timeout_s=expiry,
        reminder_after_s=min(policy.reminder_after_minutes * 60, expiry / 2),
        time_zone=spec.time_zone,
        digest_day=spec.digest_day,
        **resolved,
    )


# --- schedules ---------------------------------------------------------------------------------


def schedule_of(spec: RoutineSpec, run: RoutineRun, memo: Memo) -> Schedule:
    from workflows.routine import RoutineRunWorkflow

    if spec.cron is not None:
        when = ScheduleSpec(cron_expressions=[spec.cron], time_zone_name=spec.time_zone)
    else:
        assert spec.every is not None
        interval = ScheduleIntervalSpec(every=timedelta(seconds=seconds(spec.every)))
        when = ScheduleSpec(intervals=[interval], time_zone_name=spec.time_zone)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RoutineRunWorkflow.run,
            run,
            id=names.routine_run_id(spec.name),
            task_queue=run.chat.worker_queue,
            static_summary=f"routine {spec.name}: {spec.when()}",
            memo={MEMO_KEY: memo.model_dump(mode="json")},
            typed_search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(names.CHAT, run.chat.chat_id),
                    SearchAttributePair(names.ASSISTANT, run.assistant),
                ]
            ),
        ),
        spec=when,
        policy=SchedulePolicy(
            overlap=OVERLAP[spec.overlap],
            catchup_window=timedelta(seconds=seconds(spec.catchup_window)),
        ),
        state=ScheduleState(paused=spec.paused, note=f"work-ally routine {spec.name}"),
    )


def fingerprint(spec: RoutineSpec, run: RoutineRun) -> str:
    """What the schedule was made from: equal fingerprints, nothing to change. The pause state is
    left out: after the first apply it is `pause`'s and `resume`'s."""
    shown = {"spec": spec.model_dump(mode="json", exclude={"paused"}), "run": run.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16]


class Memo(BaseModel):
    """Kept in the schedule's action (a schedule's own memo cannot be changed once created): the
    routine as written, and the fingerprint `apply` compares."""

    spec: RoutineSpec
    fingerprint: str


Applied = Literal["created", "updated", "unchanged"]


async def put(client: Client, spec: RoutineSpec, run: RoutineRun) -> Applied:
    """Create the routine's schedule, or bring it up to date; "unchanged" when it already is."""
    memo = Memo(spec=spec, fingerprint=fingerprint(spec, run))
    schedule = schedule_of(spec, run, memo)
    schedule_id = names.routine_schedule_id(spec.name)
    try:
        await client.create_schedule(
            schedule_id,
            schedule,
            # Tells work-ally's schedules apart in the UI: `AllyAssistant = "…"` finds an assistant's.
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(names.CHAT, run.chat.chat_id),
                    SearchAttributePair(names.ASSISTANT, run.assistant),
                ]
            ),
        )
        return "created"
    except ScheduleAlreadyRunningError:
        pass
    except RPCError as error:
        raise RoutineError(f"routine {spec.name}: Temporal refused the schedule: {error.message}") from None
    handle = client.get_schedule_handle(schedule_id)
    current = await _memo(client, (await handle.describe()).schedule)
    if current is not None and current.fingerprint == memo.fingerprint:
        return "unchanged"

    def updated(given: ScheduleUpdateInput) -> ScheduleUpdate:
        # The pause state (and its note) stay as `pause` / `resume` left them.
        schedule.state = given.description.schedule.state
        return ScheduleUpdate(schedule=schedule)

    try:
        await handle.update(updated)
    except RPCError as error:
        raise RoutineError(f"routine {spec.name}: Temporal refused the schedule: {error.message}") from None
    return "updated"


async def _memo(client: Client, schedule: Schedule) -> Memo | None:
    action = schedule.action
    if isinstance(action, ScheduleActionStartWorkflow) and action.memo and MEMO_KEY in action.memo:
        return Memo.model_validate(await _decoded(client, action.memo[MEMO_KEY]))
    return None


async def _decoded(client: Client, value: Any) -> Any:
    """A value from a described schedule: still a payload there."""
    if isinstance(value, Payload):
        return (await client.data_converter.decode([value]))[0]
    return value


# --- what the CLI and /routines show -------------------------------------------------------------


class LastRun(BaseModel):
    scheduled_at: str
    started_at: str
    workflow_id: str
    outcome: str  # running | completed | failed | …, or the routine's own (nothing_to_digest, …)


class RoutineStatus(BaseModel):
    name: str
    schedule_id: str
    kind: str
    when: str
    chat: str
    topic: str
    assistant: str
    thread: str
    overlap: str
    catchup_window: str
    paused: bool
    note: str
    next_runs: list[str]
    last_runs: list[LastRun]
    running: list[str]
    skipped_overlapping: int  # runs skipped because the one before was still going
    missed_too_late: int  # runs missed while Temporal was down, older than the catch-up window
    actions: int


async def statuses(client: Client) -> list[RoutineStatus]:
    found = []
    async for listed in await client.list_schedules():
        if listed.id.startswith(names.ROUTINE_SCHEDULE_PREFIX):
            found.append(await status(client, listed.id.removeprefix(names.ROUTINE_SCHEDULE_PREFIX)))
    return sorted(found, key=lambda row: row.name)


async def status(client: Client, name: str) -> RoutineStatus:
    handle = client.get_schedule_handle(names.routine_schedule_id(name))
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise RoutineError(f"there is no routine called {name!r} (`ally routines list`)") from None
        raise
    memo = await _memo(client, described.schedule)
    spec = memo.spec if memo else None
    action = described.schedule.action
    chat = ""
    assistant = ""
    if isinstance(action, ScheduleActionStartWorkflow) and action.args:
        run = RoutineRun.model_validate(await _decoded(client, action.args[0]))
        chat, assistant = run.chat.chat_id, run.assistant_name or run.assistant
    info = described.info
    last_runs = []
    for recent in list(info.recent_actions)[-LAST_RUNS_SHOWN:][::-1]:
        started = recent.action
        workflow_id = getattr(started, "workflow_id", "")
        last_runs.append(
            LastRun(
                scheduled_at=_shown(recent.scheduled_at),
                started_at=_shown(recent.started_at),
                workflow_id=workflow_id,
                outcome=await _outcome(client, workflow_id, getattr(started, "first_execution_run_id", None)),
            )
        )
    state = described.schedule.state
    return RoutineStatus(
        name=name,
        schedule_id=handle.id,
        kind=spec.kind if spec else "?",
        when=spec.when() if spec else "?",
        chat=chat,
        topic=spec.topic if spec else "",
        assistant=assistant,
        thread=spec.thread if spec else "?",
        overlap=spec.overlap if spec else "?",
        catchup_window=spec.catchup_window if spec else "?",
        paused=state.paused,
        note=state.note or "",
        next_runs=[_shown(at) for at in info.next_action_times[:3]] if not state.paused else [],
        last_runs=last_runs,
        running=[getattr(r, "workflow_id", "") for r in info.running_actions],
        skipped_overlapping=info.num_actions_skipped_overlap,
        missed_too_late=info.num_actions_missed_catchup_window,
        actions=info.num_actions,
    )


async def _outcome(client: Client, workflow_id: str, run_id: str | None) -> str:
    if not workflow_id:
        return "?"
    handle = client.get_workflow_handle(workflow_id, run_id=run_id, result_type=RoutineRunResult)
    try:
        described = await handle.describe()
    except RPCError:
        return "gone"
    if described.status == WorkflowExecutionStatus.RUNNING:
        return "running"
    if described.status == WorkflowExecutionStatus.COMPLETED:
        result: RoutineRunResult = await handle.result()
        return result.status
    return (described.status.name if described.status else "unknown").lower()


def _shown(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def lines(row: RoutineStatus) -> list[str]:
    state = "paused" if row.paused else "active"
    where = row.chat + (f" (topic {row.topic})" if row.topic else "")
    out = [f"{row.name}  [{state}]  {row.kind}, {row.when}, {row.assistant} -> {where}"]
    out.append(f"    next: {', '.join(row.next_runs) or ('none while paused' if row.paused else 'none')}")
    if row.running:
        out.append(f"    running now: {', '.join(row.running)}")
    if row.last_runs:
        last = "; ".join(f"{r.scheduled_at} {r.outcome}" for r in row.last_runs)
        out.append(f"    last: {last}")
    else:
        out.append("    last: no run yet")
    if row.skipped_overlapping:
        out.append(f"    skipped (the run before was still going): {row.skipped_overlapping}")
    if row.missed_too_late:
        out.append(
            f"    missed while Temporal was down, older than the catch-up window ({row.catchup_window}): "
            f"{row.missed_too_late}"
        )
    return out


def chat_listing(chat_id: str, rows: list[RoutineStatus]) -> str:
    here = [row for row in rows if row.chat == chat_id]
    if not here:
        return "No routine posts in this chat. `ally routines add` makes one (docs/routines.md)."
    out = [f"Routines posting here ({len(here)}):"]
    for row in here:
        out += lines(row)
    return "\n".join(out)


async def remove(client: Client, name: str) -> None:
    handle = client.get_schedule_handle(names.routine_schedule_id(name))
    try:
        await handle.delete()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise RoutineError(f"there is no routine called {name!r} (`ally routines list`)") from None
        raise


def handle_of(client: Client, name: str) -> ScheduleHandle:
    return client.get_schedule_handle(names.routine_schedule_id(name))
