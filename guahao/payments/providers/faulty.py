"""A provider wrapper that fails on demand, for tests of what guahao does when a payment provider
refuses, does not answer, or acts without its answer arriving. It wraps a real adapter talking to
the sandbox gateway, so everything that does happen happens in the gateway's own ledger. (Faults on
the wire itself — a reply lost on the network — are the gateway's: SandboxGateway.fault.)

Faults are queued per operation: "refuse" (ProviderRefused, nothing done), "timeout"
(ProviderTimeout, nothing done) and "lost_reply" (done at the provider, then ProviderTimeout).
"""

from __future__ import annotations

import datetime as dt

from guahao.faults import FaultQueue
from guahao.payments.providers.base import (
    BillFile,
    Notification,
    OrderRequest,
    PaymentProvider,
    PayParams,
    ProviderRefused,
    ProviderTimeout,
    RefundStatus,
    TradeStatus,
)


class FaultyProvider(FaultQueue):
    refused_error = ProviderRefused
    timeout_error = ProviderTimeout

    def __init__(self, inner: PaymentProvider) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name

    def create_order(self, request: OrderRequest) -> PayParams:
        return self.act("create_order", lambda: self.inner.create_order(request))

    def query_order(self, out_trade_no: str) -> TradeStatus:
        return self.act("query_order", lambda: self.inner.query_order(out_trade_no))

    def close_order(self, out_trade_no: str) -> None:
        return self.act("close_order", lambda: self.inner.close_order(out_trade_no))

    def refund(
        self, *, out_trade_no: str, out_refund_no: str, amount_fen: int, total_fen: int, reason: str
    ) -> RefundStatus:
        return self.act(
            "refund",
            lambda: self.inner.refund(
                out_trade_no=out_trade_no,
                out_refund_no=out_refund_no,
                amount_fen=amount_fen,
                total_fen=total_fen,
                reason=reason,
            ),
        )

    def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> RefundStatus:
        return self.act(
            "query_refund",
            lambda: self.inner.query_refund(out_refund_no, out_trade_no=out_trade_no),
        )

    def parse_notification(self, *, headers: dict[str, str], body: bytes) -> Notification:
        return self.inner.parse_notification(headers=headers, body=body)

    def notification_reply(self, *, ok: bool) -> tuple[int, str, bytes]:
        return self.inner.notification_reply(ok=ok)

    def download_bill(self, day: dt.date) -> BillFile | None:
        return self.inner.download_bill(day)
