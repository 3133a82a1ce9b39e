"""What a message for users must never contain: SQL, file paths, tracebacks, Python internals.

`tests/reliability/conftest.py` records every refusal raised while a reliability test runs
(service errors, `gr.Error`, the web edge's refusals, input errors) and checks each with
`leaks` when the test ends.
"""

from __future__ import annotations

import re

_LEAKS = {
    "SQL": re.compile(
        r"\b(SELECT\s.+\sFROM|INSERT INTO|UPDATE\s+\w+\s+SET|DELETE FROM)\b|\[SQL:|"
        r"\[parameters:|psycopg|sqlalchemy|sqlite3|UniqueViolation|IntegrityError|"
        r"OperationalError|DataError|Background on this error|uq_\w+|ix_\w+|fk_\w+"
    ),
    "traceback": re.compile(r"Traceback \(most recent call last\)|File \"|line \d+, in "),
    "file path": re.compile(
        r"(?<![\w.])/(tmp|work|home|var|usr|etc|opt|root|proc|srv)/|site-packages|"
        r"\.py\b|[A-Za-z]:\\\\"
    ),
    "Python internals": re.compile(
        r"<class '|object at 0x|\b(Unicode(En|De)codeError|ValueError|TypeError|KeyError|"
        r"OverflowError|AttributeError)\b|cannot convert float|could not convert|"
        r"invalid literal for int|surrogates not allowed|NUL \(0x00\)"
    ),
}


def leaks(message: str) -> list[str]:
    """The kinds of internals ``message`` shows (empty: fit for a user)."""
    return [kind for kind, pattern in _LEAKS.items() if pattern.search(message)]
