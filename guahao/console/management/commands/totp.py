"""`guahao totp USERNAME` (development only): the staff member's current 6-digit code, so the
demo console can be tried without an authenticator app. Production refuses it."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from guahao.environment import DEVELOPMENT


class Command(BaseCommand):
    help = "（仅开发模式）显示员工当前的动态验证码"

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")

    def handle(self, *args, **options) -> None:
        if settings.ENV != DEVELOPMENT:
            raise CommandError("仅开发模式可用：生产环境的动态验证码只在员工本人的身份验证器中")
        device = TOTPDevice.objects.filter(user__username=options["username"], confirmed=True).first()
        if device is None:
            raise CommandError(f"{options['username']} 没有绑定身份验证器")
        self.stdout.write(f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}")
