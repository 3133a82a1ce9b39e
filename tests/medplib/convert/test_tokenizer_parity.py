"""Tokenizer parity with the official MedPLIB code (issue 26, item 4).

The official code loads the LLaMA tokenizer with transformers 4.31 as the slow sentencepiece
class (``use_fast=False, legacy=True``) and adds MedPLIB's tokens with
``add_tokens(name, special_tokens=True)``. A tiny sentencepiece model is trained here, and
`official_ids` re-states, independently of transformers, how that tokenizer and the official
``tokenizer_image_token`` helper turn a prompt into ids: the text is split on added tokens,
whitespace next to an added token (not next to `<s>`/`</s>`/`<unk>`) is dropped, and every
remaining span goes through sentencepiece on its own (with its dummy-prefix space).

Findings (docs/fidelity.md, "Tokenizer"): in transformers 5 the sentencepiece-backed and the
fast LLaMA tokenizer disagree on spans that start with a space (`</region> is`), both keep the
whitespace the official tokenizer drops (`is <region>`, `<im_end>\\n`), and the converter's
tokenizer matches the official ids on every template below.
"""

from __future__ import annotations

import io
import json
import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import AddedToken, AutoTokenizer, LlamaTokenizer

import medplib.checkpoint as ckpt
from medplib.conversation import (
    ROLES,
    SEP,
    SEP2,
    SYSTEM_PROMPT,
    encode_conversation,
    normalize_region_tags,
    render_prompt,
)
from medplib.convert import convert_official
from medplib.convert.tokenizer import load_checkpoint_tokenizer
from medplib.modeling.presets import build_config
from medplib.tokenization import (
    ADDED_TOKENS,
    IMAGE_SENTINEL,
    REGION_SENTINEL,
    add_medplib_tokens,
    tokenize_with_sentinels,
)

spm = pytest.importorskip("sentencepiece")
from transformers.tokenization_utils_sentencepiece import (  # noqa: E402  (needs sentencepiece)
    SentencePieceBackend,
    SentencePieceExtractor,
)

CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "USER: What is shown in this image? ASSISTANT: It is a CT scan of the abdomen.",
    "Please segment the liver. Sure, it is here. What is the region? It is abnormal.",
    "The lesion in the region is a tumour, 12 mm wide.\nDescribe the organ.",
]
BASE_SPECIALS = ("<s>", "</s>", "<unk>")

# (question, answer) turns; None = the generation prompt. Region tags as datasets write them.
CASES = {
    "image question": [("<image>\nWhat is shown in this image?", None)],
    "text after </region>": [("<image>\nWhat is <region>mask.png</region> is?", None)],
    "region before the role": [("Describe the lesion in <region></region>", None)],
    "two regions": [("Compare <region></region> and <region></region>.", None)],
    "<SEG>.": [("<image>\nPlease segment the liver.", "Sure, it is <SEG>.")],
    "<SEG>, text": [("Segment it.", "It is <SEG>, 12 mm wide.")],
    "<SEG> last": [("Segment it.", "It is <SEG>")],
    "multi-turn": [
        ("<image>\nWhat is <region></region>?", "A tumour."),
        ("And  the liver?\nNew line", "Sure, <SEG>."),
        ("Anything else?", None),
    ],
}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def sp_path(tmp_path_factory):
    """A LLaMA-like sentencepiece model: BPE, byte fallback, dummy prefix, ids 0/1/2 = unk/s//s."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=buffer,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp("sp") / "tokenizer.model"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def sp(sp_path):
    return spm.SentencePieceProcessor(model_file=str(sp_path))


@pytest.fixture(scope="module")
def added(sp):
    """MedPLIB's tokens with the ids the official code gives them (after the base vocabulary)."""
    return {token: sp.get_piece_size() + i for i, token in enumerate(ADDED_TOKENS)}


@pytest.fixture(scope="module")
def released(sp_path, added, tmp_path_factory):
    """The tokenizer files the official code saves (transformers 4.31, slow LlamaTokenizer)."""
    root = tmp_path_factory.mktemp("released")
    (root / "tokenizer.model").write_bytes(sp_path.read_bytes())

    def added_token(content):
        return {
            "__type": "AddedToken",
            "content": content,
            "lstrip": False,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
        }

    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": added_token("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": added_token("</s>"),
        "legacy": True,
        "model_max_length": 512,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": added_token("<unk>"),
    }
    specials = {
        key: {k: v for k, v in added_token(content).items() if k != "__type"}
        for key, content in (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))
    }
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    (root / "special_tokens_map.json").write_text(json.dumps({**specials, "pad_token": "<unk>"}))
    (root / "added_tokens.json").write_text(json.dumps(dict(sorted(added.items()))))
    return root


@pytest.fixture(scope="module")
def slow(sp_path):
    """transformers 5's sentencepiece-backed tokenizer, legacy=True, tokens added as officially."""
    tokenizer = SentencePieceBackend(
        vocab_file=str(sp_path), legacy=True, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    add_medplib_tokens(tokenizer)
    return tokenizer


@pytest.fixture(scope="module")
def fast(sp_path):
    """transformers 5's fast LLaMA tokenizer from the same model, legacy=True, tokens added as officially."""
    vocab, _, merges = SentencePieceExtractor(str(sp_path)).extract()
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, legacy=True)
    add_medplib_tokens(tokenizer)
    return tokenizer


@pytest.fixture(scope="module")
def converted(released, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    tokenizer, record = load_checkpoint_tokenizer(released, out)
    return tokenizer, record, out


# ----------------------------------------------------------------------------- the official side
def official_ids(sp, added: dict[str, int], text: str) -> list[int]:
    """Ids of `text` (no BOS) under the official slow tokenizer (transformers 4.31, legacy=True)."""
    names = sorted([*added, *BASE_SPECIALS], key=len, reverse=True)
    parts = [p for p in re.split("(" + "|".join(map(re.escape, names)) + ")", text) if p]
    for i, part in enumerate(parts):
        if part in added:  # plain-string added tokens: whitespace on both sides is stripped
            if i > 0 and parts[i - 1] not in added:
                parts[i - 1] = parts[i - 1].rstrip()
            if i + 1 < len(parts) and parts[i + 1] not in added:
                parts[i + 1] = parts[i + 1].lstrip()
    ids: list[int] = []
    for part in parts:
        if part in added:
            ids.append(added[part])
        elif part in BASE_SPECIALS:
            ids.append(sp.piece_to_id(part))
        elif part:
            ids.extend(sp.encode(part))  # each span gets sentencepiece's dummy prefix
    return ids


def official_prompt(turns) -> str:
    """The official LLaVA-v1 prompt (SeparatorStyle.TWO), image first and wrapped."""
    text = SYSTEM_PROMPT + SEP
    for i, (question, answer) in enumerate(turns):
        if i == 0:
            question = "<im_start><image><im_end>\n" + question.replace("<image>", "").strip()
        text += f"{ROLES[0]}: {question}{SEP}"
        text += f"{ROLES[1]}: {answer}{SEP2}" if answer is not None else f"{ROLES[1]}:"
    return text


def official_template_ids(sp, added, prompt: str) -> list[int]:
    """The official `tokenizer_image_token`: BOS, spans split on <image>, region sentinels."""
    ids = [sp.bos_id()]
    for k, chunk in enumerate(prompt.split("<image>")):
        if k:
            ids.append(IMAGE_SENTINEL)
        ids.extend(official_ids(sp, added, chunk))
    out: list[int] = []
    for i, token in enumerate(ids):
        out.append(token)
        if token == added["<region>"] and i + 1 < len(ids) and ids[i + 1] == added["</region>"]:
            out.append(REGION_SENTINEL)
    return out


def canonical(turns):
    return [(normalize_region_tags(q, q.count("<region>")), a) for q, a in turns]


def ours(tokenizer, turns) -> list[int]:
    return encode_conversation(tokenizer, canonical(turns))[0]


def expected(sp, added, turns) -> list[int]:
    return official_template_ids(sp, added, official_prompt(canonical(turns)))


# ----------------------------------------------------------------------------- tests
def test_reference_agrees_with_the_sentencepiece_class(sp, added, slow, sp_path):
    """The stated official rule = transformers 5's sentencepiece class once the added tokens strip."""
    stripping = SentencePieceBackend(
        vocab_file=str(sp_path), legacy=True, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    for token in ADDED_TOKENS:
        stripping.add_tokens([AddedToken(token, lstrip=True, rstrip=True, special=True)])
    assert len(stripping) == len(slow) == sp.get_piece_size() + len(ADDED_TOKENS)
    for turns in CASES.values():
        prompt = official_prompt(canonical(turns))
        for chunk in prompt.split("<image>"):
            ids = stripping(chunk, add_special_tokens=False)["input_ids"]
            assert ids == official_ids(sp, added, chunk), chunk


def test_our_template_renders_the_official_prompt():
    for turns in CASES.values():
        assert render_prompt(canonical(turns)) == official_prompt(canonical(turns))


def test_where_slow_and_fast_differ(sp, added, slow, fast):
    """transformers 5 slow vs fast, both with the tokens added as the official code adds them."""

    def enc(tokenizer, text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    seg, region_end, im_end = added["<SEG>"], added["</region>"], added["<im_end>"]
    # A span starting with a space: sentencepiece puts its dummy prefix before it, fast does not.
    assert sp.encode(" is") != sp.encode("is")
    assert enc(slow, "</region> is") == [region_end, *sp.encode(" is")]
    assert enc(fast, "</region> is") == [region_end, *sp.encode("is")]
    # The official tokenizer drops that space: fast happens to agree here, slow does not.
    assert official_ids(sp, added, "</region> is") == enc(fast, "</region> is")
    # No space after the token: both agree with each other and with the official ids.
    for text in ("<SEG>.", "<SEG>,", "<SEG></s>"):
        assert enc(slow, text) == enc(fast, text) == official_ids(sp, added, text), text
    assert enc(fast, "<SEG>.") == [seg, *sp.encode(".")]
    # Whitespace before an added token, and the newline after <im_end>: both keep it, the
    # official tokenizer strips it.
    for text in ("is <region>", "USER: <im_start>", "<im_end>\nWhat", "is <SEG>"):
        assert enc(slow, text) == enc(fast, text) != official_ids(sp, added, text), text
    assert official_ids(sp, added, "<im_end>\nWhat") == [im_end, *sp.encode("What")]


@pytest.mark.parametrize("name", list(CASES))
def test_converted_tokenizer_matches_the_official_ids(sp, added, converted, name):
    tokenizer, _, _ = converted
    assert ours(tokenizer, CASES[name]) == expected(sp, added, CASES[name])


@pytest.mark.parametrize("name", list(CASES))
def test_default_transformers5_tokenizers_do_not(sp, added, slow, fast, name):
    """Why the converter does not take `AutoTokenizer`'s (fast) or the plain slow tokenizer."""
    want = expected(sp, added, CASES[name])
    assert ours(fast, CASES[name]) != want
    assert ours(slow, CASES[name]) != want


def test_generation_prompts_agree_slow_and_fast_once_added_tokens_strip(
    sp, added, converted, sp_path
):
    """With the official whitespace rule, slow and fast give the same prompt ids; only a span that
    starts with a space (each answer, which our template encodes on its own) differs, and there
    the fast tokenizer, which the converter writes, gives the official ids."""
    tokenizer, _, _ = converted
    slow = SentencePieceBackend(
        vocab_file=str(sp_path), legacy=True, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    for token in ADDED_TOKENS:
        slow.add_tokens([AddedToken(token, lstrip=True, rstrip=True, special=True)])
    for name, turns in CASES.items():
        want = expected(sp, added, turns)
        if all(answer is None for _, answer in turns):
            assert ours(slow, turns) == ours(tokenizer, turns) == want, name
        else:
            assert ours(slow, turns) != want and ours(tokenizer, turns) == want, name


def test_converted_tokenizer_keeps_the_checkpoint_flags(converted, added):
    tokenizer, record, out = converted
    assert record["tokenizer_class"] == "LlamaTokenizer"
    assert record["legacy"] is True and record["legacy_stated"] is True
    assert record["read_from"] == "tokenizer.model" and record["added_tokens"] == len(added)
    assert record["saved_as"] == "LlamaTokenizer (tokenizer.json)"
    saved = json.loads((out / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "LlamaTokenizer" and saved["legacy"] is True
    assert (out / "tokenizer.model").is_file() and (out / "tokenizer.json").is_file()
    pre = json.loads((out / "tokenizer.json").read_text())["pre_tokenizer"]
    assert pre["type"] == "Metaspace" and pre["prepend_scheme"] == "always"  # legacy=True
    for token, index in added.items():
        assert tokenizer.convert_tokens_to_ids(token) == index
        flags = tokenizer.added_tokens_decoder[index]
        assert flags.lstrip and flags.rstrip, token
    assert not tokenizer.added_tokens_decoder[tokenizer.eos_token_id].lstrip
    assert tokenizer.pad_token == "<unk>" and tokenizer.padding_side == "right"
    assert tokenizer("hi")["input_ids"][0] == tokenizer.bos_token_id


def test_reloaded_with_auto_tokenizer_still_matches(sp, added, converted):
    _, _, out = converted
    reloaded = AutoTokenizer.from_pretrained(str(out))
    for name, turns in CASES.items():
        assert ours(reloaded, turns) == expected(sp, added, turns), name


def test_legacy_false_is_kept(released, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for f in released.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    config = json.loads((src / "tokenizer_config.json").read_text())
    (src / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": False}))
    out = tmp_path / "out"
    out.mkdir()
    tokenizer, record = load_checkpoint_tokenizer(src, out)
    assert record["legacy"] is False
    assert json.loads((out / "tokenizer_config.json").read_text())["legacy"] is False
    assert json.loads((out / "tokenizer.json").read_text())["pre_tokenizer"]["prepend_scheme"] == (
        "first"
    )


def test_use_fast_hint_with_a_tokenizer_json_loads_it_as_saved(released, fast, tmp_path):
    src = tmp_path / "src"
    fast.save_pretrained(str(src))
    (src / "tokenizer.model").write_bytes((released / "tokenizer.model").read_bytes())
    config = json.loads((src / "tokenizer_config.json").read_text())
    (src / "tokenizer_config.json").write_text(json.dumps({**config, "use_fast": True}))
    out = tmp_path / "out"
    out.mkdir()
    _, record = load_checkpoint_tokenizer(src, out)
    assert record["use_fast"] is True and "tokenizer.json" in record["read_from"]
    assert record["added_token_whitespace"] == "as saved"


def test_region_sentinels_follow_the_official_rule(converted, added):
    tokenizer, _, _ = converted
    ids = tokenize_with_sentinels(tokenizer, "a <region></region> b <region></region>")
    start, end = added["<region>"], added["</region>"]
    assert ids.count(REGION_SENTINEL) == 2
    for i, token in enumerate(ids):
        if token == REGION_SENTINEL:
            assert ids[i - 1] == start and ids[i + 1] == end


# ----------------------------------------------------------------------------- end to end
_OURS_TO_OFFICIAL = (  # dense (stage II/III) layout, everything in one file
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
    ("projector.net.", "model.mm_projector."),
    ("region_encoder.adapter.", "model.region_fea_adapter."),
    ("vision_tower.clip.vision_model.", "model.vision_tower.vision_tower.vision_model."),
    ("sam.", "model.visual_model."),
    ("seg_head.net.", "model.text_hidden_fcs.0."),
)


def _official_name(key: str) -> str:
    for ours_prefix, theirs in _OURS_TO_OFFICIAL:
        if key.startswith(ours_prefix):
            return theirs + key[len(ours_prefix) :]
    raise AssertionError(f"no rule for {key}")


def test_convert_official_tokenizes_as_the_official_code(sp, added, released, tmp_path):
    config = build_config("tiny-dense")
    config.region.shape_features = False
    config.projector.output_rms = config.region.output_rms = None
    (tmp_path / "scratch").mkdir()
    vocab_tokenizer, _ = load_checkpoint_tokenizer(released, tmp_path / "scratch")
    model = ckpt.build_model(config, vocab_tokenizer, seed=0)
    src = tmp_path / "MedPLIB-tiny"
    src.mkdir()
    for f in released.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    state = {_official_name(k): v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(src / "model.safetensors"))
    (src / "config.json").write_text(json.dumps(dict(config.language.llama)))
    dst = tmp_path / "out"
    report = convert_official(src, dst, preset="tiny-dense")

    assert report.tokenizer["tokenizer_class"] == "LlamaTokenizer"
    assert report.tokenizer["legacy"] is True and report.tokenizer["read_from"] == "tokenizer.model"
    written = json.loads((dst / "conversion.json").read_text())
    assert written["tokenizer"] == report.tokenizer
    _, tokenizer, loaded_config = ckpt.load_pretrained(dst, dtype=torch.float32)
    assert loaded_config.seg_token_id == added["<SEG>"]
    for name, turns in CASES.items():
        assert ours(tokenizer, turns) == expected(sp, added, turns), name
