"""Faults on demand for the simulators of outside systems (the HIS, a payment provider) that the
tests run guahao against: per operation, a queue of what its next calls do instead of answering."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# "refuse": the system answers no, nothing done; "timeout": no answer, nothing done;
# "lost_reply": done, but the answer never arrives.
FAULTS = ("refuse", "timeout", "lost_reply")


class FaultQueue:
    """Subclasses name the errors their system raises for a refusal and for no answer."""

    refused_error: type[Exception] = RuntimeError
    timeout_error: type[Exception] = TimeoutError

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._queued: dict[str, deque[str]] = defaultdict(deque)

    def fail_next(self, operation: str, fault: str, times: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        with self._mutex:
            self._queued[operation].extend([fault] * times)

    def clear_faults(self) -> None:
        with self._mutex:
            self._queued.clear()

    def next_fault(self, operation: str) -> str | None:
        with self._mutex:
            queue = self._queued[operation]
            return queue.popleft() if queue else None

    def act(self, operation: str, effect: Callable[[], T]) -> T:
        """Do `effect` as the system would, unless a fault is queued for `operation`."""
        fault = self.next_fault(operation)
        if fault == "refuse":
            raise self.refused_error(f"{operation}: refused")
        if fault == "timeout":
            raise self.timeout_error(f"{operation}: no answer")
        result = effect()
        if fault == "lost_reply":
            raise self.timeout_error(f"{operation}: reply lost")
        return result
