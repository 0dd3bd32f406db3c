"""Progress in words every channel shares: the summary a settled progress card shows."""

from __future__ import annotations

from ally.contracts import TurnActivity


def summary(activity: TurnActivity, state: str, elapsed_s: float) -> str:
    """One line: how the turn ended, how long it took, what it did."""
    how = {"completed": "done in", "interrupted": "stopped after", "failed": "failed after"}.get(
        state, "ran for"
    )
    parts = [f"{how} {duration(elapsed_s)}", *counts(activity)]
    return " · ".join(parts)


def counts(activity: TurnActivity) -> list[str]:
    found = [
        (activity.commands, "command", "commands"),
        (activity.files_total, "file changed", "files changed"),
        (activity.tool_calls, "tool call", "tool calls"),
        (activity.searches, "search", "searches"),
        (activity.steers, "follow-up taken", "follow-ups taken"),
        (activity.compactions, "context compaction", "context compactions"),
    ]
    return [f"{n} {one if n == 1 else many}" for n, one, many in found if n]


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def minutes(seconds: float) -> str:
    """A running card's clock: whole minutes, so it needs an edit once a minute at most."""
    whole = int(seconds // 60)
    return (
        "under a minute"
        if whole < 1
        else f"{whole} min"
        if whole < 60
        else f"{whole // 60} h {whole % 60} min"
    )


def relative(text: str, workspace: str | None) -> str:
    """Paths inside the workspace, as the person knows them: relative to it."""
    if not workspace:
        return text
    root = workspace.rstrip("/") + "/"
    return text.replace(root, "")
