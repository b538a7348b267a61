"""The staff accounts page: a system administrator manages the staff of their own hospitals and can
neither make nor touch a superuser; the other roles do not open it at all."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from guahao import clock
from guahao.console import roles
from guahao.console.testing import console_client, make_staff, superuser_client
from guahao.testing import make_hospital

pytestmark = pytest.mark.django_db
User = get_user_model()


@pytest.fixture
def hospitals():
    return make_hospital(name="甲医院", short_name="甲院"), make_hospital(name="乙医院")


@pytest.fixture
def sysadmin(hospitals):
    return make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospitals[0]], username="li.sys")


def test_the_list_shows_roles_hospitals_second_factor_and_lockout_in_chinese(sysadmin, hospitals):
    ops = make_staff(role=roles.OPERATIONS, hospitals=[hospitals[0]], username="wang.ops")
    TOTPDevice.objects.filter(user=ops).delete()
    AccessAttempt.objects.create(
        username="wang.ops", ip_address="10.0.0.1", user_agent="x", path_info="/admin/login/",
        failures_since_start=settings.AXES_FAILURE_LIMIT, attempt_time=clock.now(), get_data="", post_data="",
    )
    response = console_client(sysadmin).get(reverse("admin:auth_user_changelist"))
    assert response.status_code == 200
    rows = {u.username: u for u in response.context["cl"].result_list}
    assert set(rows) == {"li.sys", "wang.ops"}
    assert (rows["wang.ops"].has_totp, rows["wang.ops"].is_locked_out) == (False, True)
    assert (rows["li.sys"].has_totp, rows["li.sys"].is_locked_out) == (True, False)
    html = response.content.decode()
    for text in ("角色", "所属医院", "已绑定身份验证器", "登录锁定", "运营", "甲院"):
        assert text in html, text


def test_a_system_administrator_sees_only_staff_of_their_hospitals_and_no_superuser(sysadmin, hospitals):
    make_staff(role=roles.OPERATIONS, hospitals=[hospitals[1]], username="zhao.other")
    boss = User.objects.create_superuser("boss", "boss@example.com", "Staff#2026pass")
    client = console_client(sysadmin)
    names = {u.username for u in client.get(reverse("admin:auth_user_changelist")).context["cl"].result_list}
    assert names == {"li.sys"}
    page = client.get(reverse("admin:auth_user_change", args=[boss.pk]))
    assert page.status_code == 302  # Django: "not found" sends back to the list
    other = User.objects.get(username="zhao.other")
    assert client.get(reverse("admin:auth_user_change", args=[other.pk])).status_code == 302


def test_a_system_administrator_cannot_grant_superuser_status(sysadmin, hospitals):
    ops = make_staff(role=roles.OPERATIONS, hospitals=[hospitals[0]], username="wang.ops")
    client = console_client(sysadmin)
    url = reverse("admin:auth_user_change", args=[ops.pk])
    page = client.get(url).content.decode()
    assert 'name="is_superuser"' not in page and 'name="user_permissions"' not in page
    # Hospitals offered in the form are the administrator's own.
    assert "甲医院" in page and "乙医院" not in page
    form = client.get(url).context["adminform"].form
    data = {
        "username": "wang.ops", "first_name": "", "email": "", "is_active": "on", "is_staff": "on",
        "groups": [g.pk for g in form.initial["groups"]], "is_superuser": "on",
        "staff_profile-TOTAL_FORMS": "1", "staff_profile-INITIAL_FORMS": "1",
        "staff_profile-MIN_NUM_FORMS": "0", "staff_profile-MAX_NUM_FORMS": "1",
        "staff_profile-0-id": ops.staff_profile.pk, "staff_profile-0-user": ops.pk,
        "staff_profile-0-hospitals": [hospitals[0].pk],
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    ops.refresh_from_db()
    assert ops.is_superuser is False


def test_a_superuser_sees_the_superuser_fields(hospitals):
    ops = make_staff(role=roles.OPERATIONS, hospitals=[hospitals[0]])
    page = superuser_client().get(reverse("admin:auth_user_change", args=[ops.pk])).content.decode()
    assert 'name="is_superuser"' in page


@pytest.mark.parametrize("role", [roles.OPERATIONS, roles.FINANCE, roles.AUDITOR])
def test_other_roles_cannot_open_the_user_or_role_pages(role, hospitals):
    client = console_client(make_staff(role=role, hospitals=[hospitals[0]]))
    assert client.get(reverse("admin:auth_user_changelist")).status_code == 403
    assert client.get(reverse("admin:auth_group_changelist")).status_code == 403


def test_the_role_list_is_in_chinese(sysadmin):
    html = console_client(sysadmin).get(reverse("admin:auth_group_changelist")).content.decode()
    assert "系统管理员" in html and "人数" in html
