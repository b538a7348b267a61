"""Alipay (手机网站支付, alipay.trade.wap.pay) for one merchant, on `python-alipay-sdk`: the signed
pay URL the patient's browser opens, query, close, refund, refund query, notifications and the
daily business bill.

The SDK verifies its answers' RSA2 signatures but checks nothing else of a notification: app_id,
seller_id, the amount and the age are checked here. Alipay refunds synchronously (fund_change) and
then also notifies: a full refund arrives as TRADE_CLOSED with refund_fee, which is a refund, never a
payment. A trade the patient never opened does not exist at Alipay yet (ACQ.TRADE_NOT_EXIST)."""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import socket
import urllib.error
import urllib.request
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError
from alipay.utils import AliPayConfig

from guahao import clock, metrics
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
from guahao.payments.providers.replay import MAX_SKEW, remember_nonce
from guahao.payments.reconciliation.bills import BillError, fen_of, yuan_of

log = logging.getLogger("guahao.payments.alipay")

NAME = "alipay"
PRODUCTION_GATEWAY = "https://openapi.alipay.com/gateway.do"
TIMEOUT_SECONDS = 10
LOCAL_TZ = ZoneInfo("Asia/Shanghai")
NOT_EXIST = "ACQ.TRADE_NOT_EXIST"
_NETWORK_ERRORS = (
    urllib.error.URLError,
    socket.timeout,
    TimeoutError,
    ConnectionError,
    http.client.HTTPException,
)


class AlipayProvider:
    name = NAME

    def __init__(self, merchant: Merchant) -> None:
        self.merchant = merchant
        self._client: AliPay | None = None

    @property
    def gateway(self) -> str:
        return self.merchant.gateway_url or PRODUCTION_GATEWAY

    @property
    def client(self) -> AliPay:
        if self._client is None:
            client = AliPay(
                appid=self.merchant.app_id,
                app_notify_url=self.merchant.notify_url,
                app_private_key_string=self.merchant.private_key,
                alipay_public_key_string=self.merchant.provider_public_key,
                sign_type="RSA2",
                config=AliPayConfig(timeout=TIMEOUT_SECONDS),
            )
            client._gateway = self.gateway
            self._client = client
        return self._client

    # --- orders ---------------------------------------------------------------------------------

    def create_order(self, request: OrderRequest) -> PayParams:
        """No call to Alipay: the signed URL is the order, created when the patient opens it."""
        extra = {}
        if request.expires_at is not None:
            extra["time_expire"] = request.expires_at.astimezone(LOCAL_TZ).strftime(
                "%Y-%m-%d %H:%M:%S"
            )
        query = self.client.api_alipay_trade_wap_pay(
            subject=request.description,
            out_trade_no=request.out_trade_no,
            total_amount=yuan_of(request.amount_fen),
            return_url=request.return_url or None,
            notify_url=request.notify_url,
            **extra,
        )
        return PayParams(request.out_trade_no, pay_url=f"{self.gateway}?{query}", params={})

    def query_order(self, out_trade_no: str) -> TradeStatus:
        try:
            answer = self._call(self.client.api_alipay_trade_query, out_trade_no=out_trade_no)
        except ProviderRefused as exc:
            if exc.code == NOT_EXIST:  # the patient never opened the pay page: nothing paid
                return TradeStatus(out_trade_no, "NOTPAY", 0, "")
            raise
        status = answer.get("trade_status", "")
        if status in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            state = "SUCCESS"
        elif status == "TRADE_CLOSED":
            # A fully refunded trade is closed too, but it was paid (send_pay_date says when).
            state = "SUCCESS" if answer.get("send_pay_date") else "CLOSED"
        else:
            state = "NOTPAY"
        return TradeStatus(
            out_trade_no,
            state,
            _fen(answer.get("total_amount", "0")),
            answer.get("trade_no", ""),
            paid_at=provider_time(answer.get("send_pay_date")),
        )

    def close_order(self, out_trade_no: str) -> None:
        try:
            self._call(self.client.api_alipay_trade_close, out_trade_no=out_trade_no)
        except ProviderRefused as exc:
            if exc.code != NOT_EXIST:  # never opened: Alipay remembers the close, nothing to pay
                raise

    # --- refunds --------------------------------------------------------------------------------

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundStatus:  # noqa: ARG002
        answer = self._call(
            self.client.api_alipay_trade_refund,
            refund_amount=yuan_of(amount_fen),
            out_trade_no=out_trade_no,
            out_request_no=out_refund_no,
            refund_reason=reason[:80],
        )
        if answer.get("fund_change") == "Y":
            return RefundStatus(
                out_refund_no, "SUCCESS", amount_fen, succeeded_at=provider_time(answer.get("gmt_refund_pay"))
            )
        # "N": this number was refunded before, or the money did not move: ask.
        return self.query_refund(out_refund_no, out_trade_no=out_trade_no)

    def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> RefundStatus:
        answer = self._call(
            self.client.api_alipay_trade_fastpay_refund_query,
            out_request_no=out_refund_no,
            out_trade_no=out_trade_no,
        )
        if not answer.get("refund_amount") and not answer.get("refund_status"):
            # Alipay answers 10000 without a refund for a number it never received.
            raise ProviderRefused("no such refund", code="REFUND_NOT_EXIST")
        state = (
            "SUCCESS"
            if answer.get("refund_status", "REFUND_SUCCESS") == "REFUND_SUCCESS"
            else "PROCESSING"
        )
        return RefundStatus(
            out_refund_no,
            state,
            _fen(answer.get("refund_amount", "0")),
            succeeded_at=provider_time(answer.get("gmt_refund_pay")) if state == "SUCCESS" else None,
        )

    # --- notifications --------------------------------------------------------------------------

    def parse_notification(self, *, headers: dict[str, str], body: bytes) -> Notification:  # noqa: ARG002
        try:
            data = dict(
                parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadNotification("notification is not a form") from exc
        sign = data.pop("sign", "")
        if not sign or data.get("sign_type", "RSA2") != "RSA2":
            raise BadNotification("unsigned, or not RSA2")
        try:
            verified = self.client.verify(dict(data), sign)
        except Exception as exc:  # malformed base64 and the like
            raise BadNotification(f"signature not readable: {type(exc).__name__}") from exc
        if not verified:
            raise BadNotification("signature did not verify")
        _check_notify_time(data.get("notify_time", ""))
        remember_nonce(
            provider=NAME, nonce=f"{data.get('notify_id', '')[:40]}|{data.get('notify_time', '')}"
        )
        if data.get("app_id") != self.merchant.app_id:
            raise MismatchedNotification(f"app_id {data.get('app_id')!r} is not this merchant's")
        if data.get("seller_id") and data.get("seller_id") != self.merchant.mch_id:
            raise MismatchedNotification(
                f"seller_id {data.get('seller_id')!r} is not this merchant's"
            )
        out_trade_no, trade_no = data.get("out_trade_no", ""), data.get("trade_no", "")
        if data.get("refund_fee") and data.get("out_biz_no"):
            return Notification(
                kind="refund",
                out_trade_no=out_trade_no,
                amount_fen=_fen(data["refund_fee"], bad=BadNotification),
                transaction_id=trade_no,
                out_refund_no=data["out_biz_no"],
                cumulative=True,
                succeeded_at=provider_time(data.get("gmt_refund")),
            )
        if data.get("trade_status") in ("TRADE_SUCCESS", "TRADE_FINISHED"):
            return Notification(
                "trade",
                out_trade_no,
                _fen(data.get("total_amount", ""), bad=BadNotification),
                trade_no,
                paid_at=provider_time(data.get("gmt_payment")),
            )
        return Notification("ignored", out_trade_no, 0, trade_no)

    def notification_reply(self, *, ok: bool) -> tuple[int, str, bytes]:
        # Alipay reads the body: exactly "success", or it sends again.
        return (200, "text/plain", b"success") if ok else (400, "text/plain", b"fail")

    # --- bills ----------------------------------------------------------------------------------

    def download_bill(self, day: dt.date) -> BillFile | None:
        try:
            answer = self._call(
                self.client.server_api,
                api_name="alipay.data.dataservice.bill.downloadurl.query",
                biz_content={"bill_type": "trade", "bill_date": day.isoformat()},
            )
        except ProviderRefused as exc:
            if exc.code in ("isp.bill_not_exist", "ACQ.BILL_NOT_EXIST"):
                return None
            raise
        try:
            with urllib.request.urlopen(
                answer["bill_download_url"], timeout=TIMEOUT_SECONDS
            ) as response:  # noqa: S310
                data = response.read()
        except _NETWORK_ERRORS as exc:
            raise ProviderTimeout(f"bill download: {type(exc).__name__}") from exc
        return BillFile(data, "alipay")

    # --- the SDK's answers ----------------------------------------------------------------------

    def _call(self, method, **kwargs) -> dict:
        """One SDK call: the verified answer. A business refusal (40004) raises ProviderRefused with
        Alipay's sub_code; no answer, a system error (20000) or an answer whose signature does not
        verify raises ProviderTimeout (the request may have taken effect)."""
        try:
            with metrics.outside_call("alipay") as call:
                answer = method(**kwargs)
                if str(answer.get("code", "")) in ("20000", "20001"):  # Alipay's own system errors
                    call.failed()
        except _NETWORK_ERRORS as exc:
            raise ProviderTimeout(f"Alipay did not answer: {type(exc).__name__}") from exc
        except AliPayValidationError as exc:
            raise ProviderTimeout("Alipay answer signature did not verify") from exc
        except AliPayException as exc:  # unsigned error answers (e.g. 40002 bad request)
            raise ProviderRefused(str(exc)[:200], code="UNSIGNED_ERROR") from exc
        code = str(answer.get("code", ""))
        if code == "10000":
            return answer
        sub_code = answer.get("sub_code", "") or code
        if code in ("20000", "20001") or sub_code.endswith("SYSTEM_ERROR"):
            raise ProviderTimeout(f"Alipay {code} {sub_code}")
        raise ProviderRefused(f"{sub_code}: {answer.get('sub_msg', '')}", code=sub_code)


def _fen(text: str, *, bad: type[Exception] = ProviderTimeout) -> int:
    try:
        return fen_of(text)
    except BillError as exc:
        raise bad(f"amount {text!r} is not a money amount") from exc


def _check_notify_time(text: str) -> None:
    """Alipay signs notify_time (Beijing time): accepted within ±5 minutes, as WeChat's header."""
    try:
        sent_at = dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=LOCAL_TZ)
    except ValueError as exc:
        raise BadNotification("notify_time is not a time") from exc
    if abs(clock.now() - sent_at) > MAX_SKEW:
        raise BadNotification("notify_time outside ±5 minutes")
