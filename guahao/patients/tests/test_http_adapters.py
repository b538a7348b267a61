"""The `http` SMS channel and real-name verifier against a small real HTTP server on 127.0.0.1 that
checks the signature as the hospital's gateway would."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from guahao.patients import realname, sms
from guahao.patients.realname.http import HttpRealnameVerifier
from guahao.patients.sms.http import HttpSmsSender

SECRET = "a-shared-secret-of-the-gateway"


@dataclass
class Gateway:
    """What the fake gateway answers next, and what it received (verified requests only)."""

    url: str = ""
    status: int = 200
    answer: bytes = b'{"ok": true}'
    delay: float = 0.0
    location: str = ""
    received: list[dict] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    state = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            timestamp = self.headers.get("X-Guahao-Timestamp", "")
            expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, self.headers.get("X-Guahao-Signature", "")):
                state.refused.append("signature")
                return self._answer(401, b'{"error": "bad signature"}')
            if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
                state.refused.append("timestamp")
                return self._answer(401, b'{"error": "stale"}')
            if self.headers.get("Content-Type") != "application/json; charset=utf-8":
                state.refused.append("content-type")
                return self._answer(415, b"{}")
            state.received.append({"path": self.path, **json.loads(body)})
            time.sleep(state.delay)
            self._answer(state.status, state.answer)

        def _answer(self, status: int, body: bytes) -> None:
            try:
                self.send_response(status)
                if state.location:
                    self.send_header("Location", state.location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (the timeout tests)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_sms(settings, gateway) -> Gateway:
    settings.SMS_CHANNEL = "http"
    settings.SMS_URL = gateway.url + "/sms/send"
    settings.SMS_SECRET = SECRET
    settings.SMS_TIMEOUT = 0.5
    return gateway


@pytest.fixture
def http_realname(settings, gateway) -> Gateway:
    settings.REALNAME_VERIFIER = "http"
    settings.REALNAME_URL = gateway.url + "/realname/verify"
    settings.REALNAME_SECRET = SECRET
    settings.REALNAME_TIMEOUT = 0.5
    return gateway


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/nothing-listens-here"


# --- SMS --------------------------------------------------------------------------------------------


def test_the_http_channel_posts_the_phone_and_a_text_with_the_code_signed(http_sms):
    sender = sms.sender()
    assert isinstance(sender, HttpSmsSender)
    sender.send_code("13800138000", "246810")
    [request] = http_sms.received
    assert request["path"] == "/sms/send"
    assert request["phone"] == "13800138000"
    assert "246810" in request["text"] and "验证码" in request["text"]
    assert http_sms.refused == []


def test_a_wrong_secret_is_refused_by_the_gateway_and_the_code_is_not_sent(http_sms, settings):
    settings.SMS_SECRET = "another-secret-entirely"
    with pytest.raises(sms.SmsNotSent):
        sms.sender().send_code("13800138000", "246810")
    assert http_sms.refused == ["signature"]
    assert http_sms.received == []


@pytest.mark.parametrize("status", [400, 500, 503])
def test_an_error_answer_means_not_sent(http_sms, status):
    http_sms.status = status
    with pytest.raises(sms.SmsNotSent):
        sms.sender().send_code("13800138000", "246810")


def test_a_gateway_that_does_not_answer_in_time_means_not_sent(http_sms):
    http_sms.delay = 2.0
    started = time.monotonic()
    with pytest.raises(sms.SmsNotSent):
        sms.sender().send_code("13800138000", "246810")
    assert time.monotonic() - started < 1.5


def test_a_gateway_that_is_down_means_not_sent(http_sms, settings):
    settings.SMS_URL = closed_port_url()
    with pytest.raises(sms.SmsNotSent):
        sms.sender().send_code("13800138000", "246810")


def test_a_redirect_is_not_followed(http_sms):
    http_sms.status = 302
    http_sms.location = http_sms.url + "/elsewhere"
    with pytest.raises(sms.SmsNotSent):
        sms.sender().send_code("13800138000", "246810")
    assert [r["path"] for r in http_sms.received] == ["/sms/send"]


# --- real-name verification ---------------------------------------------------------------------


def verify(name: str = "张三", id_number: str = "11010519491231002X") -> None:
    realname.verifier().verify(name=name, id_type="resident_id", id_number=id_number)


def test_a_match_passes_and_the_identity_was_sent_signed(http_realname):
    assert isinstance(realname.verifier(), HttpRealnameVerifier)
    http_realname.answer = b'{"match": true}'
    verify()
    [request] = http_realname.received
    assert request == {
        "path": "/realname/verify",
        "name": "张三",
        "id_type": "resident_id",
        "id_number": "11010519491231002X",
    }


def test_a_mismatch_is_rejected_with_the_services_reason(http_realname):
    http_realname.answer = json.dumps({"match": False, "reason": "证件号码不存在或已注销"}).encode()
    with pytest.raises(realname.RealnameRejected) as rejected:
        verify()
    assert rejected.value.reason == "证件号码不存在或已注销"


def test_a_mismatch_without_a_reason_gets_the_usual_one(http_realname):
    http_realname.answer = b'{"match": false}'
    with pytest.raises(realname.RealnameRejected) as rejected:
        verify()
    assert rejected.value.reason == "姓名与证件号码不一致"


def test_no_answer_in_time_is_unavailable_not_rejected(http_realname):
    http_realname.delay = 2.0
    with pytest.raises(realname.RealnameUnavailable):
        verify()


@pytest.mark.parametrize(
    ("status", "answer"),
    [(500, b'{"match": false}'), (200, b"<html>maintenance</html>"), (200, b'{"result": "ok"}'), (200, b'{"match": "yes"}')],
    ids=["server-error", "not-json", "no-match-field", "match-not-boolean"],
)
def test_an_answer_that_is_not_a_verdict_is_unavailable(http_realname, status, answer):
    http_realname.status, http_realname.answer = status, answer
    with pytest.raises(realname.RealnameUnavailable):
        verify()


def test_a_wrong_secret_is_refused_by_the_service_and_nothing_is_known(http_realname, settings):
    settings.REALNAME_SECRET = "another-secret-entirely"
    with pytest.raises(realname.RealnameUnavailable):
        verify()
    assert http_realname.refused == ["signature"]


def test_a_service_that_is_down_is_unavailable(http_realname, settings):
    settings.REALNAME_URL = closed_port_url()
    with pytest.raises(realname.RealnameUnavailable):
        verify()
