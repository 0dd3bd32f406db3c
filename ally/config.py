"""work-ally configuration: one TOML file in the data dir, environment variables on top.

The data dir is `~/.work-ally/` unless `WORK_ALLY_HOME` moves it; the file is `config.toml` there.
Any value can be overridden by `WORK_ALLY_<SECTION>__<KEY>` (e.g. `WORK_ALLY_FEISHU__APP_SECRET`);
a list-valued key takes a JSON list or comma-separated values (`WORK_ALLY_ACCESS__CHATS=oc_a,oc_b`).
Every mistake (unknown key, bad value, broken TOML) becomes one `ConfigError` line naming where it
came from (the file, or the environment variable), the key and the expected form; the CLI prints
it and exits 2.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ally.access import AccessConfig
from ally.contracts import (
    ApprovalPolicy,
    LongWork,
    McpServer,
    Mode,
    PolicyConfig,
    ReasoningEffort,
    Rule,
    SandboxMode,
)
from ally.names import DEFAULT_ASSISTANT
from ally.paths import HOME_ENV as HOME_ENV
from ally.paths import config_path as config_path
from ally.paths import data_dir as data_dir

ENV_PREFIX = "WORK_ALLY_"


class ConfigError(Exception):
    """A configuration mistake, explained in one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class FeishuConfig(_Section):
    app_id: str = Field("", description="The Feishu app's App ID (cli_…).")
    app_secret: SecretStr = Field(SecretStr(""), description="The Feishu app's App Secret.")
    transport: Literal["websocket", "webhook"] = Field(
        "websocket", description="Long connection (no public URL needed) or an HTTP webhook."
    )
    encrypt_key: SecretStr = Field(SecretStr(""), description="Webhook mode: the event Encrypt Key.")
    verification_token: SecretStr = Field(SecretStr(""), description="Webhook mode: Verification Token.")
    webhook_port: int = Field(8787, ge=1, le=65535, description="Webhook mode: local HTTP port.")
    domain: str = Field("https://open.feishu.cn", description="Open API base URL (Lark: open.larksuite.com).")
    receipt_emoji: str = Field(
        "Get",
        description="Put on a message the moment the gateway has it, before any work starts (Feishu emoji "
        "type; empty = none). The turn's own OnIt / DONE follow.",
    )

    @property
    def configured(self) -> bool:
        return bool(self.app_id and self.app_secret.get_secret_value())


class CodexConfig(_Section):
    binary: Path | None = Field(None, description="A codex native binary to use instead of the pinned one.")
    home: Path | None = Field(None, description="CODEX_HOME for the runtime (default: ~/.codex).")
    workspace: Path | None = Field(None, description="Working directory of new threads (default: data dir).")
    model: str | None = Field(None, description="Model for new threads (default: Codex's own config).")
    reasoning_effort: ReasoningEffort | None = Field(
        None, description="Reasoning effort of every turn (default: the model's own)."
    )
    persona: str = Field(
        "", description="Who the assistant is and how it speaks: developer instructions of new threads."
    )
    sandbox: Literal["read-only", "workspace-write", "danger-full-access"] = "workspace-write"
    approval_policy: Literal["untrusted", "on-request", "never"] = "on-request"

    def resolved_home(self) -> Path:
        return (self.home or Path(os.environ.get("CODEX_HOME", Path.home() / ".codex"))).expanduser()


class TemporalConfig(_Section):
    address: str | None = Field(
        None,
        description="host:port of an existing Temporal cluster; unset = the embedded dev server "
        "(Temporal's own TEMPORAL_ADDRESS / profiles also select a cluster).",
    )
    namespace: str = "default"
    port: int = Field(7233, ge=1, le=65535, description="Embedded dev server gRPC port.")
    ui_port: int = Field(8233, ge=1, le=65535, description="Embedded dev server Web UI port.")


class RuntimeConfig(_Section):
    host: str = Field(
        default_factory=socket.gethostname,
        description="Name of this runtime host; its task queue is codex-runtime@<host>.",
    )


class SupervisorConfig(_Section):
    restart_backoff_seconds: list[float] = Field(
        [1.0, 2.0, 5.0, 10.0, 30.0],
        min_length=1,
        description="`ally up` waits this long before restarting a part that died: 1st, 2nd… restart.",
    )
    healthy_after_seconds: float = Field(
        60.0, gt=0, description="A part that ran this long starts the backoff over when it dies."
    )


class MetricsConfig(_Section):
    enabled: bool = Field(False, description="Serve Prometheus metrics from the parts given a port below.")
    host: str = Field(
        "127.0.0.1", description="IP address the metrics endpoints listen on (0.0.0.0 = every interface)."
    )
    runtime_worker_port: int = Field(
        0, ge=0, le=65535, description="The runtime worker's /metrics port (0 = none)."
    )
    gateway_port: int = Field(0, ge=0, le=65535, description="The Feishu gateway's /metrics port (0 = none).")
    poll_seconds: float = Field(
        15.0, gt=0, description="How often the gauges (approvals waiting, Codex restarts) are refreshed."
    )

    @field_validator("host")
    @classmethod
    def _an_ip_address(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("not an IP address: write one such as 127.0.0.1 or 0.0.0.0") from None
        return host


class AlertsConfig(_Section):
    enabled: bool = Field(True, description="Tell the owner, in their private chat, when something is wrong.")
    owner: str = Field(
        "", description="The owner's Feishu open_id (ou_…); empty = the first of [access] approvers."
    )
    runtime_down_after_seconds: float = Field(
        180.0, gt=0, description="Alert when no Codex runtime host has answered for this long."
    )
    probe_every_seconds: float = Field(30.0, gt=0, description="How often a runtime host is asked.")
    probe_timeout_seconds: float = Field(10.0, gt=0, description="How long one ask waits for an answer.")
    failed_turns: int = Field(3, ge=1, description="Alert when this many turns failed…")
    failed_turns_window_seconds: float = Field(600.0, gt=0, description="…within this long.")
    quiet_seconds: float = Field(
        600.0,
        gt=0,
        description="A failing-turns or crashing-part incident resolves after this long without another.",
    )


ASSISTANT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class AssistantPolicy(_Section):
    """An assistant's part of the approval policy: it adds rules to `[policy]` (a deny rule at any
    level beats every allow) and may lower the autonomy its chats start with and may choose."""

    mode: Mode | None = Field(None, description="Autonomy its chats start with (default: [policy] mode).")
    ceiling: Mode | None = Field(
        None, description="The most autonomy its chats may choose with /auto (default: [policy] ceiling)."
    )
    rules: list[Rule] = Field([], description="Added to [policy] rules for this assistant's chats.")


class AssistantAccess(_Section):
    users: list[str] = Field(
        [], description="Who may talk to this assistant, within [access]; empty = everyone [access] lets in."
    )
    approvers: list[str] = Field([], description="Who may decide its requests, besides [access] approvers.")


class AssistantConfig(_Section):
    """One `[assistants.<id>]` table. The id (the table's key) never changes; `name` may. Anything
    unset comes from the global sections ([codex], [policy], [access])."""

    name: str = Field("", description="Its name in chats and commands (default: its id).")
    workspace: Path | None = Field(
        None, description="Its working directory on its host (default: <data dir>/workspaces/<id>)."
    )
    host: str | None = Field(
        None, description="The runtime host it lives on ([runtime] host there); unset = any host."
    )
    model: str | None = None
    reasoning_effort: ReasoningEffort | None = None
    sandbox: SandboxMode | None = None
    approval_policy: ApprovalPolicy | None = None
    mcp_servers: dict[str, McpServer] = Field({}, description="MCP servers its threads (only) may use.")
    policy: AssistantPolicy = AssistantPolicy()
    access: AssistantAccess = AssistantAccess()
    chats: list[str] = Field(
        [], description="Groups bound to it here (a group may also be bound with /bind)."
    )
    autosave: bool = Field(False, description="Commit what a turn changed in a git workspace (never pushes).")
    write_persona: bool | None = Field(
        None,
        description="Write the persona template as AGENTS.md into a workspace that has none (default: yes, "
        "except for the default assistant in a workspace of your own, [codex] workspace).",
    )

    @field_validator("name")
    @classmethod
    def _a_usable_name(cls, name: str) -> str:
        name = name.strip()
        if name and (len(name) > 40 or any(c.isspace() for c in name) or name.startswith("/")):
            raise ValueError("a name is one word of at most 40 characters, not starting with /")
        return name

    @field_validator("mcp_servers")
    @classmethod
    def _server_names(cls, servers: dict[str, McpServer]) -> dict[str, McpServer]:
        for name in servers:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
                raise ValueError(f"MCP server name {name!r}: letters, digits, - and _ only")
        return servers


class ChatOverride(_Section):
    """What config.toml says about one chat: it may only tighten what its assistant allows."""

    mode: Mode | None = Field(None, description="Autonomy this chat starts with (capped by its assistant).")
    ceiling: Mode | None = Field(None, description="The most autonomy /auto may choose here.")
    rules: list[Rule] = Field([], description="Deny rules for this chat only (allow rules belong higher up).")

    @field_validator("rules")
    @classmethod
    def _deny_only(cls, rules: list[Rule]) -> list[Rule]:
        if any(rule.action != "deny" for rule in rules):
            raise ValueError("a chat may only tighten: its rules must be deny rules")
        return rules


class ChatsConfig(_Section):
    default_assistant: str = Field(
        DEFAULT_ASSISTANT, description="The assistant a private chat talks to until /assistant switches it."
    )
    overrides: dict[str, ChatOverride] = Field({}, description="Per chat id (oc_…): tighter settings.")
    stale_after_minutes: float = Field(
        10,
        gt=0,
        description="A message sent longer ago than this (Feishu's time; the bridge was down) is not "
        "run before the chat says so: one card per batch offers to run or drop it.",
    )


class LongWorkConfig(_Section):
    usage_limit_unknown_reset_minutes: float = Field(
        15,
        gt=0,
        description="A turn that hit the account's usage limit waits for its reset; this long when "
        "Codex did not say when that is.",
    )
    usage_limit_after_reset_seconds: float = Field(
        5, ge=0, description="Run a waiting turn this long after the limit's reset."
    )
    usage_limit_max_waits: int = Field(
        5, ge=1, description="A turn limited this many times in a row fails instead of waiting again."
    )
    goal_max_turns: int = Field(
        20, ge=1, description="A goal (/goal) stops after Codex ran this many turns for it, and says so."
    )
    goal_max_hours: float = Field(
        4, gt=0, description="A goal (/goal) stops after running this long, and says so."
    )

    def contract(self) -> LongWork:
        return LongWork(
            unknown_reset_s=self.usage_limit_unknown_reset_minutes * 60,
            after_reset_s=self.usage_limit_after_reset_seconds,
            max_waits=self.usage_limit_max_waits,
            goal_max_turns=self.goal_max_turns,
            goal_max_s=self.goal_max_hours * 3600,
        )


class AllyConfig(_Section):
    feishu: FeishuConfig = FeishuConfig()
    codex: CodexConfig = CodexConfig()
    temporal: TemporalConfig = TemporalConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    policy: PolicyConfig = PolicyConfig()
    access: AccessConfig = AccessConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    assistants: dict[str, AssistantConfig] = Field(
        {}, description="Assistants by id; see docs/assistants.md."
    )
    chats: ChatsConfig = ChatsConfig()
    long_work: LongWorkConfig = LongWorkConfig()

    @field_validator("assistants")
    @classmethod
    def _ids_and_names(cls, assistants: dict[str, AssistantConfig]) -> dict[str, AssistantConfig]:
        names: dict[str, str] = {}
        for key, assistant in assistants.items():
            if not ASSISTANT_ID.fullmatch(key):
                raise ValueError(f"assistant id {key!r}: lowercase letters, digits, - and _, at most 32")
            shown = (assistant.name or key).casefold()
            if shown in names:
                raise ValueError(f"assistants {names[shown]!r} and {key!r} have the same name {shown!r}")
            names[shown] = key
        return assistants

    @model_validator(mode="after")
    def _default_exists_and_groups_bound_once(self) -> AllyConfig:
        wanted = self.chats.default_assistant
        if wanted != DEFAULT_ASSISTANT and wanted not in self.assistants:
            raise ValueError(f"chats.default_assistant {wanted!r} is not an assistant id")
        bound: dict[str, str] = {}
        for key, assistant in self.assistants.items():
            for chat in assistant.chats:
                if chat in bound:
                    raise ValueError(f"chat {chat} is bound to two assistants: {bound[chat]!r} and {key!r}")
                bound[chat] = key
        return self


def owner_of(config: AllyConfig) -> str | None:
    """Who gets the alerts: `[alerts] owner`, else the first of `[access] approvers`. Here rather than
    in ally/alerts.py, so that `ally up` knows it without loading the Temporal client."""
    if not config.alerts.enabled:
        return None
    return config.alerts.owner or next(iter(config.access.approvers), None)


def load_config(path: Path | None = None, environ: dict[str, str] | None = None) -> AllyConfig:
    """Read the TOML file (if present), apply `WORK_ALLY_*` overrides, validate."""
    path = path or config_path()
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    overridden = _apply_env(raw, env)
    try:
        return AllyConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, path, overridden)) from None


def _apply_env(raw: dict[str, Any], env: os._Environ[str] | dict[str, str]) -> dict[tuple[str, ...], str]:
    """Put the overrides into `raw`; returns which (section, key) each variable set, so a mistake
    in one is blamed on the variable, not on the file."""
    overridden: dict[tuple[str, ...], str] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == HOME_ENV:
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not sep or not key:
            raise ConfigError(f"{name}: expected WORK_ALLY_<SECTION>__<KEY>, e.g. WORK_ALLY_FEISHU__APP_ID")
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{name}: [{section}] is not a section")
        target[key] = _env_value(name, value, (section, key))
        overridden[(section, key)] = name
    return overridden


def _env_value(name: str, value: str, loc: tuple[str, str]) -> Any:
    """A variable's text as the key's type wants it: a list key takes JSON or comma-separated
    values; anything else stays text, which pydantic converts (numbers, booleans)."""
    model = _section_model(loc[:1])
    field = model.model_fields.get(loc[1]) if model else None
    if field is None or get_origin(field.annotation) is not list:
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except ValueError as error:
            raise ConfigError(
                f'{name}: not a JSON list ({error}); write it as JSON, e.g. \'["a", "b"]\', '
                "or comma-separated: a,b"
            ) from None
    return [part.strip() for part in text.split(",") if part.strip()]


def _explain(error: ValidationError, path: Path, overridden: dict[tuple[str, ...], str]) -> str:
    first = error.errors()[0]
    loc = tuple(str(part) for part in first["loc"])
    where = ".".join(loc)
    source = _source(loc, path, overridden)
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{where}' (known: {_known_keys(first['loc'][:-1])})"
    if first["type"] == "value_error" and len(loc) <= 1:  # a check across keys: its own words say it all
        return f"{source}: {first['msg'].removeprefix('Value error, ')}"
    expected = _expected_form(first["loc"])
    got = first.get("input")
    shown = "" if isinstance(got, dict) or _is_secret(first["loc"]) else f", got {got!r}"
    message = f"{where}: {first['msg'].lower()}{shown}" + (f" (expected {expected})" if expected else "")
    return f"{source}: {message}"


def _source(loc: tuple[str, ...], path: Path, overridden: dict[tuple[str, ...], str]) -> str:
    """The environment variable that set the failing key (or a key under it), else the file."""
    if loc[:2] in overridden:
        return overridden[loc[:2]]
    under = [name for key, name in overridden.items() if key[: len(loc)] == loc]
    return under[0] if len(loc) == 1 and under else str(path)


def _section_model(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = AllyConfig
    keyed = False  # the part after a table of tables ([assistants.<id>]) is a key, not a field
    for part in loc:
        if keyed:
            keyed = False
            continue
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
            keyed = True
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return None if keyed else model


def _known_keys(loc: tuple[int | str, ...]) -> str:
    model = _section_model(loc)
    return ", ".join(model.model_fields) if model else "?"


def _is_secret(loc: tuple[int | str, ...]) -> bool:
    model = _section_model(loc[:-1])
    field = model.model_fields.get(str(loc[-1])) if model else None
    return field is not None and field.annotation is SecretStr


def _expected_form(loc: tuple[int | str, ...]) -> str:
    model = _section_model(loc[:-1])
    field = model.model_fields.get(str(loc[-1])) if model else None
    if field is None:
        return ""
    text = repr(field.annotation).replace("typing.", "").replace("pydantic.types.", "")
    return text.replace("<class '", "").replace("'>", "")
