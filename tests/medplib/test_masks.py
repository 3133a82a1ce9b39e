from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medplib.errors import UserInputError
from medplib.masks import (
    decode_rle,
    encode_rle,
    mask_area,
    mask_bbox_xyxy_px,
    mask_to_png_bytes,
    png_bytes_to_mask,
    resize_mask_nearest,
    rle_area,
)


def _square(lo: int, hi: int, size: int = 25) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[lo:hi, lo:hi] = True
    return mask


# Strings produced by pycocotools.mask.encode for 25x25 masks with mask[lo:hi, lo:hi] = 1
# (and unions/intersections of two such squares), as published in pycocotools-compatibility
# test suites.
PYCOCOTOOLS_25 = [
    (_square(0, 5), "05d00000000d?"),
    (_square(5, 10), "R45d00000000b;"),
    (_square(20, 25), "X`05d00000000"),
    (_square(0, 25), "0ac0"),
    (np.zeros((25, 25), dtype=bool), "ac0"),
    (_square(5, 10) | _square(10, 15), "R45d0000000050K0000000`7"),
    (_square(5, 10) | _square(5, 15), "R4:?00000000000000000e7"),
    (_square(5, 10) | _square(8, 13), "R45d000003M03M0000T9"),
    (_square(5, 10) & _square(8, 13), "`62g00_;"),
]

# Real 427x640 COCO-style strings from the same suites; decode -> encode must reproduce them.
COCO_427x640 = [
    "\\`_3;j<6M3E_OjCd0T<:O1O2O001O00001O00001O001O0000O1K6J5J6A^C0g<N=O001O0O2Omk^4",
    "RT_32n<<O100O0010O000010O0001O00001O000O101O0ISPc4",
]


def test_center_square_hand_worked():
    # Column-major runs of mask[5:10, 5:10] in 25x25: 130 zeros (5 columns + 5 rows), then
    # 5 ones / 20 zeros four times, 5 ones and 390 zeros. Runs from the 4th on are stored as
    # the difference to the run two before: [130, 5, 20, 0, 0, 0, 0, 0, 0, 0, 370].
    # 130 = 2 + 4*32 -> chars 48+(2|0x20)='R', 48+4='4'; 5 -> '5';
    # 20 has bit 0x10 set, so a second group 0 is needed: 'd','0'; 0 -> '0' (x7);
    # 370 = 18 + 11*32 -> 48+(18|0x20)='b', 48+11=';'.
    assert encode_rle(_square(5, 10)) == {"size": [25, 25], "counts": "R45d00000000b;"}


def test_negative_delta_hand_worked():
    # A single column (6x1) whose runs are [0, 1, 3, 1, 1]; the 5th run is stored as 1 - 3.
    mask = np.array([[1], [0], [0], [0], [1], [0]], dtype=bool)
    # runs: 0 zeros, 1 one, 3 zeros, 1 one, 1 zero; deltas from the 4th: 1-1=0, 1-3=-2.
    # -2: group = -2 & 31 = 30 (sign bit set), x >> 5 = -1 -> last char 48+30='N'.
    assert encode_rle(mask)["counts"] == "0130N"
    np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)


@pytest.mark.parametrize(("mask", "expected"), PYCOCOTOOLS_25)
def test_encode_matches_pycocotools(mask, expected):
    rle = encode_rle(mask)
    assert rle == {"size": [25, 25], "counts": expected}
    np.testing.assert_array_equal(decode_rle(rle), mask)


@pytest.mark.parametrize("counts", COCO_427x640)
def test_real_coco_strings_round_trip_byte_identical(counts):
    mask = decode_rle({"size": [427, 640], "counts": counts})
    assert mask.shape == (427, 640) and mask.dtype == bool
    assert 0 < mask.sum() < mask.size
    assert encode_rle(mask)["counts"] == counts
    assert decode_rle({"size": [427, 640], "counts": counts.encode()}).sum() == mask.sum()


def test_union_of_real_masks_matches_pycocotools_merge():
    a, b = (decode_rle({"size": [427, 640], "counts": c}) for c in COCO_427x640)
    expected = (
        "RT_32X<9SD3f;3ZDNb;5_DKU;DeDd05HU;b0kD_OS;b0nD]OQ;e0nD[OR;e0nD[OR;f0nDZOQ;f0oDZOQ;"
        "f0oDZOQ;g0oDXOQ;h0oDXOQ;h0oDXOQ;i0oDVOQ;j0oDVOQ;k0nDTOS;l0mDTOS;l0nDSOR;l0oDmNX;n0f0"
        "J5J6A^C0g<N=O001O0O2Omk^4"
    )
    assert encode_rle(a | b)["counts"] == expected


def test_column_major_non_square():
    mask = np.array([[0, 1, 1], [0, 0, 1]], dtype=bool)  # (2, 3)
    # Fortran order: 0,0 | 1,0 | 1,1 -> runs [2, 1, 1, 2] -> stored [2, 1, 1, 2 - 1 = 1].
    assert encode_rle(mask) == {"size": [2, 3], "counts": "2111"}
    np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)
    np.testing.assert_array_equal(decode_rle({"size": [2, 3], "counts": [2, 1, 1, 2]}), mask)
    # The transposed (3, 2) mask has different runs: 0,1,1 | 0,0,1 -> [1, 2, 2, 1].
    assert decode_rle({"size": [3, 2], "counts": [1, 2, 2, 1]}).T.tolist() == mask.tolist()


def test_large_counts_and_tiny_masks():
    assert encode_rle(np.ones((1, 1), dtype=bool))["counts"] == "01"
    assert encode_rle(np.zeros((1, 1), dtype=bool))["counts"] == "1"
    big = np.zeros((3000, 2000), dtype=bool)
    big[1000:2500, 700:1900] = True
    rle = encode_rle(big)
    np.testing.assert_array_equal(decode_rle(rle), big)
    assert rle_area(rle) == 1500 * 1200


def test_random_round_trip_many_shapes():
    rng = np.random.default_rng(0)
    for shape in [(1, 7), (7, 1), (3, 7), (31, 17), (64, 64)]:
        for density in (0.05, 0.5, 0.95):
            mask = rng.random(shape) < density
            rle = encode_rle(mask)
            np.testing.assert_array_equal(decode_rle(rle), mask)
            assert rle_area(rle) == mask_area(mask) == int(mask.sum())


def test_decode_validation():
    with pytest.raises(ValueError, match="sum to 24 but its size 5x5 needs 25"):
        decode_rle({"size": [5, 5], "counts": [20, 4]})
    with pytest.raises(ValueError, match="sum to"):
        decode_rle({"size": [25, 25], "counts": "R45d00000000"})  # last run missing
    with pytest.raises(ValueError, match="truncated"):
        decode_rle({"size": [25, 25], "counts": "R"})  # 'R' has the continuation bit
    with pytest.raises(ValueError, match="invalid character"):
        decode_rle({"size": [2, 2], "counts": "4~"})
    with pytest.raises(ValueError, match="negative run"):
        decode_rle({"size": [2, 2], "counts": [5, -1]})
    with pytest.raises(ValueError, match='"size"'):
        decode_rle({"size": [2], "counts": [2]})
    with pytest.raises(ValueError, match="dict"):
        decode_rle([4])  # type: ignore[arg-type]


def test_non_2d_masks_rejected():
    for bad in (np.zeros(5), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match="2-D"):
            encode_rle(bad)
        with pytest.raises(ValueError, match="2-D"):
            mask_bbox_xyxy_px(bad)


def test_bbox_half_open():
    mask = np.zeros((200, 300), dtype=bool)
    mask[40:120, 50:150] = True
    assert mask_bbox_xyxy_px(mask) == (50, 40, 150, 120)
    single = np.zeros((3, 7), dtype=bool)
    single[2, 6] = True
    assert mask_bbox_xyxy_px(single) == (6, 2, 7, 3)
    assert mask_bbox_xyxy_px(np.zeros((4, 4))) is None


def test_png_round_trip_is_8bit_0_255():
    mask = np.zeros((20, 30), dtype=bool)
    mask[3:9, 4:25] = True
    data = mask_to_png_bytes(mask)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "L" and image.size == (30, 20)
        assert set(np.unique(np.asarray(image)).tolist()) == {0, 255}
    np.testing.assert_array_equal(png_bytes_to_mask(data), mask)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_to_mask_any_mode():
    values = np.zeros((6, 5), dtype=np.uint16)
    values[1:3, 2:4] = 1  # a 16-bit label map with tiny values
    expected = values > 0
    np.testing.assert_array_equal(
        png_bytes_to_mask(_png(Image.fromarray(values.astype(np.uint16), mode="I;16"))), expected
    )
    rgb = np.zeros((6, 5, 3), dtype=np.uint8)
    rgb[1:3, 2:4, 2] = 1  # dark blue: non-zero in one channel only
    np.testing.assert_array_equal(png_bytes_to_mask(_png(Image.fromarray(rgb))), expected)
    palette = Image.fromarray(expected.astype(np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    np.testing.assert_array_equal(png_bytes_to_mask(_png(palette)), expected)
    one_bit = Image.fromarray(expected).convert("1")
    np.testing.assert_array_equal(png_bytes_to_mask(_png(one_bit)), expected)
    # Transparent background with white colour everywhere: alpha decides.
    rgba = np.full((6, 5, 4), 255, dtype=np.uint8)
    rgba[..., 3] = np.where(expected, 255, 0)
    np.testing.assert_array_equal(png_bytes_to_mask(_png(Image.fromarray(rgba))), expected)


def test_png_to_mask_rejects_non_images():
    with pytest.raises(UserInputError, match="could not be read as an image"):
        png_bytes_to_mask(b"not a png")


def test_resize_nearest_exact_blocks():
    small = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)  # (2, 3)
    big = resize_mask_nearest(small, (4, 6))
    np.testing.assert_array_equal(big, np.kron(small, np.ones((2, 2), dtype=bool)))
    np.testing.assert_array_equal(resize_mask_nearest(big, (2, 3)), small)
    # 3 -> 7 columns: output col i samples floor((i + 0.5) * 3 / 7) = 0,0,1,1,1,2,2.
    row = np.array([[True, False, True]])
    np.testing.assert_array_equal(
        resize_mask_nearest(row, (1, 7))[0], [True, True, False, False, False, True, True]
    )
    with pytest.raises(ValueError, match="at least 1x1"):
        resize_mask_nearest(small, (0, 3))


def test_fill_holes_fills_closed_outlines_only():
    from medplib.masks import fill_holes

    yy, xx = np.mgrid[:60, :80]
    ring = ((yy - 30) ** 2 + (xx - 25) ** 2 <= 15**2) & ((yy - 30) ** 2 + (xx - 25) ** 2 >= 11**2)
    # An open "C": the same ring with a gap, whose inside reaches the border through the gap.
    c_shape = ((yy - 30) ** 2 + (xx - 60) ** 2 <= 12**2) & ((yy - 30) ** 2 + (xx - 60) ** 2 >= 9**2)
    c_shape &= ~((xx > 60) & (abs(yy - 30) < 3))
    filled = fill_holes(ring | c_shape)
    disc = (yy - 30) ** 2 + (xx - 25) ** 2 <= 15**2
    assert np.array_equal(filled[:, :45], disc[:, :45])  # the ring's inside is filled
    assert np.array_equal(filled[:, 45:], c_shape[:, 45:])  # the C is left as drawn
    assert filled.dtype == bool and not fill_holes(np.zeros((5, 7))).any()


def _holes_by_flood_fill(mask: np.ndarray) -> np.ndarray:
    """Reference: breadth-first search of the background from the border, pixel by pixel."""
    from collections import deque

    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    todo = deque((y, x) for y in range(h) for x in range(w) if (y in (0, h - 1) or x in (0, w - 1)))
    while todo:
        y, x = todo.popleft()
        if 0 <= y < h and 0 <= x < w and not mask[y, x] and not seen[y, x]:
            seen[y, x] = True
            todo.extend(((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)))
    return ~mask & ~seen


@pytest.mark.parametrize("seed", range(6))
def test_fill_holes_matches_a_pixel_by_pixel_flood_fill(seed):
    from medplib.masks import fill_holes

    # Random walls at several densities: winding background paths with many turns, and
    # pockets sealed off at every size.
    rng = np.random.default_rng(seed)
    mask = rng.random((37, 53)) < 0.35 + 0.05 * seed
    holes = _holes_by_flood_fill(mask)
    assert holes.any()  # the case has something to fill
    assert np.array_equal(fill_holes(mask), mask | holes)
