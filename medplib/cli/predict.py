"""`medplib predict`: answer one question about one image and print one JSON object.

The JSON holds the answer, the raw answer (with special tokens), one entry per `<SEG>` mask
(PNG path, COCO RLE, area, box, score), MoE routing statistics, timings, warnings and the
checkpoint id. `DESCRIPTION` below is the user-facing help.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medplib.errors import UserInputError
from medplib.geometry import (
    BoxPrompt,
    MaskPrompt,
    PointPrompt,
    RegionPrompt,
    prompt_to_mask,
    validate_prompt,
)
from medplib.imageio import LoadedImage, load_image
from medplib.masks import encode_rle, mask_to_png_bytes, png_bytes_to_mask

if TYPE_CHECKING:
    import torch

DEFAULT_OUT_DIR = Path("medplib-predict")  # relative to the working directory
DESCRIPTION = f"""\
Answer a question about one image and print one JSON object.

  medplib predict --image scan.dcm --question "What is in <region>?" --box 40,30,120,90

Images: PNG, JPEG, TIFF, BMP, GIF, WebP, DICOM or NIfTI. Regions (--point X,Y and
--box X0,Y0,X1,Y1 in original-image pixels, --region-mask PNG of the image's size) are
numbered in command-line order and fill the question's <region> tags in that order;
missing tags are appended. Write negative numbers with '=' (--box=-4,0,20,20).

Each <SEG> in the answer yields a mask, given inline as COCO RLE and written as a PNG
under --out (default ./{DEFAULT_OUT_DIR}/, created only when there is a mask) named
IMAGE-STEM-RUNID-segK.png. RUNID hashes the inputs: repeating a request rewrites the same
files, and different requests never overwrite each other's.
"""
# Names only: torch is imported when the command runs, so `medplib --help` stays fast.
DTYPES = ("auto", "float32", "bfloat16", "float16")
_EXAMPLES = {"point": "120,80", "box": "40,30,120,90"}


class _RegionAction(argparse.Action):
    """Collects --point/--box/--region-mask into one list, keeping command-line order."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items.append((self.const, values, option_string))
        setattr(namespace, self.dest, items)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "predict",
        help="answer a question about an image (JSON with answer, masks, routing, timings)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="checkpoint directory (default: the shipped demo or the untrained tiny checkpoint)",
    )
    p.add_argument("--image", required=True, metavar="PATH", help="image file")
    p.add_argument("--question", required=True, metavar="TEXT", help="question text")
    p.add_argument(
        "--point",
        dest="regions",
        action=_RegionAction,
        const="point",
        metavar="X,Y",
        help="point region in pixels (becomes a small square); repeatable",
    )
    p.add_argument(
        "--box",
        dest="regions",
        action=_RegionAction,
        const="box",
        metavar="X0,Y0,X1,Y1",
        help="box region in pixels; repeatable",
    )
    p.add_argument(
        "--region-mask",
        dest="regions",
        action=_RegionAction,
        const="mask",
        metavar="PNG",
        help="free-form region: non-zero pixels of a mask image of the same size; repeatable",
    )
    p.add_argument(
        "--out", metavar="DIR", help=f"where mask PNGs go (default ./{DEFAULT_OUT_DIR}/)"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default="auto", help="weights dtype (auto: fp32 on CPU)"
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="answer length limit")
    p.add_argument(
        "--temperature", type=float, default=0.0, help="0 = greedy (default); >0 samples"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (0, 1]")
    p.add_argument("--seed", type=int, help="seed for sampling (temperature > 0)")
    p.add_argument("--window", help="DICOM/NIfTI intensity window preset, or 'auto'")
    p.add_argument("--nifti-axis", type=int, default=2, help="NIfTI slicing axis (default 2)")
    p.add_argument("--nifti-slice", type=int, help="NIfTI slice index (default: the middle)")
    p.set_defaults(func=run, regions=None)


# ---------------------------------------------------------------------------------- parsing
def parse_numbers(text: str, count: int, flag: str) -> tuple[float, ...]:
    """'12,34' → (12.0, 34.0); raises UserInputError unless exactly `count` numbers."""
    kind = "point" if count == 2 else "box"
    names = "X,Y" if count == 2 else "X0,Y0,X1,Y1"
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != count:
            raise ValueError
        return tuple(float(p) for p in parts)
    except ValueError:
        raise UserInputError(
            f"{flag} {text!r} is not {count} comma-separated numbers {names} in pixels; "
            f"write e.g. {flag} {_EXAMPLES[kind]}."
        ) from None


def build_regions(
    items: list[tuple[str, str, str]] | None, height_px: int, width_px: int
) -> tuple[list[RegionPrompt], list[np.ndarray]]:
    """Parse and validate region options against the image size; returns (prompts, masks)."""
    prompts: list[RegionPrompt] = []
    masks: list[np.ndarray] = []
    for i, (kind, raw, flag) in enumerate(items or []):
        prompt: RegionPrompt
        if kind == "point":
            x, y = parse_numbers(raw, 2, flag)
            prompt = PointPrompt((x, y))
        elif kind == "box":
            x0, y0, x1, y1 = parse_numbers(raw, 4, flag)
            prompt = BoxPrompt((x0, y0, x1, y1))
        else:
            prompt = MaskPrompt(png_bytes_to_mask(_read_file(raw, flag)))
        try:
            validate_prompt(prompt, height_px=height_px, width_px=width_px, index=i)
        except UserInputError as exc:
            raise UserInputError(f"{flag} {raw}: {exc}") from None
        prompts.append(prompt)
        masks.append(prompt_to_mask(prompt, height_px=height_px, width_px=width_px))
    return prompts, masks


def _read_file(path: str, flag: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise UserInputError(f"{flag} {path} {what}; give the path of a file.")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{flag} {path} cannot be read ({exc.strerror}).") from None


def _device(name: str) -> torch.device:
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserInputError(
            f"--device {name!r} is not a torch device; use e.g. cpu or cuda."
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(
            "--device cuda was given but no CUDA GPU is available; use --device cpu."
        )
    return dev


def _region_doc(prompt: RegionPrompt) -> dict[str, Any]:
    if isinstance(prompt, PointPrompt):
        return {"kind": "point", "xy_px": list(prompt.xy_px)}
    if isinstance(prompt, BoxPrompt):
        return {"kind": "box", "xyxy_px": list(prompt.xyxy_px)}
    return {"kind": "mask", "area_px": int(np.count_nonzero(prompt.mask))}


def run_id(image_bytes: bytes, args: argparse.Namespace, checkpoint_id: str) -> str:
    """Short hash of everything that determines the answer (same request → same file names)."""
    h = hashlib.sha256(image_bytes)
    for part in (
        args.question,
        repr(args.regions),
        checkpoint_id,
        args.max_new_tokens,
        args.temperature,
        args.top_p,
        args.seed,
        args.window,
        args.nifti_axis,
        args.nifti_slice,
    ):
        h.update(f"|{part}".encode())
    return h.hexdigest()[:10]


# ---------------------------------------------------------------------------------- running
def load_predictor(checkpoint: str | None, device: torch.device, dtype: torch.dtype | None):
    """The predictor for `checkpoint` (None: the default checkpoint)."""
    from medplib.predictor import MedPLIBPredictor

    return MedPLIBPredictor.from_pretrained(checkpoint, device=device, dtype=dtype)


def run(args: argparse.Namespace) -> int:
    import torch

    t0 = time.perf_counter()
    if not math.isfinite(args.temperature) or not math.isfinite(args.top_p):
        raise UserInputError("--temperature and --top-p must be finite numbers.")
    image_bytes = _read_file(args.image, "--image")
    loaded: LoadedImage = load_image(
        image_bytes,
        filename=Path(args.image).name,
        window=args.window,
        nifti_axis=args.nifti_axis,
        nifti_slice=args.nifti_slice,
    )
    prompts, region_masks = build_regions(args.regions, loaded.height_px, loaded.width_px)
    device = _device(args.device)
    t_image = time.perf_counter() - t0

    t1 = time.perf_counter()
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    predictor = load_predictor(args.checkpoint, device, dtype)
    t_load = time.perf_counter() - t1
    predictor.set_image(loaded.rgb)
    pred = predictor.ask(
        args.question,
        region_masks,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )

    warnings = list(pred.warnings)
    if not predictor.config.trained:
        warnings.insert(
            0,
            f"Checkpoint {pred.checkpoint_id} is untrained (random weights): its answers and "
            "masks carry no meaning.",
        )
    out_dir = Path(args.out) if args.out else DEFAULT_OUT_DIR
    masks = []
    if pred.masks:
        out_dir.mkdir(parents=True, exist_ok=True)
        rid = run_id(image_bytes, args, pred.checkpoint_id)
        for m in pred.masks:
            path = out_dir / f"{Path(args.image).stem}-{rid}-seg{m.seg_index}.png"
            path.write_bytes(mask_to_png_bytes(m.mask))
            masks.append(
                {
                    "png": str(path.resolve()),
                    "rle": encode_rle(m.mask),
                    "area_px": m.area_px,
                    "bbox_xyxy_px": list(m.bbox_xyxy_px) if m.bbox_xyxy_px else None,
                    "score": m.score,
                    "iou_prediction": m.iou_prediction,
                    "seg_index": m.seg_index,
                    "mirror_agreement": m.mirror_agreement,
                    "height_px": int(m.mask.shape[0]),
                    "width_px": int(m.mask.shape[1]),
                }
            )
    timings = {"load_image": t_image, "load_checkpoint": t_load, **pred.timings}
    timings["wall"] = time.perf_counter() - t0
    result = {
        "answer": pred.answer,
        "raw_answer": pred.raw_answer,
        "masks": masks,
        "routing": pred.routing.to_dict(),
        "timings": timings,
        "warnings": warnings,
        "checkpoint_id": pred.checkpoint_id,
        "finish_reason": pred.finish_reason,
        "num_prompt_tokens": pred.num_prompt_tokens,
        "image": {
            "path": str(Path(args.image).resolve()),
            "height_px": loaded.height_px,
            "width_px": loaded.width_px,
            "source_format": loaded.source_format,
            "notes": list(loaded.notes),
        },
        "regions": [_region_doc(p) for p in prompts],
        "out_dir": str(out_dir.resolve()) if masks else None,
    }
    print(json.dumps(result, indent=2))
    return 0
