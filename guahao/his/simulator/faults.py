"""Faults set per operation through the control endpoint: what the next calls of an operation do
instead of (or besides) answering as the contract says."""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

OPERATIONS = ("lock", "release", "register", "query", "cancel", "schedule", "card", "day")
FAULTS = {
    "latency": "answer normally after latency_ms (default 1000)",
    "timeout": "accept and never answer: hold the connection latency_ms (default 60000), nothing done, then close",
    "error": "answer 500, nothing done",
    "lost_reply": "do the change, then close the connection without an answer",
    "conflict": "the operation's natural refusal, nothing done",
    "down": "close the connection at once, nothing done",
}


@dataclass
class Fault:
    operation: str  # one of OPERATIONS, or "*"
    fault: str
    times: int = 1  # -1: until cleared
    rate: float | None = None  # probability per call (a call that is spared does not count)
    latency_ms: int | None = None

    def delay_seconds(self) -> float:
        default = 60_000 if self.fault == "timeout" else 1000
        return (self.latency_ms if self.latency_ms is not None else default) / 1000


def parse_fault(body: dict[str, Any]) -> Fault:
    operation, fault = body.get("operation"), body.get("fault")
    if operation not in (*OPERATIONS, "*"):
        raise ValueError(f"operation is one of {', '.join(OPERATIONS)} or *")
    if fault not in FAULTS:
        raise ValueError(f"fault is one of {', '.join(FAULTS)}")
    times = int(body.get("times", 1))
    rate = body.get("rate")
    if rate is not None and not 0 <= float(rate) <= 1:
        raise ValueError("rate is between 0 and 1")
    if times == 0 or times < -1:
        raise ValueError("times is a positive count, or -1 for until cleared")
    latency = body.get("latency_ms")
    return Fault(operation=operation, fault=fault, times=times, rate=None if rate is None else float(rate), latency_ms=None if latency is None else int(latency))


class FaultBoard:
    """The faults in force, first set first served; one operation's own faults before "*"."""

    def __init__(self, *, seed: int = 0) -> None:
        self._mutex = threading.Lock()
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)

    def add(self, fault: Fault) -> None:
        with self._mutex:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._mutex:
            self._faults.clear()

    def listing(self) -> list[dict[str, Any]]:
        with self._mutex:
            return [asdict(f) for f in self._faults]

    def take(self, operation: str) -> Fault | None:
        """The fault the next call of `operation` meets, if any (counted off its `times`)."""
        with self._mutex:
            ordered = [f for f in self._faults if f.operation == operation] + [f for f in self._faults if f.operation == "*"]
            for fault in ordered:
                if fault.rate is not None and self._rng.random() >= fault.rate:
                    continue
                if fault.times > 0:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                return fault
            return None
