"""`guahao his-sync`: sync the schedule from the hospitals' HIS now, as the worker does every few
minutes, and print what changed: one line per new session, capacity change and 停诊, then a
summary per hospital. Exits 1 when an HIS did not answer or refused.

    guahao his-sync                       every hospital with an HIS connection
    guahao his-sync --hospital CODE       one hospital (by its code at guahao)
    guahao his-sync --days 7              sessions from today on for 7 days (default: the hospital's 排班展示天数)
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError, CommandParser

from guahao.catalog.models import Hospital
from guahao.his.base import HisError
from guahao.his.sync import hospitals_with_his, sync_schedule


class Command(BaseCommand):
    help = "从医院系统（HIS）同步排班并列出变化（新放号、号源变化、停诊）"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--hospital", metavar="CODE", help="只同步这家医院（医院编码）")
        parser.add_argument("--days", type=int, help="同步从今天起多少天的排班（默认按医院的排班展示天数）")

    def handle(self, *args: object, hospital: str | None = None, days: int | None = None, **options: object) -> None:
        if days is not None and not 1 <= days <= 90:
            raise CommandError("--days 须为 1–90")
        if hospital:
            found = Hospital.objects.filter(code=hospital).first()
            if found is None:
                raise CommandError(f"没有编码为 {hospital} 的医院")
            hospitals = [found]
        else:
            hospitals = hospitals_with_his()
            if not hospitals:
                self.stdout.write("没有连接医院系统的医院，无需同步")
                return
        failed = 0
        for target in hospitals:
            try:
                report = sync_schedule(hospital=target, days=days)
            except HisError as exc:
                failed += 1
                reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
                self.stdout.write(f"{target.short_name or target.name}：同步失败，医院系统未应答或拒绝（{reason}），请稍后重试")
                continue
            for line in report.lines():
                self.stdout.write(f"  {line}")
            self.stdout.write(report.summary())
        self.stdout.flush()
        if failed:
            sys.exit(1)
