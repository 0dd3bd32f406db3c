"""A host's Codex threads, for the terminal (`ally threads`, `ally handoff`).

The threads live in the store of the runtime host's Codex, which only its activities reach; a CLI
process cannot run an activity, but it can run a workflow worker of its own for as long as the
command lasts (as `ally chat` does). This short workflow runs there, on a queue of the command's
own: it finds the host the way a conversation does (`locate_runtime` on the assistant's discovery
queue) and asks it. Nothing else has to be running besides Temporal and that host.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.runtime import describe_thread, list_threads, locate_runtime
    from ally.contracts import (
        AgentThread,
        RuntimeLocation,
        ThreadRef,
        ThreadsFound,
        ThreadsLookup,
        ThreadsQuery,
    )

ON_HOST_START = timedelta(seconds=10)  # the host just answered `locate_runtime`
ON_HOST_RUN = timedelta(seconds=30)


@workflow.defn
class ThreadsWorkflow:
    @workflow.run
    async def run(self, lookup: ThreadsLookup) -> ThreadsFound:
        try:
            host: RuntimeLocation = await workflow.execute_activity(
                locate_runtime,
                task_queue=lookup.discovery_queue,
                schedule_to_start_timeout=timedelta(seconds=lookup.locate_timeout_s),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary="find the assistant's runtime host",
            )
        except ActivityError:
            return ThreadsFound(problem="no Codex runtime host answered")
        if lookup.thread_id is not None:
            try:
                thread: AgentThread = await workflow.execute_activity(
                    describe_thread,
                    ThreadRef(thread_id=lookup.thread_id),
                    task_queue=host.task_queue,
                    schedule_to_start_timeout=ON_HOST_START,
                    start_to_close_timeout=ON_HOST_RUN,
                    retry_policy=RetryPolicy(maximum_attempts=2),
                    summary="describe the thread",
                )
            except ActivityError:
                return ThreadsFound(host=host.host, problem=f"there is no Codex thread {lookup.thread_id}")
            return ThreadsFound(host=host.host, threads=[thread])
        try:
            threads: list[AgentThread] = await workflow.execute_activity(
                list_threads,
                ThreadsQuery(cwd=lookup.cwd, limit=lookup.limit),
                task_queue=host.task_queue,
                schedule_to_start_timeout=ON_HOST_START,
                start_to_close_timeout=ON_HOST_RUN,
                retry_policy=RetryPolicy(maximum_attempts=2),
                summary="list the workspace's threads",
            )
        except ActivityError:
            return ThreadsFound(host=host.host, problem="the host could not list its threads")
        return ThreadsFound(host=host.host, threads=threads)
