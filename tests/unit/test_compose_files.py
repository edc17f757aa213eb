"""The compose files can't run here (no Docker engine); check what would break them instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.config import ROOT, SERVICE_NAMES, load_settings

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.prod.yml")


@pytest.fixture(params=COMPOSE_FILES)
def compose(request) -> dict:
    return yaml.safe_load((ROOT / request.param).read_text())


def test_every_service_has_an_api_and_a_worker_container(compose):
    names = set(compose["services"])
    for service in SERVICE_NAMES:
        assert {f"{service}-service", f"{service}-worker"} <= names


def test_each_container_runs_its_own_service_and_role(compose):
    for name, spec in compose["services"].items():
        if name in ("kafka", "mongo"):
            continue
        service, role = name.split("-")
        roles = {"service": "api", "worker": "worker", "seed": "seed"}
        assert spec["command"] == ["python", "main.py", service, roles[role]]


def test_inventory_starts_after_its_catalogue_is_seeded_once(compose):
    services = compose["services"]
    assert services["inventory-seed"]["restart"] == "no"
    for name in ("inventory-service", "inventory-worker"):
        assert services[name]["depends_on"]["inventory-seed"] == {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"]["mongo"] == {"condition": "service_healthy"}


def test_dependencies_name_existing_services(compose):
    for spec in compose["services"].values():
        for dependency in spec.get("depends_on", {}):
            assert dependency in compose["services"]


def _interpolated(value: str) -> str:
    """What compose makes of ``${NAME:-default}`` (the default) and of a required ``${NAME:?why}``
    (a value a user would give: 40 characters, long enough for a JWT secret)."""
    if value.startswith("${") and ":?" in value:
        return "x" * 40
    if value.startswith("${") and ":-" in value:
        return value.split(":-", 1)[1].rstrip("}")
    return value


def test_the_environment_of_a_container_loads_as_valid_settings(compose):
    for name, spec in compose["services"].items():
        if name in ("kafka", "mongo"):
            continue
        env = {k: _interpolated(str(v)) for k, v in spec["environment"].items()}
        settings = load_settings(name.split("-")[0], env=env)
        assert settings.kafka.external and settings.mongo.external
        assert settings.this.host == "0.0.0.0"
        assert settings.services["monitoring"].url == "http://monitoring-service:5006"


def test_published_ports_match_the_configured_ports(compose):
    settings = load_settings(env={})
    for service in SERVICE_NAMES:
        ports = compose["services"][f"{service}-service"]["ports"]
        assert str(ports[0]).split(":")[-1] == str(settings.services[service].port)


def test_workers_can_scale_because_they_publish_no_ports(compose):
    for service in SERVICE_NAMES:
        assert "ports" not in compose["services"][f"{service}-worker"]


def test_the_image_installs_the_project():
    dockerfile = Path(ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and "main.py" in dockerfile


def test_the_image_ships_the_runtime_only():
    copied = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}

    assert copied == {"pyproject.toml", "shared", "services", "config.yaml", "main.py"}
    assert {"devstack", "load", "tests"} <= ignored


def test_what_a_container_runs_imports_no_development_tooling():
    # What the image holds: main.py (`python main.py <service> <role>`), shared/ and services/.
    code = """
import importlib, pkgutil, sys
for name in ("devstack", "load", "tests"):
    sys.modules[name] = None  # not in the image: importing any of them now fails
import main, services, shared
for package in (shared, services):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
