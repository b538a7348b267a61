"""`guahao refunds`: the operators' view of refunds the provider refused, and their retry.

    guahao refunds --failed            list FAILED refunds, oldest first, with a count line
    guahao refunds --retry RF…         send a FAILED refund again with the same refund number

A retry that the provider refuses again, an unknown refund number, or a refund that is not FAILED
is reported on stderr with exit status 1. The output names orders by their numbers only: no
patient's name, phone or ID number (an error text from the provider is scrubbed as the logs are).
"""

from __future__ import annotations

import unicodedata

from django.core.management.base import BaseCommand, CommandError, CommandParser

from guahao import clock
from guahao.errors import Conflict, NotFound
from guahao.logs import scrub
from guahao.payments import services
from guahao.payments.models import Refund

HEADER = ("退款单号", "商户订单号", "金额（元）", "申请时间", "失败原因")


def yuan(fen: int) -> str:
    """Integer fen as yuan with two decimals (2500 → "25.00")."""
    return f"{fen // 100}.{fen % 100:02d}"


def _width(text: str) -> int:
    """Columns a terminal gives `text`: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _one_line(text: str) -> str:
    return " ".join(scrub(text).split()) or "-"


class Command(BaseCommand):
    help = "退款运维：列出退款失败的退款单，或按原退款单号重试退款"

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument(
            "--failed", action="store_true", help="列出所有退款失败的退款单（金额单位：元，时间为北京时间）"
        )
        action.add_argument(
            "--retry",
            metavar="REFUND_NO",
            help="按原退款单号重新提交一笔退款失败的退款（同一单号，支付机构不会重复退款）",
        )

    def handle(self, *args: object, failed: bool = False, retry: str | None = None, **options: object) -> None:
        if retry is not None:
            self._retry(retry.strip())
        else:
            self._list_failed()

    def _list_failed(self) -> None:
        refunds = list(
            Refund.objects.filter(state=Refund.State.FAILED)
            .select_related("payment")
            .order_by("created_at", "id")
        )
        rows = [
            (
                refund.refund_no,
                refund.payment.out_trade_no,
                yuan(refund.amount_fen),
                f"{clock.local(refund.created_at):%Y-%m-%d %H:%M:%S}",
                _one_line(refund.last_error),
            )
            for refund in refunds
        ]
        # Pad every column but the last (the error text) to its widest cell.
        widths = [max(_width(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER) - 1)]
        for row in [HEADER, *rows]:
            cells = [_pad(cell, width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]))
        total = sum(refund.amount_fen for refund in refunds)
        self.stdout.write(f"共 {len(refunds)} 笔退款失败，合计 {yuan(total)} 元")

    def _retry(self, refund_no: str) -> None:
        try:
            refund = services.retry_refund(refund_no=refund_no)
        except (NotFound, Conflict) as exc:
            raise CommandError(f"{refund_no}：{exc.message}") from exc
        state = Refund.State(refund.state)
        if state == Refund.State.FAILED:
            raise CommandError(f"{refund.refund_no}：重试后仍为退款失败（{_one_line(refund.last_error)}）")
        self.stdout.write(f"退款单 {refund.refund_no} 已重新提交，当前状态：{state.label}（{state.value}）")
        if state == Refund.State.PROCESSING:
            self.stdout.write("退款结果由后台 worker 向支付机构确认后更新，可稍后再次查看")
