"""Rate limits shared by every process: Redis when GUAHAO_REDIS_URL is set, the database otherwise.

A rule (`sms_code_ip`, `hold_account`, …) has one or more fixed windows ("10/h,30/d"); `hit()`
counts one attempt of a subject (an IP, a /24, an account id) in every window of its rule and
refuses with RateLimited (429, Retry-After, a Chinese message) once any window is over. Subjects
are stored as keyed hashes, never as phones or addresses. Call it outside any transaction: a count
must survive the caller's rollback.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import re

from django.conf import settings
from django.db import connection, transaction

from guahao import clock, pii
from guahao.errors import RateLimited
from guahao.limits.models import RateCounter

log = logging.getLogger("guahao.limits")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")

# What the patient reads when a rule refuses; {wait} is "30秒", "5分钟", "2小时".
MESSAGES = {
    "sms_code": "获取验证码过于频繁，请{wait}后再试",
    "login": "登录尝试过于频繁，请{wait}后再试",
    "hold": "锁号过于频繁，请{wait}后再试",
    "patient_add": "添加就诊人过于频繁，请{wait}后再试",
    "browse": "访问过于频繁，请{wait}后再试",
}


@dataclasses.dataclass(frozen=True)
class Window:
    limit: int
    seconds: int


def parse_rates(spec: str) -> tuple[Window, ...]:
    """ "5/h,10/d" → two windows; "off" or "" → no limit. Raises ValueError on anything else."""
    if spec.strip().lower() in {"", "off", "none"}:
        return ()
    windows = []
    for part in spec.split(","):
        match = _RATE_RE.match(part)
        if not match:
            raise ValueError(f"bad rate {part!r}: expected e.g. 5/h, 30/10m, 10/d")
        count, times, unit = match.groups()
        windows.append(Window(int(count), int(times or 1) * _UNITS[unit]))
    return tuple(windows)


@functools.cache
def _windows(rule: str, spec: str) -> tuple[Window, ...]:
    return parse_rates(spec)


def windows(rule: str) -> tuple[Window, ...]:
    spec = settings.LIMITS.get(rule)
    if spec is None:
        raise KeyError(f"unknown rate limit rule {rule!r}")
    return _windows(rule, spec)


def _message(rule: str, wait: int) -> str:
    template = MESSAGES.get(rule.rsplit("_", 1)[0], "操作过于频繁，请{wait}后再试")
    return template.format(wait=_wait_text(wait))


def _wait_text(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds}秒"
    if seconds < 3600:
        return f"{-(-seconds // 60)}分钟"
    return f"{-(-seconds // 3600)}小时"


def _key(rule: str, subject: str, window: Window, index: int) -> str:
    digest = pii.blind_index(subject, purpose="rate-limit")[:32]
    return f"{rule}:{digest}:{window.seconds}:{index}"


def hit(rule: str, subject: str | int) -> None:
    """Count one attempt by `subject` under `rule`; RateLimited when a window is over its limit."""
    refusal = _count(rule, str(subject), add=1)
    if refusal is not None:
        log.info("rate limited", extra={"rule": rule, "retry_after": refusal})
        raise RateLimited(_message(rule, refusal), code="rate_limited", retry_after=refusal)


def record(rule: str, subject: str | int) -> None:
    """Count one attempt without refusing it (a threshold that changes what is asked, not a gate)."""
    _count(rule, str(subject), add=1)


def over(rule: str, subject: str | int) -> bool:
    """Whether `subject` has already used up a window of `rule` (nothing is counted)."""
    return _count(rule, str(subject), add=0) is not None


def _count(rule: str, subject: str, *, add: int) -> int | None:
    """Add `add` to each window; the seconds until the latest full window ends, or None."""
    now = clock.now().timestamp()
    wait = None
    for window in windows(rule):
        index = int(now // window.seconds)
        ends = (index + 1) * window.seconds
        used = _backend().incr(_key(rule, subject, window, index), add, ttl=window.seconds)
        # Counting: this attempt is over when it goes past the limit. Looking: the window is
        # used up once it reaches the limit.
        if used > window.limit or (add == 0 and used >= window.limit):
            wait = max(wait or 0, max(1, int(ends - now + 0.999)))
    return wait


# --- backends ---------------------------------------------------------------------------------


class DatabaseCounters:
    """One row per (key, window), counted with an upsert: atomic on SQLite and PostgreSQL alike."""

    def incr(self, key: str, add: int, *, ttl: int) -> int:
        if add == 0:
            row = RateCounter.objects.filter(key=key).values_list("count", flat=True).first()
            return row or 0
        expires = connection.ops.adapt_datetimefield_value(
            clock.now() + dt.timedelta(seconds=ttl)
        )
        table = RateCounter._meta.db_table
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (key, count, expires_at) VALUES (%s, %s, %s) "
                f"ON CONFLICT (key) DO UPDATE SET count = {table}.count + EXCLUDED.count "
                "RETURNING count",
                [key, add, expires],
            )
            return cursor.fetchone()[0]


class RedisCounters:
    def __init__(self, url: str, prefix: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self.prefix = prefix

    def incr(self, key: str, add: int, *, ttl: int) -> int:
        name = self.prefix + key
        if add == 0:
            return int(self.client.get(name) or 0)
        pipe = self.client.pipeline(transaction=True)
        pipe.incrby(name, add)
        pipe.expire(name, ttl + 60, nx=True)
        return int(pipe.execute()[0])


class FallbackCounters:
    """Redis first; when it does not answer, the database, so a Redis outage never opens the gate."""

    def __init__(self, primary: RedisCounters, fallback: DatabaseCounters):
        self.primary, self.fallback = primary, fallback

    def incr(self, key: str, add: int, *, ttl: int) -> int:
        import redis

        try:
            return self.primary.incr(key, add, ttl=ttl)
        except redis.RedisError as exc:
            log.warning("redis unavailable for rate limits, counting in the database: %s", exc)
            return self.fallback.incr(key, add, ttl=ttl)


@functools.cache
def _backend_for(url: str, prefix: str) -> DatabaseCounters | FallbackCounters:
    if not url:
        return DatabaseCounters()
    return FallbackCounters(RedisCounters(url, prefix), DatabaseCounters())


def _backend() -> DatabaseCounters | FallbackCounters:
    return _backend_for(settings.REDIS_URL, settings.REDIS_PREFIX)


def purge_expired(*, now: dt.datetime) -> int:
    """Drop database windows that ended (Redis expires its own keys)."""
    with transaction.atomic():
        deleted, _ = RateCounter.objects.filter(expires_at__lt=now).delete()
    return deleted
