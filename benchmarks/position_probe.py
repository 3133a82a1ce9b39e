"""Do a checkpoint's visual tokens know where they are? A linear probe on them says.

The language model reads the image as a sequence of visual tokens. To answer "is the optic
disc on the left or the right?" about a finding that can lie anywhere, a token must carry its
own place in the grid. This fits a logistic-regression probe on the CLIP patch features and on
the visual tokens (projector output) of synthetic val images, from the features to the patch's
column, row and half (left / right), and scores it on other images.

    python benchmarks/position_probe.py --checkpoint medplib/assets/tiny-demo \
        --corpus var/demo-corpus --images 240

Prints JSON: test accuracy per feature and target (chance: 1 / grid for column and row,
0.5 for the half).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medplib.checkpoint import load_pretrained
from medplib.modeling.batching import clip_and_sam_inputs
from medplib.modeling.image_processing import to_rgb_uint8


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x, test_y) -> float:
    """Test accuracy of an L2-regularised multinomial logistic regression (L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xa, xb = (train_x - mean) / std, (test_x - mean) / std
    k = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(xa.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xa @ w + b, train_y) + 1e-4 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xb @ w + b).argmax(1) == test_y).float().mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=Path("medplib/assets/tiny-demo"))
    p.add_argument("--corpus", type=Path, default=Path("var/demo-corpus"))
    p.add_argument("--images", type=int, default=240, help="synthetic val images, half to fit")
    args = p.parse_args(argv)

    model, _, _ = load_pretrained(args.checkpoint, device="cpu", dtype=torch.float32)
    model.eval()
    records = json.loads((args.corpus / "vqa" / "val.json").read_text(encoding="utf-8"))
    images = sorted({r["image"] for r in records if r["source"] == "synthetic"})[: args.images]
    clip_feats, tokens = [], []
    with torch.no_grad():
        for start in range(0, len(images), 16):
            pixels = []
            for rel in images[start : start + 16]:
                image = to_rgb_uint8(np.array(Image.open(args.corpus / rel)))
                clip, *_ = clip_and_sam_inputs(image, model.config)
                pixels.append(clip)
            patches, visual = model.encode_clip(torch.stack(pixels))  # (B, N, C), (B, N, D)
            clip_feats.append(patches)
            tokens.append(visual)

    grid = model.config.vision.image_size // model.config.vision.patch_size
    result: dict = {
        "checkpoint": str(args.checkpoint),
        "images": len(images),
        "grid": grid,
        "chance": {"column": 1 / grid, "row": 1 / grid, "half": 0.5},
    }
    for name, feats in (("clip_patches", clip_feats), ("visual_tokens", tokens)):
        f = torch.cat(feats)  # (B, N, C)
        n_img, n_patch, _ = f.shape
        x = f.reshape(n_img * n_patch, -1)
        cell = torch.arange(n_patch).repeat(n_img)
        targets = {"column": cell % grid, "row": cell // grid, "half": (cell % grid >= grid // 2)}
        cut = (n_img // 2) * n_patch  # fit on the first half of the images, test on the rest
        result[name] = {
            t: round(probe_accuracy(x[:cut], y[:cut].long(), x[cut:], y[cut:].long()), 3)
            for t, y in targets.items()
        }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
