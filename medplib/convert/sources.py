"""Lazy readers for weight files: safetensors and torch pickles, one tensor at a time.

A checkpoint of 24 GB must convert on a machine with less memory than that, so tensors are
opened by name (safetensors) or memory-mapped (torch zip pickles) and only read when written.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from medplib.errors import UserInputError


@dataclass
class TensorRef:
    """Where one tensor lives; `load()` reads it."""

    file: Path
    key: str
    shape: tuple[int, ...]
    itemsize: int  # bytes per element as stored
    floating: bool
    load: Callable[[], torch.Tensor]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n


# safetensors dtype codes → (bytes per element, floating point?)
_ST_DTYPES = {
    "F64": (8, True),
    "F32": (4, True),
    "F16": (2, True),
    "BF16": (2, True),
    "F8_E4M3": (1, True),
    "F8_E5M2": (1, True),
    "I64": (8, False),
    "I32": (4, False),
    "I16": (2, False),
    "I8": (1, False),
    "U8": (1, False),
    "BOOL": (1, False),
}


def safetensors_refs(path: Path) -> dict[str, TensorRef]:
    """Tensors of one safetensors file, read on demand."""
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as exc:  # safetensors raises its own error types
        raise UserInputError(f"{path} is not a readable safetensors file ({exc}).") from None
    refs = {}
    for key in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
        piece = handle.get_slice(key)
        shape = tuple(int(s) for s in piece.get_shape())
        itemsize, floating = _ST_DTYPES.get(piece.get_dtype(), (4, True))
        refs[key] = TensorRef(path, key, shape, itemsize, floating, partial(handle.get_tensor, key))
    return refs


def load_torch_file(path: Path, *, trust_pickle: bool = False) -> Any:
    """`torch.load` on CPU, memory-mapped when the file allows it.

    Only tensors and plain containers are accepted unless `trust_pickle`: a pickle can run
    arbitrary code, so general objects must be an explicit choice for files from a trusted source.
    """
    try:
        try:
            return torch.load(path, map_location="cpu", mmap=True, weights_only=not trust_pickle)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            # Legacy (non-zip) torch.save files cannot be memory-mapped.
            return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        if trust_pickle:
            raise UserInputError(f"{path} could not be unpickled ({exc}).") from None
        raise UserInputError(
            f"{path} holds Python objects besides tensors; if it comes from a source you trust, "
            "pass --trust-pickle to load it anyway."
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise UserInputError(f"{path} is not a readable PyTorch file ({exc}).") from None


def _same(value: torch.Tensor) -> torch.Tensor:
    return value


def _state_dict_refs(state: dict[str, Any], path: Path) -> dict[str, TensorRef]:
    refs = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            refs[key] = TensorRef(
                path,
                key,
                tuple(value.shape),
                value.element_size(),
                value.is_floating_point(),
                partial(_same, value),
            )
    return refs


def torch_file_refs(
    path: Path, *, trust_pickle: bool = False, inner: str | None = None
) -> dict[str, TensorRef]:
    """Tensors of a torch file; `inner` picks a sub-dict (e.g. "model" of a SAM checkpoint)."""
    obj = load_torch_file(path, trust_pickle=trust_pickle)
    if inner is not None and isinstance(obj, dict) and isinstance(obj.get(inner), dict):
        obj = obj[inner]
    if not isinstance(obj, dict):
        raise UserInputError(
            f"{path} holds a {type(obj).__name__}, not a state dict of named tensors."
        )
    return _state_dict_refs(obj, path)


def _indexed(directory: Path, index_name: str) -> list[Path] | None:
    index = directory / index_name
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserInputError(f"{index} is not a valid weight index ({exc}).") from None
    files = [directory / name for name in sorted(set(weight_map.values()))]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise UserInputError(
            f"{index.name} lists {absent[:3]} but those files are not in {directory}; "
            "download the whole checkpoint."
        )
    return files


def directory_refs(
    directory: Path, *, trust_pickle: bool = False
) -> tuple[dict[str, TensorRef], list[str]]:
    """All tensors of a Hugging Face-style weights directory (safetensors and/or .bin shards).

    Safetensors win where both formats hold the same name. Returns (refs, notes).
    """
    notes: list[str] = []
    st_files = _indexed(directory, "model.safetensors.index.json")
    if st_files is None:
        st_files = sorted(directory.glob("*.safetensors"))
    bin_files = _indexed(directory, "pytorch_model.bin.index.json")
    if bin_files is None:
        # training_args.bin and similar are pickled settings, not weights.
        bin_files = sorted(directory.glob("pytorch_model*.bin"))
    refs: dict[str, TensorRef] = {}
    for f in bin_files:
        refs.update(torch_file_refs(f, trust_pickle=trust_pickle))
    shadowed = 0
    for f in st_files:
        found = safetensors_refs(f)
        shadowed += len(found.keys() & refs.keys())
        refs.update(found)
    if shadowed:
        notes.append(f"{shadowed} tensors exist as both .bin and .safetensors; used .safetensors.")
    return refs, notes
