"""The SDK core's warning about the progress follower's completion after its turn closed is dropped,
and only that one (ally/core_logs.py). `ally chat` showing none end to end: tests/test_console_chat.py."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import Any

from ally.core_logs import FollowerEndsAfterItsTurn, names_the_follower

# A task token as the core printed it for a real turn's follower (`ally chat`, the dev server).
FOLLOWER_TOKEN = (
    "TaskToken(CiQwMWEyMzQ3Ni0wYmU1LTc4Y2ItYjE0NC1lYzhkNGMyY2RiOWESPHR1cm46Y29uc29sZUB2bTpjb25zb2xl"
    "LWMxYzQ1OThkLTRiNDktNGQyNy1iNDEzLWFmMjQ5OTFkZDc4OBokMDFhMjM0NzYtMTRjNy03ODRhLWJlYzAtZWJlYmFiOWZk"
    "MzhiIAcoATIBMUIPZm9sbG93X3Byb2dyZXNzSggIARDEgEAYAQ==)"
)
CLOSED = 'Status { code: NotFound, message: "workflow execution already completed", details: b"" }'
LATE = "Activity not found on completion. This may happen if the activity has already been cancelled"


def other_activity_token() -> str:
    """The same token for an activity of another type whose name has the same length."""
    raw = base64.b64decode(FOLLOWER_TOKEN.removeprefix("TaskToken(").removesuffix(")"))
    renamed = raw.replace(b"follow_progress", b"deliver_answerz")
    return f"TaskToken({base64.b64encode(renamed).decode()})"


@dataclass
class CoreEntry:
    """What the SDK attaches to each record it forwards (`temporal_log`): a message and fields."""

    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def passes(entry: CoreEntry | None) -> bool:
    record = logging.LogRecord("temporalio.core", logging.WARNING, "(sdk-core)", 0, "m", (), None)
    if entry is not None:
        record.temporal_log = entry
    return FollowerEndsAfterItsTurn().filter(record)


def test_the_followers_late_completion_is_dropped() -> None:
    assert names_the_follower(FOLLOWER_TOKEN)
    assert not passes(CoreEntry(LATE, {"task_token": FOLLOWER_TOKEN, "details": CLOSED}))


def test_any_other_late_completion_or_core_warning_still_shows() -> None:
    assert not names_the_follower(other_activity_token())
    assert passes(CoreEntry(LATE, {"task_token": other_activity_token(), "details": CLOSED}))
    # The follower's completion refused for another reason is news.
    assert passes(CoreEntry(LATE, {"task_token": FOLLOWER_TOKEN, "details": "code: Unavailable"}))
    assert passes(CoreEntry("Failed to poll for task", {"task_token": FOLLOWER_TOKEN}))
    assert passes(CoreEntry(LATE, {"task_token": "TaskToken(not base64!)", "details": CLOSED}))
    assert passes(None)  # a record logged in Python, not forwarded from the core
