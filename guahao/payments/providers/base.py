"""The payment provider port. One module per provider implements it (sandbox first; WeChat Pay v3,
Alipay, UnionPay later). Errors: ProviderRefused (the provider answered no), ProviderTimeout (no
answer; the request may have taken effect), BadNotification (signature, age, replay, amount)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


class ProviderError(Exception):
    pass


class ProviderRefused(ProviderError):
    pass


class ProviderTimeout(ProviderError):
    pass


class BadNotification(ProviderError):
    pass


@dataclass(frozen=True)
class OrderRequest:
    out_trade_no: str
    amount_fen: int
    description: str
    channel: str
    notify_url: str
    # time_expire: the provider refuses to take money after this, and closes the order.
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class PayParams:
    """What the patient's client needs to pay. For the sandbox, a page/POST URL."""

    out_trade_no: str
    pay_url: str
    params: dict


@dataclass(frozen=True)
class TradeStatus:
    out_trade_no: str
    state: str  # NOTPAY / SUCCESS / CLOSED
    amount_fen: int
    transaction_id: str


@dataclass(frozen=True)
class RefundStatus:
    out_refund_no: str
    state: str  # PROCESSING / SUCCESS / ABNORMAL (the bank rejected it: an operator must act)
    amount_fen: int


@dataclass(frozen=True)
class Notification:
    """A verified notification: a trade paid, or a refund finished."""

    kind: str  # "trade" or "refund"
    out_trade_no: str
    amount_fen: int
    transaction_id: str
    out_refund_no: str = ""


class PaymentProvider(Protocol):
    name: str

    def create_order(self, request: OrderRequest) -> PayParams: ...

    def query_order(self, out_trade_no: str) -> TradeStatus: ...

    def close_order(self, out_trade_no: str) -> None: ...

    def refund(self, *, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str) -> RefundStatus:
        """Idempotent by out_refund_no: the same number twice is one refund."""
        ...

    def query_refund(self, out_refund_no: str) -> RefundStatus:
        """ProviderRefused when the provider has no such refund (the request never arrived)."""
        ...

    def parse_notification(self, *, headers: dict[str, str], body: bytes) -> Notification:
        """Verify signature, timestamp age and replay; raise BadNotification otherwise."""
        ...
