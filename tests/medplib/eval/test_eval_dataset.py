"""How records become scored items: last turn, history, task, ids, limits, targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eval_helpers import grounding, rect, vqa, write_image, write_json, write_png

from medplib.errors import UserInputError
from medplib.eval import load_eval_set


def test_items_from_records(tmp_path: Path):
    root = tmp_path / "corpus"
    image = write_image(root, "pet_00--Src--c--2d", (6, 9))
    big = write_png(root, "masks/big.png", rect((12, 18), (0, 6, 0, 8)))  # 2x the image size
    small = write_png(root, "masks/small.png", rect((6, 9), (4, 6, 6, 9)))
    two_turns = {
        "image": image.removesuffix(".png"),  # MeCoVQA paths sometimes lack the suffix
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is <region>" + small + "</region>?"},
            {"from": "gpt", "value": "A lesion."},
            {"from": "human", "value": "Segment the liver."},
            {
                "from": "gpt",
                "value": "<SEG><mask>" + big + "</mask> and <SEG><mask>" + small + "</mask>",
            },
        ],
    }
    records = [
        two_turns,  # no id: its index "0"
        vqa("v", image, "Is <region> bright?", "no", region=small, answer_type="open"),
        vqa("w", image, "Modality?", "PET", modality="PET"),
        grounding("x", image, small),
    ]
    write_json(tmp_path / "d.json", records)
    s = load_eval_set(tmp_path / "d.json", root)
    assert [i.id for i in s.items] == ["0", "v", "w", "x"] and s.problems == []
    first = s.items[0]
    assert (first.task, first.modality, first.source) == ("grounding", "pet", "Src")
    assert first.image_rel == image and first.image_hw == (6, 9)
    assert first.question == "Segment the liver." and first.reference == "and"
    assert first.target_paths == (big, small) and len(first.history) == 1
    assert first.history[0].region_mask_paths == (small,)
    target = s.target_mask(first.target_paths, first.image_hw)  # union, big one resized
    assert np.array_equal(target, rect((6, 9), (0, 3, 0, 4), (4, 6, 6, 9)))
    assert s.items[1].task == "region" and not s.items[1].closed  # tagged open
    assert s.items[2].modality == "pet" and s.items[2].task == "vqa"
    assert s.other_targets(s.items[3]) == [(big, small)]
    assert s.items[3].target_key not in s.other_targets(s.items[3])

    limited = load_eval_set(tmp_path / "d.json", root, limit=1)
    assert [i.id for i in limited.items] == ["0"]
    assert limited.other_targets(limited.items[0]) == [(small,)]  # "x" still counts
    with pytest.raises(UserInputError, match="--limit"):
        load_eval_set(tmp_path / "d.json", root, limit=0)
