"""A person's config mistakes get one clear line and exit code 2; secrets never show."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ally.config import ConfigError, load_config
from ally.redaction import RedactingFormatter, redact


def run_ally(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WORK_ALLY_")}
    full_env.update({"WORK_ALLY_HOME": str(home), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "ally", *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def write_config(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("toml", "must_mention"),
    [
        ('[feishu]\napp_idd = "cli_x"\n', ["unknown key 'feishu.app_idd'", "app_id"]),
        ("[temporal]\nport = 'seven'\n", ["temporal.port", "int"]),
        ('[codex]\nsandbox = "yolo"\n', ["codex.sandbox", "workspace-write"]),
        ("[feishu\napp_id = 1\n", ["not valid TOML"]),
        ("[nonsense]\nx = 1\n", ["unknown key 'nonsense'"]),
    ],
)
def test_a_bad_config_file_gives_one_line_and_exit_code_2(
    tmp_path: Path, toml: str, must_mention: list[str]
) -> None:
    write_config(tmp_path, toml)
    for command in (["config"], ["up"], ["status"], ["doctor"]):
        result = run_ally(tmp_path, *command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert lines[0].startswith("ally: config error: ")
        for text in must_mention:
            assert text in lines[0]


def test_a_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    result = run_ally(tmp_path, "config", env={"WORK_ALLY_TEMPORAL__UI_PORT": "99999"})
    assert result.returncode == 2
    assert "temporal.ui_port" in result.stderr
    result = run_ally(tmp_path, "config", env={"WORK_ALLY_FEISHU": "x"})
    assert result.returncode == 2
    assert "WORK_ALLY_FEISHU" in result.stderr


def test_environment_overrides_the_file_and_secrets_stay_masked(tmp_path: Path) -> None:
    write_config(tmp_path, '[feishu]\napp_id = "cli_from_file"\napp_secret = "file-secret-123"\n')
    result = run_ally(tmp_path, "config", "--json", env={"WORK_ALLY_FEISHU__APP_SECRET": "env-secret-456"})
    assert result.returncode == 0, result.stderr
    assert "cli_from_file" in result.stdout
    assert "<set>" in result.stdout
    assert "secret-123" not in result.stdout + result.stderr
    assert "secret-456" not in result.stdout + result.stderr


def test_a_valid_file_loads_with_defaults_filled_in(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[temporal]\nport = 17000\n[codex]\nsandbox = "read-only"\n', encoding="utf-8")
    config = load_config(path, environ={})
    assert config.temporal.port == 17000
    assert config.temporal.ui_port == 8233
    assert config.codex.sandbox == "read-only"
    assert not config.feishu.configured


def test_a_missing_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml", environ={})
    assert config.codex.approval_policy == "on-request"


def test_config_errors_never_echo_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[feishu]\napp_secret = ["s3cr3t-value"]\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert "feishu.app_secret" in str(caught.value)
    assert "s3cr3t-value" not in str(caught.value)


def test_a_bad_environment_value_is_blamed_on_the_variable_not_the_file(tmp_path: Path) -> None:
    write_config(tmp_path, "[temporal]\nport = 7233\n")
    result = run_ally(tmp_path, "config", env={"WORK_ALLY_TEMPORAL__PORT": "seven"})
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ally: config error: WORK_ALLY_TEMPORAL__PORT: temporal.port")
    assert "config.toml" not in line
    # The same mistake in the file names the file.
    write_config(tmp_path, "[temporal]\nport = 'seven'\n")
    result = run_ally(tmp_path, "config")
    assert str(tmp_path / "config.toml") in result.stderr
    assert "WORK_ALLY_" not in result.stderr


def test_list_keys_are_settable_from_the_environment_as_json_or_comma_separated(tmp_path: Path) -> None:
    result = run_ally(
        tmp_path,
        "config",
        "--json",
        env={"WORK_ALLY_ACCESS__CHATS": "oc_a, oc_b", "WORK_ALLY_ACCESS__APPROVERS": '["ou_x"]'},
    )
    assert result.returncode == 0, result.stderr
    access = json.loads(result.stdout)["access"]
    assert access["chats"] == ["oc_a", "oc_b"]
    assert access["approvers"] == ["ou_x"]
    rules = '[{"action": "deny", "command_prefix": "git push"}]'
    config = load_config(tmp_path / "absent.toml", environ={"WORK_ALLY_POLICY__RULES": rules})
    assert [rule.command_prefix for rule in config.policy.rules] == ["git push"]

    result = run_ally(tmp_path, "config", env={"WORK_ALLY_ACCESS__CHATS": "[oc_a"})
    assert result.returncode == 2
    assert "WORK_ALLY_ACCESS__CHATS" in result.stderr and "comma-separated" in result.stderr


def test_credentials_in_any_log_line_are_masked_traceback_included() -> None:
    url = "wss://msg-frontier.feishu.cn/ws/v2?fpid=1&access_key=ak123secret&service_id=7&ticket=t-987-zz"
    record = logging.LogRecord("Lark", logging.INFO, __file__, 1, "connected to %s", (url,), None)
    try:
        raise RuntimeError(f"GET {url} failed; body {{'app_secret': 'S3CRET', 'verification_token': 'vt1'}}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = RedactingFormatter("%(name)s: %(message)s").format(record)
    for secret in ("ak123secret", "t-987-zz", "S3CRET", "vt1"):
        assert secret not in line
    assert "access_key=<redacted>&service_id=7&ticket=<redacted>" in line
    assert "fpid=1" in line  # what is not a credential stays readable
    assert redact("Authorization: Bearer t-abc.def") == "Authorization: Bearer <redacted>"
