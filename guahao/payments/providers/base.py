"""The payment provider port. One module per provider implements it (WeChat Pay v3, Alipay; UnionPay
later), each for one merchant account. Errors: ProviderRefused (the provider answered no),
ProviderTimeout (no answer, or one we cannot trust: the request may have taken effect),
BadNotification (signature, age, replay), MismatchedNotification (correctly signed, but for another
merchant or amount: an operator must look)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


class ProviderError(Exception):
    pass


class ProviderRefused(ProviderError):
    """The provider answered no; `code` is its error code (ORDER_NOT_EXIST, ACQ.TRADE_NOT_EXIST…)."""

    def __init__(self, message: str = "", *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ProviderTimeout(ProviderError):
    pass


class BadNotification(ProviderError):
    pass


class MismatchedNotification(BadNotification):
    """Signed by the provider, but its app id, merchant or amount is not ours: never paid, alerted."""


@dataclass(frozen=True)
class OrderRequest:
    out_trade_no: str
    amount_fen: int
    description: str
    channel: str
    notify_url: str
    # time_expire: the provider refuses to take money after this, and closes the order.
    expires_at: dt.datetime | None = None
    # Where the provider's page sends the patient back to after paying or cancelling.
    return_url: str = ""
    # WeChat JSAPI (inside WeChat, once the account is bound to an openid); H5 pay otherwise.
    payer_openid: str = ""
    client_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class PayParams:
    """What the patient's client needs to pay: a page to open (WeChat H5 pay, Alipay mobile web pay),
    or for WeChat JSAPI the signed parameters of WeixinJSBridge's getBrandWCPayRequest."""

    out_trade_no: str
    pay_url: str
    params: dict


@dataclass(frozen=True)
class TradeStatus:
    out_trade_no: str
    state: str  # NOTPAY / SUCCESS / CLOSED
    amount_fen: int
    transaction_id: str
    # When the provider says it was paid (its bill lists the trade on that day); None if unsaid.
    paid_at: dt.datetime | None = None


@dataclass(frozen=True)
class RefundStatus:
    out_refund_no: str
    state: str  # PROCESSING / SUCCESS / ABNORMAL (the bank rejected it: an operator must act)
    amount_fen: int
    # When the provider says the refund succeeded (its bill's day); None if unsaid.
    succeeded_at: dt.datetime | None = None


@dataclass(frozen=True)
class Notification:
    """A verified notification: a trade paid, or a refund finished."""

    kind: str  # "trade", "refund", or "ignored" (a state we need not act on, e.g. WAIT_BUYER_PAY)
    out_trade_no: str
    amount_fen: int
    transaction_id: str
    out_refund_no: str = ""
    # For a refund: SUCCESS, or ABNORMAL / CLOSED (the bank refused it: an operator must act).
    state: str = "SUCCESS"
    # Alipay states the total refunded so far on the trade, not this refund's amount.
    cumulative: bool = False
    # For a trade: when the provider says it was paid; for a refund, when it succeeded. None if
    # unsaid.
    paid_at: dt.datetime | None = None
    succeeded_at: dt.datetime | None = None


_BEIJING = dt.timezone(dt.timedelta(hours=8))


def provider_time(text: object) -> dt.datetime | None:
    """A provider's timestamp: WeChat's RFC 3339 ('2018-06-08T10:34:56+08:00') or Alipay's Beijing
    'yyyy-MM-dd HH:mm:ss'. None when absent or not a time (it is then not relied on)."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=_BEIJING)


@dataclass(frozen=True)
class BillFile:
    """A day's bill as downloaded: `data` in `bill_format` ("wechat" gzip, "alipay" zip) and the
    digest the provider gave for it (over the uncompressed bill; empty when it gives none)."""

    data: bytes
    bill_format: str
    hash_type: str = ""
    hash_value: str = ""


class PaymentProvider(Protocol):
    name: str

    def create_order(self, request: OrderRequest) -> PayParams: ...

    def query_order(self, out_trade_no: str) -> TradeStatus: ...

    def close_order(self, out_trade_no: str) -> None: ...

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundStatus:
        """Idempotent by out_refund_no: the same number twice is one refund."""
        ...

    def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> RefundStatus:
        """ProviderRefused when the provider has no such refund (the request never arrived)."""
        ...

    def parse_notification(self, *, headers: dict[str, str], body: bytes) -> Notification:
        """Verify signature, timestamp age, replay, app id and merchant; raise BadNotification or
        MismatchedNotification otherwise. Call inside the transaction that records it."""
        ...

    def notification_reply(self, *, ok: bool) -> tuple[int, str, bytes]:
        """(status, content type, body) the provider expects: anything but its success form makes
        it send the notification again."""
        ...

    def download_bill(self, day: dt.date) -> BillFile | None:
        """The trade bill of `day` (Asia/Shanghai), or None when the provider has none (no trades)."""
        ...
