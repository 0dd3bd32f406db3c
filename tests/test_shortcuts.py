"""Text shortcuts decide only when the whole reply is a decision, and never guess which request."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ally.shortcuts import WORDS, parse_decisions


def test_a_bare_word_answers_the_only_pending_request() -> None:
    assert parse_decisions("y", 1) == {1: "accept"}
    assert parse_decisions(" Always ", 1) == {1: "acceptForSession"}
    assert parse_decisions("no", 1) == {1: "decline"}
    assert parse_decisions("cancel", 1) == {1: "cancel"}


def test_a_bare_word_does_not_guess_when_several_wait() -> None:
    assert parse_decisions("y", 2) is None


def test_numbered_pairs_answer_each_request() -> None:
    assert parse_decisions("1 y 2 n", 2) == {1: "accept", 2: "decline"}
    assert parse_decisions("2 always, 1 no", 3) == {2: "acceptForSession", 1: "decline"}


def test_anything_else_is_a_message_not_a_decision() -> None:
    assert parse_decisions("yes, but run the tests first", 1) is None
    assert parse_decisions("3 y", 2) is None
    assert parse_decisions("1 y 1 n", 2) is None
    assert parse_decisions("1 maybe", 1) is None
    assert parse_decisions("y", 0) is None
    assert parse_decisions("", 1) is None


@given(st.text(max_size=40), st.integers(min_value=0, max_value=5))
def test_a_parse_never_names_a_request_that_is_not_pending(text: str, pending: int) -> None:
    decisions = parse_decisions(text, pending)
    if decisions is not None:
        assert decisions
        assert all(1 <= index <= pending for index in decisions)
        assert set(decisions.values()) <= set(WORDS.values())
