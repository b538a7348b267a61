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

import contextlib
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from guahao.his.conformance import SignedClient

START_TIMEOUT_SECONDS = 10.0
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


class ControlError(Exception):
    def __init__(self, status: int, document: Any):
        super().__init__(f"{status}: {document}")
        self.status, self.document = status, document


class Simulator:
    """A running simulator: its base `url`, the hospital it serves, and its control endpoint."""

    def __init__(self, *, url: str, hospital: str, secret: str, process: subprocess.Popen[str]) -> None:
        self.url, self.hospital, self.secret, self.process = url, hospital, secret, process

    def client(self, *, timeout: float = 5.0) -> SignedClient:
        return SignedClient(self.url, hospital=self.hospital, secret=self.secret, timeout=timeout)

    def control(self, method: str, path: str, document: dict[str, Any] | None = None) -> Any:
        """Call /_control/<path> (unsigned); raises ControlError on a non-2xx answer."""
        data = json.dumps(document or {}).encode() if method == "POST" else None
        request = urllib.request.Request(f"{self.url}/_control/{path.lstrip('/')}", data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ControlError(error.code, json.loads(error.read() or b"null")) from None

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

    def reset(self) -> Any:
        return self.control("POST", "reset")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def running_simulator(*, hospital: str = "H1", secret: str = "his-simulator-test-secret", seed: str = "demo", days: int = 7, attendance: float = 0.0, breaks: tuple[str, ...] = ()) -> Iterator[Simulator]:
    command = [sys.executable, "-m", "guahao.his.simulator", "--bind", "127.0.0.1:0", "--hospital", hospital, "--secret", secret, "--seed", seed, "--days", str(days), "--attendance", str(attendance)]
    for mode in breaks:
        command += ["--break", mode]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=_PROJECT_ROOT, env=environment)
    sim = Simulator(url="", hospital=hospital, secret=secret, process=process)
    try:
        sim.url = _read_url(process)
        yield sim
    finally:
        sim.stop()


def _read_url(process: subprocess.Popen[str]) -> str:
    """The URL from the simulator's first line (it prints it once it listens)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline() if process.stdout else ""), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_SECONDS)
    if not line or "listening on " not in line[0]:
        raise RuntimeError(f"the HIS simulator did not start (exit status {process.poll()}): {line[0] if line else 'no output'}")
    return line[0].split("listening on ", 1)[1].split()[0]
