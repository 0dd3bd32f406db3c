"""A worker process's life, as `workers/*.py` hand it to ally/worker_process.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The gateway's imports, then serving as every worker process does; the process reports what the
# garbage collector still walks once it serves, and stops itself with SIGTERM.
PROBE = """
import asyncio, gc, os, signal
import workers.gateway  # everything the gateway imports
from ally.worker_process import serve_until_signalled

async def main() -> None:
    async def report_then_stop() -> None:
        await asyncio.sleep(0.2)
        print(len(gc.get_objects()), gc.get_freeze_count(), flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    reporting = asyncio.create_task(report_then_stop())
    await serve_until_signalled("probe", [])
    await reporting

asyncio.run(main())
"""


def test_a_serving_process_keeps_what_it_built_at_start_out_of_every_garbage_collection(
    tmp_path: Path,
) -> None:
    """What a process imported and built lives as long as it does; a full collection walking it
    all stopped every thread for ~200 ms, the gateway's receipt emoji included."""
    env = {**os.environ, "WORK_ALLY_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    walked, frozen = (int(n) for n in done.stdout.split())
    assert frozen > 100_000  # the SDKs and the generated Codex protocol's models
    assert walked < frozen // 20
