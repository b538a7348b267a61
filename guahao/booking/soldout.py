"""The sold-out fast path of a release burst (放号): most hold requests ask for a number that is
already gone, and a process that has just seen it gone answers the next ones from memory.

`SoldOut` can only say "taken": it never grants a hold (every grant is the claim's conditional
UPDATE), so at worst it refuses a number that came free less than `FRESH_SECONDS` ago in another
process; a number freed in this process is forgotten at once, with every "window full" (a
window's numbers are not known here without a read). Keys: ("slot", id) and ("window", session
id, window start).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

from django.conf import settings

_PRUNE_ABOVE = 100_000


class SoldOut:
    def __init__(self) -> None:
        self._until: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def says_taken(self, key: Hashable) -> bool:
        until = self._until.get(key)
        return until is not None and time.monotonic() < until

    def mark(self, key: Hashable) -> None:
        if settings.FRESH_SECONDS <= 0:
            return
        now = time.monotonic()
        self._until[key] = now + settings.FRESH_SECONDS
        if len(self._until) > _PRUNE_ABOVE:
            with self._lock:
                for stale in [k for k, until in list(self._until.items()) if until <= now]:
                    self._until.pop(stale, None)

    def forget_slot(self, slot_id: int) -> None:
        """A number came free in this process: it, and any window, may be offered again."""
        self._until.pop(("slot", slot_id), None)
        with self._lock:
            for key in [k for k in list(self._until) if k[0] == "window"]:
                self._until.pop(key, None)

    def clear(self) -> None:
        self._until.clear()


sold_out = SoldOut()
