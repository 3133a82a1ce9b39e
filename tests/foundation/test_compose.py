"""docker-compose.yml, checked without a Docker engine."""

from __future__ import annotations

from pathlib import Path

import yaml

from serving.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_healthchecks():
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "reconciler"}
    for name in ("postgres", "redis", "web", "worker"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["command"] == ["medplib", "db", "upgrade"]


def test_migrations_run_before_web_and_workers():
    services = _compose()["services"]
    for name in ("web", "worker", "reconciler"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_is_one_prefork_process_per_gpu():
    worker = _compose()["services"]["worker"]
    command = worker["command"]
    assert command[:2] == ["medplib", "worker"]
    assert "--pool=prefork" in command and command[command.index("-c") + 1] == "1"
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and len(device["device_ids"]) == 1


def test_one_reconciler_runs_beat_on_the_cpu_queue():
    command = _compose()["services"]["reconciler"]["command"]
    assert command[:2] == ["medplib", "worker"] and "--beat" in command
    assert command[command.index("--queues") + 1] == "cpu"
    assert "deploy" not in _compose()["services"]["reconciler"]  # no GPU for a periodic check


def test_every_environment_variable_is_a_known_setting():
    known = {f"MEDPLIB_{name.upper()}" for name in Settings.model_fields}
    for name, service in _compose()["services"].items():
        for key in service.get("environment", {}) or {}:
            if key.startswith("POSTGRES_"):
                assert name == "postgres"
                continue
            assert key in known, f"{name}: {key} is not a setting"


def test_compose_commands_parse_with_the_cli():
    from medplib.cli import build_parser

    parser = build_parser()
    for name in ("migrate", "web", "worker", "reconciler"):
        command = _compose()["services"][name]["command"]
        args = parser.parse_args(command[1:])
        assert args.command == command[1]
