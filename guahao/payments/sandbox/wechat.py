"""WeChat Pay API v3 as the sandbox speaks it: the paths, request signatures (Authorization),
signed responses, error shapes and encrypted notifications of the real API, so that a merchant
built on wechatpayv3 runs against it unchanged (in public-key mode: Wechatpay-Serial is the
platform public key id)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote

from guahao.payments.reconciliation.bills import sha1_of, write_wechat_bill
from guahao.payments.sandbox.records import (
    CLOSED,
    NOTPAY,
    WECHAT,
    Delivery,
    DuplicateTrade,
    RefundRefused,
    SandboxRefund,
    Trade,
    TradeNotFound,
    TradePaid,
)
from guahao.payments.sandbox.wire import (
    LOCAL_TZ,
    Reply,
    aes_gcm_encrypt,
    compact_json,
    parse_rfc3339,
    rfc3339,
    rsa_sign,
    rsa_verify,
)

if TYPE_CHECKING:
    from guahao.payments.sandbox.ledger import SandboxGateway

SCHEME = "WECHATPAY2-SHA256-RSA2048"
MAX_CLOCK_SKEW = 300  # seconds between the Authorization timestamp and the real time

TRADE_STATE_DESC = {
    "NOTPAY": "订单未支付",
    "SUCCESS": "支付成功",
    "CLOSED": "订单已关闭",
    "REFUND": "转入退款",
}
SYSTEM_ERRORS = {
    "SYSTEM_ERROR": (500, "系统错误"),
    "FREQUENCY_LIMITED": (429, "频率超限"),
    "BANK_ERROR": (500, "银行系统异常"),
}

_OUT_TRADE_NO = re.compile(r"^[A-Za-z0-9_\-|*]{6,32}$")
_OUT_REFUND_NO = re.compile(r"^[A-Za-z0-9_\-|*@]{1,64}$")
_NOTIFY_URL = re.compile(r"^https?://[^\s]{1,248}$")


# --- signed answers ----------------------------------------------------------------------------


def signature_headers(gateway: SandboxGateway, body: str) -> dict[str, str]:
    """Wechatpay-* headers over `body`: RSA-SHA256 of 'timestamp\\nnonce\\nbody\\n' with the
    platform private key, as WeChat signs answers and notifications."""
    keys = gateway.keys.wechat
    timestamp = str(int(gateway.now().timestamp()))
    nonce = secrets.token_hex(16).upper()
    return {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": nonce,
        "Wechatpay-Signature": rsa_sign(
            keys.platform_private_key, f"{timestamp}\n{nonce}\n{body}\n"
        ),
        "Wechatpay-Serial": keys.platform_public_key_id,
        "Wechatpay-Signature-Type": SCHEME,
    }


def json_reply(gateway: SandboxGateway, status: int, value: Any = None) -> Reply:
    text = "" if value is None else compact_json(value)
    headers = signature_headers(gateway, text)
    headers["Request-ID"] = secrets.token_hex(16).upper()
    if text:
        headers["Content-Type"] = "application/json; charset=utf-8"
    return Reply(status, headers, text.encode("utf-8"))


def error(gateway: SandboxGateway, status: int, code: str, message: str) -> Reply:
    return json_reply(gateway, status, {"code": code, "message": message})


def _param_error(gateway: SandboxGateway, message: str) -> Reply:
    return error(gateway, 400, "PARAM_ERROR", message)


# --- request signatures ------------------------------------------------------------------------


def authorization_ok(
    gateway: SandboxGateway, method: str, target: str, headers: Mapping[str, str], body: str
) -> bool:
    """The merchant's Authorization: its mchid and certificate serial, a timestamp within five
    minutes of the real time (the SDK stamps real time), and its RSA-SHA256 signature over
    'METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n'."""
    keys = gateway.keys.wechat
    scheme, _, rest = headers.get("authorization", "").strip().partition(" ")
    if scheme != SCHEME:
        return False
    fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    if fields.get("mchid") != keys.mchid:
        return False
    if fields.get("serial_no", "").upper() != keys.merchant_serial_no.upper():
        return False
    timestamp = fields.get("timestamp", "")
    if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > MAX_CLOCK_SKEW:
        return False
    nonce, signature = fields.get("nonce_str", ""), fields.get("signature", "")
    if not nonce or not signature:
        return False
    message = f"{method}\n{target}\n{timestamp}\n{nonce}\n{body}\n"
    return rsa_verify(keys.merchant_public_key, message, signature)


def pay_sign_ok(gateway: SandboxGateway, params: Mapping[str, str]) -> bool:
    """A JSAPI getBrandWCPayRequest's paySign, checked as the WeChat client checks it."""
    keys = gateway.keys.wechat
    app_id, stamp, nonce = (
        params.get("appId", ""),
        params.get("timeStamp", ""),
        params.get("nonceStr", ""),
    )
    package = params.get("package", "")
    if (
        app_id != keys.appid
        or params.get("signType") != "RSA"
        or not package.startswith("prepay_id=")
    ):
        return False
    message = f"{app_id}\n{stamp}\n{nonce}\n{package}\n"
    return rsa_verify(keys.merchant_public_key, message, params.get("paySign", ""))


# --- resources ---------------------------------------------------------------------------------


def transaction_object(gateway: SandboxGateway, trade: Trade) -> dict[str, Any]:
    """The transaction as the query answers it and TRANSACTION.SUCCESS carries it."""
    keys = gateway.keys.wechat
    obj: dict[str, Any] = {
        "appid": keys.appid,
        "mchid": keys.mchid,
        "out_trade_no": trade.out_trade_no,
        "trade_type": trade.trade_type,
        "trade_state": trade.state,
        "trade_state_desc": TRADE_STATE_DESC[trade.state],
        "attach": "",
        "amount": {"total": trade.amount_fen, "currency": "CNY", "payer_currency": "CNY"},
    }
    if trade.paid_at is not None:
        obj["transaction_id"] = trade.transaction_id
        obj["bank_type"] = "OTHERS"
        obj["success_time"] = rfc3339(trade.paid_at)
        obj["amount"]["payer_total"] = trade.amount_fen
    if trade.payer_id:
        obj["payer"] = {"openid": trade.payer_id}
    return obj


def refund_object(refund: SandboxRefund, trade: Trade) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "refund_id": refund.refund_id,
        "out_refund_no": refund.out_refund_no,
        "transaction_id": trade.transaction_id,
        "out_trade_no": trade.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": rfc3339(refund.requested_at),
        "status": refund.state,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": trade.amount_fen,
            "refund": refund.amount_fen,
            "payer_total": trade.amount_fen,
            "payer_refund": refund.amount_fen,
            "settlement_total": trade.amount_fen,
            "settlement_refund": refund.amount_fen,
            "discount_refund": 0,
            "currency": "CNY",
        },
        "promotion_detail": [],
    }
    if refund.succeeded_at is not None:
        obj["success_time"] = rfc3339(refund.succeeded_at)
    return obj


# --- notifications -----------------------------------------------------------------------------


def _notification(
    event: str, kind: str, summary: str, resource: dict, at: dt.datetime, apiv3_key: str
) -> tuple[str, str]:
    nonce, ciphertext = aes_gcm_encrypt(apiv3_key, compact_json(resource), kind)
    notification_id = str(uuid.uuid4())
    body = {
        "id": notification_id,
        "create_time": rfc3339(at),
        "resource_type": "encrypt-resource",
        "event_type": event,
        "summary": summary,
        "resource": {
            "original_type": kind,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": kind,
            "nonce": nonce,
        },
    }
    return notification_id, compact_json(body)


def transaction_notification(
    gateway: SandboxGateway, trade: Trade, at: dt.datetime
) -> tuple[str, str]:
    """(id, body) of TRANSACTION.SUCCESS: the body is fixed once; re-sends only re-sign it."""
    resource = transaction_object(gateway, trade)
    return _notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        "支付成功",
        resource,
        at,
        gateway.keys.wechat.apiv3_key,
    )


def refund_notification(
    gateway: SandboxGateway, trade: Trade, refund: SandboxRefund, at: dt.datetime
) -> tuple[str, str]:
    resource = {
        "mchid": gateway.keys.wechat.mchid,
        "out_trade_no": trade.out_trade_no,
        "transaction_id": trade.transaction_id,
        "out_refund_no": refund.out_refund_no,
        "refund_id": refund.refund_id,
        "refund_status": "SUCCESS",
        "success_time": rfc3339(refund.succeeded_at or at),
        "amount": {
            "total": trade.amount_fen,
            "refund": refund.amount_fen,
            "payer_total": trade.amount_fen,
            "payer_refund": refund.amount_fen,
        },
        "user_received_account": "支付用户零钱",
    }
    return _notification(
        "REFUND.SUCCESS", "refund", "退款成功", resource, at, gateway.keys.wechat.apiv3_key
    )


def signed_notification(
    gateway: SandboxGateway, delivery: Delivery
) -> tuple[str, dict[str, str], bytes]:
    headers = signature_headers(gateway, delivery.body)
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = "Mozilla/4.0"
    return delivery.url, headers, delivery.body.encode("utf-8")


# --- the API -----------------------------------------------------------------------------------

Handler = Callable[["SandboxGateway", str, dict[str, str], Any], Reply]


def handle(
    gateway: SandboxGateway, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> Reply:
    """Answer one request under /v3/."""
    path, _, raw_query = target.partition("?")
    query = {k: v[0] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
    route = _route(method, path)
    if route is None:
        return error(gateway, 404, "NOT_FOUND", "请求的资源不存在")
    operation, handler, argument = route
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _param_error(gateway, "请求体不是 UTF-8 编码")
    if not authorization_ok(gateway, method, target, headers, text):
        return error(gateway, 401, "SIGN_ERROR", "签名错误")
    fault = gateway.take_fault(operation) if operation else None
    if fault is not None:
        kind, code = fault
        if kind == "drop":
            return Reply.lost()
        if kind == "error":
            status, message = SYSTEM_ERRORS.get(code, (500, "系统错误"))
            return error(gateway, status, code, message)
    data: Any = None
    if method == "POST":
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            return _param_error(gateway, "请求体不是合法的 JSON")
        if not isinstance(data, dict):
            return _param_error(gateway, "请求体不是 JSON 对象")
    reply = handler(gateway, argument, query, data)
    return Reply.lost() if fault is not None and fault[0] == "lost_reply" else reply


def _route(method: str, path: str) -> tuple[str, Handler, str] | None:
    if method == "POST":
        if match := re.fullmatch(r"/v3/pay/transactions/(jsapi|h5)", path):
            return "wechat.create", _create, match.group(1)
        if match := re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)/close", path):
            return "wechat.close", _close, unquote(match.group(1))
        if path == "/v3/refund/domestic/refunds":
            return "wechat.refund", _refund, ""
    elif method == "GET":
        if match := re.fullmatch(r"/v3/pay/transactions/out-trade-no/([^/]+)", path):
            return "wechat.query", _query, unquote(match.group(1))
        if match := re.fullmatch(r"/v3/pay/transactions/id/([^/]+)", path):
            return "wechat.query", _query_by_id, unquote(match.group(1))
        if match := re.fullmatch(r"/v3/refund/domestic/refunds/([^/]+)", path):
            return "wechat.refund_query", _refund_query, unquote(match.group(1))
        if path == "/v3/bill/tradebill":
            return "wechat.bill", _trade_bill, ""
        if path == "/v3/billdownload/file":
            return "", _download, ""
    return None


def _create(gateway: SandboxGateway, kind: str, query: dict[str, str], data: dict) -> Reply:

    keys = gateway.keys.wechat
    if data.get("appid") != keys.appid or data.get("mchid") != keys.mchid:
        return error(gateway, 400, "APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")
    description = data.get("description")
    if not isinstance(description, str) or not 1 <= len(description) <= 127:
        return _param_error(gateway, "description 必须是 1 到 127 个字符")
    out_trade_no = data.get("out_trade_no")
    if not isinstance(out_trade_no, str) or not _OUT_TRADE_NO.match(out_trade_no):
        return _param_error(gateway, "out_trade_no 须为 6-32 位数字、大小写字母或 _-|*")
    notify_url = data.get("notify_url")
    if not isinstance(notify_url, str) or not _NOTIFY_URL.match(notify_url):
        return _param_error(gateway, "notify_url 格式不正确")
    amount = data.get("amount")
    total = amount.get("total") if isinstance(amount, dict) else None
    if type(total) is not int or total <= 0:
        return _param_error(gateway, "amount.total 须为正整数（单位：分）")
    if amount.get("currency", "CNY") != "CNY":
        return _param_error(gateway, "amount.currency 仅支持 CNY")
    expires_at = None
    if "time_expire" in data:
        expires_at = parse_rfc3339(data["time_expire"])
        if expires_at is None:
            return _param_error(gateway, "time_expire 须为 RFC 3339 格式")
    payer_id = ""
    if kind == "jsapi":
        payer = data.get("payer")
        payer_id = payer.get("openid") if isinstance(payer, dict) else None
        if not isinstance(payer_id, str) or not payer_id:
            return _param_error(gateway, "payer.openid 不能为空")
    else:
        scene = data.get("scene_info")
        if not isinstance(scene, dict) or not scene.get("payer_client_ip"):
            return _param_error(gateway, "scene_info.payer_client_ip 不能为空")
    if (
        expires_at is not None
        and expires_at <= gateway.now()
        and gateway.trade(out_trade_no) is None
    ):
        return _param_error(gateway, "time_expire 早于当前时间")
    content = {k: v for k, v in data.items() if k != "scene_info"}
    try:
        trade = gateway.open_trade(
            WECHAT,
            out_trade_no,
            amount_fen=total,
            description=description,
            notify_url=notify_url,
            trade_type="JSAPI" if kind == "jsapi" else "MWEB",
            fingerprint=json.dumps(content, sort_keys=True),
            expires_at=expires_at,
            payer_id=payer_id,
        )
    except DuplicateTrade as exc:
        if exc.trade.state not in (NOTPAY, CLOSED):
            return error(gateway, 400, "ORDERPAID", "该订单已支付")
        return error(gateway, 400, "INVALID_REQUEST", "商户订单号重复")
    if trade.state == CLOSED:
        return error(gateway, 400, "ORDER_CLOSED", "订单已关闭")
    if trade.state != NOTPAY:
        return error(gateway, 400, "ORDERPAID", "该订单已支付")
    if kind == "jsapi":
        return json_reply(gateway, 200, {"prepay_id": trade.prepay_id})
    h5_url = (
        f"{gateway.url}/cashier/wechat/{quote(out_trade_no, safe='')}?prepay_id={trade.prepay_id}"
    )
    return json_reply(gateway, 200, {"h5_url": h5_url})


def _check_mchid(gateway: SandboxGateway, mchid: object) -> Reply | None:
    if not mchid:
        return _param_error(gateway, "mchid 不能为空")
    if mchid != gateway.keys.wechat.mchid:
        return _param_error(gateway, "mchid 与请求头中的商户号不一致")
    return None


def _query(gateway: SandboxGateway, out_trade_no: str, query: dict[str, str], data: None) -> Reply:
    if refused := _check_mchid(gateway, query.get("mchid")):
        return refused
    trade = gateway.trade(out_trade_no)
    if trade is None or trade.provider != WECHAT:
        return error(gateway, 404, "ORDER_NOT_EXIST", "订单不存在")
    return json_reply(gateway, 200, transaction_object(gateway, trade))


def _query_by_id(
    gateway: SandboxGateway, transaction_id: str, query: dict[str, str], data: None
) -> Reply:
    trade = gateway.trade_by_transaction(transaction_id)
    number = trade.out_trade_no if trade is not None and trade.provider == WECHAT else "\x00"
    return _query(gateway, number, query, data)


def _close(gateway: SandboxGateway, out_trade_no: str, query: dict[str, str], data: dict) -> Reply:

    if refused := _check_mchid(gateway, data.get("mchid")):
        return refused
    try:
        gateway.close_trade(WECHAT, out_trade_no)
    except TradeNotFound:
        return error(gateway, 404, "ORDER_NOT_EXIST", "订单不存在")
    except TradePaid:
        return error(gateway, 400, "ORDERPAID", "订单已支付")
    return json_reply(gateway, 204)


def _refund(gateway: SandboxGateway, argument: str, query: dict[str, str], data: dict) -> Reply:

    out_refund_no = data.get("out_refund_no")
    if not isinstance(out_refund_no, str) or not _OUT_REFUND_NO.match(out_refund_no):
        return _param_error(gateway, "out_refund_no 须为 1-64 位数字、大小写字母或 _-|*@")
    out_trade_no, transaction_id = data.get("out_trade_no") or "", data.get("transaction_id") or ""
    if not isinstance(out_trade_no, str) or not isinstance(transaction_id, str):
        return _param_error(gateway, "out_trade_no / transaction_id 须为字符串")
    if not out_trade_no and not transaction_id:
        return _param_error(gateway, "out_trade_no 与 transaction_id 不能同时为空")
    amount = data.get("amount")
    if not isinstance(amount, dict):
        return _param_error(gateway, "amount 不能为空")
    refund_fen, total_fen = amount.get("refund"), amount.get("total")
    if (
        type(refund_fen) is not int
        or refund_fen <= 0
        or type(total_fen) is not int
        or total_fen <= 0
    ):
        return _param_error(gateway, "amount.refund 与 amount.total 须为正整数（单位：分）")
    if amount.get("currency") != "CNY":
        return _param_error(gateway, "amount.currency 须为 CNY")
    notify_url = data.get("notify_url") or ""
    if notify_url and (not isinstance(notify_url, str) or not _NOTIFY_URL.match(notify_url)):
        return _param_error(gateway, "notify_url 格式不正确")
    reason = data.get("reason") or ""
    if not isinstance(reason, str) or len(reason) > 80:
        return _param_error(gateway, "reason 不能超过 80 个字符")
    try:
        refund, trade, _created = gateway.refund(
            WECHAT,
            out_refund_no=out_refund_no,
            amount_fen=refund_fen,
            out_trade_no=out_trade_no,
            transaction_id=transaction_id,
            total_fen=total_fen,
            reason=reason,
            notify_url=notify_url,
        )
    except TradeNotFound:
        return error(gateway, 404, "RESOURCE_NOT_EXISTS", "订单不存在")
    except RefundRefused as exc:
        return error(gateway, 400, *_REFUND_REFUSALS[exc.reason])
    return json_reply(gateway, 200, refund_object(refund, trade))


_REFUND_REFUSALS = {
    "not_paid": ("INVALID_REQUEST", "订单未支付"),
    "exceeds": ("INVALID_REQUEST", "申请退款金额超过订单可退金额"),
    "total_mismatch": ("PARAM_ERROR", "订单金额与原订单金额不一致"),
    "number_taken": ("INVALID_REQUEST", "商户退款单号已用于其他订单"),
}


def _refund_query(
    gateway: SandboxGateway, out_refund_no: str, query: dict[str, str], data: None
) -> Reply:
    refund = gateway.find_refund(WECHAT, out_refund_no)
    trade = gateway.trade(refund.out_trade_no) if refund is not None else None
    if refund is None or trade is None:
        return error(gateway, 404, "RESOURCE_NOT_EXISTS", "退款单不存在")
    return json_reply(gateway, 200, refund_object(refund, trade))


def _trade_bill(gateway: SandboxGateway, argument: str, query: dict[str, str], data: None) -> Reply:
    try:
        day = dt.date.fromisoformat(query.get("bill_date", ""))
    except ValueError:
        return _param_error(gateway, "bill_date 须为 YYYY-MM-DD 格式")
    bill_type = query.get("bill_type", "ALL")
    if bill_type not in ("ALL", "SUCCESS", "REFUND"):
        return _param_error(gateway, "bill_type 须为 ALL、SUCCESS 或 REFUND")
    tar_type = query.get("tar_type", "")
    if tar_type not in ("", "GZIP"):
        return _param_error(gateway, "tar_type 仅支持 GZIP")
    if day >= gateway.now().astimezone(LOCAL_TZ).date():
        return error(gateway, 400, "STATEMENT_CREATING", "账单生成中，请次日再试")
    keys = gateway.keys.wechat
    rows = gateway.bill_rows(
        WECHAT,
        day,
        payments=bill_type in ("ALL", "SUCCESS"),
        refunds=bill_type in ("ALL", "REFUND"),
    )
    if not rows:
        return error(gateway, 400, "NO_STATEMENT_EXIST", "账单文件不存在")
    plain = write_wechat_bill(rows, appid=keys.appid, mchid=keys.mchid, gzipped=False)
    served = gzip.compress(plain, mtime=0) if tar_type == "GZIP" else plain
    token = gateway.issue_bill_file(WECHAT, served)
    return json_reply(
        gateway,
        200,
        {
            "hash_type": "SHA1",
            "hash_value": sha1_of(plain),
            "download_url": f"{gateway.url}/v3/billdownload/file?token={token}",
        },
    )


def _download(gateway: SandboxGateway, argument: str, query: dict[str, str], data: None) -> Reply:
    content = gateway.bill_file(WECHAT, query.get("token", ""))
    if content is None:
        return _param_error(gateway, "token 无效或已过期")
    return Reply(200, {"Content-Type": "application/octet-stream"}, content)
