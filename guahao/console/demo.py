"""One staff account per role for the demo hospital (development only), so that a newcomer can
try each role's console at once. Printed once, when they are made."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model

from guahao.catalog.models import Hospital
from guahao.console import roles
from guahao.console.services import create_staff, enrol_totp, totp_secret

DEMO_PASSWORD = "Demo#2026guahao"
DEMO_STAFF = (
    ("sysadmin", roles.SYSTEM_ADMIN, "演示系统管理员"),
    ("security", roles.SECURITY_ADMIN, "演示安全管理员"),
    ("auditor", roles.AUDITOR, "演示审计管理员"),
    ("operator", roles.OPERATIONS, "演示运营"),
    ("finance", roles.FINANCE, "演示财务"),
)


@dataclass(frozen=True)
class DemoStaff:
    username: str
    role: str
    password: str
    totp_secret: str


def create_demo_staff(*, hospital: Hospital) -> list[DemoStaff]:
    """The demo accounts that do not exist yet (an account made earlier keeps its secret)."""
    made = []
    User = get_user_model()
    for username, role, name in DEMO_STAFF:
        if User.objects.filter(username=username).exists():
            continue
        user = create_staff(
            username=username,
            password=DEMO_PASSWORD,
            roles_=[role],
            hospitals=[hospital],
            full_name=name,
            must_change_password=False,
        )
        made.append(DemoStaff(username, role, DEMO_PASSWORD, totp_secret(enrol_totp(user=user))))
    return made
