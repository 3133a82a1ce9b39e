"""A predictor that misbehaves on request, plugged in with MEDPLIB_PREDICTOR=tests.reliability.chaos:make.

Questions steer it: "poison" kills the process, "sleep N" sleeps N seconds first.
"""

from __future__ import annotations

import os
import signal
import time

from serving.predictors import NoopPredictor


class ChaosPredictor(NoopPredictor):
    checkpoint_id = "chaos"

    def ask(self, question, regions=(), history=(), *, progress=None):
        if "poison" in question:
            os.kill(os.getpid(), signal.SIGKILL)
        if question.startswith("sleep "):
            seconds = float(question.split()[1])
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if progress is not None:
                    progress("generating", 0.5)
                time.sleep(0.05)
        return super().ask(question, regions, history, progress=progress)


def make(*, checkpoint: str, device: str) -> ChaosPredictor:
    return ChaosPredictor()
