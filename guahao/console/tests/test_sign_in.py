"""The console's sign-in rules as an assessor of 等保三级 checks them: a second factor for every
staff login, lockout after 5 failures for 15 minutes, passwords with letters, digits and symbols
changed every 90 days, sessions ended on the server after 15 idle minutes, all of it audited."""

from __future__ import annotations

import datetime as dt

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone, translation

from guahao import clock
from guahao.console import roles
from guahao.console.models import AuditEntry, StaffProfile
from guahao.console.testing import STAFF_PASSWORD, current_code, make_staff, sign_in
from guahao.testing import make_hospital

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator():
    return make_staff(role=roles.OPERATIONS, hospitals=[make_hospital()], username="zhang.ops")


def _actions(username: str) -> list[tuple[str, str]]:
    rows = AuditEntry.objects.filter(staff_username=username).order_by("id")
    return [(row.action, row.result) for row in rows]


def test_password_and_current_code_sign_in_and_the_login_is_audited(operator):
    client = Client()
    answer = sign_in(client, operator)
    assert answer.status_code == 302 and answer.url == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert _actions("zhang.ops") == [("login", "success")]
    entry = AuditEntry.objects.get(action="login")
    assert entry.client_ip == "127.0.0.1"


def test_the_login_page_asks_for_the_second_factor_in_chinese():
    page = Client().get("/admin/login/").content.decode()
    assert "动态验证码" in page and "用户名" in page and "密码" in page


@pytest.mark.parametrize("wrong", ["password", "code", "missing code"])
def test_a_wrong_password_or_code_fails_with_one_message_and_is_audited(operator, wrong):
    client = Client()
    if wrong == "password":
        answer = sign_in(client, operator, password="Wrong#pass1")
    elif wrong == "code":
        code = current_code(operator)
        answer = sign_in(client, operator, code=f"{(int(code) + 1) % 1_000_000:06d}")
    else:
        answer = client.post("/admin/login/", {"username": "zhang.ops", "password": STAFF_PASSWORD})
    assert answer.status_code == 200
    page = answer.content.decode()
    assert "用户名、密码或动态验证码不正确" in page or "这个字段是必填项" in page
    assert client.get("/admin/").status_code == 302  # not signed in
    if wrong != "missing code":
        assert _actions("zhang.ops") == [("login_failed", "failure")]


def test_a_password_without_a_second_factor_device_cannot_reach_the_console(operator):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.filter(user=operator).delete()
    client = Client()
    assert sign_in(client, operator, code="123456").status_code == 200
    client.force_login(operator)  # even a session signed in without the factor
    assert client.get("/admin/").status_code == 302


def test_five_failures_lock_the_account_for_fifteen_minutes(operator):
    attacker = Client()
    for _ in range(4):
        assert sign_in(attacker, operator, password="Wrong#pass1").status_code == 200
    locked = sign_in(attacker, operator, password="Wrong#pass1")
    assert locked.status_code == 429
    assert "账号已锁定" in locked.content.decode()

    # The right password and code do not get in while the lock lasts, from anywhere.
    elsewhere = Client(REMOTE_ADDR="10.1.2.3")
    assert sign_in(elsewhere, operator).status_code == 429
    assert elsewhere.get("/admin/").status_code == 302

    # 15 minutes later the lock is over.
    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(minutes=16))
    assert sign_in(elsewhere, operator).status_code == 302
    failed = [a for a in _actions("zhang.ops") if a[0] == "login_failed"]
    assert len(failed) >= 5


def test_wrong_codes_count_towards_the_lockout_like_wrong_passwords(operator):
    client = Client()
    for _ in range(5):
        sign_in(client, operator, code="000000")
    assert sign_in(client, operator).status_code == 429


def test_a_success_before_the_fifth_failure_starts_the_count_again(operator):
    client = Client()
    for _ in range(4):
        sign_in(client, operator, password="Wrong#pass1")
    assert sign_in(client, operator).status_code == 302
    client.post("/admin/logout/")
    for _ in range(4):
        assert sign_in(client, operator, password="Wrong#pass1").status_code == 200
    assert sign_in(client, operator).status_code == 302


def test_a_session_ends_on_the_server_after_fifteen_idle_minutes(operator):
    client = Client()
    sign_in(client, operator)
    with clock.travel(dt.timedelta(minutes=14)):
        assert client.get("/admin/").status_code == 200  # activity: the 15 minutes start again
    with clock.travel(dt.timedelta(minutes=14 + 14)):
        assert client.get("/admin/").status_code == 200
    with clock.travel(dt.timedelta(minutes=28 + 16)):
        idle = client.get("/admin/booking/registration/")
    assert idle.status_code == 302 and idle.url.startswith("/admin/login/")
    # The session is gone on the server: coming back at once still asks for a sign-in.
    assert client.get("/admin/").status_code == 302
    assert ("session_expired", "success") in _actions("zhang.ops")


def test_logout_is_audited(operator):
    client = Client()
    sign_in(client, operator)
    client.post("/admin/logout/")
    assert _actions("zhang.ops") == [("login", "success"), ("logout", "success")]
    assert client.get("/admin/").status_code == 302


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("Ab1!xyz", "至少"),  # 7 characters
        ("abcdefgh1", "符号"),
        ("abcdefg!!", "数字"),
        ("12345678!", "字母"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password, why):
    with translation.override("zh-hans"), pytest.raises(ValidationError) as refused:
        validate_password(password)
    assert any(why in message for message in refused.value.messages)


def test_a_password_with_letters_digits_and_symbols_passes():
    assert validate_password("Clinic#2026a") is None  # raises ValidationError when refused


def test_a_password_older_than_90_days_must_be_changed_first(operator):
    StaffProfile.objects.filter(user=operator).update(
        password_changed_at=clock.now() - dt.timedelta(days=91), must_change_password=False
    )
    client = Client()
    sign_in(client, operator)
    answer = client.get("/admin/booking/registration/")
    assert answer.status_code == 302 and answer.url == "/admin/password_change/"

    weak = client.post(
        "/admin/password_change/",
        {"old_password": STAFF_PASSWORD, "new_password1": "abcdefgh1", "new_password2": "abcdefgh1"},
    )
    assert weak.status_code == 200 and "符号" in weak.content.decode()

    changed = client.post(
        "/admin/password_change/",
        {"old_password": STAFF_PASSWORD, "new_password1": "Clinic#2026a", "new_password2": "Clinic#2026a"},
    )
    assert changed.status_code == 302
    assert client.get("/admin/booking/registration/").status_code == 200
    assert ("password_changed", "success") in _actions("zhang.ops")


def test_a_password_someone_else_set_is_changed_at_the_first_sign_in():
    staff = make_staff(role=roles.FINANCE, hospitals=[make_hospital()], must_change_password=True)
    client = Client()
    sign_in(client, staff)
    assert client.get("/admin/payments/payment/").url == "/admin/password_change/"


def test_the_staff_session_cookie_ends_with_the_browser(operator):
    client = Client()
    sign_in(client, operator)
    assert client.session.get_expire_at_browser_close()
