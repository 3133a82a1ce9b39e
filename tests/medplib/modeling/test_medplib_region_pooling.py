"""`region.pooling = "official"`: the released model's region sampler, checked against weights
worked out by hand (and against torch's own grid_sample) on box, point-square and free-form masks.

Hand rule used below, for a 24-cell axis: a point in cell k is sampled at k * 23 / 24 cells
(align_corners=True on position k / 24), so for k >= 1 it puts k / 24 on cell k - 1 and
(24 - k) / 24 on cell k; cell 0 keeps all of its weight.
"""

from __future__ import annotations

from fractions import Fraction as Fr

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medplib.modeling.configuration import RegionEncoderConfig
from medplib.modeling.image_processing import (
    image_geometry,
    region_cells_official,
    region_grid_weights,
    region_patch_weights,
)
from medplib.modeling.region_encoder import RegionEncoder, official_sample_weights

GRID, PATCH, SIZE = 24, 14, 336  # CLIP ViT-L/14 @ 336


def _dense(weights: dict[tuple[int, int], Fr | float], grid: int = GRID) -> torch.Tensor:
    out = torch.zeros(grid * grid, dtype=torch.float64)
    for (r, c), v in weights.items():
        out[r * grid + c] += float(v)
    return out


def _outer(rows: dict[int, Fr], cols: dict[int, Fr]) -> dict[tuple[int, int], Fr]:
    return {(r, c): wr * wc for r, wr in rows.items() for c, wc in cols.items()}


def _cells(flat: np.ndarray, grid: int = GRID) -> set[tuple[int, int]]:
    return {(int(i) // grid, int(i) % grid) for i in np.flatnonzero(flat)}


# ----------------------------------------------------------------------------- the three masks
def box_mask():
    """A 100 x 40 px box on a 168 x 336 (H x W) image: padded 84 px above and below."""
    m = np.zeros((168, 336), bool)
    m[20:60, 100:200] = True  # model-input rows 104..143, columns 100..199
    return m


# Rows 104..143 hold the top-left pixels 112, 126, 140 -> cells 8, 9, 10;
# columns 100..199 hold 112, 126, ..., 196 -> cells 8..14.
BOX_CELLS = {(r, c) for r in (8, 9, 10) for c in range(8, 15)}
# Row marginal over 3 points: cell 7 gets 8/24 (from 8), 8 gets 16/24 + 9/24, 9 gets
# 15/24 + 10/24, 10 gets 14/24.
BOX_ROWS = {7: Fr(8, 72), 8: Fr(25, 72), 9: Fr(25, 72), 10: Fr(14, 72)}
# Column marginal over 7 points: 7 -> 8/24, 8..13 -> 25/24 each, 14 -> 10/24.
BOX_COLS = {7: Fr(8, 168), **{c: Fr(25, 168) for c in range(8, 14)}, 14: Fr(10, 168)}
BOX_WEIGHTS = _outer(BOX_ROWS, BOX_COLS)


def point_square_mask():
    """The demo's point prompt: a 41 x 41 square (+-20 px) around (row 100, col 150), 336 x 336."""
    m = np.zeros((SIZE, SIZE), bool)
    m[80:121, 130:171] = True
    return m


# Rows 80..120 hold 84, 98, 112 -> cells 6, 7, 8; columns 130..170 hold 140, 154, 168 -> 10, 11, 12.
POINT_CELLS = {(r, c) for r in (6, 7, 8) for c in (10, 11, 12)}
POINT_ROWS = {5: Fr(6, 72), 6: Fr(18 + 7, 72), 7: Fr(17 + 8, 72), 8: Fr(16, 72)}
POINT_COLS = {9: Fr(10, 72), 10: Fr(14 + 11, 72), 11: Fr(13 + 12, 72), 12: Fr(12, 72)}
POINT_WEIGHTS = _outer(POINT_ROWS, POINT_COLS)


def free_form_mask():
    """A sketch: a thin diagonal stroke from the corner plus a blob near the right edge."""
    m = np.zeros((SIZE, SIZE), bool)
    for k in range(15):
        m[k, k] = True  # top-left pixels (0, 0) and (14, 14) only
    m[165:176, 318:331] = True  # holds the top-left pixel (168, 322) only
    return m


FREE_CELLS = {(0, 0), (1, 1), (12, 23)}
# (0, 0): all on cell (0, 0). (1, 1): 1/24 and 23/24 on cells 0 and 1 along each axis.
# (12, 23): rows 11 and 12 get 1/2 each; columns 22 and 23 get 23/24 and 1/24.
FREE_WEIGHTS = {
    (0, 0): Fr(1, 3) + Fr(1, 576 * 3),
    (0, 1): Fr(23, 576 * 3),
    (1, 0): Fr(23, 576 * 3),
    (1, 1): Fr(529, 576 * 3),
    (11, 22): Fr(23, 48 * 3),
    (11, 23): Fr(1, 48 * 3),
    (12, 22): Fr(23, 48 * 3),
    (12, 23): Fr(1, 48 * 3),
}

MASKS = {
    "box": (box_mask, BOX_CELLS, BOX_WEIGHTS),
    "point": (point_square_mask, POINT_CELLS, POINT_WEIGHTS),
    "free-form": (free_form_mask, FREE_CELLS, FREE_WEIGHTS),
}


def _official_encoder(d_in=8, d_out=6, **kw) -> RegionEncoder:
    torch.manual_seed(0)
    return RegionEncoder(RegionEncoderConfig(d_in, d_out, pooling="official", **kw)).eval()


# ----------------------------------------------------------------------------------- tests
def test_hand_weights_are_distributions():
    for _, _, weights in MASKS.values():
        assert sum(weights.values()) == 1


@pytest.mark.parametrize("name", list(MASKS))
def test_cells_are_the_top_left_pixels(name):
    make, cells, _ = MASKS[name]
    mask = make()
    geo = image_geometry(*mask.shape, SIZE)
    assert _cells(region_cells_official(mask, geo, PATCH)) == cells


@pytest.mark.parametrize("name", list(MASKS))
def test_sample_weights_match_hand_computed(name):
    make, cells, weights = MASKS[name]
    flat = torch.tensor(sorted(r * GRID + c for r, c in cells))
    got = official_sample_weights(flat, GRID)
    torch.testing.assert_close(got, _dense(weights), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(MASKS))
def test_pooled_feature_equals_hand_weighted_mean(name):
    make, _, weights = MASKS[name]
    mask = make()
    enc = _official_encoder()
    patches = torch.randn(GRID * GRID, 8)  # (N, C_clip)
    cells = region_grid_weights(mask, image_geometry(*mask.shape, SIZE), PATCH, "official")
    got = enc(patches, torch.from_numpy(cells)[None])[0]  # (D,)
    feats = enc.adapter(patches).detach().double()  # (N, D)
    expected = _dense(weights) @ feats
    torch.testing.assert_close(got.detach().double(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(MASKS))
def test_pooled_feature_equals_grid_sample_with_align_corners(name):
    """The released formulation, written with torch's grid_sample: mean of bilinear samples
    of the adapted (grid, grid) map at (col / grid, row / grid) -> [-1, 1], align_corners=True."""
    make, cells, _ = MASKS[name]
    enc = _official_encoder()
    patches = torch.randn(GRID * GRID, 8)
    fmap = enc.adapter(patches).detach().T.reshape(1, -1, GRID, GRID)  # (1, D, g, g)
    rc = torch.tensor(sorted(cells), dtype=torch.float32)  # (P, 2) row, col
    xy = (rc.flip(-1) / GRID) * 2 - 1  # grid_sample wants (x, y)
    samples = F.grid_sample(fmap, xy[None, None], mode="bilinear", align_corners=True)
    expected = samples[0, :, 0].mean(dim=-1)  # (D,)
    mask = make()
    w = region_grid_weights(mask, image_geometry(*mask.shape, SIZE), PATCH, "official")
    got = enc(patches, torch.from_numpy(w)[None])[0].detach()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_official_pooling_moves_a_ninth_of_the_weight_against_area_pooling():
    """Why the setting exists. For the point square, area pooling weights rows 5..8 by the
    pixels they hold (4, 14, 14, 9 of 41) and columns 9..12 by (10, 14, 14, 3 of 41); the
    official sampler by (6, 25, 25, 16 of 72) and (10, 25, 25, 12 of 72). Their total
    variation distance is 82619 / 726192, about 11.4 % of the pooling weight."""
    mask = point_square_mask()
    geo = image_geometry(SIZE, SIZE, SIZE)
    area = torch.from_numpy(region_patch_weights(mask, geo, PATCH)).double()
    area_rows = {5: Fr(4, 41), 6: Fr(14, 41), 7: Fr(14, 41), 8: Fr(9, 41)}
    area_cols = {9: Fr(10, 41), 10: Fr(14, 41), 11: Fr(14, 41), 12: Fr(3, 41)}
    torch.testing.assert_close(
        area / area.sum(), _dense(_outer(area_rows, area_cols)), rtol=0, atol=1e-6
    )
    enc = _official_encoder()
    cells = torch.from_numpy(region_cells_official(mask, geo, PATCH))[None]
    official = enc.official_weights(cells)[0].double()
    distance = 0.5 * (official - area / area.sum()).abs().sum()
    assert float(distance) == pytest.approx(82619 / 726192, abs=1e-6)


def test_small_grid_literal_weights():
    # 4 x 4 grid: position k * 3 / 4 -> k = 1: 1/4 on 0, 3/4 on 1; k = 2: 1/2 and 1/2.
    w = official_sample_weights(torch.tensor([1 * 4 + 2]), 4).reshape(4, 4)  # cell (1, 2)
    expected = torch.zeros(4, 4, dtype=torch.float64)
    expected[0, 1] = expected[0, 2] = 0.25 * 0.5
    expected[1, 1] = expected[1, 2] = 0.75 * 0.5
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-15)


def test_downscaled_mask_is_resized_like_the_image():
    # 672 px -> 336 px with PIL's antialiased bilinear filter: each output pixel weighs input
    # pixels 2k-1 .. 2k+2 by 1/8, 3/8, 3/8, 1/8 along each axis, rounding after each pass.
    geo = image_geometry(672, 672, SIZE)
    block = np.zeros((672, 672), bool)
    block[28:30, 28:30] = True  # 3/8 + 3/8 = 0.75 -> 1 in both passes: model pixel (14, 14)
    assert _cells(region_cells_official(block, geo, PATCH)) == {(1, 1)}
    block[28:30, 56:58] = True  # and model pixel (14, 28)
    assert _cells(region_cells_official(block, geo, PATCH)) == {(1, 1), (1, 2)}


def test_region_lost_in_the_reduction_falls_back_to_its_fullest_cell():
    geo = image_geometry(672, 672, SIZE)
    line = np.zeros((672, 672), bool)
    line[28, 20:40] = True  # one row: 3/8 after the vertical pass -> 0 everywhere
    assert not region_cells_official(np.zeros((672, 672), bool), geo, PATCH).any()
    # Covers model rows 14 (cell 1) and columns 10..19 (cells 0 and 1: 4 vs 6 columns).
    assert _cells(region_cells_official(line, geo, PATCH)) == {(1, 1)}
    speck = np.zeros((SIZE, SIZE), bool)
    speck[20:22, 30:33] = True  # no multiple of 14 in rows 20..21
    geo_1 = image_geometry(SIZE, SIZE, SIZE)
    assert _cells(region_cells_official(speck, geo_1, PATCH)) == {(1, 2)}


def test_padding_is_never_a_region_cell():
    geo = image_geometry(168, 336, SIZE)  # rows 0..83 and 252..335 are padding
    full = np.ones((168, 336), bool)
    rows = {r for r, _ in _cells(region_cells_official(full, geo, PATCH))}
    assert rows == set(range(6, 18))  # top-left rows 84 .. 238


def test_large_regions_keep_max_points_with_a_fixed_seed_in_eval():
    enc = _official_encoder(max_sample_points=512)
    full = torch.ones(1, GRID * GRID)
    patches = torch.randn(GRID * GRID, 8)
    picked = enc.sample_cells(full[0])
    assert picked.numel() == 512 and picked.unique().numel() == 512
    assert torch.equal(enc.sample_cells(full[0]), picked)  # eval: same subset every call
    first = enc(patches, full)
    torch.testing.assert_close(enc(patches, full), first, rtol=0, atol=0)
    w = enc.official_weights(full)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    other_seed = _official_encoder(max_sample_points=512, sample_seed=1)
    assert not torch.equal(other_seed.sample_cells(full[0]), picked)
    enc.train()
    draws = {tuple(sorted(enc.sample_cells(full[0]).tolist())) for _ in range(3)}
    assert len(draws) > 1  # training draws a fresh subset


def test_empty_cells_are_refused():
    enc = _official_encoder()
    with pytest.raises(ValueError, match="no cell"):
        enc(torch.randn(16, 8), torch.zeros(1, 16))


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        RegionEncoderConfig(pooling="mean")
    with pytest.raises(ValueError, match="pooling"):
        region_grid_weights(box_mask(), image_geometry(168, 336, SIZE), PATCH, "mean")


def test_area_stays_the_default_and_old_configs_load_as_area():
    from medplib.modeling.presets import build_config

    assert build_config("tiny").region.pooling == "area"
    data = build_config("tiny").region.to_dict()
    del data["pooling"], data["sample_seed"]
    assert RegionEncoderConfig.from_dict(data).pooling == "area"
