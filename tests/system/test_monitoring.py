"""The monitoring profile's files kept honest: Prometheus's configuration and alert rules pass promtool, each alert
is unit-tested firing and quiet (monitoring/alerts_test.yml), the scrape jobs reach every service where compose
runs it, Grafana is provisioned with that Prometheus and the pipeline's dashboard, and every metric the rules and
the dashboard name is exported by a running receiver, worker or conversions sender — a renamed metric fails here.
(RabbitMQ's own metrics, ``rabbitmq_*``, are checked against a real node's plugin in the compose run, .ci/compose.)"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from conversion_records import eraser_of
from meta import FakeMeta
from promql import exported, metric_names
from sqlalchemy.ext.asyncio import AsyncEngine
from support import ReceiverFactory, free_port, serving_worker, unavailable

from ingest.settings import Settings
from workers.conversions.routes import routes_of
from workers.conversions.sender import Sender
from workers.runtime.database import create_engine

ROOT = Path(__file__).parents[2]
MONITORING = ROOT / "monitoring"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PROMETHEUS = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
RULES = yaml.safe_load((MONITORING / "alerts.yml").read_text())
RULE_TESTS = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())
DASHBOARD = json.loads((MONITORING / "grafana" / "pipeline.json").read_text())
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"]]

# Prometheus's own series.
_PROMETHEUS_OWN = {"up"}


def _promtool(*args: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (apt-get install prometheus); the alert rules can't be checked")
    result = subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _dashboard_expressions() -> Iterator[str]:
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]


def _expressions() -> list[str]:
    return [str(rule["expr"]) for rule in ALERTS] + list(_dashboard_expressions())


def test_metric_names_are_read_from_promql() -> None:
    assert metric_names('sum by (le) (rate(ctwa_a_bucket{job=~"x|y", le!="1"}[$__rate_interval])) > 0.5') == {
        "ctwa_a_bucket"
    }
    assert metric_names('max(a) == 0 or absent(up{job="w"} == 1)') == {"a", "up"}
    assert metric_names("time() - max(b_seconds) > 6 * 3600") == {"b_seconds"}


def test_the_configuration_and_the_rules_pass_promtool() -> None:
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")
    assert f"{len(ALERTS)} rules found" in _promtool("check", "rules", "alerts.yml")


def test_each_alert_fires_on_its_series_and_stays_quiet_on_healthy_ones() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "alerts_test.yml")
    checks = [check for test in RULE_TESTS["tests"] for check in test["alert_rule_test"]]
    for alert in ALERTS:
        name = alert["alert"]
        outcomes = [bool(check["exp_alerts"]) for check in checks if check["alertname"] == name]
        assert True in outcomes, f"{name} is never seen firing in alerts_test.yml"
        assert False in outcomes, f"{name} is never seen quiet in alerts_test.yml"
        assert alert["labels"]["severity"] in {"page", "ticket"}, name
        assert alert["annotations"]["summary"], name


def test_prometheus_scrapes_every_service_where_compose_runs_it() -> None:
    services = COMPOSE["services"]
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    settings = Settings()
    expected = {
        "ctwa-receiver": (["receiver"], settings.http_port),
        "ctwa-worker": (["worker"], settings.worker_metrics_port),
        "ctwa-conversions": (["conversions"], settings.conversions_metrics_port),
        "rabbitmq": (["rabbitmq", "rabbitmq-2", "rabbitmq-3"], 15692),  # the rabbitmq_prometheus plugin
    }
    assert set(jobs) == set(expected)
    for name, (hosts, port) in expected.items():
        [discovery] = jobs[name]["dns_sd_configs"]
        assert (discovery["names"], discovery["type"], discovery["port"]) == (hosts, "A", port), name
        assert all(host in services for host in hosts), name
    # The jobs the rules name are these.
    named = {job for rule in ALERTS for job in re.findall(r'job=~?"([^"]+)"', str(rule["expr"]))}
    assert all(any(re.fullmatch(pattern, job) for job in jobs) for pattern in named), named

    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "./monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]
    assert PROMETHEUS["rule_files"] == ["alerts.yml"]  # beside prometheus.yml, in the container as here
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_is_provisioned_with_that_prometheus_and_the_pipelines_dashboard() -> None:
    grafana = COMPOSE["services"]["grafana"]
    assert grafana["profiles"] == ["monitoring"]
    [source] = yaml.safe_load((MONITORING / "grafana" / "datasources.yml").read_text())["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    [provider] = yaml.safe_load((MONITORING / "grafana" / "dashboards.yml").read_text())["providers"]
    mounts = dict(volume.rsplit(":", 2)[:2] for volume in grafana["volumes"] if volume.startswith("./"))
    assert mounts["./monitoring/grafana/datasources.yml"].startswith("/etc/grafana/provisioning/datasources/")
    assert mounts["./monitoring/grafana/dashboards.yml"].startswith("/etc/grafana/provisioning/dashboards/")
    assert mounts["./monitoring/grafana/pipeline.json"] == f"{provider['options']['path']}/pipeline.json"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_PASSWORD:-change-me-grafana}"

    targets = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
    for panel in targets:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], panel["title"]
    assert len({panel["id"] for panel in DASHBOARD["panels"]}) == len(DASHBOARD["panels"])
    # What an operator looks for, each on the board.
    shown = set().union(*(metric_names(expression) for expression in _dashboard_expressions()))
    for metric in (
        "ctwa_receiver_accepted_total",  # accepted/s
        "ctwa_receiver_rejected_total",  # 503s
        "ctwa_queue_messages",  # queue depth, dead letters
        "ctwa_worker_lag_seconds",  # lag
        "ctwa_worker_processed_total",  # stored/s
        "ctwa_conversions_sent_total",  # conversions by status
        "ctwa_conversions_settled_unsent_total",
        "process_resident_memory_bytes",  # process memory
    ):
        assert metric in shown, metric


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def _worker_metrics(settings: Settings) -> str:
    async with serving_worker(settings) as port:
        for _ in range(100):
            try:
                return await _metrics(f"http://127.0.0.1:{port}/metrics")
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
        raise AssertionError("the worker never served /metrics")


async def _sender_metrics(database_url: str) -> str:
    async with FakeMeta() as meta, AsyncExitStack() as stack:
        settings = meta.settings(database_url)
        engine = create_engine(database_url)
        stack.push_async_callback(engine.dispose)
        routes = await stack.enter_async_context(routes_of(settings, None))
        sender = Sender(engine, routes, await eraser_of(engine), settings)
        port = free_port()
        await sender.serve(stack, "127.0.0.1", port)
        return await _metrics(f"http://127.0.0.1:{port}/metrics")


async def test_every_metric_the_rules_and_the_dashboard_name_is_exported(
    start_receiver: ReceiverFactory, worker_settings: Settings, database_url: str, db: AsyncEngine
) -> None:
    receiver = await start_receiver()
    pages: dict[str, Any] = {
        "receiver": await (await receiver.get("/metrics")).text(),
        "worker": await _worker_metrics(worker_settings),
        "sender": await _sender_metrics(database_url),
    }
    names = {role: exported(page) for role, page in pages.items()}
    for role in names:
        assert "process_resident_memory_bytes" in names[role], role
    available = set().union(*names.values())
    named = set().union(*(metric_names(expression) for expression in _expressions()))
    ours = {name for name in named if not name.startswith("rabbitmq_") and name not in _PROMETHEUS_OWN}
    assert ours, "no metric named"
    assert sorted(ours - available) == []
