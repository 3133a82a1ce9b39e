"""Tokenizer: MedPLIB's special tokens, a small trainable tokenizer, and sentinel-aware encoding.

The official model extends the LLaMA tokenizer with 267 tokens, in this order: `<SEG>`,
`<ref>`, `</ref>`, `<region>`, `</region>`, `<sr>`, `</sr>`, `<mask>`, `</mask>`,
`<gen_1>`…`<gen_256>`, `<im_start>`, `<im_end>`. Two placeholders never reach the embedding
table: `<image>` becomes `IMAGE_SENTINEL` (expanded to the visual tokens by the model) and each
`<region></region>` pair gets `REGION_SENTINEL` between its two tokens (replaced by one region
feature). Token ids are always looked up with `convert_tokens_to_ids`, never by encoding text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Every file a tokenizer directory may hold, from any transformers release.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
IMAGE_SENTINEL = -200  # official IMAGE_TOKEN_INDEX
REGION_SENTINEL = -300  # official REGION_TOKEN_INDEX
IGNORE_INDEX = -100  # label value skipped by the cross-entropy

IMAGE_PLACEHOLDER = "<image>"
SEG_TOKEN = "<SEG>"
REGION_START, REGION_END = "<region>", "</region>"
IM_START, IM_END = "<im_start>", "<im_end>"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"

ADDED_TOKENS: tuple[str, ...] = (
    SEG_TOKEN,
    "<ref>",
    "</ref>",
    REGION_START,
    REGION_END,
    "<sr>",
    "</sr>",
    "<mask>",
    "</mask>",
    *(f"<gen_{i}>" for i in range(1, 257)),
    IM_START,
    IM_END,
)

_IMAGE_SPLIT = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)})")


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the tokens the model logic depends on."""

    bos: int
    eos: int
    pad: int
    unk: int
    seg: int
    region_start: int
    region_end: int
    im_start: int
    im_end: int

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, seg_token: str = SEG_TOKEN
    ) -> SpecialTokenIds:
        def lookup(token: str) -> int:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if not isinstance(token_id, int) or (
                token != UNK and token_id == tokenizer.unk_token_id
            ):
                raise ValueError(
                    f"tokenizer has no token {token!r}; build it with medplib.tokenization.add_medplib_tokens"
                )
            return token_id

        pad = tokenizer.pad_token_id
        return cls(
            bos=lookup(BOS),
            eos=lookup(EOS),
            pad=lookup(UNK) if pad is None else int(pad),
            unk=lookup(UNK),
            seg=lookup(seg_token),
            region_start=lookup(REGION_START),
            region_end=lookup(REGION_END),
            im_start=lookup(IM_START),
            im_end=lookup(IM_END),
        )


def add_medplib_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the official special tokens (in order) and set pad = unk, as MedPLIB does; returns #added."""
    added = tokenizer.add_tokens(list(ADDED_TOKENS), special_tokens=True)
    tokenizer.pad_token = tokenizer.unk_token
    return int(added)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with LLaMA's `<unk>`/`<s>`/`</s>` (ids 0, 1, 2) + MedPLIB tokens.

    Byte-level pre-tokenisation means every string is encodable (no `<unk>` at run time).
    `vocab_size` is the learned base vocabulary (≥ 259: 256 bytes + 3 specials); the 267
    MedPLIB tokens come on top, so `len(tokenizer) == vocab_size + 267` when the corpus is rich
    enough to fill the base vocabulary.
    """
    if vocab_size < 259:
        raise ValueError(
            f"vocab_size must be at least 259 (256 bytes + 3 specials), got {vocab_size}"
        )
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[UNK, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    add_medplib_tokens(tokenizer)
    return tokenizer


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of plain text (no BOS, no placeholders)."""
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_with_sentinels(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Encode text where `<image>` → IMAGE_SENTINEL and `<region></region>` → region, sentinel, /region.

    Region tags must already be in the canonical empty-pair form (see
    `medplib.conversation.normalize_region_tags`). As in the official helper, only `<image>`
    splits the text: each span around it is encoded in one call, region tags included, so the
    tokenizer's own whitespace rules around added tokens apply (the official LLaMA tokenizer
    strips the spaces next to `<region>`/`</region>`; see docs/fidelity.md), and
    REGION_SENTINEL then goes between every `<region>` id directly followed by a `</region>` id.
    """
    ids = SpecialTokenIds.from_tokenizer(tokenizer)
    encoded: list[int] = []
    for piece in _IMAGE_SPLIT.split(text):
        if piece == IMAGE_PLACEHOLDER:
            encoded.append(IMAGE_SENTINEL)
        elif piece:
            encoded.extend(encode_text(tokenizer, piece))
    out: list[int] = []
    for i, token in enumerate(encoded):
        out.append(token)
        if token == ids.region_start and i + 1 < len(encoded) and encoded[i + 1] == ids.region_end:
            out.append(REGION_SENTINEL)
    return out
