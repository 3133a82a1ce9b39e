"""Scenes from the real image/mask pairs in the shared ``realdata`` folder.

Every item carries the split that ``splits.csv`` gives its source file (``train``, ``holdout`` or
``zero-shot``); files that ``splits.csv`` does not list are skipped, so nothing reaches a
training file by accident. 2-D sets are read through their ``manifest.csv``; volumes (NIfTI,
NRRD, HDF5) are cut into a few axial slices where the label is present. Images are shrunk so
their longest side is at most `max_side` (masks with nearest neighbour).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medplib.data.files import FileReadError, image_to_rgb, read_mask
from medplib.data.synthetic import Scene, SceneObject

SPLITS = ("train", "holdout", "zero-shot")
_FINDING_WORDS = (
    "tumor", "tumour", "lesion", "nodule", "cyst", "polyp", "infection", "opacity", "pneumonia",
    "edema", "glioma", "melanoma", "neoplastic", "inflammatory", "hemorrhage", "effusion",
)  # fmt: skip
_MODALITY = {
    "ct": "ct", "mri": "mr", "mri-flair": "mr", "mri-t1-gd": "mr", "x-ray": "xray",
    "ultrasound": "ultrasound", "pathology": "pathology", "fundus": "fundus",
    "endoscope": "endoscopy", "dermoscopy": "dermoscopy", "oct": "oct",
}  # fmt: skip


@dataclass(frozen=True)
class _Source2D:
    modality: str | None  # None: from the manifest's `modality` column
    label_column: str
    site: str = ""
    threshold: float = 0  # masks: foreground where any channel exceeds this
    # Manifest label → structure name, where the label does not say what the mask holds.
    rename: tuple[tuple[str, str], ...] = ()
    # Labels of which each image shows exactly one (one biopsy-proven lesion per image): the
    # others are certainly absent, which gives true "Is there a malignant tumor?" → "No" answers.
    exclusive: tuple[str, ...] = ()


# Sources read through manifest.csv; the thresholds come from each folder's README.
SOURCES_2D = {
    "sam-med2d-demo": _Source2D("ct", "target"),
    "busi-mini": _Source2D("ultrasound", "label", "breast"),
    "isic2017-mini": _Source2D("dermoscopy", "label", "skin"),
    "kvasir-seg-mini": _Source2D("endoscopy", "label", "colon", threshold=127),  # JPEG masks
    "pannuke-mini": _Source2D("pathology", "label", threshold=127),  # interpolated RGB edges
    "biomedparse-demo": _Source2D(None, "target"),
    # Newer folders: masks are 0/255 PNG (any threshold works), labels in `label`.
    # dsb2018: the mask is the union of every nucleus, so it is asked for as "the nuclei".
    "dsb2018-nuclei": _Source2D("microscopy", "label", rename=(("nucleus", "nuclei"),)),
    "hc18-fetal-head": _Source2D("ultrasound", "label", "fetus"),
    "bus-bra-breast-ultrasound": _Source2D(
        "ultrasound", "label", "breast", exclusive=("benign tumor", "malignant tumor")
    ),
    "ph2-dermoscopy": _Source2D("dermoscopy", "label", "skin"),
    "kvasir-seg-extra": _Source2D("endoscopy", "label", "colon"),
}

# Short licence names for the data card's source table (from the realdata README's table);
# the card also quotes each folder's full licence paragraph.
LICENCES = {
    "biomedparse-demo": "Apache-2.0 repo; sources mixed, some non-commercial",
    "bus-bra-breast-ultrasound": "BUS-BRA licence (MIT-style, citation required)",
    "busi-mini": "CC0",
    "dsb2018-nuclei": "CC0 1.0 (BBBC038)",
    "hc18-fetal-head": "CC BY 4.0",
    "isic2017-mini": "CC-0",
    "kvasir-seg-extra": "research / education only",
    "kvasir-seg-mini": "research / education only",
    "msd-task06-lung-patches": "CC BY-SA 4.0",
    "pannuke-mini": "CC BY-NC-SA 4.0",
    "ph2-dermoscopy": "research use only",
    "pyradiomics-testcases": "BSD-3 repo; data provenance partly unclear",
    "sam-med2d-demo": "Apache-2.0 repo; CC BY 4.0 sources",
    "stardist-dsb2018-nuclei": "BSD-3 package; BBBC038 CC0",
    "totalsegmentator-example": "Apache-2.0; CC BY 4.0 data; model-made labels",
    "wbc-segmentation": "GPL-3.0",
}


@dataclass(frozen=True)
class RealItem:
    scene: Scene
    split: str  # "train", "holdout" or "zero-shot", from splits.csv
    source: str  # realdata subfolder
    origin: str  # "{source}/{file}": the image or volume this came from
    origin_sha256: str  # of that file's bytes
    case: str  # file-name-safe id of the source file (or patient), unique within the source
    slice: str = "2d_none"  # SA-Med2D slice tag: "2d_none", or "z_0012" for an axial slice
    # What must stay on one side of the train / val carve when one file holds several
    # patients (HDF5 patch files); empty: the source file, `origin`, is that unit.
    group: str = ""


def label_text(raw: str) -> str:
    """Readable structure name: ``kidney_right`` → ``right kidney``, ``left+kidney`` kept."""
    words = raw.replace("_", " ").replace("+", " ").split()
    for side in ("left", "right"):
        if side in words[1:]:
            words.remove(side)
            words.insert(0, side)
    return " ".join(words)


def _kind(name: str) -> str:
    return "finding" if any(w in name.lower() for w in _FINDING_WORDS) else "anatomy"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")


def _case(image_rel: str) -> str:
    """File-name-safe case id from a relative image path, without the ``images`` folder."""
    parts = [p for p in Path(image_rel).with_suffix("").parts if p != "images"]
    return _safe("-".join(parts))


def read_splits(root: Path) -> dict[tuple[str, str], str]:
    """(source, image entry) → split, from ``splits.csv``."""
    with (root / "splits.csv").open(newline="", encoding="utf-8") as fh:
        return {(r["source"], r["image"]): r["split"] for r in csv.DictReader(fh)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _shrink(rgb: np.ndarray, masks: dict[str, np.ndarray], max_side: int):
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb, masks
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL order (W, H)
    image = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    small = {
        k: np.asarray(
            Image.fromarray(m.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
        )
        > 127
        for k, m in masks.items()
    }
    return image, small


def _scene(
    rgb: np.ndarray,
    masks: dict[str, np.ndarray],
    modality: str,
    site: str,
    max_side: int,
    notes: list[str],
    where: str,
    absent: tuple[str, ...] = (),
) -> Scene | None:
    rgb, masks = _shrink(rgb, masks, max_side)
    min_area = max(16, round(0.0005 * rgb.shape[0] * rgb.shape[1]))
    objects = []
    for name, mask in masks.items():
        if mask.sum() < min_area:
            notes.append(f"{where}: '{name}' skipped, under {min_area} pixels at corpus size")
            continue
        objects.append(SceneObject(name, mask, _kind(name)))
    if not objects:
        notes.append(f"{where}: skipped, no structure large enough")
        return None
    return Scene(rgb, modality, site, tuple(objects), absent)


def _iter_2d(
    root: Path, source: str, spec: _Source2D, splits, notes, max_side
) -> Iterator[RealItem]:
    folder = root / source
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        notes.append(f"{source}: skipped, no manifest.csv")
        return
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        by_image.setdefault(row["image"], []).append(row)
    for image_rel, group in sorted(by_image.items()):
        where = f"{source}/{image_rel}"
        split = splits.get((source, image_rel))
        if split not in SPLITS:
            notes.append(f"{where}: skipped, not listed in splits.csv")
            continue
        try:
            rgb = image_to_rgb(Image.open(folder / image_rel))
            masks: dict[str, np.ndarray] = {}
            for row in sorted(group, key=lambda r: r["mask"]):
                name = label_text(row[spec.label_column])
                name = dict(spec.rename).get(name, name)
                mask = read_mask(folder / row["mask"], spec.threshold).mask
                masks[name] = masks[name] | mask if name in masks else mask
        except (OSError, FileReadError) as exc:
            notes.append(f"{where}: skipped, {exc}")
            continue
        modality = spec.modality or _MODALITY.get(group[0]["modality"].lower(), "unknown")
        site = spec.site or group[0].get("site", "") or ""
        absent = tuple(n for n in spec.exclusive if n not in masks) if spec.exclusive else ()
        scene = _scene(rgb, masks, modality, site, max_side, notes, where, absent)
        if scene is not None:
            case = _case(image_rel)
            yield RealItem(scene, split, source, where, _sha256(folder / image_rel), case)


def _iter_wbc(root: Path, splits, notes, max_side) -> Iterator[RealItem]:
    source, folder = "wbc-segmentation", root / "wbc-segmentation"
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: r["image"])
    for row in rows:
        where = f"{source}/{row['image']}"
        split = splits.get((source, row["image"]))
        if split not in SPLITS:
            notes.append(f"{where}: skipped, not listed in splits.csv")
            continue
        try:
            rgb = image_to_rgb(Image.open(folder / row["image"]))
            values = np.asarray(Image.open(folder / row["mask"]).convert("L"))
        except OSError as exc:
            notes.append(f"{where}: skipped, {exc}")
            continue
        # README: 255 nucleus, 128 cytoplasm, 0 background.
        masks = {"nucleus": values >= 192, "cytoplasm": (values >= 64) & (values < 192)}
        scene = _scene(rgb, masks, "microscopy", "blood smear", max_side, notes, where)
        if scene is not None:
            case = _case(row["image"])
            yield RealItem(scene, split, source, where, _sha256(folder / row["image"]), case)


def _window(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    grey = np.clip((values.astype(np.float32) - lo) / (hi - lo), 0, 1)
    return np.repeat(np.round(grey * 255).astype(np.uint8)[..., None], 3, axis=2)


def _stretch(values: np.ndarray, volume: np.ndarray) -> np.ndarray:
    body = volume[volume > volume.min()]
    lo, hi = np.percentile(body if body.size else volume, [1, 99])
    return _window(values, float(lo), float(max(hi, lo + 1)))


def _pick_slices(label: np.ndarray, min_area: int, count: int) -> list[int]:
    """Up to `count` evenly spaced axial slices (axis 2) where the label covers ≥ min_area."""
    area = (label > 0).sum(axis=(0, 1))
    good = np.flatnonzero(area >= min_area)
    if good.size <= count:
        return [int(k) for k in good]
    return sorted({int(good[round(i)]) for i in np.linspace(0, good.size - 1, count)})


def _volume_items(
    source: str, origin: Path, root: Path, image, label, names, split, modality, site, ct,
    notes, max_side, slices,
) -> Iterator[RealItem]:  # fmt: skip
    """Axial slices of a (X, Y, Z) volume already oriented so that slice.T is displayed as-is."""
    present_ids = [int(i) for i in np.unique(label) if i != 0 and str(int(i)) in names]
    all_names = tuple(label_text(names[str(i)]) for i in present_ids)
    sha = _sha256(origin)
    rel = origin.relative_to(root).as_posix()
    for k in _pick_slices(label, 16, slices):
        img2d = image[:, :, k].T  # (rows, cols)
        lab2d = label[:, :, k].T
        rgb = _window(img2d, -160, 240) if ct else _stretch(img2d, image)
        masks = {label_text(names[str(i)]): lab2d == i for i in present_ids if (lab2d == i).any()}
        absent = tuple(n for n in all_names if n not in masks)
        where = f"{rel} z={k}"
        scene = _scene(rgb, masks, modality, site, max_side, notes, where, absent)
        if scene is not None:
            case = _safe(origin.name.split(".")[0])
            yield RealItem(scene, split, source, rel, sha, case, f"z_{k:04d}")


def _iter_totalseg(root: Path, splits, notes, max_side, slices) -> Iterator[RealItem]:
    import nibabel as nib

    source, folder = "totalsegmentator-example", root / "totalsegmentator-example"
    names_all = json.loads((folder / "label_names.json").read_text(encoding="utf-8"))
    for (src, image_name), split in sorted(splits.items()):
        if src != source:
            continue
        mr = "_mr" in image_name
        label_name = "example_seg_mr.nii.gz" if mr else "example_seg.nii.gz"
        try:
            vol = nib.as_closest_canonical(nib.load(folder / image_name))
            lab = nib.as_closest_canonical(nib.load(folder / label_name))
            # RAS+: flip x and y so rows run anterior → posterior and the patient's right is
            # on the image left (radiological convention).
            image = np.asarray(vol.dataobj)[::-1, ::-1, :]
            label = np.asarray(lab.dataobj).astype(np.int32)[::-1, ::-1, :]
        except Exception as exc:  # nibabel raises many types for a damaged file
            notes.append(f"{source}/{image_name}: skipped, {exc}")
            continue
        names = names_all["total_mr" if mr else "total"]
        yield from _volume_items(
            source, folder / image_name, root, image, label, names, split,
            "mr" if mr else "ct", "", not mr, notes, max_side, slices,
        )  # fmt: skip


def read_nrrd(path: Path) -> tuple[np.ndarray, dict[str, str]]:
    """Array (in NRRD axis order, fastest first) and header fields of an attached-header NRRD.

    Raw and gzip encodings only; raises ValueError otherwise.
    """
    raw = path.read_bytes()
    if not raw.startswith(b"NRRD"):
        raise ValueError(f"{path.name} is not an NRRD file")
    end = raw.find(b"\n\n")
    if end < 0:
        raise ValueError(f"{path.name}: NRRD header has no end")
    fields: dict[str, str] = {}
    for line in raw[:end].decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    if "data file" in fields or "datafile" in fields:
        raise ValueError(f"{path.name}: detached NRRD data files are not supported")
    data = raw[end + 2 :]
    encoding = fields.get("encoding", "raw").lower()
    if encoding in ("gzip", "gz"):
        data = gzip.decompress(data)
    elif encoding != "raw":
        raise ValueError(f"{path.name}: NRRD encoding {encoding!r} is not supported")
    types = {
        "short": "i2", "signed short": "i2", "short int": "i2", "int16": "i2", "int16_t": "i2",
        "ushort": "u2", "unsigned short": "u2", "uint16": "u2", "uint16_t": "u2",
        "int": "i4", "signed int": "i4", "int32": "i4", "int32_t": "i4",
        "uint": "u4", "unsigned int": "u4", "uint32": "u4", "uint32_t": "u4",
        "uchar": "u1", "unsigned char": "u1", "uint8": "u1", "uint8_t": "u1",
        "char": "i1", "signed char": "i1", "int8": "i1", "int8_t": "i1",
        "float": "f4", "double": "f8",
    }  # fmt: skip
    kind = types.get(fields.get("type", "").lower())
    if kind is None:
        raise ValueError(f"{path.name}: NRRD type {fields.get('type')!r} is not supported")
    order = ">" if fields.get("endian", "little").lower() == "big" else "<"
    sizes = [int(v) for v in fields["sizes"].split()]
    array = np.frombuffer(data, np.dtype(order + kind), count=int(np.prod(sizes)))
    return array.reshape(sizes[::-1]).T, fields


def _lps_display(array: np.ndarray, fields: dict[str, str]) -> np.ndarray:
    """Flip (X, Y, Z) so rows run anterior → posterior and the patient's right is image left."""
    dirs = re.findall(r"\(([^)]*)\)", fields.get("space directions", ""))
    if len(dirs) >= 2 and "left-posterior" in fields.get("space", ""):
        x = [float(v) for v in dirs[0].split(",")]
        y = [float(v) for v in dirs[1].split(",")]
        if x[int(np.argmax(np.abs(x)))] < 0:
            array = array[::-1]
        if y[int(np.argmax(np.abs(y)))] < 0:
            array = array[:, ::-1]
    return array


def _iter_nrrd(root: Path, splits, notes, max_side, slices) -> Iterator[RealItem]:
    source, folder = "pyradiomics-testcases", root / "pyradiomics-testcases"
    for (src, image_name), split in sorted(splits.items()):
        if src != source:
            continue
        label_name = image_name.replace("_image", "_label")
        try:
            image, fields = read_nrrd(folder / image_name)
            label, _ = read_nrrd(folder / label_name)
        except (OSError, ValueError, KeyError) as exc:
            notes.append(f"{source}/{image_name}: skipped, {exc}")
            continue
        image, label = _lps_display(image, fields), _lps_display(label, fields)
        name = "lesion" if image_name.startswith("breast") else "tumor"
        site = "breast" if image_name.startswith("breast") else "brain"
        yield from _volume_items(
            source, folder / image_name, root, image, (label > 0).astype(np.int32),
            {"1": name}, split, "mr", site, False, notes, max_side, slices,
        )  # fmt: skip


# Each MSD Task06 patch file holds 13 patients, 10 consecutive patches each (the tumour sizes
# come in blocks of ten); a patient's patches are near-copies of one another, so they go to
# train or val together.
_MSD_PATCHES_PER_PATIENT = 10


def _iter_msd(root: Path, splits, notes, max_side, patches: int | None) -> Iterator[RealItem]:
    source, folder = "msd-task06-lung-patches", root / "msd-task06-lung-patches"
    entries = sorted((img, split) for (src, img), split in splits.items() if src == source)
    if not entries:
        return
    if importlib.util.find_spec("h5py") is None:
        notes.append(f"{source}: skipped, reading HDF5 needs the h5py package (not installed)")
        return
    import h5py

    for entry, split in entries:
        file_name, _, dataset = entry.partition(":")
        path = folder / file_name
        try:
            with h5py.File(path, "r") as fh:
                images = np.asarray(fh[dataset or "images"])[:, 0]  # (N, 48, 48) in [0, 1]
                labels = np.asarray(fh["labels"])[:, 0] > 0.5
        except (OSError, KeyError) as exc:
            notes.append(f"{source}/{file_name}: skipped, {exc}")
            continue
        with_tumor = np.flatnonzero(labels.sum(axis=(1, 2)) >= 16)
        if patches is not None and with_tumor.size > patches:
            picks = np.linspace(0, with_tumor.size - 1, patches).round().astype(int)
            with_tumor = with_tumor[picks]
        sha = _sha256(path)
        stem = _safe(file_name.split(".")[0])
        for k in with_tumor.tolist():  # ascending and distinct: flatnonzero, even picks
            patient = k // _MSD_PATCHES_PER_PATIENT
            rgb = _window(images[k], 0.0, 1.0)
            where = f"{source}/{file_name} patch {k}"
            scene = _scene(rgb, {"tumor": labels[k]}, "ct", "lung", max_side, notes, where)
            if scene is not None:
                yield RealItem(
                    scene, split, source, f"{source}/{file_name}", sha,
                    f"{stem}-pt{patient:02d}", f"p_{k:04d}",
                    group=f"{source}/{file_name}#patient{patient:02d}",
                )  # fmt: skip


def _iter_stardist(root: Path, splits, notes, max_side) -> Iterator[RealItem]:
    source, folder = "stardist-dsb2018-nuclei", root / "stardist-dsb2018-nuclei"
    for (src, image_name), split in sorted(splits.items()):
        if src != source:
            continue
        try:
            rgb = image_to_rgb(Image.open(folder / image_name))
            mask = read_mask(folder / image_name.replace("img", "mask")).mask  # instance ids > 0
        except (OSError, FileReadError) as exc:
            notes.append(f"{source}/{image_name}: skipped, {exc}")
            continue
        where = f"{source}/{image_name}"
        scene = _scene(rgb, {"nuclei": mask}, "microscopy", "", max_side, notes, where)
        if scene is not None:
            yield RealItem(
                scene,
                split,
                source,
                where,
                _sha256(folder / image_name),
                _safe(image_name.split(".")[0]),
            )


def iter_realdata(
    root: Path, notes: list[str], *, max_side: int = 256, slices_per_volume: int = 6,
    patches_per_file: int | None = None,
) -> Iterator[RealItem]:  # fmt: skip
    """Every usable item of the realdata folder, in a fixed order; what is skipped goes to `notes`.

    `patches_per_file` caps the HDF5 patches read per file (evenly spaced); None reads every
    patch with at least 16 tumour pixels.
    """
    splits = read_splits(root)
    known = {src for src, _ in splits}
    for source in sorted(known):
        if not (root / source).is_dir():
            notes.append(f"{source}: skipped, folder missing")
            continue
        if source in SOURCES_2D:
            yield from _iter_2d(root, source, SOURCES_2D[source], splits, notes, max_side)
        elif source == "wbc-segmentation":
            yield from _iter_wbc(root, splits, notes, max_side)
        elif source == "totalsegmentator-example":
            yield from _iter_totalseg(root, splits, notes, max_side, slices_per_volume)
        elif source == "pyradiomics-testcases":
            yield from _iter_nrrd(root, splits, notes, max_side, slices_per_volume)
        elif source == "msd-task06-lung-patches":
            yield from _iter_msd(root, splits, notes, max_side, patches_per_file)
        elif source == "stardist-dsb2018-nuclei":
            yield from _iter_stardist(root, splits, notes, max_side)
        else:
            notes.append(f"{source}: skipped, no reader for this folder")


def read_credits(root: Path) -> dict[str, dict[str, str]]:
    """Per subfolder: its README title, its **Origin:** and **Licence:** paragraphs verbatim,
    and a short licence name (`LICENCES`).

    A marker counts at the start of any line, colon inside or outside the bold.
    """
    credits: dict[str, dict[str, str]] = {}
    for readme in sorted(root.glob("*/README.md")):
        text = readme.read_text(encoding="utf-8")
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text)]
        entry = {
            "title": text.splitlines()[0].lstrip("# ").strip() if text else "",
            "licence_name": LICENCES.get(readme.parent.name, "see the licence paragraph"),
        }
        for key, marker in (("origin", "Origin"), ("licence", "Licence")):
            # "**Licence:** CC0" and "**Licence: CC BY 4.0** — ..." both count, from the line
            # that opens with the marker to the end of its paragraph.
            opens = re.compile(rf"^\*\*{marker}:.*", re.MULTILINE | re.DOTALL)
            entry[key] = next((m.group(0) for p in paragraphs if (m := opens.search(p))), "")
        credits[readme.parent.name] = entry
    return credits
