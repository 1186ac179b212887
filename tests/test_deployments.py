"""Deployments: prefect.yaml deployed by deployments/setup.sh to a real Prefect server, run by a real process
worker; and the container files' structure (no Docker engine here)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ragline.components import build_components
from ragline.config import RaglineConfig

ROOT = Path(__file__).resolve().parents[1]
PREFECT_YAML = yaml.safe_load((ROOT / "prefect.yaml").read_text())
COMPOSE = yaml.safe_load((ROOT / "deployments" / "docker-compose.yml").read_text())
POOL = "ragline-process"
TRIGGER_QUEUE = "e2e"
"""The triggered run goes to its own queue, so the worker never picks a scheduled run that falls due meanwhile."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefect_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "prefect", *args]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real ``prefect server start`` on a free port, its state (SQLite) in a temporary PREFECT_HOME.

    Yields the environment that points Prefect commands at it."""
    home = tmp_path_factory.mktemp("prefect-home")
    api_url = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
    }
    port = api_url.split(":")[2].split("/")[0]
    with open(home / "server.log", "wb") as log:
        process = subprocess.Popen(
            prefect_cli("server", "start", "--host", "127.0.0.1", "--port", port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{api_url}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"prefect server did not start:\n{(home / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def prefect_api(server: dict[str, str]) -> Iterator[None]:
    """This process's Prefect client pointed at the server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server["PREFECT_API_URL"]}):
        yield


def run(command: list[str], env: dict[str, str], timeout: float) -> str:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{shlex.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def expected_deployments() -> dict[tuple[str, str], dict[str, Any]]:
    """prefect.yaml's deployments by (entrypoint, name)."""
    return {(d["entrypoint"], d["name"]): d for d in PREFECT_YAML["deployments"]}


@pytest.mark.slow
def test_setup_deploys_prefect_yaml_and_a_process_worker_runs_the_ingest_deployment(
    server: dict[str, str], prefect_api: None, tmp_path: Path, models_dir: Path, embedder: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment

    run(["bash", "deployments/setup.sh"], {**server, "RAGLINE_OPENAI_SLOTS": "2"}, timeout=180)

    expected = expected_deployments()
    with get_client(sync_client=True) as client:
        deployed = {(d.entrypoint, d.name): d for d in client.read_deployments()}
        assert set(deployed) == set(expected)
        for key, spec in expected.items():
            got = deployed[key]
            assert got.parameters == spec["parameters"], key
            assert (got.work_pool_name, got.work_queue_name) == (POOL, spec["work_pool"]["work_queue_name"]), key
            assert got.tags == spec["tags"] and got.pull_steps == PREFECT_YAML["pull"], key
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in got.schedules] == [
                (s["cron"], s["timezone"], s["active"]) for s in spec["schedules"]
            ], key
            limit = got.global_concurrency_limit.limit if got.global_concurrency_limit else None
            assert limit == spec.get("concurrency_limit"), key
        assert client.read_work_pool(POOL).type == "process"
        slots = {
            name: client.read_global_concurrency_limit_by_name(name).limit
            for name in ("openai-embeddings", "pinecone-upserts")
        }
        assert slots == {"openai-embeddings": 2, "pinecone-upserts": 4}
        client.create_work_queue(name=TRIGGER_QUEUE, work_pool_name=POOL)
        ingest = next(d for (entrypoint, _), d in deployed.items() if entrypoint == "flows/ingest.py:ingest_flow")
        flow_name = client.read_flow(ingest.flow_id).name

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"note{i}.md").write_text(f"# Note {i}\n\nDeployment run note number {i}.\n", encoding="utf-8")
    home = tmp_path / "home"
    flow_run = run_deployment(
        f"{flow_name}/{ingest.name}",
        parameters={"path": str(corpus), "home": str(home)},
        timeout=0,
        work_queue_name=TRIGGER_QUEUE,
    )

    worker_env = {**server, "RAGLINE_PROJECT_DIR": str(ROOT), "RAGLINE_MODEL_CACHE_DIR": str(models_dir)}
    run(prefect_cli("worker", "start", "--pool", POOL, "--work-queue", TRIGGER_QUEUE, "--run-once"), worker_env, 120)

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state is not None and state.type == StateType.COMPLETED, state
    c = build_components(RaglineConfig(home=home, model_cache_dir=models_dir), embedder=embedder)
    try:
        indexed = {chunk_id.split("#")[0] for chunk_id in c.store.list_ids(namespace="default")}
    finally:
        c.close()
    assert indexed == {f"corpus/note{i}.md" for i in range(3)}


def test_deployments_run_from_the_checkout_on_the_process_pool() -> None:
    assert PREFECT_YAML["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $RAGLINE_PROJECT_DIR }}"}}
    ]
    for spec in PREFECT_YAML["deployments"]:
        assert spec["work_pool"]["name"] == POOL
        assert (ROOT / spec["entrypoint"].split(":")[0]).parent == ROOT / "flows"
    schedules = {spec["entrypoint"]: spec["schedules"] for spec in PREFECT_YAML["deployments"]}
    assert schedules["flows/ingest.py:ingest_flow"][0]["cron"] == "0 2 * * *"
    assert schedules["flows/evaluate.py:evaluate_flow"][0]["cron"] == "0 4 * * *"
    assert schedules["flows/refresh.py:refresh_flow"][0]["cron"] == "30 * * * *"
    assert schedules["flows/backfill.py:backfill_flow"] == []
    assert all(s["timezone"] == "UTC" for specs in schedules.values() for s in specs)
    setup = (ROOT / "deployments" / "setup.sh").read_text()
    assert f"POOL={POOL}" in setup and "--type process" in setup and "deploy --all" in setup


def test_compose_wires_postgres_server_setup_worker_and_api() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"postgres", "prefect-server", "setup", "worker", "api"}
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in COMPOSE["volumes"] or (ROOT / "deployments" / source).is_file(), (name, volume)

    database = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert database.startswith("postgresql+asyncpg://") and "@postgres:5432/" in database
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["setup"]["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert services["setup"]["command"] == ["bash", "deployments/setup.sh"]
    assert services["worker"]["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    worker = services["worker"]["command"]
    assert worker[:3] == ["prefect", "worker", "start"] and worker[worker.index("--pool") + 1] == POOL

    server_port = services["prefect-server"]["ports"][0].split(":")[1]
    workdir = re.search(r"^WORKDIR (\S+)$", (ROOT / "deployments" / "Dockerfile").read_text(), re.MULTILINE)
    for name in ("setup", "worker", "api"):
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deployments/Dockerfile"}, name
        assert service["environment"]["PREFECT_API_URL"] == f"http://prefect-server:{server_port}/api", name
        assert workdir is not None and service["environment"]["RAGLINE_PROJECT_DIR"] == workdir.group(1), name


def test_workers_and_api_share_only_postgres_and_the_vector_service() -> None:
    services = COMPOSE["services"]
    postgres = services["postgres"]
    init = [v for v in postgres["volumes"] if v.split(":")[1].startswith("/docker-entrypoint-initdb.d/")]
    assert len(init) == 1
    created = re.findall(r"CREATE DATABASE (\w+)", (ROOT / "deployments" / init[0].split(":")[0]).read_text())
    user, password = postgres["environment"]["POSTGRES_USER"], postgres["environment"]["POSTGRES_PASSWORD"]
    for name in ("worker", "api"):
        service = services[name]
        assert "volumes" not in service, f"{name} mounts a volume: state would not be shared by another host"
        env = service["environment"]
        url = urlsplit(env["RAGLINE_DATABASE_URL"].replace(password, "pw"))
        assert (url.scheme, url.hostname, url.port, url.username) == ("postgresql", "postgres", 5432, user), name
        assert url.path.lstrip("/") in created, name
        assert env["RAGLINE_STORE"] == "pinecone", name  # LanceDB would be one container's disk
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        config = RaglineConfig(
            **{k.removeprefix("RAGLINE_").lower(): v for k, v in env.items() if k.startswith("RAGLINE_")}
        )
        assert config.state_backend == "postgresql" and config.store_kind == "pinecone", name
    mounted = [v.split(":")[0] for service in services.values() for v in service.get("volumes", [])]
    assert sorted(mounted) == sorted(set(mounted)), "a volume is mounted by two services"
    assert set(COMPOSE["volumes"]) == {"postgres-data"}


def test_api_service_command_is_a_ragline_command() -> None:
    from typer.main import get_command

    from ragline.cli import app

    api = COMPOSE["services"]["api"]["command"]
    assert api[:2] == ["ragline", "serve"]
    assert "serve" in get_command(app).commands  # type: ignore[attr-defined]
    port = api[api.index("--port") + 1]
    assert COMPOSE["services"]["api"]["ports"] == [f"{port}:{port}"]


def test_dockerfile_installs_the_project_and_copies_only_what_exists() -> None:
    lines = [line.strip() for line in (ROOT / "deployments" / "Dockerfile").read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert "RUN pip install ." in instructions
    copies = [line.split()[1:-1] for line in instructions if line.startswith("COPY ")]
    assert copies and all((ROOT / source).exists() for sources in copies for source in sources)
    install = instructions.index("RUN pip install .")
    copied_before_install = {
        s for line in instructions[:install] if line.startswith("COPY ") for s in line.split()[1:-1]
    }
    assert {"pyproject.toml", "ragline", "tasks", "flows"} <= copied_before_install
