"""Routines: what a scheduled run carries (the Temporal Schedule's action argument), how it ended,
and what the memory digest asks the runtime host about one day (docs/routines.md).

A routine's run is a turn like any other (workflows/turn.py) with the routine as its origin; these
are only what travels around it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ally import names
from ally.contracts.agent import ThreadSettings
from ally.contracts.chat import ChatRef
from ally.contracts.policy import Mode, PolicyConfig

RoutineKind = Literal["prompt", "memory_digest"]


class RoutineRun(BaseModel):
    """Everything one run needs, fixed when the routine is applied (`ally routines apply | add`):
    the routine, the chat it posts to, and its assistant's settings as they resolved then."""

    name: str
    kind: RoutineKind = "prompt"
    prompt: str = ""
    chat: ChatRef
    topic: str = ""  # a topic's first message: runs post in that topic; "" = the chat itself
    fresh_thread: bool = True  # else every run continues the routine's own thread
    assistant: str = names.DEFAULT_ASSISTANT
    assistant_name: str = ""
    settings: ThreadSettings
    policy: PolicyConfig = PolicyConfig()
    mode: Mode = "read_only"  # the routine's own autonomy, capped by the policy's ceiling at run time
    approvers: list[str] = []  # the assistant's: nobody else may decide an unattended run's requests
    approval_timeout_s: float = 30 * 60
    reminder_after_s: float = 10 * 60
    discovery_queue: str = names.RUNTIME_DISCOVERY_QUEUE
    locate_timeout_s: float = 30.0
    time_zone: str = "UTC"
    digest_day: Literal["today", "yesterday"] = "today"  # the memory digest: which day, in time_zone


class RoutineRunResult(BaseModel):
    """How a run ended: `ally routines list | show` print it as the run's outcome."""

    status: str  # completed | interrupted | failed | host_lost | no_runtime | nothing_to_digest
    thread_id: str | None = None
    turn_workflow_id: str | None = None
    day: str | None = None  # the memory digest's day
    conversations: int = 0  # the memory digest: how many conversations it covered


class ContinuingThreadQuery(BaseModel):
    """Which thread a routine that continues its own thread ran in last (`routine_thread`)."""

    routine: str


class DayQuery(BaseModel):
    """The memory digest asks the runtime host: the conversations of one day in one workspace."""

    cwd: str
    at: str  # the run's scheduled time, ISO 8601 with its offset
    time_zone: str
    which: Literal["today", "yesterday"] = "today"
    skip_marker: str  # threads whose first message starts with it (the digests themselves) are left out
    max_chars: int = 200_000  # the whole gathered text, so the prompt stays well inside one payload


class Exchange(BaseModel):
    asked: str
    answered: str


class DayConversation(BaseModel):
    thread_id: str
    exchanges: list[Exchange]


class DayRecord(BaseModel):
    day: str  # YYYY-MM-DD in the query's time zone
    conversations: list[DayConversation] = []
    truncated: bool = False  # more was said that day than `max_chars` let through
