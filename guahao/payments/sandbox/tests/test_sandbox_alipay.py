"""Alipay against the sandbox, with python-alipay-sdk as the merchant's client: every answer below
passed the SDK's signature check (it raises AliPayValidationError otherwise)."""

from __future__ import annotations

import datetime as dt
import http.client
import urllib.error
import urllib.parse
import urllib.request

import pytest
from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError

from guahao.payments.reconciliation.bills import parse_alipay_bill
from guahao.payments.sandbox import ALIPAY_RETRY, TradeClosed
from guahao.payments.sandbox.tests.helpers import ALIPAY_NOTIFY_URL, Inbox, alipay_client, browse

RETURN_URL = "https://merchant.example/pay/return?order=7"
LOCAL = dt.timezone(dt.timedelta(hours=8))


def open_cashier(ali, gw, number: str, amount: str = "12.34", **extra) -> tuple[int, str]:
    query = ali.api_alipay_trade_wap_pay("挂号费", number, amount, return_url=RETURN_URL, **extra)
    status, _, page = browse(f"{gw.alipay_gateway}?{query}")
    return status, page


def pay(gw, number: str) -> tuple[int, dict[str, str], str]:
    return browse(f"{gw.url}/cashier/alipay/{number}", {"action": "pay"})


def verified(ali, params: dict[str, str]) -> bool:
    params = dict(params)
    sign = params.pop("sign")
    return ali.verify(params, sign)


def test_wap_pay_cashier_return_query_and_notification(ali, gw, keys):
    assert ali.api_alipay_trade_query(out_trade_no="AP000001")["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    status, page = open_cashier(ali, gw, "AP000001")
    assert status == 200 and "确认支付" in page and "取消支付" in page and "¥12.34" in page
    assert gw.trade("AP000001").amount_fen == 1234
    assert ali.api_alipay_trade_query(out_trade_no="AP000001")["trade_status"] == "WAIT_BUYER_PAY"

    status, headers, _ = pay(gw, "AP000001")
    assert status == 303
    location = urllib.parse.urlsplit(headers["Location"])
    assert location._replace(query="").geturl() == "https://merchant.example/pay/return"
    back = dict(urllib.parse.parse_qsl(location.query))
    assert back["order"] == "7" and back["method"] == "alipay.trade.wap.pay.return"
    assert back["seller_id"] == keys.alipay.seller_id and back["total_amount"] == "12.34"
    del back["order"]  # the merchant's own parameter, not Alipay's
    assert verified(ali, back)

    answer = ali.api_alipay_trade_query(out_trade_no="AP000001")
    assert answer["trade_status"] == "TRADE_SUCCESS" and answer["total_amount"] == "12.34"
    assert answer["trade_no"] == back["trade_no"] and answer["trade_no"].startswith(
        "20250310" + "2200"
    )
    assert len(answer["trade_no"]) == 28 and "*" in answer["buyer_logon_id"]

    inbox = Inbox((200, b"success\n"))
    assert gw.deliver_due(send=inbox) == 1
    url, headers, body = inbox.sent[0]
    assert url == ALIPAY_NOTIFY_URL and headers["Content-Type"].startswith(
        "application/x-www-form-urlencoded"
    )
    params = dict(urllib.parse.parse_qsl(body.decode("utf-8")))
    assert (
        params["trade_status"] == "TRADE_SUCCESS" and params["notify_type"] == "trade_status_sync"
    )
    assert (
        params["notify_time"] == "2025-03-10 10:00:00"
        and params["seller_id"] == keys.alipay.seller_id
    )
    assert params["subject"] == "挂号费"
    assert verified(ali, params)
    params["total_amount"] = "0.01"
    assert not verified(ali, params)
    assert gw.notifications("AP000001")[0].delivered_at is not None


def test_the_same_number_with_other_content_is_tampering(ali, gw):
    assert open_cashier(ali, gw, "AP000002")[0] == 200
    assert open_cashier(ali, gw, "AP000002")[0] == 200
    status, page = open_cashier(ali, gw, "AP000002", amount="12.35")
    assert status == 400 and "ACQ.CONTEXT_INCONSISTENT" in page
    assert len([t for t in [gw.trade("AP000002")] if t]) == 1


def test_a_forged_pay_link_is_refused(keys, other_keys, gw):
    forger = alipay_client(keys, gw, private_key=other_keys.alipay.app_private_key)
    status, page = open_cashier(forger, gw, "AP000003")
    assert status == 400 and "验签出错" in page and gw.trade("AP000003") is None


def test_cancel_returns_without_payment_parameters(ali, gw):
    open_cashier(ali, gw, "AP000004", quit_url="https://merchant.example/quit")
    status, headers, _ = browse(f"{gw.url}/cashier/alipay/AP000004", {"action": "cancel"})
    assert (status, headers["Location"]) == (303, "https://merchant.example/quit")
    assert gw.trade("AP000004").state == "NOTPAY"


def test_close_before_the_page_was_opened_keeps_the_number_unpayable(ali, gw):
    assert ali.api_alipay_trade_close(out_trade_no="AP000005")["sub_code"] == "ACQ.TRADE_NOT_EXIST"
    status, page = open_cashier(ali, gw, "AP000005")
    assert status == 200 and "订单已关闭" in page and "确认支付" not in page
    status, _, page = pay(gw, "AP000005")
    assert status == 409 and "订单已关闭" in page
    with pytest.raises(TradeClosed):
        gw.pay("AP000005")
    assert ali.api_alipay_trade_query(out_trade_no="AP000005")["trade_status"] == "TRADE_CLOSED"


def test_close(ali, gw):
    open_cashier(ali, gw, "AP000006")
    answer = ali.api_alipay_trade_close(out_trade_no="AP000006")
    assert answer["code"] == "10000" and answer["out_trade_no"] == "AP000006"
    assert ali.api_alipay_trade_query(out_trade_no="AP000006")["trade_status"] == "TRADE_CLOSED"
    open_cashier(ali, gw, "AP000007")
    pay(gw, "AP000007")
    answer = ali.api_alipay_trade_close(out_trade_no="AP000007")
    assert (answer["code"], answer["sub_code"]) == ("40004", "ACQ.TRADE_STATUS_ERROR")


def test_time_expire_closes_the_trade(ali, gw, clock):
    expire = (clock() + dt.timedelta(minutes=15)).astimezone(LOCAL).strftime("%Y-%m-%d %H:%M:%S")
    open_cashier(ali, gw, "AP000008", time_expire=expire)
    clock.advance(minutes=14, seconds=59)
    assert ali.api_alipay_trade_query(out_trade_no="AP000008")["trade_status"] == "WAIT_BUYER_PAY"
    clock.advance(seconds=1)
    assert ali.api_alipay_trade_query(out_trade_no="AP000008")["trade_status"] == "TRADE_CLOSED"


def test_refunds(ali, gw):
    assert (
        ali.api_alipay_trade_refund("1.00", out_trade_no="AP000009")["sub_code"]
        == "ACQ.TRADE_NOT_EXIST"
    )
    open_cashier(ali, gw, "AP000009", amount="30.00")
    unpaid = ali.api_alipay_trade_refund("1.00", out_trade_no="AP000009", out_request_no="RQ1")
    assert unpaid["sub_code"] == "ACQ.TRADE_STATUS_ERROR"
    pay(gw, "AP000009")

    first = ali.api_alipay_trade_refund(
        "10.00", out_trade_no="AP000009", out_request_no="RQ1", refund_reason="退号"
    )
    assert (first["code"], first["fund_change"], first["refund_fee"]) == ("10000", "Y", "10.00")
    again = ali.api_alipay_trade_refund("10.00", out_trade_no="AP000009", out_request_no="RQ1")
    assert (again["fund_change"], again["refund_fee"]) == ("N", "10.00")
    too_much = ali.api_alipay_trade_refund("20.01", out_trade_no="AP000009", out_request_no="RQ2")
    assert too_much["sub_code"] == "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL"
    rest = ali.api_alipay_trade_refund("20.00", out_trade_no="AP000009", out_request_no="RQ2")
    assert (rest["fund_change"], rest["refund_fee"]) == ("Y", "30.00")
    assert [r.amount_fen for r in gw.refunds("AP000009")] == [1000, 2000]
    assert ali.api_alipay_trade_query(out_trade_no="AP000009")["trade_status"] == "TRADE_CLOSED"

    found = ali.api_alipay_trade_fastpay_refund_query("RQ1", out_trade_no="AP000009")
    assert (found["refund_status"], found["refund_amount"], found["total_amount"]) == (
        "REFUND_SUCCESS",
        "10.00",
        "30.00",
    )
    missing = ali.api_alipay_trade_fastpay_refund_query("RQ9", out_trade_no="AP000009")
    assert (
        missing["code"] == "10000"
        and "refund_status" not in missing
        and "refund_amount" not in missing
    )

    inbox = Inbox((200, b"success"))
    assert gw.deliver_due(send=inbox) == 3
    sent = [dict(urllib.parse.parse_qsl(body.decode())) for _, _, body in inbox.sent]
    assert all(verified(ali, params) for params in sent)
    assert [(p["trade_status"], p.get("refund_fee"), p.get("out_biz_no")) for p in sent] == [
        ("TRADE_SUCCESS", None, None),
        ("TRADE_SUCCESS", "10.00", "RQ1"),
        ("TRADE_CLOSED", "30.00", "RQ2"),
    ]


def test_a_request_signed_with_another_key_is_refused(keys, other_keys, gw):
    forger = alipay_client(keys, gw, private_key=other_keys.alipay.app_private_key)
    answer = forger.api_alipay_trade_query(out_trade_no="AP000010")
    assert answer == {
        "code": "40002",
        "msg": "Invalid Arguments",
        "sub_code": "isv.invalid-signature",
        "sub_msg": "验签出错",
    }


def test_answers_are_signed_by_the_alipay_key(keys, other_keys, gw):
    fooled = AliPay(
        appid=keys.alipay.app_id,
        app_private_key_string=keys.alipay.app_private_key,
        alipay_public_key_string=other_keys.alipay.alipay_public_key,
    )
    fooled._gateway = gw.alipay_gateway
    with pytest.raises(AliPayValidationError):
        fooled.api_alipay_trade_query(out_trade_no="AP000011")


def test_an_unknown_method_is_an_error_response(ali):
    with pytest.raises(AliPayException, match="isv.invalid-method"):
        ali.server_api("alipay.trade.unknown", biz_content={"out_trade_no": "AP000012"})


def test_notifications_are_resent_on_alipays_schedule(ali, gw, clock):
    open_cashier(ali, gw, "AP000013")
    pay(gw, "AP000013")
    inbox = Inbox((200, b"fail"))
    assert gw.deliver_due(send=inbox) == 1
    for wait in ALIPAY_RETRY:
        clock.advance(seconds=wait.total_seconds() - 1)
        assert gw.deliver_due(send=inbox) == 0
        clock.advance(seconds=1)
        assert gw.deliver_due(send=inbox) == 1
    delivery = gw.notifications("AP000013")[0]
    assert delivery.gave_up and delivery.attempts == 8
    sent = [dict(urllib.parse.parse_qsl(body.decode())) for _, _, body in inbox.sent]
    assert len({p["notify_id"] for p in sent}) == 1 and len({p["notify_time"] for p in sent}) == 8
    assert all(verified(ali, p) for p in sent)


def test_a_refused_probe_and_then_success(ali, gw):
    gw.probe_rate = 1.0
    open_cashier(ali, gw, "AP000014")
    pay(gw, "AP000014")

    def careful(url, headers, body):
        return (
            (200, b"success")
            if verified(ali, dict(urllib.parse.parse_qsl(body.decode())))
            else (200, b"fail")
        )

    assert gw.deliver_due(send=Inbox(careful)) == 1
    assert [(p.provider, p.accepted) for p in gw.probes] == [("alipay", False)]
    assert gw.notifications("AP000014")[0].delivered_at is not None


def test_faults(ali, gw):
    open_cashier(ali, gw, "AP000015")
    pay(gw, "AP000015")
    gw.fault("alipay.trade.refund", "lost_reply")
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        ali.api_alipay_trade_refund("1.00", out_trade_no="AP000015", out_request_no="RQ1")
    assert len(gw.refunds("AP000015")) == 1
    assert (
        ali.api_alipay_trade_refund("1.00", out_trade_no="AP000015", out_request_no="RQ1")[
            "fund_change"
        ]
        == "N"
    )

    gw.fault("alipay.trade.close", "drop")
    open_cashier(ali, gw, "AP000016")
    with pytest.raises((http.client.RemoteDisconnected, urllib.error.URLError, ConnectionError)):
        ali.api_alipay_trade_close(out_trade_no="AP000016")
    assert gw.trade("AP000016").state == "NOTPAY"

    gw.fault("alipay.trade.query", "error")
    answer = ali.api_alipay_trade_query(out_trade_no="AP000016")
    assert (answer["code"], answer["msg"], answer["sub_code"]) == (
        "20000",
        "Service Currently Unavailable",
        "aop.SYSTEM_ERROR",
    )


def test_bill(ali, gw, clock):
    open_cashier(ali, gw, "AP000017", amount="25.00")
    pay(gw, "AP000017")
    ali.api_alipay_trade_refund("5.00", out_trade_no="AP000017", out_request_no="RQ1")
    day = clock().astimezone(LOCAL).date().isoformat()
    method = "alipay.data.dataservice.bill.downloadurl.query"
    assert (
        ali.server_api(method, biz_content={"bill_type": "trade", "bill_date": day})["sub_code"]
        == "isp.bill_not_exist"
    )
    clock.advance(days=1)
    answer = ali.server_api(method, biz_content={"bill_type": "trade", "bill_date": day})
    with urllib.request.urlopen(answer["bill_download_url"], timeout=5) as response:  # noqa: S310 — loopback
        data = response.read()
    assert data[:2] == b"PK"
    rows = parse_alipay_bill(data)
    assert sorted((r.kind, r.out_trade_no, r.out_refund_no, r.amount_fen) for r in rows) == [
        ("payment", "AP000017", "", 2500),
        ("refund", "AP000017", "RQ1", 500),
    ]
    empty = ali.server_api(method, biz_content={"bill_type": "trade", "bill_date": "2025-03-01"})
    assert (empty["code"], empty["sub_code"], empty["sub_msg"]) == (
        "40004",
        "isp.bill_not_exist",
        "账单不存在",
    )
