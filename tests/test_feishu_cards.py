"""Feishu cards: long answers split under the size limit without losing a character or breaking a
code block; approval cards carry what a click needs; agent text cannot @-mention anyone."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ally.channels.feishu import cards
from ally.contracts import AgentRequest, ApprovalPrompt, ChatRef

pytestmark = pytest.mark.feishu

CHAT = ChatRef(channel="feishu", chat_id="oc_1", worker_queue="feishu-test")

# Lines a model's answer is made of, and the nasty ones: fences of every kind, characters that
# JSON escapes (twice on the wire), control characters, astral emoji, lines longer than a card.
fence_lines = st.sampled_from(
    ["```", "```python", "~~~", "~~~~ sh", "````", "   ```", "```` ", "``` `x`", "    ```", "```\r"]
)
plain_lines = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=120)
long_lines = st.builds(
    lambda unit, count: unit * count,
    st.sampled_from(["a", "`", '"', "\\", "中", "😀", "\x01", "ab `` ~~~ "]),
    st.integers(min_value=300, max_value=12_000),
)
markdown = st.lists(st.one_of(fence_lines, plain_lines, long_lines), max_size=150).map("\n".join)


def chunk_text(chunks: list[cards.Chunk]) -> str:
    return "".join(c.text for c in chunks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=markdown, budget=st.integers(min_value=cards.MIN_SPLIT_BUDGET, max_value=24_000))
def test_split_chunks_concatenate_to_the_input_fit_the_budget_and_balance_their_fences(
    text: str, budget: int
) -> None:
    chunks = cards.split_markdown(text, budget)

    assert chunk_text(chunks) == text
    assert all(c.text for c in chunks)
    for chunk in chunks:
        rendered = chunk.rendered()
        assert cards.text_cost(rendered) <= budget
        assert cards.open_fence_at_end(rendered) is None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=markdown)
def test_every_reply_card_fits_feishus_limit_and_long_ones_become_a_file(text: str) -> None:
    layout = cards.reply_layout(text, "answer")

    assert all(cards.size_on_the_wire(card) <= cards.CARD_BUDGET_BYTES for card in layout.cards)
    assert all(card["config"]["update_multi"] is True for card in layout.cards)
    if layout.file_data is not None:
        assert layout.file_data.decode() == text  # the whole answer, unescaped
    else:
        assert len(layout.cards) <= cards.MAX_ANSWER_CARDS


@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_text_cost_is_exactly_what_text_adds_to_a_card_on_the_wire(text: str) -> None:
    empty = cards.size_on_the_wire({"tag": "markdown", "content": ""})

    assert cards.size_on_the_wire({"tag": "markdown", "content": text}) == empty + cards.text_cost(text)


def test_a_code_block_longer_than_a_card_is_closed_and_reopened_with_its_language() -> None:
    code = "".join(f"print({i})  # line {i}\n" for i in range(4000))
    text = f"Here:\n\n```python\n{code}```\n\nDone."

    chunks = cards.split_markdown(text)

    assert len(chunks) > 2
    assert chunk_text(chunks) == text
    assert all(c.left_open is not None and c.rendered().endswith("\n```") for c in chunks[:-1])
    assert all(c.reopened is not None and c.rendered().startswith("```python\n") for c in chunks[1:])
    assert chunks[-1].left_open is None and chunks[-1].rendered().endswith("Done.")


def test_a_split_prefers_blank_lines_to_the_middle_of_a_paragraph() -> None:
    paragraph = "word " * 200 + "\n"
    text = "\n".join([paragraph] * 60)

    chunks = cards.split_markdown(text)

    assert len(chunks) > 1
    assert all(c.text.endswith("\n\n") or c is chunks[-1] for c in chunks)


def test_an_80_kb_answer_becomes_a_few_cards_that_reassemble_to_it() -> None:
    text = "".join(f"{i}. Step {i}: check the build, then **report** what failed.\n" for i in range(1400))
    assert len(text.encode()) > 80_000

    layout = cards.reply_layout(text, "answer")

    assert 3 <= len(layout.cards) <= cards.MAX_ANSWER_CARDS and layout.file_data is None
    contents = [card["body"]["elements"][0]["content"] for card in layout.cards]
    assert "".join(contents) == text
    assert [card["header"]["title"]["content"] for card in layout.cards][:2] == [
        f"Answer (1/{len(layout.cards)})",
        f"Answer (2/{len(layout.cards)})",
    ]


def test_agent_text_cannot_mention_anyone() -> None:
    text = "Done <at id=all></at>, ping <AT user_id='ou_x'>x</at>\n```\n<at id=all></at>\n```"

    card = cards.reply_layout(text, "answer").cards[0]

    content = card["body"]["elements"][0]["content"]
    assert not re.search(r"<\s*at\b", content, re.IGNORECASE)
    assert content.replace("\u200b", "") == text  # looks the same to the reader


def request(**fields: object) -> AgentRequest:
    base: dict[str, object] = {
        "key": "req-1",
        "kind": "command",
        "method": "item/commandExecution/requestApproval",
    }
    return AgentRequest.model_validate({"thread_id": "th_1", **base, **fields})


def prompt(req: AgentRequest) -> ApprovalPrompt:
    return ApprovalPrompt(
        chat=CHAT,
        reply_to="om_question",
        turn_workflow_id="turn:oc_1:om_question",
        request=req,
        idempotency_key="wa-key",
        expires_in_s=1800,
    )


def button_values(card: object) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    if isinstance(card, dict):
        found += [b["value"] for b in card.get("behaviors", []) if b.get("type") == "callback"]
        for value in card.values():
            found += button_values(value)
    elif isinstance(card, list):
        for item in card:
            found += button_values(item)
    return found


def test_an_approval_card_shows_the_command_and_its_buttons_name_the_turn_and_the_request() -> None:
    card = cards.approval_card(prompt(request(command="rm -rf build```", cwd="/work", reason="clean up")))

    text = json.dumps(card)
    assert card["header"]["title"]["content"] == "Run this command?"
    assert "rm -rf build```" in text and "/work" in text and "clean up" in text and "30 min" in text
    assert [v["decision"] for v in button_values(card)] == ["accept", "acceptForSession", "decline"]
    assert {(v["turn_workflow_id"], v["key"]) for v in button_values(card)} == {
        ("turn:oc_1:om_question", "req-1")
    }
    assert cards.decision_values(card)[0].decision == "accept"


def test_a_file_change_card_folds_the_diff_and_stays_under_the_limit() -> None:
    diff = "".join(f'+line {i} with "quotes" and \\ backslashes\n' for i in range(5000))

    card = cards.approval_card(prompt(request(kind="file_change", diff=diff)))

    panel = next(e for e in card["body"]["elements"] if e["tag"] == "collapsible_panel")
    assert panel["expanded"] is False and "more lines not shown" in panel["elements"][0]["content"]
    assert cards.size_on_the_wire(card) <= cards.CARD_BUDGET_BYTES


def test_a_question_card_answers_with_a_click_or_a_form() -> None:
    one = [
        {
            "id": "q_color",
            "header": "Color",
            "question": "Which?",
            "options": [{"label": "Red"}, {"label": "Blue"}],
        }
    ]
    two = [*one, {"id": "q_name", "header": "Name", "question": "Call it?"}]

    single = cards.approval_card(prompt(request(kind="user_input", questions=one)))
    form = cards.approval_card(prompt(request(kind="user_input", questions=two)))

    assert [v["answer"] for v in button_values(single)] == ["Red", "Blue"]
    (submit,) = button_values(form)
    assert submit["ally"] == "answers" and submit["questions"] == ["q_color", "q_name"]
    assert '"select_static"' in json.dumps(form) and '"input"' in json.dumps(form)


def test_a_decided_card_says_who_decided_what_and_when_and_has_no_buttons() -> None:
    card = cards.decided_card(request(command="make test"), "accept", "Alice", "2026-01-02T03:04:05+00:00")

    text = json.dumps(card, ensure_ascii=False)
    assert (
        "Approved" in text and "Alice" in text and "2026-01-02 03:04:05 UTC" in text and "make test" in text
    )
    assert button_values(card) == [] and card["header"]["template"] == "green"
    assert card["config"]["update_multi"] is True


def test_a_line_longer_than_a_card_is_cut_with_a_mark_on_both_sides_of_the_cut() -> None:
    line = "".join(f"{i:05d}," for i in range(6000))  # one 36 KB line: a minified file, a log line
    text = f"Before.\n```\n{line}\n```\nAfter."

    layout = cards.reply_layout(text, "answer")
    shown = [card["body"]["elements"][0]["content"] for card in layout.cards]

    assert len(shown) == 2 and layout.file_data is None
    assert shown[0].endswith("\n```\n" + cards.LINE_GOES_ON)  # the code block closed, then the mark
    assert shown[1].startswith(cards.LINE_WENT_ON + "```\n")
    assert all(cards.size_on_the_wire(card) <= cards.CARD_BUDGET_BYTES for card in layout.cards)
    pieces = [part.removeprefix(cards.LINE_WENT_ON).removesuffix("\n" + cards.LINE_GOES_ON) for part in shown]
    rejoined = pieces[0].removesuffix("\n```")
    for piece in pieces[1:]:
        rejoined += piece.removeprefix("```\n")
    assert rejoined == text  # the marks are all that was added
