"""Feishu cards, JSON 2.0: answers, approval prompts, decided prompts, questions.

Facts these builders rely on (docs/feishu-platform.md §4):
- A card's serialized JSON must stay under 30 KB, escapes included; we budget 25 KB, measured the
  way it travels: the card JSON is itself a JSON *string* inside the send request, so every quote,
  backslash and newline is escaped twice (`size_on_the_wire`).
- `update_multi: true` is required on a card we later PATCH (approval cards are).
- 2.0 rejects unknown attributes, so only documented fields appear here.
- Agent text may contain `<at id=all></at>`; card markdown would turn it into an @all. A zero-width
  space after `<` keeps the text visibly identical and inert, inside code blocks too (whether
  entities like `&lt;` work inside card code blocks is not documented).

A long answer is split on line boundaries, preferring blank lines and the ends of code blocks, and
never breaks a code block without closing it at the end of one card and re-opening it (same fence,
same language) at the start of the next. A single line longer than a card is cut where the card
is full, and both sides of the cut say so (`LINE_GOES_ON`, `LINE_WENT_ON`), outside any code
block. The raw pieces always concatenate back to the text; past `MAX_ANSWER_CARDS` cards the whole
answer goes as a file instead, so nothing is ever cut off.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from ally.channels.progress import counts, duration, minutes, relative, summary
from ally.contracts import (
    AgentRequest,
    ApprovalPrompt,
    Choice,
    DecisionWord,
    ProgressStep,
    ProgressView,
    Reply,
)

Tone = Literal["answer", "notice", "problem"]

CARD_BUDGET_BYTES = 25 * 1024  # Feishu refuses cards over 30 KB (230025/230099); keep a margin
FRAME_RESERVE_BYTES = 2 * 1024  # header, summary, config and element wrappers around the markdown
CONTENT_BUDGET_BYTES = CARD_BUDGET_BYTES - FRAME_RESERVE_BYTES
MAX_ANSWER_CARDS = 5  # beyond this an answer is easier to read (and search) as a file
MIN_SPLIT_BUDGET = 8 * 1024  # see _pieces: leaves room for >MAX_FENCE_LINE chars per piece
MAX_FENCE_LINE = 200  # longer lines are text, never fences: lets long lines split safely
DIFF_BUDGET_BYTES = 12 * 1024  # an approval card's diff panel; the rest of the card needs room
SUMMARY_CHARS = 60
ANSWER_FILE_NAME = "answer.md"

# Where one line had to be cut between two cards: said after the first part, before the second.
LINE_GOES_ON = "*(this line goes on in the next card)*"
LINE_WENT_ON = "*(the line goes on:)*\n"
_ZWSP = "\u200b"
_AT_TAG = re.compile(r"<(\s*at\b)", re.IGNORECASE)
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_FENCE_CLOSE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*$")


# --- sizes -----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _escaped_cost(char: str) -> int:
    once = json.dumps(char, ensure_ascii=False)[1:-1]
    return len(json.dumps(once, ensure_ascii=False)[1:-1].encode())


def text_cost(text: str) -> int:
    """Bytes `text` adds to a send request when it sits in a card: JSON escaping is per character,
    so this is exact and additive (the SDK marshals with ensure_ascii=False)."""
    return sum(1 if " " <= c <= "~" and c not in '"\\' else _escaped_cost(c) for c in text)


def size_on_the_wire(card: dict[str, Any]) -> int:
    """The card as it travels: JSON, as a JSON string in the request body."""
    return len(json.dumps(card_content(card), ensure_ascii=False).encode())


def card_content(card: dict[str, Any]) -> str:
    """The `content` string of an interactive message or a PATCH."""
    return json.dumps(card, ensure_ascii=False)


# --- escaping --------------------------------------------------------------------------------------


def escape_mentions(text: str) -> str:
    """Make `<at …>` in agent text inert (renders the same, mentions nobody)."""
    return _AT_TAG.sub("<" + _ZWSP + r"\1", text)


def code_block(text: str, lang: str = "") -> str:
    """A fenced block whose fence is longer than any backtick run inside, so nothing ends it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{escape_mentions(text)}\n{fence}"


# --- splitting long markdown -----------------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    """An open fenced code block: how it was opened, so it can be closed and re-opened."""

    opening: str  # the opening line, newline-terminated
    char: str
    length: int

    @property
    def closing(self) -> str:
        return self.char * self.length


def _line_body(line: str) -> str:
    return line.rstrip("\r\n")


def _opens(line: str) -> Fence | None:
    body = _line_body(line)
    if len(body) > MAX_FENCE_LINE or (match := _FENCE_OPEN.match(body)) is None:
        return None
    marker, info = match.group(1), match.group(2)
    if marker[0] == "`" and "`" in info:  # CommonMark: a backtick fence's info has no backticks
        return None
    return Fence(opening=body + "\n", char=marker[0], length=len(marker))


def _closes(fence: Fence, line: str) -> bool:
    body = _line_body(line)
    if len(body) > MAX_FENCE_LINE or (match := _FENCE_CLOSE.match(body)) is None:
        return False
    marker = match.group(1)
    return marker[0] == fence.char and len(marker) >= fence.length


def fence_after(fence: Fence | None, line: str) -> Fence | None:
    """The code block open after `line`, given the one open before it."""
    if fence is None:
        return _opens(line)
    return None if _closes(fence, line) else fence


def open_fence_at_end(text: str) -> Fence | None:
    """The code block `text` leaves open (None when its fences are balanced)."""
    fence: Fence | None = None
    for line in _lines(text):
        fence = fence_after(fence, line)
    return fence


def _lines(text: str) -> list[str]:
    # Markdown lines end at "\n"; str.splitlines would also split on \x0b, \u2028 and friends.
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


@dataclass(frozen=True)
class Chunk:
    """A piece of the original text and what it needs around it to render as valid markdown."""

    text: str
    reopened: Fence | None  # the code block this piece starts inside: its fence is written first
    left_open: Fence | None  # the code block this piece ends inside: closed after it
    starts_mid_line: bool = False  # the previous chunk ended inside this one's first line
    ends_mid_line: bool = False  # its last line goes on in the next chunk

    def rendered(self) -> str:
        head = (LINE_WENT_ON if self.starts_mid_line else "") + (
            self.reopened.opening if self.reopened else ""
        )
        body = self.text
        if self.left_open is not None:
            body += ("" if body.endswith("\n") else "\n") + self.left_open.closing
        if self.ends_mid_line:
            body += "\n" + LINE_GOES_ON
        return head + body


@dataclass(frozen=True)
class _Unit:
    """A line (or a piece of a line too long for one card) with the code block around it."""

    text: str
    before: Fence | None
    after: Fence | None
    cost: int
    starts_mid_line: bool = False  # a piece of a cut line, not its first
    ends_mid_line: bool = False  # a piece of a cut line, not its last


def _suffix_cost(fence: Fence | None, text: str) -> int:
    if fence is None:
        return 0
    return text_cost(fence.closing) + (0 if text.endswith("\n") else text_cost("\n"))


def _prefix_cost(fence: Fence | None) -> int:
    return text_cost(fence.opening) if fence else 0


_CUT_MARKS_COST = text_cost(LINE_WENT_ON) + text_cost("\n" + LINE_GOES_ON)


def _units(text: str, budget: int) -> list[_Unit]:
    units: list[_Unit] = []
    fence: Fence | None = None
    for line in _lines(text):
        after = fence_after(fence, line)
        cost = text_cost(line)
        if _prefix_cost(fence) + cost + _suffix_cost(after, line) <= budget:
            units.append(_Unit(line, fence, after, cost))
        else:
            # Longer than a whole card: only possible for lines over MAX_FENCE_LINE chars (fence
            # lines are shorter and fit), which never open or close a fence, so every piece keeps
            # the block state of its line.
            capacity = budget - _prefix_cost(fence) - _suffix_cost(fence, "") - _CUT_MARKS_COST
            pieces = _pieces(line, capacity)
            units += [
                _Unit(piece, fence, fence, text_cost(piece), index > 0, index < len(pieces) - 1)
                for index, piece in enumerate(pieces)
            ]
        fence = after
    return units


def _pieces(line: str, capacity: int) -> list[str]:
    """Cut an over-long line into pieces that each fill a card.

    Every piece is kept longer than MAX_FENCE_LINE characters, so a piece that starts a rendered
    line can never be mistaken for a fence (MIN_SPLIT_BUDGET guarantees the room: ≥ 900 chars a
    piece even at 7 bytes a character)."""
    pieces: list[str] = []
    start, used = 0, 0
    for index, char in enumerate(line):
        cost = 1 if " " <= char <= "~" and char not in '"\\' else _escaped_cost(char)
        if used + cost > capacity:
            pieces.append(line[start:index])
            start, used = index, 0
        used += cost
    pieces.append(line[start:])
    if len(pieces) > 1 and len(_line_body(pieces[-1])) <= MAX_FENCE_LINE:
        joined = pieces[-2] + pieces[-1]
        cut = len(_line_body(joined)) - (MAX_FENCE_LINE + 1)  # the last piece's text, not its newline
        pieces[-2:] = [joined[:cut], joined[cut:]]
    return pieces


def split_markdown(text: str, budget: int = CONTENT_BUDGET_BYTES) -> list[Chunk]:
    """Split `text` into chunks whose rendered form costs at most `budget` bytes on the wire.

    `"".join(c.text for c in chunks) == text` always; each `c.rendered()` has balanced fences.
    """
    if budget < MIN_SPLIT_BUDGET:
        raise ValueError(f"budget must be at least {MIN_SPLIT_BUDGET} bytes, got {budget}")
    units = _units(text, budget)
    sums = [0]
    for unit in units:
        sums.append(sums[-1] + unit.cost)

    def cost(start: int, end: int) -> int:  # units[start:end] as one chunk, rendered
        first, last = units[start], units[end - 1]
        marks = (text_cost(LINE_WENT_ON) if first.starts_mid_line else 0) + (
            text_cost("\n" + LINE_GOES_ON) if last.ends_mid_line else 0
        )
        return (
            _prefix_cost(first.before) + sums[end] - sums[start] + _suffix_cost(last.after, last.text) + marks
        )

    chunks: list[Chunk] = []
    start = 0
    while start < len(units):
        end = start + 1
        while end < len(units) and cost(start, end + 1) <= budget:
            end += 1
        if end < len(units):
            end = _nicer_end(units, start, end, cost, budget)
        first, last = units[start], units[end - 1]
        text = "".join(u.text for u in units[start:end])
        chunks.append(Chunk(text, first.before, last.after, first.starts_mid_line, last.ends_mid_line))
        start = end
    return chunks


def _nicer_end(units: list[_Unit], start: int, end: int, cost: Callable[[int, int], int], budget: int) -> int:
    """Prefer ending a card after a blank line or a closed code block, if that keeps it ≥ 60 % full."""
    for candidate in range(end, start, -1):
        if cost(start, candidate) < budget * 0.6:
            break
        last = units[candidate - 1]
        if last.after is None and (not last.text.strip() or last.before is not None):
            return candidate
    return end


# --- answers ---------------------------------------------------------------------------------------


class ReplyLayout(BaseModel):
    """What one reply becomes: cards in order, and for a very long answer a file after them."""

    cards: list[dict[str, Any]]
    file_name: str | None = None
    file_data: bytes | None = None


def reply_layout(text: str, tone: Tone) -> ReplyLayout:
    chunks = split_markdown(escape_mentions(text) or "(empty)")
    if len(chunks) <= MAX_ANSWER_CARDS:
        total = len(chunks)
        return ReplyLayout(
            cards=[
                reply_card(chunk.rendered(), tone, part=index + 1, parts=total)
                for index, chunk in enumerate(chunks)
            ]
        )
    data = text.encode()
    note = (
        f"The full answer is long ({len(data) // 1024} KB), so it is attached as "
        f"`{ANSWER_FILE_NAME}`. It begins:\n\n"
    )
    head = split_markdown(chunks[0].rendered(), CONTENT_BUDGET_BYTES - text_cost(note))[0].rendered()
    return ReplyLayout(
        cards=[reply_card(note + head, tone, part=1, parts=1)], file_name=ANSWER_FILE_NAME, file_data=data
    )


def reply_card(markdown: str, tone: Tone, *, part: int = 1, parts: int = 1) -> dict[str, Any]:
    """One card of a reply; `markdown` must already be escaped and within the content budget."""
    title: str | None = None
    template = "blue"
    if tone == "problem":
        title, template = "Problem", "red"
    elif parts > 1:
        title = "Answer"
    if title and parts > 1:
        title = f"{title} ({part}/{parts})"
    return _card([{"tag": "markdown", "content": markdown}], title=title, template=template, summary=markdown)


def choice_card(reply: Reply) -> dict[str, Any]:
    """A notice with buttons (`Reply.choices`); short by construction, so one card."""
    markdown = split_markdown(escape_mentions(reply.text) or "(empty)")[0].rendered()

    def button(choice: Choice) -> dict[str, Any]:
        value = ChoiceValue(
            conversation=reply.conversation, command=choice.command, chat_type=reply.chat.chat_type
        )
        return {
            "tag": "button",
            "text": {"tag": "plain_text", "content": choice.label},
            "type": {"primary": "primary_filled", "danger": "danger"}.get(choice.style, "default"),
            "behaviors": [{"type": "callback", "value": value.model_dump()}],
        }

    row = {
        "tag": "column_set",
        "flex_mode": "flow",
        "columns": [{"tag": "column", "width": "auto", "elements": [button(c)]} for c in reply.choices],
    }
    elements: list[dict[str, Any]] = [{"tag": "markdown", "content": markdown}, row]
    return _card(elements, title=None, template="orange", summary=markdown)


# --- approvals -------------------------------------------------------------------------------------


class DecisionValue(BaseModel):
    """What an approve/decline button carries back in `card.action.trigger` (`action.value`)."""

    ally: Literal["decide"] = "decide"
    turn_workflow_id: str
    key: str
    decision: DecisionWord


class AnswerValue(BaseModel):
    """An option button of a one-question card: the click is the answer."""

    ally: Literal["answer"] = "answer"
    turn_workflow_id: str
    key: str
    question_id: str
    answer: str


class AnswersFormValue(BaseModel):
    """The submit button of a several-question form; form field `q{i}` answers `questions[i]`."""

    ally: Literal["answers"] = "answers"
    turn_workflow_id: str
    key: str
    questions: list[str]


class StopValue(BaseModel):
    """The Stop button of a progress card: the same stop as /stop, for the turn it shows."""

    ally: Literal["stop"] = "stop"
    turn_workflow_id: str


class ChoiceValue(BaseModel):
    """A button under a notice (a stale message, a handed-off thread): clicking it sends `command`
    to the conversation, as if the person had typed it."""

    ally: Literal["choose"] = "choose"
    conversation: str
    command: str
    chat_type: Literal["p2p", "group"] = "p2p"


class FileValue(BaseModel):
    """The button beside a changed file on a turn's final card: sends `/file PATH` to the
    conversation, as if the person had typed it (docs/operations.md, "Files out")."""

    ally: Literal["file"] = "file"
    conversation: str
    path: str  # relative to the workspace
    chat_type: Literal["p2p", "group"] = "p2p"


DecisionCardValue = DecisionValue | AnswerValue | AnswersFormValue  # a click a turn decides
CardValue = Annotated[DecisionCardValue | ChoiceValue | StopValue | FileValue, Field(discriminator="ally")]
CARD_VALUE: TypeAdapter[CardValue] = TypeAdapter(CardValue)

TITLES: dict[str, str] = {
    "command": "Run this command?",
    "file_change": "Apply these file changes?",
    "permissions": "Grant more permissions?",
    "user_input": "Codex has a question",
    "elicitation": "A tool asks for input",
    "other": "Codex is waiting for a decision",
}
DECIDED: dict[str, tuple[str, str]] = {  # decision -> (what the card says, header colour)
    "accept": ("✅ Approved", "green"),
    "acceptForSession": ("✅ Approved for this session", "green"),
    "decline": ("❌ Declined", "red"),
    "cancel": ("⏹ Cancelled", "grey"),
    "answered": ("✅ Answered", "green"),
}


def approval_card(prompt: ApprovalPrompt) -> dict[str, Any]:
    request = prompt.request
    elements = _request_elements(request)
    if prompt.asked_because:
        because = f"<font color='grey'>Asked you because: {escape_mentions(prompt.asked_because)}</font>"
        elements.append({"tag": "markdown", "content": because})
    if request.kind == "user_input":
        elements += _question_elements(prompt)
    else:
        elements.append(_decision_buttons(prompt))
    elements.append(
        {
            "tag": "markdown",
            "content": f"<font color='grey'>Declined automatically if nobody decides within "
            f"{_duration(prompt.expires_in_s)}. You can also reply y / n / always.</font>",
        }
    )
    title = TITLES.get(request.kind, TITLES["other"])
    return _card(elements, title=title, template="orange", summary=title)


def decided_card(request: AgentRequest, decision: str, decided_by: str, decided_at: str) -> dict[str, Any]:
    """The approval card once decided: the request as it was asked, and who decided what, when."""
    shown, template = DECIDED.get(decision, (decision, "grey"))
    who = escape_mentions(decided_by)
    elements = [
        *_request_elements(request),
        {"tag": "hr"},
        {"tag": "markdown", "content": f"**{escape_mentions(shown)}** by {who} · {_when(decided_at)}"},
    ]
    title = TITLES.get(request.kind, TITLES["other"])
    return _card(elements, title=title, template=template, summary=f"{shown}: {title}")


def decision_values(card: Any) -> list[DecisionValue]:
    """Decision buttons found in a card (e.g. one read back with GET message), for reactions."""
    found: list[DecisionValue] = []
    if isinstance(card, dict):
        for behavior in card.get("behaviors") or []:
            if isinstance(behavior, dict):
                with contextlib.suppress(ValidationError):
                    found.append(DecisionValue.model_validate(behavior.get("value")))
        for value in card.values():
            found += decision_values(value)
    elif isinstance(card, list):
        for item in card:
            found += decision_values(item)
    return found


def _request_elements(request: AgentRequest) -> list[dict[str, Any]]:
    lines: list[str] = []
    if request.command:
        lines.append(code_block(request.command, "bash"))
    if request.cwd:
        lines.append(f"**In** `{escape_mentions(request.cwd)}`")
    if request.reason:
        lines.append(f"**Why** {escape_mentions(request.reason)}")
    if request.kind == "permissions" and request.questions:
        lines.append(code_block(json.dumps(request.questions[0], indent=2, ensure_ascii=False), "json"))
    elements: list[dict[str, Any]] = []
    if lines:
        elements.append({"tag": "markdown", "content": "\n".join(lines)})
    if request.diff:
        elements.append(_diff_panel(request.diff))
    return elements


def _diff_panel(diff: str) -> dict[str, Any]:
    shown = diff
    note = ""
    if text_cost(diff) > DIFF_BUDGET_BYTES:
        # The card must stay under 30 KB; the diff is for review, the change itself is Codex's.
        chunk = split_markdown(diff, max(DIFF_BUDGET_BYTES, MIN_SPLIT_BUDGET))[0].text
        shown = chunk
        note = f"\n… {diff.count(chr(10)) - chunk.count(chr(10))} more lines not shown (card size limit)"
    lines = diff.count("\n") + (0 if diff.endswith("\n") else 1)
    return {
        "tag": "collapsible_panel",
        "expanded": False,
        "header": {"title": {"tag": "markdown", "content": f"**Diff** ({lines} lines)"}},
        "elements": [{"tag": "markdown", "content": code_block(shown.rstrip("\n"), "diff") + note}],
    }


def _decision_buttons(prompt: ApprovalPrompt) -> dict[str, Any]:
    def button(label: str, kind: str, decision: DecisionWord) -> dict[str, Any]:
        value = DecisionValue(
            turn_workflow_id=prompt.turn_workflow_id, key=prompt.request.key, decision=decision
        )
        return {
            "tag": "button",
            "text": {"tag": "plain_text", "content": label},
            "type": kind,
            "behaviors": [{"type": "callback", "value": value.model_dump()}],
        }

    grant = prompt.request.kind == "permissions"
    buttons = [
        button("Grant" if grant else "Approve", "primary_filled", "accept"),
        button(
            "Grant for this session" if grant else "Approve for this session", "primary", "acceptForSession"
        ),
        button("Deny" if grant else "Decline", "danger", "decline"),
    ]
    return {
        "tag": "column_set",
        "flex_mode": "flow",
        "columns": [{"tag": "column", "width": "auto", "elements": [b]} for b in buttons],
    }


def _question_elements(prompt: ApprovalPrompt) -> list[dict[str, Any]]:
    questions = [q for q in prompt.request.questions if isinstance(q, dict)]
    base = {"turn_workflow_id": prompt.turn_workflow_id, "key": prompt.request.key}
    texts = [
        {
            "tag": "markdown",
            "content": f"**{escape_mentions(str(q.get('header') or ''))}** "
            f"{escape_mentions(str(q.get('question') or ''))}".strip(),
        }
        for q in questions
    ]
    options = [_option_labels(q) for q in questions]
    if len(questions) == 1 and options[0]:
        question_id = str(questions[0].get("id") or "")
        buttons = [
            {
                "tag": "button",
                "text": {"tag": "plain_text", "content": label},
                "type": "primary" if index == 0 else "default",
                "behaviors": [
                    {
                        "type": "callback",
                        "value": AnswerValue(**base, question_id=question_id, answer=label).model_dump(),
                    }
                ],
            }
            for index, label in enumerate(options[0])
        ]
        row = {
            "tag": "column_set",
            "flex_mode": "flow",
            "columns": [{"tag": "column", "width": "auto", "elements": [b]} for b in buttons],
        }
        return [*texts, row]
    fields: list[dict[str, Any]] = []
    for index, (text, labels) in enumerate(zip(texts, options, strict=True)):
        fields.append(text)
        placeholder = {"tag": "plain_text", "content": "Choose" if labels else "Type your answer"}
        if labels:
            choices = [{"text": {"tag": "plain_text", "content": label}, "value": label} for label in labels]
            fields.append(
                {"tag": "select_static", "name": f"q{index}", "placeholder": placeholder, "options": choices}
            )
        else:
            fields.append({"tag": "input", "name": f"q{index}", "placeholder": placeholder})
    submit = AnswersFormValue(**base, questions=[str(q.get("id") or "") for q in questions])
    fields.append(
        {
            "tag": "button",
            "name": "submit",
            "text": {"tag": "plain_text", "content": "Send answers"},
            "type": "primary_filled",
            "form_action_type": "submit",
            "behaviors": [{"type": "callback", "value": submit.model_dump()}],
        }
    )
    return [{"tag": "form", "name": "answers", "elements": fields}]


def _option_labels(question: dict[str, Any]) -> list[str]:
    options = question.get("options") or []
    return [str(o.get("label")) for o in options if isinstance(o, dict) and o.get("label")]


# --- progress --------------------------------------------------------------------------------------

PROGRESS_STEPS_SHOWN = 8
PROGRESS_FILES_SHOWN = 10
_PLAN_MARKS = {"pending": "⬜", "in_progress": "▶️", "completed": "✅"}
_STEP_MARKS = {
    "command": "$",
    "file_change": "✏️",
    "tool": "🔧",
    "search": "🔎",
    "compaction": "🗜",
    "steer": "↪️",
}
_DOING = {
    "command": "running",
    "file_change": "editing",
    "tool": "calling",
    "search": "searching the web for",
    "compaction": "compacting the context",
    "message": "writing",
}
_SETTLED = {
    "completed": ("Done", "green"),
    "interrupted": ("Stopped", "grey"),
    "failed": ("Did not finish", "red"),
}


def progress_card(view: ProgressView, *, final: bool = False) -> dict[str, Any]:
    """A turn's progress card: what Codex does now, its plan, the latest steps, counts and a Stop
    button; once `final`, a short summary (the answer itself is the next message, never this card).
    Every part is bounded (`ally/codex/progress.py`), so the card stays far below the size limit."""
    activity = view.activity
    if final:
        title, template = _SETTLED.get(view.state, _SETTLED["failed"])
        line = (
            summary(activity, view.state, view.elapsed_s) if activity else f"after {duration(view.elapsed_s)}"
        )
        elements: list[dict[str, Any]] = [{"tag": "markdown", "content": escape_mentions(line.capitalize())}]
        files = view.files or (activity.files if activity is not None else [])
        total = max(len(view.files), activity.files_total if activity is not None else 0)
        if files or view.images:  # an image the agent only viewed is shown too
            shown = FilesShown(
                files=files,
                total=total,
                workspace=view.workspace,
                conversation=view.conversation,
                chat_type=view.chat.chat_type,
                images=view.images,
            )
            elements += files_elements(shown)
        card = _card(elements, title=title, template=template, summary=line)
        if size_on_the_wire(card) > CARD_BUDGET_BYTES:  # paths of 2,000 characters: drop the buttons
            card = _card(elements[:1], title=title, template=template, summary=line)
        return card
    waiting = activity is not None and activity.waiting > 0
    title = f"{'Waiting for a decision' if waiting else 'Working'} · {minutes(view.elapsed_s)}"
    elements = [{"tag": "markdown", "content": _now_line(view)}]
    if activity is not None and activity.plan:
        plan = "\n".join(f"{_PLAN_MARKS[p.status]} {escape_mentions(p.step)}" for p in activity.plan)
        elements.append({"tag": "markdown", "content": "**Plan**\n" + plan})
    if activity is not None and activity.recent:
        steps = "\n".join(
            _step_line(step, view.workspace) for step in activity.recent[-PROGRESS_STEPS_SHOWN:]
        )
        elements.append({"tag": "markdown", "content": steps})
    if activity is not None and (done := counts(activity)):
        elements.append({"tag": "markdown", "content": f"<font color='grey'>{' · '.join(done)}</font>"})
    stop = StopValue(turn_workflow_id=view.turn_workflow_id)
    elements.append(
        {
            "tag": "button",
            "text": {"tag": "plain_text", "content": "Stop"},
            "type": "danger",
            "behaviors": [{"type": "callback", "value": stop.model_dump()}],
        }
    )
    card = _card(elements, title=title, template="orange" if waiting else "blue", summary=title)
    if size_on_the_wire(card) > CARD_BUDGET_BYTES:  # cannot happen with the bounds above; never refused
        card = _card([elements[0], elements[-1]], title=title, template="blue", summary=title)
    return card


def _now_line(view: ProgressView) -> str:
    activity = view.activity
    if activity is None:
        now = "starting"
    elif activity.waiting:
        now = (
            "waiting for a decision on the card below"
            if activity.waiting == 1
            else (f"waiting for {activity.waiting} decisions")
        )
    elif activity.doing is not None and activity.doing.kind != "thinking":
        doing = _inline(activity.doing, view.workspace)
        now = f"{_DOING.get(activity.doing.kind, 'working on')} {doing}".rstrip()
    else:
        now = "thinking"
    line = f"**Now:** {now}"
    if view.quiet_s >= 60:  # honest about a long silence, and never "idle" while the turn runs
        line += f"\n<font color='grey'>still working · last activity {minutes(view.quiet_s)} ago</font>"
    return line


def _step_line(step: ProgressStep, workspace: str | None) -> str:
    mark = _STEP_MARKS.get(step.kind, "·")
    failed = "" if step.status in ("done", "running") else f" ({step.status})"
    return f"{mark} {_inline(step, workspace)}{failed}"


def _inline(step: ProgressStep, workspace: str | None) -> str:
    if not step.text:
        return ""
    if step.kind == "file_change":
        return escape_mentions(relative(step.text, workspace))
    if step.kind == "command":
        plain = escape_mentions(step.text.replace("`", "'"))
        return f"`{plain}`"
    return escape_mentions(step.text)


PROGRESS_IMAGES_SHOWN = 3


class FilesShown(BaseModel):
    """The files a turn changed, as its final card lists them."""

    files: list[str]
    total: int
    workspace: str | None
    conversation: str = ""  # where a file's button sends `/file PATH`; "": no buttons
    chat_type: Literal["p2p", "group"] = "p2p"
    images: dict[str, str] = {}  # path -> image_key: shown inline


def files_elements(shown: FilesShown) -> list[dict[str, Any]]:
    """The images the turn wrote or viewed, inline, then the files it changed, each with a button
    that sends it to the chat (folded: the summary line above already counts them)."""
    elements: list[dict[str, Any]] = []
    for path, key in list(shown.images.items())[:PROGRESS_IMAGES_SHOWN]:
        name = relative(path, shown.workspace)
        elements.append({"tag": "img", "img_key": key, "alt": {"tag": "plain_text", "content": name}})
    if shown.files:
        elements.append(_files_panel(shown))
    return elements


def _files_panel(shown: FilesShown) -> dict[str, Any]:
    """The files the turn changed, each with a Send button when the conversation is known."""
    listed = shown.files[:PROGRESS_FILES_SHOWN]
    more = shown.total - len(listed)
    rows: list[dict[str, Any]] = []
    if shown.conversation:
        for path in listed:
            name = relative(path, shown.workspace)
            value = FileValue(conversation=shown.conversation, path=name, chat_type=shown.chat_type)
            button = {
                "tag": "button",
                "text": {"tag": "plain_text", "content": "Send"},
                "type": "default",
                "size": "small",
                "behaviors": [{"type": "callback", "value": value.model_dump()}],
            }
            rows.append(
                {
                    "tag": "column_set",
                    "flex_mode": "none",
                    "columns": [
                        {
                            "tag": "column",
                            "width": "weighted",
                            "weight": 1,
                            "elements": [{"tag": "markdown", "content": f"`{_plain(name)}`"}],
                        },
                        {"tag": "column", "width": "auto", "elements": [button]},
                    ],
                }
            )
        if more > 0:
            rows.append({"tag": "markdown", "content": f"… and {more} more (/file PATH sends any file)"})
    else:
        text = "\n".join(f"- {escape_mentions(relative(p, shown.workspace))}" for p in listed)
        if more > 0:
            text += f"\n- … and {more} more"
        rows.append({"tag": "markdown", "content": text})
    return {
        "tag": "collapsible_panel",
        "expanded": False,
        "header": {"title": {"tag": "markdown", "content": f"**Files changed** ({shown.total})"}},
        "elements": rows,
    }


def _plain(path: str) -> str:
    return escape_mentions(path.replace("`", "'"))


# --- the frame -------------------------------------------------------------------------------------


def _card(
    elements: list[dict[str, Any]], *, title: str | None, template: str, summary: str
) -> dict[str, Any]:
    first_line = next(
        (line.strip() for line in summary.splitlines() if line.strip() and _opens(line) is None), ""
    )
    config: dict[str, Any] = {"update_multi": True}  # required to PATCH the card later
    if first_line:
        # The chat list shows this instead of "[Card]".
        config["summary"] = {"content": first_line.strip("`#*> ")[:SUMMARY_CHARS]}
    card: dict[str, Any] = {"schema": "2.0", "config": config}
    if title:
        card["header"] = {"title": {"tag": "plain_text", "content": title}, "template": template}
    card["body"] = {"elements": elements}
    return card


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes >= 120:
        return f"{minutes // 60} h"
    return f"{minutes} min" if minutes >= 1 else f"{round(seconds)} s"


def _when(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return escape_mentions(iso)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S")
