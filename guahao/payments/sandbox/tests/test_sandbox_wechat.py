"""WeChat Pay v3 against the sandbox, with wechatpayv3 as the merchant's client: every 2xx answer
below passed the SDK's signature check (it raises otherwise)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
import types
import urllib.parse

import pytest
import requests
import wechatpayv3.utils
from wechatpayv3 import WeChatPayType

from guahao.payments.reconciliation.bills import parse_wechat_bill, sha1_of
from guahao.payments.sandbox import WECHAT_RETRY, TradeClosed
from guahao.payments.sandbox.tests.helpers import NOTIFY_URL, Inbox, browse, wechat_client


def h5(wx, number: str, total: int = 2500, **extra) -> tuple[int, dict]:
    code, text = wx.pay(
        description="挂号费",
        out_trade_no=number,
        amount={"total": total, "currency": "CNY"},
        scene_info={"payer_client_ip": "127.0.0.1", "h5_info": {"type": "Wap"}},
        **extra,
    )
    return code, json.loads(text) if text else {}


def query(wx, number: str) -> tuple[int, dict]:
    code, text = wx.query(out_trade_no=number)
    return code, json.loads(text)


def test_h5_pay_on_the_cashier_then_query_and_notification(wx, gw):
    code, answer = h5(wx, "WX000001")
    assert code == 200
    url = (
        answer["h5_url"]
        + "&redirect_url="
        + urllib.parse.quote("https://merchant.example/back?o=1")
    )
    assert query(wx, "WX000001")[1]["trade_state"] == "NOTPAY"

    status, _, page = browse(url)
    assert status == 200 and "确认支付" in page and "取消支付" in page and "¥25.00" in page
    status, headers, _ = browse(url, {"action": "pay"})
    assert status == 303 and headers["Location"] == "https://merchant.example/back?o=1"

    code, paid = query(wx, "WX000001")
    assert paid["trade_state"] == "SUCCESS" and paid["amount"]["payer_total"] == 2500
    assert paid["transaction_id"].startswith("4200") and len(paid["transaction_id"]) == 28
    assert paid["success_time"].endswith("+08:00")
    assert gw.trade("WX000001").state == "SUCCESS"

    inbox = Inbox((204, b""))
    assert gw.deliver_due(send=inbox) == 1
    url, headers, body = inbox.sent[0]
    assert url == NOTIFY_URL
    received = wx.callback(headers, body)
    assert received["event_type"] == "TRANSACTION.SUCCESS"
    assert received["resource"]["trade_state"] == "SUCCESS"
    assert received["resource"]["transaction_id"] == paid["transaction_id"]
    assert received["resource"]["mchid"] == wx._mchid
    assert gw.notifications("WX000001")[0].delivered_at is not None
    assert browse(answer["h5_url"])[2].count("该订单已支付") == 1


def test_cancel_keeps_the_trade_payable(wx, gw):
    url = h5(wx, "WX000002")[1]["h5_url"]
    status, _, page = browse(url, {"action": "cancel"})
    assert status == 200 and "已取消支付" in page
    assert gw.trade("WX000002").state == "NOTPAY"
    assert gw.notifications() == []
    assert browse(url.replace("prepay_id=", "prepay_id=x"))[0] == 404


def test_jsapi_pay_sign_is_checked_like_the_wechat_client(keys, gw):
    jsapi = wechat_client(keys, gw, WeChatPayType.JSAPI)
    code, text = jsapi.pay(
        description="挂号费",
        out_trade_no="WX000003",
        amount={"total": 100},
        payer={"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    )
    assert code == 200
    prepay_id = json.loads(text)["prepay_id"]
    params = {
        "appId": keys.wechat.appid,
        "timeStamp": str(int(time.time())),
        "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    }
    params["package"] = f"prepay_id={prepay_id}"
    params["signType"] = "RSA"
    params["paySign"] = jsapi.sign(
        [params["appId"], params["timeStamp"], params["nonceStr"], params["package"]]
    )
    url = f"{gw.url}/cashier/wechat/jsapi?" + urllib.parse.urlencode(params)

    forged = url.replace(urllib.parse.quote(params["nonceStr"]), "OTHERNONCE")
    status, _, page = browse(forged)
    assert status == 400 and "支付验证失败" in page
    assert browse(url)[0] == 200
    status, _, page = browse(url, {"action": "pay"})
    assert status == 200 and "支付成功" in page
    paid = gw.trade("WX000003")
    assert paid.state == "SUCCESS" and paid.payer_id == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


def test_same_number_same_content_is_the_same_order_other_content_is_refused(wx, gw):
    first = h5(wx, "WX000004")
    assert h5(wx, "WX000004") == first
    code, answer = h5(wx, "WX000004", total=2600)
    assert (code, answer) == (400, {"code": "INVALID_REQUEST", "message": "商户订单号重复"})
    gw.pay("WX000004")
    assert h5(wx, "WX000004")[1]["code"] == "ORDERPAID"
    assert h5(wx, "WX000004", total=1)[1]["code"] == "ORDERPAID"


def test_parameters_are_validated(wx):
    assert h5(wx, "short")[1]["code"] == "PARAM_ERROR"
    assert h5(wx, "WX000005", total=0)[1]["code"] == "PARAM_ERROR"
    code, answer = h5(wx, "WX000005", appid="wx0000000000000000")
    assert (code, answer["code"]) == (400, "APPID_MCHID_NOT_MATCH")


def test_close(wx, gw):
    h5(wx, "WX000006")
    assert wx.close(out_trade_no="WX000006") == (204, b"")
    assert query(wx, "WX000006")[1]["trade_state"] == "CLOSED"
    with pytest.raises(TradeClosed):
        gw.pay("WX000006")
    h5(wx, "WX000007")
    gw.pay("WX000007")
    code, text = wx.close(out_trade_no="WX000007")
    assert (code, json.loads(text)) == (400, {"code": "ORDERPAID", "message": "订单已支付"})
    code, text = wx.close(out_trade_no="WX000008")
    assert (code, json.loads(text)["code"]) == (404, "ORDER_NOT_EXIST")
    code, text = wx.query(out_trade_no="WX000008")
    assert (code, json.loads(text)) == (404, {"code": "ORDER_NOT_EXIST", "message": "订单不存在"})


def test_time_expire_closes_the_trade(wx, gw, clock):
    expire = (clock() + dt.timedelta(minutes=15)).astimezone(dt.timezone(dt.timedelta(hours=8)))
    url = h5(wx, "WX000009", time_expire=expire.isoformat(timespec="seconds"))[1]["h5_url"]
    clock.advance(minutes=15)
    assert query(wx, "WX000009")[1]["trade_state"] == "CLOSED"
    status, _, page = browse(url, {"action": "pay"})
    assert status == 409 and "订单已关闭" in page
    assert gw.trade("WX000009").closed_at == expire


def refund(wx, number: str, out_refund_no: str, amount: int, total: int = 2500) -> tuple[int, dict]:
    code, text = wx.refund(
        out_refund_no=out_refund_no,
        amount={"refund": amount, "total": total, "currency": "CNY"},
        out_trade_no=number,
        reason="患者退号",
    )
    return code, json.loads(text)


def test_refunds_are_idempotent_by_number_and_never_exceed_the_payment(wx, gw, clock):
    gw.refund_delay = dt.timedelta(minutes=1)
    h5(wx, "WX000010")
    assert refund(wx, "WX000010", "RF000010", 100) == (
        400,
        {"code": "INVALID_REQUEST", "message": "订单未支付"},
    )
    gw.pay("WX000010")
    code, first = refund(wx, "WX000010", "RF000010", 1000)
    assert code == 200 and first["status"] == "PROCESSING" and first["amount"]["refund"] == 1000
    assert refund(wx, "WX000010", "RF000010", 1000)[1]["refund_id"] == first["refund_id"]
    assert len(gw.refunds("WX000010")) == 1
    code, answer = refund(wx, "WX000010", "RF000011", 1501)
    assert (code, answer) == (
        400,
        {"code": "INVALID_REQUEST", "message": "申请退款金额超过订单可退金额"},
    )
    assert refund(wx, "WX000010", "RF000011", 1000, total=2400)[1]["code"] == "PARAM_ERROR"
    assert refund(wx, "WX000099", "RF000099", 100)[0] == 404

    code, text = wx.query_refund(out_refund_no="RF000010")
    assert code == 200 and json.loads(text)["status"] == "PROCESSING"
    assert gw.notifications("WX000010")[-1].event == "TRANSACTION.SUCCESS"
    clock.advance(minutes=1)
    code, text = wx.query_refund(out_refund_no="RF000010")
    assert json.loads(text)["status"] == "SUCCESS" and json.loads(text)["success_time"]
    assert query(wx, "WX000010")[1]["trade_state"] == "REFUND"

    inbox = Inbox((200, b""))
    assert gw.deliver_due(send=inbox) == 2
    refunded = wx.callback(*inbox.sent[1][1:])
    assert refunded["event_type"] == "REFUND.SUCCESS"
    assert refunded["resource"]["refund_status"] == "SUCCESS"
    assert refunded["resource"]["amount"] == {
        "total": 2500,
        "refund": 1000,
        "payer_total": 2500,
        "payer_refund": 1000,
    }
    code, text = wx.query_refund(out_refund_no="RF999999")
    assert (code, json.loads(text)) == (
        404,
        {"code": "RESOURCE_NOT_EXISTS", "message": "退款单不存在"},
    )


def test_a_request_signed_with_another_key_is_refused(keys, other_keys, gw):
    stranger = wechat_client(keys, gw)
    stranger._core._private_key = wechatpayv3.utils.load_private_key(
        other_keys.wechat.merchant_private_key
    )
    code, text = stranger.query(out_trade_no="WX000011")
    assert (code, json.loads(text)) == (401, {"code": "SIGN_ERROR", "message": "签名错误"})


def test_a_stale_authorization_timestamp_is_refused(wx, monkeypatch):
    monkeypatch.setattr(
        wechatpayv3.utils, "time", types.SimpleNamespace(time=lambda: time.time() - 301)
    )
    code, text = wx.query(out_trade_no="WX000012")
    assert (code, json.loads(text)["code"]) == (401, "SIGN_ERROR")
    monkeypatch.setattr(
        wechatpayv3.utils, "time", types.SimpleNamespace(time=lambda: time.time() - 200)
    )
    assert wx.query(out_trade_no="WX000012")[0] == 404


def test_answers_are_signed_by_the_platform_key(keys, other_keys, gw):
    fooled = wechat_client(keys, gw)
    fooled._core._public_key = wechatpayv3.utils.load_public_key(
        other_keys.wechat.platform_public_key
    )
    h5(wechat_client(keys, gw), "WX000013")
    with pytest.raises(Exception, match="failed to verify the signature"):
        fooled.query(out_trade_no="WX000013")


def test_notifications_are_resent_on_wechats_schedule_freshly_signed(wx, gw, clock):
    h5(wx, "WX000014")
    gw.pay("WX000014")
    inbox = Inbox((500, b'{"code":"FAIL"}'))
    assert gw.deliver_due(send=inbox) == 1
    for wait in WECHAT_RETRY:
        clock.advance(seconds=wait.total_seconds() - 1)
        assert gw.deliver_due(send=inbox) == 0
        clock.advance(seconds=1)
        assert gw.deliver_due(send=inbox) == 1
    assert len(inbox.sent) == 16
    delivery = gw.notifications("WX000014")[0]
    assert delivery.gave_up and delivery.attempts == 16 and delivery.last_status == 500
    clock.advance(days=2)
    assert gw.deliver_due(send=inbox) == 0
    bodies = {body for _, _, body in inbox.sent}
    nonces = {headers["Wechatpay-Nonce"] for _, headers, _ in inbox.sent}
    assert len(bodies) == 1 and len(nonces) == 16
    assert all(wx.callback(headers, body) for _, headers, body in inbox.sent)


def test_a_send_that_raises_is_a_failed_attempt(wx, gw, clock):
    h5(wx, "WX000015")
    gw.pay("WX000015")

    def unreachable(url, headers, body):
        raise ConnectionRefusedError

    assert gw.deliver_due(send=unreachable) == 1
    clock.advance(seconds=15)
    assert gw.deliver_due(send=Inbox((200, b""))) == 1
    delivery = gw.notifications("WX000015")[0]
    assert delivery.attempts == 2 and delivery.delivered_at == clock()


def test_signature_probes(wx, gw, caplog):
    gw.probe_rate = 1.0
    h5(wx, "WX000016")
    gw.pay("WX000016")
    careful = Inbox(
        lambda url, headers, body: (200, b"") if wx.callback(headers, body) else (401, b"")
    )
    assert gw.deliver_due(send=careful) == 1
    assert len(careful.sent) == 2
    assert [p.accepted for p in gw.probes] == [False] and gw.probes[0].status == 401
    assert gw.notifications("WX000016")[0].delivered_at is not None

    h5(wx, "WX000017")
    gw.pay("WX000017")
    assert gw.deliver_due(send=Inbox((200, b""))) == 1
    assert gw.probes[1].accepted and gw.probes[1].out_trade_no == "WX000017"
    assert "wrong signature" in caplog.text


def test_lost_reply_takes_effect_drop_does_not(wx, gw):
    h5(wx, "WX000018")
    gw.pay("WX000018")
    gw.fault("wechat.refund", "lost_reply")
    with pytest.raises(requests.ConnectionError):
        refund(wx, "WX000018", "RF000018", 500)
    assert [r.out_refund_no for r in gw.refunds("WX000018")] == ["RF000018"]
    code, again = refund(wx, "WX000018", "RF000018", 500)
    assert (
        code == 200
        and len(gw.refunds("WX000018")) == 1
        and again["refund_id"] == gw.refunds("WX000018")[0].refund_id
    )

    gw.fault("wechat.create", "drop", times=2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            h5(wx, "WX000019")
    assert gw.trade("WX000019") is None
    assert h5(wx, "WX000019")[0] == 200

    gw.fault("wechat.query", "error")
    code, text = wx.query(out_trade_no="WX000019")
    assert (code, json.loads(text)) == (500, {"code": "SYSTEM_ERROR", "message": "系统错误"})
    assert wx.query(out_trade_no="WX000019")[0] == 200


def test_trade_bill(wx, gw, clock):
    h5(wx, "WX000020")
    gw.pay("WX000020")
    h5(wx, "WX000021", total=900)
    gw.pay("WX000021")
    refund(wx, "WX000021", "RF000021", 300, total=900)
    day = clock().astimezone(dt.timezone(dt.timedelta(hours=8))).date()
    code, text = wx.trade_bill(bill_date=day.isoformat())
    assert (code, json.loads(text)["code"]) == (400, "STATEMENT_CREATING")
    clock.advance(days=1)
    code, text = wx.trade_bill(bill_date=day.isoformat())
    assert code == 200
    answer = json.loads(text)
    assert answer["hash_type"] == "SHA1"
    code, data = wx.download_bill(answer["download_url"])
    assert code == 200 and data[:2] == b"\x1f\x8b"
    assert sha1_of(gzip.decompress(data)) == answer["hash_value"]
    assert gw.bill("wechat", day) == data
    rows = parse_wechat_bill(data)
    assert sorted((r.kind, r.out_trade_no, r.amount_fen) for r in rows) == [
        ("payment", "WX000020", 2500),
        ("payment", "WX000021", 900),
        ("refund", "WX000021", 300),
    ]
    code, text = wx.trade_bill(bill_date=(day - dt.timedelta(days=1)).isoformat())
    assert (code, json.loads(text)) == (
        400,
        {"code": "NO_STATEMENT_EXIST", "message": "账单文件不存在"},
    )
