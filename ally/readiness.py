"""What is missing before work-ally can do its whole job, each with the exact next step.

Shared by `ally up` (printed after start) and `ally doctor` (checked in full).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import BaseModel

from ally.codex.binary import codex_command
from ally.config import AllyConfig, config_path


class MissingPiece(BaseModel):
    what: str
    next_step: str


def codex_login_source(codex_home: Path) -> str | None:
    """How Codex will authenticate to a model, or None when it cannot.

    Codex reads `auth.json` (written by `codex login`), an API key from the environment, or a
    custom `model_provider` in its config.toml (which brings its own auth, or none, as in the demo).
    """
    if (codex_home / "auth.json").exists():
        return f"{codex_home / 'auth.json'}"
    for variable in ("OPENAI_API_KEY", "CODEX_API_KEY"):
        if os.environ.get(variable):
            return f"${variable}"
    try:
        codex_config = tomllib.loads((codex_home / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    provider = codex_config.get("model_provider")
    if isinstance(provider, str) and provider != "openai":
        return f"model_provider '{provider}' in {codex_home / 'config.toml'}"
    return None


def missing_pieces(config: AllyConfig, *, demo: bool = False) -> list[MissingPiece]:
    missing: list[MissingPiece] = []
    if not config.feishu.configured:
        missing.append(
            MissingPiece(
                what="Feishu credentials (no chat can reach the assistant yet)",
                next_step="run `ally setup` (it creates the Feishu app, or checks yours), or set [feishu] "
                f"app_id and app_secret in {config_path()}",
            )
        )
    home = config.codex.resolved_home()
    if not demo and codex_login_source(home) is None:
        missing.append(
            MissingPiece(
                what=f"a Codex login (CODEX_HOME={home})",
                next_step=f"run `CODEX_HOME={home} {codex_command(config.codex.binary)} login`, set "
                "OPENAI_API_KEY, or try the whole loop offline with `ally up --demo`",
            )
        )
    return missing
