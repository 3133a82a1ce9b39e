"""Per-question latency of a checkpoint as the demo serves it: `MedPLIBPredictor` end to end.

Each question comes with a new synthetic image (a different modality each time), so every
one pays for the image encoding, as the first question on an upload does; the encoding and
the answer are timed apart. Questions alternate between the official MeCoVQA-G grounding
phrasing (answers with a mask) and a closed presence question (text only); with
`side_questions` the closed ones ask on which side a structure lies, so every left/right answer
the checkpoint's config has checked on the mirrored image pays for that check. The presence
questions pay for theirs where the config checks them: an unsure yes/no answer draws the
structure's mask first (`medplib.presence_check`).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medplib.bench.measure import load_average, machine
from medplib.data.questions import OFFICIAL_SEGMENT
from medplib.data.synthetic import MODALITIES, generate_scene


@dataclass(frozen=True)
class PredictBenchSettings:
    checkpoint: str | None = None  # None: the checkpoint `make demo` serves
    questions: int = 50  # the sample: p95 of 50 is the third-slowest answer
    warmup: int = 2  # first calls pay for lazy allocations; not counted
    image_size_px: int = 256  # every image is resized to the model input; this sets mask upsampling
    max_new_tokens: int = 64  # the demo's answers are one sentence
    threads: int = 2
    seed: int = 0
    # False times the plain decode of a checkpoint whose config turns the mirror on: masks
    # (one more SAM encoding per image, one more decode per <SEG>) and left/right answers (one
    # more CLIP encoding and four teacher-forced passes per checked answer).
    mirror_tta: bool = True
    side_questions: bool = False  # closed questions ask left or right instead of presence
    # Closed questions mark a structure's region and ask whether it is a structure of the scene
    # (its own or another, in turn), so each pays for the region check where the config has it.
    region_questions: bool = False
    # False times presence and region answers without their grounding checks (two
    # teacher-forced passes per answer, and a grounding answer and its mask where the answer is
    # unsure).
    presence_check: bool = True
    # Questions asked in a row about one image, as in a teaching session: the image is encoded,
    # and the prompt's start run through the language model, once for all of them.
    questions_per_image: int = 1
    # False runs every prompt whole, as before the prompt's start was kept per image.
    reuse_prompt_start: bool = True


QUICK = PredictBenchSettings(questions=2, warmup=0, image_size_px=64, max_new_tokens=8)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": _percentile(values, 50),
        "p95_s": _percentile(values, 95),
        "mean_s": float(np.mean(values)) if values else float("nan"),
        "max_s": max(values) if values else float("nan"),
    }


def questions(
    settings: PredictBenchSettings,
) -> list[tuple[np.ndarray, str, str, tuple[np.ndarray, ...]]]:
    """(image, question, kind, region masks) per question; the same list for the same seed."""
    rng = np.random.default_rng(settings.seed)
    out: list[tuple[np.ndarray, str, str, tuple[np.ndarray, ...]]] = []
    per_image = max(1, settings.questions_per_image)
    for i in range(settings.warmup + settings.questions):
        if i % per_image == 0:
            modality = MODALITIES[(i // per_image) % len(MODALITIES)]
            scene = generate_scene(modality, rng, size=settings.image_size_px)
        name = scene.objects[int(rng.integers(len(scene.objects)))].name
        if i % 2 == 0:
            out.append((scene.image, OFFICIAL_SEGMENT.format(x=name), "grounding", ()))
        elif settings.side_questions:
            question = f"Is the {name} on the left or right side of the image?"
            out.append((scene.image, question, "side", ()))
        elif settings.region_questions:
            obj = scene.objects[i % len(scene.objects)]
            question = f"Is the region <region> the {name}?"
            out.append((scene.image, question, "region", (obj.mask,)))
        else:
            out.append((scene.image, f"Is there a {name} in this image?", "closed", ()))
    return out


def run(settings: PredictBenchSettings) -> dict[str, Any]:
    from medplib.predictor import MedPLIBPredictor

    load_at_start = load_average()
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    predictor = MedPLIBPredictor.from_pretrained(settings.checkpoint)
    if not settings.mirror_tta:
        predictor.config.flip_tta_min_agreement = None
        predictor.config.side_tta_max_margin = None
    predictor.reuse_prompt_start = settings.reuse_prompt_start
    if not settings.presence_check:
        predictor.config.presence_check_max_margin = None
        predictor.config.region_check_max_margin = None
    load_s = time.perf_counter() - started
    rows: list[dict[str, Any]] = []
    shown = None
    for i, (image, question, kind, regions) in enumerate(questions(settings)):
        t0 = time.perf_counter()
        if image is not shown:
            predictor.set_image(image)
            shown = image
        t1 = time.perf_counter()
        prediction = predictor.ask(question, regions, max_new_tokens=settings.max_new_tokens)
        t2 = time.perf_counter()
        vote, presence, region = (
            prediction.side_vote,
            prediction.presence_vote,
            prediction.region_vote,
        )
        if i >= settings.warmup:
            rows.append(
                {
                    "kind": kind,
                    "encode_s": t1 - t0,
                    "answer_s": t2 - t1,
                    "total_s": t2 - t0,
                    "answer_tokens": len(prediction.answer_token_ids),
                    "masks": len(prediction.masks),
                    "side_checked": vote is not None,
                    "side_overturned": vote is not None and vote.answer != vote.plain,
                    "presence_checked": presence is not None,
                    "presence_grounded": presence is not None and presence.mask_score is not None,
                    "presence_overturned": presence is not None
                    and presence.answer != presence.plain,
                    "region_checked": region is not None,
                    "region_grounded": region is not None and region.coverage is not None,
                    "region_overturned": region is not None and region.answer != region.plain,
                }
            )
    by_kind = {
        kind: _summary([r["total_s"] for r in rows if r["kind"] == kind])
        for kind in sorted({r["kind"] for r in rows})
    }
    return {
        "benchmark": "predict",
        "settings": asdict(settings),
        "checkpoint_id": predictor.checkpoint_id,
        "flip_tta_min_agreement": predictor.config.flip_tta_min_agreement,
        "side_tta_max_margin": predictor.config.side_tta_max_margin,
        "presence_check_max_margin": predictor.config.presence_check_max_margin,
        "region_check_max_margin": predictor.config.region_check_max_margin,
        "load_s": load_s,
        "per_question": _summary([r["total_s"] for r in rows]),
        "encode": _summary([r["encode_s"] for r in rows]),
        "answer": _summary([r["answer_s"] for r in rows]),
        "by_kind": by_kind,
        "answer_tokens_mean": float(np.mean([r["answer_tokens"] for r in rows])),
        "answers_with_a_mask": sum(r["masks"] > 0 for r in rows),
        "side_answers_checked": sum(r["side_checked"] for r in rows),
        "side_answers_overturned": sum(r["side_overturned"] for r in rows),
        "presence_answers_checked": sum(r["presence_checked"] for r in rows),
        "presence_answers_grounded": sum(r["presence_grounded"] for r in rows),
        "presence_answers_overturned": sum(r["presence_overturned"] for r in rows),
        "region_answers_checked": sum(r["region_checked"] for r in rows),
        "region_answers_grounded": sum(r["region_grounded"] for r in rows),
        "region_answers_overturned": sum(r["region_overturned"] for r in rows),
        "machine": machine(settings.threads, load_at_start),
    }


def settings_from_args(args: argparse.Namespace) -> PredictBenchSettings:
    base = QUICK if args.quick else PredictBenchSettings()
    checkpoint = str(Path(args.checkpoint)) if args.checkpoint else None
    return PredictBenchSettings(
        checkpoint=checkpoint,
        questions=args.questions or base.questions,
        warmup=base.warmup,
        image_size_px=base.image_size_px,
        max_new_tokens=args.new_tokens or base.max_new_tokens,
        threads=args.threads,
        seed=base.seed,
        mirror_tta=not args.no_mirror_tta,
        side_questions=args.side_questions,
        region_questions=args.region_questions,
        presence_check=not args.no_presence_check,
        questions_per_image=args.questions_per_image or base.questions_per_image,
        reuse_prompt_start=not args.no_prompt_reuse,
    )


__all__ = ["PredictBenchSettings", "questions", "run", "settings_from_args"]
