"""A worker process at rest hands back to the system the memory it freed (ally/memory.py).

glibc keeps freed memory for the process's own reuse; the runtime worker trims it while it runs.
Each case runs in a fresh interpreter of its own, so its resident size is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Frees 49 of every 50 blocks of ~1 KB (malloc's, not Python's small-object pools), the kind of
# scattered garbage start-up and a burst of turns leave: nothing at the top of the heap to shrink.
# Once before the trimming starts (start-up), once while it runs (a burst at rest since).
FRAGMENTED_THEN_TRIMMED = """
import asyncio, json
from pathlib import Path
from ally.memory import limit_malloc_arenas, returning_freed_memory

def rss_mib() -> float:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024

def fragment() -> list[bytes]:
    blocks = [bytes(1000 + i % 7) for i in range(100_000)]
    return blocks[::50]

async def main() -> None:
    limit_malloc_arenas(2)
    kept = fragment()
    sizes = [rss_mib()]
    async with returning_freed_memory(0.5):
        await asyncio.sleep(0.1)
        sizes.append(rss_mib())
        kept += fragment()
        sizes.append(rss_mib())
        await asyncio.sleep(1.0)
        sizes.append(rss_mib())
    print(json.dumps(sizes))

asyncio.run(main())
"""


def test_a_worker_at_rest_hands_back_the_memory_it_freed_at_start_and_since() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRAGMENTED_THEN_TRIMMED)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    at_start, trimmed, after_a_burst, at_rest = json.loads(done.stdout)
    assert at_start > 60, f"the freed blocks are held until a trim ({at_start:.0f} MiB)"
    assert trimmed < at_start - 50, f"{trimmed:.0f} MiB held after the first trim, {at_start:.0f} before"
    assert after_a_burst > trimmed + 50, f"a burst frees as much again ({after_a_burst:.0f} MiB)"
    assert at_rest < after_a_burst - 50, f"{at_rest:.0f} MiB at rest, {after_a_burst:.0f} after the burst"
