"""Text replies that answer pending approvals: "y", "n", "always", "cancel", or "1 y 2 n".

Shared by every channel, so a person types the same thing on the phone and in the terminal. Only a
whole reply made of shortcuts counts: "yes, but first check the tests" is a message, not a decision.
"""

from __future__ import annotations

import re

from ally.contracts import DecisionWord

WORDS: dict[str, DecisionWord] = {
    "y": "accept",
    "yes": "accept",
    "ok": "accept",
    "approve": "accept",
    "a": "acceptForSession",
    "always": "acceptForSession",
    "n": "decline",
    "no": "decline",
    "deny": "decline",
    "decline": "decline",
    "c": "cancel",
    "cancel": "cancel",
}
_NUMBERED = re.compile(r"(\d+)\s*([a-z]+)")


def parse_decisions(text: str, pending: int) -> dict[int, DecisionWord] | None:
    """Map a reply onto pending requests (1-based) or None when it is not a decision reply.

    A bare word answers the only pending request, and is not a decision when several wait (the
    person must say which). Numbered pairs must each name a pending request and a known word.
    """
    words = text.strip().lower()
    if pending <= 0 or not words:
        return None
    if words in WORDS:
        return {1: WORDS[words]} if pending == 1 else None
    pairs = _NUMBERED.findall(words)
    if not pairs or _NUMBERED.sub("", words).strip(" ,;"):
        return None
    decisions: dict[int, DecisionWord] = {}
    for number, word in pairs:
        index = int(number)
        if word not in WORDS or not 1 <= index <= pending or index in decisions:
            return None
        decisions[index] = WORDS[word]
    return decisions
