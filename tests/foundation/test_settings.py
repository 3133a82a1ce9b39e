from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from serving.settings import Settings, describe_error, unknown_variable


def test_defaults_are_embedded_sqlite_under_var():
    s = Settings()
    assert s.embedded and s.mode == "embedded"
    assert s.database_url == "sqlite:///./var/medplib.db"
    assert str(s.artefact_dir) == "var/artefacts"
    assert (s.host, s.port) == ("127.0.0.1", 7860)


def test_postgres_urls_get_the_installed_driver(monkeypatch):
    monkeypatch.setenv("MEDPLIB_DATABASE_URL", "postgres://u:p@db:5432/x")
    assert Settings().database_url == "postgresql+psycopg://u:p@db:5432/x"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"MEDPLIB_PORT": "99999"}, "MEDPLIB_PORT"),
        ({"MEDPLIB_DATABASE_URL": "mysql://x"}, "sqlite:// or postgresql://"),
        ({"MEDPLIB_BROKER_URL": "amqp://guest@x//"}, "redis://"),
        ({"MEDPLIB_DEVICE": "tpu"}, "cpu, cuda"),
        ({"MEDPLIB_ADMIN_PASSWORD": "changethis"}, "unsafe"),
        ({"MEDPLIB_JOB_SOFT_TIME_LIMIT_S": "400"}, "below MEDPLIB_JOB_TIME_LIMIT_S"),
        ({"MEDPLIB_BROKER_VISIBILITY_TIMEOUT_S": "100"}, "twice"),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch, env, fragment):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError) as err:
        Settings()
    assert fragment in describe_error(err.value)


@pytest.mark.parametrize(
    "name, value, start",
    [
        ("MEDPLIB_PORT", "0", "medplib: invalid setting MEDPLIB_PORT"),
        (
            "MEDPLIB_CHECKPOINTS",
            "good=/a,Bad=/b",
            "medplib: invalid setting MEDPLIB_CHECKPOINTS: 'Bad' is not",
        ),
    ],
)
def test_process_stops_with_one_line_and_status_2(name, value, start):
    env = {**os.environ, name: value}
    proc = subprocess.run(
        [sys.executable, "-m", "medplib.cli", "db", "current"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start)


def test_admin_password_is_never_in_the_repr(monkeypatch):
    monkeypatch.setenv("MEDPLIB_ADMIN_PASSWORD", "a-long-secret-value-123")
    assert "a-long-secret" not in repr(Settings())


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"MEDPLIB_DATABSE_URL": "sqlite:///x.db"},
            "unknown setting MEDPLIB_DATABSE_URL; did you mean MEDPLIB_DATABASE_URL?",
        ),
        ({"MEDPLIB_JOB_TIMELIMIT_S": "5"}, "did you mean MEDPLIB_JOB_TIME_LIMIT_S?"),
        ({"MEDPLIB_COLOUR": "blue"}, "unknown setting MEDPLIB_COLOUR; see the README"),
    ],
)
def test_a_misspelt_variable_is_named_with_the_nearest_setting(env, line):
    assert line in (unknown_variable(env) or "")


def test_known_settings_and_other_tools_variables_pass():
    env = {
        "MEDPLIB_PORT": "1",
        "MEDPLIB_NEW_PASSWORD": "x",
        "MEDPLIB_API_URL": "http://h/",
        "MEDPLIB_CACHE_DIR": "/tmp",
        "MEDPLIB_TEST_POSTGRES_URL": "postgresql://x",
        "PATH": "/bin",
    }
    assert unknown_variable(env) is None


def test_serve_with_a_misspelt_variable_stops_with_one_line():
    env = {**os.environ, "MEDPLIB_PROT": "7000"}
    proc = subprocess.run(
        [sys.executable, "-m", "medplib.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "medplib: unknown setting MEDPLIB_PROT; did you mean MEDPLIB_PORT?"
    ]
