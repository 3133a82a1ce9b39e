"""Review that improves the model: correct the demo checkpoint's masks on the platform, export
them, fine-tune the checkpoint on the export, and the masks on those images get better."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from medplib.checkpoint import ASSET_DEMO_DIR
from medplib.cli import main
from medplib.masks import encode_rle
from medplib.metrics import dice
from medplib.predictor import MedPLIBPredictor
from serving.execution import run_job
from serving.models import Role
from serving.services.corrections import correct_mask
from serving.services.dataset_export import export_dataset
from serving.services.images import ingest_image
from serving.services.sessions import create_session, get_session
from tests.serving.test_shares_reviews import _user

# MeCoVQA-G phrasing. "tumor", the word of the demo corpus: asked for a "lesion", the demo
# checkpoint answers 1 of 30 such images without a mask, and every answer here needs one to correct.
QUESTION = "Please generate a mask that segments the tumor in this image."
SIDE_PX = 128  # the demo checkpoint's input size: no resizing between image and mask
ITEMS = 20


def lesion_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc on grey noise, unlike the demo corpus the checkpoint learnt from; it
    outlines such a lesion poorly. Returns the (H, W, 3) uint8 image and the disc mask."""
    rng = np.random.default_rng([3, seed])
    grey = rng.normal(90, 20, (SIDE_PX, SIDE_PX))
    yy, xx = np.mgrid[:SIDE_PX, :SIDE_PX]
    cy, cx = rng.integers(35, SIDE_PX - 35, 2)
    radius_px = int(rng.integers(12, 25))
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius_px**2
    grey[disc] = 200
    image = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return image, disc


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def mean_dice(predictor: MedPLIBPredictor, cases) -> float:
    scores = []
    for image, target in cases:
        predictor.set_image(image)
        masks = predictor.ask(QUESTION).masks
        scores.append(dice(masks[0].mask, target) if masks else 0.0)
    return float(np.mean(scores))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: a second thread only waits (and the CI box is small)
    yield
    torch.set_num_threads(threads)


def _config(path: Path) -> Path:
    """A few steps on the grounding records, training only what draws the mask."""
    config = {
        "stage": "moe",
        "seed": 0,
        "data": {"tasks": {"grounding": 1.0}, "val_records": 0},
        "optim": {"lr": 1.0e-3, "warmup_fraction": 0.0, "decay_fraction": 0.3},
        "loop": {"steps": 20, "batch_size": 4, "log_every": 5, "checkpoint_every": 0},
        "losses": {"ce_weight": 1.0, "bce_weight": 2.0, "dice_weight": 0.5, "focal_weight": 0.0},
        "train_modules": ["seg_head.*", "sam.mask_decoder.*"],
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_corrected_masks_exported_and_trained_on_improve_the_checkpoint(
    sqlite_url, make_platform, tmp_path, one_thread
):
    demo = MedPLIBPredictor.from_pretrained(ASSET_DEMO_DIR)
    platform = make_platform(sqlite_url, predictor=demo)
    owner, reviewer = _user(platform, "student"), _user(platform, "rev", Role.reviewer)
    cases = [lesion_case(seed) for seed in range(ITEMS)]
    for image, target in cases:

        def new_session(db, image=image):
            row = ingest_image(
                db, store=platform.store, settings=platform.settings, data=_png(image)
            )
            return create_session(db, actor=owner, image_id=row.id).id

        session_id = platform.call(new_session)
        view = platform.ask(actor=owner, session_id=session_id, question=QUESTION, regions=[])
        run_job(view.id, ctx=platform.ctx)
        turn = platform.call(get_session, actor=owner, session_id=session_id).turns[0]
        assert len(turn.masks) == 1, turn.answer  # the checkpoint answers with one mask
        platform.call(
            correct_mask,
            actor=reviewer,
            store=platform.store,
            turn_id=turn.id,
            mask_index=0,
            mask_rle=encode_rle(target),
        )
    before = mean_dice(demo, cases)
    assert before < 0.5, before  # the premise: the checkpoint segments these badly

    corpus = tmp_path / "reviewed"
    summary = platform.call(export_dataset, store=platform.store, out_dir=corpus, actor=reviewer)
    assert (summary.items, summary.corrected) == (ITEMS, ITEMS)
    assert summary.by_task == {"vqa": 0, "region": 0, "grounding": ITEMS}

    out = tmp_path / "tuned"
    argv = ["train", "--stage", "moe", "--init", str(ASSET_DEMO_DIR), "--no-progress"]
    argv += ["--config", str(_config(tmp_path / "moe.yaml")), "--data", str(corpus)]
    assert main([*argv, "--out", str(out)]) == 0
    tuned = MedPLIBPredictor.from_pretrained(out)
    after = mean_dice(tuned, cases)
    print(f"mean Dice on the {ITEMS} corrected items: {before:.3f} before, {after:.3f} after")
    assert after >= before + 0.3, (before, after)
    # Lesions of the same kind that nobody corrected: what was learnt is the lesion, not the 20.
    unseen = [lesion_case(seed) for seed in range(100, 110)]
    unseen_before, unseen_after = mean_dice(demo, unseen), mean_dice(tuned, unseen)
    print(f"on 10 unseen lesions: {unseen_before:.3f} before, {unseen_after:.3f} after")
    assert unseen_after >= unseen_before + 0.3, (unseen_before, unseen_after)
