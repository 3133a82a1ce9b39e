"""One validated settings object per process, read from ``MEDPLIB_*`` environment variables.

Invalid or unsafe values stop the process at start with one clear line (exit status 2):
see :func:`load_settings_or_exit`.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_CHECKPOINT = "default"
# The default checkpoint keeps the queue every deployment used before checkpoints had names.
DEFAULT_QUEUE = "gpu.medplib"
# Lowercase so a name is one queue whatever the case; short so it fits a column and a queue.
_CHECKPOINT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def checkpoint_queue(name: str) -> str:
    """The Celery queue of a checkpoint's workers: ``gpu.medplib`` for the default one."""
    return DEFAULT_QUEUE if name == DEFAULT_CHECKPOINT else f"gpu.{name}"


def parse_checkpoints(value: str) -> dict[str, str]:
    """``{"name": "path"}`` JSON or ``name=path,name2=path2``, in the order given.

    Raises ValueError with one line naming the first problem.
    """
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            pairs = json.loads(text, object_pairs_hook=list)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg} at character {exc.pos})") from None
    else:
        pairs = []
        for part in text.split(","):
            name, sep, path = part.partition("=")
            if not sep:
                raise ValueError(f"{part.strip()!r} is not name=path")
            pairs.append((name.strip(), path.strip()))
    registry: dict[str, str] = {}
    for name, path in pairs:
        if not isinstance(path, str):
            raise ValueError(f"the path of {name!r} must be text")
        if not isinstance(name, str) or not _CHECKPOINT_NAME.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a checkpoint name: use 1-32 lowercase letters, digits, - or _, "
                "starting with a letter or digit"
            )
        if checkpoint_queue(name) == DEFAULT_QUEUE and name != DEFAULT_CHECKPOINT:
            raise ValueError(f"{name!r} is reserved: its queue would be the default's")
        if name in registry:
            raise ValueError(f"{name!r} is named twice")
        registry[name] = path
    return registry


class Settings(BaseSettings):
    """Platform settings. Every field is ``MEDPLIB_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="MEDPLIB_", extra="ignore", frozen=True)

    # SQLite under ./var by default so `make demo` needs no database server.
    database_url: str = "sqlite:///./var/medplib.db"
    # Empty means embedded mode: jobs run on an in-process worker thread, no Redis.
    broker_url: str = ""
    # Empty means the bundled demo checkpoint (or the labelled untrained tiny model).
    checkpoint: str = ""
    # Named checkpoints, as JSON ({"name": "path"}) or name=path,name2=path2 (an empty path
    # is the bundled demo checkpoint). MEDPLIB_CHECKPOINT, when set, is the one named
    # "default"; with neither set the only checkpoint is the bundled one, named "default".
    checkpoints: str = ""
    # "medplib" runs the model; "noop" answers instantly (queue benchmarks, load tests);
    # "package.module:factory" plugs in any object with set_image/ask (e.g. a baseline model).
    predictor: str = "medplib"
    # Seconds the noop predictor sleeps per answer, to stand in for model time in load tests.
    noop_delay_s: float = Field(default=0.0, ge=0.0, le=60.0)
    device: str = "cpu"
    artefact_dir: Path = Path("./var/artefacts")

    host: str = "127.0.0.1"
    port: int = Field(default=7860, ge=1, le=65535)
    # Served under this path prefix behind a reverse proxy; empty on Spaces and locally.
    root_path: str = ""

    # Uploads: bytes and decoded pixels (8192 x 8192 is the largest image the model takes).
    max_upload_bytes: int = Field(default=50_000_000, gt=0, le=2_000_000_000)
    max_image_pixels: int = Field(default=8192 * 8192, gt=0, le=8192 * 8192)
    # Voxels a volume or multi-frame file may hold (NIfTI: every dimension; DICOM: rows x
    # columns x frames), read from the header before decoding. 512^3 is a large CT series
    # (about 1.3 GB while a slice is cut from it); a 0.5 MB .nii.gz of 512x512x1024 zeros
    # took 2.6 GB before this limit.
    max_volume_voxels: int = Field(default=512 * 512 * 512, gt=0, le=512 * 512 * 1024)
    # Longest / shortest side: beyond 24:1 the image is thinner than one row of CLIP's
    # 24 x 24 patch grid at 336 px, so the model sees padding instead of the image.
    max_aspect_ratio: float = Field(default=24.0, ge=1.0, le=8192.0)
    # Uploads decoded at once per process. One decode may hold about 1.3 GB, and Gradio runs
    # 8 events at once by default: 2 keeps the worst case near 3 GB and still lets a
    # second user through while a large volume decodes.
    max_concurrent_decodes: int = Field(default=2, ge=1, le=64)
    # Seconds an upload waits for a decode slot before the user is asked to try again;
    # a 512^3 volume decodes in about 6 s on one core.
    decode_wait_s: float = Field(default=30.0, gt=0.0, le=600.0)
    max_question_chars: int = Field(default=2000, gt=0, le=100_000)
    max_regions: int = Field(default=16, gt=0, le=32)
    max_turns_per_session: int = Field(default=50, gt=0)
    # Anonymous users: questions per minute per anonymous user (one browser or API client).
    anon_jobs_per_minute: int = Field(default=10, ge=0)
    # New anonymous users per client address per minute (IPv6: per /64); returning browsers
    # and logged-in users are never counted. A class behind one NAT address needs more.
    anon_users_per_address_per_minute: int = Field(default=10, ge=1, le=100_000)
    # Questions per minute from all anonymous users first seen at one client address: new
    # visitors from one address cannot multiply the per-user limit. 0 turns it off.
    anon_jobs_per_address_per_minute: int = Field(default=60, ge=0)
    # Reverse proxies whose X-Forwarded-For is believed (comma-separated addresses or CIDR
    # networks). Empty: the header is ignored and the connecting address is the client's.
    trusted_proxies: str = ""

    # Jobs: the soft limit lets a task record "timed out"; the hard limit kills the process.
    job_soft_time_limit_s: int = Field(default=240, gt=0)
    job_time_limit_s: int = Field(default=300, gt=0)
    # A job whose worker died this many times fails for good (poison-pill guard).
    job_max_attempts: int = Field(default=3, ge=1, le=20)
    # Redis re-delivers unacknowledged tasks after this; it must be well above the hard limit.
    broker_visibility_timeout_s: int = Field(default=3600, gt=0)
    # Seconds a prefork child may take to load the model before Celery gives up on it.
    worker_proc_alive_timeout_s: float = Field(default=600.0, gt=0)

    # Password for the `admin` account created by `medplib db upgrade` when set.
    admin_password: str = Field(default="", repr=False)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://") :]
        if value.startswith("postgresql://"):
            # psycopg 3 is the driver the project installs.
            value = "postgresql+psycopg://" + value[len("postgresql://") :]
        if not value.startswith(("sqlite://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "memory://")):
            raise ValueError("must be empty (embedded mode) or a redis:// URL")
        return value

    @field_validator("predictor")
    @classmethod
    def _predictor(cls, value: str) -> str:
        if value in ("medplib", "noop"):
            return value
        module, _, attr = value.partition(":")
        if not (module and attr and all(p.isidentifier() for p in [*module.split("."), attr])):
            raise ValueError("must be medplib, noop or an import path like package.module:factory")
        return value

    @field_validator("checkpoints")
    @classmethod
    def _checkpoints(cls, value: str) -> str:
        parse_checkpoints(value)
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value != "cpu" and value != "cuda" and not value.startswith("cuda:"):
            raise ValueError("must be cpu, cuda or cuda:N")
        return value

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str) -> str:
        if value and (not value.startswith("/") or value.endswith("/")):
            raise ValueError("must be empty or like /medplib (leading slash, no trailing slash)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError(
                        f"{part.strip()!r} is not an address or network like 10.0.0.0/8"
                    ) from None
        return value

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in self.trusted_proxies.split(",")
            if part.strip()
        )

    @field_validator("admin_password")
    @classmethod
    def _admin_password(cls, value: str) -> str:
        if value and (len(value) < 12 or value.lower() in {"changethis", "password", "admin"}):
            raise ValueError("is unsafe: use at least 12 characters that are not a default")
        return value

    @model_validator(mode="after")
    def _limits_consistent(self) -> Settings:
        if self.job_soft_time_limit_s >= self.job_time_limit_s:
            raise ValueError(
                "MEDPLIB_JOB_SOFT_TIME_LIMIT_S must be below MEDPLIB_JOB_TIME_LIMIT_S "
                "so a job can record that it timed out before it is killed"
            )
        if self.broker_visibility_timeout_s < 2 * self.job_time_limit_s:
            raise ValueError(
                "MEDPLIB_BROKER_VISIBILITY_TIMEOUT_S must be at least twice "
                "MEDPLIB_JOB_TIME_LIMIT_S, or Redis re-delivers jobs that are still running"
            )
        return self

    @model_validator(mode="after")
    def _one_default_checkpoint(self) -> Settings:
        if self.checkpoint and DEFAULT_CHECKPOINT in parse_checkpoints(self.checkpoints):
            raise ValueError(
                "MEDPLIB_CHECKPOINT is the checkpoint named default, and MEDPLIB_CHECKPOINTS "
                "names another: set only one of them"
            )
        return self

    @property
    def checkpoint_registry(self) -> dict[str, str]:
        """Every checkpoint this deployment serves: name -> directory ("" = bundled demo)."""
        named = parse_checkpoints(self.checkpoints)
        if self.checkpoint or not named:
            return {DEFAULT_CHECKPOINT: self.checkpoint, **named}
        return named

    @property
    def default_checkpoint(self) -> str:
        """The checkpoint new questions go to until an admin chooses another."""
        registry = self.checkpoint_registry
        return DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT in registry else next(iter(registry))

    @property
    def checkpoint_queues(self) -> dict[str, str]:
        """Each checkpoint's Celery queue (see `checkpoint_queue`)."""
        return {name: checkpoint_queue(name) for name in self.checkpoint_registry}

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def mode(self) -> str:
        return "embedded" if self.embedded else "distributed"


def describe_error(exc: ValidationError) -> str:
    """One line naming the first bad variable and why."""
    err = exc.errors()[0]
    loc = err.get("loc") or ()
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if loc:
        return f"invalid setting MEDPLIB_{str(loc[0]).upper()}: {message}"
    return f"invalid settings: {message}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


# MEDPLIB_* names that are read elsewhere, not settings: the password `medplib db create-user`
# reads, the server address API clients read, the library's checkpoint cache, and the test
# suite's service URLs.
NOT_SETTINGS = frozenset({"MEDPLIB_NEW_PASSWORD", "MEDPLIB_API_URL", "MEDPLIB_CACHE_DIR"})
NOT_SETTINGS_PREFIX = "MEDPLIB_TEST_"


def unknown_variable(environ: Mapping[str, str]) -> str | None:
    """One line about the first ``MEDPLIB_*`` variable that is no setting, else None.

    A misspelt name would otherwise be ignored and its default used without a word.
    """
    known = sorted(f"MEDPLIB_{name.upper()}" for name in Settings.model_fields)
    for key in sorted(environ):
        if not key.startswith("MEDPLIB_") or key in NOT_SETTINGS:
            continue
        if key.startswith(NOT_SETTINGS_PREFIX) or key in known:
            continue
        # Compared without the shared prefix, which would make every name look close.
        suffixes = [name.removeprefix("MEDPLIB_") for name in known]
        nearest = difflib.get_close_matches(key.removeprefix("MEDPLIB_"), suffixes, n=1, cutoff=0.6)
        hint = (
            f"; did you mean MEDPLIB_{nearest[0]}?"
            if nearest
            else "; see the README's Settings table"
        )
        return f"unknown setting {key}{hint}"
    return None


def load_settings_or_exit() -> Settings:
    """The process's settings; on an invalid value or an unknown ``MEDPLIB_*`` variable print
    one line and exit with status 2."""
    problem = unknown_variable(os.environ)
    if problem:
        print(f"medplib: {problem}", file=sys.stderr)
        raise SystemExit(2)
    try:
        return get_settings()
    except ValidationError as exc:
        print(f"medplib: {describe_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
