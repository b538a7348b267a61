"""WeChat Pay API v3 for one merchant, on the `wechatpayv3` SDK: H5 pay in a phone browser, JSAPI
inside WeChat (once the account has an openid), query, close, refund, refund query, notifications
and the daily trade bill.

The SDK client is built lazily and in public-key mode (the WeChat Pay public key and its id from the
merchant platform), so building it never calls the network. Its debug logging prints decrypted
payloads: it gets no logger. Its callback() checks the signature and decrypts, but not the
timestamp's age nor replays, and it would download certificates for an unknown serial: both are
checked here first."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import time
from urllib.parse import quote

import requests
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.utils import build_authorization

from guahao import metrics
from guahao.payments.providers import Merchant
from guahao.payments.providers.base import (
    BadNotification,
    BillFile,
    MismatchedNotification,
    Notification,
    OrderRequest,
    PayParams,
    ProviderRefused,
    ProviderTimeout,
    RefundStatus,
    TradeStatus,
    provider_time,
)
from guahao.payments.providers.replay import check_timestamp, remember_nonce

log = logging.getLogger("guahao.payments.wechatpay")

NAME = "wechatpay"
SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
# (connect, read) seconds: a patient is waiting on create and query.
TIMEOUT = (3, 10)
_TRADE_STATES = {
    "SUCCESS": "SUCCESS",
    "REFUND": "SUCCESS",  # paid, then (partly) refunded: still money received
    "NOTPAY": "NOTPAY",
    "USERPAYING": "NOTPAY",
    "CLOSED": "CLOSED",
    "REVOKED": "CLOSED",
    "PAYERROR": "CLOSED",
}
_REFUND_STATES = {
    "SUCCESS": "SUCCESS",
    "PROCESSING": "PROCESSING",
    "ABNORMAL": "ABNORMAL",
    "CLOSED": "ABNORMAL",
}


class WechatPayProvider:
    name = NAME

    def __init__(self, merchant: Merchant) -> None:
        self.merchant = merchant
        self._client: WeChatPay | None = None

    @property
    def client(self) -> WeChatPay:
        if self._client is None:
            m = self.merchant
            client = WeChatPay(
                wechatpay_type=WeChatPayType.H5,
                mchid=m.mch_id,
                private_key=m.private_key,
                cert_serial_no=m.serial_no,
                appid=m.app_id,
                apiv3_key=m.api_v3_key,
                notify_url=m.notify_url,
                public_key=m.provider_public_key,
                public_key_id=m.provider_public_key_id,
                timeout=TIMEOUT,
            )
            if m.gateway_url:
                client._core._gate_way = m.gateway_url.rstrip("/")
            self._client = client
        return self._client

    # --- orders ---------------------------------------------------------------------------------

    def create_order(self, request: OrderRequest) -> PayParams:
        common = {
            "description": request.description,
            "out_trade_no": request.out_trade_no,
            "amount": {"total": request.amount_fen, "currency": "CNY"},
            "notify_url": request.notify_url,
        }
        if request.expires_at is not None:
            common["time_expire"] = _rfc3339(request.expires_at)
        if request.payer_openid:
            answer = self._call(
                self.client.pay,
                pay_type=WeChatPayType.JSAPI,
                payer={"openid": request.payer_openid},
                **common,
            )
            return PayParams(
                request.out_trade_no, pay_url="", params=self.jsapi_params(answer["prepay_id"])
            )
        answer = self._call(
            self.client.pay,
            pay_type=WeChatPayType.H5,
            scene_info={"payer_client_ip": request.client_ip, "h5_info": {"type": "Wap"}},
            **common,
        )
        pay_url = answer["h5_url"]
        if request.return_url:  # WeChat sends the browser here after the cashier
            pay_url += (
                ("&" if "?" in pay_url else "?")
                + "redirect_url="
                + quote(request.return_url, safe="")
            )
        return PayParams(request.out_trade_no, pay_url=pay_url, params={})

    def jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """getBrandWCPayRequest's parameters, signed with the merchant key (RSA over
        appId\\ntimeStamp\\nnonceStr\\npackage\\n)."""
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        package = f"prepay_id={prepay_id}"
        sign = self.client.sign([self.merchant.app_id, timestamp, nonce, package])
        return {
            "appId": self.merchant.app_id,
            "timeStamp": timestamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": sign,
        }

    def query_order(self, out_trade_no: str) -> TradeStatus:
        trade = self._call(self.client.query, out_trade_no=out_trade_no)
        return TradeStatus(
            out_trade_no=out_trade_no,
            state=_TRADE_STATES.get(trade.get("trade_state", ""), "NOTPAY"),
            amount_fen=int((trade.get("amount") or {}).get("total") or 0),
            transaction_id=trade.get("transaction_id", ""),
            paid_at=provider_time(trade.get("success_time")),
        )

    def close_order(self, out_trade_no: str) -> None:
        self._call(self.client.close, out_trade_no=out_trade_no)

    # --- refunds --------------------------------------------------------------------------------

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundStatus:
        answer = self._call(
            self.client.refund,
            out_refund_no=out_refund_no,
            out_trade_no=out_trade_no,
            amount={"refund": amount_fen, "total": total_fen, "currency": "CNY"},
            reason=reason[:80] or None,
            notify_url=self.merchant.notify_url,
        )
        return _refund_status(answer, out_refund_no)

    def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> RefundStatus:  # noqa: ARG002 (the port's)
        return _refund_status(
            self._call(self.client.query_refund, out_refund_no=out_refund_no), out_refund_no
        )

    # --- notifications --------------------------------------------------------------------------

    def parse_notification(self, *, headers: dict[str, str], body: bytes) -> Notification:
        h = {k.lower(): v for k, v in headers.items()}
        if h.get("wechatpay-signature-type", SIGNATURE_TYPE) != SIGNATURE_TYPE:
            raise BadNotification("unsupported signature type")
        if h.get("wechatpay-serial", "") != self.merchant.provider_public_key_id:
            # Checked before the SDK, which would go and download certificates for it.
            raise BadNotification("unknown Wechatpay-Serial")
        check_timestamp(h.get("wechatpay-timestamp", ""))
        sdk_headers = {
            "Wechatpay-Signature": h.get("wechatpay-signature", ""),
            "Wechatpay-Timestamp": h.get("wechatpay-timestamp", ""),
            "Wechatpay-Nonce": h.get("wechatpay-nonce", ""),
            "Wechatpay-Serial": h.get("wechatpay-serial", ""),
            "Wechatpay-Signature-Type": SIGNATURE_TYPE,
        }
        try:
            data = self.client.callback(sdk_headers, body.decode("utf-8"))
        except Exception as exc:  # the SDK raises plain Exception for malformed input
            raise BadNotification(f"notification not readable: {type(exc).__name__}") from exc
        if not data:  # bad signature, or the GCM tag did not check out
            raise BadNotification("signature or encrypted resource did not verify")
        remember_nonce(provider=NAME, nonce=h.get("wechatpay-nonce", ""))
        resource = data.get("resource") or {}
        event = data.get("event_type", "")
        if resource.get("mchid") != self.merchant.mch_id:
            raise MismatchedNotification(f"mchid {resource.get('mchid')!r} is not this merchant's")
        if event.startswith("TRANSACTION."):
            if resource.get("appid") != self.merchant.app_id:
                raise MismatchedNotification(
                    f"appid {resource.get('appid')!r} is not this merchant's"
                )
            if resource.get("trade_state") != "SUCCESS":
                return Notification("ignored", resource.get("out_trade_no", ""), 0, "")
            return Notification(
                kind="trade",
                out_trade_no=resource.get("out_trade_no", ""),
                amount_fen=int((resource.get("amount") or {}).get("total") or 0),
                transaction_id=resource.get("transaction_id", ""),
                paid_at=provider_time(resource.get("success_time")),
            )
        if event.startswith("REFUND."):
            return Notification(
                kind="refund",
                out_trade_no=resource.get("out_trade_no", ""),
                amount_fen=int((resource.get("amount") or {}).get("refund") or 0),
                transaction_id=resource.get("transaction_id", ""),
                out_refund_no=resource.get("out_refund_no", ""),
                state=_REFUND_STATES.get(resource.get("refund_status", ""), "ABNORMAL"),
                succeeded_at=provider_time(resource.get("success_time")),
            )
        return Notification("ignored", resource.get("out_trade_no", ""), 0, "")

    def notification_reply(self, *, ok: bool) -> tuple[int, str, bytes]:
        # WeChat reads the status: 2xx is received, anything else is sent again.
        if ok:
            return (
                200,
                "application/json",
                b'{"code":"SUCCESS","message":"\xe6\x88\x90\xe5\x8a\x9f"}',
            )
        return (
            401,
            "application/json",
            b'{"code":"FAIL","message":"\xe9\xaa\x8c\xe7\xad\xbe\xe5\xa4\xb1\xe8\xb4\xa5"}',
        )

    # --- bills ----------------------------------------------------------------------------------

    def download_bill(self, day: dt.date) -> BillFile | None:
        try:
            answer = self._call(
                self.client.trade_bill, bill_date=day.isoformat(), bill_type="ALL", tar_type="GZIP"
            )
        except ProviderRefused as exc:
            if exc.code == "NO_STATEMENT_EXIST":
                return None
            raise
        path = answer["download_url"]
        try:
            code, data = self.client.download_bill(path)
        except requests.RequestException as exc:
            raise ProviderTimeout(f"bill download: {type(exc).__name__}") from exc
        if code != 200 or not isinstance(data, bytes):
            raise ProviderTimeout(f"bill download answered {code}")
        return BillFile(data, "wechat", answer.get("hash_type", ""), answer.get("hash_value", ""))

    def signed_probe(self, out_trade_no: str) -> tuple[int, str]:
        """Query `out_trade_no` and verify the answer's signature whatever its status (the SDK checks
        2xx answers only, and "no such order" is a 404): (status, WeChat's code). For the console's
        merchant test. Raises ProviderTimeout when there is no answer or it is not signed by the
        merchant's WeChat Pay key."""
        core = self.client._core
        path = f"/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={self.merchant.mch_id}"
        authorization = build_authorization(
            path, "GET", self.merchant.mch_id, self.merchant.serial_no, core._private_key
        )
        try:
            response = requests.get(
                core._gate_way + path,
                headers={"Authorization": authorization, "Accept": "application/json"},
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise ProviderTimeout(f"WeChat Pay did not answer: {type(exc).__name__}") from exc
        try:
            verified = core._verify_signature(response.headers, response.text)
        except Exception:  # an unsupported or missing signature type
            verified = False
        if not verified:
            raise ProviderTimeout("WeChat Pay answer signature did not verify")
        try:
            code = str(response.json().get("code", ""))
        except ValueError:
            code = ""
        return response.status_code, code

    # --- the SDK's answers ----------------------------------------------------------------------

    def _call(self, method, **kwargs) -> dict:
        """One SDK call: the parsed JSON answer (or {} for 204). A refusal raises ProviderRefused with
        WeChat's error code first; no answer, a 5xx, or an answer whose signature does not verify
        raises ProviderTimeout (the request may have taken effect)."""
        try:
            with metrics.outside_call("wechatpay") as call:
                code, message = method(**kwargs)
                if code >= 500:
                    call.failed()
        except requests.RequestException as exc:
            raise ProviderTimeout(f"WeChat Pay did not answer: {type(exc).__name__}") from exc
        except Exception as exc:  # "failed to verify the signature": an answer we cannot trust
            raise ProviderTimeout(f"WeChat Pay answer not trusted: {exc}") from exc
        if code == 204:
            return {}
        try:
            document = json.loads(message) if message else {}
        except (TypeError, ValueError):
            document = {}
        if 200 <= code < 300:
            return document
        error = str(document.get("code") or code)
        if code >= 500 or error in {"SYSTEM_ERROR", "FREQUENCY_LIMITED", "BANK_ERROR"}:
            raise ProviderTimeout(f"WeChat Pay {code} {error}")
        raise ProviderRefused(f"{error}: {document.get('message', '')}", code=error)


def _refund_status(answer: dict, out_refund_no: str) -> RefundStatus:
    return RefundStatus(
        out_refund_no=answer.get("out_refund_no", out_refund_no),
        state=_REFUND_STATES.get(answer.get("status", ""), "PROCESSING"),
        amount_fen=int((answer.get("amount") or {}).get("refund") or 0),
        succeeded_at=provider_time(answer.get("success_time")),
    )


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone(dt.timedelta(hours=8))).replace(microsecond=0).isoformat()
