"""Limits that hold: new anonymous users per client address, questions per anonymous user,
and stored region documents that keep only what a region is.

`X-Forwarded-For` counts only from a configured trusted proxy (`MEDPLIB_TRUSTED_PROXIES`);
otherwise the connecting address is the client's, whatever the header says.
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from sqlalchemy import func, select

from serving.models import ChatSession, Role, Turn, User
from serving.platform import Platform
from serving.services.accounts import Actor, address_key, anonymous_actor, create_user
from serving.services.errors import RateLimited
from serving.services.images import ingest_image
from serving.services.sessions import create_session, set_session_regions
from serving.settings import Settings, describe_error
from tests.reliability.live import Live, live_app
from tests.serving.conftest import png_bytes
from webapp.edge import client_address

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TOO_MANY = "Too many new visitors from your network address"
PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expect"),
    [
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),  # not a proxy: the header is ignored
        ("10.0.0.2", "203.0.113.1", "203.0.113.1"),  # a trusted proxy names the client
        ("10.0.0.2", "6.6.6.6, 203.0.113.1", "203.0.113.1"),  # the client's own entry is not read
        ("10.0.0.2", "203.0.113.1, 10.0.0.9", "203.0.113.1"),  # proxies in a chain are skipped
        ("10.0.0.2", "garbage, 10.0.0.9", "10.0.0.2"),  # nothing usable: the proxy itself
        ("10.0.0.2", None, "10.0.0.2"),
        ("2001:db8::1", "203.0.113.1", "2001:db8::1"),
    ],
)
def test_the_client_address_believes_forwarded_for_only_from_trusted_proxies(
    peer, forwarded, expect
):
    assert client_address(peer, forwarded, PROXIES) == expect


def test_addresses_are_counted_by_client_not_by_port_or_ipv6_host_part():
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")  # one /64
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:198.51.100.7") == address_key("198.51.100.7")
    assert address_key("198.51.100.7") != address_key("198.51.100.8")
    assert address_key("not an address") is None and address_key(None) is None


@pytest.fixture
def platform(make_platform, sqlite_url) -> Platform:
    return make_platform(sqlite_url, anon_users_per_address_per_minute=3, anon_jobs_per_minute=2)


def _users(platform: Platform) -> int:
    return platform.call(lambda db: db.scalar(select(func.count(User.id))) or 0)


def test_new_anonymous_users_per_address_are_limited_and_returning_ones_are_not(platform):
    limit = platform.settings.anon_users_per_address_per_minute

    def arrive(secret: str, address: str) -> Actor:
        return platform.call(
            anonymous_actor,
            browser_secret=secret,
            address=address,
            new_per_address_per_minute=limit,
        )

    first = [uuid.uuid4().hex for _ in range(limit)]
    for secret in first:
        arrive(secret, "198.51.100.7")
    before = _users(platform)
    with pytest.raises(RateLimited, match=TOO_MANY):
        arrive(uuid.uuid4().hex, "198.51.100.7")
    assert _users(platform) == before  # nothing stored for the refused one
    arrive(first[0], "198.51.100.7")  # a returning browser is never counted
    arrive(uuid.uuid4().hex, "198.51.100.8")  # another address has its own count
    assert _users(platform) == before + 1


def _session(platform: Platform, actor: Actor, seed: int = 0) -> str:
    def body(db: Any) -> str:
        image = ingest_image(
            db, store=platform.store, settings=platform.settings, data=png_bytes(seed=seed)
        )
        return create_session(db, actor=actor, image_id=image.id).id

    return platform.call(body)


def test_anonymous_questions_per_minute_are_limited_per_user(platform):
    anon = platform.call(anonymous_actor, browser_secret=uuid.uuid4().hex)
    asked = []
    for n in range(platform.settings.anon_jobs_per_minute):
        session_id = _session(platform, anon, seed=n)
        asked.append(platform.ask(actor=anon, session_id=session_id, question="q", regions=[]))
    last = _session(platform, anon, seed=99)
    with pytest.raises(RateLimited, match="2 questions a minute"):
        platform.ask(actor=anon, session_id=last, question="q", regions=[])
    stored = platform.call(
        lambda db: db.scalar(select(func.count(Turn.id)).where(Turn.session_id == last))
    )
    assert stored == 0 and len(asked) == 2
    # An account is not an anonymous visitor: its questions are not rate limited.
    account = platform.call(
        lambda db: Actor(
            user_id=create_user(db, username="ana", password="password1", role=Role.user).id
        )
    )
    for n in range(3):
        session_id = _session(platform, account, seed=200 + n)
        platform.ask(actor=account, session_id=session_id, question="q", regions=[])


def test_questions_from_one_address_are_limited_across_its_anonymous_users(
    make_platform, sqlite_url
):
    platform = make_platform(
        sqlite_url,
        anon_users_per_address_per_minute=10,
        anon_jobs_per_minute=2,
        anon_jobs_per_address_per_minute=5,
    )

    def visitor(address: str) -> Actor:
        return platform.call(
            anonymous_actor,
            browser_secret=uuid.uuid4().hex,
            address=address,
            new_per_address_per_minute=10,
        )

    asked = 0
    # Three visitors from one address, each under its own limit of 2: the fifth question
    # from the address is the last one taken.
    visitors = [visitor("198.51.100.20") for _ in range(3)]
    refused = None
    for n, anon in enumerate(visitors * 2):
        session_id = _session(platform, anon, seed=300 + n)
        try:
            platform.ask(actor=anon, session_id=session_id, question="q", regions=[])
            asked += 1
        except RateLimited as exc:
            refused = (n, str(exc), session_id)
            break
    assert asked == 5 and refused is not None and refused[0] == 5
    assert "network address" in refused[1]
    stored = platform.call(
        lambda db: db.scalar(select(func.count(Turn.id)).where(Turn.session_id == refused[2]))
    )
    assert stored == 0  # the refused question left nothing behind
    # Another address has its own count.
    other = visitor("198.51.100.21")
    platform.ask(
        actor=other, session_id=_session(platform, other, seed=400), question="q", regions=[]
    )


BIG = "x" * 2_000_000


@pytest.mark.parametrize(
    "region",
    [
        {"kind": "box", "xyxy_px": [2, 2, 20, 20], "padding": BIG},
        {"kind": "point", "xy_px": [5, 5], "label": 1, "note": {"nested": BIG}},
        {"kind": "mask", "rle": {"size": [30, 40], "counts": "0`0", "extra": BIG}},
    ],
    ids=["box", "point", "mask"],
)
def test_stored_regions_keep_only_their_known_fields(platform, region):
    from medplib.masks import encode_rle

    if region["kind"] == "mask":
        import numpy as np

        mask = np.zeros((30, 40), dtype=bool)
        mask[5:10, 5:10] = True
        region["rle"] = {**encode_rle(mask), "extra": BIG}
    owner = platform.call(
        lambda db: Actor(
            user_id=create_user(
                db, username=f"u{uuid.uuid4().hex[:6]}", password="password1", role=Role.user
            ).id
        )
    )
    session_id = _session(platform, owner)
    platform.call(
        set_session_regions,
        actor=owner,
        session_id=session_id,
        regions=[region],
        max_regions=16,
    )
    platform.ask(actor=owner, session_id=session_id, question="q", regions=[region])

    def stored(db: Any) -> tuple[list, list]:
        session = db.get(ChatSession, session_id)
        return list(session.regions), list(session.turns[0].regions)

    for doc in platform.call(stored):
        assert len(json.dumps(doc)) < 2_000
        (item,) = doc
        assert set(item) <= {"kind", "xy_px", "xyxy_px", "rle", "label"}
        if item["kind"] == "mask":
            assert set(item["rle"]) == {"size", "counts"}


def test_trusted_proxies_setting_is_checked_at_start():
    assert Settings(trusted_proxies="10.0.0.0/8, 127.0.0.1").trusted_proxy_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    with pytest.raises(Exception) as bad:
        Settings(trusted_proxies="10.0.0.0/8, proxy.example")
    assert "MEDPLIB_TRUSTED_PROXIES" in describe_error(bad.value)


# Through the real app: fresh gradio_client connections are fresh anonymous users.


@pytest.fixture(scope="module")
def behind_proxy(tmp_path_factory) -> Iterator[Live]:
    with live_app(
        tmp_path_factory.mktemp("proxied"),
        anon_users_per_address_per_minute=2,
        trusted_proxies="127.0.0.1",
    ) as live:
        yield live


@pytest.fixture(scope="module")
def direct(tmp_path_factory) -> Iterator[Live]:
    with live_app(tmp_path_factory.mktemp("direct"), anon_users_per_address_per_minute=2) as live:
        yield live


def _fresh_client_call(app: Live, forwarded: str | None = None) -> str:
    """A new connection asks for a job: a new anonymous user, then "no such job"."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else None
    try:
        Client(app.url, verbose=False, headers=headers).predict("0" * 32, api_name="/job")
    except AppError as exc:
        return str(exc)
    raise AssertionError("an unknown job was found")


def test_new_clients_from_one_address_behind_a_trusted_proxy_are_limited(behind_proxy):
    assert "does not exist" in _fresh_client_call(behind_proxy, "198.51.100.7")
    assert "does not exist" in _fresh_client_call(behind_proxy, "198.51.100.7")
    assert TOO_MANY in _fresh_client_call(behind_proxy, "198.51.100.7")
    # A client cannot escape by writing its own entry first: the proxy's is read.
    assert TOO_MANY in _fresh_client_call(behind_proxy, "203.0.113.50, 198.51.100.7")
    assert "does not exist" in _fresh_client_call(behind_proxy, "198.51.100.8")


def test_forwarded_for_is_ignored_without_a_trusted_proxy(direct):
    assert "does not exist" in _fresh_client_call(direct, "198.51.100.1")
    assert "does not exist" in _fresh_client_call(direct, "198.51.100.2")
    # Every connection comes from 127.0.0.1, whatever the header claims.
    assert TOO_MANY in _fresh_client_call(direct, "198.51.100.3")
