"""Rate limits: fixed windows counted in the database or in Redis, shared by every process, a
Retry-After that tells the truth, and a client address that a stranger cannot forge."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.test import Client, RequestFactory

from guahao import clock
from guahao.errors import RateLimited
from guahao.limits import services as limits
from guahao.limits.clientip import client_ip, network_of
from guahao.limits.models import RateCounter
from guahao.testing import run_concurrently

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["database", "redis"])
def backend(request, settings, db) -> str:
    """Each test runs against both stores; Redis keys get a prefix of their own."""
    if request.param == "redis":
        settings.REDIS_URL = REDIS_URL
        settings.REDIS_PREFIX = f"guahao-test-{uuid.uuid4().hex}:"
    else:
        settings.REDIS_URL = ""
    return request.param


@pytest.fixture
def at_window_start():
    # Start on a whole hour, so an hour's window is whole and Retry-After is predictable, and at
    # 01:00 UTC, so that the hours a test moves through stay in one day's window (aligned to UTC
    # days) whatever the time the suite runs.
    start = (clock.now() + dt.timedelta(days=1)).replace(hour=1, minute=0, second=0, microsecond=0)
    with clock.frozen_at(start):
        yield start


def test_rates_are_written_as_count_per_period() -> None:
    assert limits.parse_rates("5/h,10/d") == (limits.Window(5, 3600), limits.Window(10, 86400))
    assert limits.parse_rates("30/10m") == (limits.Window(30, 600),)
    assert limits.parse_rates("off") == ()
    with pytest.raises(ValueError, match="bad rate"):
        limits.parse_rates("5 per hour")


def test_a_subject_is_refused_past_its_limit_until_the_window_ends(
    backend, settings, at_window_start
) -> None:
    settings.LIMITS = {**settings.LIMITS, "hold_ip": "3/h"}
    for _ in range(3):
        limits.hit("hold_ip", "192.0.2.1")
    with clock.travel(dt.timedelta(minutes=15)), pytest.raises(RateLimited) as refused:
        limits.hit("hold_ip", "192.0.2.1")

    assert refused.value.status == 429
    assert refused.value.detail["retry_after"] == 45 * 60
    assert refused.value.message == "锁号过于频繁，请45分钟后再试"
    limits.hit("hold_ip", "192.0.2.2")  # someone else is not affected
    with clock.travel(dt.timedelta(hours=1)):
        limits.hit("hold_ip", "192.0.2.1")  # a new window


def test_every_window_of_a_rule_counts(backend, settings, at_window_start) -> None:
    settings.LIMITS = {**settings.LIMITS, "patient_add_ip": "2/h,3/d"}
    limits.hit("patient_add_ip", "192.0.2.9")
    limits.hit("patient_add_ip", "192.0.2.9")
    with clock.travel(dt.timedelta(hours=2)):
        limits.hit("patient_add_ip", "192.0.2.9")
        with pytest.raises(RateLimited) as refused:
            limits.hit("patient_add_ip", "192.0.2.9")
    # Refused by the day's window, so the wait runs to the end of that window.
    assert refused.value.detail["retry_after"] > 3600


def test_a_rule_switched_off_never_refuses(backend, settings) -> None:
    settings.LIMITS = {**settings.LIMITS, "browse_ip": "off"}
    assert limits.windows("browse_ip") == ()
    assert all(limits.hit("browse_ip", "192.0.2.3") is None for _ in range(50))
    assert not limits.over("browse_ip", "192.0.2.3")


def test_the_database_keeps_hashes_not_addresses(settings, db) -> None:
    settings.REDIS_URL = ""
    limits.hit("sms_code_ip", "192.0.2.77")
    keys = list(RateCounter.objects.values_list("key", flat=True))
    assert keys and all("192.0.2.77" not in k and k.startswith("sms_code_ip:") for k in keys)


def test_expired_windows_are_purged(settings, db) -> None:
    settings.REDIS_URL = ""
    settings.LIMITS = {**settings.LIMITS, "sms_code_ip": "10/h,30/d"}
    limits.hit("sms_code_ip", "192.0.2.5")
    assert limits.purge_expired(now=clock.now()) == 0
    assert limits.purge_expired(now=clock.now() + dt.timedelta(hours=2)) == 1  # the hour's window
    assert limits.purge_expired(now=clock.now() + dt.timedelta(days=2)) == 1  # the day's


def test_when_redis_does_not_answer_the_database_counts(settings, db) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.LIMITS = {**settings.LIMITS, "login_ip": "2/h"}
    limits.hit("login_ip", "192.0.2.8")
    limits.hit("login_ip", "192.0.2.8")
    with pytest.raises(RateLimited):
        limits.hit("login_ip", "192.0.2.8")
    assert RateCounter.objects.count() >= 1


# --- the client's address ----------------------------------------------------------------------


def _request(remote: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(settings) -> None:
    settings.TRUSTED_PROXIES = []
    assert client_ip(_request("203.0.113.5", "198.51.100.1")) == "203.0.113.5"


def test_behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client(settings) -> None:
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    # The client may write anything at the left of the header; only what our proxies added counts.
    request = _request("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.0.0.9")
    assert client_ip(request) == "198.51.100.1"
    assert client_ip(_request("10.0.0.2", "garbage")) == "10.0.0.2"
    assert client_ip(_request("10.0.0.2", "::ffff:198.51.100.2")) == "198.51.100.2"


def test_networks_are_a_slash_24_or_a_slash_64() -> None:
    assert network_of("198.51.100.23") == "198.51.100.0/24"
    assert network_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["database", "redis"])
def test_simultaneous_hits_are_each_counted_once(store, settings) -> None:
    """Twelve threads, each with its own connection, hit one limit of 5 at the same instant:
    exactly five pass. A read-then-write counter would let more through."""
    settings.REDIS_URL = REDIS_URL if store == "redis" else ""
    settings.REDIS_PREFIX = f"guahao-test-{uuid.uuid4().hex}:"
    settings.LIMITS = {**settings.LIMITS, "hold_ip": "5/d"}
    results = run_concurrently([lambda: limits.hit("hold_ip", "192.0.2.44")] * 12)
    passed = [ok for ok, _ in results if ok]
    refused = [value for ok, value in results if not ok]

    assert len(passed) == 5
    assert all(isinstance(exc, RateLimited) for exc in refused)


def test_browsing_is_limited_per_address_but_the_docs_are_not(settings, db) -> None:
    settings.REDIS_URL = ""
    settings.LIMITS = {**settings.LIMITS, "browse_ip": "3/m"}
    scraper = Client(REMOTE_ADDR="192.0.2.200")
    statuses = [scraper.get("/api/v1/hospitals").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = scraper.get("/api/v1/hospitals")
    assert refused.json()["code"] == "rate_limited"
    assert refused.json()["message"].startswith("访问过于频繁")
    assert 0 < int(refused["Retry-After"]) <= 60
    assert scraper.get("/api/v1/openapi.json").status_code == 200
    assert Client(REMOTE_ADDR="192.0.2.201").get("/api/v1/hospitals").status_code == 200
