"""`python -m ally.crash_alert PART EXIT_CODE REASON`: tell the alerts workflow that `ally up` restarts
a part that died on its own (workflows/alerts.py: the owner hears of it once per incident).

A process of its own, started by the supervisor for each crash, so that the supervisor, which runs
all the time, never loads the Temporal client (ally/supervisor.py). Best effort: with no alerts
workflow yet, or Temporal itself the part that died, it says why it could not, and exits 1.
"""

from __future__ import annotations

import asyncio
import sys

from ally.clean_exit import exit_now
from ally.config import load_config
from ally.contracts import PartCrashed
from ally.names import ALERTS_WORKFLOW_ID
from ally.temporal_client import connect
from workflows.alerts import AlertsWorkflow

TIMEOUT_S = 3.0


async def tell(crash: PartCrashed) -> None:
    client = await asyncio.wait_for(connect(load_config()), TIMEOUT_S)
    alerts = client.get_workflow_handle_for(AlertsWorkflow.run, ALERTS_WORKFLOW_ID)
    await asyncio.wait_for(alerts.signal(AlertsWorkflow.part_crashed, crash), TIMEOUT_S)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m ally.crash_alert PART EXIT_CODE REASON (`ally up` runs it)", file=sys.stderr)
        return 2
    part, code, reason = argv[1:]
    crash = PartCrashed(part=part, exit_code=int(code) if code.lstrip("-").isdigit() else None, reason=reason)
    try:
        asyncio.run(tell(crash))
    except Exception as error:  # a config error, Temporal unreachable, no alerts workflow yet, a timeout
        print(f"could not alert the owner that {part} died: {error or type(error).__name__}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    exit_now(main(sys.argv))  # it used the Temporal client: leave without the interpreter's finaliser
