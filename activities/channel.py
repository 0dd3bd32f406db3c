"""Delivery activities: thin calls into the channel of this chat worker (workers/chat.py).

The turn calls them as local activities (its workflows run on this same worker); the
conversation's notices and the turn's emoji go as ordinary activities, dispatched eagerly, and so
does `follow_progress`, which shows a running turn's progress card until the turn ends
(docs/architecture.md, "Live progress").

Retries come from the workflow's retry policy; a channel raises, it does not loop. A message the
chat rejects for good raises `PermanentDeliveryError`, which the workflows mark non-retryable; a
rate limit raises `RetryLaterError`, whose wait becomes the next retry's delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError

from ally import names
from ally.channels import Channel, PermanentDeliveryError, RetryLaterError, TransientDeliveryError
from ally.contracts import (
    IMAGE_SUFFIXES,
    ApprovalOutcome,
    ApprovalPrompt,
    FileChunk,
    FileDelivery,
    FileQuery,
    FileRequest,
    FileSent,
    FinalReply,
    ProgressCardRef,
    ProgressEnd,
    ProgressView,
    ProgressWatch,
    Reaction,
    ReactionRef,
    Reply,
    ReplyUpdate,
    SentMessage,
    TurnActivity,
    TurnProgress,
)
from ally.metrics import delivery_retried

log = logging.getLogger(__name__)

# The follower reads the turn's progress this often: `run_turn` heartbeats it once a second.
PROGRESS_POLL_S = 1.0
# A turn that shows no work worth a line (a command, a file, a plan...) gets no card before this:
# a quick answer comes alone, without a card that only says it is on its way.
PROGRESS_CARD_AFTER_S = 3.0
# "Last activity N min ago" is said once the agent has been quiet this long.
QUIET_AFTER_S = 60.0
PROGRESS_CARDS_KEPT = 2000
EDIT_FAILURES_BEFORE_NEW_CARD = 3
# Files out: the chunks of a file on its way to the chat wait here, in this worker's machine, until
# the whole file is sent (workflows/files.py); a spool left by a crash is removed a day later.
SPOOL_DIR = Path(tempfile.gettempdir()) / "work-ally-files"
SPOOL_KEPT_S = 24 * 3600
IMAGES_SHOWN = 3  # the images a turn wrote shown on its final card, fetched before the answer goes
IMAGES_WITHIN_S = 15.0


@dataclass
class LiveCard:
    """A turn's progress card in this process: the follower edits it, the delivery settles it; the
    lock keeps a late edit from landing after the summary."""

    ref: ProgressCardRef
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settled: bool = False
    shown: ProgressView | None = None
    failures: int = 0  # edits in a row that failed without a word on why


class ProgressCards:
    """The progress cards of the turns this process follows, newest last; bounded."""

    def __init__(self, limit: int = PROGRESS_CARDS_KEPT) -> None:
        self.limit = limit
        self._cards: OrderedDict[str, LiveCard] = OrderedDict()

    def open(self, turn_workflow_id: str, ref: ProgressCardRef) -> LiveCard:
        card = self._cards.get(turn_workflow_id)
        if card is None:
            card = self._cards[turn_workflow_id] = LiveCard(ref=ref)
            while len(self._cards) > self.limit:
                self._cards.popitem(last=False)
        elif card.ref.message_id is None and ref.message_id is not None:
            card.ref = ref
        return card

    def get(self, turn_workflow_id: str) -> LiveCard | None:
        return self._cards.get(turn_workflow_id)


class ChannelActivities:
    def __init__(self, channel: Channel, client: Client | None = None) -> None:
        """`client`: for the delivery (a local activity, which has no client of its own) to read
        the progress card of a turn followed by another process."""
        self.channel = channel
        self.client = client
        self.progress = ProgressCards()

    @activity.defn(name="send_reply")
    async def send_reply(self, reply: Reply) -> SentMessage:
        with _delivery_errors():
            return await self.channel.send_reply(reply)

    @activity.defn(name="deliver_answer")
    async def deliver_answer(self, final: FinalReply) -> SentMessage:
        """A turn's last message; then its emoji settled, best effort (a retry re-sends nothing: the
        reply's idempotency key dedupes it, and a reaction already gone is not an error). A progress
        card is settled first (best effort too), so the answer is the newest message."""
        reply = final.reply
        end = final.progress
        if end is not None:
            images = await self._images_of(end, reply)
            settled = False
            try:
                settled = await self._settle(end, reply, images)
            except Exception as error:  # progress is never worth failing the answer
                activity.logger.info("progress card not settled: %s", error)
            if not settled and (end.files or images):  # no card lists the files: the answer does
                reply = reply.model_copy(
                    update={
                        "files": end.files,
                        "workspace": end.workspace,
                        "conversation": end.conversation,
                        "images": images,
                    }
                )
        with _delivery_errors():
            sent = await self.channel.send_reply(reply)
        try:
            if final.working is not None:
                await self.channel.unreact(final.working)
                if final.done_emoji is not None:
                    done = Reaction(
                        chat=final.working.chat, message_id=final.working.message_id, emoji=final.done_emoji
                    )
                    await self.channel.react(done)
        except Exception as error:  # an emoji is never worth failing a delivered answer
            activity.logger.info("reactions not settled: %s", error)
        return sent

    @activity.defn(name="send_approval")
    async def send_approval(self, prompt: ApprovalPrompt) -> SentMessage:
        with _delivery_errors():
            return await self.channel.send_approval(prompt)

    @activity.defn(name="update_approval")
    async def update_approval(self, outcome: ApprovalOutcome) -> None:
        with _delivery_errors():
            await self.channel.update_approval(outcome)

    @activity.defn(name="update_reply")
    async def update_reply(self, update: ReplyUpdate) -> None:
        with _delivery_errors():
            await self.channel.update_reply(update)

    @activity.defn(name="react")
    async def react(self, reaction: Reaction) -> ReactionRef:
        with _delivery_errors():
            return await self.channel.react(reaction)

    @activity.defn(name=names.PROGRESS_FOLLOWER)
    async def follow_progress(self, watch: ProgressWatch) -> ProgressCardRef:
        """Show what the turn's agent does on one progress card, until the turn is over.

        Reads the progress `run_turn` heartbeats (never the turn's history) from the pending
        activity, every `PROGRESS_POLL_S`, and edits the card only when what it shows changed, at
        most once per `channel.progress_interval_s`. Best effort throughout: a lost edit is fine. A
        card that can no longer be edited is replaced by a new one. Heartbeats the card, so a retry
        (this worker was killed) goes on with it.

        It edits nothing once the delivery settled the card, and ends only when the turn's
        workflow has closed, so its end is never an event of the turn: an activity ending while
        the turn's last workflow task runs would fail that task, and the delivery in it would run
        again."""
        details = activity.info().heartbeat_details
        ref = ProgressCardRef.model_validate(details[0]) if details else ProgressCardRef()
        card = self.progress.open(watch.turn_workflow_id, ref)
        handle = activity.client().get_workflow_handle(watch.turn_workflow_id)
        last_edit = 0.0
        latest: TurnActivity | None = None
        try:
            while True:
                activity.heartbeat(card.ref)
                running, found = await _turn_activity(handle)
                if not running:
                    break  # the turn is over and its delivery settled the card
                latest = found or latest
                view = _view(watch, card.ref, latest, time.time())
                pace = self.channel.progress_interval_s
                if not card.settled and _worth_showing(view, card) and time.monotonic() - last_edit >= pace:
                    async with card.lock:
                        if not card.settled:
                            last_edit = time.monotonic()
                            if not await self._show(card, view) and card.ref.message_id is None:
                                last_edit = 0.0  # a replacement card is a new message: no need to wait
                await asyncio.sleep(PROGRESS_POLL_S)
        except asyncio.CancelledError:
            # The turn closed between two polls: the server refuses the next heartbeat and the SDK
            # cancels us. Nothing went wrong, so nothing is logged as a failure.
            raise ApplicationError(
                "the turn is over", type="RetryQuietly", category=ApplicationErrorCategory.BENIGN
            ) from None
        return card.ref

    async def _show(self, card: LiveCard, view: ProgressView) -> bool:
        """One edit (or the first send) of the card; whether it is shown. Caller holds the lock."""
        try:
            sent = await self.channel.show_progress(view)
        except PermanentDeliveryError as error:
            # Recalled, too old, or refused: start a fresh card with the next edit.
            log.info("progress card %s cannot be edited (%s); starting a new one", view.message_id, error)
            card.ref = card.ref.model_copy(update={"message_id": None, "cards": card.ref.cards + 1})
            card.shown = None
            return False
        except RetryLaterError as error:
            log.info("progress not shown this time: %s", error)
            return False
        except TransientDeliveryError as error:
            # A card that keeps failing without a word on why is as good as gone.
            card.failures += 1
            log.info("progress not shown (%d in a row): %s", card.failures, error)
            if card.failures >= EDIT_FAILURES_BEFORE_NEW_CARD and view.message_id is not None:
                card.ref = card.ref.model_copy(update={"message_id": None, "cards": card.ref.cards + 1})
                card.shown, card.failures = None, 0
            return False
        if sent is None:  # the channel's own budget for edits is spent: this one is dropped
            return False
        card.ref = card.ref.model_copy(update={"message_id": sent.message_id})
        card.shown, card.failures = view, 0
        return True

    async def _images_of(self, end: ProgressEnd, reply: Reply) -> dict[str, str]:
        """The images the turn wrote or viewed, uploaded for its final card (path -> the channel's key): each
        fetched from the host by a short workflow of its own (workflows/files.py), all within
        `IMAGES_WITHIN_S`; best effort, the answer never waits longer for them."""
        written = [p for p in end.files if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        viewed = [p for p in end.viewed_images if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        wanted = list(dict.fromkeys([*written, *viewed]))[:IMAGES_SHOWN]
        if not wanted or not end.host_queue or self.client is None or not self.channel.takes_file_bytes:
            return {}
        from workflows.files import SendFileWorkflow  # it calls these activities: import it late

        client = self.client

        async def one(index: int, path: str) -> tuple[str, str | None]:
            request = FileRequest(
                chat=reply.chat,
                reply_to=reply.reply_to,
                query=FileQuery(workspace=end.workspace or "", path=path),
                host_queue=end.host_queue,
                host=end.host,
                idempotency_key=names.delivery_key(end.turn_workflow_id, f"image:{index}"),
                purpose="image_key",
            )
            sent = await client.execute_workflow(
                SendFileWorkflow.run,
                request,
                id=f"{end.turn_workflow_id}:image:{index}",
                task_queue=reply.chat.worker_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                execution_timeout=timedelta(seconds=IMAGES_WITHIN_S * 4),
            )
            return path, sent.image_key

        try:
            found = await asyncio.wait_for(
                asyncio.gather(*(one(i, p) for i, p in enumerate(wanted))), timeout=IMAGES_WITHIN_S
            )
        except Exception as error:  # an image is never worth holding the answer back
            activity.logger.info(
                "images of %s not shown: %s (%s)", end.turn_workflow_id, error, error.__cause__
            )
            return {}
        return {path: key for path, key in found if key}

    async def _settle(self, end: ProgressEnd, reply: Reply, images: dict[str, str]) -> bool:
        """Whether a progress card now shows the turn's end (and so lists its files)."""
        card = self.progress.get(end.turn_workflow_id)
        if card is None and self.client is not None:
            # The follower ran in another process (or before a restart): ask its heartbeat.
            ref = await _follower_card(self.client, end.turn_workflow_id)
            if ref is None or ref.message_id is None:
                return False
            card = self.progress.open(end.turn_workflow_id, ref)
        if card is None:
            return False
        async with card.lock:
            card.settled = True
            if card.ref.message_id is None:
                return False  # the turn was over before its card was due: nothing to settle
            view = ProgressView(
                chat=reply.chat,
                reply_to=reply.reply_to,
                turn_workflow_id=end.turn_workflow_id,
                message_id=card.ref.message_id,
                idempotency_key=names.delivery_key(end.turn_workflow_id, f"progress:{card.ref.cards}"),
                state=end.state,
                activity=end.activity or (card.shown.activity if card.shown else None),
                elapsed_s=end.elapsed_s,
                workspace=end.workspace,
                files=end.files,
                conversation=end.conversation,
                images=images,
            )
            try:
                await self.channel.show_progress(view, final=True)
            except PermanentDeliveryError:  # gone: the answer still goes out, and lists the files
                return False
            return True

    @activity.defn(name="wants_file_bytes")
    async def wants_file_bytes(self, delivery: FileDelivery) -> bool:
        """Whether this chat takes a file's bytes (Feishu), or only says where it is (a terminal)."""
        return self.channel.takes_file_bytes

    @activity.defn(name="stage_file_chunk")
    async def stage_file_chunk(self, chunk: FileChunk) -> None:
        """One chunk of a file into its spool, at its offset (a retry writes the same bytes again)."""
        await asyncio.to_thread(_stage, chunk)

    @activity.defn(name="send_file")
    async def send_file(self, delivery: FileDelivery) -> FileSent:
        """The file, once every chunk is spooled, to the chat (or, for a card, only uploaded)."""
        data: bytes | None = None
        if delivery.transfer is not None:
            spool = _spool(delivery.transfer)
            try:
                data = await asyncio.to_thread(spool.read_bytes)
            except FileNotFoundError:
                data = b""
            if hashlib.sha256(data).hexdigest() != delivery.file.sha256:
                # The file changed on the host while it travelled, or this worker's machine changed.
                spool.unlink(missing_ok=True)
                raise ApplicationError(
                    "the file changed while it was on its way; send /file again",
                    type="FileChanged",
                    non_retryable=True,
                )
        with _delivery_errors():
            sent = await self.channel.send_file(delivery, data)
        if delivery.transfer is not None:
            _spool(delivery.transfer).unlink(missing_ok=True)
        return sent

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.wants_file_bytes,
            self.stage_file_chunk,
            self.send_file,
            self.send_reply,
            self.deliver_answer,
            self.send_approval,
            self.update_approval,
            self.update_reply,
            self.react,
            self.follow_progress,
        ]


def _spool(transfer: str) -> Path:
    return SPOOL_DIR / (hashlib.sha256(transfer.encode()).hexdigest()[:32] + ".part")


def _stage(chunk: FileChunk) -> None:
    SPOOL_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = _spool(chunk.transfer)
    if chunk.offset == 0:
        now = time.time()
        for old in SPOOL_DIR.glob("*.part"):
            with contextlib.suppress(OSError):
                if now - old.stat().st_mtime > SPOOL_KEPT_S:
                    old.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, chunk.data, chunk.offset)
    finally:
        os.close(fd)


def _view(
    watch: ProgressWatch, ref: ProgressCardRef, latest: TurnActivity | None, now: float
) -> ProgressView:
    quiet = now - latest.last_activity_at if latest is not None else 0.0
    return ProgressView(
        chat=watch.chat,
        reply_to=watch.reply_to,
        turn_workflow_id=watch.turn_workflow_id,
        message_id=ref.message_id,
        idempotency_key=names.delivery_key(watch.turn_workflow_id, f"progress:{ref.cards}"),
        activity=latest,
        elapsed_s=max(0.0, now - watch.started_at),
        quiet_s=max(0.0, quiet),
        workspace=watch.workspace,
    )


def _worth_showing(view: ProgressView, card: LiveCard) -> bool:
    """Whether `view` shows something the card does not: a new card once the turn is worth one; an
    edit when a step, the plan or a count moved, or a minute passed (elapsed, or quiet)."""
    if card.ref.message_id is None:
        shown = view.activity
        busy = shown is not None and (
            shown.commands
            or shown.file_changes
            or shown.tool_calls
            or shown.searches
            or shown.plan
            or shown.steers
            or shown.compactions
            or (shown.doing and shown.doing.kind != "thinking")
        )
        return bool(busy) or view.elapsed_s >= PROGRESS_CARD_AFTER_S
    return card.shown is None or _face(view) != _face(card.shown)


def _face(view: ProgressView) -> tuple[Any, ...]:
    """What a reader of the card can tell apart: not the heartbeat's clock, not thinking items."""
    shown = view.activity
    what = shown.model_dump(exclude={"last_activity_at", "version", "items"}) if shown else None
    if what is not None and shown is not None and shown.doing is not None and shown.doing.kind == "thinking":
        what["doing"] = "thinking"  # one thought after another reads the same: "thinking"
    quiet_minutes = int(view.quiet_s // 60) if view.quiet_s >= QUIET_AFTER_S else 0
    return (what, int(view.elapsed_s // 60), quiet_minutes)


async def _turn_activity(handle: Any) -> tuple[bool, TurnActivity | None]:
    """Whether the turn still runs, and its agent's activity as `run_turn` last heartbeated it."""
    try:
        described = await handle.describe()
    except RPCError as error:
        log.info("progress of %s not read: %s", handle.id, error)
        return True, None  # the server is unreachable for now: try again next time
    if described.status != WorkflowExecutionStatus.RUNNING:
        return False, None
    for pending in described.raw_description.pending_activities:
        if pending.activity_type.name == "run_turn" and pending.heartbeat_details.payloads:
            converter = activity.client().data_converter
            decoded = await converter.decode(pending.heartbeat_details.payloads, [TurnProgress])
            progress = decoded[0] if decoded else None
            return True, progress.activity if isinstance(progress, TurnProgress) else None
    return True, None


async def _follower_card(client: Client, turn_workflow_id: str) -> ProgressCardRef | None:
    """The card the turn's follower last heartbeated, read from the turn's pending activities."""
    try:
        described = await client.get_workflow_handle(turn_workflow_id).describe()
    except RPCError:
        return None
    for pending in described.raw_description.pending_activities:
        if pending.activity_type.name == names.PROGRESS_FOLLOWER and pending.heartbeat_details.payloads:
            converter = client.data_converter
            decoded = await converter.decode(pending.heartbeat_details.payloads, [ProgressCardRef])
            return decoded[0] if decoded and isinstance(decoded[0], ProgressCardRef) else None
    return None


@contextmanager
def _delivery_errors() -> Iterator[None]:
    if activity.info().attempt > 1:
        delivery_retried()  # whatever failed the attempt before: a channel's own error or any other
    try:
        yield
    except PermanentDeliveryError as error:
        # Benign: the SDK logs it at DEBUG, and the workflow says once what was not delivered.
        raise ApplicationError(
            str(error),
            type="PermanentDeliveryError",
            non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        ) from error
    except RetryLaterError as error:
        # Feishu says when its rate-limit window resets (`x-ogw-ratelimit-reset`); retrying
        # earlier only earns another 429, later wastes the person's time.
        wait = max(error.retry_after_s, 0.1)
        _retrying(error, f"in {wait:g} s")
        raise ApplicationError(
            str(error),
            type="RetryLater",
            next_retry_delay=timedelta(seconds=wait),
            category=ApplicationErrorCategory.BENIGN,
        ) from error
    except TransientDeliveryError as error:
        _retrying(error, "with backoff")
        raise ApplicationError(
            str(error), type="DeliveryUnavailable", category=ApplicationErrorCategory.BENIGN
        ) from error


def _retrying(error: Exception, when: str) -> None:
    """A handled retry is one line (the SDK logs a benign failure at debug level only, where it
    would otherwise log a warning with the whole traceback for each attempt)."""
    info = activity.info()
    activity.logger.warning("%s, attempt %d: %s; retrying %s", info.activity_type, info.attempt, error, when)
