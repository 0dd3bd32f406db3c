"""The approval policy's configuration and its answers: the `[policy]` section of config.toml as it
travels with every turn, what "approve for session" remembered, the question the turn asks the
policy (the `evaluate_policy` local activity) and its verdict. The judging itself is ally/policy.py.
"""

from __future__ import annotations

import shlex
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ally.contracts.agent import AgentRequest

Mode = Literal["ask", "read_only", "trusted"]
MODES_BY_AUTONOMY: tuple[Mode, ...] = ("ask", "read_only", "trusted")  # each decides more on its own


def capped(mode: Mode, ceiling: Mode) -> Mode:
    """`mode`, lowered to `ceiling` when it would decide more on its own."""
    return min(mode, ceiling, key=MODES_BY_AUTONOMY.index)


RuleKind = Literal["command", "file_change", "permissions", "elicitation"]
# Rules cannot name user_input (only a person can write the answers) or other (unknown methods).
PATH_KINDS = {"command", "file_change", "permissions"}  # kinds whose requests carry paths


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["allow", "deny"]
    command_prefix: str | None = Field(None, description='Leading words of a command, e.g. "git status".')
    paths: Literal["inside_workspace", "outside_workspace"] | None = None
    kinds: list[RuleKind] = Field(["command"], min_length=1)

    @field_validator("command_prefix")
    @classmethod
    def _plain_words(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            words = shlex.split(value)
        except ValueError as e:
            raise ValueError(f"cannot be split into words ({e})") from None
        if not words or any(c in word for word in words for c in ";&|()<>`$\n"):
            raise ValueError("must be plain command words without shell operators, e.g. 'git status'")
        return value

    @field_validator("kinds")
    @classmethod
    def _matchers_fit_kinds(cls, kinds: list[RuleKind], info: ValidationInfo) -> list[RuleKind]:
        if info.data.get("command_prefix") and kinds != ["command"]:
            raise ValueError('a rule with command_prefix applies to kind "command" only')
        if info.data.get("paths") and not set(kinds) <= PATH_KINDS:
            raise ValueError(f"a rule with paths applies to {', '.join(sorted(PATH_KINDS))} only")
        return kinds

    @property
    def prefix_words(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.command_prefix)) if self.command_prefix else ()

    def describe(self) -> str:
        parts = [f'command_prefix "{self.command_prefix}"'] if self.command_prefix else []
        parts += [f"paths {self.paths}"] if self.paths else []
        parts += [f"kinds {', '.join(self.kinds)}"] if self.kinds != ["command"] else []
        return ", ".join(parts) or "any command"


class PolicyConfig(BaseModel):
    """The `[policy]` section of config.toml."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    mode: Mode = Field("ask", description="Default autonomy of a chat: ask, read_only or trusted.")
    ceiling: Mode = Field(
        "trusted", description="The most autonomy a chat may choose with /auto (ask < read_only < trusted)."
    )
    rules: list[Rule] = []
    reminder_after_minutes: float = Field(10, gt=0, description="Remind the chat of an open approval.")
    decline_after_minutes: float = Field(30, gt=0, description="Decline an approval nobody answered.")

    @field_validator("decline_after_minutes")
    @classmethod
    def _after_reminder(cls, value: float, info: ValidationInfo) -> float:
        reminder = info.data.get("reminder_after_minutes")
        if reminder is not None and value <= reminder:
            raise ValueError(f"must be later than reminder_after_minutes ({reminder:g})")
        return value


class Verdict(BaseModel):
    decision: Literal["accept", "decline"] | None  # None: ask a person
    rule: str  # what decided, for /status; with None, why a person is asked ("network access (curl)")


class CommandGrant(BaseModel):
    model_config = ConfigDict(frozen=True)

    command: str
    cwd: str | None


class SessionGrants(BaseModel):
    """What people approved "for this session" in one thread; the workflow keeps it."""

    model_config = ConfigDict(frozen=True)

    commands: tuple[CommandGrant, ...] = ()
    paths: tuple[str, ...] = ()  # lexically normalized file paths


class PolicyQuestion(BaseModel):
    """What the turn workflow asks the policy about one request (the `evaluate_policy` local activity)."""

    request: AgentRequest
    policy: PolicyConfig
    mode: Mode
    workspace: str
    grants: SessionGrants = SessionGrants()
    group: bool = False  # a group chat: automatic approval never covers places outside the workspace
