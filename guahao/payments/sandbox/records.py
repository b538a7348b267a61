"""The sandbox providers' records (trades, refunds, notifications, signature probes), their
states and the refusals of the ledger's operations. Plain data: the ledger owns and locks them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guahao.payments.sandbox.ledger import SandboxGateway

WECHAT = "wechat"
ALIPAY = "alipay"

# Normalized trade states (WeChat's words, used for both providers).
NOTPAY = "NOTPAY"
PAID = "SUCCESS"
CLOSED = "CLOSED"
REFUND = "REFUND"

# Refund states.
PROCESSING = "PROCESSING"
REFUND_SUCCESS = "SUCCESS"


class SandboxError(Exception):
    pass


class TradeNotFound(SandboxError):
    pass


class TradeClosed(SandboxError):
    pass


class TradePaid(SandboxError):
    """The trade is paid (or refunded): it cannot be closed any more."""


class DuplicateTrade(SandboxError):
    """The number is taken by a trade of other content (or of the other provider)."""

    def __init__(self, trade: Trade) -> None:
        super().__init__(trade.out_trade_no)
        self.trade = trade


class RefundRefused(SandboxError):
    """reason: not_paid | exceeds | total_mismatch | number_taken."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Trade:
    provider: str
    out_trade_no: str
    amount_fen: int
    description: str
    state: str  # NOTPAY / SUCCESS / CLOSED / REFUND
    transaction_id: str  # WeChat: set once paid; Alipay: its trade_no, set at creation
    created_at: dt.datetime
    paid_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    notify_url: str = ""
    return_url: str = ""
    refunded_fen: int = 0
    closed_at: dt.datetime | None = None
    trade_type: str = ""  # JSAPI / MWEB (WeChat H5) / QUICK_WAP_PAY / FAST_INSTANT_TRADE_PAY
    prepay_id: str = ""
    payer_id: str = ""  # WeChat openid / Alipay buyer_id
    quit_url: str = ""
    fingerprint: str = field(default="", repr=False)

    @property
    def alipay_status(self) -> str:
        if self.state == NOTPAY:
            return "WAIT_BUYER_PAY"
        if self.state == CLOSED or (self.state == REFUND and self.refunded_fen >= self.amount_fen):
            return "TRADE_CLOSED"
        return "TRADE_SUCCESS"


@dataclass
class SandboxRefund:
    provider: str
    out_refund_no: str  # WeChat out_refund_no / Alipay out_request_no
    out_trade_no: str
    amount_fen: int
    state: str  # PROCESSING / SUCCESS
    requested_at: dt.datetime
    succeeded_at: dt.datetime | None = None
    refund_id: str = ""
    reason: str = ""
    notify_url: str = ""


@dataclass
class Delivery:
    """One notification to the merchant, with its delivery history. `event` is the provider's
    word (TRANSACTION.SUCCESS, REFUND.SUCCESS, trade_status_sync), `kind` is trade or refund."""

    provider: str
    event: str
    kind: str
    out_trade_no: str
    out_refund_no: str
    url: str
    id: str
    created_at: dt.datetime
    next_at: dt.datetime | None
    attempts: int = 0
    delivered_at: dt.datetime | None = None
    trade_status: str = ""
    last_status: int | None = None
    body: str = field(default="", repr=False)  # WeChat: the JSON body, fixed at the event
    params: dict[str, str] = field(default_factory=dict, repr=False)  # Alipay, but notify_time/sign
    gateway: SandboxGateway | None = field(default=None, repr=False, compare=False)
    in_flight: bool = field(default=False, repr=False, compare=False)

    @property
    def gave_up(self) -> bool:
        return self.delivered_at is None and self.next_at is None

    def signed(self) -> tuple[str, dict[str, str], bytes]:
        """(url, headers, body) as it would be sent now: freshly timestamped and signed."""
        assert self.gateway is not None
        return self.gateway.sign_delivery(self)


@dataclass(frozen=True)
class Probe:
    """A copy of a notification sent with a wrong signature: the merchant must refuse it."""

    provider: str
    url: str
    status: int  # 0 when no HTTP answer came
    accepted: bool
    at: dt.datetime
    out_trade_no: str
