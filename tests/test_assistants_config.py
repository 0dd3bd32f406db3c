"""Assistants' settings, resolved global -> assistant -> chat: what each level may change, where each
value comes from, and what a chat can never do (loosen what its assistant allows)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ally import names
from ally.assistants import all_assistants, chat_policy, find, resolve
from ally.config import AllyConfig, ChatOverride, ConfigError, load_config
from ally.contracts import MODES_BY_AUTONOMY, Mode, Rule, SessionGrants, capped
from ally.policy import evaluate
from tests.test_policy import WS, command


def config_of(toml: str) -> AllyConfig:
    return AllyConfig.model_validate(tomllib.loads(toml))


BASE = """
[codex]
model = "gpt-global"
sandbox = "workspace-write"
[policy]
mode = "read_only"
rules = [{action = "deny", command_prefix = "rm -rf"}]
[access]
approvers = ["ou_owner"]
[assistants.backend]
name = "Backend"
workspace = "/srv/backend"
host = "build-box"
model = "gpt-backend"
reasoning_effort = "high"
chats = ["oc_team"]
[assistants.backend.policy]
ceiling = "read_only"
rules = [{action = "allow", command_prefix = "make test"}]
[assistants.backend.access]
approvers = ["ou_lead"]
[assistants.admin]
sandbox = "read-only"
[assistants.admin.policy]
mode = "ask"
"""


@pytest.mark.parametrize(
    ("assistant", "key", "value", "source"),
    [
        ("default", "model", "gpt-global", "[codex]"),
        ("default", "sandbox", "workspace-write", "[codex]"),
        ("default", "mode", "read_only", "[policy]"),
        ("default", "ceiling", "trusted", "[policy]"),
        ("default", "host", "any runtime host", "built-in"),
        ("backend", "name", "Backend", "[assistants.backend]"),
        ("backend", "model", "gpt-backend", "[assistants.backend]"),
        ("backend", "reasoning_effort", "high", "[assistants.backend]"),
        ("backend", "workspace", "/srv/backend", "[assistants.backend]"),
        ("backend", "host", "build-box", "[assistants.backend]"),
        ("backend", "sandbox", "workspace-write", "[codex]"),
        ("backend", "ceiling", "read_only", "[assistants.backend]"),
        ("backend", "mode", "read_only", "[policy]"),
        ("backend", "rule 1", 'deny command_prefix "rm -rf"', "[policy]"),
        ("backend", "rule 2", 'allow command_prefix "make test"', "[assistants.backend]"),
        ("admin", "name", "admin", "its id"),
        ("admin", "sandbox", "read-only", "[assistants.admin]"),
        ("admin", "model", "gpt-global", "[codex]"),
        ("admin", "mode", "ask", "[assistants.admin]"),
    ],
)
def test_each_value_comes_from_the_nearest_level_that_sets_it(
    assistant: str, key: str, value: str, source: str
) -> None:
    resolved = resolve(config_of(BASE), assistant)
    assert resolved.sources[key].value == value
    assert resolved.sources[key].source == source


def test_an_assistant_adds_rules_and_approvers_to_the_global_ones() -> None:
    backend = resolve(config_of(BASE), "backend")
    assert [rule.action for rule in backend.policy.rules] == ["deny", "allow"]
    assert backend.approvers == ["ou_owner", "ou_lead"]
    assert backend.settings.cwd == "/srv/backend"
    assert backend.settings.model == "gpt-backend"
    assert backend.settings.reasoning_effort == "high"
    assert resolve(config_of(BASE), "default").settings.mcp_servers == {}


def test_an_assistants_mcp_servers_go_to_its_threads_only() -> None:
    config = config_of(
        '[assistants.ops.mcp_servers.tickets]\ncommand = "python3"\nargs = ["tickets.py"]\nenv = {A = "1"}\n'
    )
    servers = resolve(config, "ops").settings.mcp_servers
    assert servers["tickets"].command == "python3" and servers["tickets"].args == ["tickets.py"]
    assert resolve(config, "default").settings.mcp_servers == {}


def test_the_persona_is_the_assistants_own_but_never_put_into_a_project_of_the_persons() -> None:
    config = config_of(BASE)
    backend = resolve(config, "backend")
    assert backend.settings.agents_md is not None and "You are Backend" in backend.settings.agents_md
    own_workspace = config_of('[codex]\nworkspace = "/home/me/project"\n')
    assert resolve(own_workspace, "default").settings.agents_md is None  # a project checkout, left alone
    asked = config_of('[codex]\nworkspace = "/home/me/project"\n[assistants.default]\nwrite_persona = true\n')
    assert resolve(asked, "default").settings.agents_md is not None
    assert resolve(config_of(""), "default").settings.agents_md is not None  # the data dir's own workspace
    declined = config_of("[assistants.ops]\nwrite_persona = false\n")
    assert resolve(declined, "ops").settings.agents_md is None


def test_a_fresh_install_has_one_default_assistant_built_from_the_global_sections(tmp_path: Path) -> None:
    config = load_config(tmp_path / "missing.toml", environ={})
    assistants = all_assistants(config)
    assert [a.id for a in assistants] == [names.DEFAULT_ASSISTANT]
    assert assistants[0].name == "default"


def test_assistants_are_found_by_name_or_id_ignoring_case() -> None:
    config = config_of(BASE)
    assert (found := find(config, "backend")) is not None and found.id == "backend"
    assert (found := find(config, "BACKEND")) is not None and found.id == "backend"
    assert find(config, "frontend") is None


@pytest.mark.parametrize(
    ("toml", "mentions"),
    [
        ('[assistants."Bad Id"]\n', "assistant id 'Bad Id'"),
        ('[assistants.a]\nname = "x"\n[assistants.b]\nname = "X"\n', "the same name"),
        ('[assistants.a]\nchats = ["oc_1"]\n[assistants.b]\nchats = ["oc_1"]\n', "bound to two assistants"),
        ('[chats]\ndefault_assistant = "nobody"\n', "not an assistant id"),
        ('[assistants.a]\nname = "two words"\n', "one word"),
        ('[assistants.a]\nsandbox = "everything"\n', "sandbox"),
        ('[assistants.a.policy]\nceiling = "root"\n', "ceiling"),
        ('[assistants.a]\ncolour = "red"\n', "unknown key 'assistants.a.colour'"),
        (
            '[chats.overrides.oc_1]\nrules = [{action = "allow", command_prefix = "ls"}]\n',
            "a chat may only tighten",
        ),
    ],
)
def test_a_bad_assistant_config_is_one_clear_error(tmp_path: Path, toml: str, mentions: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert mentions in str(error.value)


def test_a_global_deny_beats_an_assistants_allow() -> None:
    config = config_of(
        """
[policy]
rules = [{action = "deny", command_prefix = "git push"}]
[assistants.backend]
workspace = "/home/me/project"
[assistants.backend.policy]
rules = [{action = "allow", command_prefix = "git push"}]
"""
    )
    backend = resolve(config, "backend")
    verdict = evaluate(
        command("git push origin main"),
        policy=backend.policy,
        mode="trusted",
        workspace=WS,
        grants=SessionGrants(),
    )
    assert verdict.decision == "decline"
    assert verdict.rule is not None and "deny rule #1" in verdict.rule


@pytest.mark.parametrize(
    ("ceiling", "chat_mode", "chat_ceiling", "mode", "effective_ceiling"),
    [
        ("trusted", None, None, "read_only", "trusted"),
        ("ask", None, None, "ask", "ask"),  # the assistant's mode is capped by its own ceiling
        ("trusted", "ask", None, "ask", "trusted"),  # a chat may start lower
        ("read_only", "trusted", None, "read_only", "read_only"),  # …but never higher
        ("trusted", None, "ask", "ask", "ask"),  # a chat may lower its ceiling
        ("ask", None, "trusted", "ask", "ask"),  # …but never raise it
    ],
)
def test_a_chat_may_tighten_but_never_loosen(
    ceiling: Mode, chat_mode: Mode | None, chat_ceiling: Mode | None, mode: Mode, effective_ceiling: Mode
) -> None:
    config = config_of(f'[policy]\nmode = "read_only"\n[assistants.a.policy]\nceiling = "{ceiling}"\n')
    policy = chat_policy(resolve(config, "a"), ChatOverride(mode=chat_mode, ceiling=chat_ceiling))
    assert (policy.mode, policy.ceiling) == (mode, effective_ceiling)


# --- properties ------------------------------------------------------------------------------------

modes = st.sampled_from(MODES_BY_AUTONOMY)
maybe_modes = st.none() | modes
# Allow rules that would each let `git push` run, at any level.
allows = st.lists(
    st.sampled_from(
        [
            {"action": "allow", "command_prefix": "git push"},
            {"action": "allow", "command_prefix": "git"},
            {"action": "allow", "paths": "inside_workspace"},
            {"action": "allow", "paths": "outside_workspace"},
        ]
    ),
    max_size=3,
)
deny = {"action": "deny", "command_prefix": "git push"}


@settings(max_examples=200, deadline=None)
@given(
    level=st.sampled_from(["global", "assistant", "chat"]),
    global_allows=allows,
    assistant_allows=allows,
    mode=modes,
    ceiling=maybe_modes,
    chat_mode=maybe_modes,
)
def test_a_deny_at_any_level_is_never_accepted(
    level: str,
    global_allows: list[dict[str, Any]],
    assistant_allows: list[dict[str, Any]],
    mode: Mode,
    ceiling: Mode | None,
    chat_mode: Mode | None,
) -> None:
    global_rules = [*global_allows, *([deny] if level == "global" else [])]
    assistant_rules = [*assistant_allows, *([deny] if level == "assistant" else [])]
    config = AllyConfig.model_validate(
        {
            "policy": {"mode": mode, "rules": global_rules},
            "assistants": {"a": {"workspace": WS, "policy": {"ceiling": ceiling, "rules": assistant_rules}}},
        }
    )
    chat_rules = [Rule.model_validate(deny)] if level == "chat" else []
    policy = chat_policy(resolve(config, "a"), ChatOverride(mode=chat_mode, rules=chat_rules))
    for text in ("git push", "git push origin main", "cd . && git push"):
        for asked_mode in MODES_BY_AUTONOMY:
            verdict = evaluate(
                command(text),
                policy=policy,
                mode=capped(asked_mode, policy.ceiling),
                workspace=WS,
                grants=SessionGrants(),
            )
            assert verdict.decision != "accept", (text, asked_mode, verdict)


@settings(max_examples=200, deadline=None)
@given(
    global_ceiling=modes, ceiling=maybe_modes, chat_ceiling=maybe_modes, chat_mode=maybe_modes, asked=modes
)
def test_a_chats_autonomy_never_exceeds_any_ceiling_above_it(
    global_ceiling: Mode, ceiling: Mode | None, chat_ceiling: Mode | None, chat_mode: Mode | None, asked: Mode
) -> None:
    config = AllyConfig.model_validate(
        {"policy": {"ceiling": global_ceiling}, "assistants": {"a": {"policy": {"ceiling": ceiling}}}}
    )
    policy = chat_policy(resolve(config, "a"), ChatOverride(mode=chat_mode, ceiling=chat_ceiling))
    rank = MODES_BY_AUTONOMY.index
    for limit in (global_ceiling, ceiling, chat_ceiling):
        if limit is not None:
            assert rank(policy.ceiling) <= rank(limit)
            assert rank(policy.mode) <= rank(limit)
            assert rank(capped(asked, policy.ceiling)) <= rank(limit)
