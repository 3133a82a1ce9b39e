"""Load a released checkpoint's tokenizer the way the official MedPLIB code does.

The official code (transformers 4.31) loads the LLaMA tokenizer with ``use_fast=False,
legacy=True``: the sentencepiece model ``tokenizer.model``, where every text span is encoded on
its own with sentencepiece's dummy-prefix space, and then adds MedPLIB's tokens (`<SEG>`,
`<region>`, `</region>`, `<im_start>`, `<im_end>`, …). That slow tokenizer strips the whitespace
on both sides of every added token that is not an ``AddedToken`` in the special-tokens map, so
``"is <region></region> is"`` encodes as ``▁is <region> </region> ▁is`` and the newline after
`<im_end>` disappears.

transformers 5 has no slow LLaMA class and `AutoTokenizer` always builds a fast one with
undecorated added tokens, which keeps that whitespace (``▁is ▁ <region>``, ``<im_end> ▁ \\n``).
For a sentencepiece LLaMA checkpoint this module therefore builds the fast tokenizer from
``tokenizer.model`` itself, with the checkpoint's own flags (``legacy``, ``add_prefix_space``,
special tokens) and with ``lstrip``/``rstrip`` on the added tokens the official tokenizer strips.
The result is saved as ``tokenizer.json``, so `AutoTokenizer` reloads the same behaviour; what
was used goes into ``conversion.json`` (see docs/fidelity.md, "Tokenizer").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from transformers import AddedToken, AutoTokenizer, PreTrainedTokenizerBase

from medplib.errors import UserInputError
from medplib.tokenization import TOKENIZER_FILES

SP_MODEL = "tokenizer.model"
# `tokenizer_class` values whose checkpoints the official code loads as the slow sentencepiece
# LLaMA tokenizer (it always passes use_fast=False); None: the checkpoint does not say.
SENTENCEPIECE_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast", None)
# The slow LlamaTokenizer's default when tokenizer_config.json has no `legacy` (and what the
# official code passes explicitly).
DEFAULT_LEGACY = True
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
_DEFAULT_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserInputError(f"{path} is not valid JSON ({exc}).") from None
    return data if isinstance(data, dict) else {}


def _content(value: Any) -> str | None:
    """The token text of a tokenizer_config entry: a string or a serialised AddedToken dict."""
    if isinstance(value, dict):
        content = value.get("content")
        return content if isinstance(content, str) else None
    return value if isinstance(value, str) else None


def _optional_bool(config: dict[str, Any], key: str) -> bool | None:
    value = config.get(key)
    return value if isinstance(value, bool) else None


def load_checkpoint_tokenizer(
    src: Path, out: Path
) -> tuple[PreTrainedTokenizerBase, dict[str, Any]]:
    """Load the tokenizer in `src`, write it to `out`; returns (tokenizer, what was used).

    A sentencepiece LLaMA tokenizer (``tokenizer.model`` and a LLaMA or no `tokenizer_class`)
    is rebuilt to tokenize as the official slow tokenizer does, unless tokenizer_config.json
    sets ``use_fast: true`` and a ``tokenizer.json`` is present; anything else (e.g. this
    project's own byte-level tokenizers) is loaded as it is with `AutoTokenizer`.
    """
    present = [n for n in TOKENIZER_FILES if (src / n).is_file()]
    if not present:
        raise UserInputError(
            f"{src} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); download them with the weights."
        )
    config = _read(src / "tokenizer_config.json")
    stated_class = config.get("tokenizer_class")
    stated_class = stated_class if isinstance(stated_class, str) else None
    record: dict[str, Any] = {
        "files": present,
        "tokenizer_class": stated_class,
        "legacy": _optional_bool(config, "legacy"),
        "add_prefix_space": _optional_bool(config, "add_prefix_space"),
        "use_fast": _optional_bool(config, "use_fast"),
    }
    sentencepiece = (
        SP_MODEL in present
        and stated_class in SENTENCEPIECE_LLAMA_CLASSES
        and not (record["use_fast"] is True and "tokenizer.json" in present)
    )
    if sentencepiece:
        tokenizer = _official_llama(src, config, record)
        tokenizer.save_pretrained(str(out))
        shutil.copy2(src / SP_MODEL, out / SP_MODEL)  # the official file, for a slow rebuild
    else:
        for name in present:
            shutil.copy2(src / name, out / name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(out))
        except Exception as exc:  # transformers raises many types for missing backends
            raise UserInputError(
                f"The tokenizer in {src} could not be loaded ({type(exc).__name__}: {exc}); a "
                "tokenizer.model without tokenizer.json needs the `sentencepiece` and `protobuf` "
                "packages (transformers 5 converts it to a tokenizer.json)."
            ) from None
        tokenizer.save_pretrained(str(out))  # adds tokenizer.json when a fast tokenizer was built
        record.update(read_from=", ".join(present), added_token_whitespace="as saved")
    record["saved_as"] = f"{type(tokenizer).__name__} (tokenizer.json)"
    return tokenizer, record


def _added_tokens(src: Path, config: dict[str, Any], base: int) -> dict[int, str]:
    """Tokens added on top of the sentencepiece vocabulary, by id (added_tokens.json and/or the
    newer ``added_tokens_decoder`` in tokenizer_config.json)."""
    found: dict[int, str] = {}
    sources: list[tuple[str, dict[int, str]]] = []
    listed = _read(src / "added_tokens.json")
    sources.append(
        (
            "added_tokens.json",
            {i: t for t, i in listed.items() if isinstance(i, int) and i >= base},
        )
    )
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        entries = {int(i): _content(v) for i, v in decoder.items() if str(i).isdigit()}
        sources.append(
            (
                "added_tokens_decoder",
                {i: t for i, t in entries.items() if t is not None and i >= base},
            )
        )
    for where, tokens in sources:
        for index, token in tokens.items():
            if found.setdefault(index, token) != token:
                raise UserInputError(
                    f"{where} gives id {index} to {token!r} but another tokenizer file gives it "
                    f"to {found[index]!r}; the tokenizer files disagree."
                )
    expected = list(range(base, base + len(found)))
    if sorted(found) != expected:
        raise UserInputError(
            f"The added tokens have ids {sorted(found)[:5]}…, not {base}…{base + len(found) - 1} "
            f"right after the {base} pieces of {SP_MODEL}; the tokenizer files do not fit together."
        )
    return found


def _official_llama(src: Path, config: dict[str, Any], record: dict[str, Any]):
    """A fast LlamaTokenizer that encodes as the official slow one does (see the module doc)."""
    try:
        from transformers import LlamaTokenizer
        from transformers.tokenization_utils_sentencepiece import SentencePieceExtractor

        vocab, _, merges = SentencePieceExtractor(str(src / SP_MODEL)).extract()
    except ImportError as exc:
        raise UserInputError(
            f"Reading the LLaMA {SP_MODEL} in {src} needs the `sentencepiece` package ({exc}); "
            "install it (pip install sentencepiece)."
        ) from None
    except Exception as exc:  # a corrupt or non-sentencepiece file
        raise UserInputError(
            f"{src / SP_MODEL} is not a readable sentencepiece model ({type(exc).__name__}: {exc})."
        ) from None
    special_map = _read(src / "special_tokens_map.json")
    specials: dict[str, Any] = {}
    for key in _SPECIAL_KEYS:
        value = config.get(key) if config.get(key) is not None else special_map.get(key)
        if _content(value) is not None:
            specials[key] = value
    legacy = record["legacy"] if record["legacy"] is not None else DEFAULT_LEGACY
    kwargs: dict[str, Any] = {
        key: _content(specials.get(key)) or default for key, default in _DEFAULT_SPECIALS.items()
    }
    for key in ("add_bos_token", "add_eos_token", "padding_side", "model_max_length"):
        if config.get(key) is not None:
            kwargs[key] = config[key]
    kwargs.setdefault("add_bos_token", True)
    kwargs.setdefault("add_eos_token", False)
    kwargs.setdefault("padding_side", "right")  # as the official code asks
    tokenizer = LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        legacy=legacy,
        add_prefix_space=record["add_prefix_space"],
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
    # LlamaTokenizer does not keep `legacy` for save_pretrained; without it a reload would fall
    # back to legacy=False (no dummy-prefix space after added tokens).
    tokenizer.init_kwargs["legacy"] = legacy
    added = _added_tokens(src, config, len(vocab))
    # The official slow tokenizer strips around added tokens unless the special-tokens map gives
    # the token as an AddedToken (a dict here) with its own flags.
    typed = {
        str(v["content"]): v
        for v in [*specials.values(), *special_map.get("additional_special_tokens", [])]
        if isinstance(v, dict) and isinstance(v.get("content"), str)
    }
    stripped = 0
    for index in sorted(added):
        token = added[index]
        flags = typed.get(token)
        lstrip = bool(flags.get("lstrip", False)) if flags else True
        rstrip = bool(flags.get("rstrip", False)) if flags else True
        stripped += lstrip and rstrip
        new = AddedToken(token, lstrip=lstrip, rstrip=rstrip, normalized=False, special=True)
        tokenizer.add_tokens([new], special_tokens=True)
        if tokenizer.convert_tokens_to_ids(token) != index:
            raise UserInputError(
                f"The added token {token!r} would get id {tokenizer.convert_tokens_to_ids(token)}, "
                f"not its id {index} in the checkpoint; the tokenizer files do not fit together."
            )
    pad = _content(specials.get("pad_token"))
    tokenizer.pad_token = pad if pad is not None else tokenizer.unk_token  # MedPLIB pads with unk
    record.update(
        read_from=SP_MODEL,
        legacy=legacy,
        legacy_stated=record["legacy"] is not None,
        added_tokens=len(added),
        added_token_whitespace=(
            f"stripped around {stripped} of {len(added)} added tokens, as the official slow "
            "tokenizer (transformers 4.31) does"
        ),
    )
    return tokenizer
