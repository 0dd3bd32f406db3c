"""A Feishu chats' worker as a process of its own, so a test can kill it with SIGKILL: exactly
what the gateway runs for its chats (workers/chat.py with a `FeishuChannel`), without the
transport. `python -m tests.feishu_chat_worker` reads where to connect from the environment:
ALLY_TEST_TEMPORAL, ALLY_TEST_QUEUE, ALLY_TEST_FEISHU_APP_ID / _SECRET / _DOMAIN."""

from __future__ import annotations

import asyncio
import logging
import os

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from ally.channels.feishu.channel import FeishuChannel
from ally.channels.feishu.client import FeishuApi
from ally.config import FeishuConfig
from workers.chat import chat_worker


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    client = await Client.connect(os.environ["ALLY_TEST_TEMPORAL"], data_converter=pydantic_data_converter)
    config = FeishuConfig.model_validate(
        {
            "app_id": os.environ["ALLY_TEST_FEISHU_APP_ID"],
            "app_secret": os.environ["ALLY_TEST_FEISHU_SECRET"],
            "domain": os.environ["ALLY_TEST_FEISHU_DOMAIN"],
        }
    )
    channel = FeishuChannel(FeishuApi.from_config(config, timeout_s=5.0), pace_s=0.0)
    await chat_worker(client, channel, os.environ["ALLY_TEST_QUEUE"]).run()


if __name__ == "__main__":
    asyncio.run(main())
