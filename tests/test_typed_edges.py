"""The edges between workflows, activities and clients are typed: every call goes by reference.

A reader jumps from a workflow to the code it runs, and mypy checks each argument and result. The
Codex host's activities are called through stubs (activities/runtime.py), since the workflows must
not import the Codex client: these tests prove each stub stands for the activity it names.
"""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest
from temporalio import activity

from activities import runtime
from activities.codex import CodexActivities, answer_of
from activities.workspace import WorkspaceActivities
from ally.contracts import AgentRequest, AnswerRequestInput, Decision, Person, TurnInput

ROOT = Path(__file__).resolve().parent.parent
CALLS_BY_NAME = {
    "execute_activity",
    "start_activity",
    "execute_local_activity",
    "start_local_activity",
    "execute_child_workflow",
    "start_child_workflow",
    "signal",
    "query",
    "execute_update",
    "start_update",
    "signal_with_start_workflow",
}
NAME_KEYWORDS = {"start_signal", "result_type"}


def _defined_activities(cls: type) -> dict[str, object]:
    return {
        definition.name: member
        for member in vars(cls).values()
        if (definition := activity._Definition.from_callable(member)) is not None and definition.name
    }


def _host_activities() -> dict[str, object]:
    """Everything a runtime host runs for the workflows: Codex's and the workspace's."""
    return {**_defined_activities(CodexActivities), **_defined_activities(WorkspaceActivities)}


def _stubs() -> dict[str, object]:
    return {
        definition.name: member
        for member in vars(runtime).values()
        if callable(member)
        and (definition := activity._Definition.from_callable(member)) is not None
        and definition.name
    }


def test_every_codex_host_activity_has_a_stub_the_workflows_call() -> None:
    assert sorted(_stubs()) == sorted(_host_activities())


@pytest.mark.parametrize("name", sorted(_host_activities()))
def test_a_stub_takes_and_gives_what_its_codex_activity_does(name: str) -> None:
    real = _host_activities()[name]
    stub = _stubs()[name]
    real_hints = typing.get_type_hints(real)
    stub_hints = typing.get_type_hints(stub)
    assert stub_hints == real_hints
    real_params = [p for p in inspect.signature(real).parameters if p != "self"]  # type: ignore[arg-type]
    assert list(inspect.signature(stub).parameters) == real_params  # type: ignore[arg-type]


def _python_files() -> list[Path]:
    files: list[Path] = []
    for folder in ("workflows", "activities", "ally", "workers"):
        files += [p for p in (ROOT / folder).rglob("*.py") if p.name != "protocol.py"]
    return files


def _string_named_calls(path: Path) -> list[str]:
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in CALLS_BY_NAME and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(f"{where}:{node.lineno}: {name}({first.value!r})")
        for keyword in node.keywords:
            if keyword.arg in NAME_KEYWORDS and isinstance(keyword.value, ast.Constant):
                found.append(f"{where}:{node.lineno}: {keyword.arg}={keyword.value.value!r}")
    return found


def test_no_activity_signal_update_or_query_is_called_by_a_string_name() -> None:
    found = [call for path in _python_files() for call in _string_named_calls(path)]
    assert found == []


def test_the_check_for_string_names_sees_one_when_there_is_one(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('async def f(h):\n    await h.signal("codex_request", 1)\n')
    assert _string_named_calls(sample) == ["sample.py:2: signal('codex_request')"]


def test_workflows_and_contracts_never_import_the_codex_client() -> None:
    for folder in ("workflows", "ally/contracts", "activities/runtime.py", "activities/channel.py"):
        paths = [ROOT / folder] if folder.endswith(".py") else list((ROOT / folder).rglob("*.py"))
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    assert not (node.module or "").startswith(("ally.codex", "activities.codex")), path
                if isinstance(node, ast.Import):
                    assert not any(a.name.startswith("ally.codex") for a in node.names), path


def test_a_turn_started_before_turns_had_an_origin_came_from_its_message() -> None:
    old = {
        "message": {
            "message_id": "om_1",
            "chat": {"channel": "feishu", "chat_id": "oc_1", "worker_queue": "q"},
            "sender": {"id": "ou_alice", "name": "Alice"},
            "text": "hello",
        },
        "runtime": {"host": "h", "task_queue": "codex-runtime@h"},
        "thread_id": None,
        "settings": {"cwd": "/tmp"},
    }
    turn = TurnInput.model_validate(old)
    assert (turn.origin.kind, turn.origin.message_id, turn.origin.sender.id) == (
        "message",
        "om_1",
        "ou_alice",
    )


def test_an_answer_scheduled_before_the_upgrade_still_reaches_the_host_as_it_was_built() -> None:
    old = AnswerRequestInput.model_validate({"key": "1:7", "result": {"decision": "accept"}})
    assert answer_of(old) == {"decision": "accept"}


def test_the_host_answers_a_permissions_request_in_codex_terms() -> None:
    asked = {"network": {"enabled": True}}
    request = AgentRequest(key="1:8", kind="permissions", method="m", thread_id="t", permissions=asked)
    person = Person(id="ou_alice")
    for word, granted, scope in (("acceptForSession", asked, "session"), ("decline", {}, "turn")):
        decision = Decision(key="1:8", decision=word, operator=person)
        new = AnswerRequestInput(key="1:8", request=request, decision=decision)
        assert answer_of(new) == {"permissions": granted, "scope": scope}
