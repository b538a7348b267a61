"""The console as a new operator uses it, in Debian's Chromium at 1440×900: sign in with password
and TOTP, find an order by phone, cancel it for the patient (refund issued, audit row written),
change the lock minutes and see the next hold use them, suspend a session (its registrations
cancelled and refunded), and the auditor reading those rows without any way to change them.
The screenshots in docs/console.md come from here."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.conf import settings

from guahao import clock
from guahao.booking.models import Registration
from guahao.booking.states import RegistrationStatus
from guahao.booking.tests.conftest import ready_to_book, registered
from guahao.console import roles
from guahao.console.models import AuditEntry
from guahao.console.testing import STAFF_PASSWORD, current_code, make_staff
from guahao.payments.models import Refund
from guahao.policies.models import Policy
from guahao.scheduling.models import ReleaseRule
from guahao.testing import (
    api_client,
    make_account,
    make_department,
    make_doctor,
    make_hospital,
    make_session,
    run_worker,
    wrap_provider,
)

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "img" / "console"


@pytest.fixture
def pc(browser):
    """A PC browser window: 1440×900, zh-CN, as hospital office PCs commonly run."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def sign_in(page, site: str, user) -> None:
    page.goto(f"{site}/admin/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", STAFF_PASSWORD)
    page.fill("input[name=otp_token]", current_code(user))
    with page.expect_navigation():
        page.click("#login-form input[type=submit]")


def sign_out(page) -> None:
    with page.expect_navigation():
        page.click("#logout-form button")


@pytest.fixture
def day(transactional_db):
    """One hospital: 皮肤科 with two sessions of 彭飞 tomorrow, a patient booked in each."""
    hospital = make_hospital(name="杭州市第一人民医院", short_name="市一医院")
    ReleaseRule.objects.filter(hospital=hospital).update(
        lock_minutes=10, max_live_holds_per_account=5
    )
    # One patient in both of 彭飞's clinics of the day: the hospital allows two per department.
    Policy.objects.create(hospital=hospital, max_per_department_per_day=2)
    skin = make_department(hospital, name="皮肤科")
    peng = make_doctor(skin, name="彭飞")
    tomorrow = clock.today() + dt.timedelta(days=1)
    morning = make_session(skin, doctor=peng, day=tomorrow, slots=6, fee_fen=2500)
    afternoon = make_session(
        skin, doctor=peng, day=tomorrow, slots=4, start=dt.time(14, 0), fee_fen=2500
    )
    account = make_account("13912345678")
    patient = ready_to_book(account, hospital, name="张三丰")
    return {
        "hospital": hospital,
        "morning": morning,
        "afternoon": afternoon,
        "account": account,
        "first": registered(account, patient, morning, seq=1),
        "second": registered(account, patient, afternoon, seq=1),
        "operator": make_staff(role=roles.OPERATIONS, hospitals=[hospital], username="wang.ops"),
        "sysadmin": make_staff(role=roles.SYSTEM_ADMIN, hospitals=[hospital], username="li.admin"),
        "auditor": make_staff(role=roles.AUDITOR, hospitals=[hospital], username="zhao.audit"),
    }


def test_a_day_at_the_console(pc, site, day) -> None:
    page = pc

    # --- the operator signs in with password and TOTP, and lands on the dashboard -----------------
    page.goto(f"{site}/admin/")
    assert page.locator("input[name=otp_token]").is_visible()
    shot(page, "login")
    sign_in(page, site, day["operator"])
    assert "今日" in page.content()

    # --- finds the order by the patient's phone: masked, one row --------------------------------
    page.goto(f"{site}/admin/booking/registration/")
    page.fill("#searchbar", "13912345678")
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    listed = page.locator("#result_list tbody").inner_text()
    assert "13912345678" not in listed and "张*丰" in listed
    shot(page, "orders")
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.SEARCH_PII, staff_username="wang.ops"
    ).exists()

    # --- cancels the morning one for the patient, with a reason ---------------------------------
    first = day["first"]
    page.goto(f"{site}/admin/booking/registration/{first.pk}/change/")
    with page.expect_navigation():
        page.click("text=代患者取消并退费")
    page.fill("textarea[name=reason], input[name=reason]", "患者电话申请，家中有急事")
    shot(page, "cancel")
    with page.expect_navigation():
        page.click("input[type=submit][value=确认取消并退费]")
    run_worker()
    first.refresh_from_db()
    assert first.status in (RegistrationStatus.REFUNDING, RegistrationStatus.CANCELLED)
    assert first.cancelled_by == "wang.ops"
    assert Refund.objects.filter(payment=first.hold.payment).exists()
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.CANCEL, object_id=str(first.pk), result="success"
    ).exists()

    # --- suspends the afternoon session, with a reason: its registration is cancelled -------------
    afternoon = day["afternoon"]
    page.goto(f"{site}/admin/scheduling/session/{afternoon.pk}/suspend/")
    page.fill("[name=reason]", "医生外出会诊")
    shot(page, "suspend")
    with page.expect_navigation():
        page.click("input[type=submit][value=确认停诊]")
    run_worker()
    second = Registration.objects.get(pk=day["second"].pk)
    assert second.status in (RegistrationStatus.REFUNDING, RegistrationStatus.CANCELLED)
    assert AuditEntry.objects.filter(action=AuditEntry.Action.SUSPEND, result="success").exists()
    sign_out(page)

    # --- the system administrator sets the lock to 20 minutes; the next hold uses it --------------
    sign_in(page, site, day["sysadmin"])
    rule = ReleaseRule.objects.get(hospital=day["hospital"], department=None)
    page.goto(f"{site}/admin/scheduling/releaserule/{rule.pk}/change/")
    page.fill("input[name=lock_minutes]", "20")
    shot(page, "release-rule")
    with page.expect_navigation():
        page.click("input[name=_save]")
    assert "成功" in page.content()
    slot = day["morning"].slots.get(seq=2)
    hold = api_client(day["account"]).post("/api/v1/holds", {"slot_id": slot.id})
    assert hold.status_code == 201, hold.content
    assert 19 * 60 < hold.json()["remaining_seconds"] <= 20 * 60
    sign_out(page)

    # --- the auditor sees every one of those rows and can change none of them ---------------------
    sign_in(page, site, day["auditor"])
    page.goto(f"{site}/admin/console/auditentry/")
    text = page.content()
    for label in ("代患者取消", "停诊", "修改配置", "登录", "按完整证件号/手机号查找"):
        assert label in text, label
    shot(page, "audit-log")
    entry = AuditEntry.objects.get(action=AuditEntry.Action.CHANGE, staff_username="li.admin")
    page.goto(f"{site}/admin/console/auditentry/{entry.pk}/change/")
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("a.deletelink").count() == 0
    assert "lock_minutes" in page.content() or "锁号时长" in page.content()
    answer = page.request.post(
        f"{site}/admin/console/auditentry/{entry.pk}/delete/",
        form={"post": "yes"},
        fail_on_status_code=False,
    )
    assert answer.status == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


def test_the_dashboard_shows_how_fast_the_latest_release_went(pc, site, transactional_db) -> None:
    """Three departments released at 07:00: 皮肤科 gone in 3 minutes, 儿科 in 12, 眼科 not all."""
    today = clock.today()
    hospital = make_hospital(name="杭州市第一人民医院", short_name="市一医院")
    ReleaseRule.objects.filter(hospital=hospital).update(release_time=dt.time(7, 0), window_days=7)
    released_day = today + dt.timedelta(days=7)
    taken = {"皮肤科": [0.5, 1, 1.5, 2, 2.5, 3], "儿科": [1, 2, 4, 6, 9, 12], "眼科": [2, 5, 8, 15]}
    for name, minutes in taken.items():
        session = make_session(
            make_department(hospital, name=name), day=released_day, slots=6, fee_fen=2500
        )
        for seq, minute in enumerate(minutes, start=1):
            account = make_account()
            patient = ready_to_book(account, hospital)
            # (frozen_at moves the clock from the real now, so these blocks are never nested)
            with clock.frozen_at(
                clock.at_local(today, dt.time(7, 0)) + dt.timedelta(minutes=minute)
            ):
                registered(account, patient, session, seq=seq)
    staff = make_staff(
        role=[roles.OPERATIONS, roles.FINANCE], hospitals=[hospital], username="chen.ops"
    )
    with clock.frozen_at(clock.at_local(today, dt.time(10, 0))):
        sign_in(pc, site, staff)
        html = pc.content()
        assert "皮肤科" in html and "儿科" in html and "眼科" in html
        assert pc.locator("svg").count() >= 1
        assert "400.00" in html  # 16 registrations × 25.00 元 paid today
        shot(pc, "dashboard")


def test_finance_works_through_the_failed_refunds(pc, site, day, monkeypatch) -> None:
    """A refund the provider refused waits in 退款失败; finance retries it under the same number."""
    from guahao.booking import services as booking
    from guahao.payments.providers.base import ProviderRefused
    from guahao.payments.providers.faulty import FaultyProvider

    class Refusing(FaultyProvider):
        def refund(self, **request) -> None:
            raise ProviderRefused(
                "NOT_ENOUGH: 基本账户余额不足，请充值后重新发起", code="NOT_ENOUGH"
            )

    first = day["first"]
    wrap_provider(monkeypatch, Refusing)
    booking.cancel_registration(account=day["account"], registration_id=first.id)
    monkeypatch.undo()
    refund = Refund.objects.get(payment=first.hold.payment)
    assert refund.state == Refund.State.FAILED

    finance = make_staff(role=roles.FINANCE, hospitals=[day["hospital"]], username="sun.finance")
    sign_in(pc, site, finance)
    pc.goto(f"{site}/admin/payments/refund/")
    assert refund.refund_no in pc.content()
    shot(pc, "refunds")
    pc.goto(f"{site}/admin/payments/payment/ledger/")
    assert "退款失败" in pc.content() or refund.refund_no in pc.content()
    shot(pc, "ledger")

    pc.goto(f"{site}/admin/payments/refund/")
    pc.check(f"input[name=_selected_action][value='{refund.pk}']")
    pc.select_option("select[name=action]", "retry_failed")
    with pc.expect_navigation():
        pc.click("button[name=index]")
    run_worker()
    refund.refresh_from_db()
    assert refund.state in (Refund.State.PROCESSING, Refund.State.SUCCEEDED)
    assert AuditEntry.objects.filter(
        action=AuditEntry.Action.REFUND_RETRY, staff_username="sun.finance"
    ).exists()
