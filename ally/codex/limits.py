"""What a failed Codex turn says about the account: a usage or rate limit (and when it resets), or a
login that is gone (docs/codex-app-server.md §15).

A turn that hits the usage limit fails with `codexErrorInfo: "usageLimitExceeded"` and a message
ending "… try again at 3:42 AM." (the host's local time, to the minute). The exact reset time
comes only in the `account/rateLimits/updated` notification sent just before the failure, whose
windows carry `usedPercent` and `resetsAt`. So the reset is taken from that snapshot when it has
one, else from the message's clock time, else it is unknown (the turn then waits a configured
while).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, tzinfo
from typing import Any

from ally.contracts import ErrorKind

# A snapshot older than this says nothing about the failure in hand.
SNAPSHOT_FRESH_S = 120.0
_TRY_AGAIN_AT = re.compile(r"try again at (\d{1,2}):(\d{2})\s*([AP]M)", re.IGNORECASE)
_TRY_AGAIN_IN = re.compile(r"try again in (\d+(?:\.\d+)?)\s*(ms|s|m|min|h)\b", re.IGNORECASE)


def error_kind(error_info: Any) -> ErrorKind | None:
    """Codex's `codexErrorInfo` of a failed turn, in the contract's words (None: anything else)."""
    if error_info == "usageLimitExceeded":
        return "usage_limit"
    if error_info == "rateLimitExceeded":
        return "rate_limit"
    if error_info == "unauthorized":
        return "logged_out"
    if isinstance(error_info, dict):
        failed = error_info.get("httpConnectionFailed") or {}
        if isinstance(failed, dict) and failed.get("httpStatusCode") == 401:
            return "logged_out"
    return None


def reset_time(
    kind: ErrorKind | None,
    message: str,
    snapshot: dict[str, Any] | None,
    snapshot_at: float | None,
    *,
    now: float,
    local: tzinfo | None = None,
) -> float | None:
    """When the limit behind a failed turn resets (unix seconds), or None when nothing says."""
    if kind not in ("usage_limit", "rate_limit"):
        return None
    fresh = snapshot is not None and snapshot_at is not None and now - snapshot_at <= SNAPSHOT_FRESH_S
    if fresh and snapshot is not None and (at := _snapshot_reset(snapshot)) is not None:
        return at
    if (match := _TRY_AGAIN_IN.search(message)) is not None:
        amount, unit = float(match.group(1)), match.group(2).lower()
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}[unit]
        return now + amount * scale
    if (match := _TRY_AGAIN_AT.search(message)) is not None:
        hour, minute, half = int(match.group(1)) % 12, int(match.group(2)), match.group(3).upper()
        hour += 12 if half == "PM" else 0
        here = datetime.fromtimestamp(now).astimezone(local)
        clock = here.replace(hour=hour, minute=minute, second=0, microsecond=0)
        # To the minute, so the reset may lie up to a minute "before" now; anything earlier is tomorrow.
        if clock.timestamp() < now - 60:
            clock += timedelta(days=1)
        return clock.timestamp()
    return None


def _snapshot_reset(snapshot: dict[str, Any]) -> float | None:
    """The latest reset among the exhausted windows: all of them must reset before a turn can run.
    None when no window is exhausted (the snapshot does not explain the failure)."""
    windows = [w for w in (snapshot.get("primary"), snapshot.get("secondary")) if isinstance(w, dict)]
    full = [
        float(w["resetsAt"])
        for w in windows
        if isinstance(w.get("resetsAt"), int | float) and (w.get("usedPercent") or 0) >= 100
    ]
    return max(full, default=None)
