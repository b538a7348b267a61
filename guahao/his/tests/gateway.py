"""A tiny signed HIS gateway of the tests' own: it checks each request's signature, answers with
what the test scripts, and remembers what it was sent."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from guahao.his import wire

SECRET = "s3cret-of-the-test-gateway"
HOSPITAL = "TESTH"


@dataclass
class Answer:
    status: int = 200
    body: object = field(default_factory=dict)
    sign: bool = True
    secret: str = SECRET
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    target: str
    body: bytes
    signature_ok: bool
    hospital: str


class Gateway:
    """Answers every request with `answer(seen)`; remembers what it was sent."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.seen: list[Seen] = []
        self.answer: Callable[[Seen], Answer] = lambda seen: Answer()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                verdict = wire.verify_request(SECRET, dict(self.headers), method=self.command, target=self.path, body=body)
                seen = Seen(self.command, self.path, body, verdict.ok, self.headers.get(wire.HOSPITAL_HEADER, ""))
                gateway.seen.append(seen)
                answer = gateway.answer(seen)
                if answer.delay:
                    time.sleep(answer.delay)
                raw = answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
                headers = wire.signed_response_headers(answer.secret, status=answer.status, body=raw) if answer.sign else {}
                try:
                    self.send_response(answer.status)
                    for name, value in {**headers, **answer.headers, "Content-Length": str(len(raw))}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{self.prefix}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
