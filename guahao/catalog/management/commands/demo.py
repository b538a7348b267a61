"""`guahao demo`: load the demo hospital (示范市第一人民医院) with two weeks of schedules. Safe to
run again: nothing is duplicated, and days that are new since the last run get their sessions."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from guahao.catalog.demo import load_demo
from guahao.console.demo import create_demo_staff
from guahao.environment import DEVELOPMENT
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
        if settings.ENV == DEVELOPMENT:
            self._print_staff(create_demo_staff(hospital=hospital))
            if settings.WECHAT_SIMULATOR_URL:  # the demo 公众号 is the simulator `guahao run` starts
                from guahao.wechat.demo import configure_demo_account

                configure_demo_account(hospital, base_url=settings.WECHAT_SIMULATOR_URL)
                self.stdout.write(f"公众号模板消息：经微信模拟器 {settings.WECHAT_SIMULATOR_URL} 发送")

    def _print_staff(self, made) -> None:
        if not made:
            return
        self.stdout.write("后台 /admin/ 演示员工账号（仅开发模式；密钥只显示这一次，请录入身份验证器）：")
        for staff in made:
            self.stdout.write(
                f"  {staff.role}：用户名 {staff.username}  密码 {staff.password}  身份验证器密钥 {staff.totp_secret}"
            )
        self.stdout.write("  动态验证码也可这样取得：guahao totp <用户名>（仅开发模式）")
