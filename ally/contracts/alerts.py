"""The owner's alerts: what the alerts workflow (workflows/alerts.py) takes, keeps and shows.

One incident is one thing wrong, from the moment it is noticed until it is over: its opening and its
resolution are each told to the owner once, whatever restarts happen in between.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from ally.contracts.chat import ChatRef

IncidentKind = Literal[
    "runtime_down", "turns_failing", "part_crashed", "host_down", "usage_limit", "logged_out"
]


class AlertsConfig(BaseModel):
    """What this machine's configuration says about alerts (sent again on each gateway start)."""

    owner: ChatRef  # the owner's private chat
    discovery_queue: str
    # Runtime hosts assistants are pinned to -> those assistants' names: each host's own queue is
    # probed too, and a host that stops answering is an incident of its own.
    hosts: dict[str, list[str]] = {}
    probe_every_s: float = 30.0
    probe_timeout_s: float = 10.0
    runtime_down_after_s: float = 180.0
    failures: int = 3  # this many failed turns…
    failures_window_s: float = 600.0  # …within this long open a "turns failing" incident
    quiet_after_s: float = 600.0  # no failed turn for this long resolves it


class Incident(BaseModel):
    number: int
    kind: IncidentKind
    opened_at: float  # workflow time
    text: str
    resolved_at: float | None = None
    subject: str = ""  # which part, for a crashed part
    last_seen: float | None = None  # workflow time of the latest crash it covers


class TurnFailed(BaseModel):
    """A turn ended failed: what the conversation tells the alerts workflow."""

    workflow_id: str
    chat_id: str
    status: str


class PartCrashed(BaseModel):
    """`ally up` restarted a part that died on its own: what the supervisor tells the alerts workflow."""

    part: str
    exit_code: int | None
    reason: str


class AlertsState(BaseModel):
    """Everything the alerts workflow carries across continue-as-new."""

    config: AlertsConfig
    incidents: list[Incident] = []  # open ones, and the latest resolved ones
    opened: int = 0  # numbers each incident, so its messages' keys are never reused
    runtime_down_since: float | None = None
    hosts_down_since: dict[str, float] = {}  # per pinned host (AlertsConfig.hosts)
    failures: list[float] = []  # workflow times of recent failed turns
    limited_until: float | None = None  # the latest reset of the account's usage limit a turn waits for


class AlertsView(BaseModel):
    open: list[Incident]
    resolved: list[Incident]
