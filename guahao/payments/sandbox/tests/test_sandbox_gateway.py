"""The gateway itself: keys on disk, concurrency, delivery over real HTTP, persisted state, the
command line."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import os
import stat
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from guahao.payments.sandbox import (
    SandboxGateway,
    SandboxKeys,
    http_send,
    running_gateway,
    serve,
    start_delivery,
)
from guahao.payments.sandbox.tests.helpers import alipay_client, browse, wechat_client


def test_keys_are_created_once_private_and_shared_by_racing_processes(tmp_path):
    path = tmp_path / "keys" / "sandbox.json"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        created = list(pool.map(lambda _: SandboxKeys.load_or_create(path), range(3)))
    assert created[0] == created[1] == created[2] == SandboxKeys.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["sandbox.json"]
    keys = created[0]
    assert SandboxKeys.from_json(keys.to_json()) == keys
    assert (
        keys.wechat.platform_public_key_id.startswith("PUB_KEY_ID_")
        and len(keys.wechat.apiv3_key) == 32
    )
    assert keys.wechat.merchant_private_key.startswith("-----BEGIN PRIVATE KEY-----")
    assert keys.alipay.seller_id.startswith("2088") and len(keys.alipay.seller_id) == 16


def _open(gateway: SandboxGateway, number: str, amount_fen: int = 1000) -> None:
    gateway.open_trade(
        "wechat",
        number,
        amount_fen=amount_fen,
        description="挂号费",
        notify_url="https://merchant.example/n",
        trade_type="MWEB",
        fingerprint=number,
    )


def test_concurrent_refunds_never_exceed_the_payment(keys, gw):
    _open(gw, "CC000001")
    gw.pay("CC000001")
    wx = wechat_client(keys, gw)

    def refund(i: int) -> int:
        code, _ = wx.refund(
            out_refund_no=f"CR{i:06d}",
            amount={"refund": 100, "total": 1000, "currency": "CNY"},
            out_trade_no="CC000001",
        )
        return code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(refund, range(16)))
    assert sorted(codes) == [200] * 10 + [400] * 6
    assert gw.trade("CC000001").refunded_fen == 1000 and len(gw.refunds("CC000001")) == 10


def test_concurrent_confirmations_pay_once_and_notify_once(gw):
    _open(gw, "CC000002")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        paid = list(pool.map(lambda _: gw.pay("CC000002"), range(16)))
    assert len({t.transaction_id for t in paid}) == 1
    assert len(gw.notifications("CC000002")) == 1


class _Merchant(BaseHTTPRequestHandler):
    """A merchant's notify endpoint that checks the signatures with the SDKs."""

    received: list[tuple[str, bool]] = []
    wechat = None
    alipay = None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/wechat":
            ok = bool(self.wechat.callback(dict(self.headers.items()), body))
            status, answer = (204, b"") if ok else (401, b'{"code":"FAIL"}')
        elif self.path == "/alipay":
            params = dict(urllib.parse.parse_qsl(body.decode()))
            sign = params.pop("sign")
            ok = self.alipay.verify(params, sign)
            status, answer = 200, b"success" if ok else b"fail"
        else:
            self.send_error(404)
            return
        self.received.append((self.path, ok))
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_the_delivery_thread_sends_over_http_probes_included(keys, gw):
    gw.probe_rate = 1.0
    handler = type(
        "Merchant",
        (_Merchant,),
        {"received": [], "wechat": wechat_client(keys, gw), "alipay": alipay_client(keys, gw)},
    )
    merchant = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(
        target=merchant.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    base = f"http://127.0.0.1:{merchant.server_address[1]}"
    try:
        gw.open_trade(
            "wechat",
            "HT000001",
            amount_fen=100,
            description="挂号费",
            notify_url=base + "/wechat",
            trade_type="MWEB",
            fingerprint="a",
        )
        gw.open_trade(
            "alipay",
            "HT000002",
            amount_fen=100,
            description="挂号费",
            notify_url=base + "/alipay",
            trade_type="QUICK_WAP_PAY",
            fingerprint="b",
        )
        gw.pay("HT000001")
        gw.pay("HT000002")
        done = threading.Event()
        sent = []

        def send(url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
            answer = http_send(url, headers, body)
            sent.append(answer[0])
            if len(sent) == 4:
                done.set()
            return answer

        stop = start_delivery(gw, interval=0.05, send=send)
        try:
            assert done.wait(5)
        finally:
            stop()
        assert all(d.delivered_at is not None for d in gw.notifications())
        assert sorted(handler.received) == [
            ("/alipay", False),
            ("/alipay", True),
            ("/wechat", False),
            ("/wechat", True),
        ]
        assert sorted((p.provider, p.accepted) for p in gw.probes) == [
            ("alipay", False),
            ("wechat", False),
        ]
        assert (
            http_send(base + "/nowhere", {}, b"")[0] == 404
        )  # an HTTP error is an answer, not an exception
    finally:
        merchant.shutdown()
        merchant.server_close()


def test_state_survives_a_restart(keys, clock, tmp_path):
    state = tmp_path / "state.json"
    with running_gateway(keys, now=clock, refund_delay=dt.timedelta(minutes=5)) as first:
        first.state_path = state
        _open(first, "ST000001")
        first.pay("ST000001")
        first.refund("wechat", out_refund_no="SR000001", amount_fen=300, out_trade_no="ST000001")
        alipay = alipay_client(keys, first)
        alipay.api_alipay_trade_close(out_trade_no="ST000002")  # remembered as closed
    second = SandboxGateway(keys, now=clock, refund_delay=dt.timedelta(minutes=5))
    second.restore(json.loads(state.read_text(encoding="utf-8")))
    trade = second.trade("ST000001")
    assert (trade.state, trade.refunded_fen) == ("REFUND", 300)
    assert second.refunds("ST000001")[0].state == "PROCESSING"
    clock.advance(minutes=5)
    assert second.refunds("ST000001")[0].state == "SUCCESS"
    assert [d.event for d in second.notifications()] == ["TRANSACTION.SUCCESS", "REFUND.SUCCESS"]
    assert second.notifications()[0].signed()[0] == "https://merchant.example/n"
    assert (
        second.open_trade(
            "alipay",
            "ST000002",
            amount_fen=1,
            description="x",
            notify_url="",
            trade_type="QUICK_WAP_PAY",
            fingerprint="x",
        ).state
        == "CLOSED"
    )


def test_faults_are_named(gw):
    with pytest.raises(ValueError, match="unknown operation"):
        gw.fault("wechat.pay", "drop")
    with pytest.raises(ValueError, match="unknown fault"):
        gw.fault("wechat.query", "slow")


def test_loopback_only(keys):
    with pytest.raises(ValueError, match="loopback"):
        serve(SandboxGateway(keys), host="0.0.0.0")  # noqa: S104 — the point of the test


def test_unknown_pages(gw):
    assert browse(gw.url + "/cashier/alipay/NOSUCH01")[0] == 404
    assert browse(gw.url + "/nothing")[0] == 404


def test_command_line(tmp_path):
    keys = tmp_path / "keys.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guahao.payments.sandbox",
            "--port",
            "0",
            "--keys",
            str(keys),
            "--state",
            str(tmp_path / "s.json"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("payment sandbox listening on http://127.0.0.1:")
        assert browse(line.rsplit(" ", 1)[1] + "/")[0] == 200
        assert SandboxKeys.load_or_create(keys).wechat.mchid
    finally:
        process.terminate()
        assert process.wait(5) == 0
