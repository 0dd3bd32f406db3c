"""Every Temporal name work-ally uses: task queues, search attributes, workflow ids.

Ids are built only here, so that a reader can see at a glance what each id means and that the
deterministic ones (turns, updates) really are deterministic: Temporal de-duplicates by them.
"""

from __future__ import annotations

import hashlib

from temporalio.common import SearchAttributeKey

# Every Feishu chat's workflows and deliveries (ChatRef.worker_queue): the gateway's chat worker,
# which owns the Feishu client. A terminal chat has a queue of its own (inbound.console_chat).
FEISHU_CHATS_QUEUE = "feishu-chats"
# Shared queue every runtime host polls; it answers "which host are you?" so that a conversation
# can pin its turns to the host whose child process holds the thread (docs/temporal.md §1).
RUNTIME_DISCOVERY_QUEUE = "codex-runtime"


def runtime_queue(host: str) -> str:
    """The pinned queue of one runtime host: only the worker that owns that host's child polls it."""
    return f"codex-runtime@{host}"


def runtime_worker_identity(host: str, machine: str) -> str:
    """How a runtime worker introduces itself to Temporal (`machine` is its pid@hostname): the pollers
    `ally status` sees on the discovery queue say which runtime host each one is."""
    return f"{machine} {runtime_queue(host)}"


def host_of_worker(identity: str) -> str | None:
    """The runtime host a poller's identity names (`runtime_worker_identity`); None for any other worker."""
    prefix = runtime_queue("")
    last = identity.rpartition(" ")[2]
    if not last.startswith(prefix):
        return None
    return last.removeprefix(prefix) or None


# Custom search attributes, registered on the embedded dev server at start and in tests.
CHAT = SearchAttributeKey.for_keyword("AllyChat")
AGENT_THREAD = SearchAttributeKey.for_keyword("AllyThread")
TURN_STATE = SearchAttributeKey.for_keyword("AllyTurnState")
ASSISTANT = SearchAttributeKey.for_keyword("AllyAssistant")  # the assistant's id
SEARCH_ATTRIBUTES = (CHAT, AGENT_THREAD, TURN_STATE, ASSISTANT)

# The assistant every install has, and the one chats talked to before there were several: its
# conversations keep their old workflow ids (`conversation_id`).
DEFAULT_ASSISTANT = "default"


# The person at this machine's terminal (`ally approvals`, `ally chat`): trusted to decide any
# request, since they could run Codex directly anyway.
LOCAL_OPERATOR = "local-operator"


# The activity that shows a running turn's progress (activities/channel.py); ally/core_logs.py
# knows it by this name in the task tokens the SDK's core logs.
PROGRESS_FOLLOWER = "follow_progress"

# One alerts workflow per deployment (workflows/alerts.py).
ALERTS_WORKFLOW_ID = "ally-alerts"


def conversation_id(chat: str, assistant: str = DEFAULT_ASSISTANT, topic: str = "") -> str:
    """One assistant in one chat, or in one topic of it. The default assistant at a chat's top level
    keeps the id conversations had before assistants existed, so they go on after an upgrade."""
    where = f"chat:{chat}" + (f"/{topic}" if topic else "")
    return where if assistant == DEFAULT_ASSISTANT else f"{where}@{assistant}"


def chat_of(conversation_id: str) -> str:
    """The chat a conversation id (`conversation_id`) is in."""
    return conversation_id.removeprefix("chat:").split("/", 1)[0].split("@", 1)[0]


# A routine is a Temporal Schedule (docs/routines.md): its id, and the id each run it starts is
# given (Temporal appends the scheduled time to it).
ROUTINE_SCHEDULE_PREFIX = "routine:"
ROUTINE_RUN_PREFIX = "routine-run:"


def routine_schedule_id(name: str) -> str:
    return f"{ROUTINE_SCHEDULE_PREFIX}{name}"


def routine_run_id(name: str) -> str:
    return f"{ROUTINE_RUN_PREFIX}{name}"


def routine_message_id(name: str, scheduled: str) -> str:
    """A routine's run stands where a person's message would: one per scheduled time, so its turn
    (`turn_workflow_id`) and that turn's deliveries are deterministic too."""
    return f"routine:{name}:{scheduled}"


def digest_message_id(assistant: str, day: str) -> str:
    """The memory digest of one assistant's day: one turn id per (assistant, day), so a rerun of the
    day delivers with the same idempotency key and replaces rather than duplicates."""
    return f"digest:{assistant}:{day}"


def turn_workflow_id(chat: str, message: str) -> str:
    """One turn per inbound message: Feishu redeliveries map to the same workflow id."""
    return f"turn:{chat}:{message}"


def decision_update_id(request_key: str, operator: str) -> str:
    """A card click, redelivered or double-clicked, maps to one update id, so it decides once."""
    return f"decide:{request_key}:{operator}"


def delivery_key(turn_workflow_id: str, part: str) -> str:
    """Feishu's `uuid` for one outbound message of a turn: at most 50 chars, stable across retries.

    Channels that split a long reply derive one key per chunk from this one (`chunk_key`).
    """
    digest = hashlib.sha256(f"{turn_workflow_id}#{part}".encode()).hexdigest()
    return f"wa-{digest[:40]}"


def chunk_key(key: str, chunk: int) -> str:
    return key if chunk == 0 else f"{key[:44]}-{chunk}"
