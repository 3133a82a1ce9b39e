from __future__ import annotations

import pytest
import torch

from medplib.modeling.configuration import RegionEncoderConfig
from medplib.modeling.region_encoder import RegionEncoder, region_shape


def _grid(cells: dict[int, float], n: int = 16) -> torch.Tensor:
    w = torch.zeros(n)
    for i, v in cells.items():
        w[i] = v
    return w


def test_region_shape_of_a_quarter_cell_in_the_top_left_corner():
    # 4 x 4 grid; the region covers a quarter of cell 0.
    (area, cx, cy, sx, sy, fullest) = region_shape(_grid({0: 0.25})[None])[0].tolist()
    assert area == pytest.approx((0.25 / 16) ** 0.5)
    assert (cx, cy) == (pytest.approx(0.125), pytest.approx(0.125))
    assert (sx, sy) == (pytest.approx(0.0, abs=1e-6), pytest.approx(0.0, abs=1e-6))
    assert fullest == pytest.approx(0.25)


def test_region_shape_of_the_right_half_is_wide_spread_and_full():
    right_half = _grid({r * 4 + c: 1.0 for r in range(4) for c in (2, 3)})
    (area, cx, cy, sx, sy, fullest) = region_shape(right_half[None])[0].tolist()
    assert area == pytest.approx(0.5**0.5)
    assert (cx, cy) == (pytest.approx(0.75), pytest.approx(0.5))
    # x takes 0.625 and 0.875 (spread 0.125); y takes the four row centres (spread ~0.28).
    assert sx == pytest.approx(0.125)
    assert sy == pytest.approx(
        (sum((y - 0.5) ** 2 for y in (0.125, 0.375, 0.625, 0.875)) / 4) ** 0.5
    )
    assert fullest == 1.0


def test_region_shape_rejects_a_non_square_grid():
    with pytest.raises(ValueError, match="square grid"):
        region_shape(torch.ones(1, 12))


def test_shape_features_tell_a_small_finding_from_the_cell_around_it():
    # Same cell, same patch feature: the plain mean cannot separate the two regions.
    torch.manual_seed(0)
    patches = torch.randn(16, 8)  # (N, C_clip) on a 4 x 4 grid
    weights = torch.stack([_grid({5: 0.1}), _grid({5: 1.0})])  # (R, N): a speck, the full cell
    plain = RegionEncoder(RegionEncoderConfig(8, 12, shape_features=False))
    torch.testing.assert_close(plain(patches, weights)[0], plain(patches, weights)[1])

    shaped = RegionEncoder(RegionEncoderConfig(8, 12, shape_features=True))
    shaped.adapter.load_state_dict(plain.adapter.state_dict())
    # Zero-initialised: the same features as without shape until it is trained.
    torch.testing.assert_close(shaped(patches, weights), plain(patches, weights))
    torch.nn.init.normal_(shaped.shape_embed.weight)
    out = shaped(patches, weights).detach()  # (R, D)
    assert out.shape == (2, 12)
    assert float((out[0] - out[1]).abs().max()) > 0.1
    expected = (plain(patches, weights) + shaped.shape_embed(region_shape(weights))).detach()
    torch.testing.assert_close(out, expected)


def test_shape_embedding_is_in_the_tiny_presets_and_not_the_official_ones():
    from medplib.modeling.presets import build_config

    assert build_config("tiny").region.shape_features
    assert build_config("tiny-dense").region.shape_features
    assert not build_config("medplib-7b-2e").region.shape_features
    # An older config.json without the key loads with the layer off.
    data = build_config("tiny").region.to_dict()
    del data["shape_features"]
    assert not RegionEncoderConfig.from_dict(data).shape_features
