"""Decode one file, ``copies`` times at once, as the server does; print the peak RSS as JSON.

Run as ``python -m tests.reliability.decode_child PATH [COPIES]`` so that the peak belongs to
this process alone. The peak is the kernel's high-water mark of this address space (``VmHWM``),
not ``ru_maxrss``: after fork + exec, ``ru_maxrss`` still carries the parent's peak, so a large
test runner would hide (or fake) the decoder's own peak.
"""

from __future__ import annotations

import json
import sys
import threading

from serving.services.errors import ServiceError
from serving.services.images import decode_slot, decode_upload
from serving.settings import Settings


def _high_water_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(path: str, copies: int) -> None:
    settings = Settings()  # production defaults: the environment is cleared by the caller
    with open(path, "rb") as fh:
        data = fh.read()
    base_mb = _high_water_mb()
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
    peak_mb = _high_water_mb()
    print(json.dumps({"base_mb": base_mb, "peak_mb": peak_mb, "outcomes": outcomes}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1)
