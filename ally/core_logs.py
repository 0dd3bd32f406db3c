"""Where the Temporal SDK's core writes its warnings, and the one it writes that is not news.

The core (Rust) logs a retried call, a busy workflow, a late completion. Left alone it prints them
to stdout, which broke `--json`'s one document there: `core_logging()` sends them to Python's
logging instead (stderr, or the part's log file).

One of them comes with every turn, by design: a turn's progress follower (`follow_progress`,
activities/channel.py) ends only once its turn's workflow has closed, so that its end is never an
event of the turn (docs/architecture.md, "Live progress"). Its completion then reaches a closed
workflow, and the core says "Activity not found on completion" at WARN, once per turn, on the
terminal of `ally chat` and in the gateway's log. `FollowerEndsAfterItsTurn` drops exactly that
line: the follower's activity type, named in the task token, and a workflow already closed. The
same warning for any other activity still shows.
"""

from __future__ import annotations

import base64
import binascii
import logging

from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter

from ally.names import PROGRESS_FOLLOWER

CORE_LOGGER = "temporalio.core"
LATE_COMPLETION = "Activity not found on completion"
WORKFLOW_CLOSED = "workflow execution already completed"


class FollowerEndsAfterItsTurn(logging.Filter):
    """Drops the core's warning about the progress follower's completion after its turn closed."""

    def filter(self, record: logging.LogRecord) -> bool:
        entry = getattr(record, "temporal_log", None)  # set on every record the core forwards
        if entry is None or not str(entry.message).startswith(LATE_COMPLETION):
            return True
        fields = entry.fields
        if WORKFLOW_CLOSED not in str(fields.get("details", "")):
            return True
        return not names_the_follower(str(fields.get("task_token", "")))


def names_the_follower(task_token: str) -> bool:
    """Whether the core's rendering of a task token, `TaskToken(<base64>)`, is the follower's.

    The token is the server's own serialised message, opaque to clients, so this only looks for the
    name's bytes (a length-prefixed protobuf string) and never parses the rest."""
    encoded = task_token.removeprefix("TaskToken(").removesuffix(")")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return False
    name = PROGRESS_FOLLOWER.encode()
    return bytes([len(name)]) + name in raw


def core_logging() -> LoggingConfig:
    """The core's warnings (and its dependencies' errors) through Python's logging, less the
    follower's late completion."""
    logger = logging.getLogger(CORE_LOGGER)
    if not any(isinstance(f, FollowerEndsAfterItsTurn) for f in logger.filters):
        logger.addFilter(FollowerEndsAfterItsTurn())
    return LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logger),
    )
