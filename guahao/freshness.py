"""Schedule answers that are computed at most once a second per process (放号 browsing).

At a release, thousands of phones refresh the same calendar and the same session's time windows
every second. Counting free numbers for each of them would spend the server on the same answer
over and over, so each answer is kept for `FRESH_SECONDS` (1 s) after the moment its
database read began, then built again. A change (a hold, a release, an expiry, a 停诊) therefore
shows everywhere within that second, in every process, without any process telling another.

Only one thread of a process builds a given answer at a time; the others wait for it rather than
counting in parallel. `FRESH_SECONDS = 0` turns the cache off (the test suite, where a
test reads right after it writes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.conf import settings

from guahao import clock

T = TypeVar("T")

# Entries are tiny; past this many keys, the ones already stale are dropped.
_PRUNE_ABOVE = 4096


@dataclass(frozen=True)
class Fresh(Generic[T]):
    value: T
    as_of: dt.datetime  # when the database read behind `value` began


class FreshCache(Generic[T]):
    def __init__(self) -> None:
        self._entries: dict[Hashable, Fresh[T]] = {}
        self._building: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    @staticmethod
    def max_age() -> dt.timedelta:
        return dt.timedelta(seconds=settings.FRESH_SECONDS)

    def _usable(self, entry: Fresh[T] | None, now: dt.datetime) -> bool:
        # A clock moved backwards (tests travel in time) never serves an answer "from the future".
        return entry is not None and entry.as_of <= now < entry.as_of + self.max_age()

    def get(self, key: Hashable, build: Callable[[dt.datetime], T]) -> Fresh[T]:
        """The answer for `key` as of at most max_age ago; `build(now)` makes it when there is
        none. Exceptions (not found …) are not kept: the next request asks again."""
        now = clock.now()
        if settings.FRESH_SECONDS <= 0:
            return Fresh(build(now), now)
        entry = self._entries.get(key)
        if self._usable(entry, now):
            return entry
        with self._guard:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:
            now = clock.now()
            entry = self._entries.get(key)
            if self._usable(entry, now):
                return entry  # another thread built it while this one waited
            entry = Fresh(build(now), now)
            self._entries[key] = entry
        if len(self._entries) > _PRUNE_ABOVE:
            self._prune(now)
        return entry

    def _prune(self, now: dt.datetime) -> None:
        with self._guard:
            for key in [k for k, e in list(self._entries.items()) if not self._usable(e, now)]:
                self._entries.pop(key, None)
                self._building.pop(key, None)

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()
            self._building.clear()


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison: a gzip'd copy's W/ tag still matches the same body."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag.removeprefix("W/") in wanted
