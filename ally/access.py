"""Who may talk to the assistant, and who may decide what it asks: checked before anything runs.

Pure, so the gateway checks a message before handing it over and the configuration stays the one
place that says who belongs. Empty lists mean "no restriction" at that level; `ally doctor` warns
when everything is open.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ally.contracts import InboundMessage


class AccessConfig(BaseModel):
    """The `[access]` section of config.toml. Ids are Feishu open_ids (ou_…) and chat ids (oc_…)."""

    model_config = ConfigDict(extra="forbid")

    chats: list[str] = Field([], description="Chats where the assistant answers; empty = any chat.")
    users: list[str] = Field([], description="People who may talk to it at all; empty = anyone.")
    prompters: list[str] = Field(
        [], description="In groups, who may ask it things; empty = every allowed user."
    )
    approvers: list[str] = Field([], description="Who may decide any request, besides the person who asked.")

    @property
    def open_to_everyone(self) -> bool:
        return not (self.chats or self.users)


class AccessVerdict(BaseModel):
    allowed: bool
    refusal: Literal["chat", "person"] | None = None
    reason: str = ""


def may_prompt(access: AccessConfig, message: InboundMessage) -> AccessVerdict:
    """Whether this message may start a turn. Approvers may always answer (text shortcuts are
    checked by the turn's own validator), so this is only about asking."""
    return may_ask(access, message.chat.chat_id, message.chat.chat_type, message.sender.id)


def may_ask(access: AccessConfig, chat_id: str, chat_type: str, person: str) -> AccessVerdict:
    """`may_prompt` from the ids alone, before a message is read."""
    if access.chats and chat_id not in access.chats:
        return AccessVerdict(allowed=False, refusal="chat", reason="chat not enabled")
    if access.users and person not in access.users and person not in access.approvers:
        return AccessVerdict(allowed=False, refusal="person", reason="not an allowed user")
    in_group = chat_type == "group"
    if in_group and access.prompters and person not in access.prompters:
        return AccessVerdict(allowed=False, refusal="person", reason="may not prompt in groups")
    return AccessVerdict(allowed=True)
