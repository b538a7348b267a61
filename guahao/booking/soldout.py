"""The sold-out fast path of a release burst (放号): most hold requests ask for a number that is
already gone, and a process that has just seen it gone answers the next ones from memory.

`SoldOut` can only say "taken": it never grants a hold (every grant is the claim's conditional
UPDATE), so at worst it refuses a number that came free less than `FRESH_SECONDS` ago in another
process; a number freed in this process is forgotten at once, with every "window full" (a
window's numbers are not known here without a read). Keys: ("slot", id) and ("window", session
id, window start).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Hashable

from django.conf import settings

from guahao import clock

_PRUNE_ABOVE = 100_000


class SoldOut:
    def __init__(self) -> None:
        self._marked: dict[Hashable, dt.datetime] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _holds(marked: dt.datetime | None, now: dt.datetime) -> bool:
        # A clock moved backwards (tests travel in time) never keeps a mark "from the future".
        return marked is not None and marked <= now < marked + dt.timedelta(seconds=settings.FRESH_SECONDS)

    def says_taken(self, key: Hashable) -> bool:
        return self._holds(self._marked.get(key), clock.now())

    def mark(self, key: Hashable) -> None:
        if settings.FRESH_SECONDS <= 0:
            return
        now = clock.now()
        self._marked[key] = now
        if len(self._marked) > _PRUNE_ABOVE:
            with self._lock:
                for stale in [k for k, marked in list(self._marked.items()) if not self._holds(marked, now)]:
                    self._marked.pop(stale, None)

    def forget_slot(self, slot_id: int) -> None:
        """A number came free in this process: it, and any window, may be offered again."""
        self._marked.pop(("slot", slot_id), None)
        with self._lock:
            for key in [k for k in list(self._marked) if k[0] == "window"]:
                self._marked.pop(key, None)

    def clear(self) -> None:
        self._marked.clear()


sold_out = SoldOut()
