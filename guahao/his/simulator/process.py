"""The simulator as a real process for tests: `running_simulator()` starts
`python -m guahao.his.simulator` on a free loopback port, waits until it answers, and stops it on
exit, whatever the test did.

    with running_simulator(hospital="H1", secret="s3cret") as sim:
        sim.fault("register", "lost_reply")
        client = sim.client()                      # a signed client of the contract
        client.call("POST", "/locks", {...})
        sim.state()["locks"]
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from guahao.his.conformance import SignedClient
from guahao.simulators import ControlError, SimulatorProcess, running

__all__ = ["ControlError", "Simulator", "running_simulator"]


class Simulator(SimulatorProcess):
    """A running simulator: its base `url`, the hospital it serves, and its control endpoint."""

    def __init__(self, *, url: str, hospital: str, secret: str, process: subprocess.Popen[str]) -> None:
        super().__init__(url=url, process=process)
        self.hospital, self.secret = hospital, secret

    def client(self, *, timeout: float = 5.0) -> SignedClient:
        return SignedClient(self.url, hospital=self.hospital, secret=self.secret, timeout=timeout)

    def fault(self, operation: str, fault: str, *, times: int = 1, rate: float | None = None, latency_ms: int | None = None) -> Any:
        document: dict[str, Any] = {"operation": operation, "fault": fault, "times": times}
        if rate is not None:
            document["rate"] = rate
        if latency_ms is not None:
            document["latency_ms"] = latency_ms
        return self.control("POST", "faults", document)

    def clear(self) -> Any:
        return self.control("DELETE", "faults")

    def state(self) -> dict[str, Any]:
        return self.control("GET", "state")

    def suspend(self, session_code: str, reason: str = "医生临时有事") -> dict[str, Any]:
        return self.control("POST", "suspend", {"session_code": session_code, "reason": reason})

    def attendance(self, status: str, *, hold_id: int | None = None, registration_no: str = "") -> dict[str, Any]:
        document: dict[str, Any] = {"status": status}
        if hold_id is not None:
            document["hold_id"] = hold_id
        if registration_no:
            document["registration_no"] = registration_no
        return self.control("POST", "attendance", document)

    def auto_attendance(self, rate: float) -> Any:
        return self.control("POST", "attendance", {"auto_rate": rate})

    def add_session(self, **fields: Any) -> dict[str, Any]:
        return self.control("POST", "sessions", fields)

    def capacity(self, session_code: str, add: int) -> dict[str, Any]:
        return self.control("POST", "capacity", {"session_code": session_code, "add": add})

    def advance(self, seconds: float) -> Any:
        """Move the simulator's clock forward (locks lapse, attendance moves)."""
        return self.control("POST", "clock", {"advance_seconds": seconds})

    def break_contract(self, mode: str) -> Any:
        return self.control("POST", "break", {"mode": mode})


@contextmanager
def running_simulator(*, hospital: str = "H1", secret: str = "his-simulator-test-secret", seed: str = "demo", days: int = 7, attendance: float = 0.0, breaks: tuple[str, ...] = ()) -> Iterator[Simulator]:
    args = ["--bind", "127.0.0.1:0", "--hospital", hospital, "--secret", secret, "--seed", seed, "--days", str(days), "--attendance", str(attendance)]
    for mode in breaks:
        args += ["--break", mode]
    with running(
        "guahao.his.simulator", args, lambda process: Simulator(url="", hospital=hospital, secret=secret, process=process), name="HIS simulator"
    ) as simulator:
        yield simulator
