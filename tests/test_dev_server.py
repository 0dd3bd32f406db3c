"""The embedded dev server reads one partition per task queue, without losing what an older version queued.

Older versions let the dev server spread each queue's tasks over 4 partitions; now it keeps one
(ally/temporal_server.py, IDLE_CONFIG). A task left in a partition nobody reads would wait forever,
so the first start on such a database reads all 4 until the workers have drained them.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from ally.processes import die_with_parent_hook, free_local_port
from ally.temporal_server import ONE_READ_PARTITION, dev_server_command, queued_beyond_first_partition
from tests.processes import temporal_when_up

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

QUEUE = "partition-probe"
READS_ONE = f"--dynamic-config-value={ONE_READ_PARTITION}"


@workflow.defn(name="PartitionProbe")
class PartitionProbe:
    @workflow.run
    async def run(self, number: int) -> int:
        return number


# How soon the server records that it handed a task to matching (30 s by default). Until then a
# restart hands it out again, to the partitions read now: a server that ran a while has recorded it.
RECORDED_WITHIN_S = 1


def older_version(command: list[str]) -> list[str]:
    """The command of a work-ally from before one partition: the server's default of 4."""
    return [
        *(arg for arg in command if "numTaskqueue" not in arg),
        f'--dynamic-config-value=history.transferProcessorUpdateAckInterval="{RECORDED_WITHIN_S}s"',
    ]


@asynccontextmanager
async def dev_server(command: list[str], port: int) -> AsyncIterator[Client]:
    process = await asyncio.create_subprocess_exec(
        *command,
        "--headless",
        start_new_session=True,
        preexec_fn=die_with_parent_hook(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield await temporal_when_up(port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            raise


async def run_probes(client: Client, numbers: range) -> list[int]:
    worker = Worker(
        client, task_queue=QUEUE, workflows=[PartitionProbe], workflow_runner=UnsandboxedWorkflowRunner()
    )
    async with worker:
        handles = [client.get_workflow_handle(f"probe-{n}") for n in numbers]
        return await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=30)


async def test_work_an_older_version_queued_in_any_partition_still_runs_after_the_upgrade(
    tmp_path: Path,
) -> None:
    db_file = tmp_path / "temporal.db"
    port = free_local_port()

    def command() -> list[str]:
        return dev_server_command(db_file=db_file, port=port, ui_port=free_local_port(), namespace="default")

    fresh = command()
    assert READS_ONE in fresh, "a new database reads one partition from the start"
    async with dev_server(older_version(fresh), port) as client:
        # No worker polls: each workflow task waits in whichever of the 4 partitions it was given.
        for n in range(16):
            await client.start_workflow(PartitionProbe.run, n, id=f"probe-{n}", task_queue=QUEUE)
        await asyncio.sleep(RECORDED_WITHIN_S * 3)
    assert queued_beyond_first_partition(db_file)

    upgraded = command()
    assert READS_ONE not in upgraded
    async with dev_server(upgraded, port) as client:
        assert await run_probes(client, range(16)) == list(range(16))
    assert not queued_beyond_first_partition(db_file)

    drained = command()
    assert READS_ONE in drained
    async with dev_server(drained, port) as client:
        await client.start_workflow(PartitionProbe.run, 16, id="probe-16", task_queue=QUEUE)
        assert await run_probes(client, range(17)) == list(range(17))
