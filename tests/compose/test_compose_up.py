"""The stack as the README runs it, on a real Docker engine: the quick start literally — ``up -d`` until healthy,
2,000 simulated callbacks, the report, the psql query, the dashboard — then the monitoring profile (Prometheus
scraping every service with the alert rules loaded), the conversions profile against a stand-in for Meta, the
whole test suite inside compose (``docker compose run --rm tests``), and the cluster profile with a node killed
mid-traffic: every callback stored once. ``down -v`` at the end.

Each compose command is the README's, under a project name of its own (``ctwa-ci``, so that a stack of the
developer's is left alone) and with an env file made as the README says (``cp .env.example .env``), its ports
moved to free ones. The tests run in order, each on what the one before it left.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from meta import FakeMeta
from promql import metric_names
from support import free_port

ROOT = Path(__file__).parents[2]
PROJECT = "ctwa-ci"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PORTS = (
    "POSTGRES_PORT",
    "RABBITMQ_MANAGEMENT_PORT",
    "RECEIVER_PORT",
    "DASHBOARD_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
)
SIMULATE = ["run", "--rm", "receiver", "simulate", "--url", "http://receiver:8080/webhooks/sinch"]
# Each step may build images and wait for a whole stack.
pytestmark = pytest.mark.timeout(1800)
README_QUERY = (
    "SELECT day, source_id, headline, clicks, people, new_people FROM ad_performance_daily ORDER BY day, clicks DESC"
)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> Run:
        assert self.returncode == 0, f"exit {self.returncode}\n{self.stdout[-3000:]}\n{self.stderr[-3000:]}"
        return self


@dataclass
class Stack:
    """``docker compose`` on this project, with an env file of the run's own."""

    env_file: Path
    values: dict[str, str]
    files: list[str] = field(default_factory=lambda: ["docker-compose.yml"])
    summaries: dict[str, Any] = field(default_factory=dict)

    def write_env(self, **changes: str) -> None:
        self.values |= changes
        self.env_file.write_text("".join(f"{name}={value}\n" for name, value in self.values.items()))

    async def compose(self, *args: str, within: float = 600, files: list[str] | None = None) -> Run:
        named = [option for file in files or self.files for option in ("-f", file)]
        return await _docker(
            "compose", "--project-name", PROJECT, "--env-file", str(self.env_file), *named, *args, within=within
        )

    async def sql(self, query: str) -> list[list[str]]:
        run = (await self.compose("exec", "-T", "postgres", "psql", "-U", "ctwa", "ctwa", "-At", "-c", query)).ok()
        return [line.split("|") for line in run.stdout.splitlines() if line]

    async def until_stored(self, callbacks: int, within: float = 180) -> None:
        """Until the archive holds ``callbacks`` and the day chains are settled."""
        deadline = time.monotonic() + within
        while True:
            [[stored, waiting]] = await self.sql(
                "SELECT (SELECT count(*) FROM callbacks), (SELECT count(*) FROM chain_backlog)"
            )
            if int(stored) == callbacks and int(waiting) == 0:
                return
            assert int(stored) <= callbacks, f"{stored} stored, more than the {callbacks} sent"
            assert time.monotonic() < deadline, f"{stored} of {callbacks} callbacks stored after {within:.0f} s"
            await asyncio.sleep(2)

    def url(self, port: str, path: str) -> str:
        return f"http://127.0.0.1:{self.values[port]}{path}"


def _basic(pair: str) -> dict[str, str]:
    """HTTP Basic headers for ``name:password``."""
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


def _example() -> dict[str, str]:
    """.env.example as ``cp .env.example .env`` makes it."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def _cluster_url() -> str:
    """The CTWA_AMQP_URL line .env.example says to uncomment for the cluster profile."""
    [line] = [line for line in (ROOT / ".env.example").read_text().splitlines() if line.startswith("# CTWA_AMQP_URL=")]
    return line.removeprefix("# CTWA_AMQP_URL=")


async def _image_present(image: str) -> bool:
    process = await asyncio.create_subprocess_exec(
        "docker", "image", "inspect", image, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await process.wait() == 0


async def _docker(*args: str, within: float = 900) -> Run:
    """``docker args`` in the project's folder: its exit status and output; failed if still running after
    ``within`` seconds."""
    process = await asyncio.create_subprocess_exec(
        "docker", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        raise AssertionError(f"docker {' '.join(args)}: still running after {within:.0f} s") from None
    return Run(process.returncode or 0, out.decode(), err.decode())


async def _prometheus_image() -> None:
    """The official image if it can be had; else a stand-in of Debian's Prometheus under its tag (no registry)."""
    image = SERVICES["prometheus"]["image"]
    if await _image_present(image) or (await _docker("pull", image, within=300)).returncode == 0:
        return
    context = ROOT / "tests" / "compose" / "standins"
    (await _docker("build", "-t", image, "-f", str(context / "prometheus.Dockerfile"), str(context))).ok()


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("compose") / ".env", _example())
    stack.write_env(**{port: str(free_port()) for port in PORTS})
    everything = ["--profile", "cluster", "--profile", "conversions", "--profile", "monitoring", "--profile", "tests"]
    await stack.compose(*everything, "down", "--volumes", "--remove-orphans")
    try:
        yield stack
    finally:
        (await stack.compose(*everything, "down", "--volumes", "--remove-orphans")).ok()


async def test_up_until_healthy_with_one_image_for_every_role(stack: Stack) -> None:
    (await stack.compose("up", "-d", "--build", "--wait", "--wait-timeout", "300", within=900)).ok()
    states = [json.loads(line) for line in (await stack.compose("ps", "--format", "json")).ok().stdout.splitlines()]
    running = Counter(state["Service"] for state in states)
    assert running == {"postgres": 1, "rabbitmq": 1, "receiver": 1, "worker": 2, "dashboard": 1}, running
    assert all(state["Health"] == "healthy" for state in states), states
    images = (await stack.compose("images", "--format", "json")).ok().stdout
    ours = {image["ID"] for image in json.loads(images) if image["Repository"] == "ctwa-ingest"}
    assert len(ours) == 1, f"the image was built more than once: {ours}"


async def test_the_quick_start_simulate_report_and_psql(stack: Stack) -> None:
    run = (await stack.compose(*SIMULATE, "--count", "2000", "--rate", "200", "--json", within=300)).ok()
    summary = json.loads(run.stdout)
    stack.summaries["quick start"] = summary
    assert summary["statuses"] == {"200": summary["sent"]}, summary["statuses"]
    await stack.until_stored(summary["callbacks"])

    report = (await stack.compose("run", "--rm", "receiver", "report")).ok().stdout
    expected = summary["expected"]
    assert expected, "the simulation clicked no ad"
    for source_id in expected:
        assert source_id in report, f"{source_id} is not in ctwa report:\n{report}"

    clicks: Counter[str] = Counter()
    people: Counter[str] = Counter()
    for _day, source_id, _headline, day_clicks, day_people, _new in await stack.sql(README_QUERY):
        clicks[source_id] += int(day_clicks)
        people[source_id] += int(day_people)
    assert dict(clicks) == {source_id: ad["clicks"] for source_id, ad in expected.items()}
    # Traffic of one day: each ad's people that day are its people.
    assert dict(people) == {source_id: ad["people"] for source_id, ad in expected.items()}


async def test_the_dashboard_shows_the_same_numbers(stack: Stack) -> None:
    auth = _basic(stack.values["CTWA_DASHBOARD_USERS"])
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.url("DASHBOARD_PORT", "/api/ads")) as response:
            assert response.status == 401
        async with session.get(stack.url("DASHBOARD_PORT", "/api/ads"), headers=auth) as response:
            assert response.status == 200
            ads = await response.json()
    expected = stack.summaries["quick start"]["expected"]
    assert {ad["source_id"]: ad["clicks"] for ad in ads} == {key: ad["clicks"] for key, ad in expected.items()}


async def test_the_monitoring_profile_scrapes_every_service_with_the_rules_loaded(stack: Stack) -> None:
    await _prometheus_image()
    (await stack.compose("--profile", "monitoring", "up", "-d", "--wait", "prometheus", within=600)).ok()
    async with aiohttp.ClientSession() as session:

        async def api(path: str, **params: str) -> Any:
            async with session.get(stack.url("PROMETHEUS_PORT", f"/api/v1/{path}"), params=params) as response:
                assert response.status == 200, await response.text()
                return (await response.json())["data"]

        deadline = time.monotonic() + 120
        while True:
            targets = (await api("targets"))["activeTargets"]
            up = Counter(target["labels"]["job"] for target in targets if target["health"] == "up")
            if up == {"ctwa-receiver": 1, "ctwa-worker": 2, "rabbitmq": 1}:
                break
            assert time.monotonic() < deadline, f"targets up after 120 s: {dict(up)}; {targets}"
            await asyncio.sleep(2)
        groups = (await api("rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        alerts = yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text())["groups"][0]["rules"]
        assert sorted(rule["name"] for rule in rules) == sorted(alert["alert"] for alert in alerts)
        assert all(rule["health"] == "ok" for rule in rules), [rule for rule in rules if rule["health"] != "ok"]
        # RabbitMQ's own metrics that the rules and the dashboard name are really exported by its plugin.
        dashboard = json.loads((ROOT / "monitoring" / "grafana" / "pipeline.json").read_text())
        expressions = [str(alert["expr"]) for alert in alerts] + [
            target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
        ]
        names = {name for expression in expressions for name in metric_names(expression)}
        rabbitmq = sorted(name for name in names if name.startswith("rabbitmq_"))
        assert rabbitmq
        for name in rabbitmq:
            assert (await api("series", **{"match[]": name}))[:1], f"RabbitMQ exports no {name}"
        # No alert fires on a healthy stack.
        firing = [alert for alert in (await api("alerts"))["alerts"] if alert["state"] == "firing"]
        assert firing == []
    grafana = SERVICES["grafana"]["image"]
    if not await _image_present(grafana) and (await _docker("pull", grafana, within=300)).returncode != 0:
        print(
            f"\nSKIPPED Grafana: no {grafana} image here and no registry to pull it from; its provisioning is "
            "checked without it (tests/system/test_monitoring.py)",
            flush=True,
        )
        return
    (await stack.compose("--profile", "monitoring", "up", "-d", "--wait", "grafana", within=600)).ok()
    auth = _basic(f"{stack.values['GRAFANA_USER']}:{stack.values['GRAFANA_PASSWORD']}")
    async with aiohttp.ClientSession() as session:
        url = stack.url("GRAFANA_PORT", "/api/dashboards/uid/ctwa-pipeline")
        async with session.get(url, headers=auth) as response:
            assert response.status == 200, await response.text()


async def test_the_conversions_profile_sends_to_meta_once(stack: Stack) -> None:
    async with FakeMeta(host="0.0.0.0") as meta:
        stack.write_env(
            CTWA_META_DATASET_ID=meta.dataset_id,
            CTWA_META_ACCESS_TOKEN=meta.token,
            CTWA_META_WABA_ID=meta.waba_id,
            CTWA_META_GRAPH_URL=f"http://meta.test:{meta.port}",
        )
        files = ["docker-compose.yml", "tests/compose/meta.yml"]
        (await stack.compose("--profile", "conversions", "up", "-d", "--wait", files=files, within=600)).ok()
        [[contact_id, ctwa_clid]] = await stack.sql(
            "SELECT contact_id, ctwa_clid FROM ad_clicks WHERE ctwa_clid IS NOT NULL AND contact_id IS NOT NULL "
            "ORDER BY clicked_at DESC LIMIT 1"
        )
        insert = (
            "INSERT INTO conversion_events (event_id, event_name, event_time, contact_id, value, currency) "
            f"VALUES ('order-1', 'Purchase', now(), '{contact_id}', 59.90, 'EUR') ON CONFLICT DO NOTHING"
        )
        await stack.sql(insert)
        await stack.sql(insert)  # recorded twice by the business: one event
        await meta.wait_requests(1, timeout=120)
        await asyncio.sleep(5)  # time for a second request, were one to come
        assert len(meta.requests) == 1
        [event] = meta.requests[0].events
        assert event["event_id"] == "order-1"
        assert event["user_data"]["ctwa_clid"] == ctwa_clid
        status = (await stack.compose("run", "--rm", "conversions", "conversions", "status", files=files)).ok()
        assert re.search(r"\bsent\b\s+1\b", status.stdout), status.stdout
        (await stack.compose("--profile", "conversions", "stop", "conversions", files=files)).ok()


async def test_the_whole_suite_passes_inside_compose(stack: Stack) -> None:
    run = await stack.compose("run", "--rm", "--build", "tests", within=1200)
    tail = run.stdout[-4000:]
    print(f"\n--- docker compose run --rm --build tests ---\n{tail}", flush=True)
    assert run.returncode == 0, f"{tail}\n{run.stderr[-2000:]}"
    assert re.search(r"\d+ passed", tail)
    assert " failed" not in tail
    assert " error" not in tail


async def test_the_cluster_profile_loses_nothing_when_a_node_is_killed_mid_traffic(stack: Stack) -> None:
    everything = ["--profile", "conversions", "--profile", "monitoring"]
    (await stack.compose(*everything, "down", "--volumes")).ok()
    stack.write_env(CTWA_AMQP_URL=_cluster_url())
    (await stack.compose("--profile", "cluster", "up", "-d", "--wait", "--wait-timeout", "600", within=900)).ok()
    status = (
        await stack.compose("exec", "-T", "rabbitmq", "rabbitmqctl", "cluster_status", "--formatter", "json")
    ).ok()
    assert sorted(json.loads(status.stdout)["running_nodes"]) == [
        "rabbit@rabbitmq",
        "rabbit@rabbitmq-2",
        "rabbit@rabbitmq-3",
    ]

    sending = asyncio.create_task(
        stack.compose(*SIMULATE, "--count", "2000", "--rate", "200", "--seed", "7", "--json", within=600)
    )
    await asyncio.sleep(4)
    assert not sending.done(), "the traffic ended before the node was killed"
    (await stack.compose("kill", "rabbitmq-2")).ok()
    summary = json.loads((await sending).ok().stdout)
    refused = int(summary["statuses"].get("503", 0))
    print(f"\ncluster: {summary['callbacks']} callbacks, {refused} answers 503 while a node died (retried)", flush=True)
    assert set(summary["statuses"]) <= {"200", "503"}, summary["statuses"]
    # Every callback answered 200 at last (the simulator retries a 503 as Sinch does), stored once.
    await stack.until_stored(summary["callbacks"])
    expected = summary["expected"]
    clicks = dict(
        (row[0], int(row[1])) for row in await stack.sql("SELECT source_id, count(*) FROM ad_clicks GROUP BY 1")
    )
    assert clicks == {source_id: ad["clicks"] for source_id, ad in expected.items()}
    # The copies Sinch sent twice go on being dropped after the last callback is stored: then nothing is left, and
    # nothing was dead-lettered.
    listed = ("list_queues", "name", "messages", "--formatter", "json")
    deadline = time.monotonic() + 60
    while True:
        queues = (await stack.compose("exec", "-T", "rabbitmq", "rabbitmqctl", *listed)).ok()
        waiting = {queue["name"]: queue["messages"] for queue in json.loads(queues.stdout)}
        if all(count == 0 for count in waiting.values()):
            break
        assert waiting.get("ctwa.dead-letter") == 0, waiting
        assert time.monotonic() < deadline, f"left in the queues after 60 s: {waiting}"
        await asyncio.sleep(2)
    await stack.until_stored(summary["callbacks"], within=0)  # and still each callback once
