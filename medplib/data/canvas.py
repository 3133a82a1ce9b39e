"""The scene model of the synthetic generator: a label map of nested, named layers.

Structures are painted as layers, later layers on top; a layer may be confined to another
(``within``) and nested in one (``parent``). A named structure's mask is its own pixels plus
those of every layer nested in it, so a liver mask includes its tumour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FINDINGS = frozenset(
    {"tumor", "cyst", "nodule", "edema", "pleural effusion", "polyp", "ulcer", "hemorrhage"}
    | {"exudates", "lesion", "blue-white veil", "dark globules"}
)  # every other name is anatomy


@dataclass(frozen=True)
class SceneObject:
    name: str
    mask: np.ndarray  # (H, W) bool
    kind: str  # "anatomy" or "finding"
    parent: str | None = None  # the named structure it lies in, if any


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    modality: str
    site: str
    objects: tuple[SceneObject, ...]
    absent: tuple[str, ...] = ()  # names that could be here but certainly are not


@dataclass
class Layer:
    name: str | None
    value: tuple[float, ...]  # grey level or RGB in [0, 1]
    parent: int


@dataclass
class Canvas:
    size: int
    rng: np.random.Generator
    layers: list[Layer] = field(default_factory=lambda: [Layer(None, (0.0,), -1)])
    labels: np.ndarray = field(init=False)
    extra: dict = field(default_factory=dict)  # what a renderer needs beyond the label map

    def __post_init__(self) -> None:
        self.labels = np.zeros((self.size, self.size), dtype=np.int16)  # (H, W) layer index

    def add(
        self,
        region: np.ndarray,
        value: float | tuple[float, ...],
        name: str | None = None,
        *,
        parent: int = 0,
        within: np.ndarray | None = None,
    ) -> int:
        """Paint `region` (bool) as a new layer on top; returns the layer index."""
        index = len(self.layers)
        self.layers.append(Layer(name, value if isinstance(value, tuple) else (value,), parent))
        self.labels[region if within is None else region & within] = index
        return index

    def own(self, index: int) -> np.ndarray:
        return self.labels == index

    def mask(self, index: int) -> np.ndarray:
        """Pixels of the layer and of every layer nested in it."""
        family = [index]
        for i, layer in enumerate(self.layers):
            p = layer.parent
            while p > 0 and p != index:
                p = self.layers[p].parent
            if p == index and i != index:
                family.append(i)
        return np.isin(self.labels, family)

    def named(self, name: str) -> np.ndarray | None:
        """Class-level mask of a named structure, or None if the scene has none."""
        found = [i for i, layer in enumerate(self.layers) if layer.name == name]
        return np.logical_or.reduce([self.mask(i) for i in found]) if found else None

    def lookup(self) -> np.ndarray:
        """(H, W) or (H, W, 3) float32 layer values."""
        channels = max(len(layer.value) for layer in self.layers)
        lut = np.array(
            [layer.value * (channels // len(layer.value)) for layer in self.layers], np.float32
        )  # (L, C)
        out = lut[self.labels]
        return out[..., 0] if channels == 1 else out

    def fold_small(self, min_area: int) -> None:
        """Repaint named structures under `min_area` pixels as their parent: too small to ask about."""
        for i in range(len(self.layers) - 1, 0, -1):
            layer = self.layers[i]
            if layer.name is not None and self.mask(i).sum() < min_area:
                self.labels[self.labels == i] = layer.parent
                layer.name = None

    def objects(self) -> tuple[SceneObject, ...]:
        """Named structures, one class-level mask per name."""
        found: dict[str, SceneObject] = {}
        for i, layer in enumerate(self.layers):
            if layer.name is None:
                continue
            mask = self.mask(i)
            if layer.name in found:  # one class, several layers: one class-level mask
                prev = found[layer.name]
                found[layer.name] = SceneObject(prev.name, prev.mask | mask, prev.kind, prev.parent)
                continue
            p = layer.parent
            while p > 0 and self.layers[p].name is None:
                p = self.layers[p].parent
            kind = "finding" if layer.name in FINDINGS else "anatomy"
            found[layer.name] = SceneObject(layer.name, mask, kind, self.layers[p].name)
        return tuple(found.values())
