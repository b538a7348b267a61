"""`guahao token --phone 13800138000`: a bearer token for that phone's account (created if needed).

Only the token goes to stdout, so scripts can use `TOKEN=$(guahao token --phone …)`; logs go to
the log handlers (stderr). It signs in without an SMS code, so it works in development only.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from guahao.environment import is_development
from guahao.errors import GuahaoError
from guahao.patients import services


class Command(BaseCommand):
    help = "为手机号签发登录令牌（账号不存在时自动创建），标准输出只打印令牌"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--phone", required=True, help="中国大陆手机号，如 13800138000")

    def handle(self, *args: object, phone: str, **options: object) -> None:
        if not is_development():
            raise CommandError(
                "guahao token 不需短信验证码即可登录，只能在开发模式（GUAHAO_ENV=development）使用 / "
                "guahao token signs in without an SMS code: development mode (GUAHAO_ENV=development) only"
            )
        try:
            token = services.issue_token_for_phone(phone=phone)
        except GuahaoError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(token)
