"""What `CodexRuntime` raises. Every one is a `CodexRuntimeError`; each says what to do next."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class CodexRuntimeError(Exception):
    """Base of the runtime's errors."""


class RuntimeNotRunning(CodexRuntimeError):
    """The runtime is stopped, or its child did not come back in time; retry later."""


class RuntimeRestarted(CodexRuntimeError):
    """The Codex child died while this call or watch was in flight. Its turn reads back
    `interrupted` and its pending requests are gone (docs/codex-app-server.md §7, §8): read_thread
    for the truth, ensure_thread to resume, then start a new turn."""


class CodexUnresponsive(CodexRuntimeError):
    """Codex did not answer a request in time; it may still act on it."""


class CodexRejected(CodexRuntimeError):
    """Codex answered a request with a JSON-RPC error."""

    def __init__(self, method: str, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"codex refused {method}: {message} (JSON-RPC {code})")
        self.method = method
        self.code = code
        self.message = message
        self.data = data


class InputRejected(CodexRejected):
    """Codex refused a turn's input as invalid (JSON-RPC -32602), e.g. longer than it takes:
    `data` = {"input_error_code": "input_too_large", "max_chars": 1048576, "actual_chars": …}.
    The same input fails the same way every time: not a lost host, nothing to retry."""

    @property
    def too_long(self) -> tuple[int, int] | None:
        """(characters sent, most Codex takes) when the input was too long."""
        data = self.data if isinstance(self.data, dict) else {}
        actual, limit = data.get("actual_chars"), data.get("max_chars")
        if (
            data.get("input_error_code") == "input_too_large"
            and isinstance(actual, int)
            and isinstance(limit, int)
        ):
            return actual, limit
        return None


class TurnNotActive(CodexRejected):
    """steer/interrupt of a turn that is not the thread's active turn (it ended, or another runs)."""


class ThreadNotFound(CodexRejected):
    """Codex has no rollout for this thread id in its CODEX_HOME."""


class ThreadLocked(CodexRejected):
    """Another process still holds the thread's writer lock (docs/codex-app-server.md §1); it frees
    when that process exits."""


class UnknownTurn(CodexRuntimeError):
    """watch_turn of a turn this runtime never saw or has forgotten; read_thread has its outcome."""


class UnknownRequest(CodexRuntimeError):
    """answer_request for a key that is not pending in this child generation.

    `reason`: "answered" (already answered), "resolved" (Codex cleared it, e.g. the turn was
    interrupted), "restarted" (an earlier child asked it; that request is gone for good,
    docs/codex-app-server.md §7), or "unknown".
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"request {key} is not pending ({reason})")
        self.key = key
        self.reason = reason


class InvalidAnswer(CodexRuntimeError):
    """The result given to answer_request does not fit the request's response schema."""


class WorkspaceUnavailable(CodexRuntimeError):
    """A new thread's workspace could not be created, or its persona written (a path that is a
    file, no permission, a full disk). The same settings fail the same way until someone fixes it."""

    def __init__(self, cwd: Path, reason: str) -> None:
        super().__init__(f"the workspace {cwd} cannot be prepared: {reason}")
        self.cwd = cwd
        self.reason = reason
