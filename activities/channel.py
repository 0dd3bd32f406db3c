"""Delivery activities: thin calls into the channel of this chat worker (workers/chat.py).

The turn calls them as local activities (its workflows run on this same worker); the
conversation's notices and the turn's emoji go as ordinary activities, dispatched eagerly.

Retries come from the workflow's retry policy; a channel raises, it does not loop. A message the
chat rejects for good raises `PermanentDeliveryError`, which the workflows mark non-retryable; a
rate limit raises `RetryLaterError`, whose wait becomes the next retry's delay.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from ally.channels import Channel, PermanentDeliveryError, RetryLaterError, TransientDeliveryError
from ally.contracts import (
    ApprovalOutcome,
    ApprovalPrompt,
    FinalReply,
    Reaction,
    ReactionRef,
    Reply,
    ReplyUpdate,
    SentMessage,
)
from ally.metrics import delivery_retried


class ChannelActivities:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    @activity.defn(name="send_reply")
    async def send_reply(self, reply: Reply) -> SentMessage:
        with _delivery_errors():
            return await self.channel.send_reply(reply)

    @activity.defn(name="deliver_answer")
    async def deliver_answer(self, final: FinalReply) -> SentMessage:
        """A turn's last message; then its emoji settled, best effort (a retry re-sends nothing: the
        reply's idempotency key dedupes it, and a reaction already gone is not an error)."""
        with _delivery_errors():
            sent = await self.channel.send_reply(final.reply)
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

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.send_reply,
            self.deliver_answer,
            self.send_approval,
            self.update_approval,
            self.update_reply,
            self.react,
        ]


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
