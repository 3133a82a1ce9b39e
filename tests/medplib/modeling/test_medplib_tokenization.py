from __future__ import annotations

import pytest

from medplib.conversation import (
    SYSTEM_PROMPT,
    encode_conversation,
    normalize_region_tags,
    place_image,
    render_prompt,
)
from medplib.tokenization import (
    ADDED_TOKENS,
    IGNORE_INDEX,
    IMAGE_SENTINEL,
    REGION_SENTINEL,
    SpecialTokenIds,
    tokenize_with_sentinels,
)


def test_special_tokens_follow_the_base_vocab_in_official_order(tiny_tokenizer):
    base = tiny_tokenizer.vocab_size  # learned BPE vocabulary without added tokens
    ids = [tiny_tokenizer.convert_tokens_to_ids(t) for t in ADDED_TOKENS]
    assert ids == list(range(base, base + 267))
    assert len(tiny_tokenizer) == base + 267
    assert ADDED_TOKENS[:5] == ("<SEG>", "<ref>", "</ref>", "<region>", "</region>")
    assert ADDED_TOKENS[-2:] == ("<im_start>", "<im_end>")


def test_seg_is_one_known_id(tiny_tokenizer):
    seg = tiny_tokenizer.convert_tokens_to_ids("<SEG>")
    assert seg == tiny_tokenizer.vocab_size  # first added token
    assert tiny_tokenizer("<SEG>", add_special_tokens=False)["input_ids"] == [seg]
    assert seg in tiny_tokenizer("the liver <SEG>.", add_special_tokens=False)["input_ids"]
    special = SpecialTokenIds.from_tokenizer(tiny_tokenizer)
    assert (special.unk, special.bos, special.eos, special.pad) == (0, 1, 2, 0)
    assert special.seg == seg


def test_any_text_round_trips(tiny_tokenizer):
    text = "Größe 3×4 cm — ünïcode 😀 \t tabs and <SEG> tokens"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.unk_token_id not in ids
    assert tiny_tokenizer.decode(ids) == text


def test_sentinels_for_image_and_regions(tiny_tokenizer):
    special = SpecialTokenIds.from_tokenizer(tiny_tokenizer)
    ids = tokenize_with_sentinels(
        tiny_tokenizer, "<im_start><image><im_end>\nsee <region></region> and <region></region>"
    )
    assert ids[:3] == [special.im_start, IMAGE_SENTINEL, special.im_end]
    assert ids.count(REGION_SENTINEL) == 2
    for i, t in enumerate(ids):
        if t == REGION_SENTINEL:
            assert ids[i - 1] == special.region_start and ids[i + 1] == special.region_end


def test_llava_v1_prompt_text():
    prompt = render_prompt([("What is this? <image>", "A CT."), ("And here?", None)])
    assert prompt == (
        f"{SYSTEM_PROMPT} USER: <im_start><image><im_end>\nWhat is this? ASSISTANT: A CT.</s>"
        "USER: And here? ASSISTANT:"
    )
    assert place_image("<image>\nQ") == "<im_start><image><im_end>\nQ"


def test_labels_supervise_only_answers(tiny_tokenizer):
    ids, labels = encode_conversation(tiny_tokenizer, [("Q one", "yes"), ("Q two", "no <SEG>")])
    eos, seg = tiny_tokenizer.eos_token_id, tiny_tokenizer.convert_tokens_to_ids("<SEG>")
    assert ids[0] == tiny_tokenizer.bos_token_id and labels[0] == IGNORE_INDEX
    supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX]
    assert tiny_tokenizer.decode(supervised) == " yes</s> no <SEG></s>"
    assert supervised.count(eos) == 2 and seg in supervised
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ids, labels, strict=True))
    assert labels[ids.index(IMAGE_SENTINEL)] == IGNORE_INDEX


@pytest.mark.parametrize(
    ("question", "n", "expected"),
    [
        ("What is at <region>?", 1, "What is at <region></region>?"),
        (
            "Compare <region>masks/a.png</region> and <region>",
            2,
            "Compare <region></region> and <region></region>",
        ),
        ("Describe it.", 2, "Describe it. <region></region> <region></region>"),
        (
            "Compare <region> with the rest",
            2,
            "Compare <region></region> with the rest <region></region>",
        ),
        ("stray </region> tag", 0, "stray  tag"),
    ],
)
def test_region_tags_are_normalised(question, n, expected):
    assert normalize_region_tags(question, n) == expected


def test_more_tags_than_regions_is_an_error():
    with pytest.raises(ValueError, match="2 regions"):
        normalize_region_tags("<region> vs <region>", 1)
