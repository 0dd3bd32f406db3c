"""An operator scrapes a part's Prometheus endpoint and sees what the product did.

Real dev server, real `codex app-server` with the scripted model, real workers, whose client is
made the way the workers make theirs (`connect(config, metrics_for=…)` with `[metrics]` enabled);
the endpoint is read over HTTP and its text parsed line by line, as Prometheus would.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from ally import metrics
from ally.channels.console import ConsoleEvent
from ally.chat_client import ChatClient
from ally.config import AllyConfig, ConfigError, MetricsConfig, TemporalConfig, load_config
from ally.contracts import Decision
from ally.model_server import RunCommand, Say
from ally.processes import free_local_port
from ally.status import collect_status
from ally.temporal_client import connect
from dev.fake_feishu import FakeFeishu, message_event
from tests.stack import PERSON, Stack, eventually, running_stack
from tests.test_turns import FlakyChannel
from tests.test_up import home, run_up_expecting_failure, start_up, wait_gone

__all__ = ["home"]  # the fixture that kills what a failed `ally up` test left behind

pytestmark = pytest.mark.codex

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\d+)?$"
)
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


DOCS = Path(__file__).resolve().parent.parent / "docs"
OURS = (
    metrics.TURNS_STARTED,
    metrics.TURNS_FINISHED,
    metrics.APPROVALS_WAITING,
    metrics.DELIVERY_RETRIES,
    metrics.CODEX_RESTARTS,
    metrics.CODEX_UP,
)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = {m["key"]: m["value"] for m in LABEL.finditer(match["labels"] or "")}
        samples.append(Sample(match["name"], labels, float(match["value"])))
    return samples


async def scrape(url: str) -> list[Sample]:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
            return str(response.read().decode())

    return parse(await asyncio.to_thread(get))


async def scraped_until(url: str, holds: Callable[[list[Sample]], bool], what: str) -> list[Sample]:
    """Scrape until `holds` (the gauges are refreshed now and then, visibility lags a little)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not holds(samples := await scrape(url)):
        assert asyncio.get_running_loop().time() < deadline, f"the endpoint never showed {what}"
        await asyncio.sleep(0.1)
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


@pytest.mark.faults
async def test_the_metrics_endpoint_counts_turns_approvals_delivery_retries_and_codex_restarts(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORK_ALLY_HOME", str(tmp_path / "ally-home"))
    port = free_local_port()
    config = AllyConfig(
        metrics=MetricsConfig(enabled=True, gateway_port=port, poll_seconds=0.2),
        temporal=TemporalConfig(address=client.service_client.config.target_host),
    )
    url = metrics.metrics_url(config, "gateway")
    assert url == f"http://127.0.0.1:{port}/metrics"
    # `ally status` says where to scrape.
    assert f"Metrics: gateway {url}" in (await collect_status(config)).lines()
    exporting = metrics.metrics_runtime(config, "gateway")
    assert exporting is not None
    metered = await connect(config, metrics_for="gateway")
    delivered: list[ConsoleEvent] = []
    flaky = FlakyChannel(delivered.append, failures=1)  # the first reply fails once
    queue: Callable[[Stack], str] = lambda stack: f"{stack.worker_queue}-flaky"  # noqa: E731

    def flaky_delivery(stack: Stack) -> list[Worker]:
        return [stack.chat_worker(flaky, queue(stack))]

    async with running_stack(metered, tmp_path, extra_workers=flaky_delivery) as stack:
        codex = metrics.CodexGauges(exporting.metric_meter, stack.runtime)
        approvals = metrics.ApprovalsGauge(exporting.metric_meter, metered)
        async with metrics.refreshing(config.metrics.poll_seconds, codex.refresh, approvals.refresh):
            before = await scraped_until(url, lambda now: total(now, metrics.CODEX_UP) == 1, "Codex up")
            # The SDK's own metrics share the endpoint: its workers started, its client's requests.
            names = {s.name for s in before}
            assert {"temporal_worker_start", "temporal_request"} <= names, sorted(names)

            stack.model.push(RunCommand(cmd="echo counted"), Say(text="ok"))
            chat = stack.chat().model_copy(update={"worker_queue": queue(stack)})
            message = await stack.send(chat, "count this")
            prompt = (await eventually(lambda: [e.prompt for e in delivered if e.prompt], what="a card"))[0]

            def waiting(count: int) -> Callable[[list[Sample]], bool]:
                return lambda now: total(now, metrics.APPROVALS_WAITING) == count

            await scraped_until(url, waiting(1), "one approval waiting")
            decision = Decision(key=prompt.request.key, decision="accept", operator=PERSON)
            assert (await ChatClient(metered).decide(prompt.turn_workflow_id, decision)).status == "decided"
            result = await stack.turn_handle(chat, message).result()
            assert result.status == "completed"
            await scraped_until(url, waiting(0), "no approval waiting")

            after = await scrape(url)
            turn = {"workflow_type": "TurnWorkflow"}
            assert (
                total(after, metrics.TURNS_STARTED, **turn)
                == total(before, metrics.TURNS_STARTED, **turn) + 1
            )
            assert total(after, metrics.TURNS_FINISHED, status="completed") == (
                total(before, metrics.TURNS_FINISHED, status="completed") + 1
            )
            assert flaky.attempts >= 2  # a reply failed once, then went through
            assert total(after, metrics.DELIVERY_RETRIES) == 1

            # The Codex child dies; the runtime restarts it and the endpoint says so.
            pid = stack.runtime.health().pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

            await scraped_until(
                url,
                lambda now: total(now, metrics.CODEX_RESTARTS) == 1 and total(now, metrics.CODEX_UP) == 1,
                "one Codex restart, and Codex up again",
            )

            # The dashboard and the docs page chart and explain exactly what the endpoint serves.
            ours = {s.name for s in await scrape(url) if s.name.startswith("work_ally_")}
            assert ours == set(OURS)
            for page in (DOCS / "grafana-dashboard.json", DOCS / "metrics.md"):
                assert set(re.findall(r"work_ally_[a-z_]+[a-z]", page.read_text())) == ours, page


def scrape_now(url: str) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return parse(response.read().decode())


@pytest.mark.feishu
def test_ally_up_serves_each_parts_metrics_and_a_feishu_message_moves_the_gateways_turn_counters(
    home: Path,
) -> None:
    app_id = "cli_metrics_e2e"
    ports = {"runtime-worker": free_local_port(), "gateway": free_local_port()}
    with FakeFeishu(app_id=app_id) as fake:
        fake.add_user("ou_alice", "Alice")
        up = start_up(
            home,
            "--demo",
            env={
                "WORK_ALLY_FEISHU__APP_ID": app_id,
                "WORK_ALLY_FEISHU__APP_SECRET": fake.app_secret,
                "WORK_ALLY_FEISHU__DOMAIN": fake.domain,
                "WORK_ALLY_METRICS__ENABLED": "true",
                "WORK_ALLY_METRICS__RUNTIME_WORKER_PORT": str(ports["runtime-worker"]),
                "WORK_ALLY_METRICS__GATEWAY_PORT": str(ports["gateway"]),
                "WORK_ALLY_METRICS__POLL_SECONDS": "0.5",
            },
        )
        runtime_url, gateway_url = (f"http://127.0.0.1:{port}/metrics" for port in ports.values())
        fake.wait_for(lambda: fake.long_connection.connection_count, timeout=30)

        # Each part serves its own endpoint: the runtime worker its Codex child and its queues' workers.
        def codex_up() -> list[Sample] | None:
            now = scrape_now(runtime_url)
            return now if total(now, metrics.CODEX_UP) == 1 else None

        runtime = fake.wait_for(codex_up, timeout=30)
        assert [s.value for s in runtime if s.name == metrics.CODEX_RESTARTS] == [0]
        started = {s.labels.get("task_queue") for s in runtime if s.name == "temporal_worker_start"}
        assert started == {"codex-runtime", "codex-runtime@test-host"}
        before = scrape_now(gateway_url)
        assert total(before, "temporal_worker_start", task_queue="feishu-chats") == 1

        event = message_event("oc_dm_alice", "count me", sender_open_id="ou_alice", app_id=app_id)
        assert fake.push_event(event, timeout=10)["code"] == 200
        question = event["event"]["message"]["message_id"]
        fake.wait_for(lambda: [m for m in fake.messages if m.parent_id == question], timeout=60)

        def counted() -> list[Sample] | None:
            now = scrape_now(gateway_url)
            return now if total(now, metrics.TURNS_FINISHED, status="completed") == 1 else None

        after = fake.wait_for(counted, timeout=30)
        assert total(after, metrics.TURNS_STARTED) == total(before, metrics.TURNS_STARTED) + 1 == 1
        status = subprocess.run(
            [sys.executable, "-m", "ally", "status"], capture_output=True, text=True, env=up.env, timeout=60
        )
        assert f"Metrics: runtime-worker {runtime_url}, gateway {gateway_url}" in status.stdout.splitlines()

        up.process.send_signal(signal.SIGTERM)
        assert up.process.wait(timeout=60) == 0
        assert wait_gone(up.marker) == {}


@pytest.mark.faults
def test_a_metrics_port_already_taken_stops_ally_up_with_the_key_to_change(home: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        died = run_up_expecting_failure(
            home,
            {"WORK_ALLY_METRICS__ENABLED": "true", "WORK_ALLY_METRICS__RUNTIME_WORKER_PORT": str(port)},
        )
    assert died.returncode == 1
    (line,) = died.stderr.strip().splitlines()
    assert line.startswith("ally: runtime-worker exited at start: cannot serve metrics on 127.0.0.1:"), line
    assert "[metrics] runtime_worker_port" in line and "Traceback" not in died.stdout + died.stderr
    assert wait_gone(f"WORK_ALLY_HOME={home}") == {}


def test_metrics_are_off_unless_enabled_with_a_port_and_the_host_must_be_an_ip_address(
    tmp_path: Path,
) -> None:
    def address(part: metrics.Part, **env: str) -> str | None:
        environ = {f"WORK_ALLY_METRICS__{key.upper()}": value for key, value in env.items()}
        return metrics.metrics_address(load_config(tmp_path / "absent.toml", environ), part)

    assert address("gateway") is None and address("runtime-worker", runtime_worker_port="9464") is None
    assert address("gateway", enabled="true") is None
    assert address("gateway", enabled="true", gateway_port="0") is None
    assert address("runtime-worker", enabled="true", gateway_port="9465") is None
    assert address("gateway", enabled="true", gateway_port="9465") == "127.0.0.1:9465"
    assert address("gateway", enabled="true", gateway_port="9465", host="::1") == "[::1]:9465"
    with pytest.raises(ConfigError, match=r"WORK_ALLY_METRICS__HOST: .*not an ip address.*'localhost'"):
        address("gateway", enabled="true", gateway_port="9465", host="localhost")
