"""Errors that services raise for callers to show to users as they are."""

from __future__ import annotations


class ServiceError(Exception):
    """A request that cannot be done; ``str(exc)`` is a sentence for the user."""

    code = "invalid"


class InvalidInput(ServiceError):
    code = "invalid"


class NotFound(ServiceError):
    code = "not_found"


class Forbidden(ServiceError):
    code = "forbidden"


class RateLimited(ServiceError):
    code = "rate_limited"


class Unavailable(ServiceError):
    """A dependency (database, broker) is down; the request changed nothing."""

    code = "unavailable"
