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


def hit(rule: str, subject: str | int, *more: tuple[str, str | int]) -> None:
    """Count one attempt by `subject` under `rule` (and by each further (rule, subject) pair, all
    in one round trip); RateLimited, naming the first rule refused, when a window is over."""
    pairs = [(rule, str(subject)), *((r, str(s)) for r, s in more)]
    for refused_rule, wait in _count(pairs, add=1):
        log.info("rate limited", extra={"rule": refused_rule, "retry_after": wait})
        raise RateLimited(_message(refused_rule, wait), code="rate_limited", retry_after=wait)


def record(rule: str, subject: str | int) -> None:
    """Count one attempt without refusing it (a threshold that changes what is asked, not a gate)."""
    _count([(rule, str(subject))], add=1)


def over(rule: str, subject: str | int) -> bool:
    """Whether `subject` has already used up a window of `rule` (nothing is counted)."""
    return bool(_count([(rule, str(subject))], add=0))


def _count(pairs: list[tuple[str, str]], *, add: int) -> list[tuple[str, int]]:
    """Add `add` to every window of every pair, in one round trip; for each rule refused, the
    seconds until its latest full window ends."""
    now = clock.now().timestamp()
    slots = []
    for rule, subject in pairs:
        for window in windows(rule):
            index = int(now // window.seconds)
            slots.append((rule, window, (index + 1) * window.seconds, _key(rule, subject, window, index)))
    if not slots:
        return []
    used = _backend().incr_many([(key, window.seconds) for _, window, _, key in slots], add)
    waits: dict[str, int] = {}
    for (rule, window, ends, _), count in zip(slots, used, strict=True):
        # Counting: this attempt is over when it goes past the limit. Looking: the window is
        # used up once it reaches the limit.
        if count > window.limit or (add == 0 and count >= window.limit):
            waits[rule] = max(waits.get(rule, 0), max(1, int(ends - now + 0.999)))
    return list(waits.items())


# --- backends ---------------------------------------------------------------------------------


class DatabaseCounters:
    """One row per (key, window), counted with an upsert: atomic on SQLite and PostgreSQL alike.
    All the windows of one request go in one transaction (one write on SQLite's single writer)."""

    def incr_many(self, keys: list[tuple[str, int]], add: int) -> list[int]:
        if add == 0:
            found = dict(
                RateCounter.objects.filter(key__in=[k for k, _ in keys]).values_list("key", "count")
            )
            return [found.get(k, 0) for k, _ in keys]
        table = RateCounter._meta.db_table
        sql = (
            f"INSERT INTO {table} (key, count, expires_at) VALUES (%s, %s, %s) "
            f"ON CONFLICT (key) DO UPDATE SET count = {table}.count + EXCLUDED.count "
            "RETURNING count"
        )
        now = clock.now()
        counts = []
        # Keys in one order, so two requests upserting overlapping rows never deadlock.
        order = sorted(range(len(keys)), key=lambda i: keys[i][0])
        with transaction.atomic(), connection.cursor() as cursor:
            for i in order:
                key, ttl = keys[i]
                expires = connection.ops.adapt_datetimefield_value(now + dt.timedelta(seconds=ttl))
                cursor.execute(sql, [key, add, expires])
                counts.append((i, cursor.fetchone()[0]))
        return [count for _, count in sorted(counts)]


class RedisCounters:
    def __init__(self, url: str, prefix: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self.prefix = prefix

    def incr_many(self, keys: list[tuple[str, int]], add: int) -> list[int]:
        names = [self.prefix + key for key, _ in keys]
        if add == 0:
            return [int(v or 0) for v in self.client.mget(names)]
        pipe = self.client.pipeline(transaction=True)
        for name, (_, ttl) in zip(names, keys, strict=True):
            pipe.incrby(name, add)
            pipe.expire(name, ttl + 60, nx=True)
        return [int(v) for v in pipe.execute()[::2]]


class FallbackCounters:
    """Redis first; when it does not answer, the database, so a Redis outage never opens the gate."""

    def __init__(self, primary: RedisCounters, fallback: DatabaseCounters):
        self.primary, self.fallback = primary, fallback

    def incr_many(self, keys: list[tuple[str, int]], add: int) -> list[int]:
        import redis

        try:
            return self.primary.incr_many(keys, add)
        except redis.RedisError as exc:
            log.warning("redis unavailable for rate limits, counting in the database: %s", exc)
            return self.fallback.incr_many(keys, add)


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
