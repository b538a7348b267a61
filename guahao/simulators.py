"""What the simulators of outside systems (the HIS, WeChat, the SMS provider) share. Their HTTP
handlers' plumbing (`SimulatorHandler`), and running one as a real process for tests: start
`python -m <module>` on a free loopback port, read the address from its first line ("listening on
http://127.0.0.1:PORT"), talk to its loopback control API, and stop it on exit whatever the test
did. Standard library only: the simulators run without Django."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

START_TIMEOUT_SECONDS = 10.0
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ControlError(Exception):
    """The control API answered with an error status."""

    def __init__(self, status: int, document: Any):
        super().__init__(f"{status}: {document}")
        self.status, self.document = status, document


class SimulatorHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, quiet unless the server is `verbose`, and every method to the
    subclass's `_dispatch(method)`."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # The handler writes the status and headers, then the body: without TCP_NODELAY, Nagle's
        # algorithm holds the body until the client's delayed ACK, 40 ms on every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class SimulatorServer(ThreadingHTTPServer):
    """One thread per connection, IPv4 or IPv6 by the address; `stopping` wakes the connections a
    "timeout" fault holds when the process stops."""

    daemon_threads = True  # a connection held by a "timeout" fault never keeps the process alive
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[SimulatorHandler], *, verbose: bool = False) -> None:
        self.verbose = verbose
        self.stopping = threading.Event()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)


def loopback(host: str) -> str:
    """The control API is unsigned: a simulator listens on loopback only."""
    host = "127.0.0.1" if host in ("", "localhost") else host.strip("[]")
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"--host must be a loopback address (127.0.0.1 or ::1), not {host!r}: the control API is unsigned")
    return host


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def serve(server: SimulatorServer, *, name: str, note: str = "") -> None:
    """Print the line `running()` waits for, then serve until Ctrl-C or SIGTERM (the test helper, a
    supervisor), which stop as cleanly as each other."""
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{name}: listening on http://{shown}:{port}{note}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()


class SimulatorProcess:
    """A running simulator: its base `url` and its process."""

    def __init__(self, *, url: str, process: subprocess.Popen[str]) -> None:
        self.url, self.process = url, process

    def control(self, method: str, path: str, document: dict[str, Any] | None = None) -> Any:
        """Call /_control/<path> (unsigned, loopback only); raises ControlError on a non-2xx answer."""
        data = json.dumps(document or {}).encode() if method == "POST" else None
        request = urllib.request.Request(
            f"{self.url}/_control/{path.lstrip('/')}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ControlError(error.code, json.loads(error.read() or b"null")) from None

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


S = TypeVar("S", bound=SimulatorProcess)


@contextlib.contextmanager
def running(module: str, args: list[str], make: Callable[[subprocess.Popen[str]], S], *, name: str) -> Iterator[S]:
    """Start `python -m module args…`, yield `make(process)` with its url set, stop it after."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT, env=environment
    )
    simulator = make(process)
    try:
        simulator.url = _read_url(process, name)
        yield simulator
    finally:
        simulator.stop()


def _read_url(process: subprocess.Popen[str], name: str) -> str:
    """The URL from the simulator's first line (it prints it once it listens)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline() if process.stdout else ""), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_SECONDS)
    if not line or "listening on " not in line[0]:
        raise RuntimeError(f"the {name} did not start (exit status {process.poll()}): {line[0] if line else 'no output'}")
    return line[0].split("listening on ", 1)[1].split()[0]
