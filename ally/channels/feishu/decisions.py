"""Decisions taken in Feishu: a card click, a text shortcut ("y", "1 y 2 n"), a thumbs-up on a card.

Each becomes a `decide` on the turn that waits (`ChatClient.decide`: an update whose id is derived
from request and person, so a replayed click decides once). A click is answered within the card
callback's 3 s with a toast, and the decided card when we still know the prompt.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ally import names
from ally.channels.feishu import cards
from ally.channels.feishu.channel import FeishuChannel
from ally.channels.feishu.client import FeishuApiError
from ally.channels.feishu.events import CardClick, ReactionEvent
from ally.channels.feishu.inbound import MessageReader
from ally.chat_client import ChatClient, DecisionReceipt
from ally.contracts import Decision, InboundMessage, Person
from ally.shortcuts import parse_decisions

log = logging.getLogger(__name__)

# Reactions that approve the card they are put on (Feishu emoji_type names are case-sensitive).
APPROVING_EMOJIS = frozenset({"THUMBSUP", "OK", "DONE"})
NOT_CARDS_REMEMBERED = 5000
DECISION_TOASTS = {
    "accept": "Approved",
    "acceptForSession": "Approved for this session",
    "decline": "Declined",
}


class FeishuDecisions:
    def __init__(
        self,
        chats: ChatClient,
        channel: FeishuChannel,
        reader: MessageReader,
        may_stop: Callable[[str, str], bool] = lambda person, chat: True,
    ) -> None:
        """`may_stop(open_id, chat_id)`: whether that person may stop a turn in that chat."""
        self.chats = chats
        self.channel = channel
        self.reader = reader
        self.may_stop = may_stop
        self._not_cards: OrderedDict[str, None] = OrderedDict()  # messages a thumbs-up cannot approve

    async def by_text(self, message: InboundMessage, conversation_id: str) -> bool:
        """Decide the conversation's waiting approvals when the text is "y", "n", "always" or "1 y 2 n"."""
        if parse_decisions(message.text, 1) is None and parse_decisions(message.text, 99) is None:
            return False  # cheap check first: most messages are not decisions
        # Questions are answered on their card, not with a shortcut.
        waiting = [w for w in await self.chats.waiting(conversation_id) if w.request.kind != "user_input"]
        choice = parse_decisions(message.text, len(waiting))
        if not waiting or choice is None:
            return False
        refused: list[str] = []
        for index, word in sorted(choice.items()):
            row = waiting[index - 1]
            decision = Decision(key=row.request.key, decision=word, operator=message.sender)
            receipt = await self.chats.decide(row.workflow_id, decision)
            log.info("text decision %s on %s: %s", word, row.request.key, receipt.status)
            if receipt.status in ("rejected", "closed", "expired"):
                refused.append(receipt.detail)
        if refused:
            key = names.delivery_key(f"gateway:{message.message_id}", "notice")
            await self.channel.notice(
                message.chat, message.message_id, "Not applied: " + "; ".join(refused), key
            )
        return True

    async def by_card(
        self, click: CardClick, value: cards.DecisionCardValue | cards.StopValue
    ) -> dict[str, Any]:
        """The callback's answer to a click on one of our cards: a toast, and the decided card."""
        if isinstance(value, cards.StopValue):
            return await self.stop(click, value)
        # A name not cached yet must not cost the 3 s answer: an id-only operator is fine.
        operator = await self.reader.person(click.operator.open_id, timeout_s=0.8)
        decision = _decision_of(value, click, operator)
        receipt = await self.chats.decide(value.turn_workflow_id, decision)
        log.info("card decision on %s by %s: %s", value.key, operator.id, receipt.status)
        return self._card_answer(receipt, decision, click.context.open_message_id)

    async def stop(self, click: CardClick, value: cards.StopValue) -> dict[str, Any]:
        """The Stop button of a progress card: the same stop as /stop, from someone who may talk to
        the assistant here. The card itself says "Stopped" once the turn has ended."""
        if not self.may_stop(click.operator.open_id, click.context.open_chat_id):
            return {"toast": {"type": "warning", "content": "You may not stop work in this chat."}}
        stopped = await self.chats.stop_turn(value.turn_workflow_id)
        log.info("stop clicked on %s by %s: %s", value.turn_workflow_id, click.operator.open_id, stopped)
        if not stopped:
            return {"toast": {"type": "info", "content": "This turn has already ended."}}
        return {"toast": {"type": "success", "content": "Stopping…"}}

    def _card_answer(self, receipt: DecisionReceipt, decision: Decision, card_id: str) -> dict[str, Any]:
        if receipt.status == "decided":
            shown = DECISION_TOASTS.get(decision.decision or "", "Answer sent")
            answer: dict[str, Any] = {"toast": {"type": "success", "content": shown}}
            sent = self.channel.approval_card(card_id)
            if sent is not None:  # cheap: we still know what the card asked
                now = datetime.now(UTC).isoformat(timespec="seconds")
                who = decision.operator.name or decision.operator.id
                card = cards.decided_card(sent.prompt.request, decision.decision or "answered", who, now)
                answer["card"] = {"type": "raw", "data": card}
            return answer
        if receipt.status == "queued":
            return {
                "toast": {"type": "info", "content": "Recorded; it applies as soon as work-ally is back."}
            }
        if receipt.status == "closed":
            return {"toast": {"type": "info", "content": "This turn has already ended."}}
        return {"toast": {"type": "warning", "content": _short(receipt.detail)}}

    async def by_reaction(self, reaction: ReactionEvent) -> None:
        """A thumbs-up (or OK, DONE) on an approval card approves it."""
        target = await self._card_decision(reaction.message_id)
        if target is None:
            log.debug("reaction on %s, which is not a pending approval card", reaction.message_id)
            return
        turn_workflow_id, key = target
        operator = await self.reader.person(reaction.user_id.open_id)
        decision = Decision(key=key, decision="accept", operator=operator)
        receipt = await self.chats.decide(turn_workflow_id, decision)
        log.info("reaction approval of %s by %s: %s", key, operator.id, receipt.status)

    async def _card_decision(self, message_id: str) -> tuple[str, str] | None:
        sent = self.channel.approval_card(message_id)
        if sent is not None:
            return sent.prompt.turn_workflow_id, sent.prompt.request.key
        if message_id in self._not_cards:  # people thumbs-up answers too: read each one back once
            return None
        try:  # sent before a restart: read the card back and take its buttons' value
            values = await self.channel.card_decisions(message_id)
        except (FeishuApiError, ValueError) as error:
            log.info("cannot read %s back: %s", message_id, error)
            return None
        if not values:
            self._not_cards[message_id] = None
            while len(self._not_cards) > NOT_CARDS_REMEMBERED:
                self._not_cards.popitem(last=False)
            return None
        return values[0].turn_workflow_id, values[0].key


def _decision_of(value: cards.DecisionCardValue, click: CardClick, operator: Person) -> Decision:
    if isinstance(value, cards.DecisionValue):
        return Decision(key=value.key, decision=value.decision, operator=operator)
    if isinstance(value, cards.AnswerValue):
        return Decision(key=value.key, answers={value.question_id: [value.answer]}, operator=operator)
    assert isinstance(value, cards.AnswersFormValue), "stop clicks are handled before"
    form = click.action.form_value or {}
    answers = {
        question_id: [str(form[f"q{index}"])]
        for index, question_id in enumerate(value.questions)
        if form.get(f"q{index}") not in (None, "")
    }
    return Decision(key=value.key, answers=answers, operator=operator)


def _short(detail: str) -> str:
    return detail if len(detail) <= 120 else detail[:117] + "…"
