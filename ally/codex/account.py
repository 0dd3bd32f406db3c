"""Is Codex logged in? Asked of Codex itself (`account/read`), not guessed from files.

`account/read` answers the account in use (an API key, a ChatGPT login, a cloud provider), or
none, and whether the configured model provider needs an OpenAI login at all: a custom provider
(the demo's scripted model, a local server) needs none (docs/codex-app-server.md).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from ally.codex.process import CodexProcess
from ally.codex.protocol import ApiKeyAccount, ChatgptAccount, GetAccountResponse


class CodexLogin(BaseModel):
    logged_in: bool
    detail: str


async def read_login(binary: Path, codex_home: Path, *, timeout_s: float = 30.0) -> CodexLogin:
    """Start `codex app-server` with this CODEX_HOME, ask `account/read`, stop it."""
    process = CodexProcess(binary, codex_home)
    await process.start(timeout_s=timeout_s)
    try:
        result = await process.rpc.request("account/read", {"refreshToken": False}, timeout_s=timeout_s)
    finally:
        await process.stop(grace=1.0)
    return describe_login(GetAccountResponse.model_validate(result))


def describe_login(answer: GetAccountResponse) -> CodexLogin:
    """What `account/read` answered, in words."""
    account = answer.account.root if answer.account is not None else None
    if isinstance(account, ChatgptAccount):
        who = f" {account.email}" if account.email else ""
        return CodexLogin(logged_in=True, detail=f"ChatGPT account{who} ({account.plan_type.value})")
    if isinstance(account, ApiKeyAccount):
        return CodexLogin(logged_in=True, detail="an OpenAI API key")
    if account is not None:
        return CodexLogin(logged_in=True, detail=f"a {account.type.value} account")
    if not answer.requires_openai_auth:
        return CodexLogin(logged_in=True, detail="a model provider that needs no OpenAI login")
    return CodexLogin(logged_in=False, detail="not logged in")
