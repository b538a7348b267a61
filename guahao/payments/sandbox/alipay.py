"""Alipay's open platform gateway (gateway.do) as the sandbox speaks it: RSA2-signed requests,
responses signed over the exact JSON text of their inner object, the real codes and sub_codes,
the mobile-web cashier (alipay.trade.wap.pay), form-encoded signed notifications and the bill
download, so that a merchant built on python-alipay-sdk runs against it unchanged."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from guahao.payments.reconciliation.bills import write_alipay_bill
from guahao.payments.sandbox import cashier
from guahao.payments.sandbox.records import (
    ALIPAY,
    NOTPAY,
    Delivery,
    DuplicateTrade,
    RefundRefused,
    SandboxRefund,
    Trade,
    TradeClosed,
    TradeNotFound,
    TradePaid,
)
from guahao.payments.sandbox.wire import (
    LOCAL_TZ,
    Reply,
    alipay_time,
    compact_json,
    fen_of_yuan,
    parse_alipay_time,
    rsa_sign,
    rsa_verify,
    wrong_signature,
    yuan,
)

if TYPE_CHECKING:
    from guahao.payments.sandbox.ledger import SandboxGateway

PAGE_METHODS = {
    "alipay.trade.wap.pay": "QUICK_WAP_PAY",
    "alipay.trade.page.pay": "FAST_INSTANT_TRADE_PAY",
}
BILL_METHOD = "alipay.data.dataservice.bill.downloadurl.query"
BUYER_LOGON_ID = "sdb***@sandbox.com"  # Alipay shows the buyer's account masked

_OUT_TRADE_NO = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_TIMEOUT = re.compile(r"^(\d{1,4})([mhd])$")


# --- signatures --------------------------------------------------------------------------------


def signing_string(params: Mapping[str, str], *, exclude: tuple[str, ...]) -> str:
    """Alipay's string to sign: the sorted 'k=v' pairs, unquoted, joined by '&', without the
    excluded keys and the empty values."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in exclude and v != "")


def sign_params(
    gateway: SandboxGateway, params: dict[str, str], *, forged: bool = False
) -> dict[str, str]:
    """`params` with sign_type and sign added, signed as Alipay signs what it sends the merchant
    (notifications, the synchronous return): everything but sign and sign_type."""
    signed = {k: v for k, v in params.items() if v != ""}  # empty ones are not sent at all
    message = signing_string(signed, exclude=("sign", "sign_type"))
    key = gateway.keys.alipay.alipay_private_key
    signed["sign_type"] = "RSA2"
    signed["sign"] = wrong_signature(key, message) if forged else rsa_sign(key, message)
    return signed


def response(gateway: SandboxGateway, method: str, inner: dict[str, Any]) -> Reply:
    """`{"<method>_response": {...}, "sign": "..."}` with the signature over the inner object's
    exact text, embedded as is (the SDK cuts that text out of the answer and verifies it)."""
    key = method.replace(".", "_") + "_response" if method else "error_response"
    text = compact_json(inner)
    sign = rsa_sign(gateway.keys.alipay.alipay_private_key, text)
    body = '{"' + key + '":' + text + ',"sign":"' + sign + '"}'
    return Reply(200, {"Content-Type": "application/json;charset=utf-8"}, body.encode("utf-8"))


def success(**fields: Any) -> dict[str, Any]:
    return {"code": "10000", "msg": "Success", **fields}


def business_failure(sub_code: str, sub_msg: str) -> dict[str, Any]:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}


def invalid_arguments(sub_code: str, sub_msg: str) -> dict[str, Any]:
    return {"code": "40002", "msg": "Invalid Arguments", "sub_code": sub_code, "sub_msg": sub_msg}


def missing_arguments(sub_code: str, sub_msg: str) -> dict[str, Any]:
    return {
        "code": "40001",
        "msg": "Missing Required Arguments",
        "sub_code": sub_code,
        "sub_msg": sub_msg,
    }


def system_error(code: str) -> dict[str, Any]:
    sub_code = code if "." in code else f"aop.{code}"
    return {
        "code": "20000",
        "msg": "Service Currently Unavailable",
        "sub_code": sub_code,
        "sub_msg": "系统繁忙",
    }


# --- requests ----------------------------------------------------------------------------------


def request_params(target: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    """The query parameters, and a POSTed form's, decoded as the charset says (UTF-8 here)."""
    _, _, query = target.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="replace"))
    if body and "x-www-form-urlencoded" in headers.get("content-type", ""):
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def check_request(
    gateway: SandboxGateway, params: Mapping[str, str]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(refusal or None, biz_content). The refusal is the inner object Alipay answers."""
    method = params.get("method", "")
    if params.get("app_id") != gateway.keys.alipay.app_id:
        return invalid_arguments("isv.invalid-app-id", "无效的AppID参数"), {}
    if not params.get("sign"):
        return missing_arguments("isv.missing-signature", "缺少签名参数"), {}
    if params.get("sign_type") != "RSA2":
        return invalid_arguments("isv.invalid-signature-type", "无效签名类型"), {}
    if parse_alipay_time(params.get("timestamp", "")) is None:
        return invalid_arguments("isv.invalid-timestamp", "非法的时间戳参数"), {}
    message = signing_string(params, exclude=("sign",))
    if not rsa_verify(gateway.keys.alipay.app_public_key, message, params["sign"]):
        return invalid_arguments("isv.invalid-signature", "验签出错"), {}
    try:
        biz = json.loads(params.get("biz_content") or "{}")
    except ValueError:
        biz = None
    if not isinstance(biz, dict):
        return invalid_arguments("isv.invalid-parameter", "biz_content 不是合法的 JSON 对象"), {}
    if method not in PAGE_METHODS and method not in API:
        return invalid_arguments("isv.invalid-method", "不存在的方法名"), {}
    return None, biz


def handle(
    gateway: SandboxGateway, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> Reply:
    """Answer one request to gateway.do: the cashier page for the pay methods the patient's
    browser opens, a signed JSON answer for the API methods the merchant's server calls."""
    params = request_params(target, headers, body)
    api_method = params.get("method", "")
    if api_method in PAGE_METHODS:
        return _open_cashier(gateway, api_method, params)
    if not api_method:
        return response(gateway, "", missing_arguments("isv.missing-method", "缺少方法名参数"))
    if api_method not in API:
        return response(gateway, "", invalid_arguments("isv.invalid-method", "不存在的方法名"))
    refusal, biz = check_request(gateway, params)
    if refusal is not None:
        return response(gateway, api_method, refusal)
    operation, handler = API[api_method]
    fault = gateway.take_fault(operation)
    if fault is not None:
        kind, code = fault
        if kind == "drop":
            return Reply.lost()
        if kind == "error":
            return response(gateway, api_method, system_error(code))
    reply = response(gateway, api_method, handler(gateway, biz))
    return Reply.lost() if fault is not None and fault[0] == "lost_reply" else reply


# --- the cashier (alipay.trade.wap.pay / page.pay) ---------------------------------------------


def _open_cashier(gateway: SandboxGateway, method: str, params: Mapping[str, str]) -> Reply:
    refusal, biz = check_request(gateway, params)
    if refusal is not None:
        return cashier.alipay_error(refusal["sub_code"], refusal["sub_msg"])
    out_trade_no = biz.get("out_trade_no")
    subject = biz.get("subject")
    amount_fen = fen_of_yuan(biz.get("total_amount"))
    if not isinstance(out_trade_no, str) or not _OUT_TRADE_NO.match(out_trade_no):
        return cashier.alipay_error("ACQ.INVALID_PARAMETER", "商户订单号格式不正确")
    if not isinstance(subject, str) or not 1 <= len(subject) <= 256:
        return cashier.alipay_error("ACQ.INVALID_PARAMETER", "订单标题不能为空")
    if amount_fen is None or amount_fen > 100_000_000_00:
        return cashier.alipay_error(
            "ACQ.INVALID_PARAMETER", "订单金额须在 0.01 至 100000000.00 元之间"
        )
    if biz.get("product_code", PAGE_METHODS[method]) != PAGE_METHODS[method]:
        return cashier.alipay_error("ACQ.INVALID_PARAMETER", "产品码不正确")
    expires_at = None
    if biz.get("time_expire"):
        expires_at = parse_alipay_time(biz["time_expire"])
        if expires_at is None:
            return cashier.alipay_error("ACQ.INVALID_PARAMETER", "绝对超时时间格式不正确")
    elif biz.get("timeout_express"):
        match = _TIMEOUT.match(str(biz["timeout_express"]))
        if match is None:
            return cashier.alipay_error("ACQ.INVALID_PARAMETER", "超时时间格式不正确")
        unit = {"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
        expires_at = gateway.now() + dt.timedelta(**{unit: int(match.group(1))})
    fingerprint = compact_json({"method": method, "subject": subject, "total_amount": amount_fen})
    try:
        trade = gateway.open_trade(
            ALIPAY,
            out_trade_no,
            amount_fen=amount_fen,
            description=subject,
            notify_url=params.get("notify_url", ""),
            return_url=params.get("return_url", ""),
            quit_url=str(biz.get("quit_url") or ""),
            trade_type=PAGE_METHODS[method],
            fingerprint=fingerprint,
            expires_at=expires_at,
        )
    except DuplicateTrade:
        return cashier.alipay_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改")
    return cashier.alipay_cashier(trade)


def return_params(gateway: SandboxGateway, trade: Trade) -> dict[str, str]:
    """The synchronous return after paying (appended to return_url), signed like a notification."""
    keys = gateway.keys.alipay
    method = (
        "alipay.trade.page.pay"
        if trade.trade_type == "FAST_INSTANT_TRADE_PAY"
        else "alipay.trade.wap.pay"
    )
    params = {
        "charset": "utf-8",
        "out_trade_no": trade.out_trade_no,
        "method": method + ".return",
        "total_amount": yuan(trade.amount_fen),
        "trade_no": trade.transaction_id,
        "auth_app_id": keys.app_id,
        "version": "1.0",
        "app_id": keys.app_id,
        "seller_id": keys.seller_id,
        "timestamp": alipay_time(gateway.now()),
    }
    return sign_params(gateway, params)


def return_url_of(gateway: SandboxGateway, trade: Trade) -> str:
    joiner = "&" if "?" in trade.return_url else "?"
    return trade.return_url + joiner + urlencode(return_params(gateway, trade), quote_via=quote)


def handle_cashier(
    gateway: SandboxGateway, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> Reply:
    """/cashier/alipay/<out_trade_no>: the cashier again (GET) or the patient's button (POST).
    Paid: back to return_url with Alipay's signed synchronous return parameters. Cancelled: to
    quit_url, or return_url without them."""
    number = unquote(target.partition("?")[0].removeprefix("/cashier/alipay/"))
    trade = gateway.trade(number)
    if trade is None or trade.provider != ALIPAY:
        return cashier.result("订单不存在", "未找到该支付订单", status=404, theme=ALIPAY)
    if method == "GET":
        return cashier.alipay_cashier(trade)
    if method != "POST":
        return cashier.result("请求方式不正确", status=405, theme=ALIPAY)
    action = cashier.form_action(headers, body)
    if action == "pay" and trade.state == NOTPAY:
        try:
            trade = gateway.pay(number)
        except TradeClosed:
            return cashier.result(
                "订单已关闭", "该订单已关闭，无法继续支付", status=409, theme=ALIPAY
            )
        if cashier.safe_redirect(trade.return_url):
            return cashier.see_other(return_url_of(gateway, trade))
        return cashier.result("支付成功", "您已完成支付，请返回商户查看", theme=ALIPAY)
    cancelled_to = cashier.safe_redirect(trade.quit_url) or cashier.safe_redirect(trade.return_url)
    return cashier.act(gateway, trade, action, "", cancelled_to)


# --- notifications -----------------------------------------------------------------------------


def notification_params(
    gateway: SandboxGateway, trade: Trade, refund: SandboxRefund | None, notify_id: str
) -> dict[str, str]:
    """A trade_status_sync notification's parameters but notify_time and the signature (added at
    each sending). A refund's carries refund_fee (refunded so far), gmt_refund and out_biz_no."""
    keys = gateway.keys.alipay
    paid = yuan(trade.amount_fen)
    params = {
        "notify_type": "trade_status_sync",
        "notify_id": notify_id,
        "app_id": keys.app_id,
        "auth_app_id": keys.app_id,
        "charset": "utf-8",
        "version": "1.0",
        "trade_no": trade.transaction_id,
        "out_trade_no": trade.out_trade_no,
        "trade_status": trade.alipay_status,
        "total_amount": paid,
        "receipt_amount": paid,
        "invoice_amount": paid,
        "buyer_pay_amount": paid,
        "point_amount": "0.00",
        "seller_id": keys.seller_id,
        "buyer_id": trade.payer_id,
        "buyer_logon_id": BUYER_LOGON_ID,
        "subject": trade.description,
        "gmt_create": alipay_time(trade.created_at),
        "gmt_payment": alipay_time(trade.paid_at or trade.created_at),
        "fund_bill_list": compact_json([{"amount": paid, "fundChannel": "ALIPAYACCOUNT"}]),
    }
    if refund is not None:
        at = refund.succeeded_at or refund.requested_at
        params["refund_fee"] = yuan(trade.refunded_fen)
        params["gmt_refund"] = (
            at.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d}"
        )
        params["out_biz_no"] = refund.out_refund_no
        if trade.alipay_status == "TRADE_CLOSED":
            params["gmt_close"] = alipay_time(at)
    return params


def signed_notification(
    gateway: SandboxGateway, delivery: Delivery, *, forged: bool = False
) -> tuple[str, dict[str, str], bytes]:
    params = dict(delivery.params)
    params["notify_time"] = alipay_time(gateway.now())
    body = urlencode(sign_params(gateway, params, forged=forged)).encode("utf-8")
    return delivery.url, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, body


# --- the API methods ---------------------------------------------------------------------------


def _find(gateway: SandboxGateway, biz: Mapping[str, Any]) -> Trade | None:
    out_trade_no, trade_no = biz.get("out_trade_no"), biz.get("trade_no")
    trade = None
    if isinstance(out_trade_no, str) and out_trade_no:
        trade = gateway.trade(out_trade_no)
    elif isinstance(trade_no, str) and trade_no:
        trade = gateway.trade_by_transaction(trade_no)
    return trade if trade is not None and trade.provider == ALIPAY else None


_NOT_EXIST = ("ACQ.TRADE_NOT_EXIST", "交易不存在")
_STATUS_ERROR = ("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")


def _query(gateway: SandboxGateway, biz: dict[str, Any]) -> dict[str, Any]:
    trade = _find(gateway, biz)
    if trade is None:
        return business_failure(*_NOT_EXIST)
    paid = trade.paid_at is not None
    answer = success(
        trade_no=trade.transaction_id,
        out_trade_no=trade.out_trade_no,
        trade_status=trade.alipay_status,
        total_amount=yuan(trade.amount_fen),
        buyer_pay_amount=yuan(trade.amount_fen) if paid else "0.00",
        receipt_amount=yuan(trade.amount_fen) if paid else "0.00",
        invoice_amount=yuan(trade.amount_fen) if paid else "0.00",
        point_amount="0.00",
    )
    if paid:
        answer.update(
            buyer_logon_id=BUYER_LOGON_ID,
            buyer_user_id=trade.payer_id,
            send_pay_date=alipay_time(trade.paid_at),
        )
    return answer


def _close(gateway: SandboxGateway, biz: dict[str, Any]) -> dict[str, Any]:
    number = biz.get("out_trade_no")
    if not (isinstance(number, str) and number):
        trade = _find(gateway, biz)
        if trade is None:
            return business_failure(*_NOT_EXIST)
        number = trade.out_trade_no
    try:
        trade, closed_now = gateway.close_trade(ALIPAY, number)
    except TradeNotFound:
        return business_failure(*_NOT_EXIST)
    except TradePaid:
        return business_failure(*_STATUS_ERROR)
    if not closed_now:
        return business_failure(*_STATUS_ERROR)
    return success(trade_no=trade.transaction_id, out_trade_no=trade.out_trade_no)


def _refund(gateway: SandboxGateway, biz: dict[str, Any]) -> dict[str, Any]:
    amount_fen = fen_of_yuan(biz.get("refund_amount"))
    if amount_fen is None:
        return business_failure("ACQ.INVALID_PARAMETER", "参数无效：refund_amount")
    trade = _find(gateway, biz)
    if trade is None:
        return business_failure(*_NOT_EXIST)
    out_request_no = str(biz.get("out_request_no") or trade.out_trade_no)
    try:
        refund, trade, created = gateway.refund(
            ALIPAY,
            out_refund_no=out_request_no,
            amount_fen=amount_fen,
            out_trade_no=trade.out_trade_no,
            reason=str(biz.get("refund_reason") or ""),
        )
    except TradeNotFound:
        return business_failure(*_NOT_EXIST)
    except RefundRefused as exc:
        if exc.reason == "exceeds":
            return business_failure("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        return business_failure(*_STATUS_ERROR)
    return success(
        trade_no=trade.transaction_id,
        out_trade_no=trade.out_trade_no,
        buyer_logon_id=BUYER_LOGON_ID,
        buyer_user_id=trade.payer_id,
        fund_change="Y" if created else "N",
        refund_fee=yuan(trade.refunded_fen),
        send_back_fee=yuan(refund.amount_fen) if created else "0.00",
        gmt_refund_pay=alipay_time(refund.succeeded_at or refund.requested_at),
    )


def _refund_query(gateway: SandboxGateway, biz: dict[str, Any]) -> dict[str, Any]:
    trade = _find(gateway, biz)
    if trade is None:
        return business_failure(*_NOT_EXIST)
    out_request_no = biz.get("out_request_no")
    if not isinstance(out_request_no, str) or not out_request_no:
        return business_failure("ACQ.INVALID_PARAMETER", "参数无效：out_request_no")
    answer = success(
        trade_no=trade.transaction_id,
        out_trade_no=trade.out_trade_no,
        out_request_no=out_request_no,
    )
    refund = gateway.find_refund(ALIPAY, out_request_no, trade.out_trade_no)
    if refund is not None:  # Alipay answers 10000 without refund fields when there is none
        answer.update(
            total_amount=yuan(trade.amount_fen),
            refund_amount=yuan(refund.amount_fen),
            refund_status="REFUND_SUCCESS",
            gmt_refund_pay=alipay_time(refund.succeeded_at or refund.requested_at),
        )
    return answer


def _bill_url(gateway: SandboxGateway, biz: dict[str, Any]) -> dict[str, Any]:
    if biz.get("bill_type") not in ("trade", "signcustomer"):
        return business_failure("isv.invalid-parameter", "参数无效：bill_type")
    try:
        day = dt.date.fromisoformat(str(biz.get("bill_date", "")))
    except ValueError:
        return business_failure("isv.invalid-parameter", "参数无效：bill_date")
    rows = gateway.bill_rows(ALIPAY, day) if day < gateway.now().astimezone(LOCAL_TZ).date() else []
    if not rows:
        return business_failure("isp.bill_not_exist", "账单不存在")
    data = write_alipay_bill(rows, day=day, account=gateway.keys.alipay.seller_id)
    token = gateway.issue_bill_file(ALIPAY, data)
    return success(bill_download_url=f"{gateway.url}/alipay/bill/{token}")


def bill_download(gateway: SandboxGateway, token: str) -> Reply:
    """The bill file itself: no signature, as Alipay's download link is a bare URL."""
    data = gateway.bill_file(ALIPAY, token)
    if data is None:
        return Reply(
            404, {"Content-Type": "text/plain; charset=utf-8"}, "账单不存在或链接已失效".encode()
        )
    return Reply(
        200,
        {
            "Content-Type": "application/oct-stream",
            "Content-Disposition": 'attachment; filename="bill.csv.zip"',
        },
        data,
    )


API: dict[str, tuple[str, Callable[[SandboxGateway, dict[str, Any]], dict[str, Any]]]] = {
    "alipay.trade.query": ("alipay.trade.query", _query),
    "alipay.trade.close": ("alipay.trade.close", _close),
    "alipay.trade.refund": ("alipay.trade.refund", _refund),
    "alipay.trade.fastpay.refund.query": ("alipay.trade.fastpay.refund.query", _refund_query),
    BILL_METHOD: ("alipay.bill", _bill_url),
}
