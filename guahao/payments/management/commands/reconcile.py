"""`guahao reconcile --date YYYY-MM-DD [--provider wechatpay|alipay|SOURCE] [--no-his]`: reconcile one
day by hand: every merchant account's bill (downloaded from its provider), then the HIS day lists.

Prints a summary per source (账单笔数、一致笔数、差异笔数 by kind) and exits with status 1 while
any discrepancy of that day is unresolved, or when a source could not be reconciled."""

from __future__ import annotations

import datetime as dt
import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from guahao import clock
from guahao.payments.models import Discrepancy, ReconciliationRun
from guahao.payments.reconciliation import run_day
from guahao.payments.reconciliation.services import unresolved_by_kind


class Command(BaseCommand):
    help = "对账：下载支付机构账单并与本系统支付、退款核对，并核对 HIS 当日挂号清单"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--date", required=False, help="对账日期（北京时间），YYYY-MM-DD；默认前一天")
        parser.add_argument(
            "--provider", default="", help="只核对一个支付机构（wechatpay、alipay）或一个商户（如 wechatpay:3）；默认全部"
        )
        parser.add_argument("--no-his", action="store_true", help="不核对 HIS 当日挂号清单")

    def handle(self, *args: object, date: str | None = None, provider: str = "", no_his: bool = False,
               **options: object) -> None:  # fmt: skip
        try:
            day = dt.date.fromisoformat(date) if date else clock.today() - dt.timedelta(days=1)
        except ValueError as exc:
            raise CommandError(f"日期格式应为 YYYY-MM-DD：{date}") from exc
        runs = run_day(day=day, source=provider or None, his=not no_his)
        self.stdout.write(f"对账日期：{day.isoformat()}")
        for run in runs:
            if run.status == ReconciliationRun.Status.FAILED:
                self.stdout.write(f"[{run.provider}] 对账失败：{run.error}")
                continue
            self.stdout.write(
                f"[{run.provider}] 账单笔数 {run.bill_rows}，一致笔数 {run.matched}，差异 {run.discrepancies} 笔"
            )
        open_kinds = unresolved_by_kind(day=day, providers=[run.provider for run in runs])
        total = sum(open_kinds.values())
        self.stdout.write(f"未处理差异 {total} 笔")
        labels = dict(Discrepancy.Kind.choices)
        for kind, count in sorted(open_kinds.items()):
            self.stdout.write(f"  {labels.get(kind, kind)}：{count} 笔")
        failed = any(run.status == ReconciliationRun.Status.FAILED for run in runs)
        if total or failed:
            sys.exit(1)
