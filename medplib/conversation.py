"""The LLaVA v1 conversation template used to train and query MedPLIB.

Rendered single-turn prompt (the model continues after "ASSISTANT:")::

    <system> USER: <im_start><image><im_end>\\n<question> ASSISTANT: <answer></s>

Multi-turn history repeats ``USER: … ASSISTANT: …</s>``. The image placeholder always sits at
the start of the first human turn. Only the answers (and their `</s>`) are supervised.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from medplib.tokenization import (
    EOS,
    IGNORE_INDEX,
    IM_END,
    IM_START,
    IMAGE_PLACEHOLDER,
    REGION_END,
    REGION_START,
    tokenize_with_sentinels,
)

# The grounding question of MeCoVQA-G itself: evaluation items are asked in exactly this form,
# and the predictor asks it to check presence answers against a mask.
OFFICIAL_SEGMENT = "Please generate a mask that segments the {x} in this image."

SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
ROLES = ("USER", "ASSISTANT")
SEP = " "  # between the system prompt, a question and the assistant role
SEP2 = EOS  # ends every assistant turn

# A complete <region>…</region> pair (content ignored: datasets put a mask path there), or a lone tag.
_REGION_TAG = re.compile(
    f"{re.escape(REGION_START)}(?:(?!{re.escape(REGION_START)}).)*?{re.escape(REGION_END)}|{re.escape(REGION_START)}",
    re.DOTALL,
)


@dataclass(frozen=True)
class Piece:
    """A span of the rendered conversation; `supervised` spans are answer text trained with CE."""

    text: str
    supervised: bool


def count_region_tags(question: str) -> int:
    return len(_REGION_TAG.findall(question))


def normalize_region_tags(question: str, num_regions: int) -> str:
    """Rewrite every region reference as an empty `<region></region>` pair, one per region.

    Pairs are matched to regions in order of appearance. Missing tags are appended at the end
    of the question (as the official demo does); more tags than regions is an error.
    """
    found = count_region_tags(question)
    if found > num_regions:
        raise ValueError(
            f"the question refers to {found} regions with <region> tags but {num_regions} region masks were given"
        )
    text = _REGION_TAG.sub(REGION_START + REGION_END, question)
    stray = re.compile(f"(?<!{re.escape(REGION_START)}){re.escape(REGION_END)}")
    text = stray.sub("", text)
    missing = num_regions - found
    if missing:
        text = text.rstrip() + "".join(f" {REGION_START}{REGION_END}" for _ in range(missing))
    return text


def place_image(question: str, use_im_start_end: bool = True) -> str:
    """Move the `<image>` placeholder to the start of the question (once), wrapped if configured."""
    text = question.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "").strip()
    image = f"{IM_START}{IMAGE_PLACEHOLDER}{IM_END}" if use_im_start_end else IMAGE_PLACEHOLDER
    return f"{image}\n{text}"


def render_pieces(
    turns: Sequence[tuple[str, str | None]],
    *,
    use_im_start_end: bool = True,
    system: str = SYSTEM_PROMPT,
) -> list[Piece]:
    """Render (question, answer) turns; only the last answer may be None (= generation prompt)."""
    if not turns:
        raise ValueError("a conversation needs at least one turn")
    pieces: list[Piece] = []
    for i, (question, answer) in enumerate(turns):
        if answer is None and i != len(turns) - 1:
            raise ValueError(f"turn {i} has no answer but is not the last turn")
        q = (
            place_image(question, use_im_start_end)
            if i == 0
            else question.replace(IMAGE_PLACEHOLDER, "").strip()
        )
        head = f"{system}{SEP}" if i == 0 else ""
        pieces.append(Piece(f"{head}{ROLES[0]}: {q}{SEP}{ROLES[1]}:", supervised=False))
        if answer is not None:
            pieces.append(Piece(f" {answer.strip()}{SEP2}", supervised=True))
    return pieces


def render_prompt(turns: Sequence[tuple[str, str | None]], *, use_im_start_end: bool = True) -> str:
    return "".join(p.text for p in render_pieces(turns, use_im_start_end=use_im_start_end))


def encode_conversation(
    tokenizer,
    turns: Sequence[tuple[str, str | None]],
    *,
    use_im_start_end: bool = True,
) -> tuple[list[int], list[int]]:
    """Token ids (with sentinels, BOS first) and LLaVA-v1 labels (prompt spans = IGNORE_INDEX)."""
    bos = tokenizer.convert_tokens_to_ids(tokenizer.bos_token)
    ids, labels = [int(bos)], [IGNORE_INDEX]
    for piece in render_pieces(turns, use_im_start_end=use_im_start_end):
        piece_ids = tokenize_with_sentinels(tokenizer, piece.text)
        ids.extend(piece_ids)
        if piece.supervised:
            labels.extend(t if t >= 0 else IGNORE_INDEX for t in piece_ids)
        else:
            labels.extend([IGNORE_INDEX] * len(piece_ids))
    return ids, labels
