"""The one clock. Every time-dependent rule asks `now()`, so tests can move time for all threads."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from zoneinfo import ZoneInfo

from django.utils import timezone

LOCAL_TZ = ZoneInfo("Asia/Shanghai")

_lock = threading.Lock()
_offset = dt.timedelta(0)


def now() -> dt.datetime:
    return timezone.now() + _offset


def local_now() -> dt.datetime:
    return now().astimezone(LOCAL_TZ)


def today() -> dt.date:
    """The hospital's calendar date (Asia/Shanghai)."""
    return local_now().date()


def local(value: dt.datetime) -> dt.datetime:
    return value.astimezone(LOCAL_TZ)


def at_local(day: dt.date, time: dt.time) -> dt.datetime:
    return dt.datetime.combine(day, time, tzinfo=LOCAL_TZ)


@contextlib.contextmanager
def travel(delta: dt.timedelta) -> Iterator[None]:
    """Move the clock forward (or back) by `delta` for the duration of the block."""
    global _offset
    with _lock:
        _offset += delta
    try:
        yield
    finally:
        with _lock:
            _offset -= delta


@contextlib.contextmanager
def frozen_at(moment: dt.datetime) -> Iterator[None]:
    """Run the block as if it were `moment` (the clock still ticks from there). Measured from the
    clock as it reads now, so a frozen_at inside another one lands on its own moment."""
    with travel(moment - now()):
        yield
