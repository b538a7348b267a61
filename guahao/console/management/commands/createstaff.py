"""`guahao createstaff`: a staff account without a terminal dialogue, for scripts and first setup."""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError

from guahao.catalog.models import Hospital
from guahao.console import roles
from guahao.console.services import create_staff, create_superuser, enrol_totp, totp_secret
from guahao.errors import InvalidInput


class Command(BaseCommand):
    help = "创建后台员工账号（非交互）：用户名、角色、所属医院；打印一次身份验证器密钥"

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", action="append", default=[], choices=roles.ROLES,
                            help="角色，可重复：" + "、".join(roles.ROLES))
        parser.add_argument("--hospital", action="append", default=[],
                            help="所属医院编码，可重复")
        parser.add_argument("--superuser", action="store_true",
                            help="初始化用的超级管理员（可添加医院和第一批员工；完成后应停用）")
        parser.add_argument("--name", default="", help="姓名")
        parser.add_argument("--password-env", default="GUAHAO_STAFF_PASSWORD",
                            help="从该环境变量读取初始密码（默认 GUAHAO_STAFF_PASSWORD），不在命令行出现")

    def handle(self, *args, **options) -> None:
        password = os.environ.get(options["password_env"], "")
        if not password:
            raise CommandError(f"请在环境变量 {options['password_env']} 中提供初始密码")
        if options["superuser"]:
            self._superuser(options["username"], password)
            return
        if not options["role"] or not options["hospital"]:
            raise CommandError("请用 --role 指定角色、--hospital 指定所属医院（或用 --superuser 创建初始化账号）")
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
        self.stdout.write(f"已创建 {user.username}（{'、'.join(options['role'])}），首次登录须修改密码")
        self._print_totp(user)

    def _superuser(self, username: str, password: str) -> None:
        try:
            user = create_superuser(username=username, password=password)
        except InvalidInput as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"已创建超级管理员 {user.username}：添加医院和系统管理员后请停用该账号")
        self._print_totp(user)

    def _print_totp(self, user) -> None:
        url = enrol_totp(user=user)
        self.stdout.write(f"身份验证器密钥：{totp_secret(url)}")
        self.stdout.write(f"身份验证器链接：{url}")
