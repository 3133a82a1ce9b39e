from __future__ import annotations

import subprocess
import sys

from medplib.cli import build_parser


def test_help_lists_the_platform_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "medplib.cli", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    for name in ("serve", "worker", "db"):
        assert name in out


def test_library_never_imports_the_platform():
    code = (
        "import sys, medplib, medplib.cli, medplib.geometry, medplib.masks;"
        "bad=[m for m in sys.modules if m.split('.')[0] in ('webapp','worker','serving')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_worker_refuses_embedded_mode(capsys):
    from medplib.cli import main

    assert main(["worker"]) == 2
    assert "MEDPLIB_BROKER_URL is empty" in capsys.readouterr().err


def test_db_subcommands_parse():
    args = build_parser().parse_args(["db", "downgrade", "base"])
    assert (args.command, args.db_command, args.revision) == ("db", "downgrade", "base")


def test_building_the_command_line_imports_no_heavy_framework():
    # `medplib --help` and every subcommand's argument parsing must start quickly.
    code = (
        "import sys; from medplib.cli import build_parser; build_parser();"
        "heavy=[m for m in ('torch','gradio','transformers','sqlalchemy','celery') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
