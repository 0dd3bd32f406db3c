"""Files out: one file of an assistant's workspace, from its host to its chat (docs/operations.md,
"Files out").

Started by the conversation for `/file PATH` (and the buttons of a turn's final card, which send
it), and by the delivery of a turn's answer for the images that turn wrote (`purpose="image_key"`:
uploaded, not sent; the card shows them). Runs on the chat's worker: the host checks the path and
reads the file in chunks (activities on its pinned queue); each chunk goes to the channel's spool
in this process as a local activity, whose input is not recorded; the channel then sends the file.

A file of N MB costs this workflow's history about N MB (each chunk once, as the host activity's
result) and about 7 events per MB; the conversation's history gets only the child's three events,
and a turn's none. The size limits (30 MB, 10 MB for an image) bound both.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.channel import ChannelActivities
    from activities.runtime import inspect_file, read_file_chunk
    from ally.contracts import FileChunk, FileChunkQuery, FileDelivery, FileRequest, FileSent, Reply

HOST_RETRY = RetryPolicy(maximum_attempts=3)
CHANNEL_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))


@workflow.defn
class SendFileWorkflow:
    @workflow.init
    def __init__(self, request: FileRequest) -> None:
        self.request = request

    @workflow.run
    async def run(self, request: FileRequest) -> FileSent:
        try:
            found = await self._on_host(inspect_file, request.query, "check the file on the host")
        except ActivityError as error:
            workflow.logger.warning("file not inspected: %s", error)
            return await self._refuse(
                request,
                f"The Codex runtime on {request.host} did not answer, so the file was not sent. "
                "Try again in a moment.",
            )
        if found.refused is not None:
            return await self._refuse(request, found.refused)
        delivery = FileDelivery(
            chat=request.chat,
            reply_to=request.reply_to,
            file=found,
            host=request.host,
            idempotency_key=request.idempotency_key,
            purpose=request.purpose,
        )
        wanted = await workflow.execute_local_activity_method(
            ChannelActivities.wants_file_bytes,
            delivery,
            start_to_close_timeout=timedelta(seconds=10),
            summary="does the chat take the bytes",
        )
        if wanted:
            transfer = workflow.info().workflow_id
            delivery = delivery.model_copy(update={"transfer": transfer})
            try:
                for offset in range(0, found.size, request.chunk_bytes):
                    query = FileChunkQuery(
                        workspace=request.query.workspace,
                        path=found.path,
                        offset=offset,
                        length=min(request.chunk_bytes, found.size - offset),
                    )
                    data: bytes = await self._on_host(
                        read_file_chunk, query, f"read from byte {offset} on the host"
                    )
                    await workflow.execute_local_activity_method(
                        ChannelActivities.stage_file_chunk,
                        FileChunk(transfer=transfer, offset=offset, data=data),
                        start_to_close_timeout=timedelta(seconds=30),
                        summary="spool a chunk",
                    )
            except ActivityError as error:
                workflow.logger.warning("file not read: %s", error)
                return await self._refuse(
                    request, f"{found.relative} could not be read on {request.host}, so it was not sent."
                )
        try:
            return await workflow.execute_local_activity_method(
                ChannelActivities.send_file,
                delivery,
                start_to_close_timeout=timedelta(minutes=2),
                schedule_to_close_timeout=timedelta(minutes=10),
                retry_policy=CHANNEL_RETRY,
                summary="send the file",
            )
        except ActivityError as error:
            workflow.logger.warning("file not sent: %s", error)
            return await self._refuse(request, f"{found.relative} could not be sent: {_cause(error)}")

    async def _on_host(self, fn: Any, arg: Any, summary: str) -> Any:
        return await workflow.execute_activity(
            fn,
            arg,
            task_queue=self.request.host_queue,
            schedule_to_start_timeout=timedelta(seconds=30),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=HOST_RETRY,
            summary=summary,
        )

    async def _refuse(self, request: FileRequest, why: str) -> FileSent:
        """Said in the chat (a card's image is only left out: the card says nothing of it)."""
        if request.purpose == "send":
            reply = Reply(
                chat=request.chat,
                reply_to=request.reply_to,
                text=why,
                idempotency_key=request.idempotency_key,
                tone="notice",
            )
            try:
                await workflow.execute_local_activity_method(
                    ChannelActivities.send_reply,
                    reply,
                    start_to_close_timeout=timedelta(seconds=30),
                    schedule_to_close_timeout=timedelta(minutes=10),
                    retry_policy=CHANNEL_RETRY,
                    summary="say why not",
                )
            except ActivityError as error:
                workflow.logger.warning("refusal not delivered: %s", error)
        return FileSent(refused=why)


def _cause(error: ActivityError) -> str:
    cause = error.cause
    return str(cause.message if cause is not None and hasattr(cause, "message") else error)
