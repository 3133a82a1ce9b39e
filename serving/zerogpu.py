"""Hugging Face ZeroGPU: run the model call inside ``@spaces.GPU`` when the Space has one.

A ZeroGPU Space lends a GPU only for the duration of a function decorated with
``spaces.GPU``; outside such a call CUDA is not there. The ``spaces`` package and the
``SPACES_ZERO_GPU`` variable are present only on such a Space, so everywhere else (laptops,
CI, CPU Spaces, the Celery workers) the prediction function is used as it is.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

ENV_FLAG = "SPACES_ZERO_GPU"


def on_zero_gpu(env: Mapping[str, str] | None = None) -> bool:
    """True on a ZeroGPU Space: the flag is set and the ``spaces`` package is importable."""
    env = os.environ if env is None else env
    flag = env.get(ENV_FLAG, "").strip().lower()
    if flag in ("", "0", "false", "no"):
        return False
    return importlib.util.find_spec("spaces") is not None


def gpu_bound(fn: F, *, duration_s: int, env: Mapping[str, str] | None = None) -> F:
    """``fn`` decorated with ``spaces.GPU(duration=duration_s)`` on ZeroGPU, else ``fn``.

    ``duration_s`` is the longest a call may hold the GPU: the job's soft time limit, so a
    long 7B answer is not cut off by ZeroGPU before the platform's own limit applies.
    """
    if not on_zero_gpu(env):
        return fn
    import spaces

    return spaces.GPU(duration=duration_s)(fn)  # type: ignore[no-any-return]
