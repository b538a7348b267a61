"""`guahao demo`: load the demo hospital (示范市第一人民医院) with two weeks of schedules. Safe to
run again: nothing is duplicated, and days that are new since the last run get their sessions."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from guahao.catalog.demo import load_demo
from guahao.scheduling.models import Session, Slot


class Command(BaseCommand):
    help = "加载示范医院（示范市第一人民医院）及未来 14 天排班；可重复执行，不会重复创建"

    def handle(self, *args, **options) -> None:
        result = load_demo()
        hospital = result.hospital
        sessions = Session.objects.filter(hospital=hospital)
        self.stdout.write(
            f"{hospital.name}（编码 {hospital.code}，id {hospital.id}）："
            f"科室 {hospital.departments.count()} 个，医生 {hospital.doctors.count()} 位，"
            f"排班 {sessions.count()} 个（本次新增 {result.sessions_created}），"
            f"号源 {Slot.objects.filter(session__hospital=hospital).count()} 个"
        )
