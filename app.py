"""Hugging Face Spaces entry point: the MedPLIB web app in embedded mode.

On a Space with persistent storage (mounted at ``/data``) the database and artefacts live
there, so sessions survive restarts; otherwise they live under ``./var`` and are lost when
the Space restarts. On a ZeroGPU Space the model runs on the GPU that ``spaces.GPU`` lends
for each answer (see `serving.zerogpu`), so such a Space can serve the 7B preset. Explicit
``MEDPLIB_*`` variables always win.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PERSISTENT = Path("/data")


def persistent_defaults(root: Path = PERSISTENT, env: dict[str, str] | None = None) -> dict:
    """The ``MEDPLIB_*`` defaults to add for a writable ``root`` (unset variables only)."""
    env = os.environ if env is None else env
    if not (root.is_dir() and os.access(root, os.W_OK)):
        return {}
    wanted = {
        "MEDPLIB_DATABASE_URL": f"sqlite:///{root / 'medplib.db'}",
        "MEDPLIB_ARTEFACT_DIR": str(root / "artefacts"),
    }
    return {key: value for key, value in wanted.items() if not env.get(key)}


def main() -> int:
    os.environ.update(persistent_defaults())
    # Spaces route traffic to 0.0.0.0:7860; embedded mode (no broker) runs jobs in-process.
    os.environ.setdefault("MEDPLIB_HOST", "0.0.0.0")
    os.environ.setdefault("MEDPLIB_PORT", os.environ.get("PORT", "7860"))
    from serving.zerogpu import on_zero_gpu

    if on_zero_gpu():
        os.environ.setdefault("MEDPLIB_DEVICE", "cuda")
    if os.environ.get("MEDPLIB_BROKER_URL"):
        print(
            "app.py: MEDPLIB_BROKER_URL is set; Spaces run in embedded mode only", file=sys.stderr
        )
        return 2

    from serving.migrate import prepare_database_or_exit
    from serving.settings import load_settings_or_exit
    from webapp.commands import create_app, launch

    settings = load_settings_or_exit()
    # SQLite (the Space's disk): migrated here, and the `admin` account from a Space secret.
    prepare_database_or_exit(settings)
    demo, platform = create_app(settings)
    platform.runner.start()
    try:
        launch(demo, settings)
    finally:
        platform.runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
