"""The sandbox provider's daily bill, written from its own ledger (SandboxTrade / SandboxRefund) in
the WeChat trade bill format, with the SHA1 a real download answer carries."""

from __future__ import annotations

import datetime as dt

from guahao.payments.models import SandboxRefund, SandboxTrade
from guahao.payments.reconciliation.bills import SUCCESS, BillRow, sha1_of, write_wechat_bill
from guahao.payments.reconciliation.services import day_bounds


def sandbox_bill_rows(day: dt.date) -> list[BillRow]:
    start, end = day_bounds(day)
    rows = [
        BillRow("payment", t.out_trade_no, "", t.transaction_id, t.amount_fen, SUCCESS, t.paid_at)
        for t in SandboxTrade.objects.filter(paid_at__gte=start, paid_at__lt=end).exclude(paid_at=None).order_by("paid_at", "id")
    ]
    rows += [
        BillRow("refund", r.trade.out_trade_no, r.out_refund_no, r.trade.transaction_id, r.amount_fen, SUCCESS, r.succeeded_at)
        for r in SandboxRefund.objects.filter(state=SandboxRefund.State.SUCCESS, succeeded_at__gte=start, succeeded_at__lt=end)
        .select_related("trade")
        .order_by("succeeded_at", "id")
    ]
    return rows


def sandbox_bill(day: dt.date) -> tuple[bytes, str]:
    """(gzipped WeChat trade bill of `day`, its SHA1 hex) — what the sandbox's bill download serves."""
    data = write_wechat_bill(sandbox_bill_rows(day))
    return data, sha1_of(data)
