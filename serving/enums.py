"""The platform's enumerations, apart from the ORM: front ends name roles and states
without importing the SQL record (`serving.models` stores them)."""

from __future__ import annotations

import enum


class Role(str, enum.Enum):
    user = "user"
    instructor = "instructor"
    reviewer = "reviewer"
    admin = "admin"


class Visibility(str, enum.Enum):
    private = "private"  # owner (and admins) only
    link = "link"  # anyone holding a live share link


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class LinkRole(str, enum.Enum):
    view = "view"  # read-only
    fork = "fork"  # read, and copy into the viewer's own session


class LinkKind(str, enum.Enum):
    session = "session"
    klass = "class"  # an instructor's case; every student opens it into a fork


class MaskVerdict(str, enum.Enum):
    good = "good"
    partly = "partly"
    wrong = "wrong"


class ArenaChoice(str, enum.Enum):
    """A vote on an arena match, about the sides as shown (A left, B right)."""

    a = "a"
    b = "b"
    tie = "tie"
    both_bad = "both_bad"
