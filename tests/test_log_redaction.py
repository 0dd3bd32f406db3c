"""What the logs say when things go wrong but are handled: one line per handled retry, no
traceback, and no credential anywhere (tests/test_config.py and test_up.py check the masking)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from temporalio.client import Client

from ally.model_server import Say
from tests.feishu_stack import card_markdown, feishu_stack

pytestmark = [pytest.mark.feishu, pytest.mark.codex, pytest.mark.faults]


async def test_a_rate_limited_or_failing_send_logs_one_line_per_retry_and_no_traceback(
    client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with feishu_stack(client, tmp_path, "cli_logs_quiet", sdk_timeout_s=1.5) as fs:
        fs.stack.model.push(Say(text="Made it."))
        fs.fake.fail_next("/reply", status=429, code=99991400, times=3, reset_seconds=1)
        fs.fake.fail_next("/reply", status=503, code=1, msg="service unavailable")
        fs.fake.fail_next("/reply", status=502, body="<html>bad gateway</html>")
        event = await fs.say("oc_dm_quiet", "hello?")
        (reply,) = await fs.wait_for_replies(event["event"]["message"]["message_id"], within=90)
        assert card_markdown(reply) == "Made it."

    retries = [
        r for r in caplog.records if "retrying" in r.getMessage() and "deliver_answer" in r.getMessage()
    ]
    assert len(retries) == 5, [r.getMessage() for r in retries]
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in retries)
    warnings_with_traces = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert warnings_with_traces == [], [r.getMessage() for r in warnings_with_traces]
