"""Checks on what callers hand to the services: text, ids, numbers.

Every service entry point that takes free text, an id or a number passes it through one of
these first, so a NUL byte, a lone surrogate, NaN or an over-long value is refused with one
sentence (`InvalidInput`) before it can reach SQL, a hash or a conversion that would fail
with an internal error. The web edge (`webapp.edge`) refuses the same things earlier for
HTTP requests; these make the services safe for every other caller too.
"""

from __future__ import annotations

import math
import re
from typing import Any

from serving.services.errors import InvalidInput

# Ids are `serving.models.new_id` values (32 hex digits); anything longer or with other
# characters cannot name a row.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Tokens, codes and browser secrets: URL-safe base64 or hex.
_SECRET = re.compile(r"[A-Za-z0-9_-]+")


def text_problem(value: str) -> str | None:
    """Why a string cannot be stored as text (a NUL, a lone surrogate), or None."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains characters that are not valid Unicode text (a lone surrogate)"
    return None


def check_text(value: Any, *, what: str, max_chars: int, required: bool = False) -> str:
    """``value`` as a string if it is text of at most ``max_chars`` characters.

    ``what`` names the field in the message ("comment", "username").
    """
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"The {what} must be text.")
    problem = text_problem(value)
    if problem:
        raise InvalidInput(f"The {what} {problem}; remove it and try again.")
    if len(value) > max_chars:
        raise InvalidInput(f"The {what} has {len(value):,} characters; the limit is {max_chars:,}.")
    if required and not value.strip():
        raise InvalidInput(f"The {what} is empty.")
    return value


def safe_text(value: Any, *, max_chars: int) -> str:
    """Text from a source that is not refused but cleaned (a browser's file name): NULs,
    lone surrogates and other control characters become spaces; cut to ``max_chars``."""
    if not isinstance(value, str):
        return ""
    cleaned = "".join(
        " " if (not ch.isprintable() or "\ud800" <= ch <= "\udfff") else ch for ch in value
    )
    return " ".join(cleaned.split())[:max_chars]


def well_formed_id(value: Any) -> bool:
    """Whether ``value`` could be a row id. Callers answer a malformed id exactly as they
    answer an unknown one, so a refusal never says more than "not found"."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def well_formed_secret(value: Any, *, min_chars: int = 16, max_chars: int = 128) -> bool:
    """Whether ``value`` could be a token or code (URL-safe text of a sane length)."""
    return (
        isinstance(value, str)
        and min_chars <= len(value) <= max_chars
        and _SECRET.fullmatch(value) is not None
    )


def finite_number(
    value: Any,
    *,
    what: str,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    """``value`` as a float if it is a finite number within the bounds (inclusive)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise InvalidInput(f"The {what} must be a number.") from None
        else:
            raise InvalidInput(f"The {what} must be a number.")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"The {what} must be a finite number, not NaN or infinity.")
    if minimum is not None and number < minimum:
        raise InvalidInput(f"The {what} must be at least {minimum:g}.")
    if maximum is not None and number > maximum:
        raise InvalidInput(f"The {what} must be at most {maximum:g}.")
    return number


def whole_number(
    value: Any, *, what: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    """`finite_number`, then a whole number (a slider's 3.0 is 3; 2.5 is refused)."""
    number = finite_number(value, what=what, minimum=minimum, maximum=maximum)
    if number != int(number):
        raise InvalidInput(f"The {what} must be a whole number.")
    return int(number)


def volume_choice(axis: Any, index: Any) -> tuple[int, int | None]:
    """A volume's slice axis (0-2; None: 2, axial) and slice (None or negative: the middle)."""
    chosen_axis = 2 if axis is None else whole_number(axis, what="slice axis", minimum=0, maximum=2)
    if index is None:
        return chosen_axis, None
    chosen = whole_number(index, what="slice number", maximum=1_000_000)
    return chosen_axis, None if chosen < 0 else chosen
