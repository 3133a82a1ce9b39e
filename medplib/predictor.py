"""MedPLIBPredictor: encode an image once, then ask many questions about it.

Like segment-anything's `SamPredictor`: `set_image` runs both image encoders (CLIP for the
LLM, SAM-Med2D for masks) and caches the results; `ask` renders the conversation, splices in
visual tokens and region features, decodes an answer and turns every `<SEG>` in it into a
binary mask at the original image resolution.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medplib.answer_check import MASK_THRESHOLD, needs_mask
from medplib.answer_text import clean_answer
from medplib.checkpoint import (
    checkpoint_id as make_checkpoint_id,
)
from medplib.checkpoint import (
    default_checkpoint_dir,
    load_pretrained,
    read_fingerprint,
    weights_fingerprint,
)
from medplib.conversation import (
    OFFICIAL_SEGMENT,
    count_region_tags,
    encode_conversation,
    normalize_region_tags,
)
from medplib.errors import UserInputError
from medplib.generation import GenerationResult, fit_to_context, generate
from medplib.masks import mask_bbox_xyxy_px
from medplib.mirror_tta import merge_mirrored, mirror_clip_input, mirror_sam_input
from medplib.modeling.batching import clip_and_sam_inputs
from medplib.modeling.image_processing import ImageGeometry, region_grid_weights, to_rgb_uint8
from medplib.modeling.medplib import MedPLIBForCausalLM
from medplib.modeling.outputs import LayerRouting
from medplib.presence_check import (
    PresenceVote,
    mask_score,
    other_answer,
    presence_target,
    presence_vote,
)
from medplib.prompt_prefix import (
    PrefixStore,
    PromptPrefix,
    encode_prefix,
    prefix_forward,
    reusable,
)
from medplib.region_check import RegionVote, region_coverage, region_target, region_vote
from medplib.side_tta import SideVote, asks_for_a_side, other_side, side_vote
from medplib.tokenization import IMAGE_SENTINEL, REGION_END, REGION_START, SpecialTokenIds

Progress = Callable[[str, float], None]
MAX_NEW_TOKENS_LIMIT = 4096  # hard cap on one answer (the official worker caps at 1024)
# Budget of the grounding answer drawn for the presence check: the demo's are "Sure, it is
# <SEG>." and the like, a dozen tokens; a <SEG> any later is not a plain grounding answer.
_GROUNDING_ANSWER_TOKENS = 32
_REGION_ANY = re.compile(
    f"{re.escape(REGION_START)}.*?{re.escape(REGION_END)}|{re.escape(REGION_START)}|{re.escape(REGION_END)}",
    re.DOTALL,
)


@dataclass
class PredictedMask:
    """One mask per `<SEG>` in the answer."""

    mask: np.ndarray  # (H, W) bool at the original image resolution
    score: float  # mean sigmoid probability inside the mask (0.0 for an empty mask)
    iou_prediction: float  # SAM-Med2D IoU head's estimate for this mask
    area_px: int  # number of True pixels
    # Half-open (x0, y0, x1, y1) box in original pixels; None for an empty mask.
    bbox_xyxy_px: tuple[int, int, int, int] | None
    seg_index: int  # 0-based index of the `<SEG>` among the answer's `<SEG>` tokens
    # The same mask binarised at other thresholds, when `ask(extra_thresholds=...)` asked.
    at_thresholds: dict[float, np.ndarray] = field(default_factory=dict)
    # Dice between the masks decoded on the image and on its mirror, flipped back (None: the
    # config's mirror TTA is off); the two were averaged when it reached the config's gate.
    mirror_agreement: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (the pixel array is left out; encode it with medplib.masks)."""
        return {
            "score": self.score,
            "iou_prediction": self.iou_prediction,
            "area_px": self.area_px,
            "bbox_xyxy_px": list(self.bbox_xyxy_px) if self.bbox_xyxy_px else None,
            "seg_index": self.seg_index,
            "mirror_agreement": self.mirror_agreement,
            "height_px": int(self.mask.shape[0]),
            "width_px": int(self.mask.shape[1]),
        }


@dataclass
class RoutingStats:
    """Which MoE expert handled which tokens (official expert order: 0 = grounding, 1 = VL).

    Shares are fractions of tokens per expert, one list per MoE layer. Prompt shares are over
    every prompt token (also split into image and text tokens); answer shares and
    `answer_experts` use, for each generated token, the position whose hidden state predicted
    it (so the first answer token is attributed to the last prompt position).
    """

    layers: list[int] = field(default_factory=list)  # decoder layer index of each MoE layer
    num_experts: int = 1
    prompt_share: list[list[float]] = field(default_factory=list)  # [layer][expert]
    prompt_image_share: list[list[float]] = field(default_factory=list)
    prompt_text_share: list[list[float]] = field(default_factory=list)
    answer_share: list[list[float]] = field(default_factory=list)
    answer_experts: list[list[int]] = field(default_factory=list)  # [generated token][layer]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "num_experts": self.num_experts,
            "prompt_share": self.prompt_share,
            "prompt_image_share": self.prompt_image_share,
            "prompt_text_share": self.prompt_text_share,
            "answer_share": self.answer_share,
            "answer_experts": self.answer_experts,
        }


@dataclass
class Prediction:
    answer: str  # readable answer: special tokens (incl. <SEG>) removed, whitespace tidied
    raw_answer: str  # decoded answer with special tokens, without the final </s>
    masks: list[PredictedMask]
    routing: RoutingStats
    timings: dict[str, float]  # seconds: encode_image, prefill, decode, masks, total
    warnings: list[str]
    checkpoint_id: str
    finish_reason: str = "stop"  # "stop", "stop_string" or "length"
    num_prompt_tokens: int = 0  # LLM positions in the prompt (visual tokens included)
    answer_token_ids: list[int] = field(default_factory=list)
    # How a left/right answer was checked on the mirrored image (None: not checked).
    side_vote: SideVote | None = None
    # How a yes/no answer to a presence question was checked against the structure's mask
    # (None: not checked).
    presence_vote: PresenceVote | None = None
    # How a yes/no answer about one marked region was checked against the structure's mask
    # (None: not checked).
    region_vote: RegionVote | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "raw_answer": self.raw_answer,
            "masks": [m.to_dict() for m in self.masks],
            "routing": self.routing.to_dict(),
            "timings": dict(self.timings),
            "warnings": list(self.warnings),
            "checkpoint_id": self.checkpoint_id,
            "finish_reason": self.finish_reason,
            "num_prompt_tokens": self.num_prompt_tokens,
            "side_vote": self.side_vote.to_dict() if self.side_vote is not None else None,
            "presence_vote": (
                self.presence_vote.to_dict() if self.presence_vote is not None else None
            ),
            "region_vote": self.region_vote.to_dict() if self.region_vote is not None else None,
        }


@dataclass
class _EncodedImage:
    original_hw: tuple[int, int]
    clip_geometry: ImageGeometry
    patches: torch.Tensor  # (N, C) raw CLIP patch features
    visual_tokens: torch.Tensor  # (N, D) projected
    sam_embedding: torch.Tensor  # (1, C', h, w)
    sam_input_hw: tuple[int, int]
    encode_s: float
    # (1, C', h, w) of the left-right mirrored image, when the config asks for mirror TTA.
    sam_embedding_mirrored: torch.Tensor | None = None
    # (3, S, S) CLIP input, kept when left/right answers are checked on the mirrored image.
    clip_pixels: torch.Tensor | None = None


@dataclass(frozen=True)
class GenerationOptions:
    """How one answer is decoded; `ask` and `predict_batch` build it from their keywords.

    Frozen: one value serves every item of a batch, so nothing may change it mid-batch.
    """

    # A few sentences and their <SEG> tokens fit; longer answers must be asked for.
    max_new_tokens: int = 128
    temperature: float = 0.0  # greedy: the same question about the same image, the same answer
    top_p: float = 1.0  # no nucleus cut; it only matters once temperature > 0
    stop: tuple[str, ...] = ()  # none: the answer ends at </s> or at max_new_tokens
    seed: int | None = None  # None: sampling draws from torch's global RNG like any other op

    def validate(self) -> None:
        """Raise `UserInputError` before any model work: these values often come from a form."""
        if not 1 <= int(self.max_new_tokens) <= MAX_NEW_TOKENS_LIMIT:
            raise UserInputError(
                f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_LIMIT}, got {self.max_new_tokens}."
            )
        if not self.temperature >= 0.0:
            raise UserInputError(f"temperature must be 0 or more, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise UserInputError(f"top_p must be in (0, 1], got {self.top_p}.")

    @property
    def stop_strings(self) -> list[str]:
        # An empty stop string would be found in every answer and end it at once.
        return [s for s in self.stop if s]


def _presence_note(vote: PresenceVote, min_mask_score: float) -> str:
    """Why an overturned presence answer says what it says, for the user."""
    assert vote.mask_score is not None
    found = (
        f"draws a confident mask (mean probability {vote.mask_score:.2f})"
        if vote.mask_score >= min_mask_score
        else f"finds no confident mask (mean probability {vote.mask_score:.2f}, under "
        f"{min_mask_score:.2f})"
    )
    return (
        f"The model leaned to {vote.plain!r}; asked to outline the {vote.structure}, it {found}, "
        f"so the answer is {vote.answer!r}."
    )


def _region_note(vote: RegionVote, min_coverage: float) -> str:
    """Why an overturned answer about a region says what it says, for the user."""
    assert vote.coverage is not None
    relation = "at least" if vote.coverage >= min_coverage else "under"
    return (
        f"The model leaned to {vote.plain!r}; the {vote.structure} it outlines covers "
        f"{vote.coverage:.0%} of the region ({relation} {min_coverage:.0%}), so the answer is "
        f"{vote.answer!r}."
    )


def _check_region(mask: Any, hw: tuple[int, int], i: int) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.shape != hw:
        raise UserInputError(
            f"Region {i + 1} has shape {arr.shape} but the image is {hw[0]}x{hw[1]}; draw regions on the same image."
        )
    arr = arr.astype(bool) if arr.dtype != bool else arr
    if not arr.any():
        raise UserInputError(
            f"Region {i + 1} is empty; draw a point, box or shape on the image before asking."
        )
    return arr


class MedPLIBPredictor:
    """Stateful question answering and grounding over one image at a time."""

    def __init__(
        self, model: MedPLIBForCausalLM, tokenizer, *, checkpoint_id: str | None = None
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = model.config
        self.special = SpecialTokenIds.from_tokenizer(tokenizer, self.config.seg_token)
        if self.config.seg_token_id is None:
            self.config.seg_token_id = self.special.seg
        if self.config.seg_token_id != self.special.seg:
            raise ValueError(
                f"model expects <SEG> id {self.config.seg_token_id}, tokenizer has {self.special.seg}"
            )
        if checkpoint_id is None:
            checkpoint_id = make_checkpoint_id(self.config, weights_fingerprint(model.state_dict()))
        self.checkpoint_id = checkpoint_id
        self._image: _EncodedImage | None = None
        # Every prompt about an image starts with the same system prompt and visual tokens:
        # run once per image, they serve the answer, its checks and later questions. False
        # runs every prompt whole (the reference the reuse is measured and tested against).
        self.reuse_prompt_start = True
        self._prefixes = PrefixStore()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> MedPLIBPredictor:
        """Load a checkpoint directory (None: the default demo / untrained tiny checkpoint)."""
        directory = Path(path) if path is not None else default_checkpoint_dir()
        model, tokenizer, config = load_pretrained(directory, device=device, dtype=dtype)
        fp = read_fingerprint(directory) or weights_fingerprint(model.state_dict())
        return cls(model, tokenizer, checkpoint_id=make_checkpoint_id(config, fp))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def is_image_set(self) -> bool:
        return self._image is not None

    @property
    def image_hw(self) -> tuple[int, int] | None:
        return None if self._image is None else self._image.original_hw

    def reset_image(self) -> None:
        self._image = None
        self._prefixes.clear()

    # ------------------------------------------------------------------------------ encoding
    @torch.no_grad()
    def _encode(self, images: Sequence[Any]) -> list[_EncodedImage]:
        rgbs = [to_rgb_uint8(im) for im in images]
        t0 = time.perf_counter()
        prepared = [clip_and_sam_inputs(rgb, self.config) for rgb in rgbs]
        clip = torch.stack([p[0] for p in prepared])  # (B, 3, S, S)
        sam = torch.stack([p[2] for p in prepared])  # (B, 3, S', S')
        patches, visual = self.model.encode_clip(clip.to(self.device))  # (B, N, C), (B, N, D)
        mirror = self.config.flip_tta_min_agreement is not None
        if mirror:  # one encoder pass over the images and their mirrors
            mirrored = [mirror_sam_input(p[2], p[3]) for p in prepared]
            sam = torch.cat([sam, torch.stack(mirrored)])  # (2B, 3, S', S')
        sam_emb = self.model.encode_sam(sam.to(self.device))  # (B or 2B, C', h, w)
        per = (time.perf_counter() - t0) / len(rgbs)
        n = len(rgbs)
        return [
            _EncodedImage(
                rgb.shape[:2],
                p[1],
                patches[b],
                visual[b],
                sam_emb[b : b + 1],
                p[3],
                per,
                sam_emb[n + b : n + b + 1] if mirror else None,
                clip[b] if self.config.side_tta_max_margin is not None else None,
            )
            for b, (rgb, p) in enumerate(zip(rgbs, prepared, strict=True))
        ]

    def set_image(self, image: Any) -> None:
        """Encode (H, W, 3) uint8 RGB (or (H, W) grayscale / any mode `to_rgb_uint8` takes) once."""
        self._prefixes.clear()
        self._image = self._encode([image])[0]

    # ------------------------------------------------------------------------------ asking
    def ask(
        self,
        question: str,
        regions: Sequence[np.ndarray] = (),
        history: Sequence[tuple] = (),
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        progress: Progress | None = None,
        seed: int | None = None,
        extra_thresholds: Sequence[float] = (),
        on_text: Callable[[str], None] | None = None,
    ) -> Prediction:
        """Answer `question` about the current image.

        Arguments:
          question: text; `<region>` tags refer to `regions` in order (missing tags are appended).
          regions: bool (H, W) masks in original pixels (points / boxes / sketches as masks).
          history: earlier (question, answer) pairs, oldest first; a third item may hold that
            turn's region masks. Region tags of turns without masks are dropped (with a warning).
          max_new_tokens, temperature, top_p, stop, seed: decoding (see `GenerationOptions`);
            greedy when temperature is 0, and `seed` makes sampling reproducible.
          progress: optional `progress(phase, fraction)` callback; phases are "prefill",
            "decode" (fraction of max_new_tokens), "masks" and finally ("done", 1.0).
          extra_thresholds: also binarise each mask at these sigmoid thresholds (evaluation
            reports 0.5 beside the official 0.1); see `PredictedMask.at_thresholds`.
          on_text: optional `on_text(answer_so_far)` callback after each generated token, with
            the readable text (special tokens hidden) for display while the answer streams.
        """
        if self._image is None:
            raise UserInputError("No image is set; call set_image(image) before ask(question).")
        options = GenerationOptions(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=tuple(stop or ()),
            seed=seed,
        )
        return self._answer(
            self._image,
            question,
            regions,
            history,
            options,
            progress=progress,
            extra_thresholds=extra_thresholds,
            on_text=on_text,
        )

    def predict_batch(
        self,
        images: Sequence[Any],
        questions: Sequence[str],
        regions: Sequence[Sequence[np.ndarray]] | None = None,
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] | None = None,
        batch_size: int = 8,
        seed: int | None = None,
    ) -> list[Prediction]:
        """One answer per (image, question[, regions]); images are encoded in batches of `batch_size`.

        The predictor's current image (from `set_image`) is left untouched.
        """
        if len(images) != len(questions) or (regions is not None and len(regions) != len(images)):
            raise UserInputError(
                "Give exactly one question (and one list of regions, if any) per image."
            )
        options = GenerationOptions(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=tuple(stop or ()),
            seed=seed,
        )
        results: list[Prediction] = []
        for start in range(0, len(images), max(1, batch_size)):
            encoded = self._encode(images[start : start + batch_size])
            for k, enc in enumerate(encoded):
                i = start + k
                regs = regions[i] if regions is not None else ()
                results.append(self._answer(enc, questions[i], regs, (), options))
        return results

    # ------------------------------------------------------------------------------ internals
    @staticmethod
    def _validate_question(question: str) -> None:
        if not isinstance(question, str) or not question.strip():
            raise UserInputError("The question is empty; type a question about the image.")

    def _build_turns(self, question, regions, history, hw, warn):
        """(turns, region masks in sentinel order)."""
        turns: list[tuple[str, str | None]] = []
        masks: list[np.ndarray] = []
        for j, item in enumerate(history):
            if len(item) not in (2, 3):
                raise UserInputError(
                    f"History item {j + 1} must be (question, answer) or (question, answer, regions)."
                )
            q, a = str(item[0]), str(item[1])
            turn_regions = list(item[2]) if len(item) == 3 and item[2] is not None else []
            if turn_regions:
                checked = [_check_region(m, hw, i) for i, m in enumerate(turn_regions)]
                q = self._normalize(q, len(checked))
                masks.extend(checked)
            elif _REGION_ANY.search(q):
                q = _REGION_ANY.sub("", q)
                warn(
                    f"History turn {j + 1} mentions a region without its mask; the region tag was dropped."
                )
            turns.append((q, a))
        checked = [_check_region(m, hw, i) for i, m in enumerate(regions)]
        turns.append((self._normalize(question, len(checked)), None))
        masks.extend(checked)
        return turns, masks

    @staticmethod
    def _normalize(question: str, n: int) -> str:
        try:
            return normalize_region_tags(question, n)
        except ValueError as exc:
            raise UserInputError(
                f"The question has more <region> tags than regions were given: {exc}."
            ) from exc

    @torch.no_grad()
    def _answer(
        self,
        enc: _EncodedImage,
        question: str,
        regions: Sequence[np.ndarray],
        history: Sequence[tuple],
        options: GenerationOptions,
        *,
        progress: Progress | None = None,
        extra_thresholds: Sequence[float] = (),
        on_text: Callable[[str], None] | None = None,
    ) -> Prediction:
        """Prompt, decode, then one mask per `<SEG>`: the whole of `ask` for an encoded image."""
        t_start = time.perf_counter()
        notes: list[str] = []
        report = progress or (lambda phase, frac: None)
        self._validate_question(question)
        options.validate()
        turns, masks = self._build_turns(question, regions, history, enc.original_hw, notes.append)
        ids, masks, max_new = self._fit(turns, masks, options.max_new_tokens, notes)
        report("prefill", 0.0)
        embeds, token_ids = self._embed(enc, ids, masks)  # (1, L, D), (1, L)
        result = self._decode(enc, ids, embeds, token_ids, options, max_new, report, on_text)
        tokens, raw, readable = self._answer_text(result, options.stop_strings)
        vote = presence = region = None
        # An earlier turn would change what is asked about (and a region would have to be
        # mirrored with the image); a sampled answer is meant to vary.
        single_greedy = not history and options.temperature == 0
        plain_greedy = single_greedy and not regions
        structure = (
            self._check_target(
                self.config.presence_check_max_margin, presence_target, question, result, readable
            )
            if plain_greedy
            else None
        )
        region_structure = (
            self._check_target(
                self.config.region_check_max_margin, region_target, turns[-1][0], result, readable
            )
            if single_greedy and len(masks) == 1
            else None
        )
        if plain_greedy and self._checks_side(enc, question, result, readable):
            vote = self._side_vote(enc, turns, readable)
            if vote.answer != vote.plain:
                tokens = self._answer_ids(turns, vote.answer)
                raw = readable = vote.answer
                notes.append(
                    f"The model leaned to {vote.plain!r}; weighed with the left-right mirrored "
                    f"image, where the sides swap, the answer is {vote.answer!r}."
                )
        elif structure is not None:
            presence = self._presence_vote(enc, turns, readable, structure)
            if presence.answer != presence.plain:
                tokens = self._answer_ids(turns, presence.answer)
                raw = readable = presence.answer
                notes.append(_presence_note(presence, self.config.presence_check_min_mask_score))
        elif region_structure is not None:
            region = self._region_vote(enc, turns, masks, readable, region_structure)
            if region.answer != region.plain:
                tokens = self._answer_ids(turns, region.answer)
                raw = readable = region.answer
                notes.append(_region_note(region, self.config.region_check_min_coverage))
        t_masks = time.perf_counter()
        report("masks", 0.0)
        pred_masks = self._masks(enc, tokens, result, report, extra_thresholds)
        masks_s = time.perf_counter() - t_masks
        if result.finish_reason == "length":
            notes.append("The answer hit max_new_tokens before finishing.")
        report("done", 1.0)
        timings = {
            "encode_image": enc.encode_s,
            "prefill": result.prefill_s,
            "decode": result.decode_s,
            "masks": masks_s,
            "total": enc.encode_s + (time.perf_counter() - t_start),
        }
        return Prediction(
            answer=clean_answer(readable),
            raw_answer=raw.strip(),
            masks=pred_masks,
            routing=self._routing(result, token_ids),
            timings=timings,
            warnings=notes,
            checkpoint_id=self.checkpoint_id,
            finish_reason=result.finish_reason,
            num_prompt_tokens=int(embeds.shape[1]),
            answer_token_ids=tokens,
            side_vote=vote,
            presence_vote=presence,
            region_vote=region,
        )

    def _checks_side(
        self, enc: _EncodedImage, question: str, result: GenerationResult, readable: str
    ) -> bool:
        """Whether a greedy answer to a single question without regions gets the left/right
        mirror check (`medplib.side_tta`): a finished, bare side word to a question offering
        both sides, on an image encoded with the check on."""
        return (
            self.config.side_tta_max_margin is not None
            and enc.clip_pixels is not None
            and result.finish_reason == "stop"
            and asks_for_a_side(question)
            and other_side(clean_answer(readable)) is not None
        )

    @torch.no_grad()
    def _side_vote(
        self, enc: _EncodedImage, turns: list[tuple[str, str | None]], readable: str
    ) -> SideVote:
        """Weigh the decoded side and the other one on the image and on its mirror."""
        assert enc.clip_pixels is not None and self.config.side_tta_max_margin is not None
        plain = clean_answer(readable)
        other = other_side(plain)
        assert other is not None
        flipped = mirror_clip_input(enc.clip_pixels, enc.clip_geometry)
        patches, visual = self.model.encode_clip(flipped[None].to(self.device))  # (1, N, ·)
        mirrored = replace(enc, patches=patches[0], visual_tokens=visual[0])
        margins = [self._margin(view, turns, plain, other) for view in (enc, mirrored)]
        return side_vote(
            plain,
            other,
            margin=margins[0],
            mirror_margin=margins[1],
            max_margin=self.config.side_tta_max_margin,
        )

    @staticmethod
    def _check_target(
        max_margin: float | None,
        find: Callable[[str], str | None],
        question: str,
        result: GenerationResult,
        readable: str,
    ) -> str | None:
        """The structure a finished, bare yes/no answer is checked against by the check whose
        margin is `max_margin` and whose questions `find` reads (`medplib.presence_check`,
        `medplib.region_check`); None when that check is off or does not apply."""
        if max_margin is None or result.finish_reason != "stop":
            return None
        if other_answer(clean_answer(readable)) is None:
            return None
        return find(question)

    def _margin(
        self,
        enc: _EncodedImage,
        turns: list[tuple[str, str | None]],
        plain: str,
        other: str,
        masks: Sequence[np.ndarray] = (),
    ) -> float:
        """log p(plain) - log p(other), both teacher-forced on the encoded image."""
        logp_plain, logp_other = self._answer_logprobs(enc, turns, (plain, other), masks)
        return logp_plain - logp_other

    @torch.no_grad()
    def _presence_vote(
        self, enc: _EncodedImage, turns: list[tuple[str, str | None]], readable: str, structure: str
    ) -> PresenceVote:
        """Weigh yes against no; where that is close, ask the grounding expert for the mask."""
        max_margin = self.config.presence_check_max_margin
        assert max_margin is not None
        plain = clean_answer(readable)
        other = other_answer(plain)
        assert other is not None
        margin = self._margin(enc, turns, plain, other)
        score = None
        if needs_mask(margin, max_margin=max_margin):
            prob = self._structure_prob(enc, structure)
            score = mask_score(prob) if prob is not None else 0.0
        return presence_vote(
            plain,
            other,
            structure,
            margin=margin,
            mask_score=score,
            max_margin=max_margin,
            min_mask_score=self.config.presence_check_min_mask_score,
        )

    @torch.no_grad()
    def _region_vote(
        self,
        enc: _EncodedImage,
        turns: list[tuple[str, str | None]],
        masks: list[np.ndarray],
        readable: str,
        structure: str,
    ) -> RegionVote:
        """Weigh yes against no about the region; where that is close, outline the structure
        and see how much of the region it covers."""
        max_margin = self.config.region_check_max_margin
        assert max_margin is not None and len(masks) == 1
        plain = clean_answer(readable)
        other = other_answer(plain)
        assert other is not None
        margin = self._margin(enc, turns, plain, other, masks)
        coverage = None
        if needs_mask(margin, max_margin=max_margin):
            prob = self._structure_prob(enc, structure)
            drawn = (prob > MASK_THRESHOLD).cpu().numpy() if prob is not None else None
            coverage = region_coverage(drawn, masks[0]) if drawn is not None else 0.0
        return region_vote(
            plain,
            other,
            structure,
            margin=margin,
            coverage=coverage,
            max_margin=max_margin,
            min_coverage=self.config.region_check_min_coverage,
        )

    def _structure_prob(self, enc: _EncodedImage, structure: str) -> torch.Tensor | None:
        """Sigmoid probabilities (H, W) of the mask of the first <SEG> answered to the official
        grounding question about `structure` (greedy); None when the answer draws none."""
        question = OFFICIAL_SEGMENT.format(x=structure)
        turns, _ = self._build_turns(question, [], [], enc.original_hw, lambda _: None)
        ids, _, max_new = self._fit(turns, [], _GROUNDING_ANSWER_TOKENS, [])
        embeds, token_ids = self._embed(enc, ids, [])  # (1, L, D), (1, L)
        result = self._decode(
            enc, ids, embeds, token_ids, GenerationOptions(), max_new, lambda phase, frac: None
        )
        seg = [k for k, t in enumerate(result.token_ids) if t == self.special.seg]
        if not seg:
            return None
        prob, _, _ = self._mask_prob(enc, result.predicting_hidden[seg[0] : seg[0] + 1])
        return prob

    @torch.no_grad()
    def _answer_logprobs(
        self,
        enc: _EncodedImage,
        turns: list[tuple[str, str | None]],
        answers: Sequence[str],
        masks: Sequence[np.ndarray] = (),
    ) -> list[float]:
        """log p(answer and its </s> | prompt) for each of `answers`, teacher-forced on the
        encoded image with the prompt's region `masks`, all in one batch."""
        rows, prefixes = [], []
        for answer in answers:
            ids, labels = self._conversation(turns, answer)
            embeds, token_ids = self._embed(enc, ids, list(masks))  # (1, L, D), (1, L)
            prefix, rest = self._split_prompt(enc, ids, embeds, token_ids)
            rows.append((ids, labels, rest))
            prefixes.append(prefix)
        # One question about one image: every answer reads the same stored start, or none.
        assert all(p is prefix for p in prefixes)
        width = max(rest.shape[1] for _, _, rest in rows)
        # Padding after an answer is never attended to by it (attention is causal).
        batch = torch.cat([F.pad(rest, (0, 0, 0, width - rest.shape[1])) for _, _, rest in rows])
        hidden = prefix_forward(self.model, batch, prefix)  # (B, S, D): positions L - S ..
        logp = self.model.language_model.lm_head(hidden).float().log_softmax(-1)  # (B, S, V)
        out = []
        for b, (ids, labels, rest) in enumerate(rows):
            # The answer ends its sequence, so text position i sits at expanded L - (len(ids) -
            # i), row S_b - (len(ids) - i) here, and is predicted from the row before it.
            length = rest.shape[1]
            out.append(
                sum(
                    float(logp[b, length - (len(ids) - i) - 1, t])
                    for i, (t, lab) in enumerate(zip(ids, labels, strict=True))
                    if lab >= 0
                )
            )
        return out

    def _answer_ids(self, turns: list[tuple[str, str | None]], answer: str) -> list[int]:
        """The ids of `answer` as the model would decode it, without the final </s>."""
        ids, labels = self._conversation(turns, answer)
        supervised = [t for t, lab in zip(ids, labels, strict=True) if lab >= 0]
        return supervised[:-1] if supervised and supervised[-1] == self.special.eos else supervised

    def _conversation(
        self, turns: list[tuple[str, str | None]], answer: str
    ) -> tuple[list[int], list[int]]:
        done = [*turns[:-1], (turns[-1][0], answer)]
        return encode_conversation(
            self.tokenizer, done, use_im_start_end=self.config.use_im_start_end
        )

    def _fit(
        self,
        turns: list[tuple[str, str | None]],
        masks: list[np.ndarray],
        max_new_tokens: int,
        notes: list[str],
    ) -> tuple[list[int], list[np.ndarray], int]:
        """(prompt ids, region masks still referred to, answer budget) within the context.

        Old turns that do not fit are dropped, and their regions with them, so the masks
        left line up with the region sentinels left in the prompt.
        """
        fit = fit_to_context(
            turns,
            lambda ts: encode_conversation(
                self.tokenizer, ts, use_im_start_end=self.config.use_im_start_end
            )[0],
            extra_tokens=self.config.vision.num_patches - 1,  # the placeholder becomes N tokens
            context_length=self.config.language.max_position_embeddings,
            max_new_tokens=int(max_new_tokens),
        )
        notes.extend(fit.warnings)
        dropped_regions = sum(count_region_tags(q) for q, _ in turns[: fit.dropped_turns])
        return fit.ids, masks[dropped_regions:], fit.max_new_tokens

    def _embed(
        self, enc: _EncodedImage, ids: list[int], masks: list[np.ndarray]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings (1, L, D) with visual tokens and region features spliced in, and
        the token ids (1, L) behind them (image positions marked) for the routing record."""
        model = self.model
        weights = [
            region_grid_weights(
                m, enc.clip_geometry, self.config.vision.patch_size, self.config.region.pooling
            )
            for m in masks
        ]
        feats = None
        if weights:
            w = torch.from_numpy(np.stack(weights)).to(self.device)  # (R, N)
            feats = [model.region_encoder(enc.patches, w)]
        ids_t = torch.tensor([ids], dtype=torch.long, device=self.device)  # (1, L')
        embeds, _, token_ids, _ = model.assemble_embeddings(
            ids_t, None, enc.visual_tokens[None], feats
        )
        return embeds, token_ids

    def _prefix_place(
        self, ids: list[int], embeds: torch.Tensor, token_ids: torch.Tensor
    ) -> tuple[tuple[int, ...], int] | None:
        """(the ids up to the image, which with the image name the prompt's start; its length
        P up to the last visual token), or None where the prompt has no image, nothing follows
        it, or the model's routing would not give the same answer in two parts."""
        image = torch.nonzero(token_ids[0] == IMAGE_SENTINEL).flatten()
        if not (self.reuse_prompt_start and reusable(self.config.moe)) or image.numel() == 0:
            return None
        length = int(image[-1]) + 1
        if length >= embeds.shape[1]:
            return None
        return tuple(ids[: ids.index(IMAGE_SENTINEL) + 1]), length

    def _split_prompt(
        self, enc: _EncodedImage, ids: list[int], embeds: torch.Tensor, token_ids: torch.Tensor
    ) -> tuple[PromptPrefix | None, torch.Tensor]:
        """(the prompt's start, stored or run now, and the embeddings (1, S, D) after it), or
        (None, all of `embeds`) where it has none (`_prefix_place`)."""
        place = self._prefix_place(ids, embeds, token_ids)
        if place is None:
            return None, embeds
        head, length = place
        prefix = self._prefixes.get(
            enc.visual_tokens, head, lambda: encode_prefix(self.model, embeds[:, :length])
        )
        return prefix, embeds[:, length:]

    def _decode(
        self,
        enc: _EncodedImage,
        ids: list[int],
        embeds: torch.Tensor,
        token_ids: torch.Tensor,
        options: GenerationOptions,
        max_new: int,
        report: Progress,
        on_text: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        """Decode the prompt (1, L, D) after its stored start; where none is stored yet, decode
        it whole and store the start its prefill computed, at no extra cost."""
        place = self._prefix_place(ids, embeds, token_ids)
        if place is None:
            return self._generate(embeds, options, max_new, report, on_text)
        head, length = place
        prefix = self._prefixes.find(enc.visual_tokens, head)
        if prefix is not None:
            return self._generate(embeds[:, length:], options, max_new, report, on_text, prefix)
        result = self._generate(embeds, options, max_new, report, on_text, keep_prefix=length)
        assert result.kept_prefix is not None
        self._prefixes.put(enc.visual_tokens, head, result.kept_prefix)
        return result

    def _generate(
        self,
        embeds: torch.Tensor,
        options: GenerationOptions,
        max_new: int,
        report: Progress,
        on_text: Callable[[str], None] | None = None,
        prefix: PromptPrefix | None = None,
        keep_prefix: int = 0,
    ) -> GenerationResult:
        """Decode from the prompt embeddings (1, L, D), or from those after `prefix`, keeping the
        first `keep_prefix` positions where asked; `max_new` may be below the option's value
        when the context is nearly full."""
        stop_strings = options.stop_strings

        def stop_fn(tokens: list[int]) -> bool:
            text = self.tokenizer.decode(tokens, skip_special_tokens=False)
            return any(s in text for s in stop_strings)

        seed = options.seed
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return generate(
            self.model,
            embeds,
            max_new_tokens=max_new,
            temperature=options.temperature,
            top_p=options.top_p,
            stop_token_ids=[self.special.eos],
            stop_fn=stop_fn if stop_strings else None,
            generator=generator,
            on_token=self._token_sink(report, max_new, on_text),
            prefix=prefix,
            keep_prefix=keep_prefix,
        )

    def _token_sink(
        self, report: Progress, max_new: int, on_text: Callable[[str], None] | None
    ) -> Callable[[int, int], None]:
        """Per generated token: progress, and the readable answer so far when asked for.

        The whole answer is decoded each time: token pieces alone would lose the spaces and
        multi-token characters that decoding the sequence restores.
        """
        tokens: list[int] = []

        def sink(step: int, token: int) -> None:
            report("decode", (step + 1) / max_new)
            if on_text is None:
                return
            tokens.append(int(token))
            if token == self.special.eos:
                return
            on_text(clean_answer(self.tokenizer.decode(tokens, skip_special_tokens=True)))

        return sink

    def _answer_text(
        self, result: GenerationResult, stop_strings: list[str]
    ) -> tuple[list[int], str, str]:
        """(answer ids without the final </s>, raw text, readable text); the texts end before
        a stop string, the ids do not."""
        tokens = list(result.token_ids)
        if result.finish_reason == "stop":
            tokens = tokens[:-1]
        raw = self.tokenizer.decode(tokens, skip_special_tokens=False)
        readable = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if result.finish_reason == "stop_string":
            cut = min((raw.find(s) for s in stop_strings if s in raw), default=len(raw))
            raw = raw[:cut]
            for s in stop_strings:
                if s in readable:
                    readable = readable[: readable.find(s)]
        return tokens, raw, readable

    def _masks(
        self,
        enc: _EncodedImage,
        tokens: list[int],
        result: GenerationResult,
        report: Progress,
        extra_thresholds: Sequence[float] = (),
    ):
        seg_steps = [k for k, t in enumerate(tokens) if t == self.special.seg]
        out: list[PredictedMask] = []
        threshold = self.config.mask_threshold
        for n, k in enumerate(seg_steps):
            prob, iou, agreement = self._mask_prob(enc, result.predicting_hidden[k : k + 1])
            binary = prob > threshold
            area = int(binary.sum())
            score = float(prob[binary].mean()) if area else 0.0
            mask = binary.cpu().numpy()
            extra = {float(t): (prob > t).cpu().numpy() for t in extra_thresholds}
            bbox = mask_bbox_xyxy_px(mask)
            out.append(PredictedMask(mask, score, float(iou[0]), area, bbox, n, extra, agreement))
            report("masks", (n + 1) / len(seg_steps))
        return out

    def _mask_prob(
        self, enc: _EncodedImage, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, float | None]:
        """(sigmoid probabilities (H, W) at the original size, the IoU head's estimate,
        mirror agreement or None) for one <SEG> hidden state (1, D); averaged with the decode on
        the mirrored image where the config's mirror TTA gate lets it."""
        gate = self.config.flip_tta_min_agreement
        mirrored = enc.sam_embedding_mirrored if gate is not None else None
        embeddings = (
            enc.sam_embedding if mirrored is None else torch.cat([enc.sam_embedding, mirrored])
        )
        views = embeddings.shape[0]  # 1, or 2 with the mirror
        logits, iou = self.model.decode_masks(
            hidden.expand(views, -1),
            embeddings,
            torch.arange(views),
            [enc.sam_input_hw] * views,
            [enc.original_hw] * views,
        )
        prob = logits[0].float().sigmoid()  # (H, W)
        agreement = None
        if views == 2 and gate is not None:
            prob, agreement, _ = merge_mirrored(
                prob, logits[1].float().sigmoid(), min_agreement=gate
            )
        return prob, iou, agreement

    @staticmethod
    def _routing(result: GenerationResult, token_ids: torch.Tensor) -> RoutingStats:
        routing: list[LayerRouting] = result.prompt_routing
        if not routing:
            return RoutingStats()
        e = routing[0].router_probs.shape[-1]
        image = token_ids == IMAGE_SENTINEL  # (1, L)
        answer_share = []
        for li in range(len(routing)):
            col = [tok[li] for tok in result.token_experts]
            counts = (
                np.bincount(np.asarray(col, dtype=np.int64), minlength=e) if col else np.zeros(e)
            )
            answer_share.append([float(c) / max(len(col), 1) for c in counts])
        return RoutingStats(
            layers=[r.layer for r in routing],
            num_experts=e,
            prompt_share=[r.expert_share() for r in routing],
            prompt_image_share=[r.expert_share(image) for r in routing],
            prompt_text_share=[r.expert_share(~image) for r in routing],
            answer_share=answer_share,
            answer_experts=[list(t) for t in result.token_experts],
        )
