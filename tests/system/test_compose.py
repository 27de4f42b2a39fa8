"""docker-compose.yml and the Dockerfile kept honest without a Docker engine: every command compose runs is a real
``ctwa`` subcommand the other tests run, every variable it sets is a real setting, the healthchecks work against
the real services, and the dependencies wait for health."""

from __future__ import annotations

import asyncio
import re
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from conversion_records import eraser_of
from meta import FakeMeta
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import ReceiverFactory, free_port, serving_worker
from yarl import URL

from ingest.settings import FILE_SETTINGS, Settings
from workers.cli import build_parser
from workers.conversions.routes import routes_of
from workers.conversions.sender import Sender
from workers.dashboard.access import hash_password
from workers.dashboard.app import create_app as create_dashboard
from workers.runtime.database import create_engine

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
OURS = {name: service for name, service in SERVICES.items() if service.get("image") == "ctwa-ingest:latest"}
EXAMPLE = dict(
    line.split("=", 1)
    for line in (ROOT / ".env.example").read_text().splitlines()
    if line.strip() and not line.startswith("#")
)


def _subcommands() -> set[str]:
    parser = build_parser()
    [commands] = [action for action in parser._actions if action.dest == "command"]
    return set(commands.choices)  # type: ignore[arg-type]


def test_the_roles_run_real_ctwa_subcommands() -> None:
    assert set(OURS) == {"migrate", "receiver", "worker", "conversions", "dashboard"}
    for name, service in OURS.items():
        assert service["command"][0] in _subcommands(), name
        assert service["command"] == ([name] if name != "conversions" else ["conversions", "send"])
    build_parser().parse_args(OURS["conversions"]["command"])  # a real subcommand of the group


def test_the_conversions_sender_runs_on_demand_with_metas_settings_from_env() -> None:
    sender = SERVICES["conversions"]
    assert sender["profiles"] == ["conversions"]  # unconfigured by default: it would only stop, saying what is missing
    assert sender["environment"]["CTWA_DATABASE_URL"] == SERVICES["worker"]["environment"]["CTWA_DATABASE_URL"]
    for name in ("DATASET_ID", "WABA_ID", "PARTNER_AGENT", "TEST_EVENT_CODE"):
        variable = f"CTWA_META_{name}"
        assert sender["environment"][variable] == "${" + variable + ":-}"
        assert EXAMPLE[variable] == ""
    # The token as a Docker secret, from .env.
    assert sender["environment"]["CTWA_META_ACCESS_TOKEN_FILE"] == "/run/secrets/meta-access-token"
    assert sender["secrets"] == ["rabbitmq-password", "app-db-password", "meta-access-token"]
    assert COMPOSE["secrets"]["meta-access-token"] == {"environment": "CTWA_META_ACCESS_TOKEN"}
    assert EXAMPLE["CTWA_META_ACCESS_TOKEN"] == ""
    assert sender["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert ":9101/healthz" in sender["healthcheck"]["test"][-1]
    assert Settings().conversions_metrics_port == 9101


def test_every_ctwa_variable_compose_sets_is_a_setting() -> None:
    settings = {f"CTWA_{field.upper()}" for field in Settings.model_fields}
    settings |= {f"CTWA_{field.upper()}_FILE" for field in FILE_SETTINGS}
    for name, service in SERVICES.items():
        for variable in service.get("environment", {}):
            if variable.startswith("CTWA_TEST_"):
                assert name == "tests"
            elif variable.startswith("CTWA_"):
                assert variable in settings, f"{name}: {variable}"


def test_defaults_are_those_of_env_example_and_no_guest_account() -> None:
    # Innermost defaults: CTWA_AMQP_URL's own default is built of two of them (test_the_cluster_profile…).
    defaults = dict(re.findall(r"\$\{(\w+):-([^}$]*)\}", (ROOT / "docker-compose.yml").read_text()))
    assert defaults == {name: value for name, value in EXAMPLE.items() if name in defaults}
    # The secrets have no default: they come from .env as Docker secrets (the owner's and the broker's passwords keep
    # theirs for the tests' service and the RabbitMQ nodes, which take them from their environment).
    secrets = {"CTWA_WEBHOOK_SECRETS", "CTWA_META_ACCESS_TOKEN", "APP_DB_PASSWORD", "READ_DB_PASSWORD"}
    assert set(defaults) == set(EXAMPLE) - secrets
    assert "guest" not in (ROOT / "docker-compose.yml").read_text()
    assert SERVICES["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_USER"] == "${RABBITMQ_USER:-ctwa}"


def test_the_webhook_secrets_reach_only_the_receiver_as_a_docker_secret() -> None:
    assert COMPOSE["secrets"]["webhook-secrets"] == {"environment": "CTWA_WEBHOOK_SECRETS"}
    receiver = SERVICES["receiver"]
    assert receiver["environment"]["CTWA_WEBHOOK_SECRETS_FILE"] == "/run/secrets/webhook-secrets"
    assert receiver["secrets"] == ["rabbitmq-password", "app-db-password", "webhook-secrets"]
    holders = {name for name, service in SERVICES.items() if "webhook-secrets" in service.get("secrets", [])}
    assert holders == {"receiver"}
    for service in SERVICES.values():
        assert "CTWA_WEBHOOK_SECRETS" not in service.get("environment", {})
        assert "CTWA_META_ACCESS_TOKEN" not in service.get("environment", {})


def test_the_services_use_a_role_that_cannot_change_the_schema() -> None:
    owner = "//${POSTGRES_USER:-ctwa}@"
    app = "//${APP_DB_USER:-ctwa_app}@"
    for name in ("receiver", "worker"):
        assert app in SERVICES[name]["environment"]["CTWA_DATABASE_URL"]
        assert "CTWA_MIGRATE_DATABASE_URL" not in SERVICES[name]["environment"]
    assert app in SERVICES["migrate"]["environment"]["CTWA_DATABASE_URL"]
    assert owner in SERVICES["migrate"]["environment"]["CTWA_MIGRATE_DATABASE_URL"]


def test_every_password_reaches_its_services_as_a_docker_secret_never_in_their_environment() -> None:
    """The URLs name their users only; each password is a file of /run/secrets, from .env."""
    assert {name: secret["environment"] for name, secret in COMPOSE["secrets"].items()} == {
        "webhook-secrets": "CTWA_WEBHOOK_SECRETS",
        "meta-access-token": "CTWA_META_ACCESS_TOKEN",
        "postgres-password": "POSTGRES_PASSWORD",
        "app-db-password": "APP_DB_PASSWORD",
        "read-db-password": "READ_DB_PASSWORD",
        "rabbitmq-password": "RABBITMQ_PASSWORD",
    }
    files = {
        "CTWA_DATABASE_PASSWORD_FILE": "app-db-password",
        "CTWA_AMQP_PASSWORD_FILE": "rabbitmq-password",
        "CTWA_MIGRATE_DATABASE_PASSWORD_FILE": "postgres-password",
        "CTWA_DASHBOARD_DATABASE_PASSWORD_FILE": "read-db-password",
        "POSTGRES_PASSWORD_FILE": "postgres-password",
    }
    for name, service in SERVICES.items():
        environment = service.get("environment", {})
        for variable, value in environment.items():
            if variable in files:
                assert value == f"/run/secrets/{files[variable]}", (name, variable)
                assert files[variable] in service["secrets"], (name, variable)
            elif name not in ("tests", "rabbitmq", "rabbitmq-2", "rabbitmq-3", "grafana"):
                # No password in any other variable: not in a URL, not as itself.
                assert "PASSWORD" not in str(value), (name, variable)
    for name in OURS:
        assert {"CTWA_DATABASE_PASSWORD_FILE", "CTWA_AMQP_PASSWORD_FILE"} <= set(SERVICES[name]["environment"]), name
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"


def test_the_dashboard_reads_as_the_read_only_role_behind_credentials_on_loopback() -> None:
    dashboard = SERVICES["dashboard"]
    read = "//${READ_DB_USER:-ctwa_read}@"
    assert read in dashboard["environment"]["CTWA_DASHBOARD_DATABASE_URL"]
    assert read in SERVICES["migrate"]["environment"]["CTWA_DASHBOARD_DATABASE_URL"]  # so migrate creates the role
    assert dashboard["environment"]["CTWA_DASHBOARD_USERS"] == "${CTWA_DASHBOARD_USERS:-admin:change-me-dashboard}"
    assert dashboard["ports"] == ["127.0.0.1:${DASHBOARD_PORT:-8081}:8081"]
    assert "profiles" not in dashboard  # in the default profile: docker compose up starts it
    assert "401" in dashboard["healthcheck"]["test"][-1]


def test_every_published_port_is_on_loopback_by_default_its_host_port_from_env() -> None:
    """Docker's published ports bypass the host's firewall: nothing is open beyond this machine unless .env says so,
    and a local Postgres or RabbitMQ on the usual ports is no clash (docs: README, .env.example)."""
    published = {name: service["ports"] for name, service in SERVICES.items() if "ports" in service}
    assert published == {
        "postgres": ["127.0.0.1:${POSTGRES_PORT:-5432}:5432"],
        "rabbitmq": ["127.0.0.1:${RABBITMQ_MANAGEMENT_PORT:-15672}:15672"],
        "receiver": ["${RECEIVER_BIND:-127.0.0.1}:${RECEIVER_PORT:-8080}:8080"],
        "dashboard": ["127.0.0.1:${DASHBOARD_PORT:-8081}:8081"],
        "prometheus": ["127.0.0.1:${PROMETHEUS_PORT:-9090}:9090"],
        "grafana": ["127.0.0.1:${GRAFANA_PORT:-3000}:3000"],
    }
    example = (ROOT / ".env.example").read_text()
    for variable in (
        "POSTGRES_PORT",
        "RABBITMQ_MANAGEMENT_PORT",
        "RECEIVER_BIND=127.0.0.1",
        "RECEIVER_PORT",
        "DASHBOARD_PORT",
        "PROMETHEUS_PORT",
        "GRAFANA_PORT",
    ):
        assert variable in example


def test_services_are_healthchecked_and_started_in_order() -> None:
    for name in ("postgres", "rabbitmq", "receiver", "worker"):
        assert SERVICES[name]["healthcheck"]["test"], name
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert SERVICES["rabbitmq"]["image"].endswith("-management")
    assert SERVICES["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    cluster = {node: {"condition": "service_healthy", "required": False} for node in ("rabbitmq-2", "rabbitmq-3")}
    assert SERVICES["receiver"]["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
        **cluster,
    }
    assert SERVICES["worker"]["depends_on"] == {
        "rabbitmq": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
        **cluster,
    }
    assert SERVICES["worker"]["deploy"]["replicas"] == 2
    assert SERVICES["migrate"]["restart"] == "no"
    assert SERVICES["receiver"]["ports"] == ["${RECEIVER_BIND:-127.0.0.1}:${RECEIVER_PORT:-8080}:8080"]
    assert set(COMPOSE["volumes"]) == {
        "postgres-data",
        "rabbitmq-data",
        "rabbitmq-2-data",
        "rabbitmq-3-data",
        "prometheus-data",
        "grafana-data",
    }
    assert SERVICES["postgres"]["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert SERVICES["rabbitmq"]["volumes"] == ["rabbitmq-data:/var/lib/rabbitmq"]


def test_the_cluster_profile_runs_three_nodes_that_join_and_the_services_can_use_them_all() -> None:
    nodes = ("rabbitmq", "rabbitmq-2", "rabbitmq-3")
    for node in nodes:
        service = SERVICES[node]
        assert service["hostname"] == node  # its node name is rabbit@<hostname>
        assert service["image"] == SERVICES["rabbitmq"]["image"]
        assert service["healthcheck"] == SERVICES["rabbitmq"]["healthcheck"]
        [cookie] = [config for config in service["configs"] if config["source"] == "erlang-cookie"]
        assert cookie["target"] == "/var/lib/rabbitmq/.erlang.cookie"
        assert (cookie["uid"], cookie["mode"]) == ("999", 0o400)  # the image's rabbitmq user; RabbitMQ wants 0400
        assert service["volumes"] == [f"{node}-data:/var/lib/rabbitmq"]
    assert "profiles" not in SERVICES["rabbitmq"]  # the first node also runs alone, by default
    for node in nodes[1:]:
        service = SERVICES[node]
        assert service["profiles"] == ["cluster"]
        assert service["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
        [join] = [config for config in service["configs"] if config["source"] == "join-rabbitmq"]
        assert join["target"].startswith("/etc/rabbitmq/conf.d/")
    joining = COMPOSE["configs"]["join-rabbitmq"]["content"].splitlines()
    assert "cluster_formation.peer_discovery_backend = classic_config" in joining
    assert "cluster_formation.classic_config.nodes.1 = rabbit@rabbitmq" in joining
    assert COMPOSE["configs"]["erlang-cookie"]["content"] == "${RABBITMQ_ERLANG_COOKIE:-change-me-erlang-cookie}"

    # By default the services name the one node; .env.example's line for the profile names all three, and is valid.
    single = "amqp://${RABBITMQ_USER:-ctwa}@rabbitmq:5672/"
    assert COMPOSE["x-ctwa"]["environment"]["CTWA_AMQP_URL"] == "${CTWA_AMQP_URL:-" + single + "}"
    [line] = [line for line in (ROOT / ".env.example").read_text().splitlines() if "CTWA_AMQP_URL=" in line]
    # The password, apart (CTWA_AMQP_PASSWORD_FILE), goes into every node's address.
    urls = Settings(
        amqp_url=line.removeprefix("# CTWA_AMQP_URL="), amqp_password=EXAMPLE["RABBITMQ_PASSWORD"]
    ).amqp_urls
    assert [URL(url).host for url in urls] == list(nodes)
    assert {(URL(url).user, URL(url).password) for url in urls} == {
        (EXAMPLE["RABBITMQ_USER"], EXAMPLE["RABBITMQ_PASSWORD"])
    }


def test_the_tests_service_runs_the_readme_test_command() -> None:
    tests = SERVICES["tests"]
    assert tests["profiles"] == ["tests"]
    assert tests["build"]["target"] == "test"
    assert tests["image"] == "ctwa-ingest:tests"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "pytest"]' in dockerfile
    assert "python -m pytest" in (ROOT / "README.md").read_text()
    assert set(tests["depends_on"]) == {"postgres", "rabbitmq"}


def test_the_image_is_built_once_by_migrate_which_every_other_role_waits_for() -> None:
    """One build, one image ID: compose builds a service's image per service that has a build section."""
    built = {name for name, service in SERVICES.items() if "build" in service}
    assert built == {"migrate", "tests"}
    assert SERVICES["migrate"]["build"] == {"context": ".", "target": "runtime"}
    for name in set(OURS) - {"migrate"}:
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name


def test_the_image_runs_as_a_user_with_dependencies_in_their_own_layer() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime = dockerfile.split("FROM runtime AS test")[0]
    assert "FROM python:3.12-slim AS runtime" in runtime
    assert re.search(r"^USER ctwa$", runtime, re.MULTILINE)
    assert 'ENTRYPOINT ["ctwa"]' in runtime
    # The lock alone is copied and installed before the sources: code changes keep the dependency layer.
    installed = runtime.index("pip install --require-hashes -r requirements/runtime.txt")
    assert runtime.index("COPY requirements/runtime.txt") < installed < runtime.index("COPY pyproject.toml")
    assert runtime.index("COPY pyproject.toml") < runtime.index("COPY ingest") < runtime.index("pip install --no-deps")


async def _healthcheck(service: str, port: int, env: dict[str, str] | None = None) -> int:
    """Run the service's own healthcheck command, aimed at ``port`` on this machine (with ``env`` as its
    environment)."""
    command = SERVICES[service]["healthcheck"]["test"]
    assert command[:2] == ["CMD", "python"]
    script = command[-1]
    for default in (":8080/", ":9100/", ":9101/", ":8081/"):
        script = script.replace(default, f":{port}/")
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command[2:-1], script, stderr=asyncio.subprocess.DEVNULL, env=env
    )
    return await asyncio.wait_for(process.wait(), 30)


@pytest.mark.parametrize("users", [("anna:first", "bob:second"), (f"anna:{hash_password('first')}",)])
async def test_the_dashboard_healthcheck_passes_while_it_serves(database_url: str, users: tuple[str, ...]) -> None:
    """Serving, with its users plain or hashed: /healthz answers 401 without one. Nothing listening: unhealthy."""
    settings = Settings(database_url=database_url, dashboard_users=users)
    client = TestClient(TestServer(create_dashboard(settings)))
    await client.start_server()
    try:
        assert await _healthcheck("dashboard", client.port) == 0
    finally:
        await client.close()
    assert await _healthcheck("dashboard", free_port()) != 0


async def test_the_receiver_healthcheck_passes_when_ready_and_fails_otherwise(start_receiver: ReceiverFactory) -> None:
    ready = await start_receiver()
    assert await _healthcheck("receiver", ready.port) == 0
    unready = await start_receiver(amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/", wait_ready=False)
    assert await _healthcheck("receiver", unready.port) != 0


async def test_the_worker_healthcheck_passes_while_it_runs(worker_settings: Settings) -> None:
    async with serving_worker(worker_settings) as port:
        for _ in range(100):
            if await _healthcheck("worker", port) == 0:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the worker's healthcheck never passed")
    assert await _healthcheck("worker", port) != 0


async def test_the_conversions_healthcheck_passes_while_sending_and_fails_while_parked(
    db: AsyncEngine, database_url: str
) -> None:
    async with FakeMeta() as meta:
        settings = meta.settings(database_url, conversions_poll_s=0.05)
        engine = create_engine(database_url)
        port = free_port()
        results = []
        for token in (meta.token, "a-revoked-token"):
            async with (
                AsyncExitStack() as stack,
                routes_of(settings.model_copy(update={"meta_access_token": token}), None) as routes,
            ):
                sender = Sender(engine, routes, await eraser_of(engine), settings)
                await sender.serve(stack, "127.0.0.1", port)
                running = asyncio.create_task(sender.run())
                async with engine.begin() as connection:
                    await connection.execute(
                        text(
                            "INSERT INTO conversion_events (event_id, event_name, event_time, ctwa_clid) "
                            "VALUES (:event, 'Purchase', now(), 'CLID-1')"
                        ),
                        {"event": f"order-{token}"},
                    )
                await meta.wait_requests(len(meta.requests) + 1)
                for _ in range(1000):  # until the answer is taken: the event sent, or the sender parked
                    sent = (
                        sender.metrics.registry.get_sample_value("ctwa_conversions_sent_total", {"app": "default"}) or 0
                    )
                    if sent if token == meta.token else sender.parked is not None:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the sender's answer was not taken within 10 s")
                results.append(await _healthcheck("conversions", port))
                sender.stop()
                await running
        await engine.dispose()
    assert results[0] == 0
    assert results[1] != 0
