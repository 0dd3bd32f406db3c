"""What a progress card says, and what the host keeps of a turn's progress: bounded, honest."""

from __future__ import annotations

import json

from ally.channels.feishu import cards
from ally.codex.progress import RECENT_STEPS, ProgressTracker
from ally.contracts import ChatRef, ProgressView, TurnActivity


def view(activity: TurnActivity | None, **fields: object) -> ProgressView:
    chat = ChatRef(channel="feishu", chat_id="oc_1", worker_queue="q")
    base = ProgressView(
        chat=chat,
        reply_to="om_1",
        turn_workflow_id="turn:oc_1:om_1",
        message_id="om_card",
        idempotency_key="k",
    )
    return base.model_copy(update={"activity": activity, **fields})


def test_a_turn_of_ten_thousand_items_with_huge_commands_keeps_a_snapshot_of_a_few_kilobytes() -> None:
    tracker = ProgressTracker()
    tracker.plan_updated([{"step": "x" * 5000, "status": "inProgress"}] * 500)
    for n in range(10_000):
        command = {"type": "commandExecution", "id": f"c{n}", "command": "echo " + "y" * 20_000}
        tracker.item_started(command)
        tracker.item_completed(command | {"status": "completed", "exitCode": 0})
        change = {
            "type": "fileChange",
            "id": f"f{n}",
            "changes": [{"path": f"/w/file{n}.txt", "kind": {"type": "add"}}],
        }
        tracker.item_completed(change | {"status": "completed"})
    snapshot = tracker.snapshot()
    assert len(snapshot.model_dump_json()) < 16_000
    assert (snapshot.commands, snapshot.file_changes, snapshot.files_total) == (10_000, 10_000, 10_000)
    assert len(snapshot.recent) == RECENT_STEPS and snapshot.recent[-1].text == "/w/file9999.txt".join(
        ["add ", ""]
    )
    card = cards.progress_card(view(snapshot, elapsed_s=7200))
    assert cards.size_on_the_wire(card) < cards.CARD_BUDGET_BYTES


def test_a_long_silence_says_when_codex_last_did_something_and_never_idle() -> None:
    tracker = ProgressTracker(now=0.0)
    tracker.item_started({"type": "commandExecution", "id": "c1", "command": "sleep 3600"})
    quiet = cards.progress_card(view(tracker.snapshot(), elapsed_s=900, quiet_s=600))
    text = json.dumps(quiet, ensure_ascii=False)
    assert "running `sleep 3600`" in text and "last activity 10 min ago" in text
    assert "idle" not in text.lower()
    thinking = json.dumps(
        cards.progress_card(view(ProgressTracker().snapshot(), quiet_s=120)), ensure_ascii=False
    )
    assert "**Now:** thinking" in thinking and "last activity 2 min ago" in thinking


def test_a_steer_and_a_waiting_approval_show_on_the_card() -> None:
    tracker = ProgressTracker()
    tracker.item_completed({"type": "userMessage", "id": "u1", "content": [{"type": "text", "text": "go"}]})
    tracker.item_completed(
        {"type": "userMessage", "id": "u2", "content": [{"type": "text", "text": "shorter"}]}
    )
    tracker.request_pending("r1")
    card = cards.progress_card(view(tracker.snapshot()))
    text = json.dumps(card, ensure_ascii=False)
    assert card["header"]["title"]["content"].startswith("Waiting for a decision")
    assert "↪️ shorter" in text and "1 follow-up taken" in text
    tracker.request_resolved("r1")
    assert cards.progress_card(view(tracker.snapshot()))["header"]["title"]["content"].startswith("Working")


def test_the_settled_card_is_a_summary_without_the_stop_button() -> None:
    tracker = ProgressTracker()
    change = {
        "type": "fileChange",
        "id": "f1",
        "changes": [{"path": "/w/notes.txt", "kind": {"type": "add"}}],
    }
    tracker.item_completed(change | {"status": "completed"})
    card = cards.progress_card(
        view(tracker.snapshot(), state="interrupted", elapsed_s=75, workspace="/w"), final=True
    )
    text = json.dumps(card, ensure_ascii=False)
    assert card["header"]["title"]["content"] == "Stopped"
    assert "Stopped after 1 min 15 s · 1 file changed" in text and "- notes.txt" in text
    assert '"stop"' not in text
