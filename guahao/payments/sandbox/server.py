"""The sandbox's HTTP front (the standard library's threading server, loopback only) and the
thread that delivers due notifications to merchants."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from guahao.payments.sandbox import alipay, cashier, wechat
from guahao.payments.sandbox.keys import SandboxKeys
from guahao.payments.sandbox.ledger import SandboxGateway
from guahao.payments.sandbox.wire import Reply

log = logging.getLogger("guahao.payments.sandbox")

SEND_TIMEOUT = 5  # seconds a merchant has to answer a notification
MAX_BODY = 1 << 20


def route(
    gateway: SandboxGateway, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> Reply:
    """Which protocol answers: WeChat's /v3 API, Alipay's gateway.do, the cashier pages, the
    Alipay bill download."""
    path = target.partition("?")[0]
    if path.startswith("/v3/"):
        return wechat.handle(gateway, method, target, headers, body)
    if path == "/gateway.do" and method in ("GET", "POST"):
        return alipay.handle(gateway, method, target, headers, body)
    if path.startswith("/cashier/wechat/"):
        return cashier.handle_wechat(gateway, method, target, headers, body)
    if path.startswith("/cashier/alipay/"):
        return alipay.handle_cashier(gateway, method, target, headers, body)
    if path.startswith("/alipay/bill/") and method == "GET":
        return alipay.bill_download(gateway, path.removeprefix("/alipay/bill/"))
    if path == "/" and method == "GET":
        return Reply(200, {"Content-Type": "text/plain; charset=utf-8"}, b"payment sandbox\n")
    return Reply(404, {"Content-Type": "text/plain; charset=utf-8"}, b"not found\n")


class _Handler(BaseHTTPRequestHandler):
    gateway: SandboxGateway
    server_version = "PaymentSandbox/1.0"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            reply = route(self.gateway, method, self.path, headers, body)
        except Exception:
            log.exception("payment sandbox: %s %s failed", method, self.path.partition("?")[0])
            reply = Reply(500, {"Content-Type": "text/plain; charset=utf-8"}, b"sandbox error\n")
        if reply.hangup:  # a reply lost on the network: close without a byte
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — the base class's name
        log.debug("payment sandbox: " + format, *args)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(gateway: SandboxGateway, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """Serve `gateway` on host:port (0: a free port) in a daemon thread and set `gateway.url`.
    Loopback only: the sandbox pays anything for anyone. Stop with shutdown() + server_close()."""
    if not _loopback(host):
        raise ValueError(f"the payment sandbox listens on loopback only, not {host!r}")
    handler = type("SandboxHandler", (_Handler,), {"gateway": gateway})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    gateway.url = f"http://{host}:{server.server_address[1]}"
    threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="payment-sandbox",
        daemon=True,
    ).start()
    return server


@contextlib.contextmanager
def running_gateway(
    keys: SandboxKeys | None = None, **gateway_kwargs: Any
) -> Iterator[SandboxGateway]:
    """A gateway served on a free loopback port for the duration of the block."""
    gateway = SandboxGateway(keys or SandboxKeys.generate(), **gateway_kwargs)
    server = serve(gateway)
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A merchant answering a notification with a redirect has not taken it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def http_send(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST a notification; (status, body). Connection failures raise: a failed attempt."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=SEND_TIMEOUT) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def start_delivery(
    gateway: SandboxGateway,
    interval: float = 1.0,
    send: Callable[[str, dict[str, str], bytes], tuple[int, bytes]] = http_send,
) -> Callable[[], None]:
    """Deliver due notifications every `interval` seconds in a daemon thread; returns stop()."""
    stopped = threading.Event()

    def loop() -> None:
        while True:
            try:
                gateway.deliver_due(send=send)
            except Exception:
                log.exception("payment sandbox: notification delivery failed")
            if stopped.wait(interval):
                return

    thread = threading.Thread(target=loop, name="payment-sandbox-delivery", daemon=True)
    thread.start()

    def stop() -> None:
        stopped.set()
        thread.join(timeout=SEND_TIMEOUT + interval + 1)

    return stop
