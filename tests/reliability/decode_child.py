"""Decode one file, ``copies`` times at once, as the server does; print the peak RSS as JSON.

Run as ``python -m tests.reliability.decode_child PATH [COPIES]`` so that the peak belongs to
this process alone (ru_maxrss of a fresh interpreter), not to the test runner.
"""

from __future__ import annotations

import json
import resource
import sys
import threading

from worker.services.errors import ServiceError
from worker.services.images import decode_slot, decode_upload
from worker.settings import Settings


def main(path: str, copies: int) -> None:
    settings = Settings()  # production defaults: the environment is cleared by the caller
    with open(path, "rb") as fh:
        data = fh.read()
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
    outcomes: list[str] = []

    def one() -> None:
        try:
            with decode_slot(settings):
                loaded = decode_upload(data, settings=settings, filename="upload")
                outcomes.append(f"accepted {loaded.width_px}x{loaded.height_px}")
        except ServiceError as exc:
            outcomes.append(f"refused: {exc}")

    threads = [threading.Thread(target=one) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"base_mb": base_mb, "peak_mb": peak_mb, "outcomes": outcomes}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
