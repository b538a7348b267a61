"""`guahao createstaff`: a staff account without a terminal dialogue, for scripts and first setup."""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from guahao.catalog.models import Hospital
from guahao.console import roles
from guahao.console.services import create_staff, enrol_totp, totp_secret
from guahao.errors import InvalidInput


class Command(BaseCommand):
    help = "创建后台员工账号（非交互）：用户名、角色、所属医院；打印一次身份验证器密钥"

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", action="append", required=True, choices=roles.ROLES,
                            help="角色，可重复：" + "、".join(roles.ROLES))
        parser.add_argument("--hospital", action="append", required=True,
                            help="所属医院编码，可重复")
        parser.add_argument("--name", default="", help="姓名")
        parser.add_argument("--password-env", default="GUAHAO_STAFF_PASSWORD",
                            help="从该环境变量读取初始密码（默认 GUAHAO_STAFF_PASSWORD），不在命令行出现")

    def handle(self, *args, **options) -> None:
        password = os.environ.get(options["password_env"], "")
        if not password:
            raise CommandError(f"请在环境变量 {options['password_env']} 中提供初始密码")
        codes = options["hospital"]
        hospitals = list(Hospital.objects.filter(code__in=codes))
        missing = set(codes) - {h.code for h in hospitals}
        if missing:
            raise CommandError(f"没有这些医院编码：{'、'.join(sorted(missing))}")
        try:
            user = create_staff(username=options["username"], password=password, roles_=options["role"],
                                hospitals=hospitals, full_name=options["name"])
        except InvalidInput as exc:
            raise CommandError(exc.message) from exc
        url = enrol_totp(user=user)
        self.stdout.write(f"已创建 {user.username}（{'、'.join(options['role'])}），首次登录须修改密码")
        self.stdout.write(f"身份验证器密钥：{totp_secret(url)}")
        self.stdout.write(f"身份验证器链接：{url}")
