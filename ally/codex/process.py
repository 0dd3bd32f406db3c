"""One `codex app-server` child: spawn it in its own process group, shake hands, stop it.

Facts relied on (docs/codex-app-server.md): stdio is newline-delimited JSON-RPC (§1); stderr is
tracing only, never protocol (§1); a missing CODEX_HOME makes the child exit at once (§1); closing
stdin is a clean disconnect, the child exits in ~30 ms even mid-turn (§1); a thread's writer lock is
released only when the process holding it exits (§1), so the child and anything it started must be
killed as a group, never by the top pid alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ally.codex.binary import binary_version
from ally.codex.protocol import ClientInfo, InitializeCapabilities, InitializeParams, InitializeResponse
from ally.codex.rpc import STREAM_LIMIT, JsonRpcConnection, NotificationHandler, ServerRequestHandler
from ally.codex.version import CODEX_VERSION, version_mismatch
from ally.processes import die_with_parent_hook, signal_group

log = logging.getLogger(__name__)
stderr_log = logging.getLogger("ally.codex.stderr")

# Becomes the `originator` header Codex sends to the model (docs/codex-app-server.md §2)
CLIENT_NAME = "work-ally"

# We deliver final texts only (read back with thread/turns/list), never streamed deltas; opting out
# spares the child and us one notification per streamed token (docs/codex-app-server.md §2, §5).
OPT_OUT_NOTIFICATIONS = ["item/agentMessage/delta"]


class CodexStartFailed(Exception):
    """The child exited or did not answer `initialize`; the message carries the reason."""


class CodexProcess:
    """A started child exposes `rpc`, `pid`, `version` and `version_mismatch`."""

    def __init__(
        self,
        binary: Path,
        codex_home: Path,
        *,
        env: Mapping[str, str] | None = None,
        client_version: str = CODEX_VERSION,
        on_notification: NotificationHandler | None = None,
        on_request: ServerRequestHandler | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.binary = binary
        self.codex_home = codex_home
        # Attached before the first line is read, so nothing the child says is missed.
        self._on_notification = on_notification
        self._on_request = on_request
        self._on_close = on_close  # stdout closed: the child can no longer talk to us
        self._extra_env = dict(env or {})
        self._client_version = client_version
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._rpc: JsonRpcConnection | None = None
        self.started_at = 0.0
        self.initialize_result: InitializeResponse | None = None
        self.version: str | None = None
        self.version_mismatch: str | None = None

    @property
    def rpc(self) -> JsonRpcConnection:
        if self._rpc is None:
            raise RuntimeError("CodexProcess.start() has not run")
        return self._rpc

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self, *, timeout_s: float = 30.0) -> InitializeResponse:
        """Spawn and complete the `initialize` handshake; raise `CodexStartFailed` if it does not."""
        # A missing CODEX_HOME makes the child exit at once (docs/codex-app-server.md §1); creating
        # it is harmless.
        self.codex_home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CODEX_HOME": str(self.codex_home), **self._extra_env}
        self.started_at = time.time()
        try:
            self._process = await asyncio.create_subprocess_exec(
                str(self.binary),
                "app-server",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                limit=STREAM_LIMIT,
                # Own process group, so stop() can kill whatever the child started too.
                # PR_SET_PDEATHSIG(SIGKILL) so a SIGKILLed worker leaves no orphan holding writer
                # locks. The kernel sends it when the *thread* that forked the child exits: keep
                # the event loop that starts the runtime alive as long as the runtime.
                start_new_session=True,
                preexec_fn=die_with_parent_hook(),
            )
        except OSError as error:
            raise CodexStartFailed(f"cannot run {self.binary}: {error}") from error
        assert self._process.stdout is not None and self._process.stdin is not None
        assert self._process.stderr is not None
        self._stderr_task = asyncio.create_task(self._log_stderr(self._process.stderr, self._process.pid))
        self._rpc = JsonRpcConnection(
            self._process.stdout, self._process.stdin, name=f"codex[{self.pid}]", on_close=self._on_close
        )
        if self._on_notification is not None:
            self._rpc.subscribe(self._on_notification)
        # Without a handler the connection refuses every server request (never leaves one hanging).
        self._rpc.set_request_handler(self._on_request)
        self._rpc.start()
        probe = asyncio.create_task(self._probe_version())
        try:
            result = await self._rpc.request("initialize", self._initialize_params(), timeout_s=timeout_s)
            self.rpc.notify("initialized")
            await probe
        except BaseException as error:  # cancelled too: never leave a half-started child behind
            probe.cancel()
            await self.stop(grace=0)
            if not isinstance(error, Exception):
                raise
            raise CodexStartFailed(
                f"{self.binary} app-server did not start (exit code {self.returncode}): {error}"
            ) from error
        self.initialize_result = InitializeResponse.model_validate(result)
        return self.initialize_result

    def _initialize_params(self) -> dict[str, object]:
        params = InitializeParams(
            client_info=ClientInfo(name=CLIENT_NAME, title="work-ally", version=self._client_version),
            capabilities=InitializeCapabilities(
                # turn/start.collaborationMode (Plan mode, the only way request_user_input reaches
                # us) is refused without it: "requires experimentalApi capability"
                # (docs/codex-app-server.md §2, §6).
                experimental_api=True,
                opt_out_notification_methods=OPT_OUT_NOTIFICATIONS,
            ),
        )
        return params.model_dump(by_alias=True, exclude_unset=True)

    async def _probe_version(self) -> None:
        try:
            self.version = await asyncio.to_thread(binary_version, self.binary)
        except (OSError, subprocess.SubprocessError) as error:
            self.version, self.version_mismatch = None, f"`{self.binary} --version` failed: {error}"
        else:
            self.version_mismatch = version_mismatch(self.version)
        if self.version_mismatch:
            log.warning("%s", self.version_mismatch)

    async def wait(self) -> int:
        """Wait until the child has exited and its pipes are closed; its exit code (negative: the
        signal that killed it)."""
        if self._process is None:
            raise RuntimeError("CodexProcess.start() has not run")
        return await self._process.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group at once (tests, and a child that stopped answering)."""
        if self._process is not None:
            signal_group(self._process.pid, signal.SIGKILL)

    async def stop(self, *, grace: float = 2.0) -> None:
        """Close stdin (a clean disconnect, docs/codex-app-server.md §1), wait up to `grace` s, then
        SIGKILL the group."""
        process = self._process
        if process is None:
            return
        if self._rpc is not None:
            self._rpc.close()
        if process.returncode is None and grace > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
        # Even after a clean exit the group may hold a command the child started: kill it all.
        signal_group(process.pid, signal.SIGKILL)
        try:
            # asyncio (3.11) also waits for the child's pipes to close: a process that left the
            # group (setsid) while holding one would keep us waiting forever.
            await asyncio.wait_for(process.wait(), 5.0)
        except TimeoutError:
            log.warning("codex[%d] is gone but something still holds its stdout/stderr", process.pid)
        if self._rpc is not None:
            await self._rpc.aclose()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._stderr_task, 1.0)

    @staticmethod
    async def _log_stderr(stream: asyncio.StreamReader, pid: int) -> None:
        # Tracing output for people; never parsed (docs/codex-app-server.md §1).
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line over the stream limit
                continue
            if not line:
                return
            stderr_log.info("codex[%d] %s", pid, line.decode(errors="replace").rstrip())
